"""``realtime_monitor.py``'s settings."""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass
from pathlib import Path

from crossdistill.core.errors import UsageError
from crossdistill.core.settings import NON_NEGATIVE, POSITIVE, DataLocation, setting
from crossdistill.monitor.pipeline import PRESETS

# --------------------------------------------------------------------------- realtime_monitor.py
# the flags each pass-through may not set, because the monitor sets them (one rule for every pass-through, #46 (10)):
# flag -> what to do instead
_STAGE_OWNED = {"--output_dir": "the stages' folders are <models_dir>/<data_version>/...: choose them with --models_dir",
                "--data_version": "name the data with the monitor's own --data_version",
                "--data_root": "name the data's folder with the monitor's own --data_root",
                "--resume": "the monitor passes it itself when it restarts a stage"}
PASS_THROUGH_OWNED = {
    "teacher_args": _STAGE_OWNED,
    "student_args": {**_STAGE_OWNED, "--teacher_path": "the student learns from the pipeline's teacher; to use another "
                                                       "one run the student under the monitor with a command after --"},
    "eval_args": {"--output_dir": "name the evaluation's folder with --eval_output_dir",
                  "--model_path": "the monitor evaluates the run it watched",
                  "--data_version": "name the data with the monitor's own --data_version",
                  "--data_root": "name the data's folder with the monitor's own --data_root"},
}
@dataclass(frozen=True, kw_only=True)
class MonitorConfig(DataLocation):
    """``realtime_monitor.py``'s settings (the command after ``--`` is :attr:`command`)."""

    output_dir: str | None = setting(None, "the supervised run's --output_dir (events.jsonl, checkpoints, done.json)")
    pipeline: str | None = setting(None, "run teacher, student and evaluation: 'default' = the measured recipe (every "
                                         "script's defaults), 'cpu' = the same cut to ~25 min on 2 CPU cores "
                                         "(its vectors cut to 128 dimensions keep 98 per cent), "
                                         "'cpu_long' = cpu with passages read at 256 tokens (~1 h, +0.02), "
                                         "'cpu_big' = a bigger bi-encoder teacher (nomic-embed-text-v1.5, "
                                         "requirements-nomic.txt) at CPU size (~2.5 h), 'quick'/'full' = the original's "
                                         "settings",
                                   choices=list(PRESETS))
    models_dir: str = setting("models", "with --pipeline: the teacher and student folders go in <models_dir>/<data_version>/")
    teacher_model: str | None = setting(None, "with --pipeline: base model of the teacher")
    student_name: str | None = setting(None, "with --pipeline: the student model")
    teacher_args: str = setting("", "with --pipeline: extra teacher flags, one quoted string")
    student_args: str = setting("", "with --pipeline: extra student flags, one quoted string")
    stall_timeout: float = setting(900.0, "seconds without progress before a run counts as stalled", check=POSITIVE)
    startup_timeout: float = setting(1800.0, "seconds a (re)started run may take to its first event before it counts as "
                                             "stalled", check=POSITIVE)
    max_restarts: int = setting(5, "give up after this many restarts within --restart_window", check=NON_NEGATIVE)
    restart_window: float = setting(3600.0, "seconds over which --max_restarts is counted", check=POSITIVE)
    backoff: float = setting(10.0, "first restart delay in seconds (doubles each time)", check=NON_NEGATIVE)
    poll: float = setting(2.0, "seconds between checks of the run", check=(lambda v: math.isfinite(v) and 0 < v <= 3600,
                                                                          "> 0 and at most 3600"))
    status_every: float = setting(30.0, "seconds between status lines when not on a terminal", check=POSITIVE)
    no_evaluate: bool = setting(False, "do not run evaluate_final_model.py at the end")
    eval_output_dir: str | None = setting(None, "default: evaluation_results/<data_version>/<run folder name>")
    eval_args: str = setting("", "extra evaluate_final_model.py flags, one quoted string")
    eval_timeout: float = setting(7200.0, "seconds the final evaluation may take before it is stopped", check=POSITIVE)
    command: tuple[str, ...] = setting((), flag=False)  # the command after --

    def split(self, name: str) -> list[str]:
        """``--teacher_args`` / ``--student_args`` / ``--eval_args`` as a list of flags."""
        return shlex.split(getattr(self, name))

    def check(self) -> None:
        for name in ("teacher_args", "student_args", "eval_args"):
            try:
                self.split(name)
            except ValueError as exc:
                raise UsageError(f"--{name} {getattr(self, name)!r} cannot be split into flags ({exc}); check its "
                                 "quotes") from None
        if self.pipeline and self.command:
            raise UsageError("give either --pipeline or a command after --, not both")
        for name, owned in PASS_THROUGH_OWNED.items():
            for flag, instead in owned.items():
                if any(a == flag or a.startswith(flag + "=") for a in self.split(name)):
                    raise UsageError(f"--{name} sets {flag}, which the monitor sets itself (it watches and evaluates the "
                                     f"folders it names); {instead}")
        if self.command and self.output_dir:
            from crossdistill.monitor.commands import flag_value

            theirs = flag_value(list(self.command), "--output_dir")
            if theirs is not None and Path(theirs).expanduser().resolve() != Path(self.output_dir).expanduser().resolve():
                raise UsageError(f"the command writes --output_dir {theirs} but the monitor watches --output_dir "
                                 f"{self.output_dir}: its progress and its done.json would never be seen; pass the same folder "
                                 "to both")
        if self.pipeline and not self.data_version:
            raise UsageError("--pipeline needs --data_version (prepare one with prepare_data.py)")
        if not self.pipeline and not self.output_dir:
            raise UsageError("pass --output_dir (the run's output folder) with a command after --, or use --pipeline")
        super().check()
