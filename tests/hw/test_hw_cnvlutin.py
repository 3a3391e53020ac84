"""Cnvlutin cost model: hand-computed cycles, kernels vs pure-Python reference, sparsity direction,
energy/latency arithmetic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from auditor.errors import AuditorError
from auditor.hw import CnvlutinModel, CnvlutinParams, CostResult, DenseModel, build_cost_model, lower
from auditor.hw.cnvlutin import brick_counts, cnv_windows, cnv_windows_packed, cnv_windows_reference
from auditor.hw.dadiannao import dense_window_cycles, is_packed
from auditor.hw.base import nonzero_mask
from auditor.model.layers import ComputeLayer
from auditor.runtime.session import OnnxClassifier

ROOT = Path(__file__).resolve().parents[2]


def conv(name="c", C=1, H=4, W=4, M=1, k=(3, 3), s=(1, 1), p=(0, 0, 0, 0), d=(1, 1), g=1, inp="x"):
    oh = (H + p[0] + p[2] - d[0] * (k[0] - 1) - 1) // s[0] + 1
    ow = (W + p[1] + p[3] - d[1] * (k[1] - 1) - 1) // s[1] + 1
    return ComputeLayer(name, "Conv", inp, name + "_out", (C, H, W), (M, oh, ow), (M, C // g, *k), k, s, p, d, g,
                        macs=M * oh * ow * (C // g) * k[0] * k[1])


def fc(name="f", K=8, M=4, inp="v"):
    return ComputeLayer(name, "Gemm", inp, name + "_out", (K,), (M,), (K, M), macs=K * M)


# ---------------------------------------------------------------------------------------------
# hand-computed cases
# ---------------------------------------------------------------------------------------------


def test_hand_computed_wide_layer():
    # Conv C=32 -> M=8, 3x3 kernel, 3x3 input, no padding: one output position.
    # Machine: 1 unit x 2 neuron lanes x 4 filter lanes, bricks of 16, min slot 1.
    # passes = ceil(8 / (1 * 4)) = 2.  Window = 9 positions x 2 channel bricks = 18 bricks;
    # order (ky, kx, cb) -> each step (2 lanes) is the 2 channel bricks of one position.
    x = np.zeros((1, 32, 3, 3), np.float32)
    x[0, 0:5, 0, 0] = 1.0    # pos (0,0): brick0 5 nz, brick1 2 nz -> step cost max(5, 2) = 5
    x[0, 16:18, 0, 0] = -2.0
    #                        pos (0,1): both bricks empty -> min slot 1
    x[0, 0:16, 0, 2] = 0.5   # pos (0,2): brick0 16 nz, brick1 0 -> 16
    x[0, 3:6, 1, 0] = 3.0    # pos (1,0): 3 and 3 -> 3
    x[0, 20:23, 1, 0] = 3.0
    #                        5 remaining positions: empty -> 1 each
    # one pass = 5 + 1 + 16 + 3 + 5 * 1 = 30 cycles; 2 passes = 60.
    # dense: 9 steps x 16 = 144 per pass; x 2 = 288.
    # non-zero visits = 5 + 2 + 16 + 3 + 3 = 29 -> MACs = 29 * 8 filters = 232.
    # entries read per pass = (5 + 2) + (1 + 1) + (16 + 1) + (3 + 3) + 10 * 1 = 42; x 2 passes = 84.
    layer = conv("c", C=32, H=3, W=3, M=8, k=(3, 3))
    p = CnvlutinParams(units=1, neuron_lanes=2, filter_lanes=4, e_mac_pj=1.0, e_synapse_read_pj_per_byte=10.0,
                       e_neuron_read_pj_per_byte=100.0, e_neuron_write_pj_per_byte=1000.0, e_dram_pj_per_byte=0.0,
                       static_power_w=0.5, clock_hz=2.0e9)
    r = CnvlutinModel(p).simulate([layer], {"x": x})
    assert r.cycles.tolist() == [[60]]
    assert r.dense_cycles.tolist() == [[288]]
    # energies: mac 232 x 1 pJ; synapse 232 weights x 2 B x 10 pJ; neuron reads 84 entries x 2.5 B
    # (16-bit value + 4-bit offset) x 100 pJ; output write 8 values x 2.5 B x 1000 pJ
    assert r.breakdown["mac"][0] == pytest.approx(232e-12)
    assert r.breakdown["synapse_buffer"][0] == pytest.approx(232 * 2 * 10e-12)
    assert r.breakdown["neuron_buffer"][0] == pytest.approx(84 * 2.5 * 100e-12 + 8 * 2.5 * 1000e-12)
    assert r.latency_s[0] == pytest.approx(60 / 2.0e9)
    assert r.breakdown["static"][0] == pytest.approx(0.5 * 60 / 2.0e9)
    dense = DenseModel(DenseModel.Params(units=1, neuron_lanes=2, filter_lanes=4)).simulate([layer], {"x": x})
    assert dense.cycles.tolist() == [[288]]


def test_hand_computed_narrow_packed_layer_with_padding_and_stride():
    # 1-channel 4x4 image, 3x3 kernel, pad 1, stride 2 -> 2x2 outputs; bricks of at most 4, 2 lanes.
    # Narrow layer: each window's 9 values (ky, kx order) are cut into bricks of
    # min(4, ceil(9 / 2)) = 4 values: 4, 4, 1;
    # steps: [b0, b1], [b2].  Padding values are zeros.
    img = np.array([[1, 1, 1, 1],
                    [1, 0, 0, 1],
                    [0, 0, 0, 0],
                    [1, 1, 0, 1]], np.float32)
    # out (0,0): window flags 0,0,0 / 0,1,1 / 0,1,0 -> bricks 0000, 1101, 0 -> costs 1, 3, 1 -> 3 + 1 = 4
    # out (0,1): 0,0,0 / 1,1,1 / 0,0,1       -> bricks 0001, 1100, 1 -> costs 1, 2, 1 -> 2 + 1 = 3
    # out (1,0): 0,1,0 / 0,0,0 / 0,1,1       -> bricks 0100, 0001, 1 -> 1 + 1 = 2
    # out (1,1): 0,0,1 / 0,0,0 / 1,0,1       -> bricks 0010, 0010, 1 -> 1 + 1 = 2
    # total 4 + 3 + 2 + 2 = 11 cycles (1 filter -> 1 pass); dense: max(4, 4) + 1 = 5 per window -> 20
    # non-zero visits: 3 + 4 + 3 + 3 = 13
    layer = conv("c", C=1, H=4, W=4, M=1, k=(3, 3), s=(2, 2), p=(1, 1, 1, 1))
    p = CnvlutinParams(units=1, neuron_lanes=2, filter_lanes=1, brick_size=4)
    r = CnvlutinModel(p).simulate([layer], {"x": img[None, None]})
    assert r.cycles.tolist() == [[11]]
    assert r.dense_cycles.tolist() == [[20]]
    assert r.breakdown["mac"][0] == pytest.approx(13 * p.e_mac_pj * 1e-12)
    # without packing, one-value bricks all cost one cycle: no skipping possible
    r2 = CnvlutinModel(CnvlutinParams(units=1, neuron_lanes=2, filter_lanes=1, brick_size=4,
                                      pack_narrow_layers=False)).simulate([layer], {"x": img[None, None]})
    assert r2.cycles.tolist() == r2.dense_cycles.tolist() == [[4 * 5]]  # ceil(9 / 2) = 5 steps of 1 cycle


def test_narrow_window_spread_over_lanes():
    # 5x5 grey-scale window on 16 lanes: bricks of ceil(25 / 16) = 2 values -> 13 bricks, one step.
    layer = conv("c", C=1, H=5, W=5, M=1, k=(5, 5))
    x = np.zeros((3, 1, 5, 5), np.float32)
    x[1, 0, 0, 0] = x[1, 0, 2, 2] = 1.0      # two non-zeros in different bricks -> 1 cycle
    x[2, 0, 0, 0:2] = 1.0                    # values 0 and 1 share brick 0 -> 2 cycles
    r = CnvlutinModel().simulate([layer], {"x": x})
    assert r.cycles[:, 0].tolist() == [1, 1, 2]   # all-zero window: the minimum slot
    assert r.dense_cycles[:, 0].tolist() == [2, 2, 2]


def test_min_slot_zero_makes_empty_steps_free():
    layer = conv("c", C=32, H=3, W=3, M=8)
    x = np.zeros((1, 32, 3, 3), np.float32)
    x[0, 0:5, 0, 0] = 1.0
    r = CnvlutinModel(CnvlutinParams(units=1, neuron_lanes=2, filter_lanes=4, min_slot_cycles=0)).simulate([layer], {"x": x})
    assert r.cycles.tolist() == [[2 * 5]]


def test_fc_dense_unless_skip_fc():
    layer = fc("f", K=40, M=20)
    v = np.zeros((2, 40), np.float32)
    v[1, :3] = 1.0
    # 40 inputs = bricks of 16, 16, 8 on 16 lanes: one step; dense = max occupancy 16;
    # passes = ceil(20 / 256) = 1
    r = CnvlutinModel().simulate([layer], {"v": v})
    assert r.cycles.tolist() == [[16], [16]]
    r = CnvlutinModel(CnvlutinParams(skip_fc=True)).simulate([layer], {"v": v})
    assert r.cycles.tolist() == [[1], [3]]
    assert r.dense_cycles.tolist() == [[16], [16]]


def test_matmul_rows_are_output_positions():
    # MatMul on a (rows, K) input: each row is one 1x1 window; 3 rows of 40 values, skip_fc
    layer = ComputeLayer("mm", "MatMul", "v", "o", (3, 40), (3, 20), (40, 20), macs=3 * 40 * 20)
    v = np.zeros((1, 3, 40), np.float32)
    v[0, 0, :5] = 1.0   # row 0: bricks 5, 0, 0 nz -> 5
    v[0, 2, 16:18] = 1  # row 1: empty -> 1; row 2: bricks 0, 2, 0 -> 2
    r = CnvlutinModel(CnvlutinParams(skip_fc=True)).simulate([layer], {"v": v})
    assert r.cycles.tolist() == [[5 + 1 + 2]]
    assert r.dense_cycles.tolist() == [[3 * 16]]


# ---------------------------------------------------------------------------------------------
# numba kernels vs the pure-Python reference
# ---------------------------------------------------------------------------------------------

GEOMS = [
    dict(C=20, H=7, W=6, M=5, k=(3, 3), s=(1, 1), p=(1, 1, 1, 1)),
    dict(C=35, H=8, W=9, M=4, k=(3, 2), s=(2, 1), p=(0, 2, 1, 0)),
    dict(C=16, H=9, W=9, M=6, k=(3, 3), s=(1, 2), p=(2, 2, 2, 2), d=(2, 2)),
    dict(C=24, H=6, W=7, M=6, k=(3, 3), s=(1, 1), p=(1, 0, 1, 2), g=3),   # groups of 8 channels: packed
    dict(C=64, H=5, W=5, M=8, k=(1, 1), g=2),                              # 1x1, 2 groups of 32
    dict(C=3, H=9, W=8, M=4, k=(5, 5), s=(2, 2), p=(2, 2, 2, 2)),          # RGB-like narrow input
    dict(C=48, H=6, W=6, M=3, k=(2, 2), s=(2, 2), d=(1, 2), p=(0, 0, 0, 1)),
]


@pytest.mark.parametrize("gi", range(len(GEOMS)))
@pytest.mark.parametrize("lanes,brick,min_slot,pack", [(4, 8, 1, True), (3, 5, 0, True), (16, 16, 1, True), (5, 16, 1, False)])
def test_kernels_match_reference(gi, lanes, brick, min_slot, pack):
    rng = np.random.default_rng(gi * 100 + lanes)
    layer = conv(**GEOMS[gi])
    n = 3
    x = rng.normal(size=(n,) + layer.input_shape).astype(np.float32)
    x[rng.random(x.shape) < rng.uniform(0.3, 0.9)] = 0.0  # random sparsity
    x[1, :, : layer.input_shape[1] // 2] = 0.0  # an input with a large zero region
    x4, geom = lower(layer, x)
    packed = is_packed(geom, brick, pack)
    nz = nonzero_mask(x4)
    if packed:
        got = cnv_windows_packed(nz, geom.group, geom.KH, geom.KW, geom.sh, geom.sw, geom.pt, geom.pl, geom.dh,
                                 geom.dw, geom.OH, geom.OW, brick, lanes, min_slot)
    else:
        cnt = brick_counts(nz, geom.group, brick)
        got = cnv_windows(cnt, geom.group, geom.KH, geom.KW, geom.sh, geom.sw, geom.pt, geom.pl, geom.dh, geom.dw,
                          geom.OH, geom.OW, lanes, min_slot)
    ref = cnv_windows_reference(x4, geom, lanes, brick, min_slot, packed=packed)
    np.testing.assert_array_equal(got, ref)
    # a dense input costs exactly the dense schedule (min_slot <= occupancy)
    ones = np.ones_like(x4)
    full = cnv_windows_reference(ones, geom, lanes, brick, min_slot, packed=packed)
    windows = geom.group * geom.OH * geom.OW
    if geom.pt == geom.pl == geom.pb == geom.pr == 0:
        assert full[0, 0] == windows * dense_window_cycles(geom, lanes, brick, packed)


def test_threshold_and_model_level_match_reference():
    rng = np.random.default_rng(7)
    layer = conv("c", C=40, H=6, W=6, M=300, k=(3, 3), p=(1, 1, 1, 1))  # 300 filters -> 2 passes
    x = rng.normal(size=(4, 40, 6, 6)).astype(np.float32)
    x[rng.random(x.shape) < 0.5] = 0
    p = CnvlutinParams(zero_threshold=0.5)
    r = CnvlutinModel(p).simulate([layer], {"x": x})
    x4, geom = lower(layer, x)
    ref = cnv_windows_reference(x4, geom, 16, 16, 1, threshold=0.5)
    np.testing.assert_array_equal(r.cycles[:, 0], 2 * ref[:, 0])
    np.testing.assert_allclose(r.breakdown["mac"], ref[:, 1] * 300 * p.e_mac_pj * 1e-12)


def test_conv_transpose_skips_inserted_zeros():
    # ConvTranspose 2->4 channels, 3x3, stride 2, pad 1: output (3-1)*2 - 2 + 3 = 5
    layer = ComputeLayer("t", "ConvTranspose", "x", "t_out", (2, 3, 3), (4, 5, 5), (2, 4, 3, 3), (3, 3), (2, 2),
                         (1, 1, 1, 1), (1, 1), 1, macs=2 * 9 * 4 * 9)
    x = np.ones((1, 2, 3, 3), np.float32)
    x4, geom = lower(layer, x)
    assert x4.shape == (1, 2, 5, 5) and (geom.OH, geom.OW, geom.sh) == (5, 5, 1)
    assert x4.sum() == 18  # the 18 input values, zeros in between
    r = CnvlutinModel(CnvlutinParams(pack_narrow_layers=True, brick_size=4, neuron_lanes=2)).simulate([layer], {"x": x})
    assert r.cycles[0, 0] < r.dense_cycles[0, 0]


# ---------------------------------------------------------------------------------------------
# behaviour on a bundled model
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def plain_cnn():
    clf = OnnxClassifier(ROOT / "models" / "plain_cnn.onnx")
    x = np.load(ROOT / "auditor" / "data" / "digits28_test.npz")["x"][:16].astype(np.float32) / 255.0
    return clf, list(clf.layers), x


def test_sparser_activations_cost_fewer_cycles(plain_cnn):
    clf, layers, x = plain_cnn
    acts = clf.activations(x)
    # the same inputs with extra zeros in every layer's activation: never slower, strictly faster overall
    rng = np.random.default_rng(0)
    sparser = {k: np.where(rng.random(v.shape) < 0.4, 0, v).astype(np.float32) for k, v in acts.items()}
    cnv = CnvlutinModel()
    a, b = cnv.simulate(layers, acts), cnv.simulate(layers, sparser)
    assert (b.cycles <= a.cycles).all() and (b.total_cycles < a.total_cycles).all()
    assert (b.energy_total_j < a.energy_total_j).all()
    dense = DenseModel()
    da, db = dense.simulate(layers, acts), dense.simulate(layers, sparser)
    np.testing.assert_array_equal(da.cycles, db.cycles)
    np.testing.assert_allclose(da.energy_total_j, db.energy_total_j)
    np.testing.assert_array_equal(a.dense_cycles, da.cycles)  # "dense_cycles" = the dense machine


def test_noisy_input_is_slower_than_clean(plain_cnn):
    clf, layers, x = plain_cnn
    rng = np.random.default_rng(1)
    noisy = np.clip(x + rng.uniform(0, 0.3, x.shape).astype(np.float32), 0, 1)  # fills the zero background
    a = CnvlutinModel().simulate(layers, clf.activations(x))
    b = CnvlutinModel().simulate(layers, clf.activations(noisy))
    assert (b.total_cycles > a.total_cycles).all()
    assert (b.cycles[:, 0] > a.cycles[:, 0]).all()  # the first layer skips the input's zeros


def test_energy_latency_arithmetic(plain_cnn):
    clf, layers, x = plain_cnn
    acts = clf.activations(x)
    r = CnvlutinModel().simulate(layers, acts)
    assert r.cycles.shape == r.dense_cycles.shape == r.energy_j.shape == (len(x), len(layers))
    assert r.cycles.dtype == np.int64
    np.testing.assert_allclose(r.latency_s, r.cycles.sum(1) / r.clock_hz)
    np.testing.assert_allclose(r.energy_total_j, r.energy_j.sum(1) + r.static_power_w * r.latency_s)
    np.testing.assert_allclose(sum(r.breakdown.values()), r.energy_total_j)
    np.testing.assert_allclose(r.edp, r.energy_total_j * r.latency_s)
    assert set(r.breakdown) == {"mac", "synapse_buffer", "neuron_buffer", "offchip", "static"}
    np.testing.assert_allclose(r.layer_energy_j().sum(1), r.energy_total_j)
    for sh in (r.runtime_shares(), r.energy_shares()):
        assert sh.shape == (len(layers),) and sh.sum() == pytest.approx(1.0) and (sh >= 0).all()
    # batches concatenate to the result of the whole batch
    parts = [CnvlutinModel().simulate(layers, {k: v[i:i + 5] for k, v in acts.items()}) for i in range(0, len(x), 5)]
    whole = CostResult.concat(parts)
    np.testing.assert_array_equal(whole.cycles, r.cycles)
    np.testing.assert_allclose(whole.energy_total_j, r.energy_total_j)
    np.testing.assert_allclose(whole.runtime_shares(), r.runtime_shares())
    sel = r.select(np.arange(3))
    assert sel.n == 3 and sel.breakdown["mac"].shape == (3,)
    assert (r.speedup >= 1).all()


def test_bad_inputs_raise_auditor_error():
    layer = conv("c", C=4, H=5, W=5, M=2)
    with pytest.raises(AuditorError, match="shape"):
        CnvlutinModel().simulate([layer], {"x": np.zeros((2, 3, 5, 5), np.float32)})
    with pytest.raises(AuditorError, match="NaN"):
        CnvlutinModel().simulate([layer], {"x": np.full((1, 4, 5, 5), np.nan, np.float32)})
    with pytest.raises(AuditorError, match="no activation"):
        CnvlutinModel().simulate([layer], {})
    with pytest.raises(AuditorError, match="min_slot_cycles"):
        CnvlutinModel(CnvlutinParams(min_slot_cycles=-1))
    with pytest.raises(AuditorError, match="unknown cost model"):
        build_cost_model("tpu", {})
    with pytest.raises(AuditorError):
        build_cost_model("cnvlutin", {"lanes": 3})
    bad = ComputeLayer("c", "Conv", "x", "y", (4, 5, 5), (2, 4, 4), (2, 4, 3, 3), (3, 3))  # wrong output shape
    with pytest.raises(AuditorError, match="output shape"):
        CnvlutinModel().simulate([bad], {"x": np.zeros((1, 4, 5, 5), np.float32)})
