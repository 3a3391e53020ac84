#!/usr/bin/env python
"""Evasion-attack benchmarks on the bundled models.

1. PGD-40 speed: seconds per 100 images on each bundled model through the project's ONNX
   gradients (``OnnxClassifier``), Linf ε = 0.3, both as run (inputs stop once fooled) and for 40
   full gradient steps.
2. The robustness table: clean accuracy, then robust accuracy under FGSM, PGD-40 and Square
   (Linf 0.1 / 0.2 / 0.3) and under C&W, DeepFool and HopSkipJump (L2 1.0 / 2.0 / 3.0, plus the
   median minimal L2), for each model as shipped, under HashNet 1/16 and under gradient
   inhibition τ = 0.1 — and the transfer rate of PGD-40 (Linf 0.2) examples from the original
   model to the reshaped one and back.  Every counted example is re-verified by a plain
   onnxruntime session of the deployed model.
3. The RobustBench table (``--aa-n`` images, default 50): robust accuracy and seconds per 100
   images of PGD-40 with 3 restarts (120 gradients), APGD-CE at 100 and at 120 steps (the
   equal gradient budget), APGD-DLR, APGD-T, FAB-T, Square and the ``autoattack`` ensemble at
   Linf 0.03 / 0.05 / 0.1 and, in L2 (0.5 / 1.0 / 1.5), APGD-CE, Square, ``autoattack``, plus the
   minimal-norm Boundary Attack (median L2) and Local Search Attack (median L0), each model as
   shipped and under gradient inhibition τ = 0.1; then the two targets: APGD-CE-100 at least as
   strong as PGD-40 x3, and ``autoattack`` at most every single attack's robust accuracy.

Usage::

    python benchmarks/bench_attacks.py                 # 100 test images, everything
    python benchmarks/bench_attacks.py --speed-only
    python benchmarks/bench_attacks.py --models lenet5 --n 50 --json out.json
    python benchmarks/bench_attacks.py --aa-only --aa-n 50   # only the RobustBench table
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

from auditor.attacks.evasion import PGD  # noqa: E402
from auditor.model.rewrite.reshape import clean_accuracy, gradient_inhibition, hashnet  # noqa: E402
from auditor.pipeline.robustness import ort_classifier, robustness_audit, transfer_audit  # noqa: E402

MODELS = {"plain_cnn": None, "lenet5": None, "bn_resnet": (0.1, 0.25), "surrogate_cnn": None}
LINF = [0.1, 0.2, 0.3]
L2 = [1.0, 2.0, 3.0]
#: budgets of the RobustBench table: below the MNIST standard (0.3 / 2.0), where these undefended
#: digits models are not yet broken by every attack, so that the attacks can be told apart
LINF_AA = [0.03, 0.05, 0.1]
L2_AA = [0.5, 1.0, 1.5]


def budgets(quick: bool) -> list[tuple]:
    """The attacks of the table and their budgets (reduced with --quick)."""
    return [
        ("fgsm", {}, "linf", LINF),
        ("pgd", {"steps": 40}, "linf", LINF),
        ("square", {"n_queries": 200 if quick else 1000}, "linf", LINF),
        ("cw", {"steps": 20 if quick else 50, "binary_search_steps": 3 if quick else 5}, "l2", L2),
        ("deepfool", {}, "l2", L2),
        ("hsj", {"steps": 3 if quick else 10, "max_evals": 1000}, "l2", L2),
    ]


def aa_budgets(quick: bool) -> list[tuple]:
    """The attacks of the RobustBench table: (label, name, params, norm, epsilons)."""
    q = 300 if quick else 1000
    steps = 20 if quick else 100
    return [
        ("PGD-40x3", "pgd", {"steps": 40, "restarts": 3}, "linf", LINF_AA),
        (f"APGD-CE-{steps}", "apgd", {"steps": steps}, "linf", LINF_AA),
        (f"APGD-CE-{int(steps * 1.2)}", "apgd", {"steps": int(steps * 1.2)}, "linf", LINF_AA),
        ("APGD-DLR", "apgd", {"steps": steps, "loss": "dlr"}, "linf", LINF_AA),
        ("APGD-T", "apgd_t", {"steps": steps}, "linf", LINF_AA),
        ("FAB-T", "fab", {"steps": steps, "n_target_classes": 9}, "linf", LINF_AA),
        ("Square", "square", {"n_queries": q}, "linf", LINF_AA),
        ("AutoAttack", "autoattack", {"steps": steps, "n_queries": q}, "linf", LINF_AA),
        ("APGD-CE L2", "apgd", {"steps": steps, "norm": "l2"}, "l2", L2_AA),
        ("Square L2", "square", {"n_queries": q, "norm": "l2"}, "l2", L2_AA),
        ("AutoAttack L2", "autoattack", {"steps": steps, "n_queries": q, "norm": "l2"}, "l2", L2_AA),
        ("Boundary", "boundary", {"steps": 200 if quick else 1000}, "l2", L2_AA),
        ("LSA", "lsa", {"rounds": 30 if quick else 150, "d": 1 if quick else 2}, "l0", None),
    ]


def aa_table(name: str, x, y, quick: bool, threads: int, seed: int,
             which=("original", "grad_inhib_0.1")) -> dict:
    """Robust accuracy per attack and ε, seconds per 100 images, on the original model and under
    gradient inhibition τ = 0.1 (every example re-verified by a plain onnxruntime session)."""
    path = ROOT / "models" / f"{name}.onnx"
    pre = MODELS[name]
    out = {"model": name, "variants": {}}
    for vname, proto in variants(path).items():
        if vname not in which:
            continue
        clf, ver = make_classifier(proto, pre, threads), ort_classifier(proto, pre)
        rows = {}
        for label, att, params, norm, eps in aa_budgets(quick):
            entry = {"name": att, "params": dict(params), "epsilons": eps}
            if norm != "l0":
                entry["norm"] = norm
            t = time.perf_counter()
            rep = robustness_audit(clf, x, y, [entry], verify=ver, seed=seed)
            a = rep["attacks"][0]
            rows[label] = {"robust_accuracy": [r["robust_accuracy"] for r in a["results"]],
                           "epsilons": [r["epsilon"] for r in a["results"]],
                           "seconds_per_100": (time.perf_counter() - t) * 100.0 / len(x),
                           "clean_accuracy": rep["clean_accuracy"],
                           "n_unverified": sum(r["n_unverified"] for r in a["results"])}
            mp = a.get("minimal_perturbation")
            if mp:
                rows[label]["median"] = mp["median_distance"]
            if a.get("ensemble"):
                rows[label]["ensemble"] = a["ensemble"]
            print(f"  {name}/{vname} {label}: robust accuracy {rows[label]['robust_accuracy']}, median "
                  f"{rows[label].get('median')}, {rows[label]['seconds_per_100']:.1f}s/100", file=sys.stderr, flush=True)
        out["variants"][vname] = rows
    return out


def print_aa_table(results: list[dict], quick: bool = False) -> None:
    labels = [b[0] for b in aa_budgets(quick)]
    print("| model | variant | attack | " + " | ".join(f"ε {e:g}" for e in LINF_AA) + " | s / 100 images |")
    print("|---|---|---|---|---|---|---|")
    for res in results:
        for vname, rows in res["variants"].items():
            for label, r in rows.items():
                if "median" in r:
                    unit = "L0" if label.startswith("LSA") else "L2"
                    cells = ([_cell(v) for v in r["robust_accuracy"]] + ["", "", ""])[:3] if r["robust_accuracy"] \
                        else [f"median {unit} {_cell(r['median'])}", "", ""]
                    if r["robust_accuracy"]:
                        cells[-1] = (cells[-1] + f" (median {unit} {_cell(r['median'])})").strip()
                else:
                    cells = [_cell(v) for v in r["robust_accuracy"]]
                print(f"| {res['model']} | {vname} | {label} | " + " | ".join(cells)
                      + f" | {r['seconds_per_100']:.1f} |")
    print("(L2 rows: ε " + " / ".join(f"{e:g}" for e in L2_AA) + ")")
    print()
    print("Targets:")
    for res in results:
        for vname, rows in res["variants"].items():
            pgd = rows["PGD-40x3"]["robust_accuracy"]
            ap = rows[labels[1]]["robust_accuracy"]
            ok1 = all(a <= p + 1e-12 for a, p in zip(ap, pgd))
            worst = []
            for norm_rows, aa in ((("PGD-40x3", "APGD-CE-", "APGD-DLR", "APGD-T", "FAB-T", "Square"), "AutoAttack"),
                                  (("APGD-CE L2", "Square L2", "Boundary"), "AutoAttack L2")):
                singles = [r["robust_accuracy"] for k, r in rows.items()
                           if any(k.startswith(p) for p in norm_rows) and r["robust_accuracy"]]
                worst.append(all(a <= min(s[j] for s in singles) + 1e-12
                                 for j, a in enumerate(rows[aa]["robust_accuracy"])))
            print(f"  {res['model']}/{vname}: {labels[1]} <= PGD-40x3 at every ε: {ok1}; "
                  f"autoattack <= every single attack (Linf, L2): {worst[0]}, {worst[1]}")
    unver = sum(r["n_unverified"] for res in results for rows in res["variants"].values() for r in rows.values())
    print(f"Adversarial examples rejected by the independent re-check: {unver}")


def load_data(n: int):
    d = np.load(ROOT / "auditor" / "data" / "digits28_test.npz")
    return (d["x"][:n] / 255.0).astype(np.float32), d["y"][:n].astype(np.int64)


def make_classifier(model, pre, threads: int):
    from auditor.model.rewrite.preprocess import Preprocessing
    from auditor.runtime.session import OnnxClassifier

    p = Preprocessing(mean=[pre[0]], std=[pre[1]]) if pre else None
    return OnnxClassifier(model, p, threads=threads, batch_size=256)


def variants(path: Path) -> dict:
    from auditor.model.load import load_model

    proto = load_model(path)
    return {"original": proto, "hashnet_1/16": hashnet(proto, 1 / 16, seed=0),
            "grad_inhib_0.1": gradient_inhibition(proto, 0.1)}


def speed(name: str, x, y, threads: int) -> dict:
    clf = make_classifier(str(ROOT / "models" / f"{name}.onnx"), MODELS[name], threads)
    x, y = x[:100], y[:100]
    clf.value_and_grad(x[:2], "ce", target=y[:2])  # build the gradient session first
    t = time.perf_counter()
    PGD(steps=40)(clf, x, y, [0.3])
    as_run = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(40):
        clf.value_and_grad(x, "ce", target=y)
    full = time.perf_counter() - t
    scale = 100.0 / len(x)
    return {"model": name, "pgd40_s_per_100": as_run * scale, "pgd40_full_steps_s_per_100": full * scale}


def table(name: str, x, y, attacks, threads: int, seed: int) -> dict:
    path = ROOT / "models" / f"{name}.onnx"
    pre = MODELS[name]
    out = {"model": name, "variants": {}, "transfer": {}}
    clfs, verifiers = {}, {}
    for vname, proto in variants(path).items():
        clfs[vname] = make_classifier(proto, pre, threads)
        verifiers[vname] = ort_classifier(proto, pre)
        t = time.perf_counter()
        rep = robustness_audit(clfs[vname], x, y, attacks, verify=verifiers[vname], seed=seed)
        rep["seconds"] = time.perf_counter() - t
        out["variants"][vname] = rep
        print(f"  {name} / {vname}: {rep['seconds']:.0f}s", file=sys.stderr, flush=True)
    # transferability of PGD-40 Linf 0.2 examples: original -> reshaped and reshaped -> original
    for v in ("hashnet_1/16", "grad_inhib_0.1"):
        t = transfer_audit(clfs["original"], clfs[v], x, y, ("pgd", {"steps": 40}, "linf", [0.2]),
                           verify_a=verifiers["original"], verify_b=verifiers[v], seed=seed)
        r = t["results"][0]
        out["transfer"][v] = {"original_to_reshaped": r["a_to_b"], "reshaped_to_original": r["b_to_a"],
                              "n_common_correct": t["n_common_correct"]}
    return out


def _plain(o):
    """JSON-safe copy: numpy scalars to Python, NaN/inf to None."""
    if isinstance(o, dict):
        return {str(k): _plain(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_plain(v) for v in o]
    if isinstance(o, (float, np.floating)):
        return float(o) if np.isfinite(o) else None
    if isinstance(o, np.integer):
        return int(o)
    return o


def _cell(v) -> str:
    return "  -  " if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.2f}"


def print_table(results: list[dict]) -> None:
    head = ["model", "variant", "clean"]
    head += [f"FGSM {e:g}" for e in LINF] + [f"PGD-40 {e:g}" for e in LINF] + [f"Square {e:g}" for e in LINF]
    head += [f"C&W {e:g}" for e in L2] + ["C&W med L2"] + [f"DeepFool {e:g}" for e in L2] + ["DF med L2"]
    head += [f"HSJ {e:g}" for e in L2] + ["HSJ med L2"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for res in results:
        for vname, rep in res["variants"].items():
            row = [res["model"], vname, _cell(rep["clean_accuracy"])]
            by = {a["attack"]: a for a in rep["attacks"]}
            for name in ("fgsm", "pgd", "square", "cw", "deepfool", "hsj"):
                a = by[name]
                row += [_cell(r["robust_accuracy"]) for r in a["results"]]
                if a.get("minimal_perturbation"):
                    row.append(_cell(a["minimal_perturbation"]["median_l2"]))
            print("| " + " | ".join(row) + " |")
    print()
    print("Transfer rate of PGD-40 Linf 0.2 examples (among inputs both models classify correctly):")
    print("| model | variant | both correct (of n) | original→reshaped | reshaped→original |")
    print("|---|---|---|---|---|")
    for res in results:
        for v, t in res["transfer"].items():
            print(f"| {res['model']} | {v} | {t['n_common_correct']} | {_cell(t['original_to_reshaped'])} | "
                  f"{_cell(t['reshaped_to_original'])} |")
    print()
    unver = sum(r["n_unverified"] for res in results for rep in res["variants"].values()
                for a in rep["attacks"] for r in a["results"])
    print(f"Adversarial examples reported by an attack but rejected by the independent re-check: {unver}")
    print("Seconds per variant (all attacks): " + ", ".join(
        f"{r['model']}/{v}: {rep['seconds']:.0f}" for r in results for v, rep in r["variants"].items()))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100, help="test images for the table (default 100)")
    ap.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--speed-only", action="store_true", help="only the PGD-40 timing")
    ap.add_argument("--quick", action="store_true", help="smaller attack budgets (smoke run)")
    ap.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0 = all cores)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="write every number to this file")
    ap.add_argument("--aa-n", type=int, default=50, help="test images for the RobustBench table (default 50)")
    ap.add_argument("--aa-only", action="store_true", help="only the RobustBench table")
    ap.add_argument("--no-aa", action="store_true", help="skip the RobustBench table")
    ap.add_argument("--aa-variants", nargs="*", default=["original", "grad_inhib_0.1"],
                    choices=["original", "grad_inhib_0.1"], help="model variants of the RobustBench table")
    args = ap.parse_args(argv)

    x, y = load_data(max(args.n, 100, args.aa_n))
    out = {"speed": [], "table": [], "budgets": [list(a) for a in budgets(args.quick)], "n": args.n}
    if not args.no_aa:
        print(f"RobustBench-style table, {args.aa_n} test images, robust accuracy:")
        out["aa"] = [aa_table(name, x[:args.aa_n], y[:args.aa_n], args.quick, args.threads, args.seed,
                              args.aa_variants) for name in args.models]
        out["aa_budgets"] = [list(b) for b in aa_budgets(args.quick)]
        print_aa_table(out["aa"], args.quick)
        print()
    if args.aa_only:
        if args.json:
            Path(args.json).write_text(json.dumps(_plain(out), indent=1, allow_nan=False))
        return 0
    print("PGD-40 (Linf 0.3), seconds per 100 images:")
    print("| model | as run (early stop) | 40 full steps |")
    print("|---|---|---|")
    for name in args.models:
        s = speed(name, x, y, args.threads)
        out["speed"].append(s)
        print(f"| {name} | {s['pgd40_s_per_100']:.2f} | {s['pgd40_full_steps_s_per_100']:.2f} |", flush=True)
    print()
    print("Clean accuracy (360 test images, onnxruntime) under post-hoc HashNet / gradient inhibition:")
    print("| model | original | HashNet 1/8 | HashNet 1/16 | HashNet 1/64 | grad. inhibition τ=0.1 |")
    print("|---|---|---|---|---|---|")
    from auditor.model.load import load_model

    xa, ya = load_data(360)
    out["reshape_accuracy"] = {}
    for name in args.models:
        proto = load_model(ROOT / "models" / f"{name}.onnx")
        pre = MODELS[name]
        accs = [clean_accuracy(proto, xa, ya, pre)] + [clean_accuracy(hashnet(proto, r), xa, ya, pre)
                                                       for r in (1 / 8, 1 / 16, 1 / 64)]
        accs.append(clean_accuracy(gradient_inhibition(proto, 0.1), xa, ya, pre))
        out["reshape_accuracy"][name] = accs
        print(f"| {name} | " + " | ".join(f"{a:.3f}" for a in accs) + " |", flush=True)
    print()
    if not args.speed_only:
        attacks = budgets(args.quick)
        print("Budgets: " + "; ".join(f"{a[0]} {a[1]}" for a in attacks))
        print(f"Robust accuracy on {args.n} test images (med L2 = median minimal L2 over the clean-correct "
              "inputs, failures counted as infinitely far):\n")
        for name in args.models:
            out["table"].append(table(name, x[:args.n], y[:args.n], attacks, args.threads, args.seed))
        print_table(out["table"])
    if args.json:
        Path(args.json).write_text(json.dumps(_plain(out), indent=1, allow_nan=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
