"""The training engine both stages share: resume, the epoch loop, checkpoints, events, best-model choice, publishing.

A stage (teacher: :mod:`crossdistill.teacher_training`, student: :mod:`crossdistill.distillation`) builds its model,
optimizer and data, then hands the engine a :class:`Stage` — what differs between them: one step's forward and
backward on a list of item indices, the validation, how a val row is judged — and the engine owns the rest:

- data order: a seeded permutation per epoch (:func:`~crossdistill.training.epoch_order`), each process its shard.
  Kept by hand, not a ``DataLoader``: the order is a pure function of (seed, epoch) and the resume point a batch
  index, so ``--resume`` is bit-identical with no sampler state to save; the items are indices into lists already in
  memory (no I/O or collation for workers to overlap); and the interleaved shard makes 2 processes x batch 2 step on
  exactly the batch of 1 process x batch 4 (the DDP equivalence tests);
- one step: ``stage.step`` (forward + backward) → non-finite check → clip → AdamW → schedule;
- a ``step`` event every ``--log_steps`` (read by the monitor) and TensorBoard scalars when enabled;
- a checkpoint every ``--save_steps`` and at every epoch end, with RNG and optimizer state, so that ``--resume``
  continues bit-identically (:func:`resume_state`);
- validation at every epoch end on the main process, the best row kept (``best.pt``);
- publishing (:func:`publish_run`): everything written into a staging folder, moved into place, ``done.json`` last.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from . import hooks
from .checkpoint import load_checkpoint, rescale_lr, save_best, save_checkpoint
from .errors import NonFiniteLoss
from .fsutil import EventLog, publish, staging_dir
from .training import epoch_order, on_main, shard, track


@dataclass
class Stage:
    """What one training stage supplies to :func:`train_epochs`."""

    step: Callable[[list[int], int, dict], dict]   # (item indices of this process, step, state) -> {"loss": tensor, ...}
    evaluate: Callable[[], dict]                   # val metrics, run on the main process
    eval_row: Callable[[int, int, dict, float], dict]  # (epoch, step, metrics, epoch seconds) -> history row
    is_better: Callable[[dict, dict | None], bool]     # (row, current best entry) -> keep it?
    best_entry: Callable[[int, dict], dict]        # (epoch, row) -> what state["best"] records
    describe: Callable[[dict], str]                # the log line of a val row
    save_best: bool = True                         # write best.pt (read back only to publish the best model)


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

    @property
    def steps_per_epoch(self) -> int:
        return -(-self.n_items // self.global_batch)

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.epochs


def fresh_state(lr: float, **extra) -> dict:
    """The run state a checkpoint holds (plus the stage's own ``extra`` keys)."""
    return {"step": 0, "epoch": 1, "batch_in_epoch": 0, "history": [], "best": None, "lr": lr, **extra}


def resume_state(loop: Loop, resume_from: Path, skipped: list[dict], lr: float, adjust=None) -> dict:
    """Load the run state, model, optimizer and schedule from ``resume_from``; the learning rate follows ``lr``
    (a supervisor halves it after a NaN); ``adjust(state) -> dict`` lets the stage check or change the state and
    returns extra fields of the ``resume`` event."""
    acc = loop.accelerator
    for s in skipped:
        loop.events.log("checkpoint_skipped", **s)
        loop.log(f"checkpoint {s['checkpoint']} skipped: {s['reason']}")
    state = load_checkpoint(resume_from, loop.unwrapped, loop.optimizer, loop.scheduler)
    extra = adjust(state) if adjust else {}
    if state.get("lr", lr) != lr:
        rescale_lr(loop.optimizer, loop.scheduler, state["lr"], lr)
    state["lr"] = lr
    if acc.num_processes > 1:  # the checkpoint holds the main process's RNG; give the others their own stream again
        torch.manual_seed(loop.seed + acc.process_index + 7919 * state["step"])
    loop.events.log("resume", step=state["step"], epoch=state["epoch"], checkpoint=resume_from.name, **extra)
    loop.log(f"resumed from {resume_from} at step {state['step']}")
    return state


def train_epochs(loop: Loop, state: dict, stage: Stage) -> None:
    """Run the remaining epochs of ``state`` (from its epoch and batch on), updating ``state`` in place."""
    from tqdm.auto import tqdm

    acc, events = loop.accelerator, loop.events
    rank, world, main = acc.process_index, acc.num_processes, acc.is_main_process
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
            bar.set_postfix(**{k: f"{v:.4f}" for k, v in values.items() if k in ("loss", "kl")}, samples_s=f"{rate:.2f}")
            if step % loop.log_steps == 0 or step == loop.total_steps:
                lr = loop.scheduler.get_last_lr()[0]
                track(acc, {**{f"train/{k}": v for k, v in values.items()}, "train/lr": lr}, step)
                events.log("step", step=step, epoch=epoch, **{k: round(v, 6) for k, v in values.items()}, lr=lr,
                           samples_per_s=round(rate, 3), elapsed_s=round(time.time() - t_start, 2),
                           total_steps=loop.total_steps)
            if loop.save_steps and step % loop.save_steps == 0 and state["batch_in_epoch"] < loop.steps_per_epoch:
                if main:
                    save_checkpoint(loop.ckpt_root, loop.unwrapped, loop.optimizer, loop.scheduler, state)
                events.log("checkpoint", step=step)
        metrics = on_main(acc, stage.evaluate)
        row = stage.eval_row(epoch, state["step"], metrics, round(time.time() - t_epoch, 1))
        state["history"].append(row)
        events.log("eval", **row)
        track(acc, {f"val/{k[4:]}": v for k, v in row.items() if k.startswith("val_")}, state["step"])
        loop.log(f"epoch {epoch}: " + stage.describe(row))
        if stage.is_better(row, state["best"]):
            state["best"] = stage.best_entry(epoch, row)
            if main and stage.save_best:
                save_best(loop.ckpt_root, loop.unwrapped, state["best"])
        state["epoch"], state["batch_in_epoch"] = epoch + 1, 0
        if main:
            save_checkpoint(loop.ckpt_root, loop.unwrapped, loop.optimizer, loop.scheduler, state)
        events.log("checkpoint", step=state["step"], epoch_end=epoch)
        acc.wait_for_everyone()


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
