"""Dense (DaDianNao-like) cost model, the registry, the Params dataclasses and the bundled profiles."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import numpy as np
import pytest
import yaml

from auditor import schema
from auditor.hw import COST_MODELS, CnvlutinModel, DenseModel, DenseParams, SparceModel, build_cost_model
from auditor.model.layers import ComputeLayer

ROOT = Path(__file__).resolve().parents[2]
PROFILES = ("cnvlutin", "sparce", "sparce_simd4", "dense")


def grouped_layer():
    # Conv C=8 -> M=4, group 2 (4 channels / 2 filters per group), 3x3 kernel on 5x5: 3x3 outputs
    return ComputeLayer("g", "Conv", "x", "g_out", (8, 5, 5), (4, 3, 3), (4, 4, 3, 3), (3, 3), macs=4 * 9 * 4 * 9,
                        group=2)


def test_hand_computed_dense_cycles():
    layer = grouped_layer()
    x = np.random.default_rng(0).normal(size=(2, 8, 5, 5)).astype(np.float32)
    x[1] = 0.0
    # 2 groups x 9 positions = 18 windows, 1 pass (2 filters per group <= 256).
    # window-packed (4 channels < brick 16): 36 values spread over 16 lanes in bricks of
    # ceil(36 / 16) = 3 -> 12 bricks, one step costing 3 -> 18 * 3 = 54 cycles, whatever the input
    r = DenseModel().simulate([layer], {"x": x})
    assert r.cycles.tolist() == [[54], [54]]
    np.testing.assert_array_equal(r.cycles, r.dense_cycles)
    # one 4-value brick per position: 9 bricks -> one step costing 4 -> 18 * 4 = 72
    r2 = DenseModel(DenseParams(pack_narrow_layers=False)).simulate([layer], {"x": x})
    assert r2.cycles.tolist() == [[72], [72]]
    # every slot is multiplied: MACs = the layer's MACs (18 windows x 36 values x 2 filters = 1296)
    p = DenseParams()
    assert r.breakdown["mac"][0] == pytest.approx(layer.macs * p.e_mac_pj * 1e-12)
    np.testing.assert_allclose(r.energy_total_j[0], r.energy_total_j[1])
    # the zero-skipping machine reports the same dense cycles and is faster on the all-zero input
    c = CnvlutinModel().simulate([layer], {"x": x})
    np.testing.assert_array_equal(c.dense_cycles, r.cycles)
    assert c.cycles[1, 0] == 18 * 1  # every step of an all-zero window costs the minimum slot


def test_dense_energy_arithmetic():
    layer = grouped_layer()
    x = np.ones((3, 8, 5, 5), np.float32)
    r = DenseModel(DenseParams(static_power_w=1.0, clock_hz=5e8)).simulate([layer], {"x": x})
    np.testing.assert_allclose(r.latency_s, 54 / 5e8)
    np.testing.assert_allclose(r.breakdown["static"], 54 / 5e8)
    np.testing.assert_allclose(sum(r.breakdown.values()), r.energy_total_j)
    np.testing.assert_allclose(r.edp, r.energy_total_j * r.latency_s)
    # off-chip: the network input (8*5*5 values) and output (4*3*3 values), 2 bytes each
    np.testing.assert_allclose(r.breakdown["offchip"], (200 + 36) * 2 * DenseParams().e_dram_pj_per_byte * 1e-12)


def test_registry():
    assert set(COST_MODELS) == {"cnvlutin", "sparce", "dense", "axfpm"}
    assert isinstance(build_cost_model("dense", {}), DenseModel)
    assert isinstance(build_cost_model("sparce", {"simd_width": 4}), SparceModel)
    m = build_cost_model("cnvlutin", {"clock_hz": 2000000000, "units": 4})  # int for a float field is fine
    assert m.params.clock_hz == 2e9 and isinstance(m.params.clock_hz, float)


@pytest.mark.parametrize("kind", sorted(COST_MODELS))
def test_params_are_declarative_and_documented(kind):
    cls = COST_MODELS.get(kind).Params
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        assert f.default is not dataclasses.MISSING, f.name
        assert hints[f.name] in (int, float, bool, str), (f.name, hints[f.name])
        assert isinstance(f.default, hints[f.name]), f.name
        for key in ("doc", "unit", "source"):
            assert f.metadata.get(key), (f.name, key)
    cls().validate()


@pytest.mark.parametrize("name", PROFILES)
def test_bundled_profiles(name):
    path = ROOT / "hwprofiles" / f"{name}.yaml"
    text = path.read_text()
    data = yaml.safe_load(text)
    assert set(data) == {"name", "description", "cost_model", "params"}
    assert data["name"] == name
    cls = COST_MODELS.get(data["cost_model"]).Params
    # every parameter is spelled out (and commented) in the profile
    assert set(data["params"]) == {f.name for f in dataclasses.fields(cls)}
    assert text.count("\n  # ") >= len(data["params"])
    # the schema loader accepts it with the Params dataclass
    node, file = schema.load_yaml(path)
    params_node = next(v for k, v in node.value if k.value == "params")
    params = schema.build(cls, params_node, file, "params")
    model = build_cost_model(data["cost_model"], params)
    assert model.params == build_cost_model(data["cost_model"], data["params"]).params
