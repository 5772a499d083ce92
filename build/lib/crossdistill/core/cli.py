"""Command-line helpers the scripts share: the parser every script's config generates (:mod:`crossdistill.core.settings`),
and quoted pass-through flags (``--student_args "--epochs 2"``)."""

from __future__ import annotations


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
