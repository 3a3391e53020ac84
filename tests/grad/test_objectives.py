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
from auditor.model.names import ns
from auditor.grad.objectives import (KNOB_DOC, OBJECTIVES, ActivationL2, CrossEntropy, CWMargin, Logit, Sparsity,
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


# ---------------------------------------------------------------- the registry of named objectives
#
# Every objective of OBJECTIVES gets the same battery on tiny_model, whose compute-layer inputs are
# x, a1 (read by two layers) and a2: its value matches the numpy reference below, its input gradient
# matches float64 finite differences, and the knobs it declares are exactly the graph inputs it adds
# (names, shapes, types).  A registered objective without a reference fails here.

LAYERS = ["x", "a1", "a1", "a2"]


def _sparsity_reference(z, acts, k):
    beta, w = float(k["beta"]), k["weights"].astype(np.float64)
    F = np.tanh
    tensors = [acts[t] for t in LAYERS]
    total = sum(a[0].size for a in tensors)
    lsp = -sum(w[i] * F(beta * a).reshape(N, -1).sum(1) for i, a in enumerate(tensors)) / total
    return lsp + float(k["c"]) * -log_softmax(z)[np.arange(N), k["target"]]


REFERENCE = {
    "ce": lambda z, acts, k: -log_softmax(z)[np.arange(N), k["target"]],
    "margin": lambda z, acts, k: np.maximum(
        z[np.arange(N), k["label"]] - np.where(np.eye(C, dtype=bool)[k["label"]], -np.inf, z).max(1),
        -float(k["kappa"])),
    "logit": lambda z, acts, k: z[np.arange(N), k["index"]],
    "sparsity": _sparsity_reference,
    "act_l2": lambda z, acts, k: sum((acts[t] ** 2).reshape(N, -1).sum(1) for t in dict.fromkeys(LAYERS)),
}


def _knob_values(objective, rng):
    """Values for the declared knobs: labels in range, floats away from the margin's clamp."""
    values = {}
    for k in objective.knobs:
        shape = tuple(N if d == "N" else len(LAYERS) if d == "L" else d for d in k.shape)
        if k.label:
            values[k.name] = rng.integers(0, C, size=shape)  # platform ints: cast by the declaration
        else:
            values[k.name] = (0.5 + rng.random(shape)) * (10.0 if k.name == "kappa" else 1.0)
    return values


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_registered_objective_contract(name):
    objective = OBJECTIVES.get(name)
    assert objective.name == name and objective.doc
    m, obj, knobs = append_objective(tiny_model(), objective.spec(LAYERS), output_name=ns("objective"))
    # the declared knobs are the graph inputs the specification adds, with the declared shapes and types
    n_layers = {"N": "N", "L": len(LAYERS)}
    assert knobs == {k.input: tuple(n_layers.get(d, d) for d in k.shape) for k in objective.knobs}
    inputs = {i.name: i for i in m.graph.input}
    for k in objective.knobs:
        want = TensorProto.INT64 if k.label else TensorProto.FLOAT
        assert inputs[k.input].type.tensor_type.elem_type == want, k.name
    rng = np.random.default_rng(11)
    values = _knob_values(objective, rng)
    feeds = dict(objective.feeds(dict(values, unused=np.ones(3))), x=x_feed(12))
    assert set(feeds) == set(knobs) | {"x"}
    for name_, v in values.items():
        assert feeds[ns(name_)].dtype == (np.int64 if np.issubdtype(v.dtype, np.integer) else np.float32)
    acts_out = ("a1", "a2")
    for t in acts_out:
        m.graph.output.append(helper.make_tensor_value_info(t, TensorProto.FLOAT, None))
    val, z, a1, a2 = (o.astype(np.float64) for o in _session(m).run([obj, "logits", *acts_out], feeds))
    acts = {"x": feeds["x"].astype(np.float64), "a1": a1, "a2": a2}
    ref_knobs = {k: np.asarray(v) for k, v in values.items()}
    np.testing.assert_allclose(val, REFERENCE[name](z, acts, ref_knobs), rtol=1e-5, atol=1e-6)
    g = add_input_gradient(m, obj)
    grad = _session(g).run(["grad_input"], feeds)[0]
    np.testing.assert_allclose(grad, elementwise_fd(m, obj, feeds, "x"), rtol=1e-4, atol=1e-6)


def test_objective_registry_names_and_knob_errors():
    assert list(OBJECTIVES) == list(REFERENCE)  # one reference per registered objective, in order
    assert OBJECTIVES.get(" CE ") is OBJECTIVES.get("ce")
    with pytest.raises(AuditorError, match="unknown objective 'cee'; known: ce, margin, logit"):
        OBJECTIVES.get("cee")
    ce = OBJECTIVES.get("ce")
    with pytest.raises(AuditorError, match="objective 'ce' needs knob 'target'"):
        ce.feeds({})
    with pytest.raises(AuditorError, match="knob 'target' of objective 'ce' takes integer labels"):
        ce.feeds({"target": np.zeros(N, np.float32)})
    margin = OBJECTIVES.get("margin")  # an integer kappa is a float knob all the same
    assert margin.feeds({"label": np.zeros(N, np.int32), "kappa": 0})[ns("kappa")].dtype == np.float32
    assert margin.feeds({"label": np.zeros(N, np.int32), "kappa": 0})[ns("label")].dtype == np.int64
