"""Command-line helpers the scripts share: the parser every script's config generates (:mod:`crossdistill.core.settings`),
and quoted pass-through flags (``--student_args "--epochs 2"``)."""

from __future__ import annotations

import os
import shlex
import sys

# the monitor's recovery flags (--resume, and after an out-of-memory error or a NaN the micro-batch or the learning
# rate) travel in the job's environment as well as on its command line, so that they reach the training script whatever
# wraps it (`bash -c "exec python ..."`, a shell script): only these flags, only in a job the monitor started
MONITOR_FLAGS = "CROSSDISTILL_MONITOR_FLAGS"
MONITOR_DIR = "CROSSDISTILL_MONITOR_DIR"  # set in every job the monitor starts: the folder it watches
RECOVERY_FLAGS = {"--resume": 0, "--micro_batch_size": 1, "--micro_batches": 1, "--lr": 1}  # flag -> values it takes


def with_monitor_flags(argv: list[str] | None) -> list[str]:
    """A training script's argv with the monitor's recovery flags (:data:`MONITOR_FLAGS`) appended, so they win; with
    ``--resume`` among them the command's own ``--overwrite`` is dropped (a restart continues the run, never clears it).
    Outside a job the monitor started the variable is ignored; a flag other than :data:`RECOVERY_FLAGS` is refused."""
    from crossdistill.core.errors import UsageError

    argv = list(sys.argv[1:] if argv is None else argv)
    extra = os.environ.get(MONITOR_FLAGS, "")
    if not extra.strip() or not os.environ.get(MONITOR_DIR):
        return argv
    try:
        flags = shlex.split(extra)
    except ValueError:
        flags = ["?"]
    i = 0
    while i < len(flags):
        if flags[i] not in RECOVERY_FLAGS:
            raise UsageError(f"{MONITOR_FLAGS}={extra!r} holds {flags[i]!r}: the monitor passes only "
                             f"{', '.join(RECOVERY_FLAGS)} that way; unset the variable")
        i += 1 + RECOVERY_FLAGS[flags[i]]
    if "--resume" in flags:
        argv = [a for a in argv if a != "--overwrite"]
    print(f"recovery flags from the monitor ({MONITOR_FLAGS}): {shlex.join(flags)}", flush=True)
    return argv + flags


def join_passthrough(argv: list[str], names: tuple[str, ...]) -> list[str]:
    """Rewrite ``--x_args VALUE`` as ``--x_args=VALUE`` for the options in ``names``.

    Those options carry another script's flags as one quoted string, e.g. ``--student_args "--epochs 2"``, and
    argparse would take a value that starts with ``--`` for an option of its own ("expected one argument").
    Everything after a bare ``--`` is left alone.
    """
    out, i = [], 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            return out + argv[i:]
        if a in names and i + 1 < len(argv):
            out.append(f"{a}={argv[i + 1]}")
            i += 2
            continue
        out.append(a)
        i += 1
    return out


def make_parser(description: str):
    """The scripts' parser: the module docstring as description, every flag's default shown in ``--help``, and no
    abbreviations (``--epoch`` is an error, not ``--epochs``)."""
    import argparse

    class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
        pass

    return argparse.ArgumentParser(description=description, formatter_class=_Formatter, allow_abbrev=False)
