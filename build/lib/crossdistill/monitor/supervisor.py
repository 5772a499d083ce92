"""Supervise a training run: launch it in its own process group, watch it, recover from faults, evaluate at the end.

Four parts, one concern each:

- :class:`~crossdistill.monitor.job.Job` — launch, re-attach (only to a process that proves to be the job this folder's
  monitor started), signal its own process group, the one-monitor-per-folder lock;
- :class:`~crossdistill.monitor.watch.Watcher` — the run's events (schema-checked) and log growth, the stall clock;
- :func:`classify` — a pure function from the exit code and the events to the fault;
- :class:`RestartPolicy` — how many restarts, after how long, and the command that continues the run
  (:func:`~crossdistill.monitor.commands.recovery_command`).

``--resume`` and the fault's changes go on the command line of a command that hands its argv to the script (python, a
``.py`` file, ``crossdistill-*``, behind ``env``/``accelerate launch``/``nohup``); a wrapped command (``bash -c "exec
python ..."``, a shell script) is restarted as it is, with those flags in its environment
(:data:`~crossdistill.core.cli.MONITOR_FLAGS`), which the training scripts read. A command that writes no event in two
tries, for a folder with no run of this toolkit, is not a training script: the monitor gives up after its first restart.

The monitor only ever signals the process group it started (never processes found by name). It treats ``done.json``
as the only proof of completion, and writes each decision with its reason to ``<output_dir>/monitor.jsonl``.

Faults and what is done about them:

=============  ===============================================  =============================================
fault          detected by                                      recovery
=============  ===============================================  =============================================
crash          non-zero exit                                    restart with ``--resume``
killed         exit by a signal                                 restart with ``--resume``
out of memory  exit code 4 or a ``fatal`` event of kind ``oom``  restart with ``--resume`` and half the micro-batch
                                                                (teacher: twice the gradient accumulation steps)
NaN / inf      exit code 3 or a ``nonfinite_loss`` event        roll back (``--resume`` from the last checkpoint)
                                                                with half the learning rate
stall          no event / log growth for ``stall_timeout``      kill the group, restart with ``--resume``
usage error    exit code 2                                      stop: the command itself is wrong
=============  ===============================================  =============================================

Restarts back off exponentially and stop after ``max_restarts`` within ``restart_window`` seconds. The evaluation of
a finished student runs as one more job under the same watch, with a time limit. Whatever ends the monitor — a
signal, an error of its own — the job it started is stopped with it.
"""

from __future__ import annotations

import json
import shlex
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from crossdistill.core.cli import MONITOR_FLAGS
from crossdistill.core.errors import EXIT_NONFINITE, EXIT_OOM, EXIT_USAGE, UsageError
from crossdistill.core.events import EventLog, read_events
from crossdistill.core.ownership import folder_kind
from crossdistill.monitor.commands import evaluation_command, is_direct, names_training_script, recovery, resumable
from crossdistill.monitor.config import MonitorConfig
from crossdistill.monitor.job import Job, monitor_lock
from crossdistill.monitor.watch import Watcher, last_error, tail

BACKOFF_MAX = 600.0  # seconds: the longest wait before a restart, however many came before


@dataclass
class Outcome:
    kind: str              # completed | crash | killed | oom | nonfinite | stall | usage
    code: int | None
    detail: str = ""


def classify(code: int | None, events: list[dict], done: bool, detail: str = "") -> Outcome:
    """The fault of an ended job, from its exit code (-999: a re-attached job, code unknown) and the events it wrote
    since it started; ``done``: ``done.json`` exists. Never from the text of its log."""
    kinds = {e.get("event") for e in events}
    fatal = {e.get("kind") for e in events if e.get("event") == "fatal"}
    if done and code in (0, -999):
        return Outcome("completed", code)
    if code == EXIT_USAGE:
        return Outcome("usage", code, detail)
    if code == EXIT_NONFINITE or "nonfinite_loss" in kinds:
        return Outcome("nonfinite", code, detail)
    if code == EXIT_OOM or "oom" in fatal:
        return Outcome("oom", code, detail)
    if code is not None and code < 0 and code != -999:
        return Outcome("killed", code, f"killed by signal {signal.Signals(-code).name}")
    if code == -999:
        return Outcome("crash", None, "re-attached job ended without done.json")
    return Outcome("crash", code, detail or f"exit code {code} without done.json")


@dataclass
class RestartPolicy:
    """Restarts within ``window`` seconds, at most ``max_restarts``, each after an exponential back-off."""

    max_restarts: int
    window: float
    backoff: float
    backoff_max: float
    times: list[float] = field(default_factory=list)

    def next_delay(self, now: float) -> float | None:
        """Record a restart at ``now``; its delay in seconds, or None once the cap is reached."""
        self.times = [t for t in self.times if now - t < self.window] + [now]
        if len(self.times) > self.max_restarts:
            return None
        return min(self.backoff * 2 ** (len(self.times) - 1), self.backoff_max)


@dataclass
class Supervisor:
    command: list[str]
    output_dir: Path
    policy: MonitorConfig = field(default_factory=MonitorConfig)  # its timeouts, restart cap, back-off and poll
    evaluate: bool = True
    eval_dir: Path | None = None
    eval_extra: list[str] = field(default_factory=list)

    def __post_init__(self):
        self.output_dir = Path(self.output_dir)
        if self.output_dir.exists() and not self.output_dir.is_dir():
            raise UsageError(f"--output_dir {self.output_dir} is a file; pass the run's output folder")
        self.log = EventLog(self.output_dir / "monitor.jsonl")
        self.restarts = RestartPolicy(self.policy.max_restarts, self.policy.restart_window, self.policy.backoff,
                                      BACKOFF_MAX)
        self.history: list[dict] = []
        self.job: Job | None = None
        self.env_flags: list[str] = []  # a wrapped command's recovery flags (the environment's MONITOR_FLAGS)
        self.events_seen = 0  # events the jobs this monitor started wrote, all attempts together

    # ----------------------------------------------------------------- bookkeeping
    def decide(self, decision: str, reason: str, **fields) -> None:
        self.log.log("decision", decision=decision, reason=reason, **fields)
        self.history.append({"decision": decision, "reason": reason, **fields})
        self.say(f"[monitor] {decision}: {reason}")

    def say(self, text: str) -> None:
        print(text, file=sys.stdout, flush=True)  # sys.stdout as it is now, not when this module was imported

    def _launch(self, command: list[str]) -> tuple[Job, Watcher]:
        """Start ``command``; its watcher is made first, so it reads every event the job writes, even when the job
        writes them (or ends) before the monitor looks."""
        watcher = Watcher(self.output_dir)
        env = {MONITOR_FLAGS: shlex.join(self.env_flags)} if self.env_flags else None
        job = Job.launch(command, self.output_dir, env=env)
        self.log.log("launch", pid=job.pid, command=shlex.join(command),
                     **({"env": f"{MONITOR_FLAGS}={shlex.join(self.env_flags)}"} if env else {}))
        self.say(f"[monitor] started pid {job.pid}; its own log: {self.output_dir / 'train.log'}")
        return job, watcher

    # ----------------------------------------------------------------- watching
    def _watch(self, job: Job, watcher: Watcher) -> Outcome:
        from crossdistill.monitor.status import StatusLine

        status = StatusLine(sys.stdout, restarts=len(self.restarts.times))
        seen: list[dict] = []
        while True:
            code = job.returncode()
            events = watcher.poll()
            if events:
                seen += events
                status.update(events)
                for e in events:
                    if e["event"] == "guard":
                        self.say(f"[monitor] guard: val MRR@10 of the starting student {e['student_mrr@10']:.4f}, of the "
                                 f"teacher reranking its top-{e['guard_k']} {e['teacher_rerank_mrr@10']:.4f}")
                    elif e["event"] == "checkpoint_skipped":
                        self.say(f"[monitor] the run skipped damaged checkpoint {e['checkpoint']}: {e['reason']}")
            if code is not None:
                seen += watcher.poll()
                self.events_seen += len(seen)
                status.finish()
                if watcher.malformed:
                    self.say(f"[monitor] skipped {watcher.malformed} malformed event line(s) in events.jsonl")
                return classify(code, seen, (self.output_dir / "done.json").is_file(), self._error_line())
            limit = self.policy.stall_timeout if watcher.started else max(self.policy.stall_timeout,
                                                                         self.policy.startup_timeout)
            if watcher.stalled_for() > limit:
                status.finish()
                job.kill_group()
                return Outcome("stall", None, f"no progress for {limit:.0f}s" + ("" if watcher.started else " since the start"))
            status.show(job.pid, self.policy.status_every)
            time.sleep(self.policy.poll)

    def _error_line(self) -> str:
        """The last line of the job's log that reads like an error: shown to the user, never used to classify."""
        return last_error(tail(self.output_dir / "train.log", 40))

    # ----------------------------------------------------------------- recovery
    def _last_micro(self) -> int | None:
        for e in reversed(read_events(self.output_dir / "events.jsonl")):
            if isinstance(e, dict) and e.get("event") == "oom" and isinstance(e.get("micro_batch_size"), int):
                return e["micro_batch_size"]
        return None

    def _on_signal(self, signum, frame) -> None:
        """SIGTERM / SIGINT (Ctrl-C) to the monitor stop the supervised run too (see :meth:`run`)."""
        name = signal.Signals(signum).name
        running = self.job is not None and self.job.alive()
        self.decide("stopped", f"monitor received {name}" + (f": stopping the run (pid {self.job.pid}); resume it by running "
                                                             "the same monitor command again" if running else ""),
                    signal=name)
        raise SystemExit(128 + signum)

    def run(self) -> int:
        """Supervise until completion or give-up; returns the exit code for the monitor itself. Whatever ends it —
        completion, a signal, an error of the monitor itself — a job it started is not left running unsupervised."""
        lock = monitor_lock(self.output_dir)
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            return self._supervise()
        finally:
            if self.job is not None and self.job.alive():
                self.job.kill_group()
            for s, handler in previous.items():
                signal.signal(s, handler)
            lock.close()

    def _supervise(self) -> int:
        job, why = Job.reattach(self.output_dir)
        command = self.command
        if job is not None:
            self.decide("reattach", f"job pid {job.pid} from an earlier monitor is still running", pid=job.pid)
            watcher = Watcher(self.output_dir)  # its events so far were an earlier monitor's to read
        else:
            if not command:
                raise UsageError(f"nothing is running for {self.output_dir} and no command was given; "
                                 "pass the training command after --")
            if (self.output_dir / "done.json").is_file() and "--overwrite" not in command:
                self.decide("already-complete", "done.json exists")
                return self._evaluate() if self.evaluate else 0
            if resumable(self.output_dir, command):  # the same monitor command, run again after a stop: continue the run
                if is_direct(command):
                    command = self.command = [c for c in command if c != "--overwrite"] + ["--resume"]
                else:
                    self.env_flags = ["--resume"]
                self.decide("resume", "the folder holds an unfinished run of this toolkit: continuing it with --resume",
                            command=shlex.join(command), **self._env_field())
            job, watcher = self._launch(command)
        while True:
            self.job = job
            outcome = self._watch(job, watcher)
            if outcome.kind == "completed":
                self.decide("completed", "done.json written and the run exited cleanly", code=outcome.code)
                return self._evaluate() if self.evaluate else 0
            if outcome.kind == "usage":
                self.decide("give-up", f"the command was rejected (exit 2): {outcome.detail}", fault="usage")
                return 1
            delay = self.restarts.next_delay(time.time())
            if delay is None:
                self.decide("give-up", f"{len(self.restarts.times) - 1} restarts within {self.policy.restart_window:.0f}s "
                            f"(cap {self.policy.max_restarts}); last fault: {outcome.kind} {outcome.detail}".strip(),
                            fault=outcome.kind, summary=self._summary())
                return 1
            if not command:  # re-attached without a command: never run one read back from a file
                self.decide("give-up", f"the re-attached run ended ({outcome.kind}: {outcome.detail}) and this monitor "
                            "was given no command to restart it; run the monitor again with the training command after --",
                            fault=outcome.kind)
                return 1
            if len(self.restarts.times) > 1 and not self.events_seen and not names_training_script(command) and \
                    folder_kind(self.output_dir) not in ("teacher", "student"):
                self.decide("give-up", f"the command wrote no progress event in {len(self.restarts.times)} tries and "
                            f"{self.output_dir} holds no training run of this toolkit, so it is not a script that "
                            "--resume continues (train_teacher_model.py, train_distillation_pipeline.py or a command "
                            f"that runs one); last fault: {outcome.kind} {outcome.detail}".strip(), fault=outcome.kind)
                return 1
            command, self.env_flags = recovery(command, self.env_flags, outcome.kind, folder_kind(self.output_dir),
                                               self._last_micro)
            self.decide("restart", f"{outcome.kind}: {outcome.detail}".strip(": "), fault=outcome.kind,
                        exit_code=outcome.code, attempt=len(self.restarts.times), backoff_s=delay,
                        command=shlex.join(command), **self._env_field())
            time.sleep(delay)
            job, watcher = self._launch(command)

    def _env_field(self) -> dict:
        return {"env": f"{MONITOR_FLAGS}={shlex.join(self.env_flags)}"} if self.env_flags else {}

    def _summary(self) -> str:
        kinds: dict[str, int] = {}
        for h in self.history:
            if h["decision"] == "restart":
                kinds[h["fault"]] = kinds.get(h["fault"], 0) + 1
        return ", ".join(f"{k} x{v}" for k, v in kinds.items()) or "no restarts"

    # ----------------------------------------------------------------- evaluation
    def _evaluate(self) -> int:
        """The finished student's evaluation, as one more watched job (its own log, a time limit)."""
        args = evaluation_command(self.output_dir, self.eval_dir, self.eval_extra)
        if args is None:
            self.decide("no-evaluation", "the run is not a student (teacher runs are evaluated through their student)")
            return 0
        self.decide("evaluate", "training completed", command=shlex.join(args))
        self.job = job = Job.launch(args, self.output_dir, log_name="evaluation.log", record=False)
        code = job.wait(self.policy.eval_timeout)
        if code is None:
            job.kill_group()
            self.decide("evaluation-failed", f"no result within --eval_timeout {self.policy.eval_timeout:.0f}s; stopped it")
            return 1
        if code != 0:
            self.decide("evaluation-failed", last_error(tail(self.output_dir / "evaluation.log", 40)) or f"exit {code}")
            return 1
        out = Path(args[args.index("--output_dir") + 1])
        res = json.loads((out / "bi_encoder_evaluation_results.json").read_text())
        pool = res["retrieval"]["student"]["pool"]
        scope = "corpus" if "corpus" in res["retrieval"]["student"] else "pool"
        beside = " | ".join(f"{name} nDCG@10 {r[scope]['ndcg@10']:.4f}" for name, r in res["retrieval"].items() if scope in r)
        self.say(f"[monitor] evaluation: positive {res['avg_positive_score']:.4f} negative {res['avg_negative_score']:.4f} "
                 f"margin {res['avg_margin']:.4f} accuracy {res['accuracy']:.4f} | MRR@10 {pool['mrr@10']:.4f} "
                 f"nDCG@10 {pool['ndcg@10']:.4f} -> {out}")
        self.say(f"[monitor] test {scope}: {beside}")
        self.log.log("evaluated", output=str(out), mrr10=pool["mrr@10"], ndcg10=pool["ndcg@10"])
        return 0
