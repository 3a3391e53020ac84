"""One battery over every registered evasion attack, energy-latency search and defence.

A class added to a registry is tested here without editing this file: its budget is shrunk by one
rule (:func:`small_params`), its parameters are checked against their one declaration (defaults
validate, round-trip through ``make_*`` and the scenario JSON Schema, bounds are enforced with an
error naming the parameter), and its uniform call is checked on a small analytic model.
"""

from __future__ import annotations

import jsonschema
import numpy as np
import pytest

from auditor.attacks.base import MAX_INT_PARAM, Param
from auditor.attacks.energy import SEARCHES, SearchResult, make_search
from auditor.attacks.energy.analysis import density
from auditor.attacks.energy.defences import DEFENCES, make_defence
from auditor.attacks.evasion import ATTACKS, make_attack
from auditor.catalog import params_schema, registry_catalog
from auditor.errors import AuditorError
from auditor.norms import norm as _norm

from analytic import ToyMLP, make_mlp

#: the tolerance of "inside the ball" and "inside the pixel range" (float32 rounding)
TOL = 1e-5


def small_params(cls) -> dict:
    """Every integer parameter shrunk to min(default, max(its lower bound, 3)) — a small budget
    (and batches of 3 inputs) for any attack or search, with no per-class list."""
    out = {}
    for k, p in cls.PARAMS.items():
        if p.kind == "int" and p.default is not None:
            out[k] = int(min(p.default, max(p.low if p.low is not None else 0, 3)))
    return out


def _required(cls) -> dict:
    """A value for every required parameter: the middle of its range."""
    return {k: int((p.low + p.high) // 2) if p.kind == "int" else (p.low + p.high) / 2
            for k, p in cls.PARAMS.items() if p.required}


def _check_declaration(registry, make, name):
    cls = registry.get(name)
    assert cls.name == name and cls.PARAMS, name
    schema = params_schema(cls)
    jsonschema.Draft202012Validator.check_schema(schema)
    entry = registry_catalog(registry)[name]
    for k, p in cls.PARAMS.items():
        assert isinstance(p, Param) and p.doc.strip(), f"{name}.{k} is undocumented"
        assert entry["params"][k]["doc"] == p.doc
    obj = make(name, **_required(cls))
    settings = obj.settings()
    assert set(settings) == {k for k, p in cls.PARAMS.items() if p.kind != "object"}
    # the values it runs with validate against the schema and rebuild the same object
    jsonschema.validate({k: v for k, v in settings.items() if k != "progress"}, schema)
    assert make(name, **settings).settings() == settings
    with pytest.raises(AuditorError, match="unknown parameter"):
        make(name, **_required(cls), no_such_parameter=1)
    for k, p in cls.PARAMS.items():  # out of range, ill-typed: an error that names the parameter
        bad = []
        if p.kind in ("int", "float") and p.low is not None:
            bad.append(p.low - 1 if not p.low_open else p.low)
        if p.kind in ("int", "float") and p.high is not None:
            bad.append(p.high + 1)
        if p.kind == "int":
            bad += [2.5, MAX_INT_PARAM + 1 if p.high is None else p.high + 1, True]
        if p.kind == "choice":
            bad.append("no-such-choice")
        if p.kind in ("bool", "bool?"):
            bad.append("maybe")
        for v in bad:
            with pytest.raises(AuditorError, match=f"'{k}'"):
                make(name, **{**_required(cls), k: v})
            with pytest.raises(jsonschema.ValidationError):
                jsonschema.validate({k: v}, schema)


# --------------------------------------------------------------------------------------------
# evasion attacks
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(ATTACKS))
def test_attack_declaration(name):
    _check_declaration(ATTACKS, make_attack, name)


@pytest.mark.parametrize("name", list(ATTACKS))
def test_attack_contract(name):
    model, x, y = make_mlp()
    x, y = x[:7], y[:7]
    attack = make_attack(name, **small_params(ATTACKS.get(name)))
    eps = [2.0, 6.0] if attack.norm == "l0" else [0.1, 0.5]
    r1 = attack(model, x, y, eps, seed=5)
    r2 = attack(model, x, y, eps, seed=5)
    assert r1.attack == name and r1.norm == attack.norm and r1.params == attack.params
    assert len(r1.x_adv) == len(r1.success) == 2 and r1.epsilons == eps
    assert r1.queries.shape == (len(x),) and r1.queries.min() >= 1
    lo, hi = model.bounds
    for k, e in enumerate(eps):
        xa, s = r1.x_adv[k], r1.success[k]
        np.testing.assert_array_equal(xa, r2.x_adv[k])  # the same seed: the same examples
        np.testing.assert_array_equal(s, r2.success[k])
        assert xa.shape == x.shape and xa.dtype == np.float32 and s.shape == (len(x),) and s.dtype == bool
        assert xa.min() >= lo and xa.max() <= hi
        dist = _norm(xa - x, attack.norm)
        assert np.all(dist[s] <= e * (1 + TOL) + TOL)  # successes lie inside the ε ball
        fooled = model.logits(xa).argmax(axis=1) != y  # an independent forward pass decides
        np.testing.assert_array_equal(s, fooled & (dist <= e * (1 + TOL) + TOL))
    if attack.minimal:
        assert r1.distances.shape == (len(x),)
        np.testing.assert_array_equal(r1.distances, r2.distances)
        rm = attack(model, x, y, seed=5)
        assert rm.epsilons == [None] and len(rm.x_adv) == 1
        fooled = model.logits(rm.x_min).argmax(axis=1) != y
        np.testing.assert_array_equal(rm.success[0], fooled)
        np.testing.assert_array_equal(rm.success[0], np.isfinite(rm.distances))


# --------------------------------------------------------------------------------------------
# energy-latency searches
# --------------------------------------------------------------------------------------------


def _toy_cost(model):
    return lambda x: density(model.activations(x))


@pytest.mark.parametrize("name", list(SEARCHES))
def test_search_declaration(name):
    _check_declaration(SEARCHES, make_search, name)


@pytest.mark.parametrize("name", list(SEARCHES))
def test_search_contract(name):
    toy = ToyMLP(seed=3)
    cls = SEARCHES.get(name)
    extra = {"surrogate": ToyMLP(seed=5)} if "surrogate" in cls.needs else {}
    search = make_search(name, **small_params(cls), **extra)
    x = np.random.default_rng(2).uniform(0, 0.4, (5, 1, 6, 6)).astype(np.float32)
    r1 = search(toy, x, cost_fn=_toy_cost(toy), seed=7)
    r2 = search(toy, x, cost_fn=_toy_cost(toy), seed=7)
    assert isinstance(r1, SearchResult) and r1.search == name
    assert r1.x.dtype == np.float32 and r1.x.shape[1:] == x.shape[1:] and 1 <= len(r1.x) <= len(x)
    assert r1.x.min() >= 0 and r1.x.max() <= 1
    assert r1.cost.shape == (len(r1.x),) and np.all(np.isfinite(r1.cost))
    np.testing.assert_allclose(r1.cost, _toy_cost(toy)(r1.x), rtol=1e-6)  # measured on what it returns
    assert r1.queries >= r1.info["cost_queries"] >= len(r1.x) and r1.iterations >= 0 and r1.seconds >= 0
    assert r1.info["params"] == search.settings() and r1.info["seed"] == 7
    np.testing.assert_array_equal(r1.x, r2.x)  # the same seed: the same inputs
    np.testing.assert_array_equal(r1.cost, r2.cost)
    if r1.label_kept is not None:  # label-keeping searches: checked by an independent forward pass
        clean = toy.predict(x)
        np.testing.assert_array_equal(r1.label_kept, toy.predict(r1.x) == clean)


# --------------------------------------------------------------------------------------------
# defences
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(DEFENCES))
def test_defence_declaration(name):
    _check_declaration(DEFENCES, make_defence, name)
    with pytest.raises(AuditorError, match="unknown defence"):
        make_defence(name + "x")


@pytest.mark.parametrize("name", list(DEFENCES))
def test_defence_contract(name):
    cls = DEFENCES.get(name)
    d = make_defence(name, **_required(cls))
    x = np.random.default_rng(4).uniform(0, 1, (3, 1, 8, 8)).astype(np.float32)
    if d.on_input:
        for bounds in ((0.0, 1.0), (-1.0, 1.0)):
            xb = x * (bounds[1] - bounds[0]) + bounds[0]
            out = d(xb, bounds)
            assert out.shape == xb.shape and out.dtype == np.float32
            assert out.min() >= bounds[0] - TOL and out.max() <= bounds[1] + TOL
            np.testing.assert_array_equal(out, d(xb, bounds))  # deterministic
    else:
        import onnx

        from auditor.data import load_data
        from auditor.scenario import DataSpec

        model = onnx.load("models/plain_cnn.onnx")
        data = load_data(DataSpec(count=16), ".")
        defended = d.defend(model, data.x, data.y)
        assert isinstance(defended, onnx.ModelProto) and len(defended.graph.node) > len(model.graph.node)
        with pytest.raises(AuditorError, match="not an input defence"):
            d(x)
