"""Persistence behind one interface: ``sqlite`` (embedded default) and ``postgres`` (several
workers sharing one database)."""

from __future__ import annotations

from pathlib import Path

from switchback.store.base import (
    DuplicateIdempotencyKey,
    FencedOut,
    LockHeld,
    SignalRefused,
    Store,
    StoreError,
    new_owner_id,
    owner_is_dead,
)
from switchback.store.sqlite import SQLiteStore


def is_store_url(text: str) -> bool:
    return text.startswith(("sqlite:///", "postgresql://", "postgres://"))


def open_store(url_or_dir: str | Path, *, synchronous: str = "FULL") -> Store:
    """A store from a URL (``sqlite:///path/to/file.db``,
    ``postgresql://user@host:5432/db?schema=NAME``) or a data directory (SQLite inside)."""
    text = str(url_or_dir)
    if text.startswith("sqlite:///"):
        return SQLiteStore(text[len("sqlite:///") :], synchronous=synchronous)
    if text.startswith(("postgresql://", "postgres://")):
        # Imported here so that the embedded default does not load psycopg.
        from switchback.store.postgres import PostgresStore

        return PostgresStore(text)
    return SQLiteStore(Path(text) / "switchback.db", synchronous=synchronous)


__all__ = [
    "DuplicateIdempotencyKey",
    "FencedOut",
    "LockHeld",
    "SQLiteStore",
    "SignalRefused",
    "Store",
    "StoreError",
    "is_store_url",
    "new_owner_id",
    "open_store",
    "owner_is_dead",
]
