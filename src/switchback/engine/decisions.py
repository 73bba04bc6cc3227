"""Which decision applies to which transaction status: one table, consulted by every decision
(to refuse with the reason, HTTP 409) and by the plan (to show what each decision would run)."""

from __future__ import annotations

from dataclasses import dataclass

from switchback.engine.errors import DecisionRefused
from switchback.model import Scenario
from switchback.store.records import (
    ROLLBACK_FAILED,
    RUNNING,
    SUSPENDED,
    WAITING,
    TxRecord,
)


@dataclass(frozen=True)
class Decision:
    name: str  # as the refusal says it
    applies_to: tuple[str, ...]

    def applies(self, status: str) -> bool:
        return status in self.applies_to

    def check(self, tx: TxRecord) -> None:
        """Refuse (DecisionRefused) unless the decision applies to the transaction's status."""
        if tx.status not in self.applies_to:
            raise self.refusal(tx.xid, tx.status)

    def refusal(self, xid: str, status: str, what: str | None = None) -> DecisionRefused:
        return DecisionRefused(
            xid,
            f"{what or self.name} applies to {_phrase(self.applies_to)} transaction; "
            f"{xid} is {status}",
            status,
        )


ROLLFORWARD = Decision("rollforward", (SUSPENDED,))
# Also retries a failed rollback.
ROLLBACK = Decision("rollback", (SUSPENDED, WAITING, ROLLBACK_FAILED))
COMPENSATED = Decision("mark compensated", (ROLLBACK_FAILED,))
PAUSE = Decision("pause", (RUNNING, WAITING))
# A signal is kept until a wait block for it consumes it, so it applies while one may still run
# (see signal_window): not once the transaction is final or rolling back.
SIGNAL = Decision("signal", (RUNNING, WAITING, SUSPENDED))

DECISIONS = {d.name: d for d in (ROLLFORWARD, ROLLBACK, COMPENSATED, PAUSE, SIGNAL)}


def signal_window(sc: Scenario, name: str) -> int | None:
    """The last block index at which a signal ``name`` can still be consumed (the last wait
    block for it), or None if no block waits for it. A transaction whose cursor is past it has
    no use for the signal: storing one would only satisfy some later, unrelated wait."""
    last = None
    for i, b in enumerate(sc.blocks):
        if b.wait == name:
            last = i
    return last


def _phrase(statuses: tuple[str, ...]) -> str:
    """("a", "b", "c") -> "a a, b or c" (the article agrees with the first word)."""
    words = list(statuses)
    text = words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]
    return ("an " if text[0] in "aeiou" else "a ") + text
