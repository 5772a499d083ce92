"""Stage 2: distil the frozen cross-encoder teacher into a bi-encoder student.

Setup (:func:`prepare_run`): candidate lists of K passages per training query
(:mod:`crossdistill.candidates`), teacher logits for every (query, candidate) pair computed once
(:mod:`crossdistill.score_cache`), and the guard that refuses a teacher weaker than the student.

The loop (:func:`train_student`) reads top to bottom: for each batch of lists, embed queries and the
batch's distinct passages, score by exact cosine, loss = KL + contrastive + negative penalty
(:mod:`crossdistill.losses`), step; validate every epoch; keep the best model (the starting student
included; ``--keep last``: the last epoch's); checkpoint every ``--save_steps`` and every epoch end (:mod:`crossdistill.checkpoint`).

Validation and the guard live in :mod:`crossdistill.validation`, one optimisation step (with the exact
micro-batching that follows an out-of-memory error) in :mod:`crossdistill.student_step`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from . import data, hooks
from .candidates import CandidateList, build_candidates
from .config import StudentConfig
from .checkpoint import load_tensors, load_trainable, resume_point, save_best
from .engine import Loop, Stage, fresh_state, publish_run, resume_state, train_epochs
from .errors import UsageError
from .fsutil import EventLog, claim_output_dir, lock_run, releases_run_lock, release_output_dir, write_json
from .model_card import student_card
from .models import cache_dir, resolve_model, similarity_scale, teacher_config_file
from .fusion import build_soft_labels, parse_fusion
from .score_cache import cached_teacher_logits, teacher_fingerprint
from .recipes import LossSettings
from .student import BiEncoderStudent
from .student_step import forward_backward, is_oom
from .teacher import read_teacher_config
from .training import linear_schedule, make_accelerator, make_optimizer, on_main, peak_memory, seed_everything
from .validation import evaluate_student, student_similarities, teacher_guard, val_pool_passages


# --------------------------------------------------------------------------- setup
@dataclass
class DistillData:
    """Everything the loop reads, built once by :func:`prepare_run`: candidate lists, soft-label sources, val pool."""

    lists: list[CandidateList]
    soft_labels: list[torch.Tensor]   # per list: (K,) the teacher's scores (prob or logit), or their fusion
    val: data.TripletPool
    stats: dict


def load_teacher_dir(path: str) -> dict:
    folder = Path(path)
    if not folder.is_dir():
        raise UsageError(f"--teacher_path {folder} does not exist; train a teacher with train_teacher_model.py first")
    if not (folder / "config.json").is_file() or teacher_config_file(folder) is None:
        raise UsageError(f"--teacher_path {folder} is not a teacher folder (needs config.json and teacher_config.json "
                         "written by train_teacher_model.py)")
    if not any((folder / w).is_file() for w in ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")):
        raise UsageError(f"--teacher_path {folder} has a config but no weights (model.safetensors): the teacher was never "
                         "fully published; resume its training (train_teacher_model.py ... --resume) or train it again")
    return read_teacher_config(folder)


def prepare_run(cfg: StudentConfig, log, device=None, student: BiEncoderStudent | None = None, events=None) -> DistillData:
    """Candidate lists, their soft labels (teacher scores, cached; fused with other rankers when asked), and
    the val pool."""
    train_df = data.subsample(data.read_triplets(data.data_file(cfg.data_version, "train", cfg.data_root)),
                              cfg.max_samples, cfg.seed)
    val_df = data.read_triplets(data.data_file(cfg.data_version, "val", cfg.data_root))
    if cfg.max_val_samples:
        val_df = data.subsample(val_df, cfg.max_val_samples, cfg.seed)
    corpus, pool_info = val_pool_passages(cfg.data_root, cfg.data_version, cfg.val_pool)
    val = data.TripletPool.from_df(val_df, corpus)
    pool_info.update(queries=len(val.queries), passages=len(val.passages))
    log(f"val pool (--val_pool {cfg.val_pool}): {pool_info['queries']} queries ranked against {pool_info['passages']} passages "
        + (f"(the corpus {pool_info['source']})" if pool_info["kind"] == "corpus" else "(the val CSV's own)"))
    phase = events.log if events is not None else (lambda *a, **k: None)
    phase("phase", phase="candidates", detail=f"building {cfg.K} candidates per query ({cfg.negative_source} mining)")
    lists, cstats = build_candidates(train_df, cfg.K, cfg.negative_source, cfg.seed, cfg.mining_model)
    log(f"candidates: {cstats['queries']} queries x K={cfg.K} ({cstats['short_lists']} with fewer than K, "
        f"{cstats['mined_negatives']} mined {cfg.negative_source} negatives); loss recipe {cfg.recipe}, "
        f"similarity scale {cfg.scale:g}")
    pairs = [(c.query, p) for c in lists for p in c.passages]
    logits, tstats = cached_teacher_logits(cfg.teacher_path, pairs, cfg.score_cache, cfg.eval_batch_size,
                                           device=device, log=log, on_progress=lambda done, total: phase(
                                               "phase", phase="teacher_scoring", done=done, total=total))
    bounds = np.cumsum([0] + [len(c.passages) for c in lists])
    per_list_logits = [logits[bounds[i]:bounds[i + 1]] for i in range(len(lists))]
    weights = parse_fusion(cfg.teacher_fusion)
    soft = build_soft_labels(
        per_list_logits, [c.query for c in lists], [c.passages for c in lists], cfg.soft_labels, weights,
        bm25_pool=corpus if corpus else list(dict.fromkeys([*train_df["positive"], *train_df["negative"]])),
        student_cos=_student_list_scores(student, lists, cfg.eval_batch_size) if "student" in weights else None)
    if weights:
        log(f"soft labels: teacher fused with {', '.join(f'{k} x{v:g}' for k, v in weights.items())} (per-query z-scores)")
    if cfg.positive_definition == "teacher":
        probs = torch.sigmoid(torch.from_numpy(logits))
        i = 0
        for c in lists:
            c.positive = [bool(x > 0.5) for x in probs[i:i + len(c.passages)]]
            i += len(c.passages)
    return DistillData(lists, [torch.from_numpy(s) for s in soft], val,
                       {"candidates": cstats, "teacher_scores": tstats, "val_pool": pool_info})


def _student_list_scores(student: BiEncoderStudent, lists: list[CandidateList], batch_size: int) -> list[np.ndarray]:
    """The starting student's cosine of each query with each of its candidates (each text encoded once)."""
    queries = [c.query for c in lists]
    passages = list(dict.fromkeys(p for c in lists for p in c.passages))
    where = {p: i for i, p in enumerate(passages)}
    cos = student_similarities(student, queries, passages, batch_size)
    return [cos[i, [where[p] for p in c.passages]] for i, c in enumerate(lists)]


def _collate(run: DistillData, idx: list[int]):
    lists = [run.lists[i] for i in idx]
    width = max(len(c.passages) for c in lists)
    soft_labels = torch.zeros(len(lists), width)
    positive = torch.zeros(len(lists), width, dtype=torch.bool)
    for r, i in enumerate(idx):
        n = len(run.lists[i].passages)
        soft_labels[r, :n] = run.soft_labels[i]
        positive[r, :n] = torch.tensor(run.lists[i].positive)
    return lists, soft_labels, positive


def _n_texts(lists: list[CandidateList]) -> int:
    return len(lists) + len({p for c in lists for p in c.passages})


# --------------------------------------------------------------------------- the loop
@releases_run_lock
def train_student(cfg: StudentConfig, log=print) -> Path:
    cfg = cfg if isinstance(cfg, StudentConfig) else StudentConfig.from_args(cfg)  # a parsed namespace: typed once
    out_dir = Path(cfg.output_dir)
    ckpt_root = out_dir / "checkpoints"
    resume_from, skipped = resume_point(out_dir, cfg.resume, cfg.overwrite)  # decides; touches nothing yet
    teacher_cfg = load_teacher_dir(cfg.teacher_path)
    for split in ("train", "val"):
        data.data_file(cfg.data_version, split, cfg.data_root)  # exists, or a clear error before any work
    resolved = resolve_model(cfg.student_name, cfg.query_prefix, cfg.passage_prefix)
    cfg = replace(cfg,  # the run's resolved settings (a new config; the one given is never changed)
                  score_cache=cfg.score_cache or str(cache_dir() / "teacher_scores" / f"{teacher_fingerprint(cfg.teacher_path)}.sqlite"),
                  scale=cfg.scale if cfg.scale is not None else similarity_scale(resolved))
    loss_settings = LossSettings.from_args(cfg)  # what every step's loss reads, fixed for the run

    hooks.at("step", 0)  # "step 0": before any work
    seed_everything(cfg.seed)
    accelerator = make_accelerator(cfg, out_dir, "student")
    device, world, rank = accelerator.device, accelerator.num_processes, accelerator.process_index
    main = accelerator.is_main_process
    log = log if main else (lambda *a, **k: None)  # one process speaks; the others work
    if main:
        lock_run(out_dir)  # one run per folder
    created = claim_output_dir(out_dir, "student") if (resume_from is None and main) else False  # inputs checked above
    accelerator.wait_for_everyone()
    events = EventLog(out_dir / "events.jsonl", enabled=main)
    student = BiEncoderStudent.load(resolved, cfg.max_len, device=str(device), attention_dropout=cfg.attention_dropout)
    with accelerator.main_process_first():  # the main process fills the teacher-score cache, the others read it
        run = prepare_run(cfg, log, device=device, student=student, events=events)
    if cfg.gradient_checkpointing:
        student.auto_model.gradient_checkpointing_enable()
    lora_cfg = student.add_lora(cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout) if cfg.use_lora else None
    global_batch = cfg.batch_size * world  # --batch_size queries per process and step
    total_steps = math.ceil(len(run.lists) / global_batch) * cfg.epochs
    optimizer = make_optimizer(student, cfg.lr, None, (), cfg.weight_decay)
    scheduler = linear_schedule(optimizer, total_steps, cfg.warmup_ratio)
    student, optimizer, scheduler = accelerator.prepare(student, optimizer, scheduler)
    model = accelerator.unwrap_model(student)
    if world > 1:  # same weights everywhere (DDP broadcast), different dropout per process
        torch.manual_seed(cfg.seed + rank)

    loop = Loop(accelerator, student, model, optimizer, scheduler, ckpt_root, events, log, n_items=len(run.lists),
                global_batch=global_batch, epochs=cfg.epochs, seed=cfg.seed, max_grad_norm=cfg.max_grad_norm,
                log_steps=cfg.log_steps, save_steps=cfg.save_steps)
    if resume_from is not None:
        def adjust(state):
            started_with = state.get("keep", "best")  # checkpoints from before --keep existed kept the best
            if started_with != cfg.keep:  # with 'last' no best.pt was written; switching would publish the wrong model
                raise UsageError(f"this run was started with --keep {started_with}; resume it with --keep {started_with}, "
                                 f"or start a new run with --overwrite")
            if cfg.micro_batch_size and (state["micro_batch_size"] is None or cfg.micro_batch_size < state["micro_batch_size"]):
                state["micro_batch_size"] = cfg.micro_batch_size
            return {"micro_batch_size": state["micro_batch_size"]}

        state = resume_state(loop, resume_from, skipped, cfg.lr, adjust)
    else:
        state = fresh_state(cfg.lr, micro_batch_size=cfg.micro_batch_size, guard=None, keep=cfg.keep)

        def start_eval():
            events.log("phase", phase="guard", detail="validating the starting student and the teacher on the val pool")
            metrics, cos = evaluate_student(model, run.val, cfg.eval_batch_size, events)
            return metrics, teacher_guard(cfg.teacher_path, run.val, cos, Path(cfg.score_cache), guard_k=cfg.guard_k,
                                          batch_size=cfg.eval_batch_size, fusion=parse_fusion(cfg.teacher_fusion),
                                          soft_labels=cfg.soft_labels, log=log, device=device)

        start_metrics, guard = on_main(accelerator, start_eval)
        state["guard"] = guard
        fused = f" (fused with {', '.join(guard['fused'])})" if guard["fused"] else ""
        log(f"val MRR@10: starting student {guard['student_mrr@10']:.4f}, teacher{fused} reranking its top-{guard['guard_k']} "
            f"{guard['teacher_rerank_mrr@10']:.4f}")
        if guard["teacher_rerank_mrr@10"] < guard["student_mrr@10"] and not cfg.allow_weaker_teacher:
            if main:
                release_output_dir(out_dir, created)
            raise UsageError(f"the teacher ranks worse than the student it would teach (val MRR@10 "
                             f"{guard['teacher_rerank_mrr@10']:.4f} vs {guard['student_mrr@10']:.4f}); distilling would "
                             "make the student worse. Train a stronger teacher, or pass --allow_weaker_teacher")
        events.log("start", stage="student", total_steps=loop.total_steps, epochs=cfg.epochs, queries=len(run.lists),
                   **{f"candidates_{k}": v for k, v in run.stats["candidates"].items()})
        events.log("guard", **guard)
        state["history"].append({"epoch": 0, "step": 0, **start_metrics})
        state["best"] = {"epoch": 0, "val_mrr@10": start_metrics["val_mrr@10"]}
        if main and cfg.keep == "best":  # best.pt is read back only to publish the best model
            save_best(ckpt_root, model, state["best"])
        events.log("eval", epoch=0, step=0, **start_metrics)
        log("epoch 0 (starting student): " + _fmt(start_metrics))

    def step(idx: list[int], step: int, state: dict) -> dict:
        """Forward and backward of one batch; out of memory: redo it in exact micro-batches half as large."""
        lists, soft_labels, positive = _collate(run, idx)
        micro = state["micro_batch_size"]
        if micro is None and cfg.gradient_accumulation_steps > 1:  # accumulation = exact micro-batches
            micro = math.ceil(_n_texts(lists) / cfg.gradient_accumulation_steps)
        while True:
            try:
                return forward_backward(student, lists, soft_labels, positive, loss_settings, micro, step, accelerator)
            except Exception as exc:  # noqa: BLE001 - only out-of-memory is handled, the rest re-raised
                if not is_oom(exc):
                    raise
                optimizer.zero_grad(set_to_none=True)
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                state["micro_batch_size"] = micro = (micro or _n_texts(lists)) // 2
                events.log("oom", step=step, micro_batch_size=micro, error=str(exc)[:200])
                log(f"out of memory at step {step}: retrying with micro-batches of {micro} texts")
                if micro < 1:
                    raise UsageError("out of memory even with one text per forward pass; lower --max_len or use a smaller model") from None

    train_epochs(loop, state, Stage(
        step=step,
        evaluate=lambda: evaluate_student(model, run.val, cfg.eval_batch_size, events)[0],
        eval_row=lambda epoch, step, metrics, seconds: {"epoch": epoch, "step": step, **metrics},
        is_better=lambda row, best: row["val_mrr@10"] > best["val_mrr@10"],
        best_entry=lambda epoch, row: {"epoch": epoch, "val_mrr@10": row["val_mrr@10"]},
        describe=_fmt, save_best=cfg.keep == "best"))

    # ---- publish: the best model (possibly the starting one) or, with --keep last, the last epoch's; done.json last
    if cfg.keep == "best":
        best = load_tensors(ckpt_root / "best.pt")
        load_trainable(model, best["trainable"])
        kept_epoch = best["info"]["epoch"]
    else:
        kept_epoch = state["history"][-1]["epoch"]
    start, kept_row = state["history"][0], state["history"][kept_epoch]
    summary = {**peak_memory(), "kept": cfg.keep, "best_epoch": kept_epoch, "history": state["history"], "guard": state["guard"],
               "val_delta": {k: kept_row[k] - start[k] for k in start if k.startswith("val_")},
               "steps": state["step"], "micro_batch_size": state["micro_batch_size"], **run.stats}

    def write(staging: Path) -> None:
        model.save(staging)
        write_json(staging / "training_args.json", cfg.to_dict())
        write_json(staging / "metrics.json", summary)
        (staging / "README.md").write_text(student_card(cfg, summary, cfg.student_name, str(cfg.teacher_path)),
                                           encoding="utf-8")
        write_json(staging / "distillation_config.json", {
            "teacher_path": str(cfg.teacher_path), "teacher_base_model": teacher_cfg.get("base_model"),
            "student_name": cfg.student_name, "query_prefix": model.query_prefix, "passage_prefix": model.passage_prefix,
            "max_len": cfg.max_len, "scale": cfg.scale, "data_version": cfg.data_version, "data_root": cfg.data_root,
            "use_lora": bool(cfg.use_lora), **({"lora_r": cfg.lora_r, "lora_alpha": cfg.lora_alpha,
                                                 "lora_dropout": cfg.lora_dropout,
                                                 "target_modules": sorted(lora_cfg.target_modules)} if lora_cfg else {})})

    publish_run(loop, out_dir, write, done={"stage": "student", "best_epoch": summary["best_epoch"], **kept_row,
                                            "val_delta": summary["val_delta"]},
                end_event={"best_epoch": summary["best_epoch"], **{f"delta_{k}": v for k, v in summary["val_delta"].items()}})
    log(f"saved student to {out_dir} ({cfg.keep} epoch {summary['best_epoch']}; val MRR@10 "
        f"{start['val_mrr@10']:.4f} -> {kept_row['val_mrr@10']:.4f})")
    return out_dir


def _fmt(m: dict) -> str:
    return (f"val MRR@10 {m['val_mrr@10']:.4f} nDCG@10 {m['val_ndcg@10']:.4f} | mean pos {m['val_mean_positive']:.3f} "
            f"neg {m['val_mean_negative']:.3f} margin {m['val_margin']:.3f}")
