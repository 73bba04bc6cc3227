"""Errors the engine raises to its callers (the CLI and the gateway map them to exit codes and
HTTP statuses)."""

from __future__ import annotations

import re
from typing import Any


class EngineError(Exception):
    pass


class UnknownTransaction(EngineError):
    def __init__(self, xid: str) -> None:
        self.xid = xid
        super().__init__(f"unknown transaction {xid!r}")


class UnknownScenario(EngineError):
    pass


class RequestInvalid(EngineError):
    """The request does not match the scenario's schema; ``violations`` lists every problem."""

    def __init__(self, violations: list[dict[str, str]]) -> None:
        self.violations = violations
        lines = "; ".join(f"{v['path']}: {v['message']}" for v in violations)
        super().__init__(f"request does not match the schema: {lines}")


class TextInvalid(RequestInvalid):
    """Text or a number the platform does not accept (engine/inputs.py): a NUL, a lone
    surrogate, a non-finite number — wherever it is, as one violation per place (HTTP 422)."""

    def __init__(self, violations: list[dict[str, str]]) -> None:
        super().__init__(violations)
        lines = "; ".join(f"{v['path']}: {v['message']}" for v in violations)
        self.args = (f"input not accepted: {lines}",)


class DecisionRefused(EngineError):
    """A decision that does not apply to the transaction's current status (HTTP 409)."""

    def __init__(self, xid: str, message: str, status: str | None = None) -> None:
        self.xid = xid
        self.status = status
        super().__init__(message)


class Busy(DecisionRefused):
    """Another process owns the transaction right now."""


class LockTimeout(EngineError):
    """A resource lock stayed held by another transaction for longer than the scenario allows
    (HTTP 409). Nothing was created."""

    def __init__(self, key: str, holder: str, waited: float) -> None:
        self.key = key
        self.holder = holder
        self.waited = waited
        super().__init__(f"lock {key!r} is held by transaction {holder} (waited {waited:.3g} s)")


class IdempotencyConflict(EngineError):
    """The same idempotency key was used for another call: a different request, or (when
    ``scenario`` is set) another scenario, the one named."""

    def __init__(self, key: str, xid: str, *, scenario: str | None = None) -> None:
        self.key = key
        self.xid = xid
        self.scenario = scenario
        if scenario is not None:
            text = f"idempotency key {key!r} was already used for scenario {scenario!r}"
        else:
            text = f"idempotency key {key!r} was already used with a different request"
        super().__init__(f"{text} (transaction {xid})")


class LimitReached(TimeoutError):
    """The engine's own time limit on a DO/UNDO fired (as opposed to a TimeoutError the block
    raised itself). Reported as a plain TimeoutError: users see one kind of timeout."""


# What no store keeps (see engine/inputs.py); an error's text is shown, not matched, so such
# characters are replaced rather than refused.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _storable(text: str) -> str:
    return _UNSTORABLE.sub("\ufffd", text)


def error_info(exc: BaseException, tb: str | None = None) -> dict[str, Any]:
    name = "TimeoutError" if isinstance(exc, LimitReached) else type(exc).__name__
    message = str(exc) or type(exc).__name__
    return {
        "type": _storable(name),
        "message": _storable(message),
        "traceback": _storable(tb) if tb is not None else None,
    }
