"""The training engine both stages share: resume, the epoch loop, checkpoints, events, best-model choice, publishing.

A stage (teacher: :mod:`crossdistill.teacher_training`, student: :mod:`crossdistill.distillation`) builds its model,
optimizer and data, then hands the engine a :class:`Stage` — what differs between them: one step's forward and
backward on a list of item indices, the validation, the metric that picks the best model — and the engine owns the rest:

- data order: a seeded permutation per epoch (:func:`~crossdistill.training.epoch_order`), each process its shard.
  Kept by hand, not a ``DataLoader``: the order is a pure function of (seed, epoch) and the resume point a batch
  index, so ``--resume`` is bit-identical with no sampler state to save; the items are indices into lists already in
  memory (no I/O or collation for workers to overlap); and the interleaved shard makes 2 processes x batch 2 step on
  exactly the batch of 1 process x batch 4 (the DDP equivalence tests);
- validation of the starting model before the first step (when the stage asks for it: the student, whose starting
  model is a candidate for the best), and at every epoch end, on the main process;
- the best model, chosen by the stage's named metrics, kept *inside* the atomic checkpoint (``best.pt`` under its
  manifest), so the weights published always match the epoch reported;
- one step: ``stage.step`` (forward + backward) → non-finite check → clip → AdamW → schedule;
- a ``step`` event every ``--log_steps`` (read by the monitor) and TensorBoard scalars when enabled;
- a checkpoint every ``--save_steps`` and at every epoch end, with RNG and optimizer state and the run's settings, so
  that ``--resume`` continues bit-identically (:func:`resume_state`), and refuses a changed setting that would mix
  two runs;
- publishing (:func:`publish_run`): everything written into a staging folder, moved into place, ``done.json`` last.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from crossdistill.core import hooks
from crossdistill.core.checkpoint import (
    _latest_named,
    load_best,
    load_checkpoint,
    rescale_lr,
    save_checkpoint,
    trainable_state,
)
from crossdistill.core.errors import NonFiniteLoss, UsageError
from crossdistill.core.events import EventLog
from crossdistill.core.runs import publish, staging_dir
from crossdistill.core.training import epoch_order, on_main, shard, track

# settings a resumed run may change: they do not change what the run computes (or, for --lr, the monitor's rollback
# after a NaN rescales the schedule); every other setting is fixed by the checkpoint
RESUMABLE_CHANGES = frozenset({
    "resume", "overwrite", "output_dir", "data_root", "log_steps", "save_steps", "eval_batch_size", "report_to", "lr",
    "micro_batch_size", "micro_batches", "gradient_checkpointing", "device", "allow_weaker_teacher",
    "score_cache", "teacher_path", "guard_k",
    "keep"})  # --keep: the student refuses a change itself, with its own message


def total_steps(n_items: int, global_batch: int, epochs: int) -> int:
    """Optimizer steps of a run: ``ceil(items / global batch)`` per epoch (the one definition; the schedule uses it)."""
    return -(-n_items // global_batch) * epochs


@dataclass
class Stage:
    """What one training stage supplies to :func:`train_epochs`."""

    step: Callable[[list[int], int, dict], dict]   # (item indices of this process, step, state) -> {"loss": tensor, ...}
    evaluate: Callable[[], dict]                   # val metrics, run on the main process
    select: tuple[str, ...]                        # val metrics that pick the best model, in order ("-x": lower is better)
    describe: Callable[[dict], str]                # the log line of a val row
    keep_best: bool = True                         # keep the best model's weights (published instead of the last epoch's)
    evaluate_start: Callable[[], dict] | None = None   # main process, before a fresh run's first step: the epoch-0 row
    accept_start: Callable[[dict], None] | None = None  # every process: may refuse the run after evaluate_start
    row_extra: Callable[[float], dict] = field(default=lambda seconds: {})  # extra fields of an epoch's val row

    def key(self, row: dict) -> list[float]:
        return [-row[m[1:]] if m.startswith("-") else row[m] for m in self.select]


@dataclass
class Loop:
    """The prepared objects and settings the engine drives."""

    accelerator: object
    model: torch.nn.Module         # as prepared by accelerate (maybe DDP-wrapped): forward, clip, train()
    unwrapped: torch.nn.Module     # what checkpoints hold
    optimizer: torch.optim.Optimizer
    scheduler: object
    ckpt_root: Path
    events: EventLog
    log: Callable
    n_items: int                   # items per epoch (examples or candidate lists)
    global_batch: int              # items per step over all processes
    epochs: int
    seed: int
    max_grad_norm: float
    log_steps: int
    save_steps: int
    settings: dict = field(default_factory=dict)  # the run's settings, recorded in every checkpoint
    pending_best: dict | None = None  # a new best model's weights, written into the next checkpoint
    last_checkpoint: Path | None = None  # the checkpoint this run resumed from or wrote last (its best model carries on)

    @property
    def steps_per_epoch(self) -> int:
        return -(-self.n_items // self.global_batch)

    @property
    def total_steps(self) -> int:
        return total_steps(self.n_items, self.global_batch, self.epochs)

    def checkpoint(self, state: dict) -> None:
        if self.accelerator.is_main_process:
            save_checkpoint(self.ckpt_root, self.unwrapped, self.optimizer, self.scheduler, state, best=self.pending_best,
                            previous=self.last_checkpoint)
        self.last_checkpoint = self.ckpt_root / f"step-{state['step']:08d}"  # every process knows where it is
        self.pending_best = None


def fresh_state(lr: float, **extra) -> dict:
    """The run state a checkpoint holds (plus the stage's own ``extra`` keys)."""
    return {"step": 0, "epoch": 1, "batch_in_epoch": 0, "history": [], "best": None, "lr": lr, **extra}


def resume_state(loop: Loop, resume_from: Path, skipped: list[dict], lr: float, adjust=None) -> dict:
    """Load the run state, model, optimizer and schedule from ``resume_from``; the learning rate follows ``lr``
    (a supervisor halves it after a NaN); ``adjust(state) -> dict`` lets the stage check or change the state and
    returns extra fields of the ``resume`` event. A checkpoint whose position lies outside this run is refused (its
    settings were compared before any work: :func:`check_resume_settings`)."""
    acc = loop.accelerator
    for s in skipped:
        loop.events.log("checkpoint_skipped", **s)
        loop.log(f"checkpoint {s['checkpoint']} skipped: {s['reason']}")
    state = load_checkpoint(resume_from, loop.unwrapped, loop.optimizer, loop.scheduler)
    _check_position(state, loop, resume_from)
    loop.last_checkpoint = resume_from
    extra = adjust(state) if adjust else {}
    if state.get("lr", lr) != lr:
        rescale_lr(loop.optimizer, loop.scheduler, state["lr"], lr)
    state["lr"] = lr
    state["settings"] = loop.settings
    if acc.num_processes > 1:  # the checkpoint holds the main process's RNG; give the others their own stream again
        torch.manual_seed(loop.seed + acc.process_index + 7919 * state["step"])
    loop.events.log("resume", step=state["step"], epoch=state["epoch"], checkpoint=resume_from.name, **extra)
    loop.log(f"resumed from {resume_from} at step {state['step']}")
    return state


def _check_position(state: dict, loop: Loop, folder: Path) -> None:
    step, epoch, batch = (state.get(k) for k in ("step", "epoch", "batch_in_epoch"))
    ok = all(isinstance(v, int) and not isinstance(v, bool) for v in (step, epoch, batch)) and \
        1 <= epoch <= loop.epochs + 1 and 0 <= batch <= loop.steps_per_epoch and \
        step == (epoch - 1) * loop.steps_per_epoch + batch and step <= loop.total_steps
    if not ok:
        raise UsageError(f"checkpoint {folder} records a position outside this run (step {step!r}, epoch {epoch!r}, batch "
                         f"{batch!r}; the run has {loop.epochs} epochs of {loop.steps_per_epoch} steps): its state.json was "
                         "changed or belongs to other settings; delete that checkpoint folder, or start over with --overwrite")


def check_resume_settings(folder: Path | None, now: dict) -> None:
    """Before any work: refuse to resume the checkpoint ``folder`` with settings other than those it was written with
    (all but :data:`RESUMABLE_CHANGES`; ``now`` holds the run's settings and the fingerprints of its data and teacher)."""
    if folder is None:
        return
    try:
        recorded = json.loads((folder / "state.json").read_text()).get("settings")
    except (OSError, ValueError, AttributeError):
        return  # a damaged state.json is refused when the checkpoint is loaded
    if not isinstance(recorded, dict):
        return  # a checkpoint of an earlier version records none
    changed = [k for k in sorted(set(recorded) & set(now)) if k not in RESUMABLE_CHANGES and recorded[k] != now[k]]
    if changed:
        k = changed[0]
        more = f" (and {', '.join('--' + c for c in changed[1:])})" if len(changed) > 1 else ""
        flag = {"train_data_sha256": "the training data (train.csv)", "val_data_sha256": "the val data (val.csv)",
                "corpus_sha256": "the version's corpus (corpus.jsonl)"}.get(k, f"--{k}")
        raise UsageError(f"checkpoint {folder} was written with {flag} {recorded[k]!r}, this run has {now[k]!r}{more}; resuming would "
                         "mix two runs: resume with the checkpoint's settings, or start over with --overwrite")


def _evaluate_start(loop: Loop, state: dict, stage: Stage) -> None:
    """Validate the starting model (a fresh run's epoch 0): a candidate for the best model, and the stage's chance to
    refuse the run (the student's teacher guard)."""
    start = on_main(loop.accelerator, stage.evaluate_start)
    if stage.accept_start is not None:
        stage.accept_start(start)
    row = {"epoch": 0, "step": 0, **start["metrics"]}
    state["history"].append(row)
    state["best"] = {"epoch": 0, "key": stage.key(row)}
    if stage.keep_best:
        loop.pending_best = {"trainable": trainable_state(loop.unwrapped), "info": state["best"]}
    loop.events.log("eval", **row)
    loop.log("epoch 0 (starting model): " + stage.describe(row))


def train_epochs(loop: Loop, state: dict, stage: Stage) -> None:
    """Run the remaining epochs of ``state`` (from its epoch and batch on), updating ``state`` in place."""
    from tqdm.auto import tqdm

    acc, events = loop.accelerator, loop.events
    rank, world, main = acc.process_index, acc.num_processes, acc.is_main_process
    state.setdefault("settings", loop.settings)
    if stage.evaluate_start is not None and state["step"] == 0 and not state["history"]:
        _evaluate_start(loop, state, stage)
    t_start, samples = time.time(), 0
    while state["epoch"] <= loop.epochs:
        epoch = state["epoch"]
        loop.model.train()
        order = epoch_order(loop.n_items, loop.seed, epoch)
        starts = range(state["batch_in_epoch"] * loop.global_batch, len(order), loop.global_batch)
        bar = tqdm(starts, desc=f"epoch {epoch}/{loop.epochs}", disable=not main, initial=state["batch_in_epoch"],
                   total=loop.steps_per_epoch)
        t_epoch = time.time()
        for start in bar:
            step = state["step"] + 1
            hooks.at("step", step)
            out = stage.step(shard(order[start:start + loop.global_batch], rank, world), step, state)
            if not torch.isfinite(out["loss"]):
                events.log("nonfinite_loss", step=step, epoch=epoch, loss=str(out["loss"].item()))
                raise NonFiniteLoss(f"loss became {out['loss'].item()} at step {step}")
            acc.clip_grad_norm_(loop.model.parameters(), loop.max_grad_norm)
            loop.optimizer.step()
            loop.scheduler.step()
            loop.optimizer.zero_grad(set_to_none=True)
            state["step"], state["batch_in_epoch"] = step, state["batch_in_epoch"] + 1
            samples += min(loop.global_batch, len(order) - start)
            rate = samples / (time.time() - t_start)
            values = dict(zip(out, torch.stack([v.detach().float() for v in out.values()]).tolist()))  # one host sync
            bar.set_postfix(**{k: f"{v:.4f}" for k, v in values.items() if k in ("loss", "soft")}, samples_s=f"{rate:.2f}")
            if step % loop.log_steps == 0 or step == loop.total_steps:
                lr = loop.scheduler.get_last_lr()[0]
                track(acc, {**{f"train/{k}": v for k, v in values.items()}, "train/lr": lr}, step)
                events.log("step", step=step, epoch=epoch, **{k: round(v, 6) for k, v in values.items()}, lr=lr,
                           samples_per_s=round(rate, 3), elapsed_s=round(time.time() - t_start, 2),
                           total_steps=loop.total_steps)
            if loop.save_steps and step % loop.save_steps == 0 and state["batch_in_epoch"] < loop.steps_per_epoch:
                loop.checkpoint(state)
                events.log("checkpoint", step=step)
        metrics = on_main(acc, stage.evaluate)
        row = {**metrics, "epoch": epoch, "step": state["step"], **stage.row_extra(round(time.time() - t_epoch, 1))}
        state["history"].append(row)
        events.log("eval", **row)
        track(acc, {f"val/{k[4:]}": v for k, v in row.items() if k.startswith("val_")}, state["step"])
        loop.log(f"epoch {epoch}: " + stage.describe(row))
        if state["best"] is None or stage.key(row) > _best_key(state, stage):
            state["best"] = {"epoch": epoch, "key": stage.key(row)}
            if stage.keep_best:
                loop.pending_best = {"trainable": trainable_state(loop.unwrapped), "info": state["best"]}
        state["epoch"], state["batch_in_epoch"] = epoch + 1, 0
        loop.checkpoint(state)
        events.log("checkpoint", step=state["step"], epoch_end=epoch)
        acc.wait_for_everyone()


def _best_key(state: dict, stage: Stage) -> list[float]:
    best = state["best"]
    if "key" not in best:  # a checkpoint of an earlier version recorded the row, not its key
        best["key"] = stage.key(next(r for r in state["history"] if r["epoch"] == best["epoch"]))
    return best["key"]


def best_weights(loop: Loop) -> dict:
    """The kept best model of a finished run (``{"trainable", "info"}``), read from its last checkpoint and verified."""
    latest = loop.last_checkpoint or _latest_named(loop.ckpt_root)
    if latest is None:
        raise UsageError(f"{loop.ckpt_root} holds no checkpoint to publish from; run again with --resume, or start over "
                         "with --overwrite")
    return load_best(latest)


def publish_run(loop: Loop, out_dir: Path, write: Callable[[Path], None], done: dict, end_event: dict) -> None:
    """On the main process: ``write(staging)`` the model and its files, log the ``end`` event, move everything into
    ``out_dir`` with ``done.json`` (holding ``done``) last, and drop the checkpoints — the published folder is a
    model to load, not a run to resume. Every process then ends its trackers."""
    if loop.accelerator.is_main_process:
        with staging_dir(out_dir) as staging:
            write(staging)
            loop.events.log("end", **end_event)
        publish(staging, out_dir, done)
        shutil.rmtree(loop.ckpt_root, ignore_errors=True)
    loop.accelerator.end_training()
