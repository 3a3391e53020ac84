"""auditor.attacks.energy.analysis and auditor.attacks.energy.defences on hand-built inputs and tiny ONNX graphs."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from auditor.errors import AuditorError
from auditor.attacks.energy.analysis import (bn_zero_thresholds, density, kendall_tau, layer_density, pairwise_kendall,
                                     preactivation_shift, replay, uniformity, zero_threshold_summary)
from auditor.attacks.energy.defences import (jpeg_compress, make_input_defence, quantize_input, recovery, relu_nodes,
                                     threshold_relus, tune_thresholds)


def _run(model, x, name="x"):
    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, {name: x.astype(np.float32)})


def _init(name, arr):
    return numpy_helper.from_array(np.asarray(arr, np.float32), name)


# --- BatchNormalization zero thresholds ---------------------------------------------------------

def bn_model():
    """x (N,2,1,1) -> BN_a -> Relu;  BN_b -> Add(x) -> Relu;  BN_c -> Sigmoid (not a ReLU)."""
    gamma, beta, mu, var, eps = [2.0, -1.0], [1.0, 0.5], [0.5, 0.0], [3.0, 0.99], 0.01
    nodes = [
        helper.make_node("BatchNormalization", ["x", "g", "b", "m", "v"], ["bn_a"], name="bn_a", epsilon=eps),
        helper.make_node("Relu", ["bn_a"], ["ya"], name="relu_a"),
        helper.make_node("BatchNormalization", ["x", "g2", "b2", "m", "v"], ["bn_b"], name="bn_b"),
        helper.make_node("Add", ["bn_b", "x"], ["s"], name="add"),
        helper.make_node("Relu", ["s"], ["yb"], name="relu_b"),
        helper.make_node("BatchNormalization", ["x", "g", "b", "m", "v"], ["bn_c"], name="bn_c"),
        helper.make_node("Sigmoid", ["bn_c"], ["yc"], name="sig"),
    ]
    inits = [_init("g", gamma), _init("b", beta), _init("m", mu), _init("v", var),
             _init("g2", [0.0, 1.0]), _init("b2", [0.3, -0.2])]
    vi = lambda n: helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 2, 1, 1])  # noqa: E731
    g = helper.make_graph(nodes, "bn", [vi("x")], [vi("ya"), vi("yb"), vi("yc")], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), (gamma, beta, mu, var, eps)


def test_bn_zero_threshold_formula():
    model, (gamma, beta, mu, var, eps) = bn_model()
    zs = bn_zero_thresholds(model)
    assert [(z.bn, z.relu, z.via) for z in zs] == [("bn_a", "relu_a", "direct"), ("bn_b", "relu_b", "add")]
    expected = [0.5 - 1.0 * np.sqrt(3.0 + 0.01) / 2.0, 0.0 - 0.5 * np.sqrt(0.99 + 0.01) / -1.0]  # [-0.3675, 0.5]
    np.testing.assert_allclose(zs[0].theta, expected, rtol=1e-6)
    np.testing.assert_array_equal(zs[0].gamma_positive, [True, False])
    # gamma = 0: constant output 0.3 > 0 -> always on (-inf); default eps 1e-5 in the second channel
    assert zs[1].theta[0] == -np.inf
    np.testing.assert_allclose(zs[1].theta[1], 0.0 - (-0.2) * np.sqrt(0.99 + 1e-5) / 1.0, rtol=1e-6)
    assert [z.bn for z in bn_zero_thresholds(model, include_add=False)] == ["bn_a"]
    # the threshold is where the ReLU switches (channel 0: on above theta; channel 1: gamma < 0, on below)
    t = zs[0].theta
    x = np.array([[t[0] + 1e-3, t[1] - 1e-3], [t[0] - 1e-3, t[1] + 1e-3]]).reshape(2, 2, 1, 1)
    ya = _run(model, x)[0].reshape(2, 2)
    assert ya[0, 0] > 0 and ya[0, 1] > 0 and ya[1, 0] == 0 and ya[1, 1] == 0
    s = zero_threshold_summary(model)[0]
    assert s["channels"] == 2 and s["negative_share"] == 0.5 and s["flipped_channels"] == 1
    np.testing.assert_allclose(s["min"], expected[0])


# --- density, uniformity, shift, rankings ---------------------------------------------------------

def test_density_counts_nonzeros():
    acts = {"a": np.array([[0, 1, 2, 0], [0, 0, 0, 0]], float), "b": np.array([[1, 0], [3, 4]], float)}
    np.testing.assert_allclose(density(acts), [3 / 6, 2 / 6])
    np.testing.assert_allclose(density(acts, [0, 1]), [0.5, 1.0])
    np.testing.assert_allclose(layer_density(acts)["a"], [0.5, 0.0])
    with pytest.raises(AuditorError):
        density(acts, [1, 2, 3])


def test_uniformity_known_values():
    const = np.full((1, 1, 6, 6), 0.4)
    check = (np.indices((6, 6)).sum(0) % 2).astype(float)[None, None]
    u = uniformity(np.concatenate([const, check]), window=3)
    np.testing.assert_allclose(u, [0.0, np.sqrt(20 / 81)], atol=1e-12)  # every 3x3 window holds 5 vs 4
    with pytest.raises(AuditorError):
        uniformity(const, window=7)


def test_preactivation_shift_sees_narrower_distributions():
    rng = np.random.default_rng(0)
    clean = {"conv": rng.normal(0.5, 1.0, (20, 3, 5, 5))}
    attacked = {"conv": rng.normal(0.05, 0.1, (20, 3, 5, 5))}
    r = preactivation_shift(clean, attacked, thresholds={"conv": np.array([-0.1, -0.1, -0.1])})["conv"]
    assert r["std_ratio"] < 0.2 and r["abs_mean_attacked"] < r["abs_mean_clean"]
    assert r["above_theta_attacked"] > r["above_theta_clean"]


def test_kendall_tau_known_rankings():
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40])[0] == pytest.approx(1.0)
    assert kendall_tau([1, 2, 3, 4], [4, 3, 2, 1])[0] == pytest.approx(-1.0)
    assert kendall_tau([1, 2, 3, 4], [1, 3, 2, 4])[0] == pytest.approx(4 / 6)  # 5 concordant, 1 discordant
    pk = pairwise_kendall({"a": [1, 2, 3], "b": [1, 2, 3], "c": [3, 2, 1]})
    assert pk["pairs"][("a", "b")] == pytest.approx(1.0) and pk["mean"] == pytest.approx(-1 / 3)
    with pytest.raises(AuditorError):
        kendall_tau([1, 2], [1, 2, 3])


def test_replay_reports_transfer_factor():
    x = np.ones((3, 1, 2, 2), np.float32)
    ref = np.zeros((3, 1, 2, 2), np.float32)
    r = replay(x, {"m": lambda z: z.reshape(len(z), -1).mean(1) + 1.0}, x_reference=ref)
    assert r["m"]["mean"] == pytest.approx(2.0) and r["m"]["increase"] == pytest.approx(2.0)


# --- input smoothing --------------------------------------------------------------------------------

def test_quantisation_exactness():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (4, 1, 8, 8)).astype(np.float32)
    for k in (1, 3, 8):
        q = quantize_input(x, k)
        np.testing.assert_array_equal(q * 2 ** k, np.round(q * 2 ** k))  # on the 2^-k grid
        assert np.abs(q - x).max() <= 2.0 ** -(k + 1) + 1e-7
        np.testing.assert_array_equal(quantize_input(q, k), q)  # idempotent
    np.testing.assert_array_equal(quantize_input(np.array([0.0, 0.2, 0.3, 0.74, 1.0]), 2), [0.0, 0.25, 0.25, 0.75, 1.0])
    np.testing.assert_allclose(quantize_input(np.array([-1.0, 0.1, 1.0]), 1, bounds=(-1, 1)), [-1.0, 0.0, 1.0])
    with pytest.raises(AuditorError):
        quantize_input(x, 0)


def test_jpeg_properties():
    rng = np.random.default_rng(0)
    noise = rng.uniform(0, 1, (2, 1, 16, 16)).astype(np.float32)
    const = np.full((1, 1, 16, 16), 128 / 255, np.float32)
    j = jpeg_compress(noise, 90)
    assert j.shape == noise.shape and j.dtype == np.float32 and j.min() >= 0 and j.max() <= 1
    np.testing.assert_allclose(j * 255, np.round(j * 255), atol=1e-4)  # 8-bit values
    np.testing.assert_array_equal(jpeg_compress(noise, 90), j)  # deterministic
    np.testing.assert_allclose(jpeg_compress(const, 50), const, atol=1 / 255 + 1e-6)  # flat image survives
    err = [np.abs(jpeg_compress(noise, q) - noise).mean() for q in (10, 50, 100)]
    assert err[0] > err[1] > err[2] and err[2] < 0.02
    rgb = rng.uniform(0, 1, (1, 3, 8, 8)).astype(np.float32)
    assert jpeg_compress(rgb, 75).shape == (1, 3, 8, 8)
    f = make_input_defence("jpeg", quality=75)
    np.testing.assert_array_equal(f(noise), jpeg_compress(noise, 75))
    np.testing.assert_array_equal(make_input_defence("quantise", bits=4)(noise), quantize_input(noise, 4))
    for bad in [("jpeg", {"quality": 0}), ("jpeg", {"q": 5}), ("blur", {}), ("quantize", {"bits": 2.5})]:
        with pytest.raises(AuditorError):
            make_input_defence(bad[0], **bad[1])


def test_recovery():
    assert recovery(1.0, 2.0, 1.5) == pytest.approx(0.5)
    assert recovery([1.0, 1.0], [2.0, 4.0], [1.0, 1.0]) == pytest.approx(1.0)
    assert recovery(1.0, 2.0, 2.5) == pytest.approx(-0.5)
    assert np.isnan(recovery(2.0, 1.0, 1.0))


# --- activation thresholding ---------------------------------------------------------------------

def mlp_model(seed=0, d=12, h=16, c=3):
    rng = np.random.default_rng(seed)
    w1, b1 = rng.normal(0, 1, (d, h)), rng.normal(0, 0.3, h)
    w2, b2 = rng.normal(0, 1, (h, c)), rng.normal(0, 0.1, c)
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["z1"], name="fc1"),
             helper.make_node("Relu", ["z1"], ["a1"], name="relu1"),
             helper.make_node("Gemm", ["a1", "w2", "b2"], ["logits"], name="fc2")]
    g = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", d])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", c])],
                          [_init("w1", w1), _init("b1", b1), _init("w2", w2), _init("b2", b2)])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), (w1, b1, w2, b2)


def test_threshold_rewrite_semantics():
    model, (w1, b1, w2, b2) = mlp_model()
    x = np.random.default_rng(1).normal(0, 1, (50, 12)).astype(np.float32)
    assert relu_nodes(model) == [("relu1", "a1")]
    same = threshold_relus(model, {"relu1": 0.0})
    np.testing.assert_allclose(_run(same, x)[0], _run(model, x)[0], rtol=1e-5, atol=1e-5)
    t = 0.7
    m = threshold_relus(model, {"a1": t})
    onnx.checker.check_model(m)
    z1 = x.astype(np.float64) @ w1 + b1
    expect = (z1 * (z1 > t)) @ w2 + b2
    np.testing.assert_allclose(_run(m, x)[0], expect, rtol=1e-4, atol=1e-4)
    with pytest.raises(AuditorError, match="no Relu"):
        threshold_relus(model, {"nope": 0.1})


def test_tune_thresholds_respects_budget_and_sparsifies():
    model, (w1, b1, w2, b2) = mlp_model()
    x = np.random.default_rng(2).normal(0, 1, (300, 12)).astype(np.float32)
    y = _run(model, x)[0].argmax(1)
    defended, th, rep = tune_thresholds(model, x, y, budget=0.05)
    assert rep["accuracy_clean"] == 1.0 and rep["accuracy_clean"] - rep["accuracy_defended"] <= 0.05 + 1e-9
    assert th["a1"] > 0
    acc = (_run(defended, x)[0].argmax(1) == y).mean()
    assert acc == pytest.approx(rep["accuracy_defended"])
    z1 = x.astype(np.float64) @ w1 + b1
    assert ((z1 > th["a1"]).mean()) < (z1 > 0).mean()  # sparser layer input for fc2
    _, th0, rep0 = tune_thresholds(model, x, None, budget=0.0)
    assert rep0["accuracy_defended"] == 1.0
