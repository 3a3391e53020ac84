"""Semantics of real models: the tool's own graph names, logits heads, density counting, input-scale
defaults, machines that cannot be slowed and the time budget (issues 15 item 3, 18 items 2-3, 6-9)."""

from __future__ import annotations

import time

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import auditor
from auditor.runtime.approx import ApproxClassifier
from auditor.runtime.evaluate import evaluate
from auditor.model.load import prepare
from auditor.model.rewrite.preprocess import Preprocessing
from auditor.runtime.session import OnnxClassifier

RNG = np.random.default_rng(0)


def _model(nodes, inits, inp="x", in_shape=("N", 1, 8, 8), out="y", out_shape=(), opset=13):
    graph = helper.make_graph(
        nodes, "t", [helper.make_tensor_value_info(inp, TensorProto.FLOAT, list(in_shape))],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, list(out_shape) or None)],
        [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    if not out_shape:  # the output's shape as onnx infers it
        inferred = onnx.shape_inference.infer_shapes(_upto(m, out)).graph
        m.graph.output[0].CopyFrom(next(v for v in list(inferred.output) + list(inferred.value_info)
                                        if v.name == out and v.type.tensor_type.HasField("shape")))
    return prepare(m)


def _upto(m, tensor):
    """A copy of ``m`` whose only output is ``tensor`` (untyped)."""
    out = onnx.ModelProto()
    out.CopyFrom(m)
    del out.graph.output[:]
    del out.graph.value_info[:]
    out.graph.value_info.append(helper.make_empty_tensor_value_info(tensor))
    out.graph.output.append(helper.make_empty_tensor_value_info(tensor))
    return out


def _cnn(names: dict, side=8, head=(), classes=None):
    """Conv-Relu-MaxPool-Flatten-Gemm-Relu-Gemm with tensor names from ``names`` (role -> name)
    and optional extra head nodes after the last Gemm (given as (op, attrs)); 3 classes, or 10 on
    28x28 inputs (the digits of the bundled data)."""
    classes = classes or (10 if side == 28 else 3)
    n = {r: names.get(r, r) for r in ("x", "w1", "b1", "c1", "r1", "p1", "f1", "w2", "b2", "g1", "r2",
                                       "w3", "b3", "y")}
    h = side // 2
    rng = np.random.default_rng(1)
    inits = {n["w1"]: rng.normal(size=(4, 1, 3, 3)) * 0.5, n["b1"]: rng.normal(size=4) * 0.1,
             n["w2"]: rng.normal(size=(6, 4 * h * h)) * 0.3, n["b2"]: rng.normal(size=6) * 0.1,
             n["w3"]: rng.normal(size=(6, classes or 3)) * 0.5, n["b3"]: np.zeros(classes or 3)}
    last = n["y"] if not head else "z_pre"
    nodes = [helper.make_node("Conv", [n["x"], n["w1"], n["b1"]], [n["c1"]], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", [n["c1"]], [n["r1"]], name="relu1"),
             helper.make_node("MaxPool", [n["r1"]], [n["p1"]], kernel_shape=[2, 2], strides=[2, 2], name="pool"),
             helper.make_node("Flatten", [n["p1"]], [n["f1"]], name="flat"),
             helper.make_node("Gemm", [n["f1"], n["w2"], n["b2"]], [n["g1"]], transB=1, name="fc1"),
             helper.make_node("Relu", [n["g1"]], [n["r2"]], name="relu2"),
             helper.make_node("Gemm", [n["r2"], n["w3"], n["b3"]], [last], name="fc2")]
    for k, (op, attrs) in enumerate(head):
        nxt = n["y"] if k == len(head) - 1 else f"head{k}"
        nodes.append(helper.make_node(op, [last], [nxt], name=f"head_{op}_{k}", **attrs))
        last = nxt
    return _model(nodes, inits, inp=n["x"], in_shape=("N", 1, side, side), out=n["y"])


# the names of the tool's knobs, objectives, gradients and preprocessing, taken by the model
CLASHING = {"x": "x_raw", "w1": "W", "b1": "beta", "c1": "c", "r1": "target", "p1": "kappa", "f1": "label",
            "w2": "weights", "b2": "index", "g1": "objective", "r2": "grad_input", "w3": "sparsity_weights",
            "b3": "logit_index", "y": "logits"}
KNOBS = {"ce": lambda t: {"target": t}, "margin": lambda t: {"label": t, "kappa": 0.0},
         "logit": lambda t: {"index": t}, "act_l2": lambda t: {},
         "sparsity": lambda t: {"weights": np.ones(3, np.float32), "beta": 15.0, "c": 0.5, "target": t}}


# ---------------------------------------------------------------- issue 15 item 3: namespacing

@pytest.mark.parametrize("cls", [OnnxClassifier, ApproxClassifier])
def test_model_named_like_the_tools_knobs_is_attacked_like_any_other(cls):
    pre = Preprocessing(mean=[0.1], std=[0.5])
    plain = cls(_cnn({}), pre)
    clash = cls(_cnn(CLASHING), pre)
    x = RNG.random((5, 1, 8, 8)).astype(np.float32)
    t = plain.predict(x)
    np.testing.assert_array_equal(clash.logits(x), plain.logits(x))
    for objective, knobs in KNOBS.items():
        # int32 labels and Python floats are accepted by both classifiers alike
        k = knobs(t.astype(np.int32))
        v1, g1, z1 = plain.value_and_grad(x, objective, **k)
        v2, g2, z2 = clash.value_and_grad(x, objective, **k)
        np.testing.assert_array_equal(v2, v1)
        np.testing.assert_array_equal(g2, g1)
        np.testing.assert_array_equal(z2, z1)
        assert np.abs(g1).sum() > 0
    added = {n for n in _added_names(clash)}
    assert added and all(n.startswith("auditor::") for n in added)


def _added_names(clf):
    """Names of the gradient graphs that the model itself does not have."""
    own = {t for n in clf.base_model.graph.node for t in list(n.input) + list(n.output)}
    own |= {i.name for i in clf.base_model.graph.input}
    out = set()
    for runner, _, _ in clf._grad_runners.values():
        sess = runner.session
        out |= {i.name for i in sess.get_inputs()} | {o.name for o in sess.get_outputs()}
    return out - own - set(clf.probes.tensors)


def test_clashing_model_audits_end_to_end(tmp_path):
    m = _cnn(CLASHING, side=28)
    path = tmp_path / "clash.onnx"
    onnx.save(m, path)
    sc = tmp_path / "sc.yaml"
    sc.write_text("name: clash\ndata: {count: 8}\npreprocessing: {range: [0, 1], mean: [0.1], std: [0.3]}\n"
                  "energy_attacks:\n  - {search: whitebox, count: 2, params: {iterations: 2}}\n")
    rep = auditor.audit(str(path), "hwprofiles/cnvlutin.yaml", str(sc))
    a = rep.data["profiles"][0]["attacks"][0]
    assert a["search"] == "whitebox" and a["verified"] == 2


# ---------------------------------------------------------------- issue 18 item 2: (N, C, 1, 1) logits

def _conv_head_model(softmax: str | None = None):
    """Conv-Relu-Conv(1x1, 3 classes)-GlobalAveragePool: logits (N, 3, 1, 1), caffe2-style."""
    rng = np.random.default_rng(2)
    inits = {"w1": rng.normal(size=(4, 1, 3, 3)), "w2": rng.normal(size=(3, 4, 1, 1))}
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2"),
             helper.make_node("GlobalAveragePool", ["c2"], ["y" if softmax is None else "g"], name="gap")]
    if softmax:
        nodes.append(helper.make_node(softmax, ["g"], ["y"], axis=1, name="prob"))
    return _model(nodes, inits, opset=11 if softmax else 13)


@pytest.mark.parametrize("softmax", [None, "Softmax"])
def test_logits_with_trailing_singleton_dims_are_attacked(softmax):
    m = _conv_head_model(softmax)
    clf = OnnxClassifier(m)
    x = RNG.random((4, 1, 8, 8)).astype(np.float32)
    ref = ort.InferenceSession(_model_upto(m, "c2").SerializeToString()).run(None, {"x": x})[0].mean(axis=(2, 3))
    z = clf.logits(x)
    assert z.shape == (4, 3) and clf.num_classes == 3
    np.testing.assert_allclose(z, ref, rtol=1e-5, atol=1e-6)
    t = z.argmax(1)
    v, g, zg = clf.value_and_grad(x, "ce", target=t)
    np.testing.assert_array_equal(zg, z)  # the gradient session reads the same logits
    # central differences in float64 of the independent reference, on a few pixels
    for idx in [(0, 0, 3, 3), (2, 0, 5, 1)]:
        h = 1e-2
        xp, xm = x.copy(), x.copy()
        xp[idx] += h
        xm[idx] -= h
        ce = lambda xx: _ce(ort.InferenceSession(_model_upto(m, "c2").SerializeToString())  # noqa: E731
                            .run(None, {"x": xx})[0].mean(axis=(2, 3)), t)
        fd = (ce(xp) - ce(xm))[idx[0]] / (2 * h)
        assert g[idx] == pytest.approx(fd, rel=2e-2, abs=1e-4)
    assert any("singleton" in n for n in clf.head.notes)


def _model_upto(m, tensor):
    out = onnx.ModelProto()
    out.CopyFrom(m)
    del out.graph.output[:]
    out.graph.output.append(helper.make_tensor_value_info(tensor, TensorProto.FLOAT, None))
    return out


def _ce(z, t):
    z = np.asarray(z, np.float64)
    m = z.max(1, keepdims=True)
    return (m[:, 0] + np.log(np.exp(z - m).sum(1))) - z[np.arange(len(z)), t]


# ---------------------------------------------------------------- issue 18 item 3: final Softmax

@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
def test_final_softmax_is_skipped_and_said(op, tmp_path):
    m = _cnn({}, head=[(op, {"axis": 1})])
    plain = OnnxClassifier(_cnn({}))
    clf = OnnxClassifier(m)
    x = RNG.random((6, 1, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(clf.logits(x), plain.logits(x))  # the logits, not probabilities
    assert clf.head.softmax == op and "Softmax" in " ".join(clf.head.notes)
    assert all(n.op_type != op for n in clf.model.graph.node)
    t = plain.predict(x)
    np.testing.assert_array_equal(clf.value_and_grad(x, "margin", label=t, kappa=0.0)[1],
                                  plain.value_and_grad(x, "margin", label=t, kappa=0.0)[1])


def test_report_says_softmax_skipped_and_warns_on_probabilities(tmp_path):
    sc = tmp_path / "sc.yaml"
    sc.write_text("name: s\ndata: {count: 8}\n")
    soft = tmp_path / "soft.onnx"
    onnx.save(_cnn({}, side=28, head=[("Softmax", {"axis": 1})]), soft)
    rep = auditor.audit(str(soft), "hwprofiles/cnvlutin.yaml", str(sc))
    notes = rep.data["profiles"][0]["notes"]
    assert any("ends in Softmax" in n for n in notes) and not any("warning" in n for n in notes)
    assert "ends in Softmax" in rep.render("text").replace("\n  ", " ")
    # a normalisation the tool does not recognise: exp(z) / sum(exp(z))
    manual = tmp_path / "manual.onnx"
    onnx.save(_manual_softmax(), manual)
    rep = auditor.audit(str(manual), "hwprofiles/cnvlutin.yaml", str(sc))
    notes = rep.data["profiles"][0]["notes"]
    assert any(n.startswith("warning:") and "sum to one" in n for n in notes)
    # a plain model gets no note
    rep = auditor.audit("models/plain_cnn.onnx", "hwprofiles/cnvlutin.yaml", str(sc))
    assert "notes" not in rep.data["profiles"][0]


def _manual_softmax():
    base = _cnn({}, side=28)
    g = base.graph
    g.node[-1].output[0] = "z"
    g.initializer.append(numpy_helper.from_array(np.array([1], np.int64), "axes"))
    g.node.extend([helper.make_node("Exp", ["z"], ["e"], name="exp"),
                   helper.make_node("ReduceSum", ["e", "axes"], ["s"], keepdims=1, name="sum"),
                   helper.make_node("Div", ["e", "s"], ["y"], name="div")])
    del g.value_info[:]
    return prepare(base)


# ---------------------------------------------------------------- issue 18 item 6: density of gates

def _se_silu_model():
    """Conv - SiLU (x * Sigmoid(x)) - squeeze-excite (GAP, Conv, Relu, Conv, Sigmoid, Mul) - Conv -
    HardSwish - GAP - Flatten - Gemm: the gates are Sigmoids whose outputs feed a Mul, not a layer."""
    rng = np.random.default_rng(3)
    inits = {"w1": rng.normal(size=(4, 1, 3, 3)), "ws1": rng.normal(size=(2, 4, 1, 1)),
             "ws2": rng.normal(size=(4, 2, 1, 1)), "w2": rng.normal(size=(4, 4, 3, 3)),
             "wf": rng.normal(size=(4, 3))}
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Sigmoid", ["c1"], ["sg1"], name="silu_gate"),
             helper.make_node("Mul", ["c1", "sg1"], ["s1"], name="silu"),
             helper.make_node("GlobalAveragePool", ["s1"], ["se0"], name="se_pool"),
             helper.make_node("Conv", ["se0", "ws1"], ["se1"], name="se_reduce"),
             helper.make_node("Relu", ["se1"], ["se2"], name="se_relu"),
             helper.make_node("Conv", ["se2", "ws2"], ["se3"], name="se_expand"),
             helper.make_node("Sigmoid", ["se3"], ["gate"], name="se_gate"),
             helper.make_node("Mul", ["s1", "gate"], ["s2"], name="se_scale"),
             helper.make_node("Conv", ["s2", "w2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
             helper.make_node("HardSwish", ["c2"], ["hs"], name="hswish"),
             helper.make_node("GlobalAveragePool", ["hs"], ["gp"], name="pool"),
             helper.make_node("Flatten", ["gp"], ["fl"], name="flat"),
             helper.make_node("MatMul", ["fl", "wf"], ["y"], name="fc")]
    return _model(nodes, inits, opset=14)


def test_density_counts_what_reaches_the_compute_layers_not_the_gates():
    clf = OnnxClassifier(_se_silu_model())
    x = RNG.random((4, 1, 8, 8)).astype(np.float32)
    ev = evaluate(clf, x, None, "activations")
    # the Relu inside squeeze-excite feeds a Conv, HardSwish reaches the MatMul through pooling;
    # the Sigmoid gates only feed Muls and are not counted
    assert ev.counted == ("se2", "hs")
    out = clf.forward(x)
    nz = sum(np.count_nonzero(out[t].reshape(4, -1), axis=1) for t in ("se2", "hs"))
    np.testing.assert_array_equal(ev.model_density, nz / (2 + 4 * 8 * 8))
    lay = evaluate(clf, x, None, "layer_inputs")
    assert lay.counted == ("x", "se0", "se2", "s2", "fl") == clf.probes.layer_inputs


def test_density_without_reaching_activations_counts_layer_inputs_and_says_so(tmp_path):
    from auditor.model.rewrite.instrument import density_rule

    m = _se_silu_model()
    g = m.graph
    for node in g.node:  # without the Relu and the HardSwish nothing but gates is left
        if node.op_type in ("Relu", "HardSwish"):
            node.op_type = "Identity"
    clf = OnnxClassifier(prepare(m))
    ev = evaluate(clf, RNG.random((2, 1, 8, 8)).astype(np.float32), None, "activations")
    assert ev.counted == clf.probes.layer_inputs
    assert "no activation output reaches" in density_rule(clf.probes, "activations")


def test_bundled_models_count_every_activation():
    from auditor.model.load import load_model
    from auditor.model.rewrite.instrument import probes_of

    for name in ("plain_cnn", "bn_resnet", "lenet5", "surrogate_cnn"):
        p = probes_of(load_model(f"models/{name}.onnx"))
        assert p.counted("activations") == p.activations, name


# ---------------------------------------------------------------- issue 18 item 7: input-scale defaults

def test_auto_eps_is_the_papers_budget_on_mnist_and_a_per_pixel_rms_budget_elsewhere():
    from auditor.attacks.energy.whitebox import WhiteBoxSparsity, budget

    s = WhiteBoxSparsity()
    assert s.eps == "auto"
    clf28 = OnnxClassifier("models/plain_cnn.onnx")
    b = budget(s.params, clf28, np.zeros((1, 1, 28, 28), np.float32))
    assert b["eps"] == 0.9 and b["eps_iter"] == 0.02  # exactly the paper's numbers at 28x28x1 in [0, 1]
    assert "per-pixel RMS" in b["rule"]
    # 3x64x64 pixels in [0, 255]: the same per-pixel RMS of the range
    b = budget(s.params, type("M", (), {"bounds": (0.0, 255.0)})(), np.zeros((1, 3, 64, 64), np.float32))
    assert b["eps"] == pytest.approx(0.9 * np.sqrt(3 * 64 * 64 / 784) * 255)
    assert b["per_pixel_rms"] == pytest.approx(0.9 / 28)
    assert budget(dict(s.params, norm="linf"), clf28, np.zeros((1, 1, 28, 28)))["eps"] == pytest.approx(0.9 / 28)
    assert budget(dict(s.params, eps=0.5), clf28, np.zeros((1, 3, 64, 64)))["eps"] == 0.5  # given: kept


def _rgb_model(side=32):
    """Conv(3->8, 3x3)-Relu-Conv(8->8)-Relu-GlobalAveragePool-Flatten-Gemm(8->4) on 3 x side x side."""
    rng = np.random.default_rng(5)
    inits = {"w1": rng.normal(size=(8, 3, 3, 3)) * 0.4, "b1": rng.normal(size=8) * 0.2 - 0.3,
             "w2": rng.normal(size=(8, 8, 3, 3)) * 0.3, "b2": rng.normal(size=8) * 0.1 - 0.2,
             "w3": rng.normal(size=(4, 8))}
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
             helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
             helper.make_node("GlobalAveragePool", ["r2"], ["g"], name="gap"),
             helper.make_node("Flatten", ["g"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "w3"], ["y"], transB=1, name="fc")]
    return _model(nodes, inits, in_shape=("N", 3, side, side))


def test_default_whitebox_moves_large_inputs_by_the_scaled_budget():
    from auditor.runtime.evaluate import cost_fn
    from auditor.hw.cnvlutin import CnvlutinModel
    from auditor.attacks.energy.whitebox import WhiteBoxSparsity

    clf = OnnxClassifier(_rgb_model())
    x = RNG.random((3, 3, 32, 32)).astype(np.float32) * 0.5
    res = WhiteBoxSparsity(iterations=40, select_every=40)(clf, x, cost_fn=cost_fn(clf, CnvlutinModel()))
    l2 = np.sqrt(((res.x - x) ** 2).reshape(3, -1).sum(1))
    eps = 0.9 * np.sqrt(3 * 32 * 32 / 784)
    assert res.info["eps"] == pytest.approx(eps)
    assert l2.max() > 0.9 and np.all(l2 <= eps * (1 + 1e-4))  # beyond the MNIST ball, inside the scaled one


def test_unchanged_inputs_read_latency_increase_one_and_dense_machines_skip_searches(tmp_path):
    sc = tmp_path / "sc.yaml"
    # a step too small to change any activation: the search returns its clean inputs (on bn_resnet,
    # whose normalised input has no exact zeros; plain_cnn's zero pixels turn denormal and dense)
    sc.write_text("name: u\ndata: {count: 16}\npreprocessing: {mean: [0.1], std: [0.25]}\nenergy_attacks:\n"
                  "  - {search: whitebox, count: 6, params: {iterations: 1, eps_iter: 1.0e-12}}\n"
                  "checks:\n  max_latency_increase: 1.0\n")
    rep = auditor.audit("models/bn_resnet.onnx", ["hwprofiles/cnvlutin.yaml", "hwprofiles/dense.yaml"], str(sc))
    cnv, dense = rep.data["profiles"]
    a = cnv["attacks"][0]
    assert a["changed"] == 0 and "without changing any input" in a["note"]
    # 1.0 per input: worst attacked against the same inputs clean (not against the mean of all inputs)
    assert a["latency_increase"] == 1.0 and a["energy_increase"] == 1.0 and a["increase_of"] == "input"
    assert a["latency_s"]["worst"] > cnv["clean"]["latency_s"]["mean"]  # the old ratio would read > 1
    assert a["perturbation"]["eps"] == 0.9 and "per-pixel RMS" in a["perturbation"]["rule"]
    checks = {(c["profile"], c["name"]): c for c in rep.checks}
    assert checks[("cnvlutin", "max_latency_increase")]["passed"]
    # the dense machine's cost does not depend on the input: the search is not run, and says why
    d = dense["attacks"][0]
    assert d["skipped"] == "input-independent cost" and "does not depend on the input" in d["note"]
    assert d["queries"] == 0 and d["latency_increase"] == 1.0
    assert checks[("dense", "max_latency_increase")]["measured"] == 1.0
    assert "not run (input-independent cost)" in rep.render("text")


def test_cost_models_declare_whether_inputs_matter():
    from auditor.hw.cnvlutin import CnvlutinModel
    from auditor.hw.dense import DenseModel
    from auditor.hw.fpu import FpuModel
    from auditor.hw.sparce import SparceModel

    assert DenseModel().input_independent and FpuModel().input_independent
    assert not CnvlutinModel().input_independent and not SparceModel().input_independent
    assert SparceModel({"sasa_entries": 0}).input_independent


# ---------------------------------------------------------------- issue 18 item 9: --max-seconds

def test_max_seconds_is_a_hard_bound_of_the_whole_command(tmp_path):
    import json

    from click.testing import CliRunner

    from auditor.cli import main

    sc = tmp_path / "sc.yaml"
    sc.write_text("name: b\ndata: {count: 32}\nenergy_attacks:\n"
                  "  - {search: whitebox, count: 32, params: {iterations: 1000000}}\n"
                  "checks:\n  max_latency_increase: 100.0\n  min_clean_accuracy: 0.5\n")
    budget = 6.0
    out = tmp_path / "r.json"
    t0 = time.monotonic()
    r = CliRunner().invoke(main, ["audit", "models/bn_resnet.onnx", "--hw", "hwprofiles/cnvlutin.yaml", "--scenario",
                                  str(sc), "--max-seconds", str(budget), "--format", "json", "-o", str(out)])
    took = time.monotonic() - t0
    # loading, the clean evaluation, the gradient build, the search and the report all count
    assert took <= budget * 1.03, took
    rep = json.loads(out.read_text())
    assert r.exit_code != 0 and rep["budget"]["cut_short"] == ["cnvlutin:whitebox"]
    c = {c["name"]: c for c in rep["checks"]}
    assert c["max_latency_increase"]["decided"] is False and c["max_latency_increase"]["passed"] is False
    assert c["min_clean_accuracy"]["decided"] is True
    assert rep["timing"]["seconds"] <= budget * 1.03


def test_budget_spent_before_the_clean_evaluation_decides_nothing(tmp_path):
    sc = tmp_path / "sc.yaml"
    sc.write_text("name: z\ndata: {count: 8}\nchecks:\n  min_clean_accuracy: 0.5\n")
    rep = auditor.audit("models/plain_cnn.onnx", "hwprofiles/cnvlutin.yaml", str(sc), max_seconds=0)
    # nothing decided and nothing failed: INCOMPLETE (exit 4), never PASS
    assert rep.data["budget"]["cut_short"] == ["cnvlutin:clean"] and rep.verdict == "INCOMPLETE" and rep.exit_code == 4
    assert [(c["name"], c["passed"], c["decided"]) for c in rep.checks] == [("min_clean_accuracy", False, False)]
    for fmt in ("text", "markdown", "junit", "html"):
        assert rep.render(fmt)
