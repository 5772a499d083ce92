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

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import data, hooks
from .candidates import CandidateList, build_candidates
from .checkpoint import load_trainable, resume_point
from .config import StudentConfig
from .engine import (Loop, Stage, best_weights, check_resume_settings, fresh_state, publish_run, resume_state, total_steps,
                     train_epochs)
from .errors import UsageError
from .export import export_student, missing_packages, parse_formats
from .fsutil import EventLog, claimed_output, lock_run, refuse_overlap, releases_run_lock, write_json
from .fusion import build_soft_labels, parse_fusion
from .model_card import student_card
from .models import ResolvedModel, check_prefixes, resolve_model, similarity_scale
from .recipes import LossSettings
from .score_cache import default_cache_path
from .student import BiEncoderStudent
from .student_step import train_step
from .teacher_scores import (SCORES_FILE, Teachers, list_logits, lists_from_scores, open_teachers, read_scores_file,
                             scores_fingerprint)
from .training import linear_schedule, make_accelerator, make_optimizer, peak_memory, seed_everything
from .validation import evaluate_student, student_similarities, teacher_guard, val_pool_passages


# --------------------------------------------------------------------------- inputs
@dataclass
class StudentInputs:
    """Every input of a student run, read and checked before anything is written (:func:`read_inputs`)."""

    cfg: StudentConfig            # with the run's resolved values (scale, score cache)
    teachers: Teachers | None     # the teacher model(s), checked and fingerprinted; None: scores from a file
    scores: list | None           # the scores file's records (no teacher model)
    scores_path: str | None
    teacher_fingerprint: str      # hashed once per run (the teachers', or the scores file's)
    student: ResolvedModel
    train: pd.DataFrame
    val: pd.DataFrame
    corpus: list[str] | None      # the val pool's corpus (None: the val CSV's passages)
    pool_info: dict


def _teacher_source(cfg: StudentConfig) -> tuple[Teachers | None, list | None, str | None, str]:
    """(teachers, score records, scores file, fingerprint): the teacher models named by --teacher_path, else the scores
    of --teacher_scores or of the data version's own teacher_scores.jsonl; neither: refused."""
    if cfg.teacher_path:
        teachers = open_teachers(cfg.teacher_path, cfg.teacher_weights)
        return teachers, None, None, teachers.fingerprint
    path = cfg.teacher_scores or str(Path(cfg.data_root) / cfg.data_version / SCORES_FILE)
    if not cfg.teacher_scores and not Path(path).is_file():
        raise UsageError(f"no teacher: pass --teacher_path (a cross-encoder folder or hub id), or --teacher_scores FILE "
                         f"(teacher scores in FlagEmbedding's JSONL layout); data version {cfg.data_version} carries no "
                         f"{SCORES_FILE} of its own")
    return None, read_scores_file(path), path, scores_fingerprint(path)


def read_inputs(cfg: StudentConfig) -> StudentInputs:
    """Check and read every input of the run: nothing is written, nothing moved."""
    teachers, scores, scores_path, fingerprint = _teacher_source(cfg)
    student = resolve_model(cfg.student_name, cfg.query_prefix, cfg.passage_prefix)
    dense = resolve_model(cfg.fusion_model) if cfg.fusion_model else None  # a missing fusion model is refused now
    paths = teachers.paths if teachers else []
    refuse_overlap(cfg.output_dir, "--output_dir", {
        **{"--teacher_path" + (f" #{i + 1}" if len(paths) > 1 else ""): p for i, p in enumerate(paths)},
        "--teacher_scores": scores_path,
        "--fusion_model": dense.path if dense and dense.is_local else None,
        "--student_name": student.path if student.is_local else None})
    train = data.subsample(data.read_triplets(data.data_file(cfg.data_version, "train", cfg.data_root)), cfg.max_samples,
                           cfg.seed)
    val = data.subsample(data.read_triplets(data.data_file(cfg.data_version, "val", cfg.data_root)), cfg.max_val_samples,
                         cfg.seed)
    corpus, pool_info = val_pool_passages(cfg.data_root, cfg.data_version, cfg.val_pool)
    if parse_formats(cfg.export) and missing_packages():  # refused now, not after the training
        raise UsageError(f"--export {cfg.export} needs {' and '.join(missing_packages())}: pip install onnx onnxruntime "
                         "(or leave --export out)")
    one_teacher = teachers is not None and len(teachers.specs) == 1
    cfg = replace(cfg,  # the run's resolved settings (a new config; the one given is never changed)
                  score_cache=cfg.score_cache or (str(default_cache_path(fingerprint)) if one_teacher else None),
                  scale=cfg.scale if cfg.scale is not None else similarity_scale(student))
    return StudentInputs(cfg, teachers, scores, scores_path, fingerprint, student, train, val, corpus, pool_info)


# --------------------------------------------------------------------------- setup
@dataclass
class DistillData:
    """Everything the loop reads, built once by :func:`prepare_run`: candidate lists, soft labels, val pool."""

    lists: list[CandidateList]
    soft_labels: list[torch.Tensor]   # per list: (K,) the teacher's scores (prob or logit), or their fusion
    val: data.TripletPool
    stats: dict


def prepare_run(inputs: StudentInputs, log, device=None, student: BiEncoderStudent | None = None,
                events=None) -> DistillData:
    """Candidate lists, their soft labels (teacher scores, cached; fused with other rankers when asked), the val pool."""
    cfg = inputs.cfg
    val = data.TripletPool.from_df(inputs.val, inputs.corpus)
    pool = {**inputs.pool_info, "queries": len(val.queries), "passages": len(val.passages)}
    log(f"val pool (--val_pool {cfg.val_pool}): {pool['queries']} queries ranked against {pool['passages']} passages "
        + (f"(the corpus {pool['source']})" if pool["kind"] == "corpus" else "(the val CSV's own)"))
    phase = events.log if events is not None else (lambda *a, **k: None)
    if inputs.scores is not None:  # the teacher's judgement from a file: its scored passages are the lists
        lists, per_list_logits, cstats = lists_from_scores(inputs.scores, list(dict.fromkeys(inputs.train["anchor"])), cfg.K)
        tstats = {"source": "scores file", "file": str(inputs.scores_path)}
        log(f"teacher scores from {inputs.scores_path}: {cstats['queries']} training queries x up to K={cfg.K} scored "
            f"passages ({cstats['train_queries_without_scores']} training queries without a record are left out, "
            f"{cstats['records_not_in_train']} records of other queries unused); loss recipe {cfg.recipe}, similarity "
            f"scale {cfg.scale:g}")
    else:
        phase("phase", phase="candidates", detail=f"building {cfg.K} candidates per query ({cfg.negative_source} mining)")
        lists, cstats = build_candidates(inputs.train, cfg.K, cfg.negative_source, cfg.seed, cfg.mining_model)
        log(f"candidates: {cstats['queries']} queries x K={cfg.K} ({cstats['short_lists']} with fewer than K, "
            f"{cstats['mined_negatives']} mined {cfg.negative_source} negatives); loss recipe {cfg.recipe}, "
            f"similarity scale {cfg.scale:g}; teacher {inputs.teachers.describe()}")
        per_list_logits, tstats = list_logits(inputs.teachers, [c.query for c in lists], [c.passages for c in lists],
                                              cfg.score_cache, cfg.eval_batch_size, device=device, log=log,
                                              on_progress=lambda done, total: phase("phase", phase="teacher_scoring",
                                                                                    done=done, total=total))
    if student is not None:  # every text the steps will encode, tokenised once
        student.pretokenize([student.query_prefix + c.query for c in lists] +
                            [student.passage_prefix + p for c in lists for p in c.passages])
    weights = parse_fusion(cfg.teacher_fusion)
    soft = build_soft_labels(
        per_list_logits, [c.query for c in lists], [c.passages for c in lists], cfg.soft_labels, weights,
        bm25_pool=inputs.corpus or list(dict.fromkeys([*inputs.train["positive"], *inputs.train["negative"]])),
        student_cos=_student_list_scores(student, lists, cfg.eval_batch_size) if "student" in weights else None,
        dense_cos=fusion_model_scores(cfg, [c.query for c in lists], [c.passages for c in lists], device)
        if "dense" in weights else None)
    if weights:
        log(f"soft labels: teacher fused with {', '.join(f'{k} x{v:g}' for k, v in weights.items())} (per-query z-scores)")
    if cfg.positive_definition == "teacher":
        for c, lo in zip(lists, per_list_logits):
            c.positive = [bool(x > 0.5) for x in torch.sigmoid(torch.from_numpy(np.asarray(lo, dtype=np.float32)))]
    return DistillData(lists, [torch.from_numpy(s) for s in soft], val,
                       {"candidates": cstats, "teacher_scores": tstats, "val_pool": pool})


def _student_list_scores(student: BiEncoderStudent, lists: list[CandidateList], batch_size: int) -> list[np.ndarray]:
    """The starting student's cosine of each query with each of its candidates (each text encoded once)."""
    return list_cosines(student, [c.query for c in lists], [c.passages for c in lists], batch_size)


def list_cosines(model: BiEncoderStudent, queries: list[str], lists: list[list[str]], batch_size: int) -> list[np.ndarray]:
    """A bi-encoder's cosine of each query with each passage of its list (each distinct text encoded once)."""
    passages = list(dict.fromkeys(p for ps in lists for p in ps))
    where = {p: i for i, p in enumerate(passages)}
    cos = student_similarities(model, queries, passages, batch_size)
    return [cos[i, [where[p] for p in ps]] for i, ps in enumerate(lists)]


def fusion_model_scores(cfg: StudentConfig, queries: list[str], lists: list[list[str]], device=None) -> list[np.ndarray]:
    """The ``--fusion_model``'s cosines over the lists (the ``dense`` fusion source), at the student's --max_len."""
    model = BiEncoderStudent.load(resolve_model(cfg.fusion_model), cfg.max_len, device=str(device) if device else None)
    try:
        return list_cosines(model, queries, lists, cfg.eval_batch_size)
    finally:
        del model


def run_settings(inputs: StudentInputs) -> dict:
    """What a checkpoint records of the run, and a resume must match: the settings, the data and the teacher."""
    train_file = data.data_file(inputs.cfg.data_version, "train", inputs.cfg.data_root)
    fp = data.version_fingerprint(inputs.cfg.data_root, inputs.cfg.data_version)
    return {**inputs.cfg.to_dict(), "train_data_sha256": hashlib.sha256(train_file.read_bytes()).hexdigest(),
            "val_data_sha256": fp.get("val.csv"), "corpus_sha256": fp.get("corpus.jsonl"),
            "teacher_fingerprint": inputs.teacher_fingerprint}


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


# --------------------------------------------------------------------------- publishing
def publish_student(loop: Loop, state: dict, cfg: StudentConfig, inputs: StudentInputs, run: DistillData, lora_cfg) -> None:
    """The best model (possibly the starting one) or, with ``--keep last``, the last epoch's, with its model card,
    settings (the resolved ones included) and metrics; ``done.json`` last."""
    model = loop.unwrapped
    if cfg.keep == "best":
        best = best_weights(loop)  # read on every process (a shared folder): each publishes, or waits, with the same
        load_trainable(model, best["trainable"])
        kept_epoch = best["info"]["epoch"]
    else:
        kept_epoch = state["history"][-1]["epoch"]
    start, kept_row = state["history"][0], state["history"][kept_epoch]
    summary = {**peak_memory(), "kept": cfg.keep, "best_epoch": kept_epoch, "history": state["history"],
               "guard": state["guard"], "val_delta": {k: kept_row[k] - start[k] for k in start if k.startswith("val_")},
               "steps": state["step"], "micro_batch_size": state["micro_batch_size"], **run.stats}
    resolved = {"scale": cfg.scale, "query_prefix": model.query_prefix, "passage_prefix": model.passage_prefix,
                "score_cache": cfg.score_cache, "val_pool": run.stats["val_pool"],
                "data_source": _data_source(cfg), "teacher_fingerprint": inputs.teacher_fingerprint}

    def write(staging: Path) -> None:
        model.save(staging)
        write_json(staging / "training_args.json", {**cfg.to_dict(), "resolved": resolved})
        write_json(staging / "metrics.json", summary)
        (staging / "README.md").write_text(student_card(cfg, summary, cfg.student_name, _teacher_words(inputs)),
                                           encoding="utf-8")
        export_student(staging, parse_formats(cfg.export), log=loop.log)  # --export: ONNX beside, named in the card
        write_json(staging / "distillation_config.json", {
            "teacher_path": cfg.teacher_path, "teacher_base_model":
                inputs.teachers.specs[0].base_model if inputs.teachers else None, "teacher_scores": inputs.scores_path,
            "student_name": cfg.student_name, "query_prefix": model.query_prefix, "passage_prefix": model.passage_prefix,
            "max_len": cfg.max_len, "scale": cfg.scale, "data_version": cfg.data_version, "data_root": cfg.data_root,
            "data_fingerprint": data.version_fingerprint(cfg.data_root, cfg.data_version),
            "use_lora": bool(cfg.use_lora), **({"lora_r": cfg.lora_r, "lora_alpha": cfg.lora_alpha,
                                                 "lora_dropout": cfg.lora_dropout,
                                                 "target_modules": sorted(lora_cfg.target_modules)} if lora_cfg else {})})

    publish_run(loop, Path(cfg.output_dir), write, done={"stage": "student", "best_epoch": kept_epoch, **kept_row,
                                                         "val_delta": summary["val_delta"]},
                end_event={"best_epoch": kept_epoch, **{f"delta_{k}": v for k, v in summary["val_delta"].items()}})
    loop.log(f"saved student to {cfg.output_dir} ({cfg.keep} epoch {kept_epoch}; val MRR@10 "
             f"{start['val_mrr@10']:.4f} -> {kept_row['val_mrr@10']:.4f})")


def _teacher_words(inputs: StudentInputs) -> str:
    if inputs.teachers is None:
        return f"the teacher scores of `{inputs.scores_path}` (no teacher model)"
    return ", ".join(f"`{n}` ({s.kind} cross-encoder{f', weight {w:g}' if len(inputs.teachers.specs) > 1 else ''})"
                     for n, s, w in zip(inputs.teachers.names, inputs.teachers.specs, inputs.teachers.weights))


def _data_source(cfg) -> str | None:
    """The absolute path of the source the data version was prepared from (its prepare_config.json), if recorded."""
    import json

    try:
        return json.loads((Path(cfg.data_root) / cfg.data_version / "prepare_config.json").read_text()).get("source")
    except (OSError, ValueError, AttributeError):
        return None


def _fmt(m: dict) -> str:
    return (f"val MRR@10 {m['val_mrr@10']:.4f} nDCG@10 {m['val_ndcg@10']:.4f} | mean pos {m['val_mean_positive']:.3f} "
            f"neg {m['val_mean_negative']:.3f} margin {m['val_margin']:.3f}")
