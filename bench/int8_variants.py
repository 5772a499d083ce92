#!/usr/bin/env python
"""Which int8 graph of the student encodes fastest on this CPU, and where an int8 forward spends its time.

Exports the student (``crossdistill.models.export``), builds the int8 variants below from its fp32 ONNX graph, and times each
against the student's PyTorch fp32 forward on the same pre-tokenised, length-sorted batches of SciFact passages
(tokenisation and pooling left out, so only the model counts; interleaved runs, medians). Then ONNX Runtime's profiler
splits one batch's time by operator for the fp32 graph and the shipped int8 graph: the share the int8 GEMMs save is
the ceiling of any dynamic-quantisation recipe.

  python bench/int8_variants.py --out docs/results/int8_variants.json

Variants: ``shipped`` (what ``export_student.py`` writes: dynamic, QInt8 weights per channel), ``per_tensor``,
``reduce_range`` (7-bit weights, the non-VNNI advice), ``uint8_weights``, ``fused`` (ONNX Runtime's transformer
fusions — Attention, SkipLayerNorm, BiasGelu — then dynamic int8, Attention becoming QAttention), ``fused_no_attention``
and ``matmul_nbits8`` (8-bit block weights, int8 compute, accuracy_level 4; needs ``onnx_ir``); and another runtime,
OpenVINO, on the same ONNX export: ``openvino_fp32``, ``openvino_int8_static`` (NNCF, activations quantised too,
calibrated on 64 passages outside the timed set) and ``openvino_int8_weights`` (NNCF int8 weight compression).
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _serving import add_serving_args, cpu_description, exported_copy  # noqa: E402  (bench/ is the script's own folder)


def _variants(src: Path, out: Path, heads: int, hidden: int) -> dict[str, Path]:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers import optimizer
    from onnxruntime.transformers.fusion_options import FusionOptions

    logging.getLogger().setLevel(logging.ERROR)
    float_default = {"DefaultTensorType": onnx.TensorProto.FLOAT}  # fused ops have no inferred output types
    made = {}

    def dyn(name, model, **kw):
        quantize_dynamic(str(model), str(out / f"{name}.onnx"), weight_type=kw.pop("weight_type", QuantType.QInt8), **kw)
        made[name] = out / f"{name}.onnx"

    dyn("per_tensor", src, per_channel=False)
    dyn("reduce_range", src, per_channel=True, reduce_range=True)
    dyn("uint8_weights", src, per_channel=True, weight_type=QuantType.QUInt8)
    for name, attention in (("fused", True), ("fused_no_attention", False)):
        opts = FusionOptions("bert")
        opts.enable_attention = attention
        fused = optimizer.optimize_model(str(src), model_type="bert", num_heads=heads, hidden_size=hidden, opt_level=1,
                                         optimization_options=opts)
        fused.save_model_to_file(str(out / f"{name}_fp32.onnx"))
        dyn(name, out / f"{name}_fp32.onnx", per_channel=True, extra_options=float_default)
    try:
        from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer
        q = MatMulNBitsQuantizer(onnx.load(str(src)), algo_config=DefaultWeightOnlyQuantConfig(
            block_size=32, is_symmetric=True, accuracy_level=4, bits=8))
        q.process()
        q.model.save_model_to_file(str(out / "matmul_nbits8.onnx"), True)
        made["matmul_nbits8"] = out / "matmul_nbits8.onnx"
    except ImportError as e:
        print(f"matmul_nbits8 skipped: {e}")
    return made


def _openvino_variants(src: Path, calibration: list[dict]) -> dict:
    """OpenVINO's CPU runtime on the same student: its fp32 graph read from the ONNX export, NNCF's static int8
    (activations too, calibrated on ``calibration`` — passages outside the timed set) and NNCF's int8 weight
    compression. Empty, with a note, where ``openvino``/``nncf`` are missing (``requirements-bench.txt``)."""
    try:
        import nncf
        import openvino as ov
    except ImportError as e:
        print(f"openvino variants skipped: {e} (pip install -r requirements-bench.txt)")
        return {}
    logging.getLogger("nncf").setLevel(logging.ERROR)
    fp32 = ov.Core().read_model(str(src))
    static = nncf.quantize(fp32.clone(), nncf.Dataset(calibration), model_type=nncf.ModelType.TRANSFORMER,
                           subset_size=len(calibration))
    return {"openvino_fp32": fp32, "openvino_int8_static": static,
            "openvino_int8_weights": nncf.compress_weights(fp32.clone(), mode=nncf.CompressWeightsMode.INT8_SYM)}


def _profile(session_path: Path, feed: dict, threads: int, runs: int = 3) -> dict:
    import onnxruntime as ort

    o = ort.SessionOptions()
    o.intra_op_num_threads = threads
    o.enable_profiling = True
    o.profile_file_prefix = str(session_path.parent / "profile")
    s = ort.InferenceSession(str(session_path), o, providers=["CPUExecutionProvider"])
    s.run(None, feed)
    for _ in range(runs):
        s.run(None, feed)
    events = json.loads(Path(s.end_profiling()).read_text())
    per_op = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_op[e["args"]["op_name"]] += e["dur"] / 1000 / (runs + 1)
    total = sum(per_op.values())
    return {"total_ms": round(total, 1),
            "ms_by_op": {k: round(v, 1) for k, v in per_op.most_common() if v >= 0.005 * total}}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_serving_args(p, passages=256, repeats=5, out="bench/results/int8_variants.json")
    a = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import numpy as np
    import onnxruntime as ort
    import torch
    from transformers import AutoModel, AutoTokenizer

    from crossdistill.data.sources import load_beir
    from crossdistill.models.onnx import FILES
    from crossdistill.models.resolve import resolve_model

    torch.set_num_threads(a.threads)
    resolved = resolve_model(a.model_path)
    corpus = [resolved.passage_prefix + t for t in load_beir(a.beir_dir, "test").corpus.values()]
    texts = sorted(corpus[:a.passages], key=len, reverse=True)
    calibration_texts = corpus[a.passages:a.passages + 64]  # static int8's calibration: never timed
    with tempfile.TemporaryDirectory() as tmp:
        folder, _ = exported_copy(resolved.path, tmp)
        paths = {"onnx_fp32": folder / FILES["onnx"], "shipped": folder / FILES["onnx-int8"]}
        cfg = json.loads((folder / "config.json").read_text())
        paths.update(_variants(paths["onnx_fp32"], Path(tmp), cfg["num_attention_heads"], cfg["hidden_size"]))
        tok = AutoTokenizer.from_pretrained(folder)
        batches = [tok(texts[i:i + a.batch_size], padding=True, truncation=True, max_length=a.max_len,
                       return_tensors="np") for i in range(0, len(texts), a.batch_size)]
        calibration = [{k: v.astype(np.int64) for k, v in tok(t, truncation=True, max_length=a.max_len,
                                                                return_tensors="np").items()}
                       for t in calibration_texts]
        openvino_models = _openvino_variants(paths["onnx_fp32"], calibration)
        model = AutoModel.from_pretrained(folder).eval()

        def torch_run():
            with torch.inference_mode():
                for b in batches:
                    model(**{k: torch.from_numpy(v) for k, v in b.items()})

        def ort_run(path):
            o = ort.SessionOptions()
            o.intra_op_num_threads = a.threads
            s = ort.InferenceSession(str(path), o, providers=["CPUExecutionProvider"])
            names = {i.name for i in s.get_inputs()}
            return lambda: [s.run(None, {k: v.astype(np.int64) for k, v in b.items() if k in names}) for b in batches]

        def openvino_run(ov_model):
            import openvino as ov

            compiled = ov.Core().compile_model(ov_model, "CPU", {"INFERENCE_NUM_THREADS": a.threads,
                                                                 "PERFORMANCE_HINT": "LATENCY"})
            names, request = {i.get_any_name() for i in compiled.inputs}, compiled.create_infer_request()
            return lambda: [request.infer({k: v.astype(np.int64) for k, v in b.items() if k in names}) for b in batches]

        runs = {"torch_fp32": torch_run, **{n: ort_run(pth) for n, pth in paths.items()},
                **{n: openvino_run(m) for n, m in openvino_models.items()}}
        speed = {n: [] for n in runs}
        for f in runs.values():
            f()  # warm-up
        for _ in range(a.repeats):  # interleaved: a slower machine moment hits every variant alike
            for n, f in runs.items():
                t0 = time.perf_counter()
                f()
                speed[n].append(len(texts) / (time.perf_counter() - t0))
        feed = {k: v.astype(np.int64) for k, v in batches[len(batches) // 2].items()}
        profile = {n: _profile(paths[n], feed, a.threads) for n in ("onnx_fp32", "shipped")}
    base = statistics.median(speed["torch_fp32"])
    result = {
        **cpu_description(a.threads),
        "model": a.model_path, "passages": len(texts), "batch_size": a.batch_size, "max_len": a.max_len,
        "passages_per_s": {n: {"median": round(statistics.median(v), 2), "runs": [round(x, 2) for x in v]}
                           for n, v in speed.items()},
        "vs_torch_fp32": {n: round(statistics.median(v) / base, 2) for n, v in speed.items()},
        "profile_one_batch": profile,
    }
    print(json.dumps(result, indent=1))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
