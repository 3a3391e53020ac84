"""The audit as independent units of work, and how their results are merged back.

An audit splits into units that need nothing from each other once the clean evaluation is done:

* ``clean``: forward pass and cost simulation of one chunk of the data on one profile;
* ``energy``: one energy-latency search on one chunk of its inputs (a search that looks at its
  inputs as a whole — uniform sampling, Sponge-GA, top-natural ranking — is one unit);
* ``evasion``: one evasion attack, every ε of it (the ε-balls are nested: what works at a small
  budget is kept for the larger ones), on one chunk of its inputs;
* ``approx``: the exact-vs-approximate comparison of one profile;
* ``finish``: the statistics and checks of one profile, from the merged per-input results.

Chunks have a fixed size (the scenario's ``chunk_size``), never one that depends on the number
of workers, and the randomness of a chunk comes from the seed and the unit alone
(:func:`unit_seed`), never from scheduling order; results are merged in unit order.  So the
serial run, a local process pool (``--jobs N``) and a Ray cluster (``--ray``) give the same
report.  Statistics over the whole data (means, percentiles, robust accuracy, the worst input)
are computed once, from the merged per-input results, exactly as an unchunked run computes them.

A unit names a module-level function (pickled by reference, so the workers import it) that is
called as ``fn(ctx, unit, deadline)``; :func:`run_unit` turns its end into an outcome:
``("ok", value)``, ``("cut", None)`` (stopped by --max-seconds) or ``("error", message)`` (bad
input, an :class:`~auditor.errors.AuditorError`).
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from .. import progress
from ..attacks.energy.base import chunks
from ..errors import AuditorError
from ..runtime.classifier import BudgetExceeded
from ..runtime.session import release_gradients

@dataclass(frozen=True)
class Unit:
    """One task: ``fn(ctx, unit, deadline)`` on inputs ``start:stop`` of profile ``profile``."""

    uid: str  # stable name, e.g. "cnvlutin/energy[0]:whitebox/1"
    fn: Callable  # a module-level function (picklable by reference)
    profile: int = 0
    index: int = 0  # the attack's index in the scenario
    part: int = 0  # the chunk's number
    start: int = 0
    stop: int = 0
    seed: int = 0
    timed: bool = False  # stopped and skipped by --max-seconds
    args: Any = None  # what the driver computed for it (layer weights, targets, merged results)


@dataclass
class AuditContext:
    """What every unit reads: put in the object store (Ray) or sent to each worker (process pool)
    once per audit, not once per unit."""

    proto: Any  # the model (onnx ModelProto)
    profiles: list
    scenario: Any
    data: Any
    seed: int
    threads: int = 0
    return_memory: bool = False  # its processes return freed tensors to the system (run_audit)
    key: str = field(default_factory=lambda: uuid.uuid4().hex)


def unit_seed(base: int, part: int) -> int:
    """The seed of chunk ``part`` of a unit seeded ``base``: the first chunk keeps ``base`` (an
    audit that fits in one chunk draws what it drew before chunking existed), the others get an
    independent stream derived from (base, part)."""
    if part == 0:
        return int(base)
    return int(np.random.SeedSequence([int(base) & 0xFFFFFFFF, int(part)]).generate_state(1)[0] & 0x7FFFFFFF)


def chunk_bounds(n: int, size: int, split: bool = True) -> list[tuple[int, int]]:
    """(start, stop) of the chunks of ``n`` inputs; one chunk when ``split`` is false."""
    if not split or n == 0:
        return [(0, n)]
    return [(s.start, s.stop) for s in chunks(n, size)]


# --------------------------------------------------------------------------------------------
# merging
# --------------------------------------------------------------------------------------------

#: scalar leaves that add up over chunks (times, query counts, AutoAttack's per-member counts);
#: every other scalar is the same in every chunk
SUMMED = ("seconds", "queries", "n_run", "n_attacked", "n_broken")


def merge(parts: list):
    """Concatenate chunk results in order: arrays along the input axis, objects with a
    ``concat`` classmethod (Evaluation, CostResult) through it, dicts and lists leaf by leaf
    (lists of names as their sorted union), the numbers under :data:`SUMMED` keys summed, other
    scalars taken from the first part."""
    return _merge(parts, None)


def _merge(parts: list, key):
    first = parts[0]
    if len(parts) == 1:
        return first
    if isinstance(first, np.ndarray):
        return np.concatenate(parts, axis=0)
    if hasattr(type(first), "concat"):
        return type(first).concat(parts)
    if isinstance(first, dict):
        return {k: _merge([p[k] for p in parts], k) for k in first}
    if isinstance(first, (list, tuple)):
        if all(isinstance(v, (str, int, float, type(None))) for p in parts for v in p):  # a list of plain values
            if all(isinstance(v, str) for p in parts for v in p) and any(list(p) != list(first) for p in parts):
                return sorted(set().union(*parts))  # names (e.g. members skipped): those of any chunk
            return first
        return type(first)(_merge([p[i] for p in parts], key) for i in range(len(first)))
    if key in SUMMED and isinstance(first, (int, float, np.integer, np.floating)) and not isinstance(first, bool):
        return sum(parts[1:], first)
    return first


# --------------------------------------------------------------------------------------------
# running a unit (in the driver, a pool worker or a Ray worker)
# --------------------------------------------------------------------------------------------

_STATE: dict = {}


def cached(ctx: AuditContext, name, build: Callable):
    """Per-process cache of what units of the same audit share (sessions, cost models): built on
    first use in each worker, dropped when a worker serves another audit."""
    key = (ctx.key, name)
    if key not in _STATE:
        for k in [k for k in _STATE if k[0] != ctx.key]:
            del _STATE[k]
        _STATE[key] = build()
    return _STATE[key]


def _test_kill_hook() -> None:
    """Tests only: AUDITOR_TEST_KILL_ONCE names a marker file; the first unit that removes it
    kills its own worker process (to test that a task whose worker died is retried)."""
    marker = os.environ.get("AUDITOR_TEST_KILL_ONCE")
    if marker:
        try:
            os.unlink(marker)
        except OSError:
            return
        os._exit(17)


#: the stage of the last unit this process ran (see run_unit)
_LAST_STAGE: list = [None]


def stage_of(ctx: AuditContext, unit: Unit) -> tuple:
    """What a unit's sessions serve: its kind of work and, for a search, which of the scenario's
    searches (the chunks of one search, and the same search on profiles that deploy the same
    model, share their gradient sessions)."""
    return (ctx.key, unit.fn.__name__, unit.index)


def run_unit(ctx: AuditContext, unit: Unit, deadline=None):
    """Run one unit; returns ("ok", value, seconds), ("cut", None) or ("error", message).  Its
    progress bars are labelled with the profile; -v logs its duration (auditor.progress).  A unit
    of another stage than the last one this process ran (:func:`stage_of`) first releases the
    gradient sessions built so far (a large model's gradient sessions are as large as its forward
    session and more; a search builds again those it needs)."""
    _test_kill_hook()
    stage = stage_of(ctx, unit)
    if _LAST_STAGE[0] != stage:
        release_gradients()
        _LAST_STAGE[0] = stage
    try:
        if unit.timed and deadline is not None and deadline.expired():
            return ("cut", None)
        t0 = time.monotonic()
        with progress.for_profile(ctx.profiles[unit.profile].name):
            value = unit.fn(ctx, unit, deadline if unit.timed else None)
        dt = time.monotonic() - t0
        progress.log(f"{unit.uid}: {dt:.2f} s")
        return ("ok", value, round(dt, 3))
    except BudgetExceeded:
        return ("cut", None)
    except AuditorError as e:
        return ("error", str(e))
