#!/usr/bin/env python
"""auditor against torch on the same network (issue 12, targets 4 and 5; needs the optional torch
extra, and adversarial-robustness-toolbox for the PGD part; without them it prints a skip line).

The network is a torchvision architecture as ``benchmarks/torchvision_models.py`` builds it
(``weights=None``, ``torch.manual_seed(0)``, batch normalisations calibrated on random inputs, eval
mode), its parameters frozen, exported with ``torch.onnx.export`` (``--exporter``, default dynamo,
opset 17); auditor audits that ONNX file, torch runs the module itself: the same weights on both sides.

1. **Input gradient** (``--models``, ``--threads``, ``--batches``): the gradient of the summed
   cross-entropy of the labels w.r.t. the input only.  torch: ``x.requires_grad_(True)``, forward,
   ``cross_entropy(reduction="sum")``, ``torch.autograd.grad`` w.r.t. x (``torch.set_num_threads(t)``);
   auditor: ``OnnxClassifier.value_and_grad(x, "ce")``, the call the attacks make (onnxruntime
   intra-op threads t), and ``session`` the bare ``session.run`` of its gradient session on the
   whole batch (what the call costs beyond onnxruntime, and what running it in chunks costs).  For scale, ``torch fwd`` (``no_grad``) and ``ort fwd`` (the plain
   model in onnxruntime, the same session options) are the forward passes alone.  All in ms per
   batch, measured interleaved (each in turn), ``--repeats`` times, medians.  ``ratio`` = auditor /
   torch f+b (target <= 0.5); ``floor`` = 2 x ort fwd / torch f+b, the ratio of an input gradient
   that costs two onnxruntime forward passes (an input-only gradient needs about the forward's MACs
   once more; the issue's ~2 floor).  The independent
   check, the largest per-input relative L2 error ||g - g_ref||_2 / ||g_ref||_2: ``aud/tch`` auditor
   against torch, ``aud/f64`` and ``tch/f64`` each float32 gradient against torch's in float64 (the
   module in double precision), which says which side a disagreement comes from.  ``chunk``: the
   inputs one gradient run takes (the runner lowers the batch to its memory budget).
2. **PGD-10** (``--pgd-model``): Linf, ε ``--eps`` (default 4/255, RobustBench ImageNet, where the
   untrained network's small margins let every input fall within two steps, and 0.01/255, where
   some resist, so that the success rates can be told apart), step
   α = 2.5·ε/10 (auditor's default; given to ART as ``eps_step``), no random start on either side,
   cross-entropy loss, pixel range [0, 1].  ART: ``ProjectedGradientDescent`` on a
   ``PyTorchClassifier`` of the torch module; auditor: its ``pgd`` attack on the ONNX file.  Inputs:
   ``--pgd-n`` uniform random images, labels = the network's own predictions (it is untrained).
   Each side's adversarial examples are re-checked by the torch module (a prediction that differs
   from the label, Linf distance <= ε); at 0.01/255 an example can sit within float32 noise of the
   decision boundary, where onnxruntime (auditor's own check) and torch may disagree.  auditor freezes an input at its first adversarial iterate
   (ART runs every step), so the table also gives the gradients it computed per input, and a row
   without the early stop: the time of the batch's 10 gradients (``value_and_grad``), the work ART
   does.  Runs in turn, ``--pgd-repeats`` times, medians.  Target: auditor >= 3x faster.

Load averages are printed with every row (other processes share the machine).

    python benchmarks/bench_torch.py [--models resnet18 mobilenet_v2] [--threads 1 2] [--batches 8 1]
        [--repeats 7] [--pgd-model resnet18] [--pgd-n 8] [--pgd-threads 2] [--pgd-repeats 3]
        [--eps 0.0157 0.0000392] [--exporter dynamo|torchscript] [--no-grad] [--no-pgd]
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torchvision_models  # noqa: E402
from bench_imagenet import interleaved  # noqa: E402

from auditor.attacks.evasion import PGD  # noqa: E402
from auditor.runtime.engine import make_session  # noqa: E402
from auditor.runtime.session import GRAD_INPUT, OnnxClassifier, knob_feeds  # noqa: E402

SIZE, OPSET, SEED = 224, 17, 0


def load() -> str:
    return f"{os.getloadavg()[0]:.1f}"


def network(torch, arch: str, folder: Path, exporter: str):
    """(torch module, path of its ONNX export): ``torchvision_models.network`` (random weights,
    calibrated batch normalisations, eval mode) with its parameters frozen."""
    net = torchvision_models.network(arch, SIZE)
    for p in net.parameters():
        p.requires_grad_(False)
    path = folder / f"{arch}_{exporter}.onnx"
    torchvision_models.export(arch, SIZE, OPSET, exporter, path, net=net)
    return net, path


def torch_grad_fn(torch, net, x: np.ndarray, y: np.ndarray):
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)

    def run():
        xg = xt.clone().requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(net(xg), yt, reduction="sum")
        return torch.autograd.grad(loss, xg)[0].numpy()
    return run


def rel_err(a: np.ndarray, ref: np.ndarray) -> float:
    """The largest per-input ||a - ref||_2 / ||ref||_2."""
    a, ref = a.reshape(len(a), -1).astype(np.float64), ref.reshape(len(ref), -1)
    return float(np.max(np.linalg.norm(a - ref, axis=1) / np.linalg.norm(ref, axis=1)))


def grad_rows(torch, arch: str, args, folder: Path) -> None:
    net, path = network(torch, arch, folder, args.exporter)
    net64 = copy.deepcopy(net).double()  # the float64 reference
    rng = np.random.default_rng(SEED)
    for threads in args.threads:
        torch.set_num_threads(threads)
        clf = OnnxClassifier(str(path), threads=threads, batch_size=max(args.batches))
        fwd = make_session(clf.model, threads)  # the plain forward pass, with the gradient session's options
        for batch in args.batches:
            x = rng.random((batch, 3, SIZE, SIZE), dtype=np.float32)
            with torch.no_grad():
                y = net(torch.from_numpy(x)).argmax(1).numpy()
            t_fn = torch_grad_fn(torch, net, x, y)
            a_fn = lambda: clf.value_and_grad(x, "ce", target=y)[1]  # noqa: E731
            runner, obj, _ = clf._grad_runner("ce")
            feed = dict(runner.typed(knob_feeds("ce", {"target": y}), batch), **{runner.input_name: x})
            s_fn = lambda: runner.session.run([obj, GRAD_INPUT], feed)  # noqa: E731
            xt = torch.from_numpy(x)

            def tf_fn():
                with torch.no_grad():
                    return net(xt)
            f_fn = lambda: fwd.run([clf.logits_name], {clf.input_name: x})  # noqa: E731
            g_t, g_a, g_64 = t_fn(), a_fn(), torch_grad_fn(torch, net64, x.astype(np.float64), y)()
            errs = [rel_err(g_a, g_t), rel_err(g_a, g_64), rel_err(g_t, g_64)]
            before = load()
            t_t, t_a, t_s, t_tf, t_f = interleaved([t_fn, a_fn, s_fn, tf_fn, f_fn], 0.0, min_runs=args.repeats,
                                                   stat=np.median)
            print(f"{arch:13s} {threads:3d} {batch:5d} {t_tf * 1e3:9.0f} {t_t * 1e3:9.0f} {t_f * 1e3:8.0f} "
                  f"{t_a * 1e3:8.0f} {t_s * 1e3:8.0f} {t_a / t_t:6.2f} {2 * t_f / t_t:6.2f} "
                  + " ".join(f"{e:8.1e}" for e in errs) + f" {runner.batch_size:6d}  {before}-{load()}", flush=True)
        del clf


def art_pgd(net, x, y, eps, alpha, steps, batch):
    import torch
    from art.attacks.evasion import ProjectedGradientDescent
    from art.estimators.classification import PyTorchClassifier

    est = PyTorchClassifier(model=net, loss=torch.nn.CrossEntropyLoss(), input_shape=x.shape[1:],
                            nb_classes=1000, clip_values=(0.0, 1.0), device_type="cpu")
    att = ProjectedGradientDescent(est, norm=np.inf, eps=eps, eps_step=alpha, max_iter=steps, targeted=False,
                                   num_random_init=0, batch_size=batch, verbose=False)
    return lambda: att.generate(x, y=y)


def counting(clf):
    """``clf`` whose ``value_and_grad`` counts the inputs it differentiates (``clf.gradients``)."""
    vg = clf.value_and_grad
    clf.gradients = 0

    def counted(x, objective, **knobs):
        clf.gradients += len(x)
        return vg(x, objective, **knobs)
    clf.value_and_grad = counted
    return clf


def pgd_rows(torch, args, folder: Path) -> None:
    try:
        import art  # noqa: F401
    except ImportError as e:
        print(f"PGD-10 vs ART skipped: adversarial-robustness-toolbox is not installed ({e})")
        return
    torch.set_num_threads(args.pgd_threads)
    net, path = network(torch, args.pgd_model, folder, args.exporter)
    x = np.random.default_rng(SEED + 1).random((args.pgd_n, 3, SIZE, SIZE), dtype=np.float32)
    with torch.no_grad():
        y = net(torch.from_numpy(x)).argmax(1).numpy()
    clf = counting(OnnxClassifier(str(path), threads=args.pgd_threads, batch_size=args.pgd_n))
    clf.value_and_grad(x[:1], "ce", target=y[:1])  # the gradient session is built once, before timing

    def torch_success(xa, eps):
        with torch.no_grad():
            pred = net(torch.from_numpy(np.ascontiguousarray(xa, np.float32))).argmax(1).numpy()
        inside = np.abs(xa - x).reshape(len(x), -1).max(axis=1) <= eps * (1 + 1e-5)
        return float(np.mean((pred != y) & inside))

    steps = 10
    print(f"PGD-10 Linf, α = 2.5·ε/10, no random start, {args.pgd_model} at {SIZE}, {len(x)} random inputs "
          f"(labels: its predictions, {len(set(y.tolist()))} distinct), {args.pgd_threads} threads, "
          f"median of {args.pgd_repeats} runs in turn")
    print("| ε | ART s / input | auditor s / input | speedup | ART success (torch re-check) | auditor success "
          "(own / torch re-check) | auditor gradients / input | load |")
    print("|---|---|---|---|---|---|---|---|")
    for i, eps in enumerate(args.eps):
        alpha = 2.5 * eps / steps
        attack = PGD(steps=steps, abs_stepsize=alpha, random_start=False, batch_size=args.pgd_n)
        runs = {"art": art_pgd(net, x, y, eps, alpha, steps, args.pgd_n),
                "auditor": lambda: attack(clf, x, y, [eps], seed=SEED)}
        if i == 0:  # what PGD costs without its early stop: the batch's 10 gradients (ART's work)
            runs["steps"] = lambda: [clf.value_and_grad(x, "ce", target=y) for _ in range(steps)]
        times = {k: [] for k in runs}
        last, grads = {}, {}
        before = load()
        for _ in range(args.pgd_repeats):
            for k, f in runs.items():
                clf.gradients = 0
                t = time.perf_counter()
                last[k] = f()
                times[k].append(time.perf_counter() - t)
                grads[k] = clf.gradients
        res = last["auditor"]
        s_art, s_aud = (float(np.median(times[k])) / len(x) for k in ("art", "auditor"))
        print(f"| {eps * 255:.2f}/255 | {s_art:.2f} | {s_aud:.2f} | {s_art / s_aud:.2f} | "
              f"{torch_success(last['art'], eps):.2f} | {float(np.mean(res.success[0])):.2f} / "
              f"{torch_success(res.x_adv[0], eps):.2f} | {grads['auditor'] / len(x):.1f} | {before}-{load()} |",
              flush=True)
        if "steps" in times:
            s_steps = float(np.median(times["steps"])) / len(x)
            print(f"| (no early stop: {steps} gradients of every input) | {s_art:.2f} | {s_steps:.2f} | "
                  f"{s_art / s_steps:.2f} | | | {grads['steps'] / len(x):.0f} | |", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=["resnet18", "mobilenet_v2"])
    ap.add_argument("--threads", nargs="*", type=int, default=[1, 2])
    ap.add_argument("--batches", nargs="*", type=int, default=[8, 1])
    ap.add_argument("--repeats", type=int, default=7, help="timed runs per cell (medians)")
    ap.add_argument("--pgd-model", default="resnet18")
    ap.add_argument("--pgd-n", type=int, default=8, help="inputs of the PGD comparison")
    ap.add_argument("--pgd-threads", type=int, default=2)
    ap.add_argument("--pgd-repeats", type=int, default=3)
    ap.add_argument("--eps", nargs="*", type=float, default=[4 / 255, 0.01 / 255],
                    help="Linf budgets of the PGD comparison (default 4/255 and 0.01/255)")
    ap.add_argument("--exporter", default="dynamo", choices=torchvision_models.EXPORTERS)
    ap.add_argument("--no-grad", action="store_true", help="skip the input-gradient table")
    ap.add_argument("--no-pgd", action="store_true", help="skip the PGD-10 comparison")
    args = ap.parse_args(argv)
    mods = torchvision_models.torch_or_none()
    if mods is None:
        print("skipped: bench_torch needs the optional torch extra (pip install torch torchvision)")
        return 0
    torch = mods[0]
    import onnxruntime as ort

    print(f"torch {torch.__version__}, onnxruntime {ort.__version__}, {os.cpu_count()} CPUs, load {load()}")
    with tempfile.TemporaryDirectory() as d:
        if not args.no_grad:
            print(f"{'model':13s} {'thr':>3s} {'batch':>5s} {'torch fwd':>9s} {'torch f+b':>9s} {'ort fwd':>8s} "
                  f"{'auditor':>8s} {'session':>8s} {'ratio':>6s} {'floor':>6s} {'aud/tch':>8s} {'aud/f64':>8s} "
                  f"{'tch/f64':>8s} {'chunk':>6s}  load", flush=True)
            for arch in args.models:
                grad_rows(torch, arch, args, Path(d))
        if not args.no_pgd:
            pgd_rows(torch, args, Path(d))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
