"""Objective subgraphs: values against numpy on the same logits/activations, gradients against
float64 finite differences, knobs as real graph inputs."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from auditor.errors import AuditorError
from auditor.grad import add_input_gradient
from auditor.grad.check import elementwise_fd
from auditor.grad.objectives import (KNOB_DOC, ActivationL2, CrossEntropy, CWMargin, Logit, Sparsity,
                                WeightedSum, append_objective)

N, C = 4, 5


def _session(model):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def tiny_model(opset: int = 17) -> onnx.ModelProto:
    """x (N,3,4) -> Relu = a1 -> Tanh(flatten(a1) @ W1) = a2 (N,6) -> a2 @ W2 = logits."""
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((12, 6)).astype(np.float32)
    w2 = rng.standard_normal((6, C)).astype(np.float32)
    nodes = [helper.make_node("Relu", ["x"], ["a1"]),
             helper.make_node("Flatten", ["a1"], ["f"], axis=1),
             helper.make_node("MatMul", ["f", "w1"], ["h"]),
             helper.make_node("Tanh", ["h"], ["a2"]),
             helper.make_node("MatMul", ["a2", "w2"], ["logits"])]
    g = helper.make_graph(nodes, "tiny",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 4])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT,
                                                         ["batch", C])],
                          [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def x_feed(seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((N, 3, 4)).astype(np.float32)


def forward(model, x):
    s = _session(model)
    logits, = s.run(["logits"], {"x": x})
    return logits.astype(np.float64)


def values(spec, feeds, extra_outputs=()):
    m, obj, knobs = append_objective(tiny_model(), spec)
    for name in extra_outputs:
        m.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    outs = _session(m).run([obj, "logits", *extra_outputs], feeds)
    return m, obj, knobs, [o.astype(np.float64) for o in outs]


def gradient_matches_fd(m, obj, feeds):
    g = add_input_gradient(m, obj)
    grad = _session(g).run(["grad_input"], feeds)[0]
    fd = elementwise_fd(m, obj, feeds, "x")
    np.testing.assert_allclose(grad, fd, rtol=1e-4, atol=1e-6)
    return grad


def log_softmax(z):
    m = z.max(1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(1, keepdims=True))


LABELS = np.array([1, 0, 4, 2], np.int64)


def test_cross_entropy():
    feeds = {"x": x_feed(), "target": LABELS}
    m, obj, knobs, (val, z) = values(CrossEntropy(), feeds)
    assert knobs == {"target": ("N",)}
    np.testing.assert_allclose(val, -log_softmax(z)[np.arange(N), LABELS], rtol=1e-6, atol=1e-6)
    gradient_matches_fd(m, obj, feeds)


@pytest.mark.parametrize("targeted", [False, True])
@pytest.mark.parametrize("kappa", [0.0, 0.5, 50.0])
def test_cw_margin(targeted, kappa):
    feeds = {"x": x_feed(2), "target": LABELS, "kappa": np.array(kappa, np.float32)}
    spec = CWMargin(targeted=targeted)
    m, obj, knobs, (val, z) = values(spec, feeds)
    assert knobs == {"kappa": (), "target": ("N",)}
    z_t = z[np.arange(N), LABELS]
    others = np.where(np.eye(C, dtype=bool)[LABELS], -np.inf, z).max(1)
    diff = others - z_t if targeted else z_t - others
    np.testing.assert_allclose(val, np.maximum(diff, -kappa), rtol=1e-6, atol=1e-6)
    gradient_matches_fd(m, obj, feeds)


def test_logit():
    idx = np.array([3, 3, 0, 1], np.int64)
    feeds = {"x": x_feed(3), "logit_index": idx}
    m, obj, knobs, (val, z) = values(Logit(), feeds)
    assert knobs == {"logit_index": ("N",)}
    np.testing.assert_allclose(val, z[np.arange(N), idx], rtol=1e-6)
    gradient_matches_fd(m, obj, feeds)


@pytest.mark.parametrize("f", ["tanh", "sigmoid"])
def test_sparsity(f):
    w = np.array([0.7, 1.3, 0.4], np.float32)
    beta = np.float32(2.5)
    feeds = {"x": x_feed(4), "sparsity_weights": w, "sparsity_beta": np.array(beta)}
    spec = Sparsity(["x", "a1", "a2"], f=f)
    m, obj, knobs, (val, _, a1, a2) = values(spec, feeds, extra_outputs=("a1", "a2"))
    assert knobs == {"sparsity_weights": (3,), "sparsity_beta": ()}
    F = np.tanh if f == "tanh" else (lambda t: 1 / (1 + np.exp(-t)))
    acts = [feeds["x"].astype(np.float64), a1, a2]
    k = sum(a[0].size for a in acts)
    expect = -sum(w[i] * F(beta * a).reshape(N, -1).sum(1) for i, a in enumerate(acts)) / k
    np.testing.assert_allclose(val, expect, rtol=1e-5, atol=1e-7)
    gradient_matches_fd(m, obj, feeds)


def test_activation_l2():
    feeds = {"x": x_feed(5)}
    m, obj, knobs, (val, _, a1, a2) = values(ActivationL2(["a1", "a2"]), feeds,
                                             extra_outputs=("a1", "a2"))
    assert knobs == {}
    expect = (a1 ** 2).reshape(N, -1).sum(1) + (a2 ** 2).sum(1)
    np.testing.assert_allclose(val, expect, rtol=1e-5)
    gradient_matches_fd(m, obj, feeds)


def test_weighted_sum_with_knob_coefficient():
    """L = L_sparsity + c * L_ce - 2 * CW: the knobs are shared and c is a graph input."""
    spec = WeightedSum([(1.0, Sparsity(["a1"])), ("c", CrossEntropy()),
                        (-2.0, CWMargin(kappa_input="kappa")), (0.5, Logit("target"))])
    feeds = {"x": x_feed(6), "target": LABELS, "sparsity_weights": np.ones(1, np.float32),
             "sparsity_beta": np.array(1.5, np.float32), "c": np.array(0.3, np.float32),
             "kappa": np.array(0.2, np.float32)}
    m, obj, knobs, (val, z, a1) = values(spec, feeds, extra_outputs=("a1",))
    assert knobs == {"sparsity_weights": (1,), "sparsity_beta": (), "target": ("N",), "c": (),
                     "kappa": ()}
    ce = -log_softmax(z)[np.arange(N), LABELS]
    z_t = z[np.arange(N), LABELS]
    cw = np.maximum(z_t - np.where(np.eye(C, dtype=bool)[LABELS], -np.inf, z).max(1), -0.2)
    sp = -np.tanh(1.5 * a1).reshape(N, -1).sum(1) / a1[0].size
    np.testing.assert_allclose(val, sp + 0.3 * ce - 2 * cw + 0.5 * z_t, rtol=1e-5, atol=1e-6)
    # one session serves every value of the knobs
    s = _session(m)
    v2 = s.run([obj], dict(feeds, c=np.array(0.0, np.float32)))[0]
    np.testing.assert_allclose(v2, sp - 2 * cw + 0.5 * z_t, rtol=1e-5, atol=1e-6)
    gradient_matches_fd(m, obj, feeds)


def test_knobs_are_graph_inputs_and_not_the_default_wrt():
    m, obj, knobs = append_objective(tiny_model(), WeightedSum([("c", CrossEntropy())]))
    inputs = {i.name: i for i in m.graph.input}
    assert set(knobs) <= set(inputs)
    assert not {t.name for t in m.graph.initializer} & set(knobs)
    assert inputs["target"].type.tensor_type.elem_type == TensorProto.INT64
    assert [d.dim_param for d in inputs["target"].type.tensor_type.shape.dim] == ["batch"]
    assert inputs["c"].type.tensor_type.elem_type == TensorProto.FLOAT
    assert inputs["c"].doc_string == KNOB_DOC
    assert m.graph.output[-1].name == obj == "objective"
    g = add_input_gradient(m, obj)  # wrt defaults to "x", not to a knob
    assert g.graph.output[-1].type.tensor_type.elem_type == TensorProto.FLOAT
    grad = _session(g).run(["grad_input"], {"x": x_feed(), "target": LABELS,
                                            "c": np.array(1.0, np.float32)})[0]
    assert grad.shape == (N, 3, 4)


def test_old_opset_model_and_logits_default():
    m, obj, _ = append_objective(tiny_model(opset=11), CrossEntropy())
    feeds = {"x": x_feed(7), "target": LABELS}
    val = _session(m).run([obj], feeds)[0]
    z = forward(tiny_model(opset=11), feeds["x"])
    np.testing.assert_allclose(val, -log_softmax(z)[np.arange(N), LABELS], rtol=1e-6, atol=1e-6)
    g = add_input_gradient(m, obj)
    grad = _session(g).run(["grad_input"], feeds)[0]
    m17, obj17, _ = append_objective(tiny_model(), CrossEntropy())
    grad17 = _session(add_input_gradient(m17, obj17)).run(["grad_input"], feeds)[0]
    np.testing.assert_allclose(grad, grad17, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("spec,match", [
    (WeightedSum([(1.0, CrossEntropy("t")), (1.0, Sparsity(["a1"], weights_input="t"))]),
     "two different shapes"),
    (CrossEntropy("w1"), "clashes"),
    (Sparsity(["nope"]), "no tensor named 'nope'"),
    (Sparsity(["a1"], f="relu"), "tanh' or 'sigmoid"),
    (Sparsity([]), "at least one"),
    (WeightedSum([]), "at least one term"),
    (WeightedSum([(None, CrossEntropy())]), "coefficient"),
    ("ce", "unknown objective"),
])
def test_bad_specifications(spec, match):
    with pytest.raises(AuditorError, match=match):
        append_objective(tiny_model(), spec)


def test_bad_logits():
    with pytest.raises(AuditorError, match="shape \\(N, C\\)"):
        append_objective(tiny_model(), CrossEntropy(), logits="a1")
    with pytest.raises(AuditorError, match="no tensor named"):
        append_objective(tiny_model(), CrossEntropy(), logits="zzz")
