"""Stage 2: distil the frozen cross-encoder teacher into a bi-encoder student.

:func:`train_student` reads top to bottom:

1. :func:`~crossdistill.distill.inputs.read_inputs` — every input checked (teacher, data, val pool, student name),
   nothing written yet;
2. the student loaded (its name, ``--max_len`` and prefixes checked), then the output folder claimed — released again,
   the previous result exactly as it was, if the run fails before it trains (:func:`~crossdistill.core.runs.claimed_output`);
3. :func:`~crossdistill.distill.inputs.prepare_run` — candidate lists of K passages per training query, the teacher's
   logits for every (query, candidate) pair computed once, the soft labels (shared with the guard), the val pool;
4. the engine's loop (:mod:`crossdistill.core.engine`) over a :class:`StudentStage`: the starting student validated
   and judged against the teacher (the guard refuses a teacher weaker than the student), then per batch one
   :func:`~crossdistill.distill.step.forward_backward` (exact micro-batches after an out-of-memory error), validation
   every epoch, the best model kept inside the checkpoints (the starting student included; ``--keep last``: the last);
5. :func:`~crossdistill.distill.publish.publish_student`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from crossdistill.core import hooks
from crossdistill.core.checkpoint import resume_point
from crossdistill.core.engine import Loop, Stage, start_or_resume, total_steps, train_epochs
from crossdistill.core.errors import UsageError, is_oom
from crossdistill.core.events import EventLog
from crossdistill.core.run_state import check_resume_settings
from crossdistill.core.runs import claimed_output, lock_run, releases_run_lock
from crossdistill.core.training import linear_schedule, make_accelerator, make_optimizer, seed_everything
from crossdistill.distill.batch import Batch, collate
from crossdistill.distill.config import StudentConfig
from crossdistill.distill.guard import teacher_guard
from crossdistill.distill.inputs import (
    SIDE_TEXTS,
    DistillData,
    StudentInputs,
    prepare_run,
    read_inputs,
    rotation_texts,
    run_settings,
)
from crossdistill.distill.publish import pca_rotation, publish_student
from crossdistill.distill.soft_labels import dense_cosines
from crossdistill.distill.step import forward_backward
from crossdistill.distill.validation import evaluate_student
from crossdistill.losses import LossSettings
from crossdistill.models.resolve import check_prefixes
from crossdistill.models.student import BiEncoderStudent
from crossdistill.teachers.fusion import parse_fusion


@releases_run_lock
def train_student(cfg: StudentConfig, log=print) -> Path:
    out_dir = Path(cfg.output_dir)
    resume_from, skipped = resume_point(out_dir, cfg.resume, cfg.overwrite, "student")  # decides; touches nothing
    inputs = read_inputs(cfg, "cuda" if torch.cuda.is_available() and cfg.device != "cpu" else "cpu")
    cfg = inputs.cfg
    settings = run_settings(inputs)  # what every checkpoint records, and a resume must match
    check_resume_settings(resume_from, settings)  # a resume with other settings would mix two runs
    hooks.at("step", 0)  # "step 0": before any work
    seed_everything(cfg.seed)
    accelerator = make_accelerator(cfg, out_dir, "student")
    main, device = accelerator.is_main_process, accelerator.device
    log = log if main else (lambda *a, **k: None)  # one process speaks; the others work
    student = BiEncoderStudent.load(inputs.student, cfg.max_len, device=str(device), attention_dropout=cfg.attention_dropout,
                                    query_max_len=cfg.query_max_len, passage_max_len=cfg.passage_max_len)
    check_prefixes(student.st.tokenizer, student.query_max_len, student.query_prefix, "", "student")
    check_prefixes(student.st.tokenizer, student.passage_max_len, "", student.passage_prefix, "student")
    st = student.st
    full = st.get_embedding_dimension() if hasattr(st, "get_embedding_dimension") else st.get_sentence_embedding_dimension()
    if cfg.matryoshka_dims_list and cfg.matryoshka_dims_list[0] > full:
        raise UsageError(f"--matryoshka_dims {cfg.matryoshka_dims} goes up to {cfg.matryoshka_dims_list[0]}, but the "
                         f"student's embeddings have {full} dimensions; give dimensions <= {full} (e.g. "
                         f"{full},{full // 2},{full // 4})")
    fit = rotation_texts(cfg) if cfg.pca_rotation or cfg.matryoshka_pca_start else {}
    n_texts = sum(map(len, fit.values())) if fit else full
    if n_texts < full:
        flag = "--pca_rotation" if cfg.pca_rotation else "--matryoshka_pca_start"
        texts = " and ".join(SIDE_TEXTS[side] for side in fit)
        raise UsageError(f"{flag} finds the {full} principal axes of the student's embeddings of the training {texts}, "
                         f"which needs at least {full} distinct texts; the data has {n_texts}: add data, or leave {flag} out")
    if main:
        lock_run(out_dir)  # one run per folder
    with claimed_output(out_dir, "student", fresh=resume_from is None, main=main, wait=accelerator.wait_for_everyone) as claim:
        events = EventLog(out_dir / "events.jsonl", enabled=main)
        events.make_current()  # long phases report their progress to it (core.events.report_progress)
        with accelerator.main_process_first():  # the main process fills the teacher-score cache, the others read it
            run = prepare_run(inputs, log, device=device, student=student, events=events)
        if cfg.matryoshka_pca_start:  # every process, from the starting weights (a resumed run's too): one answer
            axes, run.stats["matryoshka_pca_start"] = pca_rotation(student, cfg, log, what="the starting student's vectors")
            student.rotation = torch.tensor(axes, dtype=torch.float32, device=device)
        if cfg.gradient_checkpointing:
            student.auto_model.gradient_checkpointing_enable()
        lora_cfg = student.add_lora(cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout) if cfg.use_lora else None
        global_batch = cfg.batch_size * accelerator.num_processes  # --batch_size queries per process and step
        optimizer = make_optimizer(student, cfg.lr, None, (), cfg.weight_decay)
        scheduler = linear_schedule(optimizer, total_steps(len(run.lists), global_batch, cfg.epochs), cfg.warmup_ratio)
        student, optimizer, scheduler = accelerator.prepare(student, optimizer, scheduler)
        if accelerator.num_processes > 1:  # same weights everywhere (DDP broadcast), different dropout per process
            torch.manual_seed(cfg.seed + accelerator.process_index)
        loop = Loop.for_run(cfg, accelerator, student, optimizer, scheduler, out_dir, events, log, len(run.lists), settings)
        stage = StudentStage(cfg, inputs, run, loop, claim)
        state = start_or_resume(loop, stage, cfg.lr, resume_from, skipped, "student", queries=len(run.lists),
                                **{f"candidates_{k}": v for k, v in run.stats["candidates"].items()})
        train_epochs(loop, state, stage)
    publish_student(loop, state, cfg, inputs, run, lora_cfg)
    return out_dir


class StudentStage(Stage):
    """The student's part of the engine's loop: its step (with the out-of-memory retry), its validation, the guard."""

    select = ("val_mrr@10",)
    validates_start = True

    def __init__(self, cfg: StudentConfig, inputs: StudentInputs, run: DistillData, loop: Loop, claim):
        self.cfg, self.inputs, self.run, self.loop, self.claim = cfg, inputs, run, loop, claim
        self.model = loop.unwrapped
        self.loss = LossSettings.from_config(cfg)  # what every step's loss reads, fixed for the run
        self.keep_best = cfg.keep == "best"
        self.micro_batch_size = cfg.micro_batch_size  # max texts per forward pass; halved on out-of-memory
        self.guard: dict | None = None

    def batch(self, items: list[int]) -> Batch:
        return collate([self.run.lists[i] for i in items], [self.run.soft_labels[i] for i in items],
                       self.model.query_prefix, self.model.passage_prefix, self.run.teacher_matrix)

    def step(self, items: list[int], step: int) -> dict:
        """One batch's forward and backward, never skipped: on out-of-memory the same batch is redone in exact
        micro-batches half as large (kept for the rest of the run and its checkpoints, logged as an ``oom`` event).
        ``--micro_batches`` > 1 splits every batch into that many exact micro-batches from the start."""
        batch, loop = self.batch(items), self.loop
        micro = self.micro_batch_size
        if micro is None and self.cfg.micro_batches > 1:
            micro = -(-batch.n_texts // self.cfg.micro_batches)
        while True:
            try:
                return forward_backward(loop.model, batch, self.loss, micro, step, loop.accelerator)
            except Exception as exc:  # noqa: BLE001 - only out-of-memory is handled, the rest re-raised
                if not is_oom(exc):
                    raise
                loop.optimizer.zero_grad(set_to_none=True)
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                self.micro_batch_size = micro = (micro or batch.n_texts) // 2
                loop.events.log("oom", step=step, micro_batch_size=micro, error=str(exc)[:200])
                loop.log(f"out of memory at step {step}: retrying with micro-batches of {micro} texts")
                if micro < 1:
                    raise UsageError("out of memory even with one text per forward pass; lower --max_len or use a smaller "
                                     "model") from None

    def validate(self) -> dict:
        return evaluate_student(self.model, self.run.val, self.cfg.eval_batch_size, self.loop.events)[0]

    def validate_start(self) -> dict:
        """Main process, before the first step: the starting student's val metrics and the teacher guard."""
        cfg, events, device = self.cfg, self.loop.events, self.loop.accelerator.device
        events.log("phase", phase="guard", detail="validating the starting student and the teacher on the val pool")
        metrics, cos = evaluate_student(self.model, self.run.val, cfg.eval_batch_size, events)
        fusion = parse_fusion(cfg.teacher_fusion)
        if self.inputs.teachers is None:  # scores from a file, or none: no model to rerank the student's val top-k with
            why = (f"no teacher model (scores from {self.inputs.scores_path}): the guard needs one to rerank the val pool"
                   if self.inputs.scores_path else "no teacher: the student learns the labels alone (--soft_weight 0)")
            return {"metrics": metrics, "guard": {"skipped": why, "fused": sorted(fusion)}}
        dense = self.inputs.fusion_dense
        guard = teacher_guard(self.inputs.teachers, self.run.val, cos, guard_k=cfg.guard_k, batch_size=cfg.eval_batch_size,
                              fusion=fusion, soft_labels=cfg.soft_labels, log=self.loop.log, device=device,
                              dense=(lambda qs, ls: dense_cosines(dense, qs, ls, cfg.eval_batch_size, self.loop.log))
                              if "dense" in fusion else None, fusion_norm=cfg.fusion_norm)
        return {"metrics": metrics, "guard": guard}

    def accept_start(self, start: dict) -> None:
        """Every process: refuse a teacher that ranks the val pool worse than the student it would teach; otherwise
        the run is accepted (the folder's claim is kept from here on, whatever happens)."""
        guard = self.guard = start["guard"]
        log = self.loop.log
        if "skipped" in guard:
            log(f"guard skipped: {guard['skipped']}")
            self.claim.commit()
            return
        fused = f" (fused with {', '.join(guard['fused'])})" if guard["fused"] else ""
        log(f"val MRR@10: starting student {guard['student_mrr@10']:.4f}, teacher{fused} reranking its "
            f"top-{guard['guard_k']} {guard['teacher_rerank_mrr@10']:.4f}")
        if guard["teacher_rerank_mrr@10"] < guard["student_mrr@10"] and not self.cfg.allow_weaker_teacher:
            raise UsageError(f"the teacher ranks worse than the student it would teach (val MRR@10 "
                             f"{guard['teacher_rerank_mrr@10']:.4f} vs {guard['student_mrr@10']:.4f}); distilling would "
                             "make the student worse. Train a stronger teacher, or pass --allow_weaker_teacher")
        self.loop.events.log("guard", **guard)
        self.claim.commit()

    def describe(self, m: dict) -> str:
        return (f"val MRR@10 {m['val_mrr@10']:.4f} nDCG@10 {m['val_ndcg@10']:.4f} | mean pos {m['val_mean_positive']:.3f} "
                f"neg {m['val_mean_negative']:.3f} margin {m['val_margin']:.3f}")

    def carry(self) -> dict:
        return {"micro_batch_size": self.micro_batch_size, "guard": self.guard, "keep": self.cfg.keep}

    def restore(self, fields: dict) -> dict:
        started_with = fields.get("keep", "best")  # checkpoints from before --keep existed kept the best
        if started_with != self.cfg.keep:  # with 'last' no best model was kept; switching would publish the wrong model
            raise UsageError(f"this run was started with --keep {started_with}; resume it with --keep {started_with}, "
                             f"or start a new run with --overwrite")
        micro, asked = fields.get("micro_batch_size"), self.cfg.micro_batch_size
        self.micro_batch_size = asked if asked and (micro is None or asked < micro) else micro
        self.guard = fields.get("guard")
        return {"micro_batch_size": self.micro_batch_size}
