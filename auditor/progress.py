"""Progress bars and stage log lines on stderr.

* :class:`Progress` is a tqdm bar (the convention users know: rate and ETA) labelled with the
  hardware profile being audited; it is drawn only when stderr is a terminal (never in CI logs,
  pipes or tests) and never with ``-q``.
* :func:`stage` times one stage of the audit (clean evaluation, each search and attack, the
  approximate execution): with ``-v`` it logs ``auditor: [profile] stage ... 1.23 s``, and it
  records the duration for the report (``profiles[].timing``) and the JUnit testcase times.

The CLI's ``-q``/``-v`` are passed through the environment (``AUDITOR_QUIET``,
``AUDITOR_VERBOSE``) so that profiles audited in worker processes (``--jobs``) behave alike.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time

_profile: list[str] = []


def quiet() -> bool:
    return os.environ.get("AUDITOR_QUIET", "") not in ("", "0")


def verbose() -> bool:
    return os.environ.get("AUDITOR_VERBOSE", "") not in ("", "0") and not quiet()


def configure(*, quiet: bool = False, verbose: bool = False) -> None:
    os.environ["AUDITOR_QUIET"] = "1" if quiet else ""
    os.environ["AUDITOR_VERBOSE"] = "1" if verbose else ""


def log(msg: str) -> None:
    """One line on stderr with -v (stage timings, what is being done)."""
    if verbose():
        prof = f"[{_profile[-1]}] " if _profile else ""
        print(f"auditor: {prof}{msg}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def for_profile(name: str):
    """Label the bars and log lines of everything inside with the profile's name."""
    _profile.append(str(name))
    try:
        yield
    finally:
        _profile.pop()


@contextlib.contextmanager
def stage(name: str, times: dict | None = None, key: str | None = None):
    """Time a stage; with -v log its start and duration; add the seconds to ``times[key]``."""
    log(f"{name} ...")
    t0 = time.monotonic()
    try:
        yield
    finally:
        dt = time.monotonic() - t0
        if times is not None:
            k = key or name
            times[k] = round(times.get(k, 0.0) + dt, 3)
        log(f"{name}: {dt:.2f} s")


def _enabled(stream, enabled: bool | None) -> bool:
    if quiet():
        return False
    if enabled is not None:
        return bool(enabled)
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class Progress:
    """``with Progress("white-box attack", total=75) as p: ... p.update(1)`` — a tqdm bar on stderr
    (profile name, count, rate, ETA) when stderr is a terminal; silent otherwise."""

    def __init__(self, label: str, total: int, enabled: bool | None = None, stream=None, eta: bool = True):
        # eta: kept for callers; a tqdm bar always shows the rate and the time left
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = _enabled(self.stream, enabled)
        self.label = (f"[{_profile[-1]}] " if _profile else "") + str(label)
        self.total, self.done = max(int(total), 1), 0
        self._bar = None

    def update(self, n: int = 1) -> None:
        first = self.done == 0
        self.done = min(self.done + n, self.total)
        if self._bar is not None:
            self._bar.update(n)
            if first or self.done == self.total:
                self._bar.refresh()  # the first step and the end are always drawn

    def set_description(self, text: str) -> None:
        if self._bar is not None:
            self._bar.set_description_str((f"[{_profile[-1]}] " if _profile else "") + text)

    def __enter__(self) -> "Progress":
        if self.enabled:
            import shutil

            from tqdm import tqdm

            # the terminal's width (80 when it reports none: tqdm would then draw nothing)
            self._bar = tqdm(total=self.total, desc=self.label, file=self.stream, leave=False, mininterval=0.2,
                             ncols=min(shutil.get_terminal_size((80, 24)).columns, 120),
                             bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} "
                                        "[{elapsed}, ETA {remaining}, {rate_fmt}]")
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def first_compile_note() -> str:
    """', compiling kernels (first run only)' when numba's cache folder holds no compiled kernel yet."""
    d = os.environ.get("NUMBA_CACHE_DIR")
    if not d:
        return ""
    try:
        from pathlib import Path

        if any(Path(d).rglob("*.nbi")):
            return ""
    except OSError:
        return ""
    return ", compiling kernels (first run only)"
