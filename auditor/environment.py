"""The machine and library versions an audit ran with (recorded in the JSON report next to the seed)."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux, sysctl on macOS, else platform.processor())."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "processor\t: arm")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    if sys.platform == "darwin":
        import subprocess

        try:
            return subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True,
                                  timeout=2).stdout.strip() or platform.processor()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine()


def environment(threads: int = 0, jobs: int = 1) -> dict:
    """Python, onnx, onnxruntime, numpy, numba versions, the CPU, and the threads the audit used."""
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(terse=True),
        "packages": {name: _version(name) for name in ("onnx", "onnxruntime", "numpy", "numba", "scipy")},
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "threads": int(threads) or None,  # onnxruntime intra-op threads per session (null: all cores)
        "jobs": int(jobs),
        "numba_threads": os.environ.get("NUMBA_NUM_THREADS"),
        "numba_cache_dir": os.environ.get("NUMBA_CACHE_DIR"),
    }
