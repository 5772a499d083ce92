"""The monitor's live status: progress from the event log, the run's CPU/memory (psutil) and GPU (nvml)."""

from __future__ import annotations

import time


def _gpu() -> str:
    try:
        import pynvml

        pynvml.nvmlInit()
        parts = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            mem = pynvml.nvmlDeviceGetMemoryInfo(h)
            util = pynvml.nvmlDeviceGetUtilizationRates(h)
            parts.append(f"gpu{i} {util.gpu}% {mem.used / 2**30:.1f}/{mem.total / 2**30:.0f}GiB")
        return " ".join(parts)
    except Exception:  # noqa: BLE001 - no GPU, no driver or no nvml: nothing to show
        return ""


_PROCS: dict[tuple, object] = {}


def process_tree_usage(pid: int) -> tuple[float, float]:
    """(CPU %, RSS MiB) of ``pid`` and its descendants (CPU % since the previous call, as psutil measures it)."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root] + root.children(recursive=True)
    except psutil.NoSuchProcess:
        return 0.0, 0.0
    cpu = rss = 0.0
    for p in procs:
        key = (p.pid, p.create_time()) if p.is_running() else None
        proc = _PROCS.setdefault(key, p)
        try:
            cpu += proc.cpu_percent(interval=None)
            rss += proc.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return cpu, rss / 2**20


class StatusLine:
    """One status line: rewritten in place on a terminal, printed every ``every`` seconds otherwise (no control codes)."""

    def __init__(self, out, restarts: int = 0):
        self.out = out
        self.tty = hasattr(out, "isatty") and out.isatty()
        self.restarts = restarts
        self.last: dict = {}
        self.started = time.time()
        self.printed = 0.0
        self.first_step: tuple[float, int] | None = None
        self.phase: dict = {}

    def update(self, events: list[dict]) -> None:
        for e in events:
            if e.get("event") == "step":
                self.last = e
                if self.first_step is None:
                    self.first_step = (e["time"], e["step"])
                self.phase = {}
            elif e.get("event") == "start":
                self.last = {**self.last, "total_steps": e.get("total_steps")}
            elif e.get("event") == "phase":
                first = self.phase.get("time", e["time"]) if self.phase.get("phase") == e.get("phase") else e["time"]
                self.phase = {**e, "since": self.phase.get("since", first) if self.phase.get("phase") == e.get("phase") else e["time"]}

    def text(self, pid: int) -> str:
        e = self.last
        step, total = e.get("step"), e.get("total_steps")
        eta = ""
        if step and total and self.first_step and e["time"] > self.first_step[0] and step > self.first_step[1]:
            rate = (step - self.first_step[1]) / (e["time"] - self.first_step[0])
            eta = f" eta {_dur((total - step) / rate)}"
        cpu, rss = process_tree_usage(pid)
        prog = f"step {step}/{total} epoch {e.get('epoch')} loss {e.get('loss'):.4f} {e.get('samples_per_s', 0):.2f} samples/s" \
            if step else "starting"
        if self.phase:
            prog = _phase_text(self.phase) + (f" (after {prog})" if step else "")
        gpu = _gpu()
        return (f"[{time.strftime('%H:%M:%S')}] {prog}{eta} | restarts {self.restarts} | pid {pid} cpu {cpu:.0f}% "
                f"rss {rss:.0f}MiB" + (f" | {gpu}" if gpu else ""))

    def show(self, pid: int, every: float) -> None:
        now = time.time()
        if self.tty:
            self.out.write("\r\033[K" + self.text(pid))
            self.out.flush()
        elif now - self.printed >= every:
            print(self.text(pid), file=self.out, flush=True)
            self.printed = now

    def finish(self) -> None:
        if self.tty:
            self.out.write("\n")
            self.out.flush()


def _phase_text(p: dict) -> str:
    """'teacher_scoring 4,096/11,600 35% eta 2m10s' from a run's latest ``phase`` event."""
    text = p.get("phase", "working").replace("_", " ")
    done, total = p.get("done"), p.get("total")
    if done is not None and total:
        text += f" {done:,}/{total:,} {100 * done / total:.0f}%"
        elapsed = p["time"] - p.get("since", p["time"])
        if 0 < done < total and elapsed > 0:
            text += f" eta {_dur(elapsed / done * (total - done))}"
    elif p.get("detail"):
        text += f": {p['detail']}"
    return text


def _dur(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"
