"""What a block callable receives."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any


@dataclass
class BlockContext:
    """Passed to every DO and UNDO.

    ``request``: the validated request. ``outputs``: outputs of the blocks that completed before
    this one, by name. ``output``/``error``: for an UNDO, its own DO's output, and the error if
    that DO failed (an UNDO must cope with a half-done DO).
    """

    xid: str
    scenario: str
    block: str
    attempt: int
    request: Any
    outputs: dict[str, Any] = field(default_factory=dict)
    output: Any = None
    error: dict[str, Any] | None = None
    phase: str = "do"

    @property
    def log(self) -> logging.LoggerAdapter[logging.Logger]:
        return logging.LoggerAdapter(
            logging.getLogger(f"switchback.block.{self.scenario}.{self.block}"),
            {"xid": self.xid, "block": self.block, "phase": self.phase},
        )
