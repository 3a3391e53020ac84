#!/usr/bin/env python
"""The adjoint of a stride-1 Conv (the input gradient's main cost): onnxruntime's ConvTranspose
with the layer's weight against the Conv with flipped, transposed weights that the Conv gradient
rule emits where it is faster (``auditor/grad/ops_conv.py``), beside the layer's forward Conv.

For each case ``CIN,COUT,SIZE`` (3x3 kernel, pads 1, batch --batch, square SIZE x SIZE input):
the medians of interleaved runs of the three single-node sessions (the same options as the
gradient sessions: --threads intra-op threads, no spinning), and the largest difference between
the two adjoints relative to their largest value (they agree to float32 rounding).

    python benchmarks/bench_conv_adjoint.py [--cases 64,128,112 128,256,56 ...] [--batch 8]
        [--threads 2] [--runs 6]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from auditor.grad.ops_conv import WIDE_FLIPPED_CHANNELS, _flipped_weight  # noqa: E402
from auditor.runtime.engine import make_session  # noqa: E402

CASES = ["64,128,112", "128,256,56", "256,512,28", "64,128,28", "128,256,14", "256,512,7", "32,64,56", "16,32,56"]


def single(op: str, x_shape: list[int], w: np.ndarray, threads: int):
    node = helper.make_node(op, ["x", "w"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    graph = helper.make_graph([node], op.lower(), [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    sess = make_session(model, threads, spin=False)
    return lambda x: sess.run(None, {"x": x})[0]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="*", default=CASES, help="CIN,COUT,SIZE")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=6)
    args = ap.parse_args(argv)
    try:
        cases = [tuple(int(v) for v in c.split(",")) for c in args.cases]
        assert all(len(c) == 3 and min(c) > 0 for c in cases)
    except (ValueError, AssertionError):
        print("bench_conv_adjoint: --cases takes CIN,COUT,SIZE triples of positive integers", file=sys.stderr)
        return 2
    print(f"batch {args.batch}, {args.threads} threads, 3x3 pads 1, medians of {args.runs} interleaved runs, "
          f"load {os.getloadavg()[0]:.1f}; the rule takes the flipped Conv for CIN >= {WIDE_FLIPPED_CHANNELS} "
          f"(multiple of 8) or CIN >= COUT")
    print(f"{'cin->cout':>10s} {'size':>5s} {'fwd ms':>8s} {'convT ms':>9s} {'flipped ms':>11s} {'flip/convT':>10s} {'rel diff':>9s}")
    rng = np.random.default_rng(0)
    for cin, cout, size in cases:
        w = (rng.standard_normal((cout, cin, 3, 3)) / np.sqrt(9 * cin)).astype(np.float32)
        x = rng.standard_normal((args.batch, cin, size, size)).astype(np.float32)
        dy = rng.standard_normal((args.batch, cout, size, size)).astype(np.float32)
        fwd = single("Conv", list(x.shape), w, args.threads)
        conv_t = single("ConvTranspose", list(dy.shape), w, args.threads)
        flipped = single("Conv", list(dy.shape), _flipped_weight(w, 1), args.threads)
        a, b = conv_t(dy), flipped(dy)
        rel = float(np.abs(a - b).max() / np.abs(a).max())
        fns = [lambda: fwd(x), lambda: conv_t(dy), lambda: flipped(dy)]
        times: list[list[float]] = [[] for _ in fns]
        for _ in range(args.runs):
            for i, f in enumerate(fns):
                t = time.perf_counter()
                f()
                times[i].append(time.perf_counter() - t)
        m = [1e3 * float(np.median(t)) for t in times]
        print(f"{f'{cin}->{cout}':>10s} {size:5d} {m[0]:8.1f} {m[1]:9.1f} {m[2]:11.1f} {m[2] / m[1]:10.2f} {rel:9.1e}",
              flush=True)
    print(f"load {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
