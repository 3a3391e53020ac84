"""The fast cost-model paths (per-pixel window reads, fused brick counts, the row kernel) against
the slow pure-Python references, on layers with zeros of every kind: depthwise and grouped,
strided, padded, dilated, 1x1; and the bundled models' cycles and energies against figures
stored before the fast paths existed."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import onnx
from onnx.shape_inference import infer_shapes
import pytest
import yaml

from auditor.model.graph import compute_layers
from auditor.errors import AuditorError
from auditor.hw import CnvlutinModel, CnvlutinParams, SparceModel, SparceParams, build_cost_model, lower
from auditor.hw.base import nonzero_mask, window_reads
from auditor.hw.cnvlutin import brick_counts, brick_counts_of, cnv_windows_reference
from auditor.hw.dadiannao import is_packed, packed_brick_size, passes
from auditor.hw.sparce import sparce_skips_reference
from auditor.model.layers import ComputeLayer
from builders import random_activations

ROOT = Path(__file__).resolve().parents[2]


def conv(C, H, W, M, k=(3, 3), s=(1, 1), p=(0, 0, 0, 0), d=(1, 1), g=1):
    oh = (H + p[0] + p[2] - d[0] * (k[0] - 1) - 1) // s[0] + 1
    ow = (W + p[1] + p[3] - d[1] * (k[1] - 1) - 1) // s[1] + 1
    return ComputeLayer("c", "Conv", "x", "y", (C, H, W), (M, oh, ow), (M, C // g) + tuple(k), tuple(k), tuple(s),
                        tuple(p), tuple(d), g, M * oh * ow * (C // g) * k[0] * k[1])


GEOMS = [
    dict(C=12, H=9, W=8, M=12, g=12, p=(1, 1, 1, 1)),                        # depthwise 3x3
    dict(C=10, H=11, W=9, M=10, g=10, s=(2, 2), p=(1, 1, 1, 1)),             # depthwise, stride 2
    dict(C=8, H=10, W=10, M=8, g=8, k=(5, 5), p=(2, 2, 2, 2)),               # depthwise 5x5 (2-value bricks)
    dict(C=6, H=9, W=11, M=6, g=6, k=(3, 3), d=(2, 2), p=(2, 1, 2, 3)),      # depthwise, dilated, uneven pads
    dict(C=6, H=12, W=10, M=12, g=6, k=(3, 3), s=(2, 1), p=(0, 1, 1, 0)),    # depthwise multiplier 2
    dict(C=24, H=7, W=7, M=12, g=3, p=(1, 1, 1, 1)),                         # grouped, 8 channels a group
    dict(C=40, H=6, W=7, M=9, k=(1, 1)),                                     # 1x1, bricks of 16 (+ 8)
    dict(C=35, H=8, W=9, M=4, k=(3, 2), s=(2, 1), p=(0, 2, 1, 0), d=(1, 2)),
    dict(C=3, H=10, W=10, M=5, k=(7, 7), s=(2, 2), p=(3, 3, 3, 3)),          # RGB stem
    dict(C=4, H=9, W=9, M=4, g=4, k=(7, 7), p=(3, 3, 3, 3)),                 # depthwise 7x7 (4-value bricks)
    dict(C=1, H=20, W=210, M=2, k=(5, 5), p=(2, 2, 2, 2)),                   # wide: several bands of rows
]


def sparse_input(layer, seed, n=3):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n,) + layer.input_shape).astype(np.float32)
    x[rng.random(x.shape) < rng.uniform(0.3, 0.8)] = 0.0
    x[1, :, : layer.input_shape[1] // 2] = 0.0  # a large zero region
    x[2] = np.where(x[2] == 0, 1.5, x[2])       # an input without zeros
    return x


@pytest.mark.parametrize("gi", range(len(GEOMS)))
def test_window_reads_and_brick_counts(gi):
    layer = conv(**GEOMS[gi])
    x4, geom = lower(layer, sparse_input(layer, gi))
    for thr in (0.0, 0.7):
        nz = nonzero_mask(x4, thr)
        # window reads: every window's in-bounds values, counted one by one
        want = np.zeros(len(x4), np.int64)
        for oy in range(geom.OH):
            for ox in range(geom.OW):
                for ky in range(geom.KH):
                    for kx in range(geom.KW):
                        iy, ix = oy * geom.sh - geom.pt + ky * geom.dh, ox * geom.sw - geom.pl + kx * geom.dw
                        if 0 <= iy < geom.H and 0 <= ix < geom.W:
                            want += nz[:, :, iy, ix].sum(axis=1, dtype=np.int64)
        np.testing.assert_array_equal(window_reads(x4, geom, thr), want)
        for brick in (1, 4, 16):
            np.testing.assert_array_equal(brick_counts_of(x4, geom.group, brick, thr),
                                          brick_counts(nz, geom.group, brick))


@pytest.mark.parametrize("gi", range(len(GEOMS)))
@pytest.mark.parametrize("min_slot,thr,pack", [(1, 0.0, True), (0, 0.0, True), (2, 0.5, True), (1, 0.0, False)])
def test_cnvlutin_layer_matches_reference(gi, min_slot, thr, pack):
    layer = conv(**GEOMS[gi])
    x = sparse_input(layer, 10 + gi)
    p = CnvlutinParams(units=1, filter_lanes=4, neuron_lanes=16, brick_size=16, min_slot_cycles=min_slot,
                       zero_threshold=thr, pack_narrow_layers=pack)
    r = CnvlutinModel(p).simulate([layer], {"x": x})
    x4, geom = lower(layer, x)
    packed = is_packed(geom, p.brick_size, pack)
    brick = packed_brick_size(geom, p.brick_size, p.neuron_lanes) if packed else p.brick_size
    ref = cnv_windows_reference(x4, geom, p.neuron_lanes, brick, min_slot, threshold=thr, packed=packed)
    npass = passes(geom, p.units, p.filter_lanes)
    np.testing.assert_array_equal(r.cycles[:, 0], ref[:, 0] * npass)
    macs = ref[:, 1].astype(np.float64) * geom.Mg
    np.testing.assert_array_equal(r.breakdown["mac"], macs * p.e_mac_pj * 1e-12)


@pytest.mark.parametrize("gi", range(len(GEOMS)))
@pytest.mark.parametrize("V,unroll,sasa", [(1, 4, 20), (1, 3, 2), (4, 4, 20)])
def test_sparce_layer_matches_reference(gi, V, unroll, sasa):
    layer = conv(**GEOMS[gi])
    x = sparse_input(layer, 20 + gi)
    p = SparceParams(simd_width=V, unroll=unroll, sasa_entries=sasa)
    r = SparceModel(p).simulate([layer], {"x": x})
    x4, geom = lower(layer, x)
    skips = sparce_skips_reference(x4, geom, V, unroll, min(unroll, sasa)) * geom.Mg
    np.testing.assert_array_equal(r.dense_cycles[:, 0] - r.cycles[:, 0], skips * (p.load_cycles + p.mac_cycles))


# cycles (N, L) and dynamic energy (N, L) of 6 seeded random activations (55 % zeros) on every
# bundled model and profile, as the kernels computed them before the fast paths (sha256 prefix)
STORED = {
    ('plain_cnn', 'cnvlutin'): 'eaf28b924d82c836d2c4',
    ('plain_cnn', 'dense'): 'b2e597a9afcb2c358181',
    ('plain_cnn', 'sparce'): '6e83f5add315ce7aca77',
    ('plain_cnn', 'sparce_simd4'): '8042b495655fac3876bc',
    ('lenet5', 'cnvlutin'): 'a149e42d0287e7db782d',
    ('lenet5', 'dense'): 'bd89f6ee3eb3c1a45823',
    ('lenet5', 'sparce'): '9148668e55699f8caca8',
    ('lenet5', 'sparce_simd4'): 'f3116d48e0da67f84745',
    ('bn_resnet', 'cnvlutin'): 'de47f52f7ed65c2cd835',
    ('bn_resnet', 'dense'): 'b0e4fdf537372b9cc56d',
    ('bn_resnet', 'sparce'): 'e4d0a37bd85235dceab6',
    ('bn_resnet', 'sparce_simd4'): '84d84da46784c3bab977',
    ('surrogate_cnn', 'cnvlutin'): '50e7b84c53435172b661',
    ('surrogate_cnn', 'dense'): 'cfa873cf04ffad437a4f',
    ('surrogate_cnn', 'sparce'): '08c64ab181fc310d92a8',
    ('surrogate_cnn', 'sparce_simd4'): '5588a8081db8c044fb32',
}


def test_bundled_models_match_stored_figures():
    got = {}
    for m in ("plain_cnn", "lenet5", "bn_resnet", "surrogate_cnn"):
        layers = compute_layers(infer_shapes(onnx.load(str(ROOT / "models" / f"{m}.onnx"))))
        acts = random_activations(layers, 6, 5, 0.55)
        for p in ("cnvlutin", "dense", "sparce", "sparce_simd4"):
            d = yaml.safe_load((ROOT / "hwprofiles" / f"{p}.yaml").read_text())
            r = build_cost_model(d["cost_model"], d["params"]).simulate(layers, acts)
            data = r.cycles.astype(np.int64).tobytes() + r.energy_j.astype(np.float64).tobytes()
            got[(m, p)] = hashlib.sha256(data).hexdigest()[:20]
    assert got == STORED


def test_layers_in_parallel_match_one_thread():
    """per_layer spreads whole layers over Python threads (two per numba thread or more): the same
    figures as one thread, and a bad activation is still the one-line error."""
    import numba

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("one numba thread")
    layers = [dataclasses.replace(conv(**g), name=f"c{i}", input=f"x{i}", output=f"y{i}") for i, g in enumerate(GEOMS)]
    acts = {layer.input: sparse_input(layer, 30 + i) for i, layer in enumerate(layers)}
    saved = numba.get_num_threads()
    try:
        for model in (CnvlutinModel(), SparceModel(), SparceModel(SparceParams(simd_width=4))):
            numba.set_num_threads(1)
            one = model.simulate(layers, acts)
            numba.set_num_threads(2)
            two = model.simulate(layers, acts)
            np.testing.assert_array_equal(one.cycles, two.cycles)
            np.testing.assert_array_equal(one.energy_j, two.energy_j)
            bad = dict(acts, x3=np.full_like(acts["x3"], np.nan))
            with pytest.raises(AuditorError, match="layer c3.*NaN"):
                model.simulate(layers, bad)
    finally:
        numba.set_num_threads(saved)
