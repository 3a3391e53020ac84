"""The local process pool under --max-seconds: a unit that does not stop by itself (or a worker
still starting up) is stopped after a short grace period, so the audit ends within its budget."""

import time
from types import SimpleNamespace

from auditor.pipeline.executors import GRACE_S, PoolExecutor
from auditor.pipeline.run import Deadline
from auditor.pipeline.units import AuditContext, Unit


def _stuck(ctx, unit, deadline):
    """A unit that never looks at its deadline (an onnxruntime call that cannot be interrupted)."""
    time.sleep(120)


def _quick(ctx, unit, deadline):
    return unit.part


def test_pool_stops_units_that_outlive_the_budget():
    ctx = AuditContext(None, [SimpleNamespace(name="p")], None, None, 0)
    units = [Unit(f"p/stuck/{i}", _stuck, part=i, timed=True) for i in range(3)]
    t0 = time.time()
    deadline = Deadline(2.0, t0, reserve=0.5)  # work may start until t0 + 1.5 s
    with PoolExecutor(ctx, 2) as ex:
        out = ex.run(units, deadline, "stuck units")
        ended = time.time() - t0
        # the workers were stopped (started or still starting): every unit is cut short, and the
        # pool ends within the budget plus the grace period (not when the units would have)
        assert [o[0] for o in out] == ["cut"] * 3
        assert ended < 2.0 + GRACE_S + 1.0, ended
        # later phases of the audit (the statistics) run in this process
        assert [o[:2] for o in ex.run([Unit("p/quick/0", _quick, part=7)], None, "after")] == [("ok", 7)]
    assert time.time() - t0 < 2.0 + GRACE_S + 2.0
