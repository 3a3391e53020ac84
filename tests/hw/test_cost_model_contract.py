"""The contract every registered cost model keeps: one battery over ``auditor.hw.COST_MODELS``, so a
new model is checked by registering it (and, once its figures are settled, storing them here)."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx.shape_inference import infer_shapes

from auditor.errors import AuditorError
from auditor.hw import COST_MODELS, CostResult, build_cost_model
from auditor.model.graph import compute_layers
from builders import random_activations

ROOT = Path(__file__).resolve().parents[2]

# sha256 prefix of cycles, dynamic energy and total energy of each model with its default Params on
# the seeded activations below, as computed before the DaDianNao split and the energy table
STORED = {
    "cnvlutin": "6068277b3c92a58f2a58",
    "sparce": "f2c4d082dfb680748cd5",
    "dense": "c954abef78644b1f6333",
    "axfpm": "c94fd9c229c6771e8355",
}


@pytest.fixture(scope="module")
def bn_resnet():
    """bn_resnet's compute layers (convolutions, 1x1 shortcuts, a Gemm) and 4 seeded activations
    per layer input, half of them zeros."""
    layers = compute_layers(infer_shapes(onnx.load(str(ROOT / "models" / "bn_resnet.onnx"))))
    return layers, random_activations(layers, 4, 11, 0.5)


def test_registry_names_every_model_once():
    # the shipped models first, in the order of docs/reference.md; a new module adds itself after them
    assert list(COST_MODELS)[:4] == ["cnvlutin", "sparce", "dense", "axfpm"]
    assert len(set(COST_MODELS.values())) == len(COST_MODELS)
    for name, cls in COST_MODELS.items():
        assert cls.kind == name and COST_MODELS.get(name.upper()) is cls
    with pytest.raises(AuditorError, match=r"unknown cost model 'tpu'; known: cnvlutin, sparce, dense, axfpm\b"):
        build_cost_model("tpu")


@pytest.mark.parametrize("name", list(COST_MODELS))
def test_contract(name, bn_resnet):
    layers, acts = bn_resnet
    cls = COST_MODELS.get(name)
    model = cls()  # builds from its default Params
    assert isinstance(model.params, cls.Params) and model.params == cls.from_params({}).params
    assert build_cost_model(name, dataclasses.asdict(model.params)).params == model.params
    r = model.simulate(layers, acts)
    n, nl = 4, len(layers)
    assert isinstance(r, CostResult) and r.layer_names == [lay.name for lay in layers]
    assert r.cycles.shape == r.dense_cycles.shape == r.energy_j.shape == (n, nl)
    assert r.cycles.dtype == r.dense_cycles.dtype == np.int64 and r.energy_j.dtype == np.float64
    assert r.latency_s.shape == r.energy_total_j.shape == r.edp.shape == (n,)
    for a in (r.cycles, r.dense_cycles, r.energy_j, r.latency_s, r.energy_total_j, r.edp, *r.breakdown.values()):
        assert np.isfinite(a).all() and (a >= 0).all()
    assert (r.cycles > 0).all() and (r.cycles <= r.dense_cycles).all()
    np.testing.assert_allclose(r.latency_s, r.cycles.sum(1) / r.clock_hz)
    np.testing.assert_allclose(sum(r.breakdown.values()), r.energy_total_j)
    # deterministic, and batch-independent: each input costs the same alone as in the batch
    again = model.simulate(layers, acts)
    np.testing.assert_array_equal(again.cycles, r.cycles)
    np.testing.assert_array_equal(again.energy_j, r.energy_j)
    one = model.simulate(layers, {k: v[2:3] for k, v in acts.items()})
    np.testing.assert_array_equal(one.cycles[0], r.cycles[2])
    np.testing.assert_array_equal(one.energy_j[0], r.energy_j[2])
    if model.input_independent:
        assert (r.cycles == r.cycles[0]).all()
    else:  # an all-zero input is cheaper than a dense one on a machine that skips zeros
        zeros = model.simulate(layers, {k: np.zeros_like(v[:1]) for k, v in acts.items()})
        ones = model.simulate(layers, {k: np.ones_like(v[:1]) for k, v in acts.items()})
        assert zeros.total_cycles[0] < ones.total_cycles[0] <= ones.dense_cycles.sum()
    if name in STORED:
        data = r.cycles.tobytes() + r.energy_j.tobytes() + r.energy_total_j.tobytes()
        assert hashlib.sha256(data).hexdigest()[:20] == STORED[name]


@pytest.mark.parametrize("name", list(COST_MODELS))
def test_contract_bad_input(name, bn_resnet):
    layers, acts = bn_resnet
    model = COST_MODELS.get(name)()
    with pytest.raises(AuditorError, match="no activation"):
        model.simulate(layers, {})
    bad = dict(acts)
    bad[layers[0].input] = acts[layers[0].input][:, :, 1:]  # one row short
    with pytest.raises(AuditorError, match="has shape"):
        model.simulate(layers, bad)
    with pytest.raises(AuditorError, match="params"):
        build_cost_model(name, {"no_such_param": 1})
