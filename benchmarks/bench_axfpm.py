#!/usr/bin/env python
"""Benchmark the Ax-FPM kernels (auditor.axfpm) against onnxruntime's exact kernels.

Prints, at batch 64 with 2 threads on both sides:

* approximate MAC/s of the bit-exact da-reference Conv/Gemm kernels on LeNet-like layers, with the
  whole call (activation decomposition included) and the time ratio against onnxruntime running the
  same layer exactly;
* per-image time of a whole LeNet-5-like model through ApproxModel (all Conv + Gemm approximated)
  versus plain onnxruntime;
* the fraction of products larger in magnitude than exact on 10^6 uniform [-1, 1] pairs.

Times are best-of-``--repeat``.  Run on an otherwise idle machine: with the cores shared, every
parallel region waits for its slowest thread and the numbers drop several-fold.

Run: ``python benchmarks/bench_axfpm.py [--batch 64] [--threads 2] [--repeat 20]``
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numba  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from auditor.axfpm import multiply  # noqa: E402
from auditor.axfpm.execute import ApproxModel  # noqa: E402
from auditor.axfpm.kernels import conv2d_prepared, matmul2d_f64, prepare_conv_weight  # noqa: E402
from auditor.axfpm.kernels import prepare_operand  # noqa: E402
from auditor.axfpm.multiplier import variant_code  # noqa: E402

OPSET = 13


def _best(fn, repeat: int) -> float:
    """Best-of-``repeat`` wall time (robust to other processes sharing the cores)."""
    fn()  # warm-up (compilation, caches)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.min(times))


def _session(model: onnx.ModelProto, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])


def _init(name, arr):
    return numpy_helper.from_array(np.asarray(arr, dtype=np.float32), name)


def conv_model(w, b, pads) -> onnx.ModelProto:
    c = w.shape[1]
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=list(pads))], "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", c, None, None])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [_init("w", w), _init("b", b)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


def gemm_model(w, b) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)], "gemm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", w.shape[1]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [_init("w", w), _init("b", b)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


def lenet5(rng) -> onnx.ModelProto:
    """LeNet-5 as in models/train.py (random weights): 28x28 input, 2 conv + 3 fc."""
    p = {
        "w1": rng.standard_normal((6, 1, 5, 5)) * 0.3, "b1": rng.standard_normal(6) * 0.1,
        "w2": rng.standard_normal((16, 6, 5, 5)) * 0.1, "b2": rng.standard_normal(16) * 0.1,
        "w3": rng.standard_normal((120, 400)) * 0.05, "b3": rng.standard_normal(120) * 0.1,
        "w4": rng.standard_normal((84, 120)) * 0.1, "b4": rng.standard_normal(84) * 0.1,
        "w5": rng.standard_normal((10, 84)) * 0.1, "b5": rng.standard_normal(10) * 0.1,
    }
    n = helper.make_node
    nodes = [
        n("Conv", ["input", "w1", "b1"], ["c1"], pads=[2, 2, 2, 2], name="conv1"),
        n("Relu", ["c1"], ["r1"]),
        n("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        n("Conv", ["p1", "w2", "b2"], ["c2"], name="conv2"),
        n("Relu", ["c2"], ["r2"]),
        n("MaxPool", ["r2"], ["p2"], kernel_shape=[2, 2], strides=[2, 2]),
        n("Flatten", ["p2"], ["f"]),
        n("Gemm", ["f", "w3", "b3"], ["g3"], transB=1, name="fc1"),
        n("Relu", ["g3"], ["r3"]),
        n("Gemm", ["r3", "w4", "b4"], ["g4"], transB=1, name="fc2"),
        n("Relu", ["g4"], ["r4"]),
        n("Gemm", ["r4", "w5", "b5"], ["logits"], transB=1, name="fc3"),
    ]
    graph = helper.make_graph(
        nodes, "lenet5",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 28, 28])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        [_init(k, v) for k, v in p.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--variant", default="da-reference")
    args = ap.parse_args(argv)
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    rng = np.random.default_rng(0)
    B, T, R, V = args.batch, args.threads, args.repeat, args.variant
    print(f"Ax-FPM kernels, variant={V}, batch={B}, threads={T} "
          f"(numba {numba.__version__}, onnxruntime {ort.__version__})")

    print("\nConv layers (input already ReLU'd, ~50% zeros)")
    print(f"{'layer':34s} {'MACs':>9s} {'approx ms':>10s} {'MMAC/s':>8s} {'kernel MMAC/s':>13s} "
          f"{'ORT ms':>8s} {'approx/ORT':>10s}")
    conv_layers = [
        ("lenet conv1 1->6 5x5 p2 @28x28", (B, 1, 28, 28), (6, 1, 5, 5), (2, 2, 2, 2)),
        ("lenet conv2 6->16 5x5 @14x14", (B, 6, 14, 14), (16, 6, 5, 5), (0, 0, 0, 0)),
        ("plain_cnn conv2 16->32 5x5 p2 @14", (B, 16, 14, 14), (32, 16, 5, 5), (2, 2, 2, 2)),
    ]
    for name, xs, ws, pads in conv_layers:
        x = np.maximum(rng.standard_normal(xs), 0).astype(np.float32)
        w = (rng.standard_normal(ws) * 0.1).astype(np.float32)
        b = (rng.standard_normal(ws[0]) * 0.1).astype(np.float32)
        pw = prepare_conv_weight(w, b, V)
        y = conv2d_prepared(x, pw, (1, 1), pads)
        macs = y.size * ws[1] * ws[2] * ws[3]
        t_approx = _best(lambda: conv2d_prepared(x, pw, (1, 1), pads), R)
        sess = _session(conv_model(w, b, pads), T)
        t_ort = _best(lambda: sess.run(None, {"x": x}), R)
        # kernel only (activation decomposition excluded) to show where the time goes
        from auditor.axfpm import kernels as K
        t_kernel = _kernel_only_conv(K, x, pw, pads, R)
        print(f"{name:34s} {macs / 1e6:8.2f}M {t_approx * 1e3:10.2f} {macs / t_approx / 1e6:8.0f} "
              f"{macs / t_kernel / 1e6:13.0f} {t_ort * 1e3:8.3f} {t_approx / t_ort:10.1f}")

    print("\nGemm layers")
    for name, k, n in [("lenet fc1 400->120", 400, 120), ("plain_cnn fc1 1568->128", 1568, 128)]:
        x = np.maximum(rng.standard_normal((B, k)), 0).astype(np.float32)
        w = (rng.standard_normal((n, k)) * 0.05).astype(np.float32)
        b = np.zeros(n, np.float32)
        wt = np.ascontiguousarray(w.T)
        wf = prepare_operand(wt, variant_code(V), True)
        macs = B * k * n
        t_approx = _best(lambda: matmul2d_f64(x, wt, V, "a", wf), R)
        sess = _session(gemm_model(w, b), T)
        t_ort = _best(lambda: sess.run(None, {"x": x}), R)
        print(f"{name:34s} {macs / 1e6:8.2f}M {t_approx * 1e3:10.2f} {macs / t_approx / 1e6:8.0f} "
              f"{'':13s} {t_ort * 1e3:8.3f} {t_approx / t_ort:10.1f}")

    print("\nWhole model (LeNet-5 shape, random weights, all Conv+Gemm approximated)")
    model = lenet5(rng)
    x = rng.random((B, 1, 28, 28)).astype(np.float32)
    am = ApproxModel(model, variant=V, intra_op_threads=T)
    sess = _session(model, T)
    t_am = _best(lambda: am.run(x), R)
    t_ort = _best(lambda: sess.run(None, {"input": x}), R)
    x1 = x[:1]
    t_am1 = _best(lambda: am.run(x1), R)
    t_ort1 = _best(lambda: sess.run(None, {"input": x1}), R)
    print(f"batch {B}: ApproxModel {t_am / B * 1e6:8.1f} us/image, onnxruntime "
          f"{t_ort / B * 1e6:6.1f} us/image, ratio {t_am / t_ort:6.1f}")
    print(f"batch 1 : ApproxModel {t_am1 * 1e6:8.1f} us/image, onnxruntime "
          f"{t_ort1 * 1e6:6.1f} us/image, ratio {t_am1 / t_ort1:6.1f}")

    a = rng.uniform(-1, 1, 1_000_000).astype(np.float32)
    b = rng.uniform(-1, 1, 1_000_000).astype(np.float32)
    exact = a.astype(np.float64) * b.astype(np.float64)
    print("\nP(|approx| > |exact|) on 1e6 uniform [-1,1] pairs:")
    for v in ("da-reference", "flat-ama5"):
        print(f"  {v:13s} {np.mean(np.abs(multiply(a, b, v)) > np.abs(exact)) * 100:6.2f}%")
    return 0


def _kernel_only_conv(K, x, pw, pads, repeat):
    """Time _conv_kernel alone (fast path), activation fields precomputed."""
    N, C, H, W = x.shape
    OC, Cg, KH, KW = pw.shape
    pt, pl, pb, pr = pads
    Hp0, Wp = H + pt + pb, W + pl + pr
    OH, OW = Hp0 - KH + 1, Wp - KW + 1
    L = OH * Wp
    PL = max(Hp0 * Wp, (L - 1) + (KH - 1) * Wp + (KW - 1) + 1)
    planes = np.zeros((N * C, PL), dtype=np.float32)
    planes[:, : Hp0 * Wp].reshape(N * C, Hp0, Wp)[:, pt:pt + H, pl:pl + W] = x.reshape(N * C, H, W)
    act = K.prepare_operand(planes, pw.code, False)
    mode = K.choose_mode(pw.code, act, pw.fields)
    out = np.empty((N, OC, OH, OW), np.float32)
    wf = pw.fields

    def run():
        K._conv_kernel(mode, pw.code, act.bits, act.f1, act.f2, act.p, wf.bits, wf.f1, wf.f2,
                       wf.p, pw.bias, out, C, PL, Wp, Wp, KH, KW, 1, 1, 1, 1)

    return _best(run, repeat)


if __name__ == "__main__":
    raise SystemExit(main())
