"""Command-line helpers the scripts share (argument spelling; the flags themselves live with each script)."""

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


def add_runtime_args(p, accumulation_help: str) -> None:
    """Flags both training scripts share: data root, seed, devices, precision and memory savers."""
    p.add_argument("--data_root", default="preprocessed", help="folder holding the prepared data versions")
    p.add_argument("--seed", type=int, default=42, help="seed of every random choice (same inputs and seed give the same result)")
    p.add_argument("--mixed_precision", choices=["auto", "no", "fp16", "bf16"], default="auto",
                   help="auto: bf16 on GPUs that have it, fp16 on other GPUs, full precision on CPU")
    p.add_argument("--gradient_checkpointing", action="store_true", help="trade compute for activation memory")
    p.add_argument("--gradient_accumulation_steps", type=int, default=1, help=accumulation_help)
    p.add_argument("--report_to", choices=["none", "tensorboard"], default="none",
                   help="training curves (loss, lr, val metrics) for TensorBoard in <output_dir>/runs (pip install tensorboard)")
    p.add_argument("--device", choices=["auto", "cpu"], default="auto", help="auto: GPU when there is one; cpu: force the CPU")
