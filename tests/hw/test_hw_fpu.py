"""The in-order FPU core with an exact or Ax-FPM multiplier (cost model "axfpm") and its profiles."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import yaml

from auditor.errors import AuditorError
from auditor.hw import COST_MODELS, build_cost_model
from auditor.hw.fpu import FpuModel, FpuParams
from auditor.hw.profile import load_profile
from auditor.model.layers import ComputeLayer

ROOT = Path(__file__).resolve().parents[2]
CONV = ComputeLayer("c", "Conv", "x", "y", (2, 5, 5), (3, 3, 3), (3, 2, 3, 3), (3, 3), macs=3 * 9 * 2 * 9)
FC = ComputeLayer("f", "Gemm", "y", "z", (27,), (4,), (27, 4), macs=27 * 4)
MM = ComputeLayer("m", "MatMul", "y", "w", (27,), (4,), (27, 4), macs=27 * 4)


def acts(n=2):
    rng = np.random.default_rng(0)
    return {"x": rng.normal(size=(n, 2, 5, 5)).astype(np.float32),
            "y": rng.normal(size=(n, 27)).astype(np.float32)}


def test_hand_computed_cycles_and_energy():
    exact = FpuModel(FpuParams(multiplier="exact"))
    approx = FpuModel(FpuParams())  # da-reference
    # conv: 27 outputs x K = 18 products, unroll 4 -> 5 iterations per output (135 in all)
    # exact MAC: 2 loads + fmul 4 + fadd 3 = 9 cycles; Ax-FPM: fmul ceil(4 x 0.29) = 2 -> 7 cycles
    ce = exact.layer_cost(CONV)
    ca = approx.layer_cost(CONV)
    assert ce["cycles"] == 486 * 9 + 135 * 3 + 27 * 10
    assert ca["cycles"] == 486 * 7 + 135 * 3 + 27 * 10
    assert ca["multiply"] == pytest.approx(0.487 * ce["multiply"]) and ce["multiply"] == pytest.approx(486 * 3.7)
    for key in ("add", "memory", "instruction", "alu"):  # only the multiplier changes
        assert ca[key] == pytest.approx(ce[key])
    # FC: 4 outputs x K = 27 products -> 7 iterations per output
    assert exact.layer_cost(FC)["cycles"] == 108 * 9 + 28 * 3 + 4 * 10


def test_simulate_interface_and_data_independence():
    a = acts(3)
    a["x"][1] = 0.0  # zeros are multiplied like anything else
    p = FpuParams(static_power_w=0.5, clock_hz=5.0e+8)
    r = FpuModel(p).simulate([CONV, FC], a)
    assert r.layer_names == ["c", "f"] and r.cycles.shape == (3, 2)
    np.testing.assert_array_equal(r.cycles, r.dense_cycles)
    assert (r.cycles == r.cycles[0]).all() and (r.speedup == 1).all()
    np.testing.assert_allclose(r.latency_s, r.cycles.sum(axis=1) / 5e8)
    np.testing.assert_allclose(r.breakdown["static"], 0.5 * r.latency_s)
    np.testing.assert_allclose(sum(r.breakdown.values()), r.energy_total_j)
    np.testing.assert_allclose(r.edp, r.energy_total_j * r.latency_s)
    layer = FpuModel(p).layer_cost(CONV)
    assert r.breakdown["multiply"][0] == pytest.approx((layer["multiply"] + FpuModel(p).layer_cost(FC)["multiply"])
                                                       * 1e-12)
    with pytest.raises(AuditorError, match="expected"):
        FpuModel().simulate([CONV], {"x": np.zeros((1, 2, 4, 4), np.float32)})
    with pytest.raises(AuditorError, match="no activation"):
        FpuModel().simulate([CONV], {})


def test_approximate_is_cheaper_per_the_paper_factors():
    a = acts()
    re_ = FpuModel(FpuParams(multiplier="exact")).simulate([CONV, FC], a)
    for variant in ("da-reference", "flat-ama5"):
        ra = FpuModel(FpuParams(multiplier=variant)).simulate([CONV, FC], a)
        assert (ra.latency_s < re_.latency_s).all() and (ra.energy_total_j < re_.energy_total_j).all()
        np.testing.assert_allclose(ra.breakdown["multiply"], 0.487 * re_.breakdown["multiply"])
    # off the critical path the multiplier's delay does not matter
    off = dict(multiplier_on_critical_path=False)
    np.testing.assert_array_equal(FpuModel(FpuParams(**off)).simulate([CONV], a).cycles,
                                  FpuModel(FpuParams(multiplier="exact", **off)).simulate([CONV], a).cycles)
    # MatMul is not approximated by default (as ApproxModel); a layer list restricts the Ax-FPM
    m = FpuModel()
    assert [m.is_approximate(layer) for layer in (CONV, FC, MM)] == [True, True, False]
    m2 = FpuModel(None, approx_layers=["f"])
    assert [m2.is_approximate(layer) for layer in (CONV, FC, MM)] == [False, True, False]
    assert m2.layer_cost(CONV)["cycles"] == FpuModel(FpuParams(multiplier="exact")).layer_cost(CONV)["cycles"]


def test_params_validation():
    with pytest.raises(AuditorError, match="multiplier"):
        build_cost_model("axfpm", {"multiplier": "bogus"})
    with pytest.raises(AuditorError, match="fmul_cycles"):
        build_cost_model("axfpm", {"fmul_cycles": 0})
    with pytest.raises(AuditorError, match="params"):
        build_cost_model("axfpm", {"nope": 1})
    assert COST_MODELS.get("axfpm") is FpuModel and FpuModel.kind == "axfpm"


@pytest.mark.parametrize("name,multiplier", [("axfpm", "da-reference"), ("fpu_exact", "exact"),
                                             ("fpu_bf16", "bfloat16")])
def test_bundled_profiles(name, multiplier):
    path = ROOT / "hwprofiles" / f"{name}.yaml"
    text = path.read_text()
    data = yaml.safe_load(text)
    assert {"name", "description", "cost_model", "params"} <= set(data) <= {"name", "description", "cost_model",
                                                                            "params", "approx"}
    assert data["name"] == name and data["cost_model"] == "axfpm"
    assert set(data["params"]) == {f.name for f in dataclasses.fields(FpuParams)}  # every parameter spelled out
    assert text.count("\n  # ") >= len(data["params"])  # and commented
    prof = load_profile(path)
    assert prof.params.multiplier == multiplier and isinstance(prof.params.clock_hz, float)
    if multiplier != "exact":  # the Ax-FPM profile runs the model on the approximate multiplier
        assert prof.approx is not None
    if prof.approx is not None:
        assert prof.approx.multiplier == multiplier and prof.approx.layers is None
    model = FpuModel.from_profile(prof)
    assert isinstance(prof.build_cost_model(), FpuModel) and model.approx_layers is None


def test_profiles_differ_only_in_the_multiplier(tmp_path):
    a = load_profile(ROOT / "hwprofiles" / "axfpm.yaml")
    e = load_profile(ROOT / "hwprofiles" / "fpu_exact.yaml")
    assert dataclasses.replace(a.params, multiplier="exact") == e.params
    # a profile whose approx section contradicts its multiplier is refused
    bad = tmp_path / "bad.yaml"
    bad.write_text((ROOT / "hwprofiles" / "axfpm.yaml").read_text().replace("  multiplier: da-reference\n  layers",
                                                                              "  multiplier: exact\n  layers"))
    with pytest.raises(AuditorError, match="approx.multiplier"):
        FpuModel.from_profile(load_profile(bad))
