#!/usr/bin/env python
"""Seconds per input of the white-box sparsity attack (Krithivasan et al. Algorithm 1) on an
ImageNet-sized model: ``iterations`` gradient steps of the sparsity objective per input, the
candidates scored by the cost model every ``every`` iterations, as the audit runs it.

Two ways of scoring the candidates, interleaved in one process (``--repeat`` rounds, medians):

* ``gradient pass``: the cost of an iterate from the compute layers' inputs its own gradient pass
  computed (what the search does with the audit's ``cost_fn``)
* ``forward pass``:  the cost from a forward pass of its own per scored iterate (what the search
  does with a cost function it cannot see into; the search's only way before)

With ``--spin``, both again with a gradient session whose idle workers spin (onnxruntime's
default; the classifier's gradient sessions do not spin).  All must return the
same inputs and costs (the benchmark checks it).  The time of each part of
the search (gradient runs, forward runs, cost simulation, the rest) is timed around the
classifier's and the cost model's calls (each part's own time: the simulation inside a gradient
run counts as simulation).

    python benchmarks/bench_whitebox.py [--model mobilenet_v2] [--inputs 2] [--iterations 100]
        [--threads 2] [--hw cnvlutin] [--every 1] [--repeat 1] [--spin] [--only gradient|forward]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import imagenet_models  # noqa: E402
from auditor.runtime.evaluate import cost_fn, evaluate  # noqa: E402
from auditor.hw import build_cost_model  # noqa: E402
import auditor.runtime.session as session_mod  # noqa: E402
from auditor.runtime.session import OnnxClassifier  # noqa: E402
from auditor.attacks.energy import make_search  # noqa: E402


class timed:
    """Replaces ``obj.name`` by a wrapper that adds its own seconds to ``spent[key]``: the time
    of the timed calls it makes (the cost simulation inside a gradient run) counts for them only."""

    stack: list = []

    def __init__(self, obj, name: str, spent: dict, key: str):
        fn = getattr(obj, name)

        def wrapper(*a, **k):
            t = time.perf_counter()
            timed.stack.append(0.0)
            try:
                return fn(*a, **k)
            finally:
                took = time.perf_counter() - t
                inner = timed.stack.pop()
                spent[key] += took - inner
                if timed.stack:
                    timed.stack[-1] += took
        setattr(obj, name, wrapper)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="mobilenet_v2", choices=imagenet_models.NAMES)
    ap.add_argument("--inputs", type=int, default=2)
    ap.add_argument("--iterations", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--hw", default="cnvlutin")
    ap.add_argument("--every", type=int, default=1, help="select_every")
    ap.add_argument("--repeat", type=int, default=1, help="rounds of both variants")
    ap.add_argument("--only", choices=("gradient", "forward"), help="run one variant only")
    ap.add_argument("--spin", action="store_true", help="both scorings again with a gradient session whose workers spin")
    ap.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "auditor-imagenet"))
    args = ap.parse_args(argv)
    path = imagenet_models.cached(args.model, args.cache)
    clf = OnnxClassifier(path, threads=args.threads)
    d = yaml.safe_load((ROOT / "hwprofiles" / f"{args.hw}.yaml").read_text())
    cm = build_cost_model(d["cost_model"], d["params"])
    x = np.random.default_rng(0).random((args.inputs,) + clf.input_shape, dtype=np.float32)
    ev = evaluate(clf, x, cm)  # also compiles the cost model's kernels
    w = ev.cost.runtime_shares()
    search = make_search("whitebox", iterations=args.iterations, select_every=args.every, progress=False)
    t = time.perf_counter()
    quiet = clf._grad_runner("sparsity")
    build = time.perf_counter() - t
    spinning = None
    if args.spin:  # the same gradient graph in a session whose idle workers spin
        plain = session_mod.Runner
        session_mod.Runner = lambda *a, **k: plain(*a, **{**k, "spin": True})
        try:
            del clf._grad_runners["sparsity"]
            spinning = clf._grad_runner("sparsity")
        finally:
            session_mod.Runner = plain
            clf._grad_runners["sparsity"] = quiet
    spent: dict = defaultdict(float)
    timed(clf, "value_and_grad", spent, "gradient runs")
    timed(clf, "value_grad_measure", spent, "gradient runs")
    timed(clf, "forward", spent, "forward runs")
    timed(cm, "simulate", spent, "cost simulation")
    f = cost_fn(clf, cm)
    variants = {"gradient pass": f, "forward pass": lambda z: f(z)}
    if args.only:
        variants = {k: v for k, v in variants.items() if k.startswith(args.only)}
    if spinning is not None:
        variants.update({f"{k}, spinning workers": v for k, v in variants.items()})
    seconds, parts, results = defaultdict(list), defaultdict(list), {}
    for _ in range(args.repeat):
        for name, fn in variants.items():
            clf._grad_runners["sparsity"] = spinning if name.endswith("spinning workers") else quiet
            spent.clear()
            t = time.perf_counter()
            res = search(clf, x, cost_fn=fn, layer_weights=w, labels=ev.pred, seed=0)
            seconds[name].append((time.perf_counter() - t) / args.inputs)
            parts[name].append({k: v / args.inputs for k, v in spent.items()})
            results[name] = (res.x, res.cost, res.info["best_iteration"])
    print(f"{args.model} whitebox, {args.iterations} iterations, select_every {args.every}, {args.inputs} inputs, "
          f"{args.threads} threads, gradient batch {clf._grad_runner('sparsity')[0].batch_size}, gradient build "
          f"{build:.1f} s, load {os.getloadavg()[0]:.1f}")
    keys = ("gradient runs", "forward runs", "cost simulation")
    print("| scoring | s per input (median) | " + " | ".join(keys) + " | rest |")
    print("|---|---|---|---|---|---|")
    for name in variants:
        med = float(np.median(seconds[name]))
        p = [float(np.median([q.get(k, 0.0) for q in parts[name]])) for k in keys]
        print(f"| {name} | {med:.1f} | " + " | ".join(f"{v:.1f}" for v in p) + f" | {med - sum(p):.1f} |")
    if len(results) > 1:
        a, *others = results.values()
        same = all(np.array_equal(u, v) for b in others for u, v in zip(a, b))
        print("same inputs, costs and iterations from all:", same)
        if not same:
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
