"""The training engine both stages share: resume, the epoch loop, checkpoints, events, best-model choice, publishing.

A stage (teacher: :mod:`crossdistill.teach.train`, student: :mod:`crossdistill.distill.train`) builds its model,
optimizer and data, then hands the engine a :class:`Stage` with named methods — what differs between them: one step's forward and
backward on a list of item indices, the validation, the metric that picks the best model — and the engine owns the rest:

- data order: a seeded permutation per epoch (:func:`~crossdistill.core.training.epoch_order`), each process its shard.
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
  that ``--resume`` continues bit-identically (:func:`~crossdistill.core.run_state.resume_state`), and refuses a
  changed setting that would mix two runs; the run state (:class:`~crossdistill.core.run_state.RunState`) is written
  here only;
- publishing (:func:`publish_run`): everything written into a staging folder, moved into place, ``done.json`` last.

Not accelerate's ``save_state``: a checkpoint here is atomic, holds the best model and the run's settings, and is
verified when read; nor its ``accumulate``, which enlarges a batch where ``--micro_batches`` splits one exactly.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from crossdistill.core import hooks, legacy
from crossdistill.core.checkpoint import _latest_named, load_best, save_checkpoint, trainable_state
from crossdistill.core.errors import NonFiniteLoss, UsageError
from crossdistill.core.events import EventLog
from crossdistill.core.run_state import RunState, log_skipped, resume_state
from crossdistill.core.runs import publish, staging_dir
from crossdistill.core.training import epoch_order, on_main, shard, track


def total_steps(n_items: int, global_batch: int, epochs: int) -> int:
    """Optimizer steps of a run: ``ceil(items / global batch)`` per epoch (the one definition; the schedule uses it)."""
    return -(-n_items // global_batch) * epochs


class Stage:
    """What one training stage supplies to :func:`train_epochs`, as named methods (the teacher's
    :class:`~crossdistill.teach.train.TeacherStage`, the student's :class:`~crossdistill.distill.train.StudentStage`)."""

    select: tuple[str, ...] = ()  # val metrics that pick the best model, in order ("-x": lower is better)
    keep_best: bool = True  # keep the best model's weights (published instead of the last epoch's)
    validates_start: bool = False  # validate the starting model before a fresh run's first step (epoch 0)

    def step(self, items: list[int], step: int) -> dict:
        """Forward and backward of this process's ``items``: ``{"loss": tensor, ...}`` (gradients accumulated)."""
        raise NotImplementedError

    def validate(self) -> dict:
        """The val metrics of the model as it is (main process)."""
        raise NotImplementedError

    def validate_start(self) -> dict:
        """Main process, before a fresh run's first step: ``{"metrics": ..., ...}`` of the starting model."""
        raise NotImplementedError

    def accept_start(self, start: dict) -> None:
        """Every process, after :meth:`validate_start`: may refuse the run (a ``UsageError``)."""

    def describe(self, row: dict) -> str:
        """The log line of a val row."""
        return " ".join(f"{k} {v:.4f}" for k, v in row.items() if isinstance(v, float))

    def row_extra(self, seconds: float) -> dict:
        """Extra fields of an epoch's val row (``seconds``: the epoch's training time)."""
        return {}

    def carry(self) -> dict:
        """The stage's own fields a checkpoint keeps (the engine writes them into the run state)."""
        return {}

    def restore(self, fields: dict) -> dict:
        """On resume: take the checkpoint's own fields back (or refuse them); returns fields of the resume event."""
        return {}

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

    @classmethod
    def for_run(cls, cfg, accelerator, model, optimizer, scheduler, out_dir: Path, events: EventLog, log, n_items: int,
                settings: dict) -> "Loop":
        """The loop of a training config (``--epochs``, ``--seed``, ``--max_grad_norm``, ``--log_steps``,
        ``--save_steps``; ``--batch_size`` items per process and step), checkpoints under ``out_dir/checkpoints``."""
        return cls(accelerator, model, accelerator.unwrap_model(model), optimizer, scheduler, out_dir / "checkpoints", events,
                   log, n_items=n_items, global_batch=cfg.batch_size * accelerator.num_processes, epochs=cfg.epochs,
                   seed=cfg.seed, max_grad_norm=cfg.max_grad_norm, log_steps=cfg.log_steps, save_steps=cfg.save_steps,
                   settings=settings)

    @property
    def steps_per_epoch(self) -> int:
        return -(-self.n_items // self.global_batch)

    @property
    def total_steps(self) -> int:
        return total_steps(self.n_items, self.global_batch, self.epochs)

    def checkpoint(self, state: RunState, stage: Stage) -> None:
        state.stage = stage.carry()
        if self.accelerator.is_main_process:
            save_checkpoint(self.ckpt_root, self.unwrapped, self.optimizer, self.scheduler, state.to_dict(),
                            best=self.pending_best, previous=self.last_checkpoint)
        self.last_checkpoint = self.ckpt_root / f"step-{state.step:08d}"  # every process knows where it is
        self.pending_best = None


def start_or_resume(loop: Loop, stage: Stage, lr: float, resume_from: Path | None, skipped: list[dict], name: str,
                    **start: object) -> RunState:
    """The run state: resumed from ``resume_from`` (:func:`~crossdistill.core.run_state.resume_state`), or a fresh one
    with its ``start`` event (``name``: the stage, ``start``: its own fields)."""
    if resume_from is not None:
        return resume_state(loop, resume_from, skipped, lr, stage)
    if skipped:  # --resume found checkpoints, none intact
        log_skipped(loop, skipped)
        loop.log(f"--resume: none of the {len(skipped)} checkpoint(s) is intact; starting over from step 0")
    loop.events.log("start", stage=name, total_steps=loop.total_steps, epochs=loop.epochs, **start)
    return RunState(lr=lr, settings=loop.settings, stage=stage.carry())


def _evaluate_start(loop: Loop, state: RunState, stage: Stage) -> None:
    """Validate the starting model (a fresh run's epoch 0): a candidate for the best model, and the stage's chance to
    refuse the run (the student's teacher guard)."""
    start = on_main(loop.accelerator, stage.validate_start)
    stage.accept_start(start)
    row = {"epoch": 0, "step": 0, **start["metrics"]}
    state.history.append(row)
    state.best = {"epoch": 0, "key": stage.key(row)}
    if stage.keep_best:
        loop.pending_best = {"trainable": trainable_state(loop.unwrapped), "info": state.best}
    loop.events.log("eval", **row)
    loop.log("epoch 0 (starting model): " + stage.describe(row))


def _optimizer_step(loop: Loop, out: dict, step: int, epoch: int) -> None:
    """Non-finite check → clip → AdamW → schedule → zero the gradients."""
    if not torch.isfinite(out["loss"]):
        loop.events.log("nonfinite_loss", step=step, epoch=epoch, loss=str(out["loss"].item()))
        raise NonFiniteLoss(f"loss became {out['loss'].item()} at step {step}")
    loop.accelerator.clip_grad_norm_(loop.model.parameters(), loop.max_grad_norm)
    loop.optimizer.step()
    loop.scheduler.step()
    loop.optimizer.zero_grad(set_to_none=True)


def _log_step(loop: Loop, values: dict, step: int, epoch: int, rate: float, elapsed: float) -> None:
    if step % loop.log_steps == 0 or step == loop.total_steps:
        lr = loop.scheduler.get_last_lr()[0]
        track(loop.accelerator, {**{f"train/{k}": v for k, v in values.items()}, "train/lr": lr}, step)
        loop.events.log("step", step=step, epoch=epoch, **{k: round(v, 6) for k, v in values.items()}, lr=lr,
                        samples_per_s=round(rate, 3), elapsed_s=round(elapsed, 2), total_steps=loop.total_steps)


def train_epochs(loop: Loop, state: RunState, stage: Stage) -> None:
    """Run the remaining epochs of ``state`` (from its epoch and batch on), updating ``state`` in place."""
    from tqdm.auto import tqdm

    acc = loop.accelerator
    if stage.validates_start and state.step == 0 and not state.history:
        _evaluate_start(loop, state, stage)
    t_start, samples = time.time(), 0
    while state.epoch <= loop.epochs:
        epoch = state.epoch
        loop.model.train()
        order = epoch_order(loop.n_items, loop.seed, epoch)
        starts = range(state.batch_in_epoch * loop.global_batch, len(order), loop.global_batch)
        bar = tqdm(starts, desc=f"epoch {epoch}/{loop.epochs}", disable=not acc.is_main_process,
                   initial=state.batch_in_epoch, total=loop.steps_per_epoch)
        t_epoch = time.time()
        for start in bar:
            step = state.step + 1
            hooks.at("step", step)
            out = stage.step(shard(order[start:start + loop.global_batch], acc.process_index, acc.num_processes), step)
            _optimizer_step(loop, out, step, epoch)
            state.step, state.batch_in_epoch = step, state.batch_in_epoch + 1
            samples += min(loop.global_batch, len(order) - start)
            rate = samples / (time.time() - t_start)
            values = dict(zip(out, torch.stack([v.detach().float() for v in out.values()]).tolist()))  # one host sync
            bar.set_postfix(**{k: f"{v:.4f}" for k, v in values.items() if k in ("loss", "soft")}, samples_s=f"{rate:.2f}")
            _log_step(loop, values, step, epoch, rate, time.time() - t_start)
            if loop.save_steps and step % loop.save_steps == 0 and state.batch_in_epoch < loop.steps_per_epoch:
                loop.checkpoint(state, stage)
                loop.events.log("checkpoint", step=step)
        _end_epoch(loop, state, stage, epoch, round(time.time() - t_epoch, 1))


def _end_epoch(loop: Loop, state: RunState, stage: Stage, epoch: int, seconds: float) -> None:
    """Validate, record the row, keep a new best model, checkpoint the epoch's end."""
    metrics = on_main(loop.accelerator, stage.validate)
    row = {**metrics, "epoch": epoch, "step": state.step, **stage.row_extra(seconds)}
    state.history.append(row)
    loop.events.log("eval", **row)
    track(loop.accelerator, {f"val/{k[4:]}": v for k, v in row.items() if k.startswith("val_")}, state.step)
    loop.log(f"epoch {epoch}: " + stage.describe(row))
    if state.best is None or stage.key(row) > _best_key(state, stage):
        state.best = {"epoch": epoch, "key": stage.key(row)}
        if stage.keep_best:
            loop.pending_best = {"trainable": trainable_state(loop.unwrapped), "info": state.best}
    state.epoch, state.batch_in_epoch = epoch + 1, 0
    loop.checkpoint(state, stage)
    loop.events.log("checkpoint", step=state.step, epoch_end=epoch)
    loop.accelerator.wait_for_everyone()


def _best_key(state: RunState, stage: Stage) -> list[float]:
    return legacy.best_key(state.best, state.history, stage.key)


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
