#!/usr/bin/env python
"""Defensive Approximation on the bundled LeNet-5: BPDA attack speed and the full audit table.

1. Seconds per image of the white-box BPDA PGD-100 attack (Linf, ε = 0.3 by default) on the
   approximate LeNet-5 (every Conv and Gemm on the da-reference Ax-FPM), batch of ``--batch``
   images: the attack call as the audit runs it (it stops early on inputs it has fooled), and a
   forced 100 BPDA steps on the whole batch (one approximate forward + one onnxruntime
   forward/backward per step).  Target: <= 10 s per image on 2 cores.
2. :func:`auditor.pipeline.approx.approx_audit` with its default budgets on ``--n`` test digits: clean
   accuracy exact vs approximate, confidence margins (paper Fig. 12), transfer exact -> approximate
   for FGSM / PGD / C&W / DeepFool / JSMA (paper Table 2), the black-box substitute
   (models/surrogate_cnn.onnx, paper Table 4), white-box BPDA PGD, Square / HopSkipJump on the
   approximate model, and the minimal perturbation (L2, MSE, PSNR) DeepFool / C&W need on each
   model (paper Figs. 8-11: +4 dB PSNR, 6x MSE for C&W on the approximate model).

Run: ``python benchmarks/bench_bpda.py [--n 50] [--batch 16] [--threads 2] [--out report.json]``
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _fmt(v, spec=".2f"):
    return "-" if v is None else format(v, spec)


def _pct(v):
    return "-" if v is None else f"{100 * v:5.1f}%"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50, help="test images for the audit table")
    ap.add_argument("--batch", type=int, default=16, help="images for the BPDA PGD-100 timing")
    ap.add_argument("--eps", type=float, default=0.3, help="Linf budget of the timed BPDA PGD")
    ap.add_argument("--threads", type=int, default=2, help="onnxruntime / numba threads")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-table", action="store_true", help="only the timing")
    ap.add_argument("--out", help="write the audit report (JSON) here")
    args = ap.parse_args()
    os.environ.setdefault("NUMBA_NUM_THREADS", str(args.threads))

    import numba
    import numpy as np

    from auditor.pipeline.approx import approx_audit
    from auditor.runtime.approx import ApproxClassifier
    from auditor.attacks.evasion import PGD
    from auditor.hw.profile import Approx
    from auditor.runtime.session import OnnxClassifier

    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    d = np.load(ROOT / "auditor" / "data" / "digits28_test.npz")
    x_all = d["x"].astype(np.float32) / 255
    y_all = d["y"].astype(np.int64)
    model = str(ROOT / "models" / "lenet5.onnx")
    exact = OnnxClassifier(model, threads=args.threads)
    approx = ApproxClassifier(model, None, Approx(), threads=args.threads)

    # ---- 1. BPDA PGD-100 timing --------------------------------------------------------------
    x, y = x_all[:args.batch], y_all[:args.batch]
    approx.value_and_grad(x, "ce", target=y)  # warm-up: numba compilation, gradient graph
    t0 = time.perf_counter()
    res = PGD(steps=100)(approx, x, y, [args.eps])
    t_attack = time.perf_counter() - t0
    ok = approx.verifier().predict(res.x_adv[0]) != y
    t0 = time.perf_counter()
    xc = x.copy()
    for _ in range(100):
        _, g, _ = approx.value_and_grad(xc, "ce", target=y)
        xc = np.clip(np.clip(xc + (2.5 / 100 * args.eps) * np.sign(g), x - args.eps, x + args.eps), 0, 1)
    t_forced = time.perf_counter() - t0
    print(f"BPDA PGD-100 (Linf eps={args.eps:g}) on the approximate LeNet-5, batch {args.batch}, "
          f"{args.threads} threads")
    print(f"  attack call (early stop per input): {t_attack:7.2f} s = {t_attack / len(x):.3f} s/image; "
          f"success {res.success[0].mean():.2f} (independently verified {ok.mean():.2f}); "
          f"queries/image {res.queries.mean():.0f}")
    print(f"  forced 100 BPDA steps:              {t_forced:7.2f} s = {t_forced / len(x):.3f} s/image "
          f"(target <= 10 s/image)")
    if args.skip_table:
        return

    # ---- 2. the full table ---------------------------------------------------------------------
    x, y = x_all[:args.n], y_all[:args.n]
    surrogate = OnnxClassifier(str(ROOT / "models" / "surrogate_cnn.onnx"), threads=args.threads)
    t0 = time.perf_counter()
    rep = approx_audit(exact, approx, x, y, None, seed=args.seed, surrogate=surrogate)
    secs = time.perf_counter() - t0
    if args.out:
        Path(args.out).write_text(json.dumps(rep, indent=1))
    c, m = rep["clean"], rep["margins"]
    print(f"\nDefensive Approximation audit, LeNet-5 on {rep['n']} test digits ({rep['multiplier']}, "
          f"{len(rep['approx_layers'])} layers approximate), {secs:.0f} s")
    print(f"clean accuracy  exact {_pct(c['exact_accuracy'])}   approx {_pct(c['approx_accuracy'])}   "
          f"agreement {_pct(c['agreement'])}")
    me, ma = m["exact"], m["approx"]
    print("confidence margin (top-1 - runner-up logit), median  exact "
          f"{_fmt(me['top_margin']['quantiles']['0.5'])}   approx {_fmt(ma['top_margin']['quantiles']['0.5'])}; "
          f"approx larger on {_pct(m['approx_more_confident'])} of inputs")
    print("paper's confidence p[label] - max other p > 0.8: exact "
          f"{_pct(me['confidence_above_0.8'])}   approx {_pct(ma['confidence_above_0.8'])}  (paper: <20% vs 74.5%)")

    print("\nTransfer exact -> approximate (paper Table 2: FGSM 12%, PGD 28%, JSMA 9%, C&W 1%, DF 17%)")
    print(f"  {'attack':9} {'eps':>6} {'exact succ':>10} {'transfer':>9} {'approx succ':>11} {'med L2':>7} "
          f"{'PSNR':>6}")
    for t in rep["transfer"]:
        for r in t["results"]:
            p = r["perturbation"]
            print(f"  {t['attack']:9} {_fmt(r['epsilon'], '.2f') if r['epsilon'] is not None else 'min':>6} "
                  f"{_pct(r['exact_success_rate']):>10} {_pct(r['transfer_rate_approx']):>9} "
                  f"{_pct(r['approx_success_rate']):>11} {_fmt(p['l2']['quantiles']['0.5']):>7} "
                  f"{_fmt(p['psnr']['mean'], '.1f'):>6}")
    if rep["substitute"]:
        print("\nBlack-box substitute (surrogate_cnn) -> exact / approximate (paper Table 4)")
        print(f"  {'attack':9} {'eps':>6} {'on subst.':>9} {'-> exact':>9} {'-> approx':>9}")
        for t in rep["substitute"]:
            for r in t["results"]:
                print(f"  {t['attack']:9} {_fmt(r['epsilon'], '.2f'):>6} {_pct(r['source_success_rate']):>9} "
                      f"{_pct(r['transfer_rate_exact']):>9} {_pct(r['transfer_rate_approx']):>9}")
    print("\nAttacks run on each model directly (white-box BPDA on approx; query attacks)")
    print(f"  {'attack':9} {'eps':>6} {'exact succ':>10} {'approx succ':>11} {'med L2 ex':>9} {'med L2 ax':>9} "
          f"{'queries/img ax':>14} {'s ax':>6}")
    for t in rep["whitebox_bpda"] + rep["query"]:
        for r in t["results"]:
            eps = _fmt(r["epsilon"], ".2f") if r["epsilon"] is not None else "min"
            print(f"  {t['attack'] + (' bpda' if t in rep['whitebox_bpda'] else ''):9} {eps:>6} "
                  f"{_pct(r['exact']['success_rate']):>10} {_pct(r['approx']['success_rate']):>11} "
                  f"{_fmt(r['exact']['perturbation']['l2']['quantiles']['0.5']):>9} "
                  f"{_fmt(r['approx']['perturbation']['l2']['quantiles']['0.5']):>9} "
                  f"{t['queries_per_input']['approx']:14.0f} {t['seconds']['approx']:6.1f}")
    print("\nMinimal perturbation needed (BPDA on approx vs exact; paper: C&W +4 dB PSNR drop, 6x MSE; "
          "DF 7.8 dB, 3x)")
    print(f"  {'attack':9} {'succ ex':>8} {'succ ax':>8} {'medL2 ex':>8} {'medL2 ax':>8} {'PSNR ex':>7} "
          f"{'PSNR ax':>7} {'dPSNR':>6} {'MSE x':>6} {'pairs':>5}")
    for t in rep["perturbation"]:
        e, a, p = t["exact"], t["approx"], t["paired"]
        print(f"  {t['attack']:9} {_pct(e['success_rate']):>8} {_pct(a['success_rate']):>8} "
              f"{_fmt(e['median_l2']):>8} {_fmt(a['median_l2']):>8} {_fmt(e['mean_psnr'], '.1f'):>7} "
              f"{_fmt(a['mean_psnr'], '.1f'):>7} {_fmt(p['psnr_drop_db'], '.1f'):>6} {_fmt(p['mse_ratio'], '.2f'):>6} "
              f"{p['n']:>5}")
    s = rep["strongest"]
    if s:
        print(f"\nstrongest attack on the approximate model: {s['source']} {s['attack']} {s['norm']} "
              f"eps {s['epsilon']:g}: {_pct(s['success_rate'])} ({s['n_success']}/{s['n_attacked']})")
    print("worst case over all attacks (union per budget): "
          + ", ".join(f"{k} {_pct(w['success_rate'])}" for k, w in rep["worst_case"].items()))


if __name__ == "__main__":
    main()
