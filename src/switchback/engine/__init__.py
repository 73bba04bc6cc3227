"""The transaction state machine, executor, decisions, ownership and recovery."""

from switchback.engine.context import BlockContext
from switchback.engine.engine import Engine, EngineObserver, request_fingerprint
from switchback.engine.errors import (
    Busy,
    DecisionRefused,
    EngineError,
    IdempotencyConflict,
    RequestInvalid,
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
    "RequestInvalid",
    "UnknownScenario",
    "UnknownTransaction",
    "request_fingerprint",
]
