#!/usr/bin/env python
"""The scaling table of ImageNet-sized models (224x224): forward time, cost simulation / forward,
input gradient / forward, gradient build time and the peak memory of whole commands.

Models: the onnx.helper-built ones of ``benchmarks/imagenet_models.py`` (resnet18, mobilenet_v2,
efficientnet_b0, vgg11_bn; random weights, written once under --cache), plus the onnx package's
light models (ResNet-50, VGG-19, DenseNet-121, ...: ``onnx/backend/test/data/light``) when they
are present and load.  No torch needed.  With ``--torchvision`` the models are instead the
torchvision architectures of issue 12 (resnet18, mobilenet_v2, efficientnet_b0, densenet121,
convnext_tiny, vgg11_bn; random weights) exported with torch by ``benchmarks/torchvision_models.py``
(``--exporter dynamo``, torch's default, or ``torchscript``; ``--opset``): that needs the optional
torch extra, and without it the benchmark prints a skip line and exits 0.

Columns (one process per model for the timings; every ratio from interleaved runs, minimum over
the runs, so both sides see the same machine load):

* ``fwd ms``       onnxruntime forward time per input of the plain model (batch --batch);
* ``cnv/fwd``, ``sparce/fwd``  cost simulation of the batch on hwprofiles/cnvlutin.yaml and
  sparce.yaml (activations already computed, kernels compiled) / forward time of the batch;
* ``ce/fwd``, ``sp/fwd``  fwd+bwd of the cross-entropy / sparsity-attack objective gradient
  session / forward time (the same session options);
* ``build s``, ``session s``  time to build the cross-entropy gradient graph (append_objective +
  add_input_gradient), and then its onnxruntime session, as an audit builds them
  (``OnnxClassifier``'s gradient runner: the graph without the shared weights' data, the session
  given them, the tool's session options; the ratios above use sessions of this script's options);
* ``audit GB``, ``inspect GB``  (with --rss) peak resident memory of ``auditor audit`` (clean
  audit of --rss-count random inputs on cnvlutin + sparce) and ``auditor inspect``, each started
  by a fresh launcher process (os.wait4's ru_maxrss); ``attack GB`` (with --rss-attack N) the same
  audit with the white-box sparsity attack on N inputs (--rss-attack-iter iterations), and with
  --rss-pgd M also PGD (Linf 8/255, --rss-attack-iter steps) on M of them, random labels.

With ``--profile RUNS`` the benchmark prints instead, per model, where the time goes: per op type,
the kernel time of the forward, cross-entropy and sparsity gradient sessions (onnxruntime's
profiler; the sum over each type's nodes of every node's median over RUNS interleaved runs, which
a loaded machine disturbs less than whole-run wall times), the three ratios of the totals and the
``ce floor``: the cross-entropy session's convolution and matrix-product kernels alone (forward and
adjoint, blocked or not) / the forward's total: the ratio that would be left if every elementwise
and layout op of the gradient cost nothing (with the adjoint convolutions the rules emit).

At the end the rows are printed again as issue 12's Markdown table: fwd ms/input, cnvlutin sim /
fwd, sparce sim / fwd, CE grad / fwd, sparsity grad / fwd, gradient build (graph + session) and
peak RSS (of the audit, with --rss; "-" without).

    python benchmarks/bench_imagenet.py [--models resnet18 ...] [--batch 8] [--threads 2]
        [--seconds 4] [--rss] [--rss-count 256] [--rss-attack 4 [--rss-pgd 4]] [--no-light] [--sim-only]
        [--torchvision [--exporter dynamo] [--opset 17]] [--profile RUNS]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import imagenet_models  # noqa: E402
import torchvision_models  # noqa: E402
from auditor.hw import build_cost_model  # noqa: E402
from auditor.runtime.session import GRAD_INPUT, OnnxClassifier, gradient_model, knob_feeds  # noqa: E402

LIGHT = ("resnet50", "vgg19", "densenet121", "inception_v1", "squeezenet", "shufflenet", "bvlc_alexnet")


def light_models() -> dict[str, Path]:
    d = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
    return {n: d / f"light_{n}.onnx" for n in LIGHT if (d / f"light_{n}.onnx").exists()}


def session(model: onnx.ModelProto | str, threads: int, profile_prefix: str | None = None) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    if profile_prefix is not None:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    src = model if isinstance(model, str) else model.SerializeToString()
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


def interleaved(fns, seconds: float, min_runs: int = 3, stat=min) -> list[float]:
    """``stat`` (the minimum by default) of each function's times, the functions run in turn (after
    one untimed run each) until ``seconds`` have passed and each ran at least ``min_runs`` times."""
    for f in fns:
        f()
    times: list[list[float]] = [[] for _ in fns]
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(times[0]) < min_runs:
        for i, f in enumerate(fns):
            t = time.perf_counter()
            f()
            times[i].append(time.perf_counter() - t)
    return [float(stat(t)) for t in times]


def profile(name: str):
    d = yaml.safe_load((ROOT / "hwprofiles" / f"{name}.yaml").read_text())
    return build_cost_model(d["cost_model"], d["params"])


def table_row(name: str, path: Path, args) -> dict:
    row = {"model": name}
    clf = OnnxClassifier(str(path), threads=args.threads, batch_size=args.batch)
    shape = clf.input_shape
    batch = clf.runner.fixed_batch or args.batch  # the light models have a fixed batch of 1
    rng = np.random.default_rng(0)
    x = rng.random((batch,) + shape, dtype=np.float32)
    s_fwd = session(str(path), args.threads)
    in_name = s_fwd.get_inputs()[0].name
    acts = clf.forward(x)
    layers = list(clf.probes.layers)
    la = {t: acts[t] for t in clf.probes.layer_inputs}
    cnv, spc = profile("cnvlutin"), profile("sparce")
    fns = [lambda: s_fwd.run(None, {in_name: x}), lambda: cnv.simulate(layers, la), lambda: spc.simulate(layers, la)]
    t_fwd, t_cnv, t_spc = interleaved(fns, args.seconds)
    row.update(fwd_ms=1e3 * t_fwd / batch, cnv=t_cnv / t_fwd, sparce=t_spc / t_fwd)
    del acts, la
    if not args.sim_only:  # the cross-entropy gradient build as an audit does it (its runner is kept by clf)
        t0 = time.perf_counter()
        runner = clf._grad_runner("ce")[0]
        took = time.perf_counter() - t0
        row.update(build_s=took - runner.build_seconds, session_s=runner.build_seconds)
        del runner
    for obj in () if args.sim_only else ("ce", "sparsity"):
        g, obj_name, _ = gradient_model(clf.model, clf._objective_spec(obj), clf.logits_name)
        s_g = session(g, args.threads)
        nw = len(clf.layer_tensors)
        values = {"target": np.zeros(batch, np.int64), "weights": np.full(nw, 1.0 / nw, np.float32),
                  "beta": np.float32(15.0), "c": np.float32(1.0)}
        feed = dict(knob_feeds(obj, values), **{s_g.get_inputs()[0].name: x})
        outs = [obj_name, GRAD_INPUT]
        t_f, t_g = interleaved([lambda: s_fwd.run(None, {in_name: x}), lambda: s_g.run(outs, feed)], args.seconds)
        row[obj] = t_g / t_f
        del s_g, g
    return row


def kernel_times(sess: ort.InferenceSession) -> dict[str, tuple[str, float]]:
    """Node name -> (op type, median kernel time in ms over the profiled runs but the first) of a
    session created with profiling on; ends the profile and deletes its file."""
    path = sess.end_profiling()
    with open(path) as f:
        events = json.load(f)
    os.remove(path)
    runs: dict[str, list] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            runs.setdefault(e["name"][:-len("_kernel_time")], [e["args"]["op_name"]]).append(e["dur"])
    return {n: (v[0], float(np.median(v[2:] if len(v) > 2 else v[1:])) / 1e3) for n, v in runs.items()}


def op_profile(name: str, path: Path, args) -> str:
    """Where the time of the forward, cross-entropy and sparsity gradient sessions goes: onnxruntime's
    profiler on ``--profile`` interleaved runs of the three; per op type, the sum over its nodes of
    each node's median kernel time (ms per batch).  On a loaded machine the sums vary less than
    whole-run wall times, which preemption inflates."""
    clf = OnnxClassifier(str(path), threads=args.threads, batch_size=args.batch)
    batch = clf.runner.fixed_batch or args.batch
    x = np.random.default_rng(0).random((batch,) + clf.input_shape, dtype=np.float32)
    prefix = os.path.join(tempfile.gettempdir(), f"bench_imagenet_{os.getpid()}")
    s_fwd = session(str(path), args.threads, prefix)
    runs = [("fwd", s_fwd, None, {s_fwd.get_inputs()[0].name: x})]
    nw = len(clf.layer_tensors)
    values = {"target": np.zeros(batch, np.int64), "weights": np.full(nw, 1.0 / nw, np.float32),
              "beta": np.float32(15.0), "c": np.float32(1.0)}
    for obj in ("ce", "sparsity"):
        g, obj_name, _ = gradient_model(clf.model, clf._objective_spec(obj), clf.logits_name)
        s_g = session(g, args.threads, prefix)
        runs.append((obj, s_g, [obj_name, GRAD_INPUT], dict(knob_feeds(obj, values), **{s_g.get_inputs()[0].name: x})))
        del g
    load0 = os.getloadavg()[0]
    for _ in range(args.profile + 1):  # the first run of each is not counted
        for _, s, outs, feed in runs:
            s.run(outs, feed)
    load1 = os.getloadavg()[0]
    per_op: dict[str, dict[str, list]] = {}
    for col, s, _, _ in runs:
        for op, ms in kernel_times(s).values():
            cell = per_op.setdefault(op, {}).setdefault(col, [0.0, 0])
            cell[0] += ms
            cell[1] += 1
    cols = [c for c, *_ in runs]
    total = {c: sum(v.get(c, [0.0])[0] for v in per_op.values()) for c in cols}
    lines = [f"{name}: kernel time per batch of {batch} (ms; nodes), sums of per-node medians over {args.profile} "
             f"interleaved runs, load {load0:.1f} -> {load1:.1f}",
             f"  {'op':24s}" + "".join(f"{c:>18s}" for c in cols)]
    for op in sorted(per_op, key=lambda o: -max(v[0] for v in per_op[o].values())):
        if max(v[0] for v in per_op[op].values()) >= 0.5:
            lines.append(f"  {op:24s}" + "".join(f"{per_op[op][c][0]:11.1f} ({per_op[op][c][1]:4d})" if c in per_op[op]
                                                 else f"{'-':>18s}" for c in cols))
    lines.append(f"  {'total':24s}" + "".join(f"{total[c]:11.1f}       " for c in cols))
    lines.append(f"  ce/fwd {total['ce'] / total['fwd']:.2f}  sp/fwd {total['sparsity'] / total['fwd']:.2f}  "
                 f"sp/ce {total['sparsity'] / total['ce']:.2f}")
    linear = sum(per_op.get(op, {}).get("ce", [0.0])[0] for op in LINEAR_OPS)
    lines.append(f"  ce floor {linear / total['fwd']:.2f}: the CE session's {'/'.join(LINEAR_OPS)} kernels alone "
                 f"(forward and adjoint convolutions and products) / fwd")
    return "\n".join(lines)


#: the op types of the convolutions and matrix products (onnxruntime's names after its fusions):
#: their kernel time in a gradient session is what the elementwise and layout work comes on top of
LINEAR_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul", "FusedConv", "FusedGemm", "FusedMatMul")


#: a small launcher process that starts the measured command and prints its peak RSS: on Linux a
#: child's ru_maxrss starts at its parent's resident size at fork (kept across exec), so measuring a
#: child forked from this process (which holds models and sessions) would report this process's size
_LAUNCH = ("import os, subprocess, sys\n"
           "p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)\n"
           "_, status, ru = os.wait4(p.pid, 0)\n"
           "print(ru.ru_maxrss, os.waitstatus_to_exitcode(status))\n")


def peak_rss(cmd: list[str], cwd: Path, show_log: bool = False) -> tuple[float, float, int]:
    """(peak RSS GB, wall s, exit code) of a command, measured by a fresh launcher process;
    ``show_log``: the command's stderr goes to ours as it runs instead of being kept for errors."""
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", _LAUNCH, *cmd], cwd=cwd, stdout=subprocess.PIPE,
                       stderr=None if show_log else subprocess.PIPE, text=True)
    kib, code = (int(v) for v in p.stdout.split()[-2:])
    if code not in (0, 1) and not show_log:
        print(f"  {' '.join(cmd[:4])}: exit {code}: {p.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
    return kib / 2**20, time.perf_counter() - t, code


def rss_row(name: str, path: Path, args, tmp: Path) -> dict:
    sess = session(str(path), 1)
    shape = [d for d in sess.get_inputs()[0].shape[1:]]
    classes = sess.get_outputs()[0].shape[-1]
    del sess
    data = tmp / f"{name}_x{args.rss_count}.npy"
    if not data.exists():
        np.save(data, np.random.default_rng(0).integers(0, 256, (args.rss_count, *shape), dtype=np.uint8))
    labels = tmp / f"{name}_y{args.rss_count}.npy"
    if args.rss_pgd and not labels.exists():
        np.save(labels, np.random.default_rng(1).integers(0, classes, args.rss_count))
    py = [sys.executable, "-m", "auditor.cli"]
    hw = ["--hw", str(ROOT / "hwprofiles" / "cnvlutin.yaml"), "--hw", str(ROOT / "hwprofiles" / "sparce.yaml")]
    row = {}
    runs = [("audit", {})]
    if args.rss_attack:  # the white-box sparsity attack on a few inputs, a few iterations
        extra = {"energy_attacks": [{"search": "whitebox", "count": args.rss_attack, "cost": "latency",
                                     "params": {"iterations": args.rss_attack_iter}}]}
        if args.rss_pgd:  # and PGD on a few of them
            extra["robustness"] = {"count": args.rss_pgd, "attacks": [
                {"attack": "pgd", "norm": "linf", "epsilons": [8 / 255], "params": {"steps": args.rss_attack_iter}}]}
        runs.append(("attack", extra))
    for col, extra in runs:
        sc = tmp / f"{name}_{col}.yaml"
        spec = {"source": "npy", "path": data.name, "count": args.rss_count}
        if "robustness" in extra:
            spec["labels"] = labels.name
        sc.write_text(yaml.safe_dump({"name": f"{name}-{col}", "seed": 0, "data": spec,
                                      "batch_size": args.batch, "checks": {}, **extra}))
        row[f"{col}_gb"], row[f"{col}_s"], _ = peak_rss(py + ["audit", str(path), *hw, "--scenario", str(sc),
                                                              "--threads", str(args.threads)], ROOT)
    row["inspect_gb"], row["inspect_s"], _ = peak_rss(py + ["inspect", str(path)], ROOT)
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=None)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=4.0, help="timing budget per interleaved comparison")
    ap.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "auditor-imagenet"))
    ap.add_argument("--rss", action="store_true", help="also measure the peak RSS of audit and inspect")
    ap.add_argument("--rss-count", type=int, default=256)
    ap.add_argument("--rss-attack", type=int, default=0, metavar="N",
                    help="with --rss: also an audit with the white-box sparsity attack on N inputs")
    ap.add_argument("--rss-attack-iter", type=int, default=5, help="its iterations")
    ap.add_argument("--rss-pgd", type=int, default=0, metavar="M",
                    help="with --rss-attack: that audit also runs PGD on M inputs (random labels)")
    ap.add_argument("--no-table", action="store_true", help="only the RSS columns")
    ap.add_argument("--no-light", action="store_true", help="skip the onnx package's light models")
    ap.add_argument("--sim-only", action="store_true", help="only the forward and cost-simulation columns")
    ap.add_argument("--profile", type=int, default=0, metavar="RUNS",
                    help="instead of the table: per op type, the kernel time of the forward, cross-entropy and "
                         "sparsity gradient sessions (onnxruntime's profiler, RUNS interleaved runs)")
    ap.add_argument("--torchvision", action="store_true",
                    help="the torchvision architectures exported with torch (optional extra) instead")
    ap.add_argument("--exporter", default="dynamo", choices=torchvision_models.EXPORTERS, help="with --torchvision")
    ap.add_argument("--opset", type=int, default=17, help="with --torchvision: the requested export opset")
    args = ap.parse_args(argv)
    import numba

    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))  # the kernels use as many as onnxruntime
    if args.torchvision:
        mods = torchvision_models.torch_or_none()
        if mods is None:
            print("skipped: bench_imagenet --torchvision needs the optional torch extra (pip install torch torchvision)")
            return 0
        source = f"torch {mods[0].__version__}, torchvision {mods[1].__version__}, {args.exporter} exporter"
        paths = {}
        for n in args.models or torchvision_models.TABLE:
            try:
                paths[n] = torchvision_models.cached(n, args.cache, 224, args.opset, args.exporter)
            except Exception as e:  # the exporter's failure: reported in the row
                print(f"{n:16s} export failed: {str(e).strip().splitlines()[0][:150]}", flush=True)
        source += f" (file opset {', '.join(sorted({str(torchvision_models.opset_of(p)) for p in paths.values()}))})"
    else:
        source = "onnx.helper models"
        paths = {n: imagenet_models.cached(n, args.cache) for n in imagenet_models.NAMES}
        if not args.no_light:
            paths.update(light_models())
    names = args.models or list(paths)
    print(f"{source}; onnxruntime {ort.__version__}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, "
          f"batch {args.batch}, {args.threads} threads", flush=True)
    if args.profile:
        for name in names:
            if name in paths:
                print(op_profile(name, paths[name], args), flush=True)
        return 0
    cols = ("fwd_ms", "cnv", "sparce", "ce", "sparsity", "build_s", "session_s", "audit_gb", "audit_s",
            "attack_gb", "attack_s", "inspect_gb", "inspect_s")
    print(f"{'model':16s} " + " ".join(f"{c:>10s}" for c in cols), flush=True)
    tmp = Path(args.cache)
    rows = []
    for name in names:
        if name not in paths:
            print(f"{name:16s} (unknown model)")
            continue
        row = {}
        try:
            if not args.no_table:
                row.update(table_row(name, paths[name], args))
            if args.rss:
                row.update(rss_row(name, paths[name], args, tmp))
        except Exception as e:  # a light model that does not load is reported, not fatal
            print(f"{name:16s} failed: {str(e).splitlines()[0][:150]}", flush=True)
            continue
        print(f"{name:16s} " + " ".join(f"{row[c]:10.2f}" if c in row else f"{'-':>10s}" for c in cols),
              flush=True)
        rows.append(dict(row, model=name))
    print(f"\n{source}, load {os.getloadavg()[0]:.1f}\n")
    print(issue_table(rows, args.rss_count))
    return 0


def issue_table(rows: list[dict], rss_count: int) -> str:
    """Issue 12's table as Markdown ("-" where a column was not measured)."""
    def f(r, key, fmt):  # "ratio": 2 decimals, 3 under 0.1
        if key not in r:
            return "-"
        if fmt == "ratio":
            fmt = "{:.2f}" if r[key] >= 0.1 else "{:.3f}"
        return fmt.format(r[key])

    out = ["| model (224x224) | fwd ms/input | cnvlutin sim / fwd | sparce sim / fwd | CE grad / fwd | "
           f"sparsity grad / fwd | gradient build | peak RSS (audit, {rss_count} inputs) |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        build = f"{r['build_s'] + r['session_s']:.1f} s" if "build_s" in r else "-"
        out.append(f"| {r['model']} | {f(r, 'fwd_ms', '{:.0f}')} | {f(r, 'cnv', 'ratio')} | {f(r, 'sparce', 'ratio')} | "
                   f"{f(r, 'ce', 'ratio')} | {f(r, 'sparsity', 'ratio')} | {build} | {f(r, 'audit_gb', '{:.1f} GB')} |")
    return "\n".join(out)


if __name__ == "__main__":
    raise SystemExit(main())
