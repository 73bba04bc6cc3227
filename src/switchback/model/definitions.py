"""The objects an app is made of: scenarios, blocks, options. Pure data, no I/O."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

from jsonschema import Draft202012Validator

BlockFn = Callable[..., Any]
# A scenario's request check: called with a request that matches the schema, before anything is
# created; returns the problems it finds (``{"path": JSON pointer, "message": ...}``), or nothing.
CheckFn = Callable[[Any], Iterable[dict[str, str]] | None]


class RequestCheckFailed(Exception):
    """The scenario's request check itself failed (e.g. the inventory it reads is unreadable):
    the request can be neither accepted nor refused; nothing was started."""


METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


@dataclass(frozen=True)
class RetryPolicy:
    """How often a DO (or UNDO) is tried before the block counts as failed.

    ``attempts`` counts every try, the first included. The delay before try n+1 is drawn uniformly
    from [0, min(max_backoff, backoff * 2**(n-1))] ("full jitter"), so that many transactions
    failing against the same peer do not retry in lock-step.
    """

    attempts: int = 1
    backoff: float = 0.0
    max_backoff: float = 30.0

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        if self.backoff <= 0:
            return 0.0
        cap = min(self.max_backoff, self.backoff * (2 ** (attempt - 1)))
        return (rng or random).uniform(0, cap)


@dataclass
class Block:
    """One step of a scenario: a DO with an optional UNDO, or a wait for a named signal."""

    name: str
    do: BlockFn | None = None
    undo: BlockFn | None = None
    do_ref: str | None = None
    undo_ref: str | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeout: float | None = None
    idempotent: bool = False
    # None = same as ``idempotent``. Decides whether an UNDO interrupted by a crash is re-run.
    undo_idempotent: bool | None = None
    # False = a failed DO leaves nothing behind, so rollback skips this block's own UNDO.
    partial_effects: bool = True
    wait: str | None = None
    description: str | None = None
    line: int | None = None

    @property
    def is_wait(self) -> bool:
        return self.wait is not None

    @property
    def rerun_undo_when_in_doubt(self) -> bool:
        return self.idempotent if self.undo_idempotent is None else self.undo_idempotent


@dataclass
class TransactionOptions:
    on_failure: Literal["suspend", "rollback"] = "suspend"
    timeout: float | None = 3600.0
    # True: HTTP callers get 202 + Location at once instead of waiting for the outcome.
    async_: bool = False
    lock_keys: list[str] = field(default_factory=list)
    lock_timeout: float = 10.0


@dataclass
class Scenario:
    name: str
    blocks: list[Block] = field(default_factory=list)
    method: str = "POST"
    path: str | None = None
    request: dict[str, Any] | bool = True
    transaction: TransactionOptions = field(default_factory=TransactionOptions)
    # Name of the block whose output is the transaction's result; default: the last DO block.
    result: str | None = None
    description: str | None = None
    source: str | None = None
    # What JSON Schema cannot say (a device that must be in an inventory read at run time).
    request_check: CheckFn | None = None
    request_check_ref: str | None = None

    @cached_property
    def validator(self) -> Draft202012Validator:
        return Draft202012Validator(
            self.request, format_checker=Draft202012Validator.FORMAT_CHECKER
        )

    def validate_request(self, body: Any) -> list[dict[str, str]]:
        """Every violation of the request schema, as ``{"path": JSON pointer, "message": ...}``;
        when there is none, every problem the scenario's ``request_check`` finds. Raises
        :class:`RequestCheckFailed` when the check cannot decide."""
        out = []
        for err in self.validator.iter_errors(body):
            pointer = "".join(
                f"/{str(p).replace('~', '~0').replace('/', '~1')}" for p in err.absolute_path
            )
            out.append({"path": pointer or "/", "message": err.message})
        if not out and self.request_check is not None:
            out = self._checked(body)
        return sorted(out, key=lambda v: (v["path"], v["message"]))

    def _checked(self, body: Any) -> list[dict[str, str]]:
        assert self.request_check is not None
        try:
            found = list(self.request_check(body) or ())
        except Exception as exc:
            raise RequestCheckFailed(
                f"scenario {self.name!r}: the request check {self.request_check_ref or ''} failed: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        problems = []
        for p in found:
            if not isinstance(p, dict) or "message" not in p:
                raise RequestCheckFailed(
                    f"scenario {self.name!r}: the request check returned {p!r}; "
                    'expected {"path": "/field", "message": "..."}'
                )
            problems.append({"path": str(p.get("path") or "/"), "message": str(p["message"])})
        return problems

    def block_index(self, name: str) -> int:
        for i, b in enumerate(self.blocks):
            if b.name == name:
                return i
        raise KeyError(name)

    @property
    def result_block(self) -> str | None:
        if self.result:
            return self.result
        for b in reversed(self.blocks):
            if not b.is_wait:
                return b.name
        return None


@dataclass
class App:
    """A loaded application: its scenarios by name."""

    scenarios: dict[str, Scenario] = field(default_factory=dict)
    root: str | None = None

    def add(self, scenario: Scenario) -> None:
        if scenario.name in self.scenarios:
            raise ValueError(f"duplicate scenario name {scenario.name!r}")
        self.scenarios[scenario.name] = scenario

    def scenario(self, name: str) -> Scenario:
        try:
            return self.scenarios[name]
        except KeyError:
            known = ", ".join(sorted(self.scenarios)) or "none"
            raise KeyError(f"unknown scenario {name!r} (known: {known})") from None
