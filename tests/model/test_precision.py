"""Precision what-ifs: the bfloat16 multiplier and k-bit quantisation, against numpy references."""

from __future__ import annotations

import json

import numpy as np
import pytest

from auditor.axfpm import gemm, multiply
from auditor.axfpm.gatelevel import bfloat16_reference as bf16_reference
from auditor.axfpm.multiplier import round_bfloat16
from auditor.errors import AuditorError
from auditor.model.rewrite.quantize import fake_quantize, quantize_model
from builders import tiny_cnn, tiny_cnn_numpy


def test_bfloat16_rounding_is_bit_exact_on_1e5_values():
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2 ** 32, size=100_000, dtype=np.uint64).astype(np.uint32)
    x = bits.view(np.float32)
    x = np.concatenate([x, rng.normal(size=1000).astype(np.float32),
                        np.array([0.0, -0.0, np.inf, -np.inf, 3.4028235e38, 1e-45, 1.00390625, 1.01171875],
                                 np.float32)])
    got = round_bfloat16(x)
    nan = np.isnan(x)
    assert np.all(np.isnan(got[nan]))
    np.testing.assert_array_equal(got[~nan].view(np.uint32), bf16_reference(x[~nan]).view(np.uint32))
    assert np.all(got[~nan].view(np.uint32) & 0xFFFF == 0)
    # ties go to even: 1 + 2^-8 is halfway between 1 and 1 + 2^-7
    assert round_bfloat16(np.float32(1.00390625)) == 1.0 and round_bfloat16(np.float32(1.01171875)) == 1.015625


def test_bfloat16_products_and_gemm_against_numpy():
    rng = np.random.default_rng(1)
    a = (rng.normal(size=100_000) * 10.0 ** rng.uniform(-3, 3, 100_000)).astype(np.float32)
    b = rng.normal(size=100_000).astype(np.float32)
    ref = bf16_reference(a) * bf16_reference(b)  # float32 product of the rounded operands
    np.testing.assert_array_equal(multiply(a, b, "bfloat16").view(np.uint32), ref.view(np.uint32))
    A = rng.normal(size=(5, 7)).astype(np.float32)
    B = rng.normal(size=(7, 3)).astype(np.float32)
    want = (bf16_reference(A).astype(np.float64) @ bf16_reference(B).astype(np.float64)).astype(np.float32)
    np.testing.assert_array_equal(gemm(A, B, variant="bfloat16"), want)


def _grid(w, bits, axis):
    """Reference quantiser: element loop with Python's round (half to even)."""
    q = 2 ** (bits - 1) - 1
    w = np.asarray(w, np.float64)
    out = np.empty_like(w)
    moved = np.moveaxis(w, axis, 0) if axis is not None else w[None]
    dest = np.moveaxis(out, axis, 0) if axis is not None else out[None]
    for c in range(moved.shape[0]):
        peak = float(np.abs(moved if axis is None else moved[c]).max())
        s = peak / q if peak > 0 else 1.0
        flat = (moved[c]).ravel()
        dest[c] = np.array([min(max(round(v / s), -q), q) * s for v in flat]).reshape(moved[c].shape)
    return out


@pytest.mark.parametrize("bits,axis", [(8, None), (4, 0), (3, 1)])
def test_fake_quantize_against_a_loop_reference(bits, axis):
    w = np.random.default_rng(bits).normal(size=(6, 5, 3))
    got, _ = fake_quantize(w, bits, axis)
    np.testing.assert_array_equal(got, _grid(w, bits, axis))
    assert len(np.unique(got)) <= 2 ** bits - 1 if axis is None else True


def test_quantized_model_matches_a_numpy_forward():
    model, inits = tiny_cnn(integer=False)
    rng = np.random.default_rng(3)
    calib = rng.uniform(0, 1, (16, 1, 8, 8)).astype(np.float32)
    x = rng.uniform(0, 1, (10, 1, 8, 8)).astype(np.float32)
    bits = 4
    qm = quantize_model(model, bits, activations=True, per_channel=True, calibration=calib)
    q = 2 ** (bits - 1) - 1
    # reference: per-output-channel weights, per-tensor activation scales from the float model
    wq = dict(inits, w1=_grid(inits["w1"], bits, 0), w2=_grid(inits["w2"], bits, 0), w3=_grid(inits["w3"], bits, 1))
    _, t = tiny_cnn_numpy(calib, inits)
    s = {k: np.abs(t[k]).max() / q for k in ("x", "f1", "r2")}

    def qa(a, k):
        return np.clip(np.round(a / s[k]), -q, q) * s[k]

    _, tq = tiny_cnn_numpy(qa(x.astype(np.float64), "x"), wq)
    r2 = np.maximum(qa(tq["f1"], "f1") @ wq["w2"].T + inits["b2"], 0)
    want = qa(r2, "r2") @ wq["w3"] + inits["b3"]
    import onnxruntime as ort

    sess = ort.InferenceSession(qm.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    meta = json.loads({p.key: p.value for p in qm.metadata_props}["auditor.model.rewrite.quantize"])
    assert meta["retrained"] is False and meta["calibration_inputs"] == 16 and meta["bits"] == 4
    # weight-only: no quantiser nodes, the weights on the grid
    wo = quantize_model(model, 8, per_channel=False)
    assert not [n for n in wo.graph.node if n.op_type == "QuantizeLinear"]
    with pytest.raises(AuditorError, match="calibration"):
        quantize_model(model, 8, activations=True)
    with pytest.raises(AuditorError, match="bits"):
        quantize_model(model, 12, activations=True)


def test_quantized_model_has_straight_through_gradients():
    from auditor.runtime.session import OnnxClassifier

    model, _ = tiny_cnn(integer=False)
    calib = np.random.default_rng(4).uniform(0, 1, (8, 1, 8, 8)).astype(np.float32)
    clf = OnnxClassifier(quantize_model(model, 8, activations=True, calibration=calib))
    _, g, _ = clf.value_and_grad(calib, "margin", label=np.zeros(8, np.int64), kappa=np.float32(1e30))
    assert np.abs(g).sum() > 0  # the rounding does not stop the gradient
