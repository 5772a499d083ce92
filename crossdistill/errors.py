"""User-facing errors and argument checks.

Every problem a user can fix (bad path, wrong column, bad flag value...) is raised as
:class:`UsageError`; :func:`run_cli` turns it into one line on stderr and exit code 2, no traceback.
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Callable, Sequence


EXIT_USAGE = 2       # a user error: the message says what to fix
EXIT_NONFINITE = 3   # training stopped on a NaN/inf loss: resume from the last checkpoint with a lower lr


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
    sys.exit(code or 0)


def check_args(args: argparse.Namespace, rules: dict[str, tuple[Callable[[object], bool], str]]) -> None:
    """Validate parsed arguments: ``rules[name] = (predicate, requirement)``.

    Raises UsageError("--lr must be > 0 (got -1.0); pass a positive value") for the first failure.
    Arguments that are None (optional and unset) are skipped.
    """
    for name, (ok, requirement) in rules.items():
        value = getattr(args, name, None)
        if value is not None and not ok(value):
            raise UsageError(f"--{name} must be {requirement} (got {value!r}); pass a value that is {requirement}")


POSITIVE = (lambda v: math.isfinite(v) and v > 0, "> 0 and finite")
TEMPERATURE = (lambda v: math.isfinite(v) and 1e-3 <= v <= 1e3, "> 0, at least 0.001 and at most 1000")
AT_LEAST_1 = (lambda v: v >= 1, ">= 1")
NON_NEGATIVE = (lambda v: math.isfinite(v) and v >= 0, ">= 0 and finite")
PROBABILITY = (lambda v: 0 <= v < 1, "in [0, 1)")
