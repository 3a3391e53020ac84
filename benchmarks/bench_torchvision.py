#!/usr/bin/env python
"""Coverage of torchvision architectures exported the ordinary way (needs the optional torch extra).

Each architecture (random weights, ``weights=None``) is exported with ``torch.onnx.export`` (the
TorchScript exporter, dynamic batch) at the opsets and input sizes given, then goes through what a
user runs: load (fold + upgrade + checks), ``auditor inspect`` (compute layers, MACs,
differentiable), a 2-input audit on the Cnvlutin, SparCE and dense profiles with the white-box
sparsity attack and PGD (tiny budgets: the point is that every stage reaches a verdict), and the
cross-entropy input gradient against float32 finite differences.  A stage that fails prints its
one-line error in the table instead of stopping the run.

    pip install torch torchvision
    python benchmarks/bench_torchvision.py [--size 224 --size 32] [--opset 13 --opset 17] [ARCH ...]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_light_models import audit, gradient_fd32  # noqa: E402

from auditor.errors import AuditorError  # noqa: E402
from auditor.model.inspect import inspect_model  # noqa: E402
from auditor.model.load import load_model  # noqa: E402
from auditor.runtime.session import OnnxClassifier  # noqa: E402

ARCHS = ["resnet18", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "squeezenet1_1",
         "shufflenet_v2_x1_0", "densenet121", "vgg11_bn", "regnet_y_400mf", "convnext_tiny"]


def export(torch, torchvision, arch: str, size: int, opset: int, path: Path) -> None:
    net = torchvision.models.get_model(arch, weights=None).eval()
    dummy = torch.rand(1, 3, size, size)
    kwargs = dict(opset_version=opset, input_names=["input"], output_names=["logits"],
                  dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}})
    with torch.no_grad():
        try:
            torch.onnx.export(net, dummy, str(path), dynamo=False, **kwargs)
        except TypeError:  # torch before 2.5 has no `dynamo` keyword
            torch.onnx.export(net, dummy, str(path), **kwargs)


def row(torch, torchvision, arch: str, size: int, opset: int) -> str:
    head = f"{arch:20s} {size:4d} {opset:5d}"
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"{arch}.onnx"
        try:
            export(torch, torchvision, arch, size, opset, path)
        except Exception as e:  # the exporter's own failure, not ours
            return f"{head}  export failed: {str(e).splitlines()[0][:80] if str(e) else type(e).__name__}"
        try:
            t = time.perf_counter()
            m = load_model(path)
            load_s = time.perf_counter() - t
            info = inspect_model(m)
            clf = OnnxClassifier(m)
            x = np.random.default_rng(1).random((2, 3, size, size), dtype=np.float32)
            verdict, audit_s = audit(m, x, clf.predict(x))
            fd32 = gradient_fd32(clf, x[:1])
        except AuditorError as e:
            return f"{head}  error: {e}"
        return (f"{head} {load_s:7.1f} {info['compute_layers']:6d} {info['total_macs'] / 1e9:6.2f} "
                f"{'yes' if info['differentiable'] else 'no':>4s} {verdict:>6s} {audit_s:8.1f} {fd32:9.1e}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("archs", nargs="*", default=ARCHS)
    ap.add_argument("--size", type=int, action="append", help="input height = width (default 224 and 32)")
    ap.add_argument("--opset", type=int, action="append", help="export opset (default 13)")
    args = ap.parse_args()
    try:
        import torch
        import torchvision
    except ImportError as e:
        sys.exit(f"this benchmark needs the optional torch extra (pip install torch torchvision): {e}")
    print(f"{'model':20s} {'size':>4s} {'opset':>5s} {'load s':>7s} {'layers':>6s} {'GMACs':>6s} {'diff':>4s} "
          f"{'audit':>6s} {'audit s':>8s} {'fd32 rel':>9s}", flush=True)
    for arch in args.archs:
        for size in args.size or [224, 32]:
            for opset in args.opset or [13]:
                print(row(torch, torchvision, arch, size, opset), flush=True)


if __name__ == "__main__":
    main()
