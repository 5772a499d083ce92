"""Supervise a training run: launch it in its own process group, watch it, recover from faults, evaluate at the end.

The monitor only ever signals the process group it started (never processes found by name). It reads the
run's JSONL event log for progress, treats ``done.json`` as the only proof of completion, and writes each
decision with its reason to ``<output_dir>/monitor.jsonl``.

Faults and what is done about them:

=============  ===========================================  =============================================
fault          detected by                                  recovery
=============  ===========================================  =============================================
crash          non-zero exit (traceback tail kept)          restart with ``--resume``
killed         exit by a signal                             restart with ``--resume``
out of memory  "out of memory" / OutOfMemoryError in log    restart with ``--resume`` and half the micro-batch
                                                            (teacher: twice the gradient accumulation steps)
NaN / inf      exit code 3 or a ``nonfinite_loss`` event    roll back (``--resume`` from the last checkpoint)
                                                            with half the learning rate
stall          no event / log growth for ``stall_timeout``  kill the group, restart with ``--resume``
usage error    exit code 2                                  stop: the command itself is wrong
=============  ===========================================  =============================================

Restarts back off exponentially and stop after ``max_restarts`` within ``restart_window`` seconds.
A monitor started again on the same folder re-attaches to the still-running job (pid + start time in
``monitor_child.json``); a second monitor on the same folder is refused (``monitor.lock``).
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import EXIT_NONFINITE, EXIT_USAGE, UsageError
from .fsutil import EventLog, read_events, write_json
from .monitor_commands import evaluation_command, recovery_command


@dataclass
class Policy:
    stall_timeout: float = 900.0
    max_restarts: int = 5
    restart_window: float = 3600.0
    backoff: float = 10.0
    backoff_max: float = 600.0
    poll: float = 2.0
    status_every: float = 30.0
    startup_timeout: float = 1800.0  # before the run's first event: imports, model loading, first phase


@dataclass
class Child:
    pid: int
    create_time: float
    popen: subprocess.Popen | None = None  # None when re-attached to a job started by an earlier monitor

    def alive(self) -> bool:
        import psutil

        try:
            p = psutil.Process(self.pid)
            return abs(p.create_time() - self.create_time) < 1.0 and p.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    def returncode(self) -> int | None:
        if self.popen is not None:
            return self.popen.poll()
        return None if self.alive() else -999  # unknown code of a re-attached job

    def kill_group(self, grace: float = 10.0) -> None:
        """SIGTERM then SIGKILL to the child's own process group (the one this monitor created)."""
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.pid, sig)
            except ProcessLookupError:
                return
            end = time.time() + wait
            while time.time() < end:
                if self.popen is not None and self.popen.poll() is not None:
                    return
                if self.popen is None and not self.alive():
                    return
                time.sleep(0.1)


@dataclass
class Outcome:
    kind: str              # completed | crash | killed | oom | nonfinite | stall | usage
    code: int | None
    detail: str = ""


@dataclass
class Supervisor:
    command: list[str]
    output_dir: Path
    policy: Policy = field(default_factory=Policy)
    evaluate: bool = True
    eval_dir: Path | None = None
    eval_extra: list[str] = field(default_factory=list)
    out = sys.stdout

    def __post_init__(self):
        self.output_dir = Path(self.output_dir)
        self.log = EventLog(self.output_dir / "monitor.jsonl")
        self.restarts: list[float] = []
        self.history: list[dict] = []
        self.child: Child | None = None

    # ----------------------------------------------------------------- bookkeeping
    def decide(self, decision: str, reason: str, **fields) -> None:
        self.log.log("decision", decision=decision, reason=reason, **fields)
        self.history.append({"decision": decision, "reason": reason, **fields})
        self.say(f"[monitor] {decision}: {reason}")

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def _lock(self):
        self.output_dir.mkdir(parents=True, exist_ok=True)
        fh = open(self.output_dir / "monitor.lock", "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            raise UsageError(f"another monitor is already watching {self.output_dir} ({fh.read().strip() or 'pid unknown'}); "
                             "stop it first or watch another --output_dir") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}")
        fh.flush()
        return fh

    def _launch(self, command: list[str]) -> Child:
        import psutil

        log = open(self.output_dir / "train.log", "ab")
        try:
            popen = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)  # own session = own process group
        except OSError as exc:  # missing program, not executable, ...
            raise UsageError(f"cannot start the command `{shlex.join(command)}` ({exc.strerror or exc}); check the program "
                             "name and that it is executable") from None
        finally:
            log.close()
        child = Child(popen.pid, psutil.Process(popen.pid).create_time(), popen)
        write_json(self.output_dir / "monitor_child.json", {"pid": child.pid, "create_time": child.create_time,
                                                             "command": command, "monitor_pid": os.getpid()})
        self.log.log("launch", pid=child.pid, command=shlex.join(command))
        self.say(f"[monitor] started pid {child.pid}; its own log: {self.output_dir / 'train.log'}")
        return child

    def _reattach(self) -> Child | None:
        """The job an earlier monitor started, if it still runs. Only its pid and start time are read back from
        ``monitor_child.json`` (to find the process); the command recorded there is never executed."""
        f = self.output_dir / "monitor_child.json"
        if not f.is_file():
            return None
        try:
            info = json.loads(f.read_text())
            child = Child(int(info["pid"]), float(info["create_time"]))
        except (ValueError, KeyError, TypeError):
            return None
        if child.alive():
            self.decide("reattach", f"job pid {child.pid} from an earlier monitor is still running", pid=child.pid)
            return child
        return None

    # ----------------------------------------------------------------- watching
    def _progress(self, offset: int) -> tuple[int, list[dict]]:
        path = self.output_dir / "events.jsonl"
        if not path.is_file():
            return offset, []
        with open(path, "rb") as f:
            f.seek(offset)
            chunk = f.read()
        end = chunk.rfind(b"\n") + 1
        events = []
        for line in chunk[:end].splitlines():
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                pass
        return offset + end, events

    def _watch(self, child: Child) -> Outcome:
        from .monitor_status import StatusLine

        offset = (self.output_dir / "events.jsonl").stat().st_size if (self.output_dir / "events.jsonl").is_file() else 0
        status = StatusLine(self.out, restarts=len(self.restarts))
        last_progress = time.time()
        started = False  # the stall clock runs from the run's first event; before it, the start-up allowance
        log_size = _size(self.output_dir / "train.log")
        nonfinite = False
        while True:
            code = child.returncode()
            offset, events = self._progress(offset)
            if len(events) or offset < _size(self.output_dir / "events.jsonl"):
                started = True
            if events:
                last_progress = time.time()
                status.update(events)
                for e in events:
                    if e.get("event") == "guard":
                        self.say(f"[monitor] guard: val MRR@10 of the starting student {e['student_mrr@10']:.4f}, of the "
                                 f"teacher reranking its top-{e['guard_k']} {e['teacher_rerank_mrr@10']:.4f}")
                    elif e.get("event") == "checkpoint_skipped":
                        self.say(f"[monitor] the run skipped damaged checkpoint {e['checkpoint']}: {e['reason']}")
                nonfinite |= any(e.get("event") == "nonfinite_loss" for e in events)
            size = _size(self.output_dir / "train.log")
            if size != log_size:
                log_size, last_progress = size, time.time()
            if code is not None:
                status.finish()
                return self._classify(code, nonfinite)
            limit = self.policy.stall_timeout if started else max(self.policy.stall_timeout, self.policy.startup_timeout)
            if time.time() - last_progress > limit:
                status.finish()
                child.kill_group()
                return Outcome("stall", None, f"no progress for {limit:.0f}s" + ("" if started else " since the start"))
            status.show(child.pid, self.policy.status_every)
            time.sleep(self.policy.poll)

    def _classify(self, code: int, nonfinite: bool) -> Outcome:
        tail = _tail(self.output_dir / "train.log", 40)
        if (self.output_dir / "done.json").is_file() and code in (0, -999):
            return Outcome("completed", code)
        if code == EXIT_USAGE:
            return Outcome("usage", code, _last_error(tail))
        if code == EXIT_NONFINITE or nonfinite:
            return Outcome("nonfinite", code, _last_error(tail))
        if "out of memory" in tail.lower() or "OutOfMemoryError" in tail:
            return Outcome("oom", code, _last_error(tail))
        if code is not None and code < 0 and code != -999:
            return Outcome("killed", code, f"killed by signal {signal.Signals(-code).name}")
        if code == -999:
            return Outcome("crash", None, "re-attached job ended without done.json")
        return Outcome("crash", code, _last_error(tail) or f"exit code {code} without done.json")

    # ----------------------------------------------------------------- recovery
    def _next_command(self, command: list[str], outcome: Outcome) -> list[str]:
        return recovery_command(command, outcome.kind, self._last_micro)

    def _last_micro(self) -> int | None:
        for e in reversed(read_events(self.output_dir / "events.jsonl")):
            if e.get("event") == "oom" and e.get("micro_batch_size"):
                return int(e["micro_batch_size"])
        return None

    def _on_signal(self, signum, frame) -> None:
        """SIGTERM / SIGINT (Ctrl-C) to the monitor stop the supervised run too: a run without its supervisor
        is never left behind. The run's last checkpoint stays; ``--resume`` (or the monitor again) continues it."""
        name = signal.Signals(signum).name
        if self.child is not None and self.child.alive():
            self.decide("stopped", f"monitor received {name}: stopping the run (pid {self.child.pid}); resume it by "
                                   "running the same monitor command again", signal=name)
            self.child.kill_group()
        else:
            self.decide("stopped", f"monitor received {name}", signal=name)
        raise SystemExit(128 + signum)

    def run(self) -> int:
        """Supervise until completion or give-up; returns the exit code for the monitor itself."""
        lock = self._lock()
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            child = self._reattach()
            command = self.command
            if child is None:
                if not command:
                    raise UsageError(f"nothing is running for {self.output_dir} and no command was given; "
                                     "pass the training command after --")
                if (self.output_dir / "done.json").is_file() and "--overwrite" not in command:
                    self.decide("already-complete", "done.json exists")
                    return self._evaluate() if self.evaluate else 0
                child = self._launch(command)
            while True:
                self.child = child
                outcome = self._watch(child)
                if outcome.kind == "completed":
                    self.decide("completed", "done.json written and the run exited cleanly", code=outcome.code)
                    return self._evaluate() if self.evaluate else 0
                if outcome.kind == "usage":
                    self.decide("give-up", f"the command was rejected (exit 2): {outcome.detail}", fault="usage")
                    return 1
                now = time.time()
                self.restarts = [t for t in self.restarts if now - t < self.policy.restart_window] + [now]
                if len(self.restarts) > self.policy.max_restarts:
                    self.decide("give-up", f"{len(self.restarts) - 1} restarts within {self.policy.restart_window:.0f}s "
                                f"(cap {self.policy.max_restarts}); last fault: {outcome.kind} {outcome.detail}".strip(),
                                fault=outcome.kind, summary=self._summary())
                    return 1
                if not command:  # re-attached without a command: never run one read back from a file
                    self.decide("give-up", f"the re-attached run ended ({outcome.kind}: {outcome.detail}) and this monitor "
                                "was given no command to restart it; run the monitor again with the training command after --",
                                fault=outcome.kind)
                    return 1
                command = self._next_command(command, outcome)
                delay = min(self.policy.backoff * 2 ** (len(self.restarts) - 1), self.policy.backoff_max)
                self.decide("restart", f"{outcome.kind}: {outcome.detail}".strip(": "), fault=outcome.kind,
                            exit_code=outcome.code, attempt=len(self.restarts), backoff_s=delay,
                            command=shlex.join(command))
                time.sleep(delay)
                child = self._launch(command)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            lock.close()

    def _summary(self) -> str:
        kinds: dict[str, int] = {}
        for h in self.history:
            if h["decision"] == "restart":
                kinds[h["fault"]] = kinds.get(h["fault"], 0) + 1
        return ", ".join(f"{k} x{v}" for k, v in kinds.items()) or "no restarts"

    # ----------------------------------------------------------------- evaluation
    def _evaluate(self) -> int:
        args = evaluation_command(self.output_dir, self.eval_dir, self.eval_extra)
        if args is None:
            self.decide("no-evaluation", "the run is not a student (teacher runs are evaluated through their student)")
            return 0
        self.decide("evaluate", "training completed", command=shlex.join(args))
        proc = subprocess.run(args, capture_output=True, text=True)
        (self.output_dir / "evaluation.log").write_text(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            self.decide("evaluation-failed", _last_error(proc.stderr) or f"exit {proc.returncode}")
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


# --------------------------------------------------------------------------- helpers
def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _tail(path: Path, lines: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, 2) - 20000))
            return b"\n".join(f.read().splitlines()[-lines:]).decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


def _last_error(text: str) -> str:
    for line in reversed(text.strip().splitlines()):
        s = line.strip()
        if s and ("Error" in s or "error" in s.lower() or "Exception" in s):
            return s[:300]
    return text.strip().splitlines()[-1][:300] if text.strip() else ""
