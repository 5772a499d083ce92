"""Stage 2: distil the frozen cross-encoder teacher into a bi-encoder student.

:func:`train_student` reads top to bottom:

1. :func:`read_inputs` — every input checked (teacher folder, data, val pool, student name), nothing written yet;
2. the student loaded (its name, ``--max_len`` and prefixes checked), then the output folder claimed — released again,
   the previous result exactly as it was, if the run fails before it trains (:func:`~crossdistill.fsutil.claimed_output`);
3. :func:`prepare_run` — candidate lists of K passages per training query (:mod:`crossdistill.candidates`), the
   teacher's logits for every (query, candidate) pair computed once (:mod:`crossdistill.score_cache`), the soft labels
   (:func:`~crossdistill.fusion.build_soft_labels`, shared with the guard), the val pool;
4. the engine's loop (:mod:`crossdistill.engine`): the starting student validated and judged against the teacher (the
   guard refuses a teacher weaker than the student), then per batch one step of :mod:`crossdistill.student_step`
   (embed, exact cosine, loss, backward; exact micro-batches after an out-of-memory error), validation every epoch,
   the best model kept inside the checkpoints (the starting student included; ``--keep last``: the last epoch's);
5. :func:`publish_student`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from crossdistill.core import hooks
from crossdistill.core.checkpoint import resume_point
from crossdistill.core.engine import (
    Loop,
    Stage,
    check_resume_settings,
    fresh_state,
    resume_state,
    total_steps,
    train_epochs,
)
from crossdistill.core.errors import UsageError
from crossdistill.core.events import EventLog
from crossdistill.core.runs import claimed_output, lock_run, releases_run_lock
from crossdistill.core.training import linear_schedule, make_accelerator, make_optimizer, seed_everything
from crossdistill.distill.config import StudentConfig
from crossdistill.distill.fusion import parse_fusion
from crossdistill.distill.guard import evaluate_student, teacher_guard
from crossdistill.distill.inputs import DistillData, fusion_model_scores, prepare_run, read_inputs, run_settings
from crossdistill.distill.publish import publish_student
from crossdistill.distill.recipes import LossSettings
from crossdistill.distill.step import train_step
from crossdistill.models.resolve import check_prefixes
from crossdistill.models.student import BiEncoderStudent


# --------------------------------------------------------------------------- the run
@releases_run_lock
def train_student(cfg: StudentConfig, log=print) -> Path:
    out_dir = Path(cfg.output_dir)
    resume_from, skipped = resume_point(out_dir, cfg.resume, cfg.overwrite, "student")  # decides; touches nothing
    inputs = read_inputs(cfg)
    cfg = inputs.cfg
    settings = run_settings(inputs)  # what every checkpoint records, and a resume must match
    check_resume_settings(resume_from, settings)  # a resume with other settings would mix two runs
    hooks.at("step", 0)  # "step 0": before any work
    seed_everything(cfg.seed)
    accelerator = make_accelerator(cfg, out_dir, "student")
    main, device = accelerator.is_main_process, accelerator.device
    log = log if main else (lambda *a, **k: None)  # one process speaks; the others work
    student = BiEncoderStudent.load(inputs.student, cfg.max_len, device=str(device), attention_dropout=cfg.attention_dropout)
    check_prefixes(student.st.tokenizer, cfg.max_len, student.query_prefix, student.passage_prefix, "student")
    if main:
        lock_run(out_dir)  # one run per folder
    with claimed_output(out_dir, "student", fresh=resume_from is None, main=main, wait=accelerator.wait_for_everyone) as claim:
        events = EventLog(out_dir / "events.jsonl", enabled=main)
        with accelerator.main_process_first():  # the main process fills the teacher-score cache, the others read it
            run = prepare_run(inputs, log, device=device, student=student, events=events)
        if cfg.gradient_checkpointing:
            student.auto_model.gradient_checkpointing_enable()
        lora_cfg = student.add_lora(cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout) if cfg.use_lora else None
        global_batch = cfg.batch_size * accelerator.num_processes  # --batch_size queries per process and step
        optimizer = make_optimizer(student, cfg.lr, None, (), cfg.weight_decay)
        scheduler = linear_schedule(optimizer, total_steps(len(run.lists), global_batch, cfg.epochs), cfg.warmup_ratio)
        student, optimizer, scheduler = accelerator.prepare(student, optimizer, scheduler)
        model = accelerator.unwrap_model(student)
        if accelerator.num_processes > 1:  # same weights everywhere (DDP broadcast), different dropout per process
            torch.manual_seed(cfg.seed + accelerator.process_index)
        loop = Loop(accelerator, student, model, optimizer, scheduler, out_dir / "checkpoints", events, log,
                    n_items=len(run.lists), global_batch=global_batch, epochs=cfg.epochs, seed=cfg.seed,
                    max_grad_norm=cfg.max_grad_norm, log_steps=cfg.log_steps, save_steps=cfg.save_steps,
                    settings=settings)
        if resume_from is not None:
            state = resume_state(loop, resume_from, skipped, cfg.lr, _resume_adjust(cfg))
        else:
            state = fresh_state(cfg.lr, micro_batch_size=cfg.micro_batch_size, guard=None, keep=cfg.keep)
            events.log("start", stage="student", total_steps=loop.total_steps, epochs=cfg.epochs, queries=len(run.lists),
                       **{f"candidates_{k}": v for k, v in run.stats["candidates"].items()})
        loss = LossSettings.from_config(cfg)  # what every step's loss reads, fixed for the run
        train_epochs(loop, state, Stage(
            step=lambda idx, step, state: train_step(student, _collate(run, idx), loss, state, step, accelerator, optimizer,
                                                     cfg.micro_batches, events, log),
            evaluate=lambda: evaluate_student(model, run.val, cfg.eval_batch_size, events)[0],
            select=("val_mrr@10",), describe=_fmt, keep_best=cfg.keep == "best",
            evaluate_start=lambda: _start_and_guard(cfg, inputs, model, run, events, log, device),
            accept_start=lambda start: _accept_start(cfg, start, state, events, log, claim)))
    publish_student(loop, state, cfg, inputs, run, lora_cfg)
    return out_dir


def _resume_adjust(cfg: StudentConfig):
    def adjust(state: dict) -> dict:
        started_with = state.get("keep", "best")  # checkpoints from before --keep existed kept the best
        if started_with != cfg.keep:  # with 'last' no best model was kept; switching would publish the wrong model
            raise UsageError(f"this run was started with --keep {started_with}; resume it with --keep {started_with}, "
                             f"or start a new run with --overwrite")
        if cfg.micro_batch_size and (state["micro_batch_size"] is None or cfg.micro_batch_size < state["micro_batch_size"]):
            state["micro_batch_size"] = cfg.micro_batch_size
        return {"micro_batch_size": state["micro_batch_size"]}

    return adjust


def _start_and_guard(cfg, inputs, model, run, events, log, device) -> dict:
    """Main process, before the first step: the starting student's val metrics and the teacher guard."""
    events.log("phase", phase="guard", detail="validating the starting student and the teacher on the val pool")
    metrics, cos = evaluate_student(model, run.val, cfg.eval_batch_size, events)
    if inputs.teachers is None:  # scores from a file: no model to rerank the student's val top-k with
        return {"metrics": metrics, "guard": {"skipped": f"no teacher model (scores from {inputs.scores_path}): the guard "
                                                         "needs one to rerank the val pool", "fused": sorted(parse_fusion(cfg.teacher_fusion))}}
    fusion = parse_fusion(cfg.teacher_fusion)
    guard = teacher_guard(inputs.teachers, run.val, cos, cfg.score_cache, guard_k=cfg.guard_k,
                          batch_size=cfg.eval_batch_size, fusion=fusion, soft_labels=cfg.soft_labels, log=log, device=device,
                          dense=(lambda qs, ls: fusion_model_scores(cfg, qs, ls, device)) if "dense" in fusion else None)
    return {"metrics": metrics, "guard": guard}


def _accept_start(cfg, start: dict, state: dict, events, log, claim) -> None:
    """Every process: refuse a teacher that ranks the val pool worse than the student it would teach; otherwise the
    run is accepted (the folder's claim is kept from here on, whatever happens)."""
    guard = state["guard"] = start["guard"]
    if "skipped" in guard:
        log(f"guard skipped: {guard['skipped']}")
        claim.commit()
        return
    fused = f" (fused with {', '.join(guard['fused'])})" if guard["fused"] else ""
    log(f"val MRR@10: starting student {guard['student_mrr@10']:.4f}, teacher{fused} reranking its top-{guard['guard_k']} "
        f"{guard['teacher_rerank_mrr@10']:.4f}")
    if guard["teacher_rerank_mrr@10"] < guard["student_mrr@10"] and not cfg.allow_weaker_teacher:
        raise UsageError(f"the teacher ranks worse than the student it would teach (val MRR@10 "
                         f"{guard['teacher_rerank_mrr@10']:.4f} vs {guard['student_mrr@10']:.4f}); distilling would "
                         "make the student worse. Train a stronger teacher, or pass --allow_weaker_teacher")
    events.log("guard", **guard)
    claim.commit()


def _collate(run: DistillData, idx: list[int]):
    lists = [run.lists[i] for i in idx]
    width = max(len(c.passages) for c in lists)
    soft_labels = torch.zeros(len(lists), width)
    positive = torch.zeros(len(lists), width, dtype=torch.bool)
    for r, c in enumerate(lists):
        soft_labels[r, :len(c.passages)] = run.soft_labels[idx[r]]
        positive[r, :len(c.passages)] = torch.tensor(c.positive)
    return lists, soft_labels, positive


def _fmt(m: dict) -> str:
    return (f"val MRR@10 {m['val_mrr@10']:.4f} nDCG@10 {m['val_ndcg@10']:.4f} | mean pos {m['val_mean_positive']:.3f} "
            f"neg {m['val_mean_negative']:.3f} margin {m['val_margin']:.3f}")
