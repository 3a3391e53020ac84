"""A minimal progress bar on stderr, silent when stderr is not a TTY (CI logs, pipes, tests)."""

from __future__ import annotations

import sys
import time


class Progress:
    """``with Progress("white-box attack", total=75) as p: ... p.update(1)``"""

    def __init__(self, label: str, total: int, enabled: bool | None = None, stream=None, eta: bool = False):
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.label, self.total, self.done = label, max(int(total), 1), 0
        self._t0 = time.monotonic()
        self._last = 0.0
        self.eta = eta  # show the estimated time left (from the mean time per step so far)

    def update(self, n: int = 1) -> None:
        self.done = min(self.done + n, self.total)
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < 0.1 and self.done < self.total:
            return
        self._last = now
        frac = self.done / self.total
        bar = "#" * int(24 * frac)
        spent = now - self._t0
        left = f" ETA {spent * (self.total - self.done) / self.done:6.1f}s" if self.eta and self.done else ""
        self.stream.write(f"\r{self.label[:30]:30s} [{bar:24s}] {self.done}/{self.total} {spent:6.1f}s{left}")
        self.stream.flush()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self.stream.write("\r" + " " * 79 + "\r")
            self.stream.flush()
