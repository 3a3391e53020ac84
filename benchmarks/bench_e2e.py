#!/usr/bin/env python
"""End to end at ImageNet size: one ``auditor audit`` of a 224x224 model (default resnet18 from
``benchmarks/imagenet_models.py``, random weights) on cnvlutin + sparce with N clean inputs, the
white-box sparsity attack on a few of them and PGD on some more; prints the command's wall time,
its peak resident memory (os.wait4 of the child) and the per-stage log lines (``-v``).

Issue 12's target: 256 clean inputs, the white-box attack (100 iterations) on 16 and PGD-10 on 32
finish in at most 15 minutes on 2 cores within 2 GB.

    python benchmarks/bench_e2e.py [--model resnet18] [--clean 256] [--whitebox 16] [--iterations 100]
        [--pgd 32] [--pgd-steps 10] [--threads 2] [--jobs 1]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

import imagenet_models  # noqa: E402
from bench_imagenet import peak_rss  # noqa: E402

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet18", choices=imagenet_models.NAMES)
    ap.add_argument("--clean", type=int, default=256)
    ap.add_argument("--whitebox", type=int, default=16)
    ap.add_argument("--iterations", type=int, default=100)
    ap.add_argument("--pgd", type=int, default=32)
    ap.add_argument("--pgd-steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "auditor-imagenet"))
    args = ap.parse_args(argv)

    model = imagenet_models.cached(args.model, args.cache)
    tmp = Path(args.cache)
    data = tmp / f"e2e_{args.model}_{args.clean}.npy"
    labels = tmp / f"e2e_{args.model}_{args.clean}_labels.npy"
    if not labels.exists():  # labelled by the model itself (random weights), so every input starts correct
        import onnxruntime as ort

        x = np.random.default_rng(0).uniform(0, 1, (args.clean, 3, 224, 224)).astype(np.float32)
        sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        y = np.concatenate([sess.run(None, {name: x[i:i + 16]})[0].argmax(1) for i in range(0, len(x), 16)])
        np.save(data, x)
        np.save(labels, y.astype(np.int64))
    scenario = {
        "name": f"e2e-{args.model}", "seed": 0,
        "data": {"source": "npy", "path": data.name, "labels": labels.name, "count": args.clean},
        "energy_attacks": [{"search": "whitebox", "count": args.whitebox, "cost": "latency",
                            "params": {"iterations": args.iterations}}] if args.whitebox else [],
        "robustness": {"count": args.pgd, "attacks": [{"attack": "pgd", "norm": "linf", "epsilons": [2 / 255],
                                                       "params": {"steps": args.pgd_steps}}]} if args.pgd else None,
        "checks": {},
    }
    if scenario["robustness"] is None:
        del scenario["robustness"]
    sc = tmp / f"e2e_{args.model}.yaml"
    sc.write_text(yaml.safe_dump(scenario, sort_keys=False))
    cmd = [sys.executable, "-m", "auditor.cli", "audit", str(model), "--hw", str(ROOT / "hwprofiles" / "cnvlutin.yaml"),
           "--hw", str(ROOT / "hwprofiles" / "sparce.yaml"), "--scenario", str(sc), "--threads", str(args.threads),
           "--jobs", str(args.jobs), "-v", "--force", "-o", str(tmp / f"e2e_{args.model}.json")]
    print(f"load {os.getloadavg()[0]:.1f}; {args.model} 224x224: {args.clean} clean on cnvlutin + sparce, white-box "
          f"({args.iterations} it.) on {args.whitebox}, PGD-{args.pgd_steps} on {args.pgd}", flush=True)
    gb, wall, code = peak_rss(cmd, ROOT, show_log=True)
    print(f"exit {code}; wall {wall:.0f} s ({wall / 60:.1f} min); peak RSS {gb:.2f} GB; "
          f"load {os.getloadavg()[0]:.1f}", flush=True)
    return 0 if code in (0, 1) else 1


if __name__ == "__main__":
    sys.exit(main())
