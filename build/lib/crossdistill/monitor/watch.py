"""What the monitor reads while a job runs: the run's event log (each event checked against its schema), the growth of
its log, the stall clock.

:class:`Tail` follows a file by inode and offset, so a file that is deleted and created again (``--overwrite`` sets the
previous run's ``events.jsonl`` aside) is read from its start, not from the old file's offset. An event that does not
match its schema (a line that is not an object, a ``step`` without a numeric ``loss``, numbers written as strings ...)
is skipped and counted, never allowed to crash the monitor.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

_NUM = (int, float)
# the fields each event must carry, with their types; other fields are free
SCHEMA: dict[str, dict[str, tuple]] = {
    "start": {"stage": (str,)},
    "step": {"step": (int,), "loss": _NUM, "epoch": (int,)},
    "phase": {"phase": (str,)},
    "guard": {"student_mrr@10": _NUM, "teacher_rerank_mrr@10": _NUM, "guard_k": (int,)},
    "checkpoint": {"step": (int,)},
    "checkpoint_skipped": {"checkpoint": (str,), "reason": (str,)},
    "nonfinite_loss": {"step": (int,)},
    "oom": {"step": (int,), "micro_batch_size": (int,)},
    "fatal": {"kind": (str,)},
    "eval": {"epoch": (int,)},
    "resume": {"step": (int,)},
    "end": {},
}
# fields the status line reads when they are there: if present, of this type
OPTIONAL: dict[str, dict[str, tuple]] = {
    "start": {"total_steps": (int,)},
    "step": {"samples_per_s": _NUM, "lr": _NUM},
    "phase": {"done": (int,), "total": (int,), "detail": (str,)},
}
_BOUND = 1e15  # a number the status line computes with: finite and of a sane size


def _typed(value, types: tuple) -> bool:
    if isinstance(value, bool) or not isinstance(value, types):
        return False
    return not isinstance(value, (int, float)) or (value == value and abs(value) < _BOUND)


def valid_event(e) -> bool:
    """True if ``e`` is an event object of a known kind with the fields its kind needs, of the right types (a bool is
    not a number here; numbers finite and below 1e15), and the optional fields the status line reads well-typed too;
    every event needs a numeric ``time``."""
    if not isinstance(e, dict) or e.get("event") not in SCHEMA:
        return False
    need = {"time": _NUM, **SCHEMA[e["event"]]}
    if not all(k in e and _typed(e[k], t) for k, t in need.items()):
        return False
    return all(_typed(e[k], t) for k, t in OPTIONAL.get(e["event"], {}).items() if k in e and e[k] is not None)


class Tail:
    """New complete lines of a file since the last read; starts over when the file is replaced or truncated. At most
    ``limit`` bytes are read per call, and a line longer than that is skipped (counted in ``oversize``), never read
    again at every poll."""

    def __init__(self, path: Path, from_end: bool = True, limit: int = 4 << 20):
        self.path = Path(path)
        st = _stat(self.path)
        self.inode = st.st_ino if st else None
        self.offset = st.st_size if (st and from_end) else 0
        self.limit = limit
        self.skipping = False   # inside a line longer than the limit
        self.oversize = 0

    def read(self) -> list[bytes]:
        st = _stat(self.path)
        if st is None:
            return []
        if st.st_ino != self.inode or st.st_size < self.offset:  # a new file in its place: read it from its start
            self.inode, self.offset, self.skipping = st.st_ino, 0, False
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            chunk = f.read(self.limit)
        end = chunk.rfind(b"\n") + 1
        if end == 0:
            if len(chunk) >= self.limit:  # no newline in a whole chunk: a line too long to be an event, skipped
                self.offset += len(chunk)
                self.oversize += not self.skipping
                self.skipping = True
            return []
        self.offset += end
        lines = chunk[:end].splitlines()
        if self.skipping:  # the end of the over-long line
            lines, self.skipping = lines[1:], False
        return lines


def _stat(path: Path):
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None


@dataclass
class Watcher:
    """Reads a running job's events and log growth; says when it last made progress."""

    folder: Path
    log_name: str = "train.log"
    started: bool = False           # the stall clock runs from the first event; before it, the start-up allowance
    malformed: int = 0              # events skipped because they do not match their schema
    last_progress: float = field(default_factory=time.time)

    def __post_init__(self):
        self.events = Tail(self.folder / "events.jsonl")
        self.log = Tail(self.folder / self.log_name)

    def poll(self) -> list[dict]:
        """The new valid events (and progress bookkeeping: any new event or log line counts as progress)."""
        out = []
        for line in self.events.read():
            try:
                e = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                e = None
            if valid_event(e):
                out.append(e)
            else:
                self.malformed += 1
        self.malformed += self.events.oversize
        self.events.oversize = 0
        if out or self.log.read():
            self.last_progress = time.time()
        if out:
            self.started = True
        return out

    def stalled_for(self) -> float:
        return time.time() - self.last_progress


def tail(path: Path, lines: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, 2) - 20000))
            return b"\n".join(f.read().splitlines()[-lines:]).decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


def last_error(text: str) -> str:
    for line in reversed(text.strip().splitlines()):
        s = line.strip()
        if s and ("Error" in s or "error" in s.lower() or "Exception" in s):
            return s[:300]
    return text.strip().splitlines()[-1][:300] if text.strip() else ""
