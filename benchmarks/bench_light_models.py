#!/usr/bin/env python
"""The nine real-architecture models shipped in the onnx wheel, end to end.

For each model of ``onnx/backend/test/data/light`` (opset 8-9, IR 3, weights built by
ConstantOfShape): the time to load it (fold + upgrade + checks), what ``auditor inspect`` finds
(compute layers, MACs, differentiable), a 2-input audit on the Cnvlutin, SparCE and dense profiles
with the white-box sparsity attack and PGD (tiny budgets: the point is that every stage runs to a
verdict), and the input gradient of the cross-entropy against finite differences: float32 along
the gradient's own direction (as the test suite does) and, with ``--float64``, float64 on a
random direction with onnx's reference evaluator (onnxruntime has no float64 Conv; 10-60 s per
forward pass of a 224x224 network, minutes for VGG-19).

The shipped weights are constants (every weight 0.02: all logits equal, zero class gradients),
so the audit and the gradient checks use the same architecture with He-initialised weights and
identity batch normalisations (``tests/test_light_models.randomised``).

    python benchmarks/bench_light_models.py [NAME ...] [--float64]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "model"))

import auditor  # noqa: E402
from auditor.grad.check import directional_check  # noqa: E402
from auditor.model.inspect import inspect_model  # noqa: E402
from auditor.model.load import load_model  # noqa: E402
from auditor.grad.objectives import CrossEntropy, append_objective  # noqa: E402
from auditor.runtime.session import OnnxClassifier  # noqa: E402
from test_light_models import LIGHT, randomised  # noqa: E402

NAMES = ["light_squeezenet", "light_shufflenet", "light_inception_v1", "light_inception_v2",
         "light_densenet121", "light_resnet50", "light_bvlc_alexnet", "light_zfnet512", "light_vgg19"]
PROFILES = [str(ROOT / "hwprofiles" / p) for p in ("cnvlutin.yaml", "sparce.yaml", "dense.yaml")]


def gradient_fd32(clf: OnnxClassifier, x: np.ndarray) -> float:
    """Relative error of the analytic directional derivative along the gradient (float32 FD)."""
    t = np.array([3], np.int64)
    value, grad, _ = clf.value_and_grad(x, "ce", target=t)
    g = grad.astype(np.float64)
    v = g / np.linalg.norm(g) * np.sqrt(g.size)
    an = float(np.sum(g * v))
    h = 1e-4 * max(abs(float(value[0])), 1.0) / an
    fp = float(clf.value_and_grad((x + h * v).astype(np.float32), "ce", target=t)[0][0])
    fm = float(clf.value_and_grad((x - h * v).astype(np.float32), "ce", target=t)[0][0])
    return abs((fp - fm) / (2 * h) - an) / an


def gradient_fd64(clf: OnnxClassifier, x: np.ndarray) -> float:
    """|analytic - FD| / sum|v * grad| on one random direction, FD in float64 (reference evaluator)."""
    t = np.array([3], np.int64)
    _, grad, _ = clf.value_and_grad(x, "ce", target=t)
    m, obj, _ = append_objective(clf.model, CrossEntropy(), logits=clf.logits_name)
    inp = m.graph.input[0].name
    (an, fd, scale), = directional_check(m, obj, {inp: x, "target": t}, inp, grad, n_dirs=1)
    return abs(an - fd) / scale


def audit(model: onnx.ModelProto, x: np.ndarray, y: np.ndarray) -> tuple[str, float]:
    with tempfile.TemporaryDirectory() as d:
        np.save(Path(d) / "x.npy", x)
        np.save(Path(d) / "y.npy", y)
        sc = Path(d) / "light.yaml"
        sc.write_text("name: light\ndata: {source: npy, path: x.npy, labels: y.npy}\nbatch_size: 2\n"
                      "energy_attacks:\n  - {search: whitebox, count: 1, params: {iterations: 2}}\n"
                      "robustness:\n  count: 1\n  attacks:\n"
                      "    - {attack: pgd, norm: linf, epsilons: [0.01], params: {steps: 2}}\n"
                      "checks:\n  worst_case_latency_ms: 100000.0\n"
                      "  min_robust_accuracy: [{attack: pgd, epsilon: 0.01, threshold: 0.0}]\n")
        t = time.perf_counter()
        rep = auditor.audit(model, PROFILES, str(sc), seed=0)
        return rep.verdict, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("names", nargs="*", default=NAMES)
    ap.add_argument("--float64", action="store_true", help="also the float64 finite-difference check (slow)")
    args = ap.parse_args()
    print(f"{'model':20s} {'load s':>7s} {'layers':>6s} {'GMACs':>6s} {'diff':>4s} {'audit':>6s} {'audit s':>8s} "
          f"{'fd32 rel':>9s} {'fd64 rel':>9s}", flush=True)
    for name in args.names:
        path = LIGHT / f"{name}.onnx"
        if not path.exists():
            print(f"{name:20s} not shipped by this onnx", flush=True)
            continue
        t = time.perf_counter()
        m = load_model(path)
        load_s = time.perf_counter() - t
        info = inspect_model(m)
        rnd = randomised(m)
        clf = OnnxClassifier(rnd)
        x = np.random.default_rng(1).random((2, 3, 224, 224), dtype=np.float32)
        y = clf.predict(x)
        verdict, audit_s = audit(rnd, x, y)
        fd32 = gradient_fd32(clf, x[:1])
        fd64 = f"{gradient_fd64(clf, x[:1]):9.1e}" if args.float64 else f"{'-':>9s}"
        print(f"{name:20s} {load_s:7.1f} {info['compute_layers']:6d} {info['total_macs'] / 1e9:6.2f} "
              f"{'yes' if info['differentiable'] else 'no':>4s} {verdict:>6s} {audit_s:8.1f} {fd32:9.1e} {fd64}",
              flush=True)


if __name__ == "__main__":
    main()
