#!/usr/bin/env python
"""Speed of the hardware cost models relative to the model's own forward pass.

For each bundled model and each bundled hardware profile: the wall time to simulate a batch of
256 test digits (``model.simulate(layers, acts)``, activations already computed, numba kernels
already compiled) against the onnxruntime forward time of the same batch (plain model, CPU), as a
ratio.  Also prints the mean savings of zero skipping on that batch.

    python benchmarks/bench_cost.py [--batch 256] [--repeats 5]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from auditor.hw import build_cost_model  # noqa: E402
from auditor.runtime.session import OnnxClassifier  # noqa: E402

MODELS = {"plain_cnn": None, "lenet5": None, "bn_resnet": (0.1, 0.25)}
PROFILES = ("cnvlutin", "dense", "sparce", "sparce_simd4")


def best_time(fn, repeats: int) -> float:
    fn()  # warm-up (numba compilation, onnxruntime allocations)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)

    import onnxruntime as ort

    x_all = np.load(ROOT / "auditor" / "data" / "digits28_test.npz")["x"].astype(np.float32) / 255.0
    reps = -(-args.batch // len(x_all))
    x_all = np.concatenate([x_all] * reps)[: args.batch]
    profiles = {}
    for name in PROFILES:
        d = yaml.safe_load((ROOT / "hwprofiles" / f"{name}.yaml").read_text())
        profiles[name] = build_cost_model(d["cost_model"], d["params"])

    so = ort.SessionOptions()
    so.log_severity_level = 3
    print(f"batch {args.batch}, median of {args.repeats} runs; ratio = simulate time / onnxruntime forward time")
    header = f"{'model':<10} {'profile':<13} {'ort fwd ms':>10} {'simulate ms':>11} {'ratio':>7} {'cycle saving':>12}"
    print(header)
    print("-" * len(header))
    for mname, norm in MODELS.items():
        path = ROOT / "models" / f"{mname}.onnx"
        x = (x_all - norm[0]) / norm[1] if norm else x_all
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        in_name = sess.get_inputs()[0].name
        t_fwd = best_time(lambda: sess.run(None, {in_name: x}), args.repeats)
        clf = OnnxClassifier(path, batch_size=args.batch)
        layers = list(clf.layers)
        acts = clf.activations(x)
        for pname, cm in profiles.items():
            t_sim = best_time(lambda: cm.simulate(layers, acts), args.repeats)
            r = cm.simulate(layers, acts)
            saving = 1.0 - r.total_cycles.mean() / r.dense_cycles.sum(axis=1).mean()
            print(f"{mname:<10} {pname:<13} {1e3 * t_fwd:>10.2f} {1e3 * t_sim:>11.2f} {t_sim / t_fwd:>7.2f} "
                  f"{100 * saving:>11.1f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
