"""The settings machinery: each entry point's settings are one typed, frozen dataclass that owns its flags (name,
default, help, check) and generates its script's parser.

:meth:`Config.parse`: parse -> the class's own resolution of defaults that depend on other flags (:meth:`Config.resolve`,
e.g. a loss recipe) -> every check (:meth:`Config.check`) -> a frozen value the library reads (``cfg.max_len``) and nobody
mutates. Each stage declares its own config beside the code that reads it (``crossdistill.<stage>.config``); the
settings several entry points share are declared once here, in base classes (``--seed``, ``--data_root``/
``--data_version``, ``--overwrite``, the training loop's flags). A flag whose name misled is renamed with its old
spelling kept as a deprecated alias that warns (``--gradient_accumulation_steps`` -> ``--micro_batches``).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
import sys
from dataclasses import dataclass, field, fields
from typing import ClassVar

from crossdistill.core.errors import UsageError

_REQUIRED = dataclasses.MISSING


_VERSION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def check_version_name(name: str) -> str:
    """A data version is a folder *name* under its root, never a path: ``../../etc`` or ``/tmp/x`` would write (or
    read) outside ``--output_root``/``--data_root``."""
    if not isinstance(name, str) or not _VERSION_NAME.fullmatch(name) or name in (".", ".."):
        raise UsageError(f"--data_version must be a name (letters, digits, '.', '_', '-', starting with a letter or digit), "
                         f"not a path; got {name!r}: put the folder where you want with --output_root / --data_root")
    return name



NAME_MAX = 255  # bytes in one file or folder name (ext4, xfs, btrfs, APFS, NTFS in UTF-16 units)
OWN_NAME_MAX = 200  # a name the toolkit writes beside: its temporary siblings (".<name>.tmp-XXXXXXXX") must fit too
_PATH_SUFFIXES = ("_dir", "_path", "_root", "_file", "_cache", "_data", "_model", "_name", "_scores")
_PATH_NAMES = {"output", "source", "corpus", "data_version", "pipeline_output"}


def _is_path_setting(name: str) -> bool:
    return name in _PATH_NAMES or name.endswith(_PATH_SUFFIXES)


def check_name_lengths(flag: str, value: str) -> None:
    """Refuse a path whose folder or file names the file system cannot hold (more than :data:`NAME_MAX` bytes; the
    last one more than :data:`OWN_NAME_MAX`, since the toolkit writes temporary siblings of it), before anything is
    written: one line instead of ``OSError: [Errno 36] File name too long`` from deep inside a stage."""
    parts = [p for v in value.split(",") for p in v.split("/") if p]
    for i, part in enumerate(parts):
        size = len(part.encode("utf-8", "surrogateescape"))
        limit = OWN_NAME_MAX if i == len(parts) - 1 else NAME_MAX
        if size > limit:
            raise UsageError(f"--{flag}: the name {part[:40]!r}... is {size} bytes long; a folder or file name may be "
                             f"at most {limit} bytes here (the file system allows {NAME_MAX}, and the toolkit writes "
                             "temporary folders beside it); choose a shorter name")


def setting(default=_REQUIRED, help: str = "", *, choices=None, check: tuple | None = None,
            aliases: dict[str, str] | None = None, flag: bool = True, repeatable: bool = False):
    """A field that is also a flag: its default, ``help``, argparse ``choices``, ``check`` = (predicate, "requirement")
    applied to non-None values, ``aliases`` = {old spelling: deprecation note}; ``flag=False``: resolved by the run,
    not given on the command line; ``repeatable``: the flag may be given several times, its values joined by commas."""
    meta = {"help": help, "choices": choices, "check": check, "aliases": aliases or {}, "flag": flag,
            "repeatable": repeatable}
    return field(default=default, metadata=meta)


# checks, as (predicate, requirement)
POSITIVE = (lambda v: math.isfinite(v) and v > 0, "> 0 and finite")
NON_NEGATIVE = (lambda v: math.isfinite(v) and v >= 0, ">= 0 and finite")
AT_LEAST_1 = (lambda v: v >= 1, ">= 1")
PROBABILITY = (lambda v: 0 <= v < 1, "in [0, 1)")
TEMPERATURE = (lambda v: math.isfinite(v) and 1e-3 <= v <= 1e3, "> 0, at least 0.001 and at most 1000")
SEED = (lambda v: 0 <= v <= 2**32 - 1, "between 0 and 4294967295 (numpy's and Python's seed range)")
MAX_LEN = (lambda v: v >= 8, ">= 8")
DEFAULT_MAX_LEN = 256  # tokens: the teacher's pair, the student's query or passage (every stage reads this one value)
# bounded where an absurd value would only surface later as "loss became nan" (and the monitor would halve the lr)
LOSS_WEIGHT = (lambda v: math.isfinite(v) and 0 <= v <= 1000, "between 0 and 1000")
SCALE = (lambda v: math.isfinite(v) and 0 < v <= 1000, "> 0 and at most 1000 (MiniLM trained at 20, e5 at 100)")
WEIGHT_DECAY = (lambda v: math.isfinite(v) and 0 <= v <= 10, "between 0 and 10 (AdamW's default is 0.01)")


def _flag_type(annotation: str):
    a = str(annotation)
    return bool if a == "bool" else int if "int" in a.split("|")[0] else float if "float" in a else str


class _DeprecatedAlias(argparse.Action):
    def __init__(self, *args, note: str = "", **kw):
        self.note = note
        super().__init__(*args, **kw)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"warning: {option_string} is deprecated: {self.note}", file=sys.stderr, flush=True)
        setattr(namespace, self.dest, values if values is not None else True)


@dataclass(frozen=True, kw_only=True)
class Config:
    """Machinery every entry point's config shares: parser generation, parsing, checks, the settings as a dict."""

    description: ClassVar[str] = ""

    @classmethod
    def parser(cls, description: str | None = None) -> argparse.ArgumentParser:
        """The script's parser: one flag per field (defaults shown in ``--help``, no abbreviations)."""
        from crossdistill.core.cli import make_parser

        p = make_parser(description or cls.description or cls.__doc__ or "")
        for f in fields(cls):
            m = f.metadata
            if not m.get("flag", False):
                continue
            kind = _flag_type(f.type)
            kw: dict = {"help": m["help"], "dest": f.name}
            if kind is bool:
                kw["action"] = "store_true"
            elif m.get("repeatable"):
                kw.update(action="append", type=kind)
            else:
                kw["type"] = kind
                if m["choices"]:
                    kw["choices"] = m["choices"]
                if f.default is _REQUIRED:
                    kw["required"] = True
                else:
                    kw["default"] = f.default
            p.add_argument(f"--{f.name}", **kw)
            for old, note in m["aliases"].items():
                extra = {"nargs": 0} if kind is bool else {"type": kind}
                p.add_argument(old, dest=f.name, action=_DeprecatedAlias, note=note, help=argparse.SUPPRESS, **extra)
        return p

    @classmethod
    def parse(cls, argv=None, description: str | None = None, **extra):
        """Parse ``argv`` (plus ``extra`` settings that are not flags), resolve, check: the config, or a UsageError
        naming the first bad flag."""
        values = vars(cls.parser(description).parse_args(argv))
        for f in fields(cls):  # a repeatable flag given several times: one comma-joined value
            if f.metadata.get("repeatable") and isinstance(values.get(f.name), list):
                values[f.name] = ",".join(values[f.name])
        return cls(**values, **extra).resolve().checked()

    def resolve(self):
        """Defaults that depend on other flags (a new config); the base class has none."""
        return self

    def checked(self):
        """Every field's check, then the class's own (:meth:`check`); returns self."""
        for f in fields(self):
            if f.metadata.get("flag", True) and isinstance(getattr(self, f.name), str) and _is_path_setting(f.name):
                check_name_lengths(f.name, getattr(self, f.name))
            rule, value = f.metadata.get("check"), getattr(self, f.name)
            if rule and value is not None and not rule[0](value):
                raise UsageError(f"--{f.name} must be {rule[1]} (got {value!r}); pass a value that is {rule[1]}")
        self.check()
        return self

    def check(self) -> None:
        """Checks across flags; the base class has none."""

    def to_dict(self) -> dict:
        """Every setting, as written to a run's settings file."""
        return dataclasses.asdict(self)

    @classmethod
    def default(cls, name: str):
        """The default of setting ``name`` (what a flag left out means)."""
        return next(f.default for f in fields(cls) if f.name == name)


# --------------------------------------------------------------------------- settings several entry points share
@dataclass(frozen=True, kw_only=True)
class DataLocation(Config):
    data_root: str = setting("preprocessed", "folder holding the prepared data versions",
                             aliases={"--output_root": "it is the same folder the training scripts call --data_root; "
                                                       "use --data_root"})
    data_version: str | None = setting(None, "name of a prepared data version: the folder <data_root>/<data_version> "
                                             "(prepare_data.py writes it; there is no default version)")

    def check(self) -> None:
        if self.data_version is not None:
            check_version_name(self.data_version)
        super().check()


@dataclass(frozen=True, kw_only=True)
class Seeded(Config):
    seed: int = setting(42, "seed of every random choice (same inputs and seed give the same result)", check=SEED)


@dataclass(frozen=True, kw_only=True)
class Replaceable(Config):
    overwrite: bool = setting(False, "replace an existing output, only one this toolkit wrote (of the same kind), and "
                                     "only once every input checked out")


@dataclass(frozen=True, kw_only=True)
class Sampled(Config):
    max_samples: int | None = setting(None, "seeded random subset of the training queries, each with all its rows, up to "
                                            "this many rows", check=AT_LEAST_1)


@dataclass(frozen=True, kw_only=True)
class Batched(Config):
    eval_batch_size: int = setting(64, "batch size for validation, teacher scoring and encoding", check=AT_LEAST_1)


# --------------------------------------------------------------------------- the two training stages
_MICRO = ("it splits each batch into N exact micro-batches (the same result, less memory), unlike Hugging Face's "
          "gradient accumulation, which enlarges the batch; the new name is --micro_batches")


@dataclass(frozen=True, kw_only=True)
class TrainingConfig(DataLocation, Seeded, Sampled, Batched, Replaceable):
    """The settings both training stages share; each stage declares the ones whose meaning or default differ
    (``--output_dir``, ``--batch_size``, ``--lr``, ``--max_len``)."""

    epochs: int = setting(3, "passes over the training data", check=AT_LEAST_1)
    use_lora: bool = setting(False, "train LoRA adapters (peft) instead of all weights")
    lora_r: int = setting(32, "LoRA rank (with --use_lora)", check=AT_LEAST_1)
    lora_alpha: int = setting(64, "LoRA scaling alpha (with --use_lora)", check=POSITIVE)
    lora_dropout: float = setting(0.1, "LoRA dropout (with --use_lora)", check=PROBABILITY)
    attention_dropout: float | None = setting(
        None, "dropout on attention probabilities while training (default: the model's own, 0.1 for MiniLM and e5); 0 lets "
              "PyTorch use its fused attention kernel: on CPU 1.2-1.3x faster steps and about a third less memory",
        check=PROBABILITY)
    weight_decay: float = setting(0.01, "AdamW weight decay (not on biases and LayerNorm)", check=WEIGHT_DECAY)
    warmup_ratio: float = setting(0.1, "fraction of the steps spent warming the learning rate up", check=PROBABILITY)
    max_grad_norm: float = setting(1.0, "gradient clipping norm", check=POSITIVE)
    max_val_samples: int | None = setting(None, "seeded subset of the val queries, each with all its rows, up to this many "
                                                "rows (faster validation)", check=AT_LEAST_1)
    query_prefix: str | None = setting(None, "text put before each query (default: the model's prompts or family "
                                             "convention)")
    passage_prefix: str | None = setting(None, "text put before each passage (default: the model's prompts or family "
                                               "convention)")
    log_steps: int = setting(5, "write a step event (read by the monitor) every N steps", check=AT_LEAST_1)
    save_steps: int = setting(50, "checkpoint every N steps (and at every epoch end); 0: epoch ends only",
                              check=NON_NEGATIVE)
    resume: bool = setting(False, "continue from the last complete checkpoint in --output_dir")
    mixed_precision: str = setting("auto", "auto: bf16 on GPUs that have it, fp16 on other GPUs, full precision on CPU",
                                   choices=["auto", "no", "fp16", "bf16"])
    gradient_checkpointing: bool = setting(False, "trade compute for activation memory")
    micro_batches: int = setting(1, "run each batch as N exact micro-batches: the same result, less memory",
                                 check=AT_LEAST_1, aliases={"--gradient_accumulation_steps": _MICRO})
    report_to: str = setting("none", "training curves (loss, lr, val metrics) for TensorBoard in <output_dir>/runs (pip "
                                     "install tensorboard)", choices=["none", "tensorboard"])
    device: str = setting("auto", "auto: GPU when there is one; cpu: force the CPU", choices=["auto", "cpu"])

    def check(self) -> None:
        if self.resume and self.overwrite:
            raise UsageError("--resume and --overwrite contradict each other; pass one")
        super().check()


def flags_of(cls) -> list[str]:
    """The command-line flags of a config class (what its generated parser accepts), aliases aside."""
    return [f"--{f.name}" for f in fields(cls) if f.metadata.get("flag", False)]


__all__ = ["Config", "DataLocation", "Seeded", "Sampled", "Batched", "Replaceable", "TrainingConfig", "setting", "flags_of", "check_version_name"]
