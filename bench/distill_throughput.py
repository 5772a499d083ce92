#!/usr/bin/env python
"""One distillation epoch, ours vs sentence-transformers' own trainer with DistillKLDivLoss, in the same run.

Same candidate lists, teacher scores, student model, batch size (queries per step) and max length for both.
Reports samples/s (queries per second) of each, the ratio, epoch 1 (teacher scores computed, cold cache) vs
epoch 2 (cache) for ours, and achieved model FLOP/s as a fraction of a measured fp32 matmul.

  pip install -r requirements-bench.txt
  python bench/distill_throughput.py --teacher models/teacher --data_version scifact --queries 48 --K 8 --repeats 3
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from crossdistill.core.training import (  # noqa: E402
    epoch_order,  # noqa: E402
    linear_schedule,
    make_optimizer,
    seed_everything,
)
from crossdistill.data import versions as data  # noqa: E402
from crossdistill.data.candidates import build_candidates  # noqa: E402
from crossdistill.distill.batch import collate  # noqa: E402
from crossdistill.distill.inputs import DistillData
from crossdistill.distill.recipes import loss_settings  # noqa: E402
from crossdistill.distill.step import forward_backward  # noqa: E402
from crossdistill.models.resolve import resolve_model  # noqa: E402
from crossdistill.models.student import BiEncoderStudent  # noqa: E402
from crossdistill.teachers.ensemble import open_teachers  # noqa: E402


def matmul_flops(n=2048, reps=10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n ** 3 * reps / (time.perf_counter() - t0)


def non_embedding_params(model) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if "embeddings" not in n)


def tokens_of(tokenizer, texts, max_len) -> int:
    return sum(min(len(ids), max_len) for ids in tokenizer(texts, add_special_tokens=True)["input_ids"])


def ours_epoch(lists, teacher, args, epoch: int) -> tuple[float, int]:
    seed_everything(args.seed)
    cuda = torch.cuda.is_available()  # ours and theirs on the same device, bf16 on a GPU
    student = BiEncoderStudent.load(resolve_model(args.student), args.max_len, device="cuda" if cuda else "cpu")
    student.train()
    opt = make_optimizer(student, 2e-5, None, ())
    sched = linear_schedule(opt, len(lists) // args.batch_size + 1, 0.1)
    from accelerate import Accelerator

    acc = Accelerator(cpu=not cuda, mixed_precision="bf16" if cuda else "no")
    run = DistillData(lists, teacher, None, {})
    ns = loss_settings("original")
    order = epoch_order(len(lists), args.seed, epoch)
    texts = 0
    t0 = time.perf_counter()
    for s in range(0, len(order), args.batch_size):
        idx = order[s:s + args.batch_size]
        batch = collate([run.lists[i] for i in idx], [run.soft_labels[i] for i in idx], student.query_prefix,
                        student.passage_prefix)
        forward_backward(student, batch, ns, None, 1, acc)
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        texts += batch.n_texts
    return time.perf_counter() - t0, texts


def st_epoch(lists, teacher, args) -> float:
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
    from sentence_transformers.sentence_transformer.losses import DistillKLDivLoss
    from sentence_transformers.sentence_transformer.training_args import SentenceTransformerTrainingArguments
    from sentence_transformers.util import pairwise_cos_sim

    seed_everything(args.seed)
    K = args.K
    full = [i for i, c in enumerate(lists) if len(c.passages) == K]
    cols = {"query": [lists[i].query for i in full]}
    for k in range(K):
        cols[f"passage_{k}"] = [lists[i].passages[k] for i in full]
    cols["label"] = [teacher[i].tolist() for i in full]
    ds = Dataset.from_dict(cols)
    cuda = torch.cuda.is_available()
    model = SentenceTransformer(resolve_model(args.student).path, device="cuda" if cuda else "cpu")
    model.max_seq_length = args.max_len
    loss = DistillKLDivLoss(model, similarity_fct=pairwise_cos_sim, temperature=0.2)
    with tempfile.TemporaryDirectory() as tmp:
        targs = SentenceTransformerTrainingArguments(output_dir=tmp, num_train_epochs=1, per_device_train_batch_size=args.batch_size,
                                                     learning_rate=2e-5, warmup_ratio=0.1, save_strategy="no", report_to="none",
                                                     logging_steps=1000, seed=args.seed, use_cpu=not cuda, bf16=cuda,
                                                     dataloader_drop_last=False)
        trainer = SentenceTransformerTrainer(model=model, args=targs, train_dataset=ds, loss=loss)
        t0 = time.perf_counter()
        trainer.train()
        return time.perf_counter() - t0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--teacher", required=True)
    p.add_argument("--data_version", default="scifact")
    p.add_argument("--data_root", default="preprocessed")
    p.add_argument("--student", default="minilm-l6")
    p.add_argument("--queries", type=int, default=48)
    p.add_argument("--K", type=int, default=8)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--max_len", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--out", default="bench/results/distill_throughput.json")
    args = p.parse_args()
    torch.set_num_threads(torch.get_num_threads())

    df = data.read_triplets(data.data_file(args.data_version, "train", args.data_root))
    keep = list(dict.fromkeys(df["anchor"]))[:args.queries]
    df = df[df["anchor"].isin(keep)].reset_index(drop=True)
    lists, _ = build_candidates(df, args.K, "bm25", args.seed)
    pairs = [(c.query, p) for c in lists for p in c.passages]

    with tempfile.TemporaryDirectory() as tmp:  # a cold cache: epoch 1 pays for the teacher once
        t0 = time.perf_counter()
        logits, tstats = open_teachers(args.teacher, score_cache=str(Path(tmp) / "c.sqlite")).members[0].score(
            pairs, log=lambda *_: None)
        teacher_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        open_teachers(args.teacher, score_cache=str(Path(tmp) / "c.sqlite")).members[0].score(pairs, log=lambda *_: None)
        cache_s = time.perf_counter() - t0
    probs = torch.sigmoid(torch.from_numpy(logits))
    teacher, i = [], 0
    for c in lists:
        teacher.append(probs[i:i + len(c.passages)].clone())
        i += len(c.passages)

    peak = matmul_flops()
    ours, st = [], []
    for r in range(args.repeats):  # interleaved so that machine noise hits both alike
        secs, texts = ours_epoch(lists, teacher, args, epoch=1)
        ours.append(secs)
        st.append(st_epoch(lists, teacher, args))
        print(f"repeat {r + 1}: ours {secs:.1f}s, sentence-transformers {st[-1]:.1f}s", flush=True)
    tok = resolve_model(args.student)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tok.path)
    all_texts = [c.query for c in lists] + [p for c in lists for p in c.passages]
    tokens = tokens_of(tokenizer, all_texts, args.max_len)
    from transformers import AutoModel

    params = non_embedding_params(AutoModel.from_pretrained(tok.path))
    m_ours, m_st = statistics.median(ours), statistics.median(st)
    res = {
        "setup": {"queries": len(lists), "K": args.K, "batch_size": args.batch_size, "max_len": args.max_len,
                  "student": args.student, "repeats": args.repeats, "threads": torch.get_num_threads()},
        "ours_epoch_s": ours, "st_epoch_s": st,
        "ours_samples_per_s": len(lists) / m_ours, "st_samples_per_s": len(lists) / m_st, "ratio_ours_over_st": m_st / m_ours,
        "epoch1_ours_s_with_teacher_scoring": m_ours + teacher_s, "epoch2_ours_s_from_cache": m_ours + cache_s,
        "teacher_scoring_s": teacher_s, "cache_read_s": cache_s, "teacher_pairs": tstats["distinct_pairs"],
        "matmul_fp32_flops": peak,
        "ours_model_flops_per_s": 6 * params * tokens / m_ours, "ours_fraction_of_matmul": 6 * params * tokens / m_ours / peak,
        "note": "model FLOPs = 6 x non-embedding parameters x tokens of every text (ST encodes all K+1 columns; "
                "ours encodes each distinct passage of a batch once)",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
