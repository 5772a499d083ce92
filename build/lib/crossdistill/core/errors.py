"""User-facing errors and argument checks.

Every problem a user can fix (bad path, wrong column, bad flag value...) is raised as
:class:`UsageError`; :func:`run_cli` turns it into one line on stderr and exit code 2, no traceback.
"""

from __future__ import annotations

import sys
from typing import Callable, Sequence

EXIT_USAGE = 2       # a user error: the message says what to fix
EXIT_NONFINITE = 3   # training stopped on a NaN/inf loss: resume from the last checkpoint with a lower lr
EXIT_OOM = 4         # out of memory outside the student's own retry: resume with smaller passes


class UsageError(Exception):
    """A problem with the user's input; the message names the problem and the fix."""


class NonFiniteLoss(Exception):
    """The loss became NaN/inf; the run stops so that a supervisor can roll back (exit code 3)."""


def run_cli(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> None:
    """Run ``main(argv)``; a :class:`UsageError` becomes ``error: <message>`` and exit code 2, a
    :class:`NonFiniteLoss` exit code 3."""
    try:
        code = main(argv)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    except NonFiniteLoss as exc:
        print(f"error: {exc}; resume from the last checkpoint with a lower --lr (the monitor does this)", file=sys.stderr)
        sys.exit(EXIT_NONFINITE)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except OSError as exc:  # a full disk, a read-only folder, a name too long, wherever it happens: one line
        from crossdistill.core.files import DISK_ERRORS

        if exc.errno not in DISK_ERRORS:
            raise
        where = f" {exc.filename}" if exc.filename else ""
        print(f"error: could not write{where} ({exc.strerror}); {DISK_ERRORS[exc.errno]} and run again (files are "
              "written to temporary names and renamed into place: nothing half-written was left)", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    except Exception as exc:  # noqa: BLE001 - out of memory gets its own exit code (and event); the rest re-raised
        if not is_oom(exc):
            raise
        _fatal_event("oom", str(exc))
        print(f"error: out of memory ({str(exc).splitlines()[0][:200]}); resume with smaller passes (the monitor does "
              "this: --micro_batch_size for the student, --micro_batches for the teacher)", file=sys.stderr)
        sys.exit(EXIT_OOM)
    sys.exit(code or 0)


def is_oom(exc: BaseException) -> bool:
    """An out-of-memory error of torch (CUDA, MPS or the CPU allocator)."""
    return type(exc).__name__ == "OutOfMemoryError" or "out of memory" in str(exc).lower()


def _fatal_event(kind: str, message: str) -> None:
    """Append a ``fatal`` event to the events of the folder a monitor watches (its job's environment names it), so the
    monitor classifies the fault from the run's own record, whichever process of a distributed run died of it."""
    import json
    import os
    import time

    folder = os.environ.get("CROSSDISTILL_MONITOR_DIR")
    if not folder or not os.path.isdir(folder):
        return
    try:
        with open(os.path.join(folder, "events.jsonl"), "a", encoding="utf-8") as f:
            f.write(json.dumps({"event": "fatal", "time": round(time.time(), 3), "kind": kind, "error": message[:200]}) + "\n")
    except OSError:
        pass
