"""How long an audit's gradient sessions live: the chunks of one search, and the same search on
the profiles that deploy the same model, share them; the next search releases them (issue 12:
memory of ImageNet-sized models), and the searches are ordered so that it can."""

from pathlib import Path

import numpy as np

from auditor.pipeline import run as run_mod
from auditor.pipeline.units import AuditContext, Unit, cached, run_unit


def _gradient_unit(ctx, u, deadline):
    """A unit that runs a gradient of the bundled model: which runner served it."""
    from auditor.runtime.session import OnnxClassifier

    clf = cached(ctx, ("clf",), lambda: OnnxClassifier(ctx.proto, batch_size=4))
    clf.value_and_grad(ctx.data.x[u.start:u.stop], "ce", target=np.zeros(u.stop - u.start, np.int64))
    return id(clf._grad_runner("ce")[0])


def test_a_unit_of_another_stage_releases_the_gradient_sessions():
    """The chunks of one search, and the same search on other profiles, share its gradient
    session; the first unit of another search releases it (memory: issue 12)."""
    import types
    import weakref

    from auditor.model.load import load_model
    from auditor.runtime.session import OnnxClassifier

    proto = load_model(Path(__file__).resolve().parents[2] / "models" / "plain_cnn.onnx")
    data = types.SimpleNamespace(x=np.random.default_rng(0).random((8, 1, 28, 28), dtype=np.float32))
    ctx = AuditContext(proto, [types.SimpleNamespace(name="a"), types.SimpleNamespace(name="b")], None, data, 0)
    units = [Unit("a/s0/0", _gradient_unit, 0, 0, 0, 0, 2), Unit("a/s0/1", _gradient_unit, 0, 0, 1, 2, 4),
             Unit("b/s0/0", _gradient_unit, 1, 0, 0, 4, 6), Unit("a/s1/0", _gradient_unit, 0, 1, 0, 6, 8)]
    ids = [run_unit(ctx, units[0])[1]]
    clf = cached(ctx, ("clf",), lambda: None)
    assert isinstance(clf, OnnxClassifier)
    first = weakref.ref(clf._grad_runner("ce")[0])
    ids += [run_unit(ctx, u)[1] for u in units[1:3]]
    assert ids[0] == ids[1] == ids[2] and first() is not None  # one search: the same session
    run_unit(ctx, units[3])
    assert first() is None  # another search: released before it ran (and built again for it)
    assert set(clf._grad_runners) == {"ce"}


def _noop(ctx, u, deadline):
    return None


def test_search_units_go_search_by_search_over_the_profiles(monkeypatch):
    import types

    def energy(ctx, p, clean):
        return [Unit(f"{p}/e{k}/{i}", _noop, p, k, i) for k in range(2) for i in range(2)]

    def evasion(ctx, p, logits):
        return [Unit(f"{p}/v0/0", _gradient_unit, p, 0, 0)]

    monkeypatch.setattr(run_mod, "energy_units", energy)
    monkeypatch.setattr(run_mod, "evasion_units", evasion)
    sc = types.SimpleNamespace(approx=None, robustness=None, checks=types.SimpleNamespace(no_gradient_masking=False))
    ctx = AuditContext(None, [types.SimpleNamespace(name="a", approx=None)] * 3, sc, None, 0)
    clean = [types.SimpleNamespace(logits=None), None, types.SimpleNamespace(logits=None)]  # 1: cut short
    got = [u.uid for u in run_mod.search_units(ctx, clean)]
    assert got == ["0/e0/0", "0/e0/1", "2/e0/0", "2/e0/1", "0/e1/0", "0/e1/1", "2/e1/0", "2/e1/1", "0/v0/0", "2/v0/0"]


def test_freed_memory_is_returned_only_for_a_huge_model_when_asked(monkeypatch):
    """run_audit(return_memory=True) (the command line) fixes the allocator's threshold only for a
    model with a VGG-sized weight: on smaller models it slows every run (each tensor mapped and
    faulted in afresh) and saves nothing; without the flag (the library) it never does."""
    from auditor.runtime import engine

    root = Path(__file__).resolve().parents[2]
    calls = []
    monkeypatch.setattr(run_mod, "return_freed_memory", lambda: calls.append(1) or True)

    def audit(return_memory):
        calls.clear()
        run_mod.run_audit(root / "models" / "plain_cnn.onnx", [root / "hwprofiles" / "dense.yaml"],
                          root / "scenarios" / "default.yaml", return_memory=return_memory)
        return len(calls)

    assert audit(True) == 0 and audit(False) == 0  # plain_cnn: no weight of 64 MiB
    monkeypatch.setattr(engine, "PREPACK_MAX_BYTES", 1)  # every float weight counts as huge
    assert audit(True) == 1 and audit(False) == 0
