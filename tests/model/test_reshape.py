"""HashNet weight sharing and gradient inhibition as ONNX rewrites."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from auditor.errors import AuditorError
from auditor.model.rewrite.reshape import (apply_reshaping, clean_accuracy, gradient_inhibition, hashnet, hashnet_hashes,
                             num_buckets, weight_layers)

ROOT = Path(__file__).resolve().parents[2]


def tiny_model(seed=0) -> onnx.ModelProto:
    """Conv(1->4, 3x3) - Relu - Flatten - Gemm(4*4*4 -> 12) - Relu - MatMul(12 -> 5) + bias."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.normal(size=(4, 1, 3, 3)).astype(np.float32), "conv_w"),
        numpy_helper.from_array(rng.normal(size=4).astype(np.float32), "conv_b"),
        numpy_helper.from_array(rng.normal(size=(12, 64)).astype(np.float32), "fc1_w"),
        numpy_helper.from_array(rng.normal(size=12).astype(np.float32), "fc1_b"),
        numpy_helper.from_array(rng.normal(size=(12, 5)).astype(np.float32), "fc2_w"),
        numpy_helper.from_array(rng.normal(size=5).astype(np.float32), "fc2_b"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "conv_w", "conv_b"], ["c"], name="conv", kernel_shape=[3, 3]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Flatten", ["r"], ["f"]),
        helper.make_node("Gemm", ["f", "fc1_w", "fc1_b"], ["g"], name="fc1", transB=1),
        helper.make_node("Relu", ["g"], ["h"]),
        helper.make_node("MatMul", ["h", "fc2_w"], ["mm"]),  # unnamed: "MatMul_5"
        helper.make_node("Add", ["mm", "fc2_b"], ["logits"]),
    ]
    graph = helper.make_graph(nodes, "tiny",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 6, 6])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 5])], inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(m)
    return m


def weights(m) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}


def run(m, x):
    s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, {"input": x})[0]


def test_layers_are_found_with_the_project_naming():
    assert [(n, op, w) for n, op, w in weight_layers(tiny_model())] == [
        ("conv", "Conv", "conv_w"), ("fc1", "Gemm", "fc1_w"), ("MatMul_5", "MatMul", "fc2_w")]


def test_hashnet_at_ratio_one_reproduces_the_model_exactly():
    m = tiny_model()
    h = hashnet(m, 1.0, seed=3)
    for k, v in weights(m).items():
        np.testing.assert_array_equal(weights(h)[k], v)
    x = np.random.default_rng(0).uniform(size=(4, 1, 6, 6)).astype(np.float32)
    np.testing.assert_array_equal(run(h, x), run(m, x))
    # the bucket hash is a bijection at ratio 1
    hh, xi = hashnet_hashes("fc1", 768, 768, 3)
    assert sorted(hh) == list(range(768)) and set(np.unique(xi)) == {-1.0, 1.0}


def test_hashnet_shares_weights_in_at_most_k_buckets_and_keeps_biases():
    m = tiny_model()
    h = hashnet(m, 1 / 16, seed=0)
    w0, w1 = weights(m), weights(h)
    for name, n in (("conv_w", 36), ("fc1_w", 768), ("fc2_w", 60)):
        k = num_buckets(n, 1 / 16)
        assert k == int(np.ceil(n / 16))
        assert len(np.unique(np.abs(w1[name]))) <= k
        assert w1[name].shape == w0[name].shape and w1[name].dtype == np.float32
    for b in ("conv_b", "fc1_b", "fc2_b"):
        np.testing.assert_array_equal(w1[b], w0[b])
    meta = json.loads(next(p.value for p in h.metadata_props if p.key == "auditor.model.rewrite.reshape"))
    assert meta[0]["rewrite"] == "hashnet" and meta[0]["ratio"] == 1 / 16
    assert [e["buckets"] for e in meta[0]["layers"]] == [3, 48, 4]
    # deterministic per seed
    np.testing.assert_array_equal(weights(hashnet(m, 1 / 16, seed=0))["fc1_w"], w1["fc1_w"])
    assert not np.array_equal(weights(hashnet(m, 1 / 16, seed=1))["fc1_w"], w1["fc1_w"])


def test_bucket_values_are_the_least_squares_fit():
    m = tiny_model()
    V = weights(m)["fc1_w"].astype(np.float64).ravel()
    k = num_buckets(V.size, 1 / 8)
    h, xi = hashnet_hashes("fc1", V.size, k, 0)
    out = weights(hashnet(m, 1 / 8, layers=["fc1"]))["fc1_w"].astype(np.float64).ravel()
    # each virtual weight is xi * w_bucket
    wb = np.zeros(k)
    wb[h] = xi * out
    np.testing.assert_allclose(xi * wb[h], out, atol=1e-6)
    for b in range(k):
        sel = h == b
        np.testing.assert_allclose(wb[b], np.mean(xi[sel] * V[sel]), atol=1e-6)
        err = lambda w: np.sum((xi[sel] * w - V[sel]) ** 2)  # noqa: E731
        for delta in (1e-3, -1e-3, 0.1, -0.1):
            assert err(wb[b]) <= err(wb[b] + delta)
    # only the chosen layer changed
    w = weights(hashnet(m, 1 / 8, layers="fc1"))
    np.testing.assert_array_equal(w["conv_w"], weights(m)["conv_w"])
    np.testing.assert_array_equal(w["fc2_w"], weights(m)["fc2_w"])


def test_gradient_inhibition_changes_only_the_last_fc_layer_by_tau_sign_w():
    m = tiny_model()
    g = gradient_inhibition(m, 0.1)
    w0, w1 = weights(m), weights(g)
    for k in w0:
        if k != "fc2_w":
            np.testing.assert_array_equal(w1[k], w0[k])
    expected = w0["fc2_w"].astype(np.float64) + 0.1 * np.sign(w0["fc2_w"])
    np.testing.assert_allclose(w1["fc2_w"], expected, rtol=1e-7, atol=1e-7)
    assert np.all(np.abs(w1["fc2_w"]) >= 0.1 - 1e-7)
    # chosen layers, by node or initializer name
    g2 = gradient_inhibition(m, 0.5, layers=["conv", "fc1_w"])
    np.testing.assert_allclose(weights(g2)["conv_w"], w0["conv_w"] + 0.5 * np.sign(w0["conv_w"]), rtol=1e-6)
    np.testing.assert_array_equal(weights(g2)["fc2_w"], w0["fc2_w"])


def test_bad_reshaping_input_is_reported():
    m = tiny_model()
    for bad in (0, 1.5, -0.1, "half", "2/1"):
        with pytest.raises(AuditorError, match="ratio"):
            hashnet(m, bad)
    with pytest.raises(AuditorError, match="unknown layer"):
        hashnet(m, 0.5, layers=["nope"])
    with pytest.raises(AuditorError, match="tau"):
        gradient_inhibition(m, float("nan"))
    with pytest.raises(AuditorError, match="not found"):
        hashnet("/no/such/model.onnx", 0.5)
    with pytest.raises(AuditorError, match="unknown reshaping"):
        apply_reshaping(m, {"pruning": {}})
    with pytest.raises(AuditorError):
        apply_reshaping(m, {"hashnet": {"ratio": 0.5, "bits": 4}})


def test_apply_reshaping_from_a_profile_section():
    m = tiny_model()
    r = apply_reshaping(m, {"hashnet": {"ratio": "1/4", "seed": 2}, "gradient_inhibition": {"tau": 0.1}})
    expect = gradient_inhibition(hashnet(m, 0.25, seed=2), 0.1)
    for k, v in weights(expect).items():
        np.testing.assert_array_equal(weights(r)[k], v)
    assert [e["rewrite"] for e in json.loads(r.metadata_props[0].value)] == ["hashnet", "gradient_inhibition"]
    for k, v in weights(apply_reshaping(m, None)).items():
        np.testing.assert_array_equal(weights(m)[k], v)


def test_clean_accuracy_of_a_bundled_model_under_hashnet():
    path = ROOT / "models" / "plain_cnn.onnx"
    data = ROOT / "auditor" / "data" / "digits28_test.npz"
    if not path.exists() or not data.exists():
        pytest.skip("bundled model not present")
    d = np.load(data)
    x, y = d["x"][:120] / 255.0, d["y"][:120]
    base = clean_accuracy(path, x, y)
    assert base > 0.9
    assert clean_accuracy(hashnet(str(path), 1.0), x, y) == base
    accs = [clean_accuracy(hashnet(str(path), r), x, y) for r in (1 / 8, 1 / 16, 1 / 64)]
    assert all(0.0 <= a <= base for a in accs)
    assert clean_accuracy(gradient_inhibition(str(path), 0.1), x, y) > 0.9
