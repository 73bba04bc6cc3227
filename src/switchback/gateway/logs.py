"""Structured logs: one JSON object per line, with the xid on every line that has one.

The xid comes from the record (``extra={"xid": ...}``, as the engine and ``BlockContext.log``
do) or else from the request being served (a context variable the handlers set). Nothing here
ever logs a header, so bearer tokens cannot reach the logs.
"""

from __future__ import annotations

import contextvars
import json
import logging
import time
from typing import Any

current_xid: contextvars.ContextVar[str | None] = contextvars.ContextVar("xid", default=None)

_STD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "color_message",  # uvicorn's ANSI copy of msg
}


class JsonFormatter(logging.Formatter):
    def __init__(self, role: str = "all") -> None:
        super().__init__()
        self.role = role

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 6),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "role": self.role,
            "msg": record.getMessage(),
        }
        xid = getattr(record, "xid", None) or current_xid.get()
        if xid:
            out["xid"] = xid
        for key, value in record.__dict__.items():
            if key not in _STD and key not in out and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, separators=(",", ":"))


def log_config(role: str, level: str = "info") -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for uvicorn and switchback: JSON lines on stderr."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter, "role": role}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["stderr"], "level": level.upper()},
        "loggers": {
            "uvicorn": {"handlers": [], "propagate": True},
            "uvicorn.error": {"handlers": [], "propagate": True},
            # Our own access log (switchback.access) replaces uvicorn's.
            "uvicorn.access": {"handlers": [], "propagate": False, "level": "WARNING"},
            "httpx": {"level": "WARNING"},
            "httpcore": {"level": "WARNING"},
        },
    }
