"""Supervise long training runs: live status, automatic recovery (resume from checkpoints), evaluation at the end.

  # one run
  python realtime_monitor.py --output_dir models/bi_encoder_distilled -- \
      python train_distillation_pipeline.py --teacher_path models/cross_encoder_teacher --output_dir models/bi_encoder_distilled
  # the whole job (teacher, student, evaluation) with the original's quick or full settings
  python realtime_monitor.py --pipeline quick --data_version scifact
  # re-attach to a running job after the monitor itself died
  python realtime_monitor.py --output_dir models/bi_encoder_distilled
  # no arguments: the default job of README (--pipeline default --data_version scifact), started or re-attached
  python realtime_monitor.py
"""

import shlex
import sys
from pathlib import Path

from crossdistill.core.cli import join_passthrough
from crossdistill.core.errors import run_cli
from crossdistill.monitor.config import MonitorConfig


def parse_args(argv=None) -> MonitorConfig:
    argv = join_passthrough(list(sys.argv[1:] if argv is None else argv), ("--teacher_args", "--student_args", "--eval_args"))
    if not argv:  # the original's command line: watch the default job
        print("[monitor] no arguments: supervising the README's default job (--pipeline default --data_version scifact); "
              "it is started, or re-attached to if it is already running", flush=True)
        argv = ["--pipeline", "default", "--data_version", "scifact"]
    command: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, command = argv[:i], argv[i + 1:]
    return MonitorConfig.parse(argv, __doc__, command=tuple(command))


def main(argv=None):
    from crossdistill.monitor.pipeline import pipeline_commands
    from crossdistill.monitor.supervisor import Supervisor

    cfg = parse_args(argv)
    policy = cfg  # the supervisor reads its timeouts, restart cap, back-off and poll from the monitor's settings
    eval_dir = Path(cfg.eval_output_dir) if cfg.eval_output_dir else None
    if not cfg.pipeline:
        return Supervisor(list(cfg.command), Path(cfg.output_dir), policy, not cfg.no_evaluate, eval_dir,
                          cfg.split("eval_args")).run()
    stages = pipeline_commands(cfg.pipeline, cfg.data_version, cfg.models_dir, cfg.teacher_model, cfg.student_name,
                               cfg.split("teacher_args"), cfg.split("student_args"), cfg.data_root)
    for stage, out_dir, command in stages:  # a stage already finished (done.json) is not run again: see Supervisor
        print(f"[monitor] stage {stage}: {shlex.join(command)}", flush=True)
        code = Supervisor(command, out_dir, policy, evaluate=stage == "student" and not cfg.no_evaluate,
                          eval_dir=eval_dir, eval_extra=cfg.split("eval_args")).run()
        if code != 0:
            print(f"[monitor] stage {stage} did not complete; stopping the pipeline", flush=True)
            return code
    return 0


def run() -> None:
    """The command line: ``python -m crossdistill.monitor``, ``crossdistill-monitor``, ``python realtime_monitor.py``."""
    run_cli(main)
