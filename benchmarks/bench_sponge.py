#!/usr/bin/env python
"""Benchmarks of the energy-latency searches (auditor.attacks.energy) on the bundled digits models.

    python benchmarks/bench_sponge.py                 # all parts, prints a table per part
    python benchmarks/bench_sponge.py --parts b,c --n 64 --json out.json

(a) seconds per image for 100 iterations of the white-box attack, on each bundled model;
(b) white-box attack on plain_cnn over >= 50 test images: density / sparsity clean vs attacked,
    unconstrained and L2 eps = 0.9 (targets: sparsity ratio clean/attacked >= 1.5x resp. >= 1.16x,
    >= 99% labels kept);
(c) uniform sampling vs Sponge-GA (plus random noise, top-natural and Sponge-L-BFGS for
    reference): density reached and seconds per example (target: uniform >= GA density at
    <= 1/100 of its time);
(d) hardware-weighted W_l (Cnvlutin runtime shares) vs uniform W_l: simulated Cnvlutin latency
    increase of the white-box attack;
(e) black-box attack on plain_cnn with surrogate_cnn: transfer, ZOO label repair, queries.

Densities are element-weighted shares of non-zeros over the post-ReLU outputs (the audit's
default ``density_tensors: activations``) and, as "layer-input density", over the compute layers'
inputs (what the accelerator streams, the raw image included).  Sparsity = 1 - density.
Costs are the Cnvlutin latency simulated by auditor.hw.  Labels are re-checked with a plain
forward pass.  All runs are seeded.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from auditor.hw import build_cost_model  # noqa: E402
from auditor.model.rewrite.preprocess import Preprocessing  # noqa: E402
from auditor.runtime.session import OnnxClassifier  # noqa: E402
from auditor.attacks.energy import make_search  # noqa: E402
from auditor.attacks.energy.analysis import density  # noqa: E402

MODELS = {
    "plain_cnn": None,
    "lenet5": None,
    "bn_resnet": Preprocessing(mean=[0.1], std=[0.25]),
    "surrogate_cnn": None,
}


def load_data(n: int):
    d = np.load(ROOT / "auditor" / "data" / "digits28_test.npz")
    return d["x"][:n].astype(np.float32) / 255.0, d["y"][:n].astype(np.int64)


def classifier(name: str) -> OnnxClassifier:
    return OnnxClassifier(ROOT / "models" / f"{name}.onnx", MODELS[name], threads=0)


def latency_fn(clf: OnnxClassifier, kind: str = "cnvlutin"):
    cm = build_cost_model(kind)
    layers = list(clf.layers)

    def cost(x):
        return cm.simulate(layers, clf.activations(x)).latency_s
    cost(np.zeros((2, *clf.input_shape), np.float32))  # warm-up (numba cache, sessions) outside the timings
    return cost, cm


def densities(clf: OnnxClassifier, x: np.ndarray) -> dict[str, np.ndarray]:
    out = clf.forward(x)
    relu = {k: out[k] for k in clf.probes.activations}
    inputs = {k: out[k] for k in clf.probes.layer_inputs}
    return {"relu": density(relu), "layer_inputs": density(inputs), "pred": out[clf.logits_name].argmax(1)}


def row(label: str, **kv) -> dict:
    kv = {"case": label, **kv}
    print("  " + "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in kv.items()), flush=True)
    return kv


def part_a(args) -> list[dict]:
    print("(a) white-box attack, 100 iterations: seconds per image")
    x, _ = load_data(args.n_a)
    rows = []
    for name in MODELS:
        clf = classifier(name)
        cost, _ = latency_fn(clf)
        clf.value_and_grad(x[:2], "sparsity", weights=np.ones(len(clf.layer_tensors), np.float32),
                           beta=np.float32(15), c=np.float32(0.5), target=np.zeros(2, np.int64))  # build the gradient graph
        s = make_search("whitebox", iterations=100, select="surrogate", progress=False)
        t = time.perf_counter()
        r = s(clf, x, cost_fn=cost)
        sec = time.perf_counter() - t
        rows.append(row(name, images=len(x), s_per_image=sec / len(x), s_per_image_per_iter=sec / len(x) / 101,
                        latency_ratio=float(r.cost.mean() / r.info["cost_clean"].mean())))
    return rows


def attack_stats(clf, x, res, label: str) -> dict:
    d0, d1 = densities(clf, x), densities(clf, res.x)
    kept = float((d1["pred"] == d0["pred"]).mean())
    sp0, sp1 = 1 - d0["relu"].mean(), 1 - d1["relu"].mean()
    li0, li1 = 1 - d0["layer_inputs"].mean(), 1 - d1["layer_inputs"].mean()
    l2 = res.info["perturbation"]["l2"]
    return row(label, n=len(x), density_clean=float(d0["relu"].mean()), density_attacked=float(d1["relu"].mean()),
               sparsity_ratio=float(sp0 / max(sp1, 1e-12)),
               layer_input_sparsity_ratio=float(li0 / max(li1, 1e-12)),
               latency_ratio=float(res.cost.mean() / res.info["cost_clean"].mean()),
               labels_kept=kept, l2_mean=float(l2.mean()), l2_max=float(l2.max()),
               seconds=float(res.seconds))


def part_b(args) -> list[dict]:
    print(f"(b) white-box attack on plain_cnn, {args.n} test images (Cnvlutin latency selects the best iterate)")
    x, _ = load_data(args.n)
    clf = classifier("plain_cnn")
    cost, _ = latency_fn(clf)
    rows = []
    settings = {
        "unconstrained, paper step 0.02": dict(eps=None, eps_iter=0.02),
        "unconstrained (default step 0.5)": dict(eps=None),
        "eps=0.9 L2 (paper defaults)": dict(eps=0.9),
    }
    settings.update({f"unconstrained {k}": dict(eps=None, **v) for k, v in args.unconstrained_extra.items()})
    settings.update({f"eps=0.9 {k}": dict(eps=0.9, **v) for k, v in args.constrained_extra.items()})
    for label, p in settings.items():
        s = make_search("whitebox", progress=False, **p)
        res = s(clf, x, cost_fn=cost, seed=0)
        rows.append(attack_stats(clf, x, res, label))
    return rows


def part_c(args) -> list[dict]:
    print(f"(c) uniform sampling vs Sponge-GA: density reached and seconds per example ({args.n_c} examples)")
    rows = []
    for name in ("plain_cnn", "bn_resnet"):
        clf = classifier(name)
        cost, _ = latency_fn(clf)
        x_data, _ = load_data(360)
        shape = (args.n_c, *clf.input_shape)
        blank = np.zeros(shape, np.float32)
        noise = np.random.default_rng(0).uniform(0, 1, shape).astype(np.float32)
        rows.append(row(f"{name} random noise", density=float(densities(clf, noise)["relu"].mean())))
        rows.append(row(f"{name} natural (test set)", density=float(densities(clf, x_data)["relu"].mean())))
        runs = [
            ("uniform", make_search("uniform", progress=False), blank),
            ("top_natural", make_search("top_natural", k=args.n_c, progress=False), x_data),
            ("sponge_ga", make_search("sponge_ga", population=args.ga_population, generations=args.ga_generations,
                                      progress=False), blank),
            ("sponge_lbfgs", make_search("sponge_lbfgs", max_iter=args.lbfgs_iter, progress=False), blank),
        ]
        found = {}
        for label, s, xin in runs:
            res = s(clf, xin, cost_fn=cost, seed=0)
            if label in ("uniform", "top_natural"):  # sub-second: median of 3 seeded repeats
                res.seconds = float(np.median([res.seconds] + [s(clf, xin, cost_fn=cost, seed=0).seconds
                                                               for _ in range(2)]))
            d = densities(clf, res.x)
            found[label] = (res, d)
            rows.append(row(f"{name} {label}", density=float(d["relu"].mean()),
                            layer_input_density=float(d["layer_inputs"].mean()),
                            latency_us=float(res.cost.mean() * 1e6), s_per_example=float(res.seconds_per_example),
                            s_total=float(res.seconds), queries=int(res.queries), extra=str(res.info.get("mu", ""))))
        (u, du), (g, dg) = found["uniform"], found["sponge_ga"]
        best = int(np.argmax(g.cost))
        rows.append(row(f"{name} uniform vs GA",
                        density_uniform_minus_ga=float(du["relu"].mean() - dg["relu"].mean()),
                        density_uniform_minus_ga_best=float(du["relu"].mean() - dg["relu"][best]),
                        # GA time per example: the population's N best members share one run ...
                        time_ratio_ga_pool=float(g.seconds_per_example / u.seconds_per_example),
                        # ... or, as in Shumailov et al. / Mueller & Quiring, one GA run per example
                        time_ratio_ga_run=float(g.seconds / u.seconds_per_example)))
    return rows


def part_d(args) -> list[dict]:
    print(f"(d) hardware-weighted vs uniform layer weights, plain_cnn, {args.n} images, Cnvlutin latency")
    x, _ = load_data(args.n)
    clf = classifier("plain_cnn")
    cost, cm = latency_fn(clf)
    shares = cm.simulate(list(clf.layers), clf.activations(x)).runtime_shares()
    print("  Cnvlutin runtime shares per layer:", np.round(shares, 4).tolist())
    rows = []
    for eps in (0.9, None):
        for label, w in (("uniform W_l", None), ("hardware W_l", shares)):
            for select in ("surrogate", "cost"):
                s = make_search("whitebox", eps=eps, select=select, progress=False, **args.d_extra)
                res = s(clf, x, cost_fn=cost, layer_weights=w, seed=0)
                kept = float(res.label_kept.mean())
                rows.append(row(f"eps={eps} {label} select={select}",
                                latency_increase=float(res.cost.mean() / res.info["cost_clean"].mean()),
                                density_attacked=float(densities(clf, res.x)["relu"].mean()), labels_kept=kept))
    return rows


def part_e(args) -> list[dict]:
    print(f"(e) black-box attack on plain_cnn from surrogate_cnn, {args.n} images")
    x, _ = load_data(args.n)
    clf, sur = classifier("plain_cnn"), classifier("surrogate_cnn")
    cost, _ = latency_fn(clf)
    rows = []
    for eps in (0.9, None):
        res = make_search("blackbox", surrogate=sur, eps=eps, progress=False)(clf, x, cost_fn=cost, seed=0)
        st = attack_stats(clf, x, res, f"eps={eps}")
        by, cnt = np.unique(res.info["restored_by"].astype(str), return_counts=True)
        q = res.info["stage2_queries"]
        st.update(row(f"eps={eps} stage 2", transfer_label_kept=float(res.info["transfer_label_kept"].mean()),
                      restored_by=dict(zip(by.tolist(), cnt.tolist())),
                      stage2_queries_mean=float(q[q > 0].mean()) if (q > 0).any() else 0.0,
                      stage1_latency_ratio=float(res.info["cost_stage1"].mean() / res.info["cost_clean"].mean()),
                      target_queries=int(res.info["target_queries"])))
        rows.append(st)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parts", default="a,b,c,d,e")
    ap.add_argument("--n", type=int, default=64, help="test images for (b) and (d)")
    ap.add_argument("--n-a", type=int, default=16, help="images for (a)")
    ap.add_argument("--n-c", type=int, default=32, help="examples generated in (c)")
    ap.add_argument("--ga-population", type=int, default=100)
    ap.add_argument("--ga-generations", type=int, default=100)
    ap.add_argument("--lbfgs-iter", type=int, default=100)
    ap.add_argument("--extra", default="{}", help='JSON: {"unconstrained": {label: params}, "constrained": {...}, "d": {...}}')
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    extra = json.loads(args.extra)
    args.unconstrained_extra = extra.get("unconstrained", {})
    args.constrained_extra = extra.get("constrained", {})
    args.d_extra = extra.get("d", {})
    out = {}
    t0 = time.perf_counter()
    for part in args.parts.split(","):
        out[part] = {"a": part_a, "b": part_b, "c": part_c, "d": part_d, "e": part_e}[part.strip()](args)
    print(f"total {time.perf_counter() - t0:.1f} s")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
