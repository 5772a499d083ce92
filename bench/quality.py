#!/usr/bin/env python
"""Model quality, end to end: prepare -> teacher -> student for one named configuration, then the student, the
zero-shot starting model and BM25 on val and test, with a paired t-test against zero-shot. One JSON row per
configuration is appended to --out (the schema of docs/results/quality.jsonl).

  python bench/quality.py default@42 default@43 default@44        # SciFact, the default commands, three seeds
  python bench/quality.py infonce_off recipe_original              # ablation rows (seed 42; they share one teacher)
  python bench/quality.py --dataset korquad default                # KorQuAD 1.0 dev (test pool)

Every stage is the real script's ``main`` called in this process with exactly the arguments recorded in the
row's ``command`` (run in the shell they give the same result). Stages are cached in --work by their arguments:
rows that share data or a teacher prepare/train it once. Test is reported, never used for choosing.

Retrieval: SciFact val = the prepared val queries, test = BEIR test qrels, both over the full 5,183-passage corpus;
KorQuAD (no corpus file) = each split's own passages (the pool). Metrics by ranx; each distinct text encoded once.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DATASETS = {
    "scifact": {"source": "../shared/data/scifact", "prepare": [], "model": "minilm-l6", "beir": True},
    "korquad": {"source": "../shared/data/korquad/KorQuAD_v1.0_dev.json",
                "prepare": ["--same_group_negatives", "allow", "--num_negatives", "3", "--random_negatives", "0"],
                "model": "multilingual-e5-small", "beir": False},
}

# name -> extra arguments per stage, on top of the default commands (student/teacher/prepare)
CONFIGS: dict[str, dict[str, list[str]]] = {
    "default": {},
    "recipe_original": {"student": ["--recipe", "original"]},
    "infonce_off": {"student": ["--infonce_weight", "0"]},
    "kl_off": {"student": ["--soft_weight", "0"]},
    # the labels-only baselines the default must beat by >= 0.02 (issue #25): our student with the teacher weighted 0,
    # and sentence-transformers' own trainer with MultipleNegativesRankingLoss (bench/st_baseline.py), no teacher
    "labels_only": {"student": ["--soft_weight", "0"]},
    "st_mnrl": {"st_mnrl": ["--epochs", "3", "--batch_size", "16", "--lr", "2e-5", "--max_len", "256"]},
    # teacher levers: the localised-contrastive (listwise) loss, a 12-layer base, longer training, dense negatives
    "teacher_listwise": {"teacher": ["--loss", "listwise"]},
    "teacher_e5": {"teacher": ["--model_name", "multilingual-e5-small"]},
    "teacher_epochs_6": {"teacher": ["--epochs", "6"]},
    "teacher_e5_listwise": {"teacher": ["--model_name", "multilingual-e5-small", "--loss", "listwise"]},
    "dense_negatives": {"prepare": ["--negatives", "model"]},
    "K_32": {"student": ["--K", "32"]},
    "K_64": {"student": ["--K", "64"]},
    "tau_2_squared": {"student": ["--tau", "2", "--kl_tau_squared"]},
    "kl_tau_squared": {"student": ["--kl_tau_squared"]},
    "margin_mse": {"student": ["--soft_loss", "margin_mse"]},
    "fusion_bm25": {"student": ["--teacher_fusion", "bm25=0.5"]},
    "fusion_bm25_student": {"student": ["--teacher_fusion", "bm25=0.5,student=0.5"]},
    "original_terms_on": {"student": ["--contrastive_weight", "0.3", "--negative_penalty_weight", "0.4"]},
    "model_negatives": {"student": ["--negative_source", "model"]},
    "tau_2": {"student": ["--tau", "2"]},
    "epochs_1": {"student": ["--epochs", "1"]},
    "epochs_6": {"student": ["--epochs", "6"]},
    "lr_5e-5": {"student": ["--lr", "5e-5"]},
    "K_8": {"student": ["--K", "8"]},
    "scale_50": {"student": ["--scale", "50"]},
    "scale_100": {"student": ["--scale", "100"]},
    "fusion_bm25_scale_100": {"student": ["--teacher_fusion", "bm25=0.5", "--scale", "100"]},
    "fusion_bm25_scale_50": {"student": ["--teacher_fusion", "bm25=0.5", "--scale", "50"]},
}
# issue #35's CPU-size rows. `cpu_v1` is the `--pipeline cpu` preset as it was measured until 2026-12-05 (its flags
# frozen here, so its rows keep their meaning; rows of it before 2026-12-07 were named `cpu_default`), `cpu_labels_only_v1`
# the same with the teacher weighted 0; each lever row adds its flags to them. The preset took the `pseudo` lever (725 pseudo-queries), then two epochs (`cpu_pseudo_e2`),
# then one scale per fused source (`cpu_run_norm`): what the monitor runs now (its settings asserted equal below);
# `cpu_labels_only_pseudo_e2` is the labels-only twin of both (with the teacher weighted 0 the norm changes nothing).
from crossdistill.data import sources
from crossdistill.monitor.pipeline import PRESETS as _PRESETS  # noqa: E402

_CPU_V1_STUDENT = ["--epochs", "1", "--max_len", "128", "--K", "4", "--val_pool", "csv", "--teacher_fusion",
                   "bm25=1,student=1", "--guard_k", "10", "--attention_dropout", "0"]
CONFIGS["cpu_v1"] = {"teacher": list(_PRESETS["cpu"]["teacher"]), "student": list(_CPU_V1_STUDENT)}
CONFIGS["cpu_labels_only_v1"] = {"teacher": list(_PRESETS["cpu"]["teacher"]),
                                 "student": [*_CPU_V1_STUDENT, "--soft_weight", "0"]}
# issue #35's lever "a dense member of the teacher": round one trains the student on the labels alone
# (cpu_labels_only_v1), round two distils a fresh student from the cross-encoder fused with BM25 and that student
CONFIGS["cpu_dense_member"] = {"teacher": CONFIGS["cpu_v1"]["teacher"], "dense_member": "cpu_labels_only_v1",
                               "student": [*_CPU_V1_STUDENT, "--teacher_fusion", "bm25=1,dense=1"]}
CONFIGS["cpu_K8_dense_member"] = {"teacher": CONFIGS["cpu_v1"]["teacher"], "dense_member": "cpu_labels_only_K8",
                                  "student": [*_CPU_V1_STUDENT, "--K", "8", "--teacher_fusion", "bm25=1,dense=1"]}
# issue #35's CPU levers, each beside its own labels-only twin (the teacher weighted 0 in the same preset)
for _name, _extra, _prep in (("K8", ["--K", "8"], []), ("K8_margin_mse", ["--K", "8", "--soft_loss", "margin_mse"], []),
                              ("dense", [], ["--negatives", "model"]), ("K8_dense", ["--K", "8"], ["--negatives", "model"]),
                              ("tau_05", ["--tau", "0.5"], []), ("tau_2", ["--tau", "2"], []),
                              ("pseudo", ["--pseudo_queries", "725"], []), ("bs8", ["--batch_size", "8"], [])):
    CONFIGS[f"cpu_{_name}"] = {"teacher": CONFIGS["cpu_v1"]["teacher"], "prepare": _prep,
                               "student": [*CONFIGS["cpu_v1"]["student"], *_extra]}
    CONFIGS[f"cpu_labels_only_{_name}"] = {"teacher": CONFIGS["cpu_v1"]["teacher"], "prepare": _prep,
                                          "student": [*CONFIGS["cpu_labels_only_v1"]["student"], *_extra]}
# issue #35's lever "a teacher that never argues with a label": the preset with --positives_first. Its labels-only
# twin is `cpu_labels_only_pseudo`: with --soft_weight 0 the soft labels never enter the loss, so it is the same run.
CONFIGS["cpu_pf"] = {"teacher": CONFIGS["cpu_v1"]["teacher"], "prepare": [],
                     "student": [*CONFIGS["cpu_pseudo"]["student"], "--positives_first"]}
# and two epochs for the student (its training doubled), beside its labels-only twin: the cpu preset since then
CONFIGS["cpu_pseudo_e2"] = {"teacher": CONFIGS["cpu_v1"]["teacher"], "prepare": [],
                            "student": [*CONFIGS["cpu_pseudo"]["student"], "--epochs", "2"]}
CONFIGS["cpu_labels_only_pseudo_e2"] = {"teacher": CONFIGS["cpu_v1"]["teacher"], "prepare": [],
                                        "student": [*CONFIGS["cpu_labels_only_pseudo"]["student"], "--epochs", "2"]}
# the dense member again, on the preset as it is now (two epochs): round one is the labels-only twin
# (cpu_labels_only_pseudo_e2), round two the preset with that student in place of the starting one in the teacher's
# fusion; its own twin is the round one row (a student trained on the labels alone, as long)
CONFIGS["cpu_dense_member_e2"] = {"teacher": CONFIGS["cpu_v1"]["teacher"], "prepare": [],
                                  "dense_member": "cpu_labels_only_pseudo_e2",
                                  "student": [*CONFIGS["cpu_pseudo_e2"]["student"], "--teacher_fusion", "bm25=1,dense=1"]}


# issue #35's fifth CPU session: the fused teacher's sources put on one scale per run instead of z-scored per list
# (--fusion_norm run): over K = 4 candidates a per-list z-score stretches any list to unit spread, so three agreeing
# sources make a one-hot label and a flat one adds noise at full scale. Its labels-only twin is
# cpu_labels_only_pseudo_e2 (with --soft_weight 0 the soft labels never enter the loss)
CONFIGS["cpu_run_norm"] = {"teacher": CONFIGS["cpu_v1"]["teacher"], "prepare": [],
                           "student": [*CONFIGS["cpu_pseudo_e2"]["student"], "--fusion_norm", "run"]}


def _student_settings(argv: list[str]):
    from crossdistill.distill.config import StudentConfig

    return StudentConfig.parse(["--teacher_path", "t", "--output_dir", "o", *argv], "")


# issue #49: `cpu_default` is always the `--pipeline cpu` preset as the monitor runs it now and `cpu_labels_only` its
# labels-only twin (the same commands, the teacher weighted 0), both asserted; each new recipe names its twin
CONFIGS["cpu_default"] = {"teacher": list(_PRESETS["cpu"]["teacher"]), "student": list(_PRESETS["cpu"]["student"]),
                          "twin": "cpu_labels_only"}
CONFIGS["cpu_labels_only"] = {"teacher": list(_PRESETS["cpu"]["teacher"]),
                              "student": [*_PRESETS["cpu"]["student"], "--soft_weight", "0"]}
assert _student_settings(CONFIGS["cpu_default"]["student"]) == _student_settings(_PRESETS["cpu"]["student"])
assert _student_settings(CONFIGS["cpu_labels_only"]["student"]) == \
    _student_settings([*_PRESETS["cpu"]["student"], "--soft_weight", "0"])
# issue #49: a teacher that knows more than the labels. nomic-embed-text-v1.5 (137 M, the offline alias) fine-tuned on
# the labels alone as a bi-encoder — its own contrastive stage (the student script, --soft_weight 0, no teacher), 256
# tokens, then frozen and shared by every seed (trained once, seed 42) — is the teacher; the student keeps the preset's
# own training (128 tokens, K 4, pseudo-queries, two epochs) and learns the teacher's scale x cosine instead of the
# fused cross-encoder. Each row's twin is the same student command with the teacher weighted 0.
NOMIC_TEACHER = list(_PRESETS["cpu_big"]["teacher"])  # the --pipeline cpu_big preset's teacher
_FUSED = ("--teacher_fusion", "--fusion_norm")
# the cpu preset's student as trained (both sides at 128 tokens, cpu_run_norm's settings), without the rotation it is
# published with since #48 (--pca_rotation: cpu_pca); the rows built on it keep their meaning
_Q128 = ["--epochs", "2", "--max_len", "128", "--K", "4", "--val_pool", "csv", "--teacher_fusion", "bm25=1,student=1",
         "--guard_k", "10", "--attention_dropout", "0", "--pseudo_queries", "725", "--fusion_norm", "run"]
assert _student_settings(_Q128) == _student_settings(CONFIGS["cpu_run_norm"]["student"])
_CPU_STUDENT = [a for i, a in enumerate(_Q128) if a not in _FUSED and (i == 0 or _Q128[i - 1] not in _FUSED)]
for _name, _extra in (("cpu_nomic", []), ("cpu_nomic_ib", ["--in_batch_kl_weight", "1"]),
                      ("cpu_nomic_K8_ib", ["--K", "8", "--in_batch_kl_weight", "1"]),
                      ("cpu_nomic_ib_t512", ["--in_batch_kl_weight", "1", "--teacher_max_len", "512"]),
                      ("cpu_nomic_ib_only", ["--in_batch_kl_weight", "1", "--soft_weight", "0"]),
                      # the teacher alone teaches (no InfoNCE on the labels), and the teacher labels 3x the
                      # pseudo-queries: more of what only the teacher can label
                      ("cpu_nomic_ib_kd", ["--in_batch_kl_weight", "1", "--infonce_weight", "0"]),
                      ("cpu_nomic_ib_pq3", ["--in_batch_kl_weight", "1", "--pseudo_queries", "2175"]),
                      # the student reading passages at the teacher's 256 tokens (queries at 64)
                      ("cpu_nomic_ib_p256", ["--in_batch_kl_weight", "1", "--query_max_len", "64",
                                             "--passage_max_len", "256"])):
    _twin = ("cpu_labels_only_e2_K8" if "--K" in _extra else
             "cpu_labels_only_p256" if "--passage_max_len" in _extra else "cpu_labels_only")
    CONFIGS[_name] = {"dense_teacher": NOMIC_TEACHER, "student": [*_CPU_STUDENT, *_extra], "twin": _twin}
assert _student_settings([*CONFIGS["cpu_nomic_ib_p256"]["student"], "--pca_rotation"]) == \
    _student_settings(_PRESETS["cpu_big"]["student"]), "cpu_nomic_ib_p256, rotated, must be the cpu_big preset's student"
CONFIGS["cpu_labels_only_e2_K8"] = {"teacher": list(_PRESETS["cpu"]["teacher"]),
                                    "student": [*_Q128, "--soft_weight", "0", "--K", "8"]}
# issue #48: the cpu preset trained for Matryoshka dimensions, and with queries cut at 64 tokens and passages at 256;
# the preset's own rows (cpu_default) record the same dimensions of its full-size student, cut without training
DIMS = (384, 256, 128, 64)
# (both on the preset as it was then, cpu_run_norm: 128 tokens a side). cpu_passage256 won on val; the cpu preset took
# it for one session (rows named cpu_default on 2026-12-07 at 64/256: none were run), then gave it to a preset of its
# own, `--pipeline cpu_long` (asserted below), because it takes 65 minutes on 2 cores where #49 allows the cpu preset 30
CONFIGS["cpu_matryoshka"] = {"teacher": list(_PRESETS["cpu"]["teacher"]), "twin": "cpu_run_norm",
                             "student": [*_Q128, "--matryoshka_dims", ",".join(map(str, DIMS))]}
# the same two published with a PCA rotation (--pca_rotation: the vectors turned onto the principal axes of the
# student's embeddings of the training passages; every cosine unchanged, so full size is the student's own)
# (these rows found the axes on the training passages alone, --pca_fit passages: the only fit before 2026-12-08)
CONFIGS["cpu_pca"] = {"teacher": list(_PRESETS["cpu"]["teacher"]), "twin": "cpu_run_norm",
                      "student": [*_Q128, "--pca_rotation", "--pca_fit", "passages"]}
CONFIGS["cpu_matryoshka_pca"] = {"teacher": list(_PRESETS["cpu"]["teacher"]), "twin": "cpu_run_norm",
                                 "student": [*CONFIGS["cpu_matryoshka"]["student"], "--pca_rotation", "--pca_fit",
                                             "passages"]}
# the Matryoshka prefixes taken on the starting student's principal axes (--matryoshka_pca_start: a fixed rotation
# before the first step, so the prefixes start with the most of each vector), published turned onto the kept one's
CONFIGS["cpu_matryoshka_pcastart"] = {"teacher": list(_PRESETS["cpu"]["teacher"]), "twin": "cpu_run_norm",
                                      "student": [*CONFIGS["cpu_matryoshka_pca"]["student"], "--matryoshka_pca_start"]}
# both rotations found on the training passages and queries, each side weighing the same (--pca_fit both, the default
# since 2026-12-08: on cpu_matryoshka_pcastart@42's own vectors the passages' axes served queries worst, val 64 dims
# 0.686 against 0.707; the fit is named, so a stage cached under the old default is never taken for it)
CONFIGS["cpu_matryoshka_pcastart_both"] = {
    "teacher": list(_PRESETS["cpu"]["teacher"]), "twin": "cpu_run_norm",
    "student": [*CONFIGS["cpu_matryoshka"]["student"], "--pca_rotation", "--matryoshka_pca_start", "--pca_fit", "both"]}
_P256 = ["--query_max_len", "64", "--passage_max_len", "256"]
CONFIGS["cpu_passage256"] = {"teacher": list(_PRESETS["cpu_long"]["teacher"]), "twin": "cpu_labels_only_p256",
                             "student": [*_Q128, *_P256]}
# the labels-only twin at those lengths (the teacher weighted 0): the twin of cpu_passage256 and of cpu_nomic_ib_p256
CONFIGS["cpu_labels_only_p256"] = {"teacher": list(_PRESETS["cpu_long"]["teacher"]),
                                   "student": [*_Q128, *_P256, "--soft_weight", "0"]}
# the presets publish their students rotated (--pca_rotation: every cosine, so every full-size number, unchanged); the
# cpu preset was cpu_pca from 2026-12-07 to 2026-12-08, and is since trained for Matryoshka dimensions on the starting
# student's axes (#48: cpu_matryoshka_pcastart won on val at seed 42, full size and every prefix)
assert _student_settings(CONFIGS["cpu_matryoshka_pcastart_both"]["student"]) == \
    _student_settings(_PRESETS["cpu"]["student"]), "cpu_matryoshka_pcastart_both must be the cpu preset"
assert _student_settings([*CONFIGS["cpu_passage256"]["student"], "--pca_rotation"]) == \
    _student_settings(_PRESETS["cpu_long"]["student"]), "cpu_passage256, rotated, must be the cpu_long preset"
assert CONFIGS["cpu_passage256"]["teacher"] == CONFIGS["cpu_default"]["teacher"]
METRICS = ("ndcg@10", "mrr@10", "recall@100")


def _load_script(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(Path(name).stem, ROOT / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _key(*parts) -> str:
    return hashlib.sha1(json.dumps(parts).encode()).hexdigest()[:10]


def _stage(script: str, argv: list[str], out: Path, commands: list[str], log) -> float:
    """Run ``script``'s main(argv) unless ``out`` already holds its finished result; returns seconds."""
    commands.append(shlex.join(["python", script, *argv]))
    done = out / ("prepare_config.json" if script == "prepare_data.py" else "done.json")
    if done.is_file():
        log(f"[cached] {commands[-1]}")
        return 0.0
    log(f"[run] {commands[-1]}")
    t0 = time.time()
    module = _load_script(script)
    if script.startswith("bench/"):  # a bench script's own argparse main reads sys.argv
        saved, sys.argv = sys.argv, [script, *argv]
        try:
            module.main()
        finally:
            sys.argv = saved
    else:
        module.main(argv)
    return time.time() - t0


# --------------------------------------------------------------------------- retrieval sets and metrics
def retrieval_sets(dataset: str, data_dir: Path, source: str) -> dict:
    """{"val"|"test": (queries {qid: text}, corpus {did: text}, qrels {qid: {did: 1}})}."""
    from crossdistill.data import versions as data

    out = {}
    if DATASETS[dataset]["beir"]:
        test = sources.load_beir(source, "test")
        corpus = test.corpus
        out["test"] = (test.queries, corpus, {q: {d: 1 for d in ds} for q, ds in test.qrels.items()})
        by_text = {t: d for d, t in corpus.items()}
        val_df = data.read_triplets(data_dir / "val.csv")
        queries, qrels = {}, {}
        for a, p in zip(val_df["anchor"], val_df["positive"]):
            q = queries.setdefault(a, f"v{len(queries)}")
            qrels.setdefault(q, {})[by_text[p]] = 1
        out["val"] = ({q: a for a, q in queries.items()}, corpus, qrels)
        return out
    for split in ("val", "test"):
        df = data.read_triplets(data_dir / f"{split}.csv")
        anchors = list(dict.fromkeys(df["anchor"]))
        passages = list(dict.fromkeys(list(df["positive"]) + list(df["negative"])))
        qid = {a: f"q{i}" for i, a in enumerate(anchors)}
        did = {p: f"d{i}" for i, p in enumerate(passages)}
        qrels: dict = {}
        for a, p in zip(df["anchor"], df["positive"]):
            qrels.setdefault(qid[a], {})[did[p]] = 1
        out[split] = ({qid[a]: a for a in anchors}, {did[p]: p for p in passages}, qrels)
    return out


def dense_runs(model_path: str, sets: dict, lengths: tuple[int, int], batch_size: int = 128,
               by_dim: dict | None = None) -> dict:
    """{split: run} of a bi-encoder, queries and passages cut at ``lengths`` (query, passage); each distinct passage
    (the splits may share a corpus) is encoded once. ``by_dim`` ({dim: {}}) is filled with {dim: {split: run}} of the
    same embeddings cut to their first ``dim`` dimensions and re-normalised (what ``truncate_dim`` serves)."""
    import numpy as np

    from crossdistill.evaluate.bi_encoder import cut, encode, load_bi_encoder
    from crossdistill.evaluate.metrics import top_k_run
    from crossdistill.models.resolve import resolve_model
    from crossdistill.models.sides import Side

    model, _ = load_bi_encoder(model_path, max(lengths))
    resolved = resolve_model(model_path)
    prompts = getattr(model, "prompts", None) or {}
    qs = Side(prompts.get("query", resolved.query_prefix), lengths[0])
    ps = Side(prompts.get("passage", resolved.passage_prefix), lengths[1])
    texts = list(dict.fromkeys(t for _, corpus, _ in sets.values() for t in corpus.values()))
    emb = encode(model, texts, ps, batch_size)
    row = {t: i for i, t in enumerate(texts)}
    runs = {}
    for split, (queries, corpus, _) in sets.items():
        qids, dids = list(queries), list(corpus)
        q = encode(model, [queries[x] for x in qids], qs, batch_size)
        p = emb[[row[corpus[d]] for d in dids]]
        runs[split] = top_k_run(qids, dids, (q @ p.T).astype(np.float32), 100)
        for dim, dim_runs in (by_dim or {}).items():
            dim_runs[split] = top_k_run(qids, dids, (cut(q, dim) @ cut(p, dim).T).astype(np.float32), 100)
    del model
    return runs


def trained_lengths(student_dir: Path) -> tuple[int, int]:
    """(query, passage) tokens a student was trained at (its distillation_config.json)."""
    c = json.loads((student_dir / "distillation_config.json").read_text())
    return c.get("query_max_len") or c["max_len"], c.get("passage_max_len") or c["max_len"]


def bm25_runs(sets: dict) -> dict:
    from crossdistill.evaluate.retrieval import bm25_run

    return {split: bm25_run(corpus, queries, 100) for split, (queries, corpus, _) in sets.items()}


def measure(runs: dict, sets: dict) -> dict:
    from crossdistill.evaluate.metrics import ranking_metrics

    return {split: {m: round(v, 4) for m, v in ranking_metrics(sets[split][2], run, METRICS).items()}
            for split, run in runs.items()}


def teacher_rerank(teacher: str, sets: dict, runs: dict, k: int = 30) -> dict:
    """nDCG@10 of the teacher(s) (any kind ``--teacher_path`` takes, through their caches) reranking each named run's
    test top-k: the diagnosis of issue #13."""
    from crossdistill.evaluate.metrics import ranking_metrics
    from crossdistill.evaluate.retrieval import rerank
    from crossdistill.teachers.ensemble import open_teachers

    queries, corpus, qrels = sets["test"]
    teachers = open_teachers(str(teacher))
    out = {}
    for name, run in runs.items():
        rr = rerank(teachers, run, queries=queries, corpus=corpus, k=k, batch_size=128)
        out[f"rerank_{name}_top{k}"] = {m: round(v, 4) for m, v in ranking_metrics(qrels, rr, METRICS).items()}
    return out


def fused_teacher_rerank(teacher: str, sets: dict, run: dict, weights: dict, base_model: str, lengths: tuple[int, int],
                         k: int = 30, fusion_model: str | None = None, norm: str = "list") -> dict:
    """The teacher exactly as the run fuses it for its soft labels (``--teacher_fusion``: z(teacher) + w·z(BM25) +
    w·z(starting student's cosine, each side at its length) + w·z(``--fusion_model``'s cosine, at the longer one),
    :func:`crossdistill.teachers.fusion.build_soft_labels`) reranking ``run``'s test top-k."""

    from crossdistill.evaluate.bi_encoder import encode, load_bi_encoder
    from crossdistill.evaluate.metrics import ranking_metrics
    from crossdistill.models.resolve import resolve_model
    from crossdistill.models.sides import Side
    from crossdistill.teachers.ensemble import open_teachers
    from crossdistill.teachers.fusion import build_soft_labels

    queries, corpus, qrels = sets["test"]
    qids = sorted(run)
    tops = [sorted(run[q], key=lambda d: (-run[q][d], d))[:k] for q in qids]
    per_query, _ = open_teachers(str(teacher)).logits([queries[q] for q in qids], [[corpus[d] for d in top]
                                                                                   for top in tops], batch_size=128)

    def cosines(path, q_len, p_len):
        model, _ = load_bi_encoder(path, max(q_len, p_len))
        resolved = resolve_model(path)
        prompts = getattr(model, "prompts", None) or {}
        texts = list(dict.fromkeys(d for top in tops for d in top))
        where = {d: i for i, d in enumerate(texts)}
        p = encode(model, [corpus[d] for d in texts], Side(prompts.get("passage", resolved.passage_prefix), p_len), 128)
        q = encode(model, [queries[x] for x in qids], Side(prompts.get("query", resolved.query_prefix), q_len), 128)
        return [p[[where[d] for d in top]] @ q[i] for i, top in enumerate(tops)]

    labels = build_soft_labels(per_query, [queries[q] for q in qids], [[corpus[d] for d in top] for top in tops], "logit",
                               weights, bm25_pool=list(corpus.values()),
                               student_cos=cosines(base_model, *lengths) if "student" in weights else None,
                               dense_cos=cosines(fusion_model, max(lengths), max(lengths)) if "dense" in weights
                               else None, norm=norm)
    reranked = {q: {d: float(s) for d, s in zip(top, lab)} for q, top, lab in zip(qids, tops, labels)}
    return {m: round(v, 4) for m, v in ranking_metrics(qrels, reranked, METRICS).items()}


def dense_teacher_metrics(teacher_dir: Path, sets: dict, work: Path) -> dict:
    """{split: metrics} of a bi-encoder teacher retrieving over each split's corpus by itself (its own length and
    precision, its embeddings from the toolkit's cache: each text encoded once across rows), computed once per teacher."""
    import numpy as np

    from crossdistill.evaluate.metrics import top_k_run
    from crossdistill.teachers.ensemble import open_teachers

    done = work / "teacher_runs" / f"{teacher_dir.name}.json"
    if done.is_file():
        return json.loads(done.read_text())
    (dense,) = open_teachers(str(teacher_dir)).members
    runs = {}
    for split, (queries, corpus, _) in sets.items():
        qids, dids = list(queries), list(corpus)
        scores = dense.matrix([queries[q] for q in qids], [corpus[d] for d in dids], batch_size=64)
        runs[split] = top_k_run(qids, dids, scores.astype(np.float32), 100)
    out = measure(runs, sets)
    done.parent.mkdir(parents=True, exist_ok=True)
    done.write_text(json.dumps(out))
    return out


def _rate(folder: Path) -> float | None:
    """samples/s of a training run's last logged step."""
    if not (folder / "events.jsonl").is_file():  # sentence-transformers' trainer writes no event log
        return None
    steps = [json.loads(line) for line in (folder / "events.jsonl").read_text().splitlines() if '"event": "step"' in line]
    return steps[-1].get("samples_per_s") if steps else None


def machine() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    except ImportError:
        pass
    return f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores"


# --------------------------------------------------------------------------- one row
TEACHER_SEED = 42  # a frozen dense teacher is trained once and shared by the rows' seeds


def run_config(a, name: str, seed: int, baselines: dict, log) -> dict:
    from crossdistill.evaluate.metrics import paired_comparison

    ds = DATASETS[a.dataset]
    cfg = CONFIGS[name]
    work = Path(a.work)
    t0 = time.time()
    commands: list[str] = []
    prep_args = ds["prepare"] + cfg.get("prepare", [])
    version = f"{a.dataset}_{_key(prep_args)}"
    data_root = work / "data"
    _stage("prepare_data.py", ["--source", ds["source"], "--data_version", version, "--data_root", str(data_root),
                               *prep_args], data_root / version, commands, log)
    common = ["--data_version", version, "--data_root", str(data_root), "--seed", str(seed)]
    teacher_dir = None
    if "st_mnrl" in cfg:  # sentence-transformers' trainer on the labels: no teacher
        st_args = [*common, *(["--model_name", ds["model"]] if a.dataset != "scifact" else []), *cfg["st_mnrl"], *a.st_args]
        student_dir = work / "st_mnrl" / f"{version}_{_key(st_args)}"
        t_teacher = 0.0
        t_student = _stage("bench/st_baseline.py", [*st_args, "--output_dir", str(student_dir)], student_dir, commands, log)
    elif "dense_teacher" in cfg:  # a bi-encoder trained on the labels alone (its own student run), frozen, shared by
        teacher_args = list(cfg["dense_teacher"])  # every seed: trained once, at TEACHER_SEED
        teacher_dir = work / "teachers" / f"{version}_{_key(teacher_args, TEACHER_SEED)}"
        t_teacher = _stage("train_distillation_pipeline.py", [*common[:-1], str(TEACHER_SEED), "--output_dir",
                                                              str(teacher_dir), *teacher_args], teacher_dir, commands, log)
    else:
        teacher_args = [*(["--model_name", ds["model"]] if a.dataset != "scifact" else []), *a.teacher_args,
                        *cfg.get("teacher", [])]
        teacher_dir = work / "teachers" / f"{version}_{_key(teacher_args, seed)}"
        t_teacher = _stage("train_teacher_model.py", [*common, "--output_dir", str(teacher_dir), *teacher_args],
                           teacher_dir, commands, log)
    if "st_mnrl" not in cfg:
        base_args = [*(["--student_name", ds["model"]] if a.dataset != "scifact" else []), *a.student_args]

        def student_stage(args):
            folder = work / "students" / f"{version}_{_key(teacher_args, args, seed)}"
            seconds = _stage("train_distillation_pipeline.py", [*common, "--teacher_path", str(teacher_dir), "--output_dir",
                                                               str(folder), *args], folder, commands, log)
            return folder, seconds

        t_member = 0.0
        if "dense_member" in cfg:  # a first round (the labels alone) whose student is the teacher's dense member
            member_dir, t_member = student_stage([*base_args, *CONFIGS[cfg["dense_member"]]["student"]])
            student_args = [*base_args, *cfg.get("student", []), "--fusion_model", str(member_dir)]
        else:
            student_args = [*base_args, *cfg.get("student", [])]
        student_dir, t_student = student_stage(student_args)
        t_student += t_member
    max_len = json.loads((student_dir / "distillation_config.json").read_text())["max_len"]
    lengths = trained_lengths(student_dir)
    sets = retrieval_sets(a.dataset, data_root / version, ds["source"])
    key = (version, max_len)
    if key not in baselines:
        log("baselines: zero-shot and BM25")
        baselines[key] = {"runs": {"zero_shot": dense_runs(ds["model"], sets, (max_len, max_len)),
                                   "bm25": bm25_runs(sets)}}
        baselines[key]["metrics"] = {n: measure(r, sets) for n, r in baselines[key]["runs"].items()}
    base = baselines[key]
    published = json.loads((student_dir / "distillation_config.json").read_text())
    trained_dims, rotated = published.get("matryoshka_dims") or [], bool(published.get("pca_rotation"))
    by_dim = {d: {} for d in (trained_dims or (DIMS if a.dataset == "scifact" else ()))}
    student_runs = dense_runs(str(student_dir), sets, lengths, by_dim=by_dim)
    metrics = {"student": measure(student_runs, sets), **base["metrics"]}
    test_q = sets["test"][2]
    row = {
        "name": name, "command": " && ".join(commands), "dataset": a.dataset, "default": name == "default" and not
        (a.student_args or a.teacher_args or a.st_args), "seed": seed,
        "test": {s: metrics[s]["test"] for s in ("student", "zero_shot", "bm25")},
        "val": {s: metrics[s]["val"] for s in ("student", "zero_shot", "bm25")},
        "p_value_vs_zero_shot": None, "wall_s": None, "machine": machine(), "twin": cfg.get("twin"),
    }
    if lengths[0] != lengths[1] or lengths[0] != max_len:
        row["lengths"] = {"query": lengths[0], "passage": lengths[1]}
    # nDCG@10 at each prefix dimension: "matryoshka" for a student trained at them, "rotated" for one published with a
    # PCA rotation only, "truncated" for one cut as it is (what training or rotating for the dimensions gains is the
    # difference), each split
    for split in ("val", "test"):
        row[split]["matryoshka" if trained_dims else "rotated" if rotated else "truncated"] = {
            str(d): round(measure({split: r[split]}, {split: sets[split]})[split]["ndcg@10"], 4) for d, r in by_dim.items()}
    cmp = paired_comparison(test_q, base["runs"]["zero_shot"]["test"], student_runs["test"], "ndcg@10")
    # NaN (the student published unchanged: every difference is 0) is written as null, valid JSON
    row["p_value_vs_zero_shot"] = None if math.isnan(cmp["p_value"]) else round(cmp["p_value"], 5)
    row["wins_ties_losses_vs_zero_shot"] = [cmp["wins"], cmp["ties"], cmp["losses"]]
    smetrics = json.loads((student_dir / "metrics.json").read_text())
    row["student_training"] = {"seconds": round(t_student, 1), "queries_per_s": _rate(student_dir),
                               "kept_epoch": smetrics.get("best_epoch"), "val_pool": smetrics.get("val_pool"),
                               "guard": smetrics.get("guard"), "peak_gpu_memory_gib": smetrics.get("peak_gpu_memory_gib"),
                               "val_history_mrr@10": [round(h["val_mrr@10"], 4) for h in smetrics.get("history", [])]}
    runs_dir = work / "runs"  # the student's test run, for paired comparisons between rows (--compare)
    runs_dir.mkdir(parents=True, exist_ok=True)
    row["test_run"] = str(runs_dir / f"{student_dir.name}.json")
    Path(row["test_run"]).write_text(json.dumps({"qrels": test_q, "run": student_runs["test"]}))
    if teacher_dir is None:
        row["wall_s"] = round(time.time() - t0, 1)
        return row
    tmetrics = json.loads((teacher_dir / "metrics.json").read_text())
    row["teacher_training"] = {"seconds": round(t_teacher, 1), "pairs_per_s": _rate(teacher_dir),
                               "peak_gpu_memory_gib": tmetrics.get("peak_gpu_memory_gib")}
    # the teacher reranking its own student's test top-30: is the teacher still ahead of its pupil? (issue #25)
    own = teacher_rerank(teacher_dir, sets, {"student": student_runs["test"]})["rerank_student_top30"]
    row["test"]["teacher_rerank_student"] = {m: own[m] for m in ("ndcg@10", "mrr@10")}
    from crossdistill.teachers.fusion import parse_fusion

    settings = _student_settings(student_args)  # the run's own settings, its defaults included
    fusion = parse_fusion(settings.teacher_fusion)
    if fusion:  # the teacher the student learned from is the fused one: that is the one that must stay ahead (#35)
        fused = fused_teacher_rerank(teacher_dir, sets, student_runs["test"], fusion, ds["model"], lengths,
                                     fusion_model=settings.fusion_model, norm=settings.fusion_norm)
        row["test"]["teacher_alone_rerank_student"] = row["test"]["teacher_rerank_student"]
        row["test"]["teacher_rerank_student"] = {m: fused[m] for m in ("ndcg@10", "mrr@10")}
    if "dense_teacher" in cfg:  # the frozen bi-encoder teacher as a retriever of its own, over the same corpus
        row["teacher_seed"] = TEACHER_SEED
        row["teacher_alone"] = dense_teacher_metrics(teacher_dir, sets, work)
    if a.teacher_rerank and a.dataset == "scifact":
        tr_file = teacher_dir / "rerank_test.json"
        if not tr_file.is_file():
            tr = teacher_rerank(teacher_dir, sets, {"bm25": base["runs"]["bm25"]["test"],
                                                    "zero_shot": base["runs"]["zero_shot"]["test"]})
            tr_file.write_text(json.dumps(tr))
        row["teacher_test"] = json.loads(tr_file.read_text())
    row["wall_s"] = round(time.time() - t0, 1)
    return row


def _finite(x) -> float | None:
    return float(x) if math.isfinite(x) else None  # identical per-query values: no test, written as null


def compare(rows: list[dict], dataset: str, system: str, baselines: list[str], metric: str = "ndcg@10") -> dict:
    """``system`` against each baseline over the rows of ``dataset``: mean and sd of test ``metric`` over seeds, and a
    paired t-test over the queries of the per-query metric averaged over each row's seeds (issue #25's criterion)."""
    import numpy as np
    from scipy.stats import ttest_rel

    from crossdistill.evaluate.metrics import per_query_metric

    def per_query(name):
        chosen = [r for r in rows if r["dataset"] == dataset and r["name"] == name and r.get("test_run")]
        if not chosen:
            return None, []
        runs = [json.loads(Path(r["test_run"]).read_text()) for r in chosen]
        values = [per_query_metric(x["qrels"], x["run"], metric) for x in runs]
        queries = sorted(values[0])
        return np.mean([[v[q] for q in queries] for v in values], axis=0), [r["test"]["student"][metric] for r in chosen]

    mine, mine_seeds = per_query(system)
    out = {"dataset": dataset, "metric": metric, system: {"mean": float(np.mean(mine_seeds)), "sd": float(np.std(mine_seeds)),
                                                          "seeds": len(mine_seeds)} if mine_seeds else None}
    for b in baselines:
        theirs, their_seeds = per_query(b)
        if mine is None or theirs is None:
            out[b] = None
            continue
        out[b] = {"mean": float(np.mean(their_seeds)), "sd": float(np.std(their_seeds)), "seeds": len(their_seeds),
                  "delta": float(np.mean(mine_seeds) - np.mean(their_seeds)),
                  "p_value": _finite(ttest_rel(mine, theirs).pvalue)}
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=sorted(DATASETS), default="scifact")
    p.add_argument("jobs", nargs="*", default=["default"],
                   help=f"CONFIG[@SEED] rows to run in order (seed of teacher and student, default 42); configs: {', '.join(CONFIGS)}")
    p.add_argument("--teacher_args", default="", help="extra teacher flags for every row (then no row counts as default)")
    p.add_argument("--student_args", default="", help="extra student flags for every row (then no row counts as default)")
    p.add_argument("--st_args", default="", help="extra bench/st_baseline.py flags for st_mnrl rows (then no row counts as default)")
    p.add_argument("--work", default="bench/results/quality", help="stage outputs, cached by their arguments")
    p.add_argument("--out", default="bench/results/quality.jsonl", help="JSON rows are appended here")
    p.add_argument("--no_teacher_rerank", dest="teacher_rerank", action="store_false",
                   help="skip the teacher reranking BM25's and zero-shot's test top-30")
    p.add_argument("--deadline_s", type=float, default=None, help="start no new row after this many seconds")
    p.add_argument("--compare", nargs="+", default=None, metavar="NAME",
                   help="run nothing: compare the rows of --out named NAME[0] against each other NAME (mean over seeds, "
                        "paired t-test over queries), e.g. --compare default labels_only st_mnrl")
    from crossdistill.core.cli import join_passthrough

    a = p.parse_args(join_passthrough(sys.argv[1:], ("--teacher_args", "--student_args", "--st_args")))
    a.teacher_args, a.student_args, a.st_args = shlex.split(a.teacher_args), shlex.split(a.student_args), shlex.split(a.st_args)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.chdir(ROOT)
    if a.compare:
        rows = [json.loads(x) for x in Path(a.out).read_text(encoding="utf-8").splitlines() if x.strip()]
        print(json.dumps(compare(rows, a.dataset, a.compare[0], a.compare[1:]), indent=1))
        return
    t_start = time.time()
    baselines: dict = {}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    jobs = []
    for job in a.jobs:
        name, _, seed = job.partition("@")
        if (name not in CONFIGS and name != "best") or (seed and not seed.isdigit()):
            p.error(f"job {job!r}: use CONFIG[@SEED] with CONFIG 'best' or one of {', '.join(CONFIGS)}")
        jobs.append((name, int(seed or 42)))
    done_rows: list[dict] = []
    for name, seed in jobs:
        if a.deadline_s and time.time() - t_start > a.deadline_s:
            print(f"deadline: skipping {name} seed {seed}", flush=True)
            continue
        if name == "best":  # the configuration with the best val nDCG@10 so far (test is never read here)
            name = max(done_rows, key=lambda r: r["val"]["student"]["ndcg@10"])["name"] if done_rows else "default"
            print(f"best on val so far: {name}", flush=True)
            if (name, seed) in [(r["name"], r["seed"]) for r in done_rows]:
                continue
        try:
            row = run_config(a, name, seed, baselines, lambda m: print(m, flush=True))
        except Exception:  # noqa: BLE001 - one failed row must not lose the others; its traceback is printed
            import traceback

            traceback.print_exc()
            print(f"== {name} seed {seed}: FAILED", flush=True)
            continue
        done_rows.append(row)
        with open(out, "a", encoding="utf-8") as f:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
        t, v = row["test"], row["val"]
        print(f"== {name} seed {seed}: test nDCG@10 student {t['student']['ndcg@10']:.4f} zero-shot "
              f"{t['zero_shot']['ndcg@10']:.4f} bm25 {t['bm25']['ndcg@10']:.4f} (p {row['p_value_vs_zero_shot']}) | "
              f"val {v['student']['ndcg@10']:.4f} / {v['zero_shot']['ndcg@10']:.4f} | {row['wall_s']} s", flush=True)


if __name__ == "__main__":
    main()
