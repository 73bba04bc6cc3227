"""The transaction state machine, executor, decisions, ownership and recovery."""

from switchback.engine import inputs
from switchback.engine.context import BlockContext
from switchback.engine.engine import Engine, EngineObserver, lock_keys, request_fingerprint
from switchback.engine.errors import (
    Busy,
    DecisionRefused,
    EngineError,
    IdempotencyConflict,
    LockTimeout,
    RequestInvalid,
    TextInvalid,
    UnknownScenario,
    UnknownTransaction,
)

__all__ = [
    "BlockContext",
    "Busy",
    "DecisionRefused",
    "Engine",
    "EngineError",
    "EngineObserver",
    "IdempotencyConflict",
    "LockTimeout",
    "RequestInvalid",
    "TextInvalid",
    "UnknownScenario",
    "UnknownTransaction",
    "inputs",
    "lock_keys",
    "request_fingerprint",
]
