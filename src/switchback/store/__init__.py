"""Persistence behind one interface: ``sqlite`` (embedded default); ``postgres`` fits the same."""

from __future__ import annotations

from pathlib import Path

from switchback.store.base import (
    DuplicateIdempotencyKey,
    FencedOut,
    LockHeld,
    Store,
    StoreError,
    new_owner_id,
    owner_is_dead,
)
from switchback.store.sqlite import SQLiteStore


def open_store(url_or_dir: str | Path, *, synchronous: str = "FULL") -> Store:
    """A store from a URL (``sqlite:///path/to/file.db``) or a data directory (SQLite inside)."""
    text = str(url_or_dir)
    if text.startswith("sqlite:///"):
        return SQLiteStore(text[len("sqlite:///") :], synchronous=synchronous)
    if text.startswith(("postgresql://", "postgres://")):
        raise StoreError("the PostgreSQL store is not available in this version")
    return SQLiteStore(Path(text) / "switchback.db", synchronous=synchronous)


__all__ = [
    "DuplicateIdempotencyKey",
    "FencedOut",
    "LockHeld",
    "SQLiteStore",
    "Store",
    "StoreError",
    "new_owner_id",
    "open_store",
    "owner_is_dead",
]
