#!/usr/bin/env python
"""Seconds per input of the white-box sparsity attack (Krithivasan et al. Algorithm 1) on an
ImageNet-sized model: ``iterations`` gradient steps of the sparsity objective per input, the
candidates scored by the cost model every ``every`` iterations, as the audit runs it.

    python benchmarks/bench_whitebox.py [--model mobilenet_v2] [--inputs 2] [--iterations 100]
        [--threads 2] [--hw cnvlutin]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import imagenet_models  # noqa: E402
from auditor.runtime.evaluate import cost_fn, evaluate  # noqa: E402
from auditor.hw import build_cost_model  # noqa: E402
from auditor.runtime.session import OnnxClassifier  # noqa: E402
from auditor.attacks.energy import make_search  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="mobilenet_v2", choices=imagenet_models.NAMES)
    ap.add_argument("--inputs", type=int, default=2)
    ap.add_argument("--iterations", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--hw", default="cnvlutin")
    ap.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "auditor-imagenet"))
    args = ap.parse_args(argv)
    path = imagenet_models.cached(args.model, args.cache)
    clf = OnnxClassifier(path, threads=args.threads)
    d = yaml.safe_load((ROOT / "hwprofiles" / f"{args.hw}.yaml").read_text())
    cm = build_cost_model(d["cost_model"], d["params"])
    x = np.random.default_rng(0).random((args.inputs,) + clf.input_shape, dtype=np.float32)
    ev = evaluate(clf, x, cm)
    w = ev.cost.runtime_shares()
    search = make_search("whitebox", iterations=args.iterations, progress=False)
    t = time.perf_counter()
    clf._grad_runner("sparsity")
    build = time.perf_counter() - t
    t = time.perf_counter()
    res = search(clf, x, cost_fn=cost_fn(clf, cm), layer_weights=w, labels=ev.pred, seed=0)
    dt = time.perf_counter() - t
    print(f"{args.model} whitebox {args.iterations} iterations on {args.inputs} inputs, {args.threads} threads, "
          f"load {os.getloadavg()[0]:.1f}: {dt / args.inputs:.1f} s per input (gradient build {build:.1f} s, "
          f"batch {clf._grad_runner('sparsity')[0].batch_size}); queries {res.queries}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
