#!/usr/bin/env python
"""(forward + backward) / forward time ratio of the gradient sessions, for every bundled model.

forward      = a session over the plain model (logits only);
forward+bwd  = a session over the model with a cross-entropy objective and its input gradient
               (auditor.grad.objectives + auditor.grad), one ``session.run`` per iteration.

Both sessions use the same options (ORT_ENABLE_ALL, the given number of intra-op threads,
sequential execution, and no spin-waiting of the worker threads unless --spin: on a shared
machine spinning threads fight the other processes and the 2-thread timings become
meaningless).  The two are timed interleaved, run after run, so that they see the same machine
load; the table reports the minimum over the runs (the least disturbed measurement) and the ratio
of the minima.  Usage::

    python benchmarks/bench_grad.py [--models plain_cnn ...] [--batches 1 64] [--threads 1 2]
        [--seconds 2.0] [--objective ce|sparsity] [--spin]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from auditor.grad import add_input_gradient  # noqa: E402
from auditor.grad.objectives import CrossEntropy, Sparsity, append_objective  # noqa: E402

MODELS = ["plain_cnn", "bn_resnet", "lenet5", "surrogate_cnn"]


def session(model: onnx.ModelProto, threads: int, spin: bool = False) -> ort.InferenceSession:
    so = ort.SessionOptions()
    if not spin:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so,
                                providers=["CPUExecutionProvider"])


def grad_model(model: onnx.ModelProto, objective: str) -> tuple[onnx.ModelProto, dict]:
    if objective == "ce":
        spec = CrossEntropy()
    else:  # inputs of the compute layers (Conv / Gemm data inputs)
        acts = [n.input[0] for n in model.graph.node if n.op_type in ("Conv", "Gemm")]
        spec = Sparsity(acts)
    m, obj, knobs = append_objective(model, spec)
    return add_input_gradient(m, obj), knobs


def knob_feed(model: onnx.ModelProto, knobs: dict, batch: int) -> dict:
    feed = {}
    types = {i.name: i.type.tensor_type.elem_type for i in model.graph.input}
    for name, shape in knobs.items():
        shp = [batch if d == "N" else d for d in shape]
        if types[name] == onnx.TensorProto.INT64:
            feed[name] = np.zeros(shp, dtype=np.int64)
        else:
            feed[name] = np.ones(shp, dtype=np.float32)
    return feed


def measure(s_fwd, s_grad, x, extra, seconds: float) -> tuple[float, float]:
    f_fwd = {"input": x}
    f_grad = dict(f_fwd, **extra)
    for _ in range(3):
        s_fwd.run(None, f_fwd)
        s_grad.run(None, f_grad)
    t_fwd, t_grad = [], []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(t_fwd) < 10:
        a = time.perf_counter()
        s_fwd.run(None, f_fwd)
        b = time.perf_counter()
        s_grad.run(None, f_grad)
        c = time.perf_counter()
        t_fwd.append(b - a)
        t_grad.append(c - b)
    return min(t_fwd), min(t_grad)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=MODELS)
    ap.add_argument("--batches", nargs="*", type=int, default=[1, 64])
    ap.add_argument("--threads", nargs="*", type=int, default=[1, 2])
    ap.add_argument("--seconds", type=float, default=2.0, help="timing budget per cell")
    ap.add_argument("--objective", choices=["ce", "sparsity"], default="ce")
    ap.add_argument("--spin", action="store_true", help="let idle worker threads spin")
    args = ap.parse_args(argv)

    print(f"onnxruntime {ort.__version__}, {os.cpu_count()} CPUs, objective={args.objective}, "
          f"spinning={'on' if args.spin else 'off'}")
    print(f"{'model':14s} {'thr':>3s} {'batch':>5s} {'fwd ms':>9s} {'fwd+bwd ms':>11s} "
          f"{'ratio':>6s}")
    rng = np.random.default_rng(0)
    for name in args.models:
        path = ROOT / "models" / f"{name}.onnx"
        if not path.exists():
            print(f"{name:14s} (missing: {path})")
            continue
        model = onnx.load(str(path))
        gmodel, knobs = grad_model(model, args.objective)
        for threads in args.threads:
            s_fwd = session(model, threads, args.spin)
            s_grad = session(gmodel, threads, args.spin)
            for batch in args.batches:
                x = rng.random((batch, 1, 28, 28), dtype=np.float32)
                fwd, both = measure(s_fwd, s_grad, x, knob_feed(gmodel, knobs, batch),
                                    args.seconds)
                print(f"{name:14s} {threads:3d} {batch:5d} {fwd * 1e3:9.3f} {both * 1e3:11.3f} "
                      f"{both / fwd:6.2f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
