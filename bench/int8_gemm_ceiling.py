#!/usr/bin/env python
"""How much faster can an int8 GEMM be than an fp32 one on this CPU: the ceiling on what int8 quantisation can win.

Times, one operator at a time, the six weight GEMMs of one transformer layer of the student, at the shapes a batch of
``--batch_size`` passages of ``--max_len`` tokens gives them (M = batch × tokens rows; K × N = hidden × hidden four
times — Q, K, V, output — then hidden × intermediate and intermediate × hidden), in three forms:

* ``torch_fp32``: ``torch.matmul`` by the transpose of an ``[N, K]`` weight, the product ``nn.Linear`` computes in
  the student's PyTorch forward;
* ``onnx_fp32``: a one-``MatMul`` ONNX graph run by ONNX Runtime;
* ``onnx_int8``: that graph after ``onnxruntime.quantization.quantize_dynamic`` (QInt8 weights per channel, the
  recipe ``crossdistill.models.export`` ships), which ONNX Runtime runs as one ``DynamicQuantizeMatMul``: quantising the
  activations, the int8 GEMM and the rescale to fp32, i.e. everything the int8 student pays for a GEMM.

Interleaved runs, medians. The layer's sum is what every layer of the student costs in GEMMs; its ratio int8 / fp32 is
the most any recipe of int8 weight GEMMs can speed up the whole forward, reached only if everything else (attention's
activation × activation products, softmax, GELU, LayerNorm) got that much faster as well.

  python bench/int8_gemm_ceiling.py --out docs/results/int8_gemm_ceiling.json
"""

from __future__ import annotations

import argparse
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

from _serving import cpu_description  # noqa: E402  (bench/ is the script's own folder)


def _matmul_model(path: Path, weight, k: int, n: int) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])], "gemm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["m", k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["m", n])],
        [numpy_helper.from_array(weight, "W")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def _bound(session, x, y):
    """``session``'s run on ``x`` writing into ``y`` (I/O binding), so the timing is the kernel's, not an allocation's."""
    import numpy as np

    binding = session.io_binding()
    binding.bind_cpu_input("x", x)
    binding.bind_output("y", "cpu", 0, np.float32, list(y.shape), y.ctypes.data)
    return lambda: session.run_with_iobinding(binding)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_path", default="minilm-l6", help="the student whose layer shapes are timed (config only)")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--max_len", type=int, default=256)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--out", default="bench/results/int8_gemm_ceiling.json")
    a = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import numpy as np
    import onnxruntime as ort
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from crossdistill.models.resolve import resolve_model

    logging.getLogger().setLevel(logging.ERROR)
    torch.set_num_threads(a.threads)
    cfg = json.loads((Path(resolve_model(a.model_path).path) / "config.json").read_text())
    h, inter, layers = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    m = a.batch_size * a.max_len
    shapes = {"qkv_out": (h, h, 4), "ffn_in": (h, inter, 1), "ffn_out": (inter, h, 1)}  # (K, N, count per layer)
    rng = np.random.default_rng(0)
    ms, gops = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (k, n, _) in shapes.items():
            w = (rng.standard_normal((k, n)) * 0.05).astype(np.float32)
            x = rng.standard_normal((m, k)).astype(np.float32)
            _matmul_model(Path(tmp) / "f.onnx", w, k, n)
            quantize_dynamic(str(Path(tmp) / "f.onnx"), str(Path(tmp) / "q.onnx"), weight_type=QuantType.QInt8,
                             per_channel=True)
            o = ort.SessionOptions()
            o.intra_op_num_threads = a.threads
            f32, i8 = (ort.InferenceSession(str(Path(tmp) / f), o, providers=["CPUExecutionProvider"])
                       for f in ("f.onnx", "q.onnx"))
            y = np.empty((m, n), dtype=np.float32)  # every form writes into this one buffer: no allocation is timed
            tx, tw, ty = torch.from_numpy(x), torch.from_numpy(np.ascontiguousarray(w.T)), torch.from_numpy(y)
            runs = {"torch_fp32": lambda: torch.matmul(tx, tw.t(), out=ty),  # nn.Linear's [N, K] weight
                    "onnx_fp32": _bound(f32, x, y), "onnx_int8": _bound(i8, x, y)}
            times = {r: [] for r in runs}
            with torch.inference_mode():
                for f in runs.values():
                    f()  # warm-up
                for _ in range(a.repeats):
                    for r, f in runs.items():
                        t0 = time.perf_counter()
                        f()
                        times[r].append(time.perf_counter() - t0)
            ms[name] = {r: round(statistics.median(v) * 1e3, 2) for r, v in times.items()}
            gops[name] = {r: round(2 * m * k * n / (t / 1e3) / 1e9, 1) for r, t in ms[name].items()}
    layer = {r: round(sum(ms[s][r] * c for s, (_, _, c) in shapes.items()), 1) for r in ms["qkv_out"]}
    result = {
        **cpu_description(a.threads),
        "model": a.model_path, "m_rows": m, "shapes_k_n_count": shapes, "repeats": a.repeats,
        "median_ms": ms, "gops": gops,
        "one_layer_gemms_ms": layer, "all_layers_gemms_ms": {r: round(v * layers, 1) for r, v in layer.items()},
        "int8_speedup_on_gemms": {"vs_torch_fp32": round(layer["torch_fp32"] / layer["onnx_int8"], 2),
                                  "vs_onnx_fp32": round(layer["onnx_fp32"] / layer["onnx_int8"], 2)},
    }
    print(json.dumps(result, indent=1))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
