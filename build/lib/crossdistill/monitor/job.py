"""The monitor's process control: launch a command in its own process group, re-attach to one an earlier monitor
started, verify it is that process before every signal, stop its group; one monitor per folder (a lock).

A job is identified by what cannot change while it runs (``monitor_child.json``): its pid with the process's start
time, and that it leads its own process group (the monitor started it with a new session); a job found again by a
later monitor must also carry the tag in its environment (``CROSSDISTILL_MONITOR_DIR`` = the watched folder). Its
command line is recorded but never checked: a command that execs (``env FOO=1 python ...``, ``nice``, ``bash -c``, a
wrapper ending in ``exec``) changes it, and the monitor must still stop what it started. A pid planted in that file
names some other process: it fails these checks and is never signalled. Nothing read back from the file is executed.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from crossdistill.core.cli import MONITOR_DIR
from crossdistill.core.errors import UsageError
from crossdistill.core.files import write_json
from crossdistill.core.runs import take_lock

CHILD_FILE = "monitor_child.json"
TAG = MONITOR_DIR  # set in every job's environment: the folder its monitor watches


def monitor_lock(output_dir: Path):
    """Hold ``monitor.lock`` in ``output_dir`` (one monitor per folder); returns the open file (close to release)."""
    return take_lock(Path(output_dir) / "monitor.lock", lambda holder: f"another monitor is already watching {output_dir} "
                                                                       f"({holder}); stop it first or watch another --output_dir")


@dataclass
class Job:
    pid: int
    create_time: float
    command: list[str]
    tag: str                                 # the folder in the job's environment
    popen: subprocess.Popen | None = None    # None when re-attached to a job an earlier monitor started

    @classmethod
    def launch(cls, command: list[str], output_dir: Path, log_name: str = "train.log", record: bool = True,
               env: dict[str, str] | None = None) -> "Job":
        """Start ``command`` in its own session (its own process group), stdout and stderr appended to ``log_name``;
        ``env``: variables added to the monitor's environment (the recovery flags of a wrapped command)."""
        import psutil

        tag = str(Path(output_dir).resolve())
        log = open(Path(output_dir) / log_name, "ab")
        try:
            popen = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True, env={**os.environ, **(env or {}), TAG: tag})
        except OSError as exc:  # missing program, not executable, ...
            raise UsageError(f"cannot start the command `{shlex.join(command)}` ({exc.strerror or exc}); check the program "
                             "name and that it is executable") from None
        finally:
            log.close()
        job = cls(popen.pid, psutil.Process(popen.pid).create_time(), list(command), tag, popen)
        if record:
            write_json(Path(output_dir) / CHILD_FILE, {"pid": job.pid, "create_time": job.create_time, "command": job.command,
                                                       "tag": tag, "monitor_pid": os.getpid()})
        return job

    @classmethod
    def reattach(cls, output_dir: Path) -> tuple["Job | None", str]:
        """The job an earlier monitor started for ``output_dir``, if it still runs and proves to be that job:
        ``(job or None, why not)``. Only identifiers are read back from the file, never a command to run."""
        try:
            info = json.loads((Path(output_dir) / CHILD_FILE).read_text())
            job = cls(int(info["pid"]), float(info["create_time"]), [str(c) for c in info["command"]], str(info["tag"]))
        except FileNotFoundError:
            return None, "no job recorded"
        except (OSError, ValueError, KeyError, TypeError):
            return None, f"{CHILD_FILE} is unreadable"
        if job.tag != str(Path(output_dir).resolve()):
            return None, f"{CHILD_FILE} names a job of another folder"
        problem = job.verify()
        return (job, "") if problem is None else (None, problem)

    def verify(self) -> str | None:
        """None if pid still names the process this job started, else why not (ended, pid reused, not ours)."""
        import psutil

        try:
            p = psutil.Process(self.pid)
            if p.status() == psutil.STATUS_ZOMBIE:
                return "it ended"
            if abs(p.create_time() - self.create_time) >= 1.0:
                return f"pid {self.pid} now belongs to another process (started at another time)"
            if os.getpgid(self.pid) != self.pid:
                return f"pid {self.pid} does not lead its own process group"
            if self.popen is None and p.environ().get(TAG) != self.tag:
                return f"pid {self.pid} was not started by a monitor of this folder"
        except (psutil.NoSuchProcess, ProcessLookupError):
            return "it ended"
        except psutil.AccessDenied:
            return f"pid {self.pid} belongs to another user"
        return None

    def returncode(self) -> int | None:
        """The exit code once the job ended (None while it runs); a re-attached job's code is unknown: -999."""
        if self.popen is not None:
            return self.popen.poll()
        return None if self.verify() is None else -999

    def alive(self) -> bool:
        return self.returncode() is None

    def kill_group(self, grace: float = 10.0) -> None:
        """SIGTERM then SIGKILL to the job's own process group — only after checking the pid is still the job."""
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            if self.popen is not None and self.popen.poll() is not None:
                return
            if self.verify() is not None:
                return
            try:
                os.killpg(self.pid, sig)
            except ProcessLookupError:
                return
            end = time.time() + wait
            while time.time() < end:
                if not self.alive():
                    return
                time.sleep(0.1)

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for a launched job to end (``timeout`` seconds at most); its exit code, or None if it still runs."""
        try:
            return self.popen.wait(timeout) if self.popen is not None else None
        except subprocess.TimeoutExpired:
            return None
