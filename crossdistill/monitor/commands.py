"""What the monitor runs: the command that continues a run after a fault, and the evaluation of a finished
student. Pure functions of argv lists and the run's saved files; nothing here starts a process."""

from __future__ import annotations

import json
import re
import shlex
import sys
from pathlib import Path

from crossdistill.core.ownership import folder_kind
from crossdistill.core.settings import DEFAULT_MAX_LEN


def recovery_command(command: list[str], fault: str, stage: str | None, last_micro_batch=lambda: None) -> list[str]:
    """The command that continues a run after ``fault`` (an :class:`~crossdistill.monitor.supervisor.Outcome` kind): always
    ``--resume`` (never ``--overwrite``); out of memory: the student's micro-batch halved (from the flag, the run's
    last ``micro_batch_size`` event via ``last_micro_batch()``, or the whole batch), the teacher's gradient
    accumulation doubled; NaN/inf: the learning rate halved. ``stage``: what the run's output folder says it is
    (:func:`~crossdistill.core.ownership.folder_kind`: ``student`` or ``teacher``), never guessed from the command."""
    cmd = list(command)
    if "--resume" not in cmd:  # both training scripts checkpoint and resume
        cmd = [c for c in cmd if c != "--overwrite"] + ["--resume"]
    is_student = stage == "student"
    if fault == "oom" and is_student:
        current = flag_value(cmd, "--micro_batch_size") or last_micro_batch() or texts_per_batch(cmd)
        cmd = set_flag(cmd, "--micro_batch_size", str(max(1, int(current) // 2)))
    elif fault == "oom" and stage == "teacher":  # the same batch in twice as many forward passes
        splits = flag_value(cmd, "--micro_batches") or flag_value(cmd, "--gradient_accumulation_steps") or 1
        cmd = set_flag(set_flag(cmd, "--gradient_accumulation_steps", None), "--micro_batches", str(2 * int(splits)))
    if fault == "nonfinite":
        from crossdistill.distill.config import StudentConfig
        from crossdistill.teach.config import TeacherConfig

        lr = float(flag_value(cmd, "--lr") or (StudentConfig if is_student else TeacherConfig).default("lr"))
        cmd = set_flag(cmd, "--lr", f"{lr / 2:g}")
    return cmd


_PASSES_ARGV = ("accelerate", "torchrun", "nohup", "nice", "uv", "time", "stdbuf")  # programs that hand their argv on


def is_direct(command: list[str]) -> bool:
    """Whether flags appended to ``command`` reach the training script: a python interpreter, a ``.py`` file, a
    ``crossdistill-*`` command, or one of them behind ``env VAR=1``/``accelerate launch``/``nohup``. A shell
    (``bash -c "..."``, a ``.sh`` script) is not: an appended flag would become ``$0`` there."""
    i = 0
    while i < len(command):
        name = Path(command[i]).name
        if name == "env" or ("=" in command[i] and not command[i].startswith("-") and i > 0):
            i += 1
            continue
        if name in _PASSES_ARGV:
            return True
        return bool(re.fullmatch(r"python[\d.]*", name) or name.endswith(".py") or name.startswith("crossdistill-"))
    return False


TRAINING_SCRIPTS = ("train_teacher_model.py", "train_distillation_pipeline.py", "crossdistill.teach", "crossdistill.distill",
                    "crossdistill-teacher", "crossdistill-distill")


def names_training_script(command: list[str]) -> bool:
    """Whether ``command`` (a shell string's words included) runs one of the two training scripts, which take
    ``--resume``: such a command is restarted up to the cap even when it dies before its first event."""
    return any(w == s or w.endswith(("/" + s, "=" + s)) for w in words(command) for s in TRAINING_SCRIPTS)


def words(command: list[str]) -> list[str]:
    """The flags visible in ``command``, those inside a shell string (``bash -c "python t.py --lr 1e-5"``) included."""
    out = []
    for c in command:
        try:
            out += shlex.split(c) if " " in c else [c]
        except ValueError:
            out.append(c)
    return out


def recovery(command: list[str], env_flags: list[str], fault: str, stage: str | None,
             last_micro_batch=lambda: None) -> tuple[list[str], list[str]]:
    """``(command, recovery flags for the environment)`` that continue a run after ``fault``: for a direct command the
    flags go on its command line (:func:`recovery_command`); for a wrapped one (a shell) the command stays as it is and
    the flags (``--resume`` and what the fault changes, computed from the flags visible inside it) travel in
    :data:`~crossdistill.core.cli.MONITOR_FLAGS`, which the training scripts read."""
    if is_direct(command):
        return recovery_command(command, fault, stage, last_micro_batch), []
    inner = recovery_command(words(command) + env_flags, fault, stage, last_micro_batch)
    flags = ["--resume"]
    for name in ("--micro_batch_size", "--micro_batches", "--lr"):
        value = flag_value(inner, name)
        if value is not None and value != flag_value(words(command), name):
            flags += [name, value]
    return command, flags


def evaluation_command(output_dir: Path, eval_dir: Path | None = None, extra: list[str] | None = None) -> list[str] | None:
    """``evaluate_final_model.py`` arguments derived from a finished student run's saved configuration.

    Test data: the run's data version (its test.csv, and its corpus when it has one); output: ``eval_dir`` or
    ``evaluation_results/<data_version>/<run folder name>``; lengths: the run's ``--max_len`` and per-side lengths.
    """
    f = Path(output_dir) / "training_args.json"
    if not f.is_file() or not (Path(output_dir) / "distillation_config.json").is_file():
        return None
    try:
        a = json.loads(f.read_text())
        if not isinstance(a, dict) or not isinstance(a.get("data_version"), str):
            raise ValueError("it names no data_version")
    except ValueError as exc:
        from crossdistill.core.errors import UsageError

        raise UsageError(f"cannot evaluate {output_dir}: its training_args.json is not what train_distillation_pipeline.py "
                         f"writes ({exc}); run evaluate_final_model.py --model_path {output_dir} --test_data ... "
                         "yourself") from None
    out = Path(eval_dir) if eval_dir else Path("evaluation_results") / a["data_version"] / Path(output_dir).name
    extra = list(extra or [])
    baselines = []  # the starting model and BM25 beside the student, unless the caller chose otherwise
    if "--base_model" not in extra and a.get("student_name"):
        baselines += ["--base_model", str(a["student_name"])]
    if "--bm25" not in extra:
        baselines.append("--bm25")
    data = ["--data_root", str(a.get("data_root", "preprocessed")), "--data_version", a["data_version"]]  # test.csv and
    # the version's corpus (corpus.jsonl) when it has one: the test queries ranked over the full corpus as well
    return [sys.executable, "-m", "crossdistill.evaluate", "--model_path", str(output_dir), *data,
            "--output_dir", str(out), "--overwrite", *_lengths(a), *baselines, *extra]


def _lengths(args: dict) -> list[str]:
    """The run's lengths as the evaluation's flags: ``--max_len``, and per side where the run set one."""
    flags = ["--max_len", str(args.get("max_len", DEFAULT_MAX_LEN))]
    for side in ("query_max_len", "passage_max_len"):
        if isinstance(args.get(side), int):
            flags += [f"--{side}", str(args[side])]
    return flags


def flag_value(cmd: list[str], name: str) -> str | None:
    for i, c in enumerate(cmd):
        if c == name and i + 1 < len(cmd):
            return cmd[i + 1]
        if c.startswith(name + "="):
            return c.split("=", 1)[1]
    return None


def set_flag(cmd: list[str], name: str, value: str | None) -> list[str]:
    """``cmd`` with ``name`` set to ``value`` (appended), or removed when ``value`` is None."""
    out, skip = [], False
    for i, c in enumerate(cmd):
        if skip:
            skip = False
            continue
        if c == name:
            skip = True
            continue
        if c.startswith(name + "="):
            continue
        out.append(c)
    return out + ([name, value] if value is not None else [])


def texts_per_batch(cmd: list[str]) -> int:
    from crossdistill.distill.config import StudentConfig

    return int(flag_value(cmd, "--batch_size") or StudentConfig.default("batch_size")) * \
        (1 + int(flag_value(cmd, "--K") or StudentConfig.default("K")))


def resumable(output_dir: Path, command: list[str]) -> bool:
    """A command without --resume or --overwrite (those inside a shell string included) for a folder that holds an
    unfinished training run of this toolkit (its kind teacher or student, no done.json; with checkpoints or stopped
    before its first one): what a rerun of the monitor after Ctrl-C or SIGTERM finds."""
    flags = words(command)
    return "--resume" not in flags and "--overwrite" not in flags and \
        folder_kind(output_dir) in ("teacher", "student") and not (output_dir / "done.json").is_file()
