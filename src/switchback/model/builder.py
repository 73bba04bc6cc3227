"""Python form of a scenario: decorators that build the same objects as the YAML form.

provision = scenario("provision", path="/foo/bar", request={...})

@provision.block(retry=RetryPolicy(attempts=3))
def create_vm(ctx): ...

@create_vm.undo
def delete_vm(ctx): ...

provision.wait("approval")
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from switchback.model.definitions import (
    Block,
    BlockFn,
    CheckFn,
    RetryPolicy,
    Scenario,
    TransactionOptions,
)


def _ref(fn: Callable[..., Any]) -> str:
    return f"{fn.__module__}:{fn.__qualname__}"


class BlockHandle:
    """What ``@scenario.block`` returns: still callable as the DO, plus ``.undo`` to attach one."""

    def __init__(self, block: Block) -> None:
        self.block = block

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        assert self.block.do is not None
        return self.block.do(*args, **kwargs)

    def undo(self, fn: BlockFn) -> BlockFn:
        self.block.undo = fn
        self.block.undo_ref = _ref(fn)
        return fn


class ScenarioBuilder(Scenario):
    """A Scenario with decorators to add blocks in order."""

    def block(
        self,
        name: str | None = None,
        *,
        retry: RetryPolicy | dict[str, Any] | None = None,
        timeout: float | None = None,
        idempotent: bool = False,
        undo_idempotent: bool | None = None,
        partial_effects: bool = True,
    ) -> Callable[[BlockFn], BlockHandle]:
        if isinstance(retry, dict):
            retry = RetryPolicy(**retry)

        def decorate(fn: BlockFn) -> BlockHandle:
            b = Block(
                name=name or fn.__name__,
                do=fn,
                do_ref=_ref(fn),
                retry=retry or RetryPolicy(),
                timeout=timeout,
                idempotent=idempotent,
                undo_idempotent=undo_idempotent,
                partial_effects=partial_effects,
            )
            self.blocks.append(b)
            return BlockHandle(b)

        return decorate

    def check(self, fn: CheckFn) -> CheckFn:
        """``@scenario.check``: the scenario's ``request_check``, what the schema cannot say,
        checked before anything is created (see :data:`~switchback.model.definitions.CheckFn`)."""
        self.request_check = fn
        self.request_check_ref = _ref(fn)
        return fn

    def wait(self, signal: str, *, name: str | None = None, timeout: float | None = None) -> Block:
        if signal.startswith("__"):
            raise ValueError(
                f"signal {signal!r}: names starting with '__' are reserved (__pause__ is a pause)"
            )
        b = Block(name=name or signal, wait=signal, timeout=timeout, idempotent=True)
        self.blocks.append(b)
        return b


def scenario(
    name: str,
    *,
    method: str = "POST",
    path: str | None = None,
    request: dict[str, Any] | bool = True,
    on_failure: str = "suspend",
    timeout: float | None = 3600.0,
    async_: bool = False,
    lock_keys: list[str] | None = None,
    lock_timeout: float = 10.0,
    result: str | None = None,
    description: str | None = None,
) -> ScenarioBuilder:
    if on_failure not in ("suspend", "rollback"):
        raise ValueError("on_failure must be 'suspend' or 'rollback'")
    return ScenarioBuilder(
        name=name,
        method=method.upper(),
        path=path,
        request=request,
        transaction=TransactionOptions(
            on_failure=on_failure,  # type: ignore[arg-type]
            timeout=timeout,
            async_=async_,
            lock_keys=list(lock_keys or []),
            lock_timeout=lock_timeout,
        ),
        result=result,
        description=description,
    )
