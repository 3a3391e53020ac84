"""Whole-model input gradients: bundled models against float64 finite differences, bit-exact
forward outputs, per-sample independence with a dynamic batch, preprocessing in front of the
model, and models at old (and new) opsets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from auditor.errors import AuditorError
from auditor.grad import add_input_gradient, differentiability, upgrade_opset
from auditor.grad.check import directional_check, elementwise_fd
from auditor.grad.objectives import CrossEntropy, Sparsity, append_objective

ROOT = Path(__file__).resolve().parents[2]
MODELS = ["plain_cnn", "bn_resnet", "lenet5", "surrogate_cnn"]


def _session(model: onnx.ModelProto, threads: int = 1) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = threads
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _load(name: str) -> onnx.ModelProto:
    path = ROOT / "models" / f"{name}.onnx"
    if not path.exists():
        pytest.skip(f"bundled model {path} not available")
    return onnx.load(str(path))


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    path = ROOT / "auditor" / "data" / "digits28_test.npz"
    if not path.exists():
        pytest.skip("digits28_test.npz not available")
    d = np.load(path)
    return (d["x"][:8].astype(np.float32) / 255.0), d["y"][:8].astype(np.int64)


def _ce_gradient_model(model: onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    m, obj, knobs = append_objective(model, CrossEntropy())
    assert knobs == {"target": ("N",)}
    return add_input_gradient(m, obj), obj


@pytest.mark.parametrize("name", MODELS)
def test_bundled_model_gradient_matches_finite_differences(name, digits):
    # Random images, not the digits: their constant background makes exact ties inside MaxPool
    # windows, where the objective has a kink and finite differences are not a gradient.
    x = np.random.default_rng(3).random((2, 1, 28, 28), dtype=np.float32)
    y = digits[1][:2]
    model = _load(name)
    assert differentiability(model) == []
    m, obj, _ = append_objective(model, CrossEntropy())
    g = add_input_gradient(m, obj)
    feeds = {"input": x, "target": y}
    grad = _session(g).run(["grad_input"], feeds)[0]
    assert grad.shape == x.shape and np.abs(grad).max() > 0
    # float64 finite differences with onnx's reference evaluator (Conv has no float64 kernel in
    # onnxruntime), after it has been checked against onnxruntime's forward values
    for an, fd, scale in directional_check(m, obj, feeds, "input", grad, n_dirs=2, h=1e-7):
        assert abs(an - fd) <= 2e-4 * scale + 1e-6, (an, fd, scale)


@pytest.mark.parametrize("name", MODELS)
def test_logits_bit_exact_with_sparsity_objective(name, digits):
    """The sparsity objective reads the compute layers' inputs (inside fused Conv+Relu chains)."""
    x = digits[0]
    model = _load(name)
    acts = [n.input[0] for n in model.graph.node if n.op_type in ("Conv", "Gemm")]
    m, obj, knobs = append_objective(model, Sparsity(acts))
    g = add_input_gradient(m, obj)
    feeds = {"input": x, "sparsity_weights": np.ones(len(acts), np.float32),
             "sparsity_beta": np.array(2.0, np.float32)}
    plain = _session(model).run(None, {"input": x})[0]
    assert np.array_equal(_session(g).run(["logits"], feeds)[0], plain)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("threads", [1, 2])
def test_logits_bit_exact(name, threads, digits):
    x, y = digits
    model = _load(name)
    g, _ = _ce_gradient_model(model)
    plain = _session(model, threads).run(None, {"input": x})[0]
    outs = _session(g, threads).run(None, {"input": x, "target": y})
    assert [o.name for o in g.graph.output] == ["logits", "objective", "grad_input"]
    assert outs[0].dtype == plain.dtype and np.array_equal(outs[0], plain)
    # the objective is the per-sample cross-entropy of these very logits
    z = plain.astype(np.float64)
    ce = np.log(np.exp(z - z.max(1, keepdims=True)).sum(1)) + z.max(1) - z[np.arange(len(y)), y]
    np.testing.assert_allclose(outs[1], ce, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["bn_resnet", "lenet5"])
def test_dynamic_batch_and_per_sample_gradients(name, digits):
    x, y = digits
    g, _ = _ce_gradient_model(_load(name))
    s = _session(g)
    full = s.run(["grad_input"], {"input": x[:5], "target": y[:5]})[0]
    for i in range(5):
        one = s.run(["grad_input"], {"input": x[i:i + 1], "target": y[i:i + 1]})[0]
        np.testing.assert_allclose(one[0], full[i], rtol=1e-5, atol=1e-7)


def test_sparsity_objective_through_bundled_model():
    x = np.random.default_rng(4).random((2, 1, 28, 28), dtype=np.float32)
    model = _load("plain_cnn")
    acts = [n.input[0] for n in model.graph.node if n.op_type in ("Conv", "Gemm")]
    m, obj, knobs = append_objective(model, Sparsity(acts))
    assert knobs == {"sparsity_weights": (len(acts),), "sparsity_beta": ()}
    g = add_input_gradient(m, obj)
    feeds = {"input": x, "sparsity_weights": np.linspace(0.5, 1.5, len(acts)).astype(np.float32),
             "sparsity_beta": np.array(3.0, np.float32)}
    grad = _session(g).run(["grad_input"], feeds)[0]
    for an, fd, scale in directional_check(m, obj, feeds, "input", grad, n_dirs=2, h=1e-7):
        assert abs(an - fd) <= 2e-4 * scale + 1e-7, (an, fd, scale)


def test_gradient_through_prepended_preprocessing(digits):
    """bn_resnet expects (x - 0.1) / 0.25; with that prepended (as the scenario's preprocessing
    does) the gradient lives in the raw pixel domain: 1/0.25 times the normalised one."""
    x, y = digits[0][:3], digits[1][:3]
    model = _load("bn_resnet")
    pre = onnx.ModelProto()
    pre.CopyFrom(model)
    g = pre.graph
    for nd in g.node:
        for i, name in enumerate(nd.input):
            if name == "input":
                nd.input[i] = "normalised"
    g.initializer.extend([numpy_helper.from_array(np.array(0.1, np.float32), "pp_mean"),
                          numpy_helper.from_array(np.array(0.25, np.float32), "pp_std")])
    g.node.insert(0, helper.make_node("Sub", ["input", "pp_mean"], ["centred"]))
    g.node.insert(1, helper.make_node("Div", ["centred", "pp_std"], ["normalised"]))
    g_raw, _ = _ce_gradient_model(pre)
    g_norm, _ = _ce_gradient_model(model)
    raw = _session(g_raw).run(["grad_input"], {"input": x, "target": y})[0]
    norm = _session(g_norm).run(["grad_input"], {"input": (x - np.float32(0.1)) / np.float32(0.25),
                                                 "target": y})[0]
    np.testing.assert_allclose(raw, norm / 0.25, rtol=1e-4, atol=1e-6)


def test_unsupported_op_in_a_model_names_the_node():
    model = _load("lenet5")
    m = onnx.ModelProto()
    m.CopyFrom(model)
    relu = next(n for n in m.graph.node if n.op_type == "Relu")
    relu.op_type = "Round"
    blockers = differentiability(m)
    assert [(n, op) for n, op, _ in blockers] == [(relu.name, "Round")]
    assert "piecewise constant" in blockers[0][2]
    m2, obj, _ = append_objective(m, CrossEntropy())
    with pytest.raises(AuditorError, match=f"Round node '{relu.name}'"):
        add_input_gradient(m2, obj)


def test_api_errors():
    model = _load("surrogate_cnn")
    with pytest.raises(AuditorError, match="no tensor named 'nope'"):
        add_input_gradient(model, "nope")
    with pytest.raises(AuditorError, match="already has a tensor named 'logits'"):
        add_input_gradient(model, "logits", grad_name="logits")
    two = onnx.ModelProto()
    two.CopyFrom(model)
    two.graph.input.append(helper.make_tensor_value_info("other", TensorProto.FLOAT, [1]))
    with pytest.raises(AuditorError, match="wrt="):
        add_input_gradient(two, "logits")


def test_input_model_is_not_modified():
    model = _load("surrogate_cnn")
    before = model.SerializeToString()
    m, obj, _ = append_objective(model, CrossEntropy())
    add_input_gradient(m, obj)
    assert model.SerializeToString() == before


# ---------------------------------------------------------------------------- opsets


def _old_opset_model(opset: int) -> onnx.ModelProto:
    """MatMul -> Clip -> Softmax over a 3-D tensor (flatten semantics below opset 13) ->
    ReduceMean(axes attribute) -> Unsqueeze(axes attribute) -> Split(split attribute) -> Mul."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((6, 8)).astype(np.float32)
    clip_inputs = ["h"] if opset < 11 else ["h", "lo", "hi"]
    clip_attrs = {"min": -1.0, "max": 1.5} if opset < 11 else {}
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"]),
        helper.make_node("Clip", clip_inputs, ["c"], **clip_attrs),
        helper.make_node("Reshape", ["c", "shape3"], ["c3"]),
        helper.make_node("Softmax", ["c3"], ["s"], axis=1),
        helper.make_node("ReduceMean", ["s"], ["r"], axes=[2], keepdims=0),
        helper.make_node("Unsqueeze", ["r"], ["u"], axes=[1]),
        helper.make_node("Split", ["u"], ["a", "b"], axis=2, split=[2, 2]),
        helper.make_node("Mul", ["a", "b"], ["m"]),
        helper.make_node("Flatten", ["m"], ["y"], axis=1),
    ]
    inits = [numpy_helper.from_array(w, "w"),
             numpy_helper.from_array(np.array([0, 4, 2], np.int64), "shape3")]
    if opset >= 11:
        inits += [numpy_helper.from_array(np.array(-1.0, np.float32), "lo"),
                  numpy_helper.from_array(np.array(1.5, np.float32), "hi")]
    g = helper.make_graph(nodes, "old", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                         ["N", 6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 7
    return m


def _with_sum_objective(model: onnx.ModelProto, out: str) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    m.graph.node.append(helper.make_node("ReduceSum", [out], ["obj"], axes=[1], keepdims=0)
                        if _opset(m) < 13 else
                        helper.make_node("ReduceSum", [out, "obj_axes"], ["obj"], keepdims=0))
    if _opset(m) >= 13:
        m.graph.initializer.append(numpy_helper.from_array(np.array([1], np.int64), "obj_axes"))
    m.graph.output.append(helper.make_tensor_value_info("obj", TensorProto.FLOAT, None))
    return m


def _opset(m):
    return next(i.version for i in m.opset_import if i.domain in ("", "ai.onnx"))


@pytest.mark.parametrize("opset", [9, 11, 12])
def test_old_opsets_are_upgraded_with_identical_outputs(opset):
    model = _with_sum_objective(_old_opset_model(opset), "y")
    x = np.random.default_rng(1).standard_normal((3, 6)).astype(np.float32) * 0.6
    up = upgrade_opset(model)
    assert _opset(up) == 13
    before = _session(model).run(None, {"x": x})
    after = _session(up).run(None, {"x": x})
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)
    g = add_input_gradient(model, "obj", wrt="x")
    outs = _session(g).run(None, {"x": x})
    np.testing.assert_array_equal(outs[0], before[0])
    # finite differences of the upgraded model, which has just been shown to compute exactly the
    # same thing (onnxruntime has no float64 Clip-11, and onnx's reference evaluator gets
    # Softmax-11's flattening wrong, so the original cannot be evaluated in float64 here)
    fd = elementwise_fd(up, "obj", {"x": x}, "x")
    np.testing.assert_allclose(outs[-1], fd, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("op,opset,mode,scales", [
    ("Upsample", 9, "nearest", [1, 1, 1.5, 2.5]), ("Upsample", 9, "linear", [1, 1, 2.0, 1.3]),
    ("Resize", 10, "nearest", [1, 1, 1.5, 2.5]), ("Resize", 10, "nearest", [1, 1, 0.6, 0.7]),
    ("Resize", 10, "linear", [1, 1, 2.0, 1.3]), ("Resize", 10, "linear", [1, 1, 0.6, 0.7])])
def test_old_resize_keeps_its_meaning_when_upgraded(op, opset, mode, scales):
    # the version converter alone would give these nodes opset 11's half_pixel coordinates
    x = np.random.default_rng(3).standard_normal((2, 1, 7, 6)).astype(np.float32)
    g = helper.make_graph(
        [helper.make_node(op, ["x", "s"], ["y"], mode=mode)], "old",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 7, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.array(scales, np.float32), "s")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 7
    up = upgrade_opset(m)
    np.testing.assert_array_equal(_session(up).run(None, {"x": x})[0],
                                  _session(m).run(None, {"x": x})[0])


def test_old_nearest_resize_both_ways_is_refused():
    g = helper.make_graph(
        [helper.make_node("Resize", ["x", "s"], ["y"], mode="nearest", name="both")], "old",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.array([1, 1, 2, 0.5], np.float32), "s")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 10)])
    m.ir_version = 7
    with pytest.raises(AuditorError, match="'both'.*upsamples some axes"):
        upgrade_opset(m)


@pytest.mark.parametrize("opset", [18, 21])
def test_new_opsets_axes_as_inputs(opset):
    rng = np.random.default_rng(2)
    nodes = [
        helper.make_node("Tanh", ["x"], ["t"]),
        helper.make_node("ReduceMean", ["t", "ax2"], ["r"], keepdims=1),
        helper.make_node("Split", ["r"], ["a", "b"], axis=1, num_outputs=2),
        helper.make_node("Pad", ["a", "pads", "", "ax1"], ["p"], mode="edge"),
        helper.make_node("ReduceMax", ["b", "ax1"], ["mx"], keepdims=1),
        helper.make_node("Mul", ["p", "mx"], ["y"]),
    ]
    inits = [numpy_helper.from_array(np.array([2], np.int64), "ax2"),
             numpy_helper.from_array(np.array([1], np.int64), "ax1"),
             numpy_helper.from_array(np.array([1, 2], np.int64), "pads")]
    g = helper.make_graph(nodes, "new", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                         [2, 6, 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10
    model = _with_sum_objective(model, "y")
    model.graph.node[-1].CopyFrom(helper.make_node("ReduceSum", ["y", "obj_axes3"], ["obj"],
                                                   keepdims=0))
    model.graph.initializer.append(numpy_helper.from_array(np.array([1, 2], np.int64),
                                                           "obj_axes3"))
    x = rng.standard_normal((2, 6, 3)).astype(np.float32)
    gm = add_input_gradient(model, "obj")
    assert _opset(gm) == opset
    grad = _session(gm).run(["grad_input"], {"x": x})[0]
    fd = elementwise_fd(model, "obj", {"x": x}, "x")
    np.testing.assert_allclose(grad, fd, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------------------- optional torch


def _torch_forward(model: onnx.ModelProto, x):
    """The bundled models' ops, evaluated by torch (autograd) with the ONNX weights."""
    import torch
    import torch.nn.functional as F

    env = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in model.graph.initializer}
    env["input"] = x
    for nd in model.graph.node:
        a = {at.name: helper.get_attribute_value(at) for at in nd.attribute}
        ins = [env[i] for i in nd.input]
        if nd.op_type == "Conv":
            p = a.get("pads", [0, 0, 0, 0])
            assert p[:2] == p[2:]
            y = F.conv2d(ins[0], ins[1], ins[2] if len(ins) > 2 else None,
                         stride=a.get("strides", 1), padding=p[:2])
        elif nd.op_type == "Relu":
            y = F.relu(ins[0])
        elif nd.op_type == "MaxPool":
            y = F.max_pool2d(ins[0], a["kernel_shape"], a["strides"])
        elif nd.op_type == "BatchNormalization":
            y = F.batch_norm(ins[0], ins[3], ins[4], ins[1], ins[2], False,
                             eps=a.get("epsilon", 1e-5))
        elif nd.op_type == "Add":
            y = ins[0] + ins[1]
        elif nd.op_type == "GlobalAveragePool":
            y = ins[0].mean(dim=(2, 3), keepdim=True)
        elif nd.op_type == "Flatten":
            y = torch.flatten(ins[0], 1)
        elif nd.op_type == "Gemm":
            assert a.get("transB") == 1 and not a.get("transA")
            y = F.linear(ins[0], ins[1], ins[2])
        else:
            raise NotImplementedError(nd.op_type)
        env[nd.output[0]] = y
    return env["logits"]


@pytest.mark.parametrize("name", MODELS)
def test_torch_cross_check_on_digits(name, digits):
    """Optional: torch autograd on the real digits, whose constant background puts exact ties in
    the MaxPool windows; torch (like onnxruntime) sends the gradient to the first maximum."""
    torch = pytest.importorskip("torch")
    x, y = digits
    model = _load(name)
    g, _ = _ce_gradient_model(model)
    ours = _session(g).run(["grad_input"], {"input": x, "target": y})[0]
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(_torch_forward(model, xt), torch.from_numpy(y),
                                             reduction="sum")
    loss.backward()
    ref = xt.grad.numpy()
    np.testing.assert_allclose(ours, ref, rtol=2e-3, atol=2e-5 * np.abs(ref).max())
