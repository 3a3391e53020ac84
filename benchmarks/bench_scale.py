#!/usr/bin/env python
"""Wall time of an audit split into units of work: one process, a local pool, a Ray cluster.

1. An audit of 512 digits on Cnvlutin (clean evaluation + cost simulation of all 512, the
   white-box sparsity attack on 64 of them) with ``--jobs 1``, ``--jobs 2`` and Ray on 2 CPUs
   (the cluster started once, outside the timing; its start-up is printed on its own).  The
   reports are checked identical (``auditor.report.core.stable``) before any time is printed.
2. Time per input of the clean audit (evaluation + cost) as the inputs grow, 64 -> 256 -> 1024,
   in one process: the ratio of the largest to the smallest per-input time, with and without the
   audit's fixed part (loading, checks, sessions: the time of an audit of one input).

Every audit runs with one onnxruntime thread per worker (``threads=1``), so the comparison is
workers, not threads; each time is the best of ``--repeats`` runs, printed with the CPU seconds
all the processes of that run spent (the driver, pool workers, the fork server, Ray's processes)
and the machine's load average: on a shared machine the wall times say as much about the
neighbours as about the code, the CPU seconds what the work itself cost.

    python benchmarks/bench_scale.py [--repeats 2] [--scale-repeats 5] [--iterations 75] [--no-ray]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from auditor.pipeline.run import run_audit  # noqa: E402
from auditor.report.core import stable  # noqa: E402

MODEL = str(ROOT / "models" / "plain_cnn.onnx")
PROFILE = str(ROOT / "hwprofiles" / "cnvlutin.yaml")


def scenario(folder: Path, n: int, attack: int, iterations: int) -> str:
    text = f"name: scale\nseed: 0\nchunk_size: 32\ndata: {{source: digits, split: train, count: {n}}}\n"
    if attack:
        text += f"energy_attacks:\n  - {{search: whitebox, count: {attack}, params: {{iterations: {iterations}}}}}\n"
    p = folder / f"scale-{n}-{attack}.yaml"
    p.write_text(text)
    return str(p)


class TreeCPU:
    """CPU seconds (user + system) spent by this process and its descendants (pool workers, the
    fork server, Ray's processes and workers) while the block runs, read from /proc every 0.1 s
    (a process that ends between two reads loses at most its last 0.1 s): what the work cost,
    whatever the neighbours on a shared machine do to the wall time."""

    def __init__(self):
        self.tck = os.sysconf("SC_CLK_TCK")

    def _tree(self) -> dict:
        stats = {}
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    r = open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                stats[int(d)] = (int(r[1]), (int(r[11]) + int(r[12])) / self.tck)
        tree, grew = {os.getpid()}, True
        while grew:
            grew = False
            for pid, (ppid, _) in stats.items():
                if ppid in tree and pid not in tree:
                    tree.add(pid)
                    grew = True
        return {pid: stats[pid][1] for pid in tree - {os.getpid()} if pid in stats}

    def _poll(self):
        while not self._stop.is_set():
            for pid, cpu in self._tree().items():
                self.seen[pid] = max(self.seen.get(pid, 0.0), cpu)
            self._stop.wait(0.1)

    def __enter__(self):
        import threading

        self.base = self._tree()  # processes alive before (a running Ray cluster): count their growth only
        self.seen = dict(self.base)
        self.self0 = time.process_time()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        for pid, cpu in self._tree().items():
            self.seen[pid] = max(self.seen.get(pid, 0.0), cpu)
        self.seconds = time.process_time() - self.self0 + sum(c - self.base.get(p, 0.0) for p, c in self.seen.items())


def best(fn, repeats: int):
    """(best wall time, CPU seconds of that run, the result)."""
    runs = []
    for _ in range(repeats):
        with TreeCPU() as cpu:
            t = time.perf_counter()
            out = fn()
            wall = time.perf_counter() - t
        runs.append((wall, cpu.seconds, out))
    return min(runs, key=lambda r: r[0])


def load() -> str:
    return "/".join(f"{v:.1f}" for v in os.getloadavg())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--iterations", type=int, default=75, help="white-box attack iterations (75: the paper's)")
    ap.add_argument("--scale-repeats", type=int, default=5, help="runs per size of the per-input table (best kept)")
    ap.add_argument("--no-ray", action="store_true", help="skip the Ray column")
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    print(f"{os.cpu_count()} CPUs; load average (1/5/15 min) at start: {load()}")

    # 1. 512 inputs, white-box on 64: one process, a local pool of 2, Ray on 2 CPUs
    sc = scenario(tmp, 512, 64, args.iterations)
    run_audit(MODEL, [PROFILE], sc, threads=1)  # warm-up: numba cache, onnxruntime allocations
    rows = []
    t1, c1, r1 = best(lambda: run_audit(MODEL, [PROFILE], sc, threads=1, jobs=1), args.repeats)
    rows.append(("local, 1 process", t1, c1, load()))
    t2, c2, r2 = best(lambda: run_audit(MODEL, [PROFILE], sc, threads=1, jobs=2), args.repeats)
    rows.append(("local pool, 2 processes", t2, c2, load()))
    reports = [r1, r2]
    t_ray = None
    if not args.no_ray:
        import ray

        t = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
        start = time.perf_counter() - t
        t_ray, c_ray, r3 = best(lambda: run_audit(MODEL, [PROFILE], sc, threads=1, ray="local"), args.repeats)
        ray.shutdown()
        rows.append(("Ray, 2 CPUs (running cluster)", t_ray, c_ray, load()))
        reports.append(r3)
    same = len({json.dumps(stable(r.data), sort_keys=True) for r in reports}) == 1
    if not same:
        print("the reports differ between executors: no timing printed")
        return 1
    units = 512 // 32 + 64 // 32 + 1
    print(f"\naudit of 512 inputs (clean + cost), white-box ({args.iterations} iterations) on 64; "
          f"{units} units; reports identical: yes")
    print(f"{'executor':32s} {'wall s':>8s} {'speed-up':>9s} {'CPU s, all processes':>21s}  load avg after")
    for name, t, c, la in rows:
        print(f"{name:32s} {t:8.2f} {t1 / t:8.2f}x {c:21.1f}  {la}")
    if t_ray is not None:
        print(f"Ray start-up (ray.init, 2 CPUs, not in the times above): {start:.1f} s; "
              f"Ray over the local pool: {t_ray / t2:.2f}x the wall time, {c_ray / c2:.2f}x the CPU time")

    # 2. time per input as the inputs grow (clean evaluation + cost, one process); an audit of one
    # input measures the fixed part (loading, checks, sessions), the rest is the cost per input
    fixed, _, _ = best(lambda: run_audit(MODEL, [PROFILE], scenario(tmp, 1, 0, 0), threads=1), args.scale_repeats)
    print(f"\nclean audit in one process; fixed part (an audit of 1 input): {fixed:.3f} s")
    print(f"{'inputs':>7s} {'wall s':>8s} {'ms / input':>11s} {'ms / input after the fixed part':>32s}  load avg after")
    per, marginal = [], []
    for n in (64, 256, 1024):
        s = scenario(tmp, n, 0, 0)
        t, _, _ = best(lambda: run_audit(MODEL, [PROFILE], s, threads=1), args.scale_repeats)
        per.append(t / n)
        marginal.append((t - fixed) / (n - 1))
        print(f"{n:7d} {t:8.3f} {1e3 * t / n:11.3f} {1e3 * marginal[-1]:32.3f}  {load()}")
    print(f"largest / smallest time per input: {max(per) / min(per):.2f}x with the fixed part, "
          f"{max(marginal) / min(marginal):.2f}x after it (flat = 1.00x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
