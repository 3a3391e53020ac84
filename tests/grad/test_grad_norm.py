"""Gradient rules of LayerNormalization, InstanceNormalization and GroupNormalization against
central finite differences (the harness of test_grad_ops: float64 onnxruntime where it has the
kernels, else onnx's reference evaluator), plus a small CNN using two of them end to end."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from test_grad_ops import _session, analytic, build, gradcheck, node, rnd

from auditor.errors import AuditorError
from auditor.grad import RULES, add_input_gradient, differentiability
from auditor.grad.check import elementwise_fd


def test_rules_are_registered():
    assert {"LayerNormalization", "InstanceNormalization", "GroupNormalization"} <= set(RULES)


# ---------------------------------------------------------------------------- LayerNormalization

_LN_CASES = [  # (shape, axis)
    ((3, 5), -1), ((4, 3), -2), ((2, 3, 4), -1), ((2, 4, 3), -2), ((3, 2, 4), 1),
    ((2, 3, 2, 3), -1), ((2, 2, 3, 3), -2), ((2, 3, 3, 2), 1),
]


@pytest.mark.parametrize("case", range(len(_LN_CASES)))
def test_layer_norm_random(case):
    shape, axis = _LN_CASES[case]
    rng = np.random.default_rng(case)
    norm_shape = shape[axis % len(shape):]
    # scale: the normalised shape, or a broadcastable one (trailing, or with unit axes)
    sshape = [norm_shape, norm_shape[1:] or norm_shape, (1,) * (len(norm_shape) - 1)
              + norm_shape[-1:]][case % 3]
    eps = [1e-5, 1e-3, 0.3][case % 3]
    inits = {"s": rnd(sshape, case + 10) + 1.0}
    inputs = ["x", "s"]
    if case % 2 == 0:
        inits["bb"] = rnd(norm_shape, case + 20)
        inputs.append("bb")
    x = rnd(shape, case + 100, scale=float(rng.uniform(0.5, 3.0))) + float(rng.uniform(-2, 2))
    gradcheck([node("LayerNormalization", inputs, axis=axis, epsilon=eps)], {"x": x}, inits)


def test_layer_norm_scale_and_bias_fed_at_run_time():
    feeds = {"x": rnd((2, 3, 4), 11), "s": rnd((3, 4), 2), "bb": rnd((3, 4), 3)}
    nodes = [node("LayerNormalization", ["x", "s", "bb"], axis=1)]
    for wrt in ("x", "s", "bb"):
        gradcheck(nodes, feeds, wrt=wrt)


def test_layer_norm_zero_scale():
    # scale 0 on some features: xhat could not be recovered from Y there; it is not needed
    s = rnd((5,), 1)
    s[[1, 3]] = 0
    gradcheck([node("LayerNormalization", ["x", "s"])], {"x": rnd((3, 5), 2)}, {"s": s})


@pytest.mark.parametrize("use_y", [True, False])
def test_layer_norm_mean_and_inv_std_outputs(use_y):
    # gradients arriving at the Mean and InvStdDev outputs (shape (2, 3, 1)) too
    ln = node("LayerNormalization", ["x", "s", "bb"], ["y0", "mu", "istd"], axis=-1,
              epsilon=0.1)
    tail = [node("Mul", ["mu", "istd"], ["t"]), node("Add", ["t", "mu"], ["u"])]
    tail.append(node("Add", ["y0", "u"]) if use_y else node("Mul", ["u", "istd"]))
    x = rnd((2, 3, 4), 11) + 0.5
    gradcheck([ln] + tail, {"x": x}, {"s": rnd((4,), 2), "bb": rnd((4,), 3)})


def test_layer_norm_statistics_outputs_need_static_sizes():
    ln = node("LayerNormalization", ["x", "s"], ["y0", "mu"], axis=-1)
    m = build([ln, node("Add", ["y0", "mu"])], {"x": rnd((2, 4), 11)}, {"s": rnd((4,), 2)},
              dynamic=True)
    with pytest.raises(AuditorError, match="LayerNormalization.*Mean/InvStdDev.*static"):
        add_input_gradient(m, "obj")
    # without the Mean output, dynamic sizes are fine (ReduceMean reads them at run time)
    gradcheck([node("LayerNormalization", ["x", "s"], axis=-1)], {"x": rnd((2, 4), 11)},
              {"s": rnd((4,), 2)}, dynamic=True)


# ---------------------------------------------------------------------------- InstanceNormalization


@pytest.mark.parametrize("shape,eps", [((2, 3, 5), 1e-5), ((2, 2, 3, 4), 1e-2),
                                       ((1, 3, 2, 2, 2), 0.5)])
def test_instance_norm(shape, eps):
    # onnxruntime has no float64 InstanceNormalization: onnx's reference evaluator is used
    c = shape[1]
    inits = {"s": rnd((c,), 1), "bb": rnd((c,), 2)}
    gradcheck([node("InstanceNormalization", ["x", "s", "bb"], epsilon=eps)],
              {"x": rnd(shape, 3, scale=2.0) + 1.0}, inits, n_dirs=4)


def test_instance_norm_scale_and_bias_fed_at_run_time():
    feeds = {"x": rnd((2, 3, 4), 11), "s": rnd((3,), 2), "bb": rnd((3,), 3)}
    nodes = [node("InstanceNormalization", ["x", "s", "bb"])]
    for wrt in ("x", "s", "bb"):
        gradcheck(nodes, feeds, wrt=wrt)


# ---------------------------------------------------------------------------- GroupNormalization


@pytest.mark.parametrize("shape,groups", [((2, 6, 5), 3), ((2, 4, 3, 3), 2), ((1, 4, 5), 4),
                                          ((2, 3, 2, 3), 1)])
def test_group_norm_opset18_per_group_scale(shape, groups):
    feeds = {"x": rnd(shape, 11, scale=2.0) - 0.5}
    inits = {"s": rnd((groups,), 2), "bb": rnd((groups,), 3)}
    gradcheck([node("GroupNormalization", ["x", "s", "bb"], num_groups=groups, epsilon=1e-3)],
              feeds, inits, opset=18)


def test_group_norm_opset18_scale_and_bias_fed_at_run_time():
    feeds = {"x": rnd((2, 4, 3), 11), "s": rnd((2,), 2), "bb": rnd((2,), 3)}
    nodes = [node("GroupNormalization", ["x", "s", "bb"], num_groups=2)]
    for wrt in ("x", "s", "bb"):
        gradcheck(nodes, feeds, wrt=wrt, opset=18)


def _group_norm_np(x, s, bb, groups, eps):
    n, c = x.shape[:2]
    xg = x.reshape(n, groups, -1)
    xh = (xg - xg.mean(-1, keepdims=True)) / np.sqrt(xg.var(-1, keepdims=True) + eps)
    shp = (1, c) + (1,) * (x.ndim - 2)
    return xh.reshape(x.shape) * s.reshape(shp) + bb.reshape(shp)


def _fd_numpy(f, x: np.ndarray, r: np.ndarray, h: float = 1e-6) -> np.ndarray:
    x = x.astype(np.float64)
    g = np.zeros_like(x).reshape(-1)
    for i in range(x.size):
        e = np.zeros(x.size)
        e[i] = h
        e = e.reshape(x.shape)
        g[i] = (np.sum(f(x + e) * r) - np.sum(f(x - e) * r)) / (2 * h)
    return g.reshape(x.shape)


@pytest.mark.parametrize("wrt", ["x", "s", "bb"])
@pytest.mark.parametrize("shape,groups", [((2, 6, 4), 3), ((2, 4, 2, 3), 2)])
def test_group_norm_opset21_per_channel_scale(shape, groups, wrt):
    # GroupNormalization-21 computes in float32 (stash_type 1) even for float64 inputs, so the
    # float64 finite differences come from a numpy implementation (checked against onnxruntime)
    c, eps = shape[1], 1e-2
    feeds = {"x": rnd(shape, 11, scale=2.0) + 0.5, "s": rnd((c,), 2), "bb": rnd((c,), 3)}
    m = build([node("GroupNormalization", ["x", "s", "bb"], num_groups=groups, epsilon=eps)],
              feeds, opset=21)
    m.ir_version = 10
    r = next(numpy_helper.to_array(t) for t in m.graph.initializer if t.name == "R")
    g = analytic(m, feeds, wrt)
    args = {k: v.astype(np.float64) for k, v in feeds.items()}

    def f(v):
        return _group_norm_np(**dict(args, **{wrt: v}), groups=groups, eps=eps)

    y32 = _session(m).run(["y"], feeds)[0]
    np.testing.assert_allclose(y32, f(args[wrt]), rtol=1e-4, atol=1e-4)
    fd = _fd_numpy(f, feeds[wrt], r)
    np.testing.assert_allclose(g, fd, rtol=1e-4, atol=1e-4 * (1e-2 + np.abs(fd).max()))


# ---------------------------------------------------------------------------- float16


@pytest.mark.parametrize("op,attrs,opset,pshape", [
    ("LayerNormalization", {"axis": -2}, 17, (3, 4)),
    ("InstanceNormalization", {}, 17, (3,)),
    ("GroupNormalization", {"num_groups": 3}, 18, (3,)),
    ("GroupNormalization", {"num_groups": 1}, 21, (3,)),
])
def test_float16_computes_in_float32(op, attrs, opset, pshape):
    x = rnd((2, 3, 4), 11) * 3 + 1
    s, bias = rnd(pshape, 2), rnd(pshape, 3)
    grads = {}
    for dt in (np.float32, np.float16):
        nodes = [node(op, ["x", "s", "bb"], ["yh"], **attrs),
                 node("Cast", ["yh"], to=TensorProto.FLOAT)]
        feeds = {"x": x.astype(dt)}
        m = build(nodes, feeds, {"s": s.astype(dt), "bb": bias.astype(dt)}, opset=opset)
        m.ir_version = 10
        grads[dt] = analytic(m, feeds)
    assert grads[np.float16].dtype == np.float16
    ref = grads[np.float32]
    np.testing.assert_allclose(grads[np.float16], ref, atol=1e-2 * np.abs(ref).max(), rtol=1e-2)


def test_unsupported_stash_type_is_refused():
    m = build([node("LayerNormalization", ["x", "s"], stash_type=1)], {"x": rnd((2, 4))},
              {"s": rnd((4,), 1)})
    m.graph.node[0].attribute[0].i = 7  # no onnxruntime session needed for the refusal
    with pytest.raises(AuditorError, match="stash_type=7"):
        add_input_gradient(m, "obj")


# ---------------------------------------------------------------------------- end to end


def _small_cnn() -> onnx.ModelProto:
    rng = np.random.default_rng(5)

    def w(*shape, scale=0.5):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    inits = {
        "w1": w(4, 2, 3, 3), "b1": w(4), "in_s": w(4) + 1, "in_b": w(4),
        "w2": w(5, 4, 3, 3), "b2": w(5), "ln_s": w(5, 3, 3) + 1, "ln_b": w(5, 3, 3),
        "fc_w": w(3, 5, scale=1.0), "fc_b": w(3),
    }
    nodes = [
        node("Conv", ["x", "w1", "b1"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        node("InstanceNormalization", ["c1", "in_s", "in_b"], ["n1"], epsilon=1e-3),
        node("Relu", ["n1"], ["r1"]),
        node("Conv", ["r1", "w2", "b2"], ["c2"], kernel_shape=[3, 3], strides=[2, 2]),
        node("LayerNormalization", ["c2", "ln_s", "ln_b"], ["n2"], axis=1),
        node("GlobalAveragePool", ["n2"], ["p"]),
        node("Flatten", ["p"], ["f"]),
        node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], transB=1),
    ]
    g = helper.make_graph(
        nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2, 7, 7])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [2, 3])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def test_cnn_with_instance_and_layer_norm_end_to_end():
    m = _small_cnn()
    assert differentiability(m) == []
    # objective: per-sample sum of logits * R
    r = np.random.default_rng(9).standard_normal((2, 3)).astype(np.float32)
    m.graph.initializer.extend([numpy_helper.from_array(r, "R"),
                                numpy_helper.from_array(np.array([1], np.int64), "ax")])
    m.graph.node.extend([node("Mul", ["logits", "R"], ["lr"]),
                         node("ReduceSum", ["lr", "ax"], ["obj"], keepdims=0)])
    m.graph.output.append(helper.make_tensor_value_info("obj", TensorProto.FLOAT, [2]))
    x = rnd((2, 2, 7, 7), 4)
    feeds = {"x": x}
    g = analytic(m, feeds)
    assert g.shape == x.shape and np.all(np.isfinite(g))
    # every element (the reference evaluator: onnxruntime has no float64 Conv)
    fd = elementwise_fd(m, "obj", feeds, "x", engine="reference")
    np.testing.assert_allclose(g, fd, rtol=1e-4, atol=1e-4 * np.abs(fd).max())
