#!/usr/bin/env python
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

from crossdistill.cli import join_passthrough, make_parser
from crossdistill.errors import NON_NEGATIVE, POSITIVE, UsageError, check_args, run_cli


def parse_args(argv=None):
    argv = join_passthrough(list(sys.argv[1:] if argv is None else argv), ("--teacher_args", "--student_args", "--eval_args"))
    if not argv:  # the original's command line: watch the default job
        print("[monitor] no arguments: supervising the README's default job (--pipeline default --data_version scifact); "
              "it is started, or re-attached to if it is already running", flush=True)
        argv = ["--pipeline", "default", "--data_version", "scifact"]
    command = []
    if "--" in argv:
        i = argv.index("--")
        argv, command = argv[:i], argv[i + 1:]
    p = make_parser(__doc__)
    p.add_argument("--output_dir", help="the supervised run's --output_dir (events.jsonl, checkpoints, done.json)")
    p.add_argument("--pipeline", choices=["default", "cpu", "quick", "full"],
                   help="run teacher, student and evaluation: 'default' = the measured recipe (every script's defaults), "
                        "'cpu' = the same cut to ~20 min on 2 CPU cores, 'quick'/'full' = the original's settings")
    p.add_argument("--data_version", help="with --pipeline: the prepared data version")
    p.add_argument("--data_root", default="preprocessed", help="folder holding the prepared data versions")
    p.add_argument("--models_dir", default="models", help="with --pipeline: where the teacher and student folders go")
    p.add_argument("--teacher_model", default=None, help="with --pipeline: base model of the teacher")
    p.add_argument("--student_name", default=None, help="with --pipeline: the student model")
    p.add_argument("--teacher_args", default="", help="with --pipeline: extra teacher flags, one quoted string")
    p.add_argument("--student_args", default="", help="with --pipeline: extra student flags, one quoted string")
    p.add_argument("--stall_timeout", type=float, default=900, help="seconds without progress before a run counts as stalled")
    p.add_argument("--startup_timeout", type=float, default=1800,
                   help="seconds a (re)started run may take to its first event before it counts as stalled")
    p.add_argument("--max_restarts", type=int, default=5, help="give up after this many restarts within --restart_window")
    p.add_argument("--restart_window", type=float, default=3600, help="seconds over which --max_restarts is counted")
    p.add_argument("--backoff", type=float, default=10, help="first restart delay in seconds (doubles each time)")
    p.add_argument("--poll", type=float, default=2.0, help="seconds between checks of the run")
    p.add_argument("--status_every", type=float, default=30, help="seconds between status lines when not on a terminal")
    p.add_argument("--no_evaluate", action="store_true", help="do not run evaluate_final_model.py at the end")
    p.add_argument("--eval_output_dir", default=None, help="default: evaluation_results/<run folder name>")
    p.add_argument("--eval_args", default="", help="extra evaluate_final_model.py flags, one quoted string")
    args = p.parse_args(argv)
    check_args(args, {"stall_timeout": POSITIVE, "startup_timeout": POSITIVE, "max_restarts": NON_NEGATIVE, "restart_window": POSITIVE,
                      "backoff": NON_NEGATIVE, "poll": POSITIVE, "status_every": POSITIVE})
    if args.pipeline and command:
        raise UsageError("give either --pipeline or a command after --, not both")
    if args.pipeline and not args.data_version:
        raise UsageError("--pipeline needs --data_version (prepare one with prepare_data.py)")
    if not args.pipeline and not args.output_dir:
        raise UsageError("pass --output_dir (the run's output folder) with a command after --, or use --pipeline")
    args.command = command
    return args


def main(argv=None):
    from crossdistill.monitor import Policy, Supervisor
    from crossdistill.pipeline import pipeline_commands

    args = parse_args(argv)
    policy = Policy(args.stall_timeout, args.max_restarts, args.restart_window, args.backoff, poll=args.poll,
                    status_every=args.status_every, startup_timeout=args.startup_timeout)
    eval_extra = shlex.split(args.eval_args)
    if not args.pipeline:
        return Supervisor(args.command, Path(args.output_dir), policy, not args.no_evaluate,
                          Path(args.eval_output_dir) if args.eval_output_dir else None, eval_extra).run()
    stages = pipeline_commands(args.pipeline, args.data_version, args.models_dir, args.teacher_model, args.student_name,
                               shlex.split(args.teacher_args), shlex.split(args.student_args), args.data_root)
    for stage, out_dir, command in stages:
        print(f"[monitor] stage {stage}: {shlex.join(command)}", flush=True)
        if stage == "teacher" and (out_dir / "done.json").is_file():
            print(f"[monitor] {out_dir} already holds a finished teacher; skipping", flush=True)
            continue
        code = Supervisor(command, out_dir, policy, evaluate=stage == "student" and not args.no_evaluate,
                          eval_dir=Path(args.eval_output_dir) if args.eval_output_dir else None, eval_extra=eval_extra).run()
        if code != 0:
            print(f"[monitor] stage {stage} did not complete; stopping the pipeline", flush=True)
            return code
    return 0


if __name__ == "__main__":
    run_cli(main)
