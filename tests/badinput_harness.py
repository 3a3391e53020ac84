"""Shared harness of the tests/test_badinput_*.py modules: run one hostile input through the CLI
and assert the promise of the README: exit 2, exactly one stderr line naming where the problem
is, no traceback, no file changed outside the output paths, bounded memory and time.

Most cases run in-process (click's CliRunner, peak memory from the process's resident set); a representative subset runs as real subprocesses (peak RSS of the child), which also sees
what native libraries (onnxruntime, PIL) write to the stderr file descriptor.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from click.testing import CliRunner

# import what the commands import lazily, so that no case pays (or measures) the imports
import auditor.cli as cli
import auditor.pipeline.run  # noqa: F401
import auditor.report.core  # noqa: F401
import auditor.validate  # noqa: F401
import auditor.model.inspect  # noqa: F401
import auditor.report.html  # noqa: F401
import auditor.report.formats  # noqa: F401
import auditor.docs  # noqa: F401
import auditor.hw.profile  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "plain_cnn.onnx"
MAX_SECONDS = 10.0
MAX_BYTES = 1 << 30


@dataclass
class Outcome:
    code: int
    stderr: str
    stdout: str
    seconds: float
    peak_bytes: int
    changed: list


def snapshot(root: Path) -> dict:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            try:
                st = os.lstat(p)
            except OSError:
                continue
            out[p] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return out


def changes(before: dict, after: dict, allowed=()) -> list:
    allowed = {str(a) for a in allowed}
    diff = [p for p in set(before) | set(after) if before.get(p) != after.get(p)]
    return sorted(p for p in diff if not any(p == a or p.startswith(a + os.sep) for a in allowed))


def _rss_now() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_peak() -> None:
    """Reset the process's peak resident set (Linux: 5 > /proc/self/clear_refs), so each case
    measures its own peak."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _rss_peak() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


def run_cli(args, watch: Path, outputs=()) -> Outcome:
    """The CLI in this process; ``watch``: the folder whose files must not change (but ``outputs``).

    Memory: the process's peak resident set during the case (reset before it) minus its resident
    set before, what the case allocated at most (tracemalloc would slow PyYAML twenty-fold)."""
    args = [str(a) for a in args]
    before = snapshot(watch)
    runner = CliRunner()
    rss0 = _rss_now()
    _reset_peak()
    t0 = time.perf_counter()
    res = runner.invoke(cli.main, args, catch_exceptions=True)
    dt = time.perf_counter() - t0
    peak = max(0, _rss_peak() - rss0)
    err = res.stderr
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        import traceback

        err += "Traceback (in-process):\n" + "".join(traceback.format_exception(res.exception))
    return Outcome(res.exit_code, err, res.stdout, dt, peak, changes(before, snapshot(watch), outputs))


def run_subprocess(args, watch: Path, outputs=()) -> Outcome:
    args = [str(a) for a in args]
    before = snapshot(watch)
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        child = subprocess.Popen([sys.executable, "-m", "auditor.cli", *args], stdout=out, stderr=err, text=True,
                                 cwd=ROOT, stdin=subprocess.DEVNULL)
        # reaped with wait4 for this child's own peak resident set, not the largest of every child so far
        deadline = time.monotonic() + 60
        while True:
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                child.kill()
                os.wait4(child.pid, 0)
                raise subprocess.TimeoutExpired(child.args, 60)
            time.sleep(0.01)
        child.returncode = os.waitstatus_to_exitcode(status)
        dt = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        r = subprocess.CompletedProcess(child.args, child.returncode, out.read(), err.read())
    peak = usage.ru_maxrss * 1024  # kB on Linux
    return Outcome(r.returncode, r.stderr, r.stdout, dt, peak, changes(before, snapshot(watch), outputs))


_STARTUP: list = []


def startup_seconds() -> float:
    """What a subprocess spends before any case-specific work: the interpreter and the imports
    of an audit that fails at once (measured once, so a loaded machine does not fail a case)."""
    if not _STARTUP:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "auditor.cli", "audit", "missing.onnx", "--hw", "missing.yaml",
                        "--scenario", "missing.yaml"], capture_output=True, cwd=ROOT, timeout=120)
        _STARTUP.append(time.perf_counter() - t0)
    return 2 * _STARTUP[0]


_DRIVER = r"""
import json, os, sys, time
cases = json.load(open(sys.argv[1]))
import auditor.cli as cli
import auditor.pipeline.run, auditor.validate, auditor.report.core, auditor.model.inspect
out = []
for args in cases:
    with open("/proc/self/statm") as f:
        rss0 = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    try:
        open("/proc/self/clear_refs", "w").write("5")
    except OSError:
        pass
    err = os.path.join(os.path.dirname(sys.argv[1]), "stderr-%d.txt" % len(out))
    fd = os.open(err, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    saved = os.dup(2)
    os.dup2(fd, 2)
    t0 = time.perf_counter()
    code = 0
    try:
        cli.main(args, prog_name="auditor")
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    dt = time.perf_counter() - t0
    sys.stderr.flush()
    os.dup2(saved, 2)
    os.close(fd)
    os.close(saved)
    peak = 0
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            peak = int(line.split()[1]) * 1024
    out.append({"code": code, "stderr": open(err).read(), "seconds": dt, "peak": max(0, peak - rss0)})
print(json.dumps(out))
"""


def run_batch(cases, workdir: Path, watch: Path) -> list[Outcome]:
    """Several CLI runs in one fresh interpreter, each with the process's stderr file descriptor
    captured (so what native code writes there counts), its own peak memory and time."""
    import json

    cases = [[str(a) for a in args] for args in cases]
    spec = workdir / "cases.json"
    spec.write_text(json.dumps(cases))
    before = snapshot(watch)
    r = subprocess.run([sys.executable, "-c", _DRIVER, str(spec)], capture_output=True, text=True, cwd=ROOT,
                       timeout=300, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr[-3000:]
    changed = changes(before, snapshot(watch), [str(workdir)])
    return [Outcome(o["code"], o["stderr"], "", o["seconds"], o["peak"], changed)
            for o in json.loads(r.stdout.strip().splitlines()[-1])]


def assert_one_line_error(o: Outcome, where: str, *, subprocess_run: bool = False) -> str:
    """Exit 2, one `error:` line on stderr containing ``where``, nothing else; returns the line."""
    assert "Traceback" not in o.stderr, o.stderr[-3000:]
    assert o.code == 2, f"exit {o.code}: {o.stderr[-2000:]}"
    lines = [ln for ln in o.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, o.stderr[-3000:]
    assert lines[0].startswith("error: "), lines[0]
    assert where in lines[0], f"{where!r} not in {lines[0]!r}"
    assert len(lines[0]) <= 700, len(lines[0])
    assert o.seconds < MAX_SECONDS + (startup_seconds() if subprocess_run else 0), o.seconds
    assert o.peak_bytes < MAX_BYTES, o.peak_bytes
    assert not o.changed, o.changed
    return lines[0]


def assert_usage_error(o: Outcome, option: str) -> None:
    """A usage mistake: click's exit 2 with its usage lines, naming the option, no traceback."""
    assert "Traceback" not in o.stderr, o.stderr[-3000:]
    assert o.code == 2, f"exit {o.code}: {o.stderr}"
    assert "Usage:" in o.stderr and option in o.stderr, o.stderr
    assert not o.changed, o.changed


def check(args, watch: Path, where: str, *, outputs=(), subprocess_run: bool = False) -> str:
    o = (run_subprocess if subprocess_run else run_cli)(args, watch, outputs)
    return assert_one_line_error(o, where, subprocess_run=subprocess_run)


def sparse_file(path: Path, size: int, head: bytes = b"") -> Path:
    """A file of ``size`` bytes that takes no disk space beyond ``head``."""
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(size)
    return path


DENSE = "name: dense\ncost_model: dense\nparams: {}\n"
SCENARIO = "name: t\ndata: {count: 8}\n"


def base_files(tmp: Path) -> tuple[Path, Path]:
    """A valid hardware profile and scenario in ``tmp``."""
    prof = tmp / "dense.yaml"
    prof.write_text(DENSE)
    sc = tmp / "sc.yaml"
    sc.write_text(SCENARIO)
    return prof, sc
