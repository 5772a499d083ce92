"""Stage 1: train the cross-encoder teacher: data, model and loss here; the loop is :mod:`crossdistill.core.engine`'s.

Losses (``--loss``):

- ``bce``: every (anchor, positive) pair is labelled 1, every (anchor, negative) pair 0;
  BCEWithLogits with ``pos_weight`` (``auto`` = negatives per positive, so the base rate is no easy answer).
- ``listwise``: each (anchor, positive) with its negatives is one list; softmax cross-entropy puts the
  positive first (the loss of rerankers such as monoBERT's listwise variants).

The new classification head (``pooler``/``classifier``) gets its own, larger learning rate ``--head_lr``:
with one small rate for everything the head stays near its random start and the model learns only the
base rate (see README, "Teacher recipe").
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from crossdistill.core import hooks
from crossdistill.core.checkpoint import load_trainable, resume_point
from crossdistill.core.engine import Loop, Stage, best_weights, publish_run, start_or_resume, total_steps, train_epochs
from crossdistill.core.errors import UsageError
from crossdistill.core.events import EventLog
from crossdistill.core.files import write_json
from crossdistill.core.ownership import refuse_overlap
from crossdistill.core.run_state import RunState, check_resume_settings
from crossdistill.core.runs import claimed_output, lock_run, releases_run_lock
from crossdistill.core.training import linear_schedule, make_accelerator, make_optimizer, peak_memory, seed_everything
from crossdistill.data import versions as data
from crossdistill.data.records import group_rows
from crossdistill.data.versions import DataVersion
from crossdistill.losses import localized_contrastive_loss, pointwise_bce_loss
from crossdistill.models.card import teacher_card
from crossdistill.models.resolve import ResolvedModel, apply_lora, resolve_model
from crossdistill.models.teacher import HEAD_NAMES, CrossEncoderTeacher, has_trained_head, resolve_pooling, save_teacher
from crossdistill.teach.config import TeacherConfig


def group_triplets(df) -> list[tuple[str, str, list[str]]]:
    """[(anchor, positive, [negatives...])]: each query's record (:func:`~crossdistill.data.records.group_rows`), one
    group per positive, its negatives deduplicated."""
    return [(r.query, p, r.negatives_of(i)) for r in group_rows(df[list(data.COLUMNS)]) for i, p in enumerate(r.pos)]


def bce_examples(groups, pos_weight: str = "auto") -> tuple[list[tuple[str, str, float]], float]:
    """The ``bce`` loss's distinct (query, passage, label) pairs of ``groups`` and its ``pos_weight`` (``"auto"``:
    negatives per positive, else the number given)."""
    examples = list(dict.fromkeys([(a, p, 1.0) for a, p, _ in groups] + [(a, n, 0.0) for a, _, negs in groups for n in negs]))
    n_pos = sum(1 for e in examples if e[2] == 1.0)
    return examples, (len(examples) - n_pos) / max(n_pos, 1) if pos_weight == "auto" else float(pos_weight)


def evaluate_teacher(teacher: CrossEncoderTeacher, groups, batch_size: int, device) -> dict[str, float]:
    """Val BCE over all pairs; accuracy (positive above each of its negatives); MRR of the positive in its list."""
    pairs, labels = [], []
    for a, p, negs in groups:
        pairs += [(a, p)] + [(a, n) for n in negs]
        labels += [1.0] + [0.0] * len(negs)
    logits = teacher.score(pairs, batch_size, activation="logit", device=device)
    bce = float(F.binary_cross_entropy_with_logits(torch.from_numpy(logits), torch.tensor(labels)).item())
    correct = total = 0
    rr = []
    i = 0
    for _, _, negs in groups:
        pos, neg = logits[i], logits[i + 1:i + 1 + len(negs)]
        i += 1 + len(negs)
        correct += int((pos > neg).sum())
        total += len(negs)
        rr.append(1.0 / (1 + int((neg >= pos).sum())))
    return {"val_bce": bce, "val_accuracy": correct / max(total, 1), "val_mrr": float(np.mean(rr)), "val_lists": len(groups)}


def _bce_loss(teacher, batch, pos_weight, device):
    queries, passages, labels = zip(*batch)
    logits = teacher.logits(teacher.encode(list(queries), list(passages)).to(device))
    return pointwise_bce_loss(logits, torch.tensor(labels, device=device), pos_weight)


def _listwise_loss(teacher, batch, device):
    queries, passages, sizes = [], [], []
    for a, p, negs in batch:
        queries += [a] * (1 + len(negs))
        passages += [p] + negs
        sizes.append(1 + len(negs))
    return localized_contrastive_loss(teacher.logits(teacher.encode(queries, passages).to(device)), sizes)


@dataclass
class TeacherInputs:
    """Every input of a teacher run, read and checked before anything is written (:func:`read_inputs`)."""

    resolved: ResolvedModel
    train: list                   # (anchor, positive, [negatives]) groups of the training rows
    val: list                     # the same for the val rows
    examples: list                # what one training item is: (query, passage, label) for bce, a group for listwise
    pos_weight: float | None
    train_rows: int
    settings: dict                # what every checkpoint records and a resume must match
    pooling: str                  # --pooling as applied: mean or cls (auto resolved by the base model)
    pooling_reason: str
    head_lr: float                # --head_lr as applied


def read_inputs(cfg: TeacherConfig) -> TeacherInputs:
    """Check and read every input of the run: nothing is written, nothing moved."""
    version = DataVersion.of(cfg)
    train_file = version.split_file("train")
    train_df = version.split("train", cfg.max_samples, cfg.seed)
    val_df = version.split("val", cfg.max_val_samples, cfg.seed)
    resolved = resolve_model(cfg.model_name, cfg.query_prefix, cfg.passage_prefix)
    refuse_overlap(cfg.output_dir, "--output_dir", {"--model_name": resolved.path if resolved.is_local else None})
    train = group_triplets(train_df)
    if not any(negs for _, _, negs in train):
        raise UsageError("every negative in the training data equals its positive, so there is nothing to learn; "
                         "re-run prepare_data.py (or fix the CSV's negative column)")
    examples, pos_weight = bce_examples(train, cfg.pos_weight) if cfg.loss == "bce" else (train, None)
    pooling, reason = resolve_pooling(cfg.pooling, resolved)
    head_lr = cfg.head_lr if cfg.head_lr is not None else (cfg.lr if pooling == "cls" and has_trained_head(resolved) else 1e-3)
    settings = {**cfg.to_dict(), "train_data_sha256": hashlib.sha256(train_file.read_bytes()).hexdigest(),
                "val_data_sha256": version.fingerprint().get("val.csv"),
                "pooling_applied": pooling, "head_lr_applied": head_lr}
    return TeacherInputs(resolved, train, group_triplets(val_df), examples, pos_weight, len(train_df), settings, pooling,
                         reason, head_lr)


def build_teacher(cfg: TeacherConfig, resolved: ResolvedModel, pooling: str):
    """A new teacher on the base model (a head it lacks and, with ``pooling`` mean, the pooling layer freshly
    initialised), with LoRA adapters when asked; returns (teacher, LoraConfig or None)."""
    teacher = CrossEncoderTeacher.from_base(resolved, cfg.max_len, pooling, cfg.attention_dropout)
    if cfg.gradient_checkpointing:
        teacher.model.gradient_checkpointing_enable()
    if not cfg.use_lora:
        return teacher, None
    heads = [n for n in HEAD_NAMES if any(n in m for m, _ in teacher.model.named_modules())]
    teacher.model, lora_cfg = apply_lora(teacher.model, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, "SEQ_CLS",
                                         modules_to_save=heads)
    return teacher, lora_cfg


@releases_run_lock
def train_teacher(cfg: TeacherConfig, log=print) -> Path:
    """Train, validate every epoch, keep the best (by val MRR, then val BCE), publish. Returns the output folder.

    Checkpoints every ``--save_steps`` steps and at every epoch end; ``--resume`` continues from the last one
    with the same data order, RNG and optimizer state (bit-identical to an uninterrupted run on CPU).
    """
    out_dir = Path(cfg.output_dir)
    resume_from, skipped = resume_point(out_dir, cfg.resume, cfg.overwrite, "teacher")  # decides; touches nothing
    inputs = read_inputs(cfg)
    check_resume_settings(resume_from, inputs.settings)  # a resume with other settings would mix two runs
    seed_everything(cfg.seed)
    accelerator = make_accelerator(cfg, out_dir, "teacher")
    main, device = accelerator.is_main_process, accelerator.device
    log = log if main else (lambda *a, **k: None)
    teacher, lora_cfg = build_teacher(cfg, inputs.resolved, inputs.pooling)
    global_batch = cfg.batch_size * accelerator.num_processes  # --batch_size per process and step
    optimizer = make_optimizer(teacher.model, cfg.lr, inputs.head_lr, HEAD_NAMES, cfg.weight_decay)
    scheduler = linear_schedule(optimizer, total_steps(len(inputs.examples), global_batch, cfg.epochs), cfg.warmup_ratio)
    teacher.model, optimizer, scheduler = accelerator.prepare(teacher.model, optimizer, scheduler)
    if accelerator.num_processes > 1:
        torch.manual_seed(cfg.seed + accelerator.process_index)
    plain = accelerator.unwrap_model(teacher.model)
    scorer = CrossEncoderTeacher(plain, teacher.tokenizer, cfg.max_len, teacher.query_prefix, teacher.passage_prefix)
    if main:
        lock_run(out_dir)  # one run per folder
    with claimed_output(out_dir, "teacher", fresh=resume_from is None, main=main, wait=accelerator.wait_for_everyone) as claim:
        claim.commit()  # every input checked above: from here a failure leaves a run to resume
        events = EventLog(out_dir / "events.jsonl", enabled=main)
        events.make_current()  # long phases report their progress to it (core.events.report_progress)
        loop = Loop.for_run(cfg, accelerator, teacher.model, optimizer, scheduler, out_dir, events, log, len(inputs.examples),
                            inputs.settings)
    stage = TeacherStage(cfg, inputs, teacher, scorer, accelerator)
    state = start_or_resume(loop, stage, cfg.lr, resume_from, skipped, "teacher", examples=len(inputs.examples),
                            train_rows=inputs.train_rows, val_lists=len(inputs.val))
    log(f"teacher: {inputs.resolved.name} ({inputs.resolved.path}), {inputs.train_rows} train rows -> "
        f"{len(inputs.examples)} {cfg.loss} examples, {loop.total_steps} steps, device {device}, "
        f"lora={'on' if cfg.use_lora else 'off'}, pooling {inputs.pooling} ({inputs.pooling_reason}), head lr "
        f"{inputs.head_lr:g}")
    train_epochs(loop, state, stage)
    publish_teacher(loop, state, cfg, inputs, teacher, lora_cfg)
    return out_dir


class TeacherStage(Stage):
    """The teacher's part of the engine's loop: its step and its validation; the best model by val MRR, then val BCE."""

    select = ("val_mrr", "-val_bce")

    def __init__(self, cfg: TeacherConfig, inputs: TeacherInputs, teacher, scorer: CrossEncoderTeacher, accelerator):
        self.cfg, self.inputs, self.teacher, self.scorer, self.accelerator = cfg, inputs, teacher, scorer, accelerator

    def step(self, items: list[int], step: int) -> dict:
        return teacher_step(self.teacher, [self.inputs.examples[i] for i in items], self.cfg, self.inputs.pos_weight, step,
                            self.accelerator)

    def validate(self) -> dict:
        return evaluate_teacher(self.scorer, self.inputs.val, self.cfg.eval_batch_size, self.accelerator.device)

    def row_extra(self, seconds: float) -> dict:
        return {"train_seconds": seconds}

    def describe(self, row: dict) -> str:
        return f"val_mrr {row['val_mrr']:.4f} val_acc {row['val_accuracy']:.4f} val_bce {row['val_bce']:.4f}"


def teacher_step(teacher, batch: list, cfg: TeacherConfig, pos_weight, step: int, accelerator) -> dict:
    """Forward and backward of one batch, in ``--micro_batches`` smaller passes (the same batch)."""
    parts = [p for p in (batch[i::cfg.micro_batches] for i in range(cfg.micro_batches)) if p]
    loss = 0.0
    for i, part in enumerate(parts):
        sync = contextlib.nullcontext() if i == len(parts) - 1 else accelerator.no_sync(teacher.model)
        with sync, accelerator.autocast():
            part_loss = (_bce_loss(teacher, part, pos_weight, accelerator.device) if cfg.loss == "bce"
                         else _listwise_loss(teacher, part, accelerator.device)) * (len(part) / len(batch))
            part_loss = hooks.on_loss(step, part_loss) if i == 0 else part_loss
            accelerator.backward(part_loss)
        loss = loss + part_loss.detach()
    return {"loss": loss}


def publish_teacher(loop: Loop, state: RunState, cfg: TeacherConfig, inputs: TeacherInputs, teacher, lora_cfg) -> None:
    """The best epoch's teacher (a standard sequence classifier, LoRA merged), its settings, card and metrics;
    ``done.json`` last."""
    plain = loop.unwrapped
    best = best_weights(loop)
    load_trainable(plain, best["trainable"])
    best_epoch, history = best["info"]["epoch"], state.history
    resolved = inputs.resolved
    final = CrossEncoderTeacher(plain.float(), teacher.tokenizer, cfg.max_len, resolved.query_prefix, resolved.passage_prefix)
    config = {"use_lora": bool(cfg.use_lora), "base_model": resolved.name, "base_model_path": resolved.path,
              "loss": cfg.loss, "pooling": inputs.pooling, "pooling_reason": inputs.pooling_reason,
              "head_lr": inputs.head_lr, "activation": "sigmoid"}
    if lora_cfg is not None:
        config.update(r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout,
                      target_modules=sorted(lora_cfg.target_modules), modules_to_save=sorted(set(lora_cfg.modules_to_save or [])))
    summary = {**peak_memory(), "best_epoch": best_epoch, "best": history[best_epoch - 1], "history": history,
               "train_seconds": round(sum(h["train_seconds"] for h in history), 1), "steps": state.step}

    def write(staging: Path) -> None:
        save_teacher(final, staging, config)
        write_json(staging / "training_args.json", {**cfg.to_dict(), "resolved": {
            "query_prefix": resolved.query_prefix, "passage_prefix": resolved.passage_prefix, "base_model_path": resolved.path}})
        write_json(staging / "metrics.json", summary)
        (staging / "README.md").write_text(teacher_card(cfg, summary, resolved.name), encoding="utf-8")

    publish_run(loop, Path(cfg.output_dir), write, done={"stage": "teacher", "best_epoch": best_epoch, **history[best_epoch - 1]},
                end_event={"best_epoch": best_epoch, **{k: v for k, v in history[best_epoch - 1].items() if k.startswith("val")}})
    loop.log(f"saved teacher to {cfg.output_dir} (best epoch {best_epoch}, {summary['train_seconds']}s)")
