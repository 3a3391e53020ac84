#!/usr/bin/env python
"""Coverage of torchvision architectures exported the ordinary way (needs the optional torch extra).

Each architecture (random weights, ``weights=None``) is exported by ``benchmarks/torchvision_models.py``
with ``torch.onnx.export`` (``--exporter dynamo``, the default since torch 2.9, and/or
``torchscript``, the legacy exporter; dynamic batch) at the opsets and input sizes given, then goes
through what a user runs: load (fold + upgrade + checks), ``auditor inspect`` (compute layers, MACs,
differentiable), a 2-input audit on the Cnvlutin, SparCE and dense profiles with the white-box
sparsity attack and PGD (tiny budgets: the point is that every stage reaches a verdict), and the
cross-entropy input gradient against float32 finite differences.  A stage that fails prints its
one-line error in the table instead of stopping the run.  ``fd32 rel`` is a float32 central
difference along the gradient: on mobilenet_v2 and efficientnet_b0 at 32x32 it reads 1e-2 to 3e-2
because its step crosses activation kinks (calibrated batch normalisations of 1x1 maps have large
gains), not because the gradient is off: on a cut of mobilenet_v2 the float64 difference is 1e-4
off at h = 1e-6 and 1e-12 at h = 1e-7 (``auditor.grad.check.directional_check``).  ``opset`` is the requested one, ``file``
the one the exported file declares (the dynamo exporter keeps 18 when it cannot convert down).

Without torch it prints a skip line and exits 0.

    pip install torch torchvision
    python benchmarks/bench_torchvision.py [--size 224 --size 32] [--opset 17 --opset 13]
        [--exporter dynamo --exporter torchscript] [--cache DIR] [ARCH ...]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torchvision_models as tvm  # noqa: E402
from bench_light_models import audit, gradient_fd32  # noqa: E402

from auditor.errors import AuditorError  # noqa: E402
from auditor.model.inspect import inspect_model  # noqa: E402
from auditor.model.load import load_model  # noqa: E402
from auditor.runtime.session import OnnxClassifier  # noqa: E402


def first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__


def row(arch: str, size: int, opset: int, exporter: str, cache: Path) -> str:
    head = f"{arch:20s} {exporter:11s} {size:4d} {opset:5d}"
    try:
        path = tvm.cached(arch, cache, size, opset, exporter)
    except Exception as e:  # the exporter's own failure, not ours
        return f"{head}  export failed: {first_line(e)}"
    head += f" {tvm.opset_of(path):4d}"
    stage = "load"
    try:
        t = time.perf_counter()
        m = load_model(path)
        load_s = time.perf_counter() - t
        stage = "inspect"
        info = inspect_model(m)
        stage = "session"
        clf = OnnxClassifier(m)
        x = np.random.default_rng(1).random((2, 3, size, size), dtype=np.float32)
        stage = "audit"
        verdict, audit_s = audit(m, x, clf.predict(x))
        stage = "gradient"
        fd32 = gradient_fd32(clf, x[:1])
    except AuditorError as e:
        return f"{head}  {stage} error: {e}"
    except Exception as e:  # a bug: name the stage and the exception, keep going
        return f"{head}  {stage} crashed: {type(e).__name__}: {first_line(e)}"
    return (f"{head} {load_s:7.1f} {info['compute_layers']:6d} {info['total_macs'] / 1e9:6.2f} "
            f"{'yes' if info['differentiable'] else 'no':>4s} {verdict:>6s} {audit_s:8.1f} {fd32:9.1e}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("archs", nargs="*", default=list(tvm.ARCHS))
    ap.add_argument("--size", type=int, action="append", help="input height = width (default 224 and 32)")
    ap.add_argument("--opset", type=int, action="append", help="requested export opset (default 17)")
    ap.add_argument("--exporter", action="append", choices=tvm.EXPORTERS, help="default: both")
    ap.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "auditor-torchvision"),
                    help="folder of the exported models (kept: later runs reuse them)")
    args = ap.parse_args(argv)
    mods = tvm.torch_or_none()
    if mods is None:
        print("skipped: bench_torchvision needs the optional torch extra (pip install torch torchvision)")
        return 0
    print(f"torch {mods[0].__version__}, torchvision {mods[1].__version__}", flush=True)
    print(f"{'model':20s} {'exporter':11s} {'size':>4s} {'opset':>5s} {'file':>4s} {'load s':>7s} {'layers':>6s} "
          f"{'GMACs':>6s} {'diff':>4s} {'audit':>6s} {'audit s':>8s} {'fd32 rel':>9s}", flush=True)
    for arch in args.archs:
        for size in args.size or [224, 32]:
            for opset in args.opset or [17]:
                for exporter in args.exporter or list(tvm.EXPORTERS):
                    print(row(arch, size, opset, exporter, Path(args.cache)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
