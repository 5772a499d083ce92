"""The JSONL event log a run writes and the monitor reads."""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

PROGRESS_EVERY = 20.0  # seconds between two progress events of one phase (a stall is --stall_timeout without any)
_current: list = []  # the log of the run this process is doing, while it does it (EventLog.make_current)
_last_progress: dict[str, float] = {}


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


    def make_current(self) -> None:
        """Make this the log :func:`report_progress` writes to, until :func:`clear_current` (the run's end)."""
        _current[:] = [self]


def clear_current() -> None:
    _current.clear()
    _last_progress.clear()


def report_progress(phase: str, done: int, total: int) -> None:
    """Progress of a long phase (scoring pairs with a teacher, encoding passages) as a ``phase`` event of the current
    run's log, at most every :data:`PROGRESS_EVERY` seconds per phase and at its end: every phase that can take
    minutes tells the monitor it is moving, so a stall means a hang. Called by the loops themselves
    (:meth:`~crossdistill.models.teacher.CrossEncoderTeacher.score`,
    :func:`~crossdistill.models.student.encode_texts`); nothing when no run is current (the evaluation, a test)."""
    if not _current or not _current[0].enabled:
        return
    now = time.time()
    if done < total and now - _last_progress.get(phase, 0.0) < PROGRESS_EVERY:
        return
    _last_progress[phase] = now
    with contextlib.suppress(OSError):
        _current[0].log("phase", phase=phase, done=int(done), total=int(total))


def read_events(path: str | os.PathLike) -> list[dict]:
    """Read a JSONL event log, skipping a torn last line."""
    out = []
    with contextlib.suppress(FileNotFoundError), open(path, encoding="utf-8") as f:
        for line in f:
            with contextlib.suppress(json.JSONDecodeError):
                out.append(json.loads(line))
    return out
