"""The JSONL event log a run writes and the monitor reads."""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any


class EventLog:
    """Append-only JSONL log of training events, read by the monitor.

    Each line: ``{"event": ..., "time": unix seconds, ...fields}``; lines are flushed at once.
    """

    def __init__(self, path: str | os.PathLike, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def log(self, event: str, **fields: Any) -> None:
        if not self.enabled:
            return
        record = {"event": event, "time": round(time.time(), 3), **fields}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False, default=float) + "\n")


def read_events(path: str | os.PathLike) -> list[dict]:
    """Read a JSONL event log, skipping a torn last line."""
    out = []
    with contextlib.suppress(FileNotFoundError), open(path, encoding="utf-8") as f:
        for line in f:
            with contextlib.suppress(json.JSONDecodeError):
                out.append(json.loads(line))
    return out
