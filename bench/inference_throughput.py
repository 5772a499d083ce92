#!/usr/bin/env python
"""Teacher scoring and bi-encoder encoding, ours vs sentence-transformers, on identical work.

- scoring:  ``CrossEncoderTeacher.score`` (crossdistill/teacher.py) vs ``CrossEncoder(folder).predict`` on the same
  teacher folder, the same (query, passage) pairs, batch size and max_len; outputs are compared (max |Δ|).
- encoding: ``crossdistill.evaluate.bi_encoder.encode`` vs ``SentenceTransformer.encode`` on the same distinct passages.

Every measurement runs in its own fresh process (so its peak RSS is its own), ours and theirs interleaved,
``--repeats`` times; the report gives medians and the ratios ours/theirs (items per second; RSS).

  python bench/inference_throughput.py --pairs 1024 --texts 1024 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from crossdistill.data import sources

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _workload(n_pairs: int, n_texts: int) -> tuple[list[tuple[str, str]], list[str]]:
    """SciFact test: the first ``n_pairs`` (query, passage) pairs of its qrels crossed with the corpus order, and
    the first ``n_texts`` corpus passages — real lengths, deterministic."""

    beir = sources.load_beir(str(ROOT.parent / "shared" / "data" / "scifact"), "test")
    passages = list(beir.corpus.values())
    queries = list(beir.queries.values())
    pairs = [(queries[i % len(queries)], passages[(7 * i) % len(passages)]) for i in range(n_pairs)]
    return pairs, passages[:n_texts]


def child(a) -> dict:
    """One measurement in this process: returns seconds, items/s, peak RSS (MiB) and a checksum of the output."""
    import numpy as np
    import torch

    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"  # the same device for ours and theirs
    pairs, texts = _workload(a.pairs, a.texts)
    if a.stage == "scoring":
        if a.impl == "ours":
            from crossdistill.models.teacher import CrossEncoderTeacher

            model = CrossEncoderTeacher.load(a.teacher, a.max_len)
            model.model.to(device)
            run = lambda: model.score(pairs, batch_size=a.batch_size, activation="sigmoid", device=device)  # noqa: E731
        else:
            from sentence_transformers import CrossEncoder

            model = CrossEncoder(a.teacher, max_length=a.max_len, device=device)
            run = lambda: model.predict(pairs, batch_size=a.batch_size, show_progress_bar=False)  # noqa: E731
        n = len(pairs)
    else:
        from crossdistill.evaluate.bi_encoder import encode, load_bi_encoder

        model, resolved = load_bi_encoder(a.model, a.max_len, device=device)
        if a.impl == "ours":
            run = lambda: encode(model, texts, resolved.passage_prefix, a.batch_size)  # noqa: E731
        else:
            run = lambda: model.encode([resolved.passage_prefix + t for t in texts], batch_size=a.batch_size,  # noqa: E731
                                       normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
        n = len(texts)
    t0 = time.perf_counter()
    out = np.asarray(run(), dtype=np.float32)
    secs = time.perf_counter() - t0
    np.save(a.dump, out)
    gib = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None
    return {"seconds": secs, "per_s": n / secs, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "peak_gpu_gib": gib}


def _machine() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"{__import__('os').cpu_count()} CPU cores"


def make_teacher(folder: Path, max_len: int) -> None:
    """A MiniLM-L6 cross-encoder as the teacher script builds it (mean-pooling head), saved as a teacher folder:
    scoring speed does not depend on training."""
    from crossdistill.models.resolve import resolve_model
    from crossdistill.models.teacher import CrossEncoderTeacher, save_teacher

    save_teacher(CrossEncoderTeacher.from_base(resolve_model("minilm-l6"), max_len), folder, {"base_model": "minilm-l6"})


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stages", default="scoring,encoding")
    p.add_argument("--teacher", default=None, help="teacher folder (default: an untrained MiniLM-L6 cross-encoder)")
    p.add_argument("--model", default="minilm-l6", help="bi-encoder for encoding")
    p.add_argument("--pairs", type=int, default=1024)
    p.add_argument("--texts", type=int, default=1024)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--max_len", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default="bench/results/inference_throughput.json")
    p.add_argument("--child", nargs=3, metavar=("STAGE", "IMPL", "DUMP"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        a.stage, a.impl, a.dump = a.child
        print(json.dumps(child(a)))
        return
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        if a.teacher is None:
            a.teacher = str(Path(tmp) / "teacher")
            make_teacher(Path(a.teacher), a.max_len)
        report = {"setup": {k: getattr(a, k) for k in ("pairs", "texts", "batch_size", "max_len", "repeats", "model")},
                  "machine": _machine()}
        for stage in a.stages.split(","):
            res: dict = {"ours": [], "sentence_transformers": []}
            for r in range(a.repeats):
                for impl, key in (("ours", "ours"), ("st", "sentence_transformers")):
                    dump = str(Path(tmp) / f"{stage}_{impl}.npy")
                    cmd = [sys.executable, __file__, "--child", stage, impl, dump, "--teacher", a.teacher, "--model", a.model,
                           "--pairs", str(a.pairs), "--texts", str(a.texts), "--batch_size", str(a.batch_size),
                           "--max_len", str(a.max_len)]
                    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
                    res[key].append(json.loads(out.stdout.strip().splitlines()[-1]))
                    print(f"{stage} repeat {r + 1} {key}: {res[key][-1]}", flush=True)
            ours, st = np.load(Path(tmp) / f"{stage}_ours.npy"), np.load(Path(tmp) / f"{stage}_st.npy")
            med = {k: {m: statistics.median(x[m] for x in v) for m in ("per_s", "peak_rss_mib")} for k, v in res.items()}
            gpu = {k: statistics.median(x["peak_gpu_gib"] for x in v) if v[0].get("peak_gpu_gib") is not None else None
                   for k, v in res.items()}
            report[stage] = {"runs": res, "median": med, "median_gpu": gpu,
                             "ratio_speed_ours_over_st": med["ours"]["per_s"] / med["sentence_transformers"]["per_s"],
                             "ratio_rss_ours_over_st": med["ours"]["peak_rss_mib"] / med["sentence_transformers"]["peak_rss_mib"],
                             "max_abs_diff_outputs": float(np.abs(ours.reshape(st.shape) - st).max())}
            print(f"== {stage}: ours {med['ours']['per_s']:.1f}/s vs ST {med['sentence_transformers']['per_s']:.1f}/s "
                  f"(x{report[stage]['ratio_speed_ours_over_st']:.2f}); peak RSS {med['ours']['peak_rss_mib']:.0f} vs "
                  f"{med['sentence_transformers']['peak_rss_mib']:.0f} MiB; max |diff| {report[stage]['max_abs_diff_outputs']:.2e}",
                  flush=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
