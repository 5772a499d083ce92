"""A run's state — its position, history, best model and the stage's own fields — and resuming it.

:class:`RunState` is what a checkpoint's ``state.json`` holds (its layout unchanged: one flat object, so checkpoints of
earlier versions resume). Only the engine writes it: a stage keeps its own fields (the student's micro-batch size
after an out-of-memory error, its guard's verdict) and hands them over through :meth:`Stage.carry`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch

from crossdistill.core import legacy
from crossdistill.core.checkpoint import load_checkpoint, rescale_lr
from crossdistill.core.errors import UsageError

# settings a resumed run may change: they do not change what the run computes (or, for --lr, the monitor's rollback
# after a NaN rescales the schedule); every other setting is fixed by the checkpoint
RESUMABLE_CHANGES = frozenset({
    "resume", "overwrite", "output_dir", "data_root", "log_steps", "save_steps", "eval_batch_size", "report_to", "lr",
    "micro_batch_size", "micro_batches", "gradient_checkpointing", "device", "allow_weaker_teacher",
    "score_cache", "teacher_path", "guard_k",
    "pca_rotation",  # applied when the kept model is published, after training
    "keep"})  # --keep: the student refuses a change itself, with its own message


@dataclass
class RunState:
    """Where a run is (``step``; ``epoch`` and ``batch_in_epoch``: the next batch), its val rows (``history``, the
    starting model's as epoch 0), the best so far (``best``: epoch and selection key), its learning rate and settings,
    and the stage's own fields (``stage``)."""

    lr: float
    step: int = 0
    epoch: int = 1
    batch_in_epoch: int = 0
    history: list[dict] = field(default_factory=list)
    best: dict | None = None
    settings: dict = field(default_factory=dict)
    stage: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """The flat ``state.json`` object: the engine's fields and the stage's beside them."""
        return {**{f.name: getattr(self, f.name) for f in fields(self) if f.name != "stage"}, **self.stage}

    @classmethod
    def from_dict(cls, d: dict) -> "RunState":
        own = {f.name for f in fields(cls)} - {"stage"}
        return cls(**{k: v for k, v in d.items() if k in own}, stage={k: v for k, v in d.items() if k not in own})


def resume_state(loop, resume_from: Path, skipped: list[dict], lr: float, stage) -> RunState:
    """Load the run state, model, optimizer and schedule from ``resume_from``; the learning rate follows ``lr``
    (a supervisor halves it after a NaN); the stage takes its own fields back (:meth:`Stage.restore`, which may
    refuse them) and names the fields of the ``resume`` event. A checkpoint whose position lies outside this run is
    refused (its settings were compared before any work: :func:`check_resume_settings`)."""
    acc = loop.accelerator
    log_skipped(loop, skipped)
    raw = load_checkpoint(resume_from, loop.unwrapped, loop.optimizer, loop.scheduler)
    _check_position(raw, loop, resume_from)
    state = RunState.from_dict(raw)
    loop.last_checkpoint = resume_from
    extra = stage.restore(state.stage)
    state.stage = stage.carry()
    if raw.get("lr", lr) != lr:
        rescale_lr(loop.optimizer, loop.scheduler, raw["lr"], lr)
    state.lr, state.settings = lr, loop.settings
    if acc.num_processes > 1:  # the checkpoint holds the main process's RNG; give the others their own stream again
        torch.manual_seed(loop.seed + acc.process_index + 7919 * state.step)
    loop.events.log("resume", step=state.step, epoch=state.epoch, checkpoint=resume_from.name, **extra)
    loop.log(f"resumed from {resume_from} at step {state.step}")
    return state


def log_skipped(loop, skipped: list[dict]) -> None:
    """Say, in the log and as ``checkpoint_skipped`` events, which checkpoints failed their manifest and were passed
    over by ``--resume`` (all of them: the run starts over from step 0, and says so)."""
    for s in skipped:
        loop.events.log("checkpoint_skipped", **s)
        loop.log(f"checkpoint {s['checkpoint']} skipped: {s['reason']}")


def _check_position(state: dict, loop, folder: Path) -> None:
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
        recorded = legacy.recorded_settings(json.loads((folder / "state.json").read_text()))
    except (OSError, ValueError):
        return  # a damaged state.json is refused when the checkpoint is loaded
    if recorded is None:
        return
    changed = [k for k in sorted(set(recorded) & set(now)) if k not in RESUMABLE_CHANGES and recorded[k] != now[k]]
    if changed:
        k = changed[0]
        more = f" (and {', '.join('--' + c for c in changed[1:])})" if len(changed) > 1 else ""
        flag = {"train_data_sha256": "the training data (train.csv)", "val_data_sha256": "the val data (val.csv)",
                "corpus_sha256": "the version's corpus (corpus.jsonl)"}.get(k, f"--{k}")
        raise UsageError(f"checkpoint {folder} was written with {flag} {recorded[k]!r}, this run has {now[k]!r}{more}; resuming would "
                         "mix two runs: resume with the checkpoint's settings, or start over with --overwrite")
