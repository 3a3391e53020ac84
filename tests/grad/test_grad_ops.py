"""Every gradient rule against central finite differences, on randomised shapes and attributes.

Each op sits in a tiny model whose objective is sum(op_output * R) per sample (R fixed random).
The analytic gradient is onnxruntime's float32 run of the backward graph; the reference is a
float64 finite difference (onnxruntime float64 where it has the kernels, else onnx's reference
evaluator after checking that it agrees with onnxruntime on the forward values).  Ops that are
linear in the input are also checked in float32 with unit steps, exact up to rounding.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from auditor.errors import AuditorError
from auditor.grad import RULES, add_input_gradient, differentiability, ops_elementwise
from auditor.grad.check import directional_check, elementwise_fd, float64_runner

OPSET = 17


# ---------------------------------------------------------------------------- harness


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _elem(a: np.ndarray) -> int:
    return helper.np_dtype_to_tensor_dtype(a.dtype)


def build(nodes, feeds: dict, inits: dict | None = None, out: str = "y", opset: int = OPSET,
          seed: int = 1, dynamic: bool = False) -> onnx.ModelProto:
    """Model computing ``out`` from ``feeds`` with objective ``obj`` = sum(out * R) per sample.
    ``dynamic``: every input dimension is symbolic (shape inference knows only ranks)."""
    inits = inits or {}

    def dims(k, v):
        return [f"{k}{i}" for i in range(v.ndim)] if dynamic else list(v.shape)

    g = helper.make_graph(
        list(nodes), "op",
        [helper.make_tensor_value_info(k, _elem(v), dims(k, v)) for k, v in feeds.items()],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    y = _session(m).run([out], feeds)[0]
    r = np.random.default_rng(seed).standard_normal(y.shape).astype(np.float32)
    m.graph.initializer.append(numpy_helper.from_array(r, "R"))
    m.graph.node.append(helper.make_node("Mul", [out, "R"], ["yr"]))
    if y.ndim >= 2:
        m.graph.initializer.append(numpy_helper.from_array(
            np.arange(1, y.ndim, dtype=np.int64), "obj_axes"))
        m.graph.node.append(helper.make_node("ReduceSum", ["yr", "obj_axes"], ["obj"], keepdims=0))
    else:
        m.graph.node.append(helper.make_node("Identity", ["yr"], ["obj"]))
    m.graph.output.append(helper.make_tensor_value_info("obj", TensorProto.FLOAT, None))
    return m


def analytic(model: onnx.ModelProto, feeds: dict, wrt: str = "x") -> np.ndarray:
    g = add_input_gradient(model, "obj", wrt=wrt)
    outs = _session(g).run(None, feeds)
    assert g.graph.output[-1].name == "grad_input"
    return outs[-1]


def gradcheck(nodes, feeds: dict, inits: dict | None = None, wrt: str = "x", linear=False,
              opset: int = OPSET, n_dirs: int = 3, full: bool = True, rtol: float = 1e-4,
              engine: str = "ort", dynamic: bool = False) -> np.ndarray:
    m = build(nodes, feeds, inits, opset=opset, dynamic=dynamic)
    g = analytic(m, feeds, wrt)
    assert g.shape == feeds[wrt].shape and g.dtype == feeds[wrt].dtype
    assert np.all(np.isfinite(g))
    if linear:
        for an, fd, scale in directional_check(m, "obj", feeds, wrt, g, n_dirs, linear=True):
            assert abs(an - fd) <= 3e-5 * scale + 1e-5, (an, fd, scale)
    _, eng = float64_runner(m, engine)
    if eng == "onnxruntime-float64" and full and feeds[wrt].size <= 600:
        fd = elementwise_fd(m, "obj", feeds, wrt)
        np.testing.assert_allclose(g, fd, rtol=rtol, atol=rtol * (1e-2 + np.abs(fd).max()))
    elif not linear or eng == "reference-float64":
        try:
            checks = directional_check(m, "obj", feeds, wrt, g, n_dirs, engine=engine)
        except Exception:
            if linear:  # e.g. the reference evaluator cannot run grouped ConvTranspose
                return g
            raise
        for an, fd, scale in checks:
            assert abs(an - fd) <= rtol * scale + 1e-6, (an, fd, scale)
    return g


def rnd(shape, seed=0, scale=1.0) -> np.ndarray:
    return np.asarray(np.random.default_rng(seed).standard_normal(shape) * scale, np.float32)


def node(op, inputs, outputs=("y",), **attrs):
    return helper.make_node(op, list(inputs), list(outputs), **attrs)


# ---------------------------------------------------------------------------- convolutions


def _conv_case(seed: int):
    rng = np.random.default_rng(seed)
    sp = 1 if seed % 5 == 4 else 2
    group = int(rng.choice([1, 2, 3]))
    depthwise = seed % 4 == 3
    cin = group * int(rng.integers(1, 4))
    if seed % 6 == 0:  # enough channels per group for the flipped-Conv path
        group, cin = 1, 8
    cout = cin if depthwise else group * int(rng.integers(1, 4))
    if depthwise:
        group = cin
    kernel = [int(rng.integers(1, 4)) for _ in range(sp)]
    strides = [int(rng.integers(1, 4)) for _ in range(sp)]
    dil = [int(rng.integers(1, 3)) for _ in range(sp)]
    size = [int(rng.integers(5, 9)) for _ in range(sp)]
    attrs = dict(kernel_shape=kernel, strides=strides, dilations=dil, group=group)
    mode = rng.choice(["pads", "pads", "SAME_UPPER", "SAME_LOWER", "VALID"])
    if mode == "pads":
        attrs["pads"] = [int(rng.integers(0, 3)) for _ in range(2 * sp)]
    else:
        attrs["auto_pad"] = str(mode)
        if mode != "VALID":  # onnxruntime refuses dilations with SAME_*
            attrs["dilations"] = [1] * sp
    x = rnd([2, cin] + size, seed)
    w = rnd([cout, cin // group] + kernel, seed + 100)
    inits = {"w": w}
    inputs = ["x", "w"]
    if rng.random() < 0.5:
        inits["b"] = rnd([cout], seed + 200)
        inputs.append("b")
    return [node("Conv", inputs, **attrs)], {"x": x}, inits


@pytest.mark.parametrize("seed", range(14))
def test_conv_random(seed):
    nodes, feeds, inits = _conv_case(seed)
    gradcheck(nodes, feeds, inits, linear=True)


def test_conv_with_runtime_weights():
    # weights fed at run time (not constants): the ConvTranspose form of the adjoint
    feeds = {"x": rnd((2, 8, 6, 6), 1), "w": rnd((8, 8, 3, 3), 2)}
    gradcheck([node("Conv", ["x", "w"], kernel_shape=[3, 3], pads=[1, 2, 0, 1])], feeds,
              linear=True)


def test_conv_then_relu_nonlinear():
    # Conv has no float64 kernel: the reference evaluator is used (after a forward check)
    nodes = [node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[3, 3], pads=[1, 0, 2, 1],
                  strides=[2, 1], dilations=[1, 2]), node("Tanh", ["c"])]
    gradcheck(nodes, {"x": rnd([2, 3, 7, 8])}, {"w": rnd([4, 3, 3, 3], 1), "b": rnd([4], 2)})


def _conv_transpose_case(seed: int):
    rng = np.random.default_rng(seed)
    group = int(rng.choice([1, 1, 2]))
    cin = group * int(rng.integers(1, 3))
    cout_g = int(rng.integers(1, 3))
    kernel = [int(rng.integers(1, 4)) for _ in range(2)]
    strides = [int(rng.integers(1, 4)) for _ in range(2)]
    dil = [int(rng.integers(1, 3)) for _ in range(2)]
    attrs = dict(kernel_shape=kernel, strides=strides, dilations=dil, group=group)
    size = [int(rng.integers(3, 6)) for _ in range(2)]
    if seed % 3 == 0:  # (onnx's shape inference mishandles output_shape with unit strides)
        strides = attrs["strides"] = [max(2, s) for s in strides]
        natural = [strides[i] * (size[i] - 1) + (kernel[i] - 1) * dil[i] + 1 for i in range(2)]
        attrs["output_shape"] = [natural[i] - int(rng.integers(0, 2)) for i in range(2)]
    elif seed % 3 == 1:
        attrs["pads"] = [int(rng.integers(0, kernel[i % 2])) for i in range(4)]
        attrs["output_padding"] = [int(rng.integers(0, s)) for s in strides]
    else:
        attrs["auto_pad"] = "SAME_UPPER"
    x = rnd([2, cin] + size, seed)
    w = rnd([cin, cout_g] + kernel, seed + 1)
    return [node("ConvTranspose", ["x", "w", "b"], **attrs)], {"x": x}, {
        "w": w, "b": rnd([cout_g * group], seed + 2)}


@pytest.mark.parametrize("seed", range(9))
def test_conv_transpose_random(seed):
    nodes, feeds, inits = _conv_transpose_case(seed)
    gradcheck(nodes, feeds, inits, linear=True)


# ---------------------------------------------------------------------------- matrix products


@pytest.mark.parametrize("ta", [0, 1])
@pytest.mark.parametrize("tb", [0, 1])
@pytest.mark.parametrize("cshape", [(4,), (3, 4), (1, 1), ()])
def test_gemm(ta, tb, cshape):
    a = rnd((2, 3) if ta else (3, 2), 1)
    b = rnd((4, 2) if tb else (2, 4), 2)
    c = rnd(cshape, 3)
    attrs = dict(transA=ta, transB=tb, alpha=1.5, beta=0.7)
    nodes = [node("Gemm", ["A", "B", "C"], **attrs)]
    for wrt in ("A", "B", "C"):
        feeds = {"A": a, "B": b, "C": c}
        gradcheck(nodes, feeds, wrt=wrt)


def test_gemm_constant_weights_default_attrs():
    gradcheck([node("Gemm", ["x", "w"], transB=1)], {"x": rnd((3, 5))}, {"w": rnd((4, 5), 1)})


@pytest.mark.parametrize("sa,sb", [
    ((3, 4), (4, 5)), ((2, 3, 4), (4, 5)), ((4,), (2, 4, 5)), ((2, 3, 4), (4,)),
    ((2, 1, 3, 4), (5, 4, 2)), ((4,), (4,)), ((1, 3, 4), (2, 4, 2)),
])
def test_matmul_broadcasting(sa, sb):
    feeds = {"a": rnd(sa, 1), "b": rnd(sb, 2)}
    nodes = [node("MatMul", ["a", "b"])]
    for wrt in ("a", "b"):
        gradcheck(nodes, feeds, wrt=wrt)


@pytest.mark.parametrize("shape,dynamic", [((5, 4), False), ((2, 3, 4), False), ((2, 2, 3, 4), False),
                                           ((2, 2, 3, 4), True)])
def test_matmul_constant_weight_reads_the_weight_as_it_is(shape, dynamic):
    """dA of A @ W for a 2-D weight W is one Gemm of dY's rows with W (transB), no transposed
    copy of W in the graph nor a Transpose for onnxruntime to fold; static and symbolic batch."""
    g = gradcheck([node("MatMul", ["x", "w"])], {"x": rnd(shape)}, {"w": rnd((4, 6), 1)}, dynamic=dynamic)
    assert np.abs(g).max() > 0
    m = add_input_gradient(build([node("MatMul", ["x", "w"])], {"x": rnd(shape)}, {"w": rnd((4, 6), 1)},
                           dynamic=dynamic), "obj")
    readers = [n for n in m.graph.node if "w" in n.input]
    assert sorted(n.op_type for n in readers) == ["Gemm", "MatMul"]
    assert not any(n.op_type == "Transpose" for n in m.graph.node)
    assert all(t.name == "w" or t.dims[-2:] != [6, 4] for t in m.graph.initializer)


def test_matmul_constant_weight_and_self_product():
    gradcheck([node("MatMul", ["x", "w"])], {"x": rnd((2, 3, 4))}, {"w": rnd((4, 6), 1)})
    # x used twice: the two contributions accumulate
    gradcheck([node("Transpose", ["x"], ["xt"], perm=[0, 2, 1]), node("MatMul", ["x", "xt"])],
              {"x": rnd((2, 3, 4))})


# ---------------------------------------------------------------------------- elementwise


UNARY = [
    ("Relu", {}), ("LeakyRelu", {"alpha": 0.1}), ("LeakyRelu", {"alpha": -0.3}),
    ("Sigmoid", {}), ("Tanh", {}), ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}),
    ("HardSwish", {}), ("Elu", {"alpha": 0.7}), ("Selu", {}), ("Softplus", {}),
    ("Softsign", {}), ("Exp", {}), ("Neg", {}), ("Abs", {}), ("Sin", {}),
    ("Cos", {}), ("Identity", {}),
]


@pytest.mark.parametrize("op,attrs", UNARY, ids=[f"{o}{a}" for o, a in UNARY])
def test_unary(op, attrs):
    x = rnd((2, 3, 4), 3, scale=2.5)
    gradcheck([node(op, ["x"], **attrs)], {"x": x})


def test_erf():
    # onnx's reference Erf computes in float32, useless for finite differences: use math.erf
    import math

    x = rnd((2, 3, 4), 3, scale=1.5)
    m = build([node("Erf", ["x"])], {"x": x})
    g = analytic(m, {"x": x}).astype(np.float64)
    r = numpy_helper.to_array(next(t for t in m.graph.initializer if t.name == "R"))
    erf = np.vectorize(math.erf)
    h = 1e-6
    fd = r * (erf(x.astype(np.float64) + h) - erf(x.astype(np.float64) - h)) / (2 * h)
    np.testing.assert_allclose(g, fd, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op", ["Log", "Sqrt", "Reciprocal"])
def test_unary_positive_domain(op):
    x = np.abs(rnd((2, 5), 4)) + 0.5
    gradcheck([node(op, ["x"])], {"x": x})


def test_prelu_broadcast_slope():
    gradcheck([node("PRelu", ["x", "s"])], {"x": rnd((2, 3, 4, 2), 5)},
              {"s": rnd((3, 1, 1), 6)})


@pytest.mark.parametrize("case", ["silu", "silu_swapped", "gate_read_again", "broadcast_gate", "other_sigmoid"])
def test_silu_and_sigmoid_gates(case, monkeypatch):
    """x * Sigmoid(x) gets one fused rule (the gradient through Sigmoid folded in); the Sigmoid's
    other readers still send it their gradient; gates that are not SiLU take the Mul rule."""
    x = rnd((2, 3, 4), 21, scale=2.0)
    nodes = {
        "silu": [node("Sigmoid", ["x"], ["s"]), node("Mul", ["x", "s"])],
        "silu_swapped": [node("Sigmoid", ["x"], ["s"]), node("Mul", ["s", "x"])],
        "gate_read_again": [node("Sigmoid", ["x"], ["s"]), node("Mul", ["x", "s"], ["m"]),
                            node("Mul", ["s", "s"], ["q"]), node("Add", ["m", "q"])],
        "broadcast_gate": [node("ReduceMean", ["x"], ["r"], axes=[2]), node("Sigmoid", ["r"], ["s"]),
                           node("Mul", ["x", "s"])],
        "other_sigmoid": [node("Tanh", ["x"], ["t"]), node("Sigmoid", ["t"], ["s"]), node("Mul", ["x", "s"])],
    }[case]
    gradcheck(nodes, {"x": x})
    m = build(nodes, {"x": x})
    fused = len(add_input_gradient(m, "obj").graph.node)
    monkeypatch.setattr(ops_elementwise, "_silu_gate", lambda b, n: None)
    plain = len(add_input_gradient(m, "obj").graph.node)
    if case != "gate_read_again":  # (there the Sigmoid rule runs as well: a check of the values only)
        assert fused < plain if case.startswith("silu") else fused == plain


@pytest.mark.parametrize("op", ["Tanh", "Sigmoid"])
def test_reduction_of_activation_keeps_gradient_small(op):
    """sum(F(beta * x)) per sample (the sparsity objective's form): the reduction's gradient is not
    broadcast to full size before F's derivative, and beta multiplies the small factor."""
    x = rnd((2, 3, 4, 5), 31)
    nodes = [node("Mul", ["x", "beta"], ["bx"]), node(op, ["bx"], ["f"]),
             node("ReduceSum", ["f", "axes"], keepdims=0)]
    inits = {"beta": np.array(1.7, np.float32), "axes": np.array([1, 2, 3], np.int64)}
    gradcheck(nodes, {"x": x}, inits)
    g = add_input_gradient(build(nodes, {"x": x}, inits), "obj")
    full = [n for n in g.graph.node if n.op_type == "Mul" and "broadcast" in " ".join(n.input)]
    assert not full


@pytest.mark.parametrize("pool", ["GlobalAveragePool", "ReduceMean"])
def test_squeeze_excite_gradient_adds_the_small_term(pool):
    """y = x * Sigmoid(pool(x)): the pooled path's gradient joins x's other gradient as a (N, C, 1, 1)
    term that the Add broadcasts, not as a full-size broadcast first."""
    x = rnd((2, 3, 4, 5), 33)
    attrs = {"axes": [2, 3], "keepdims": 1} if pool == "ReduceMean" else {}
    nodes = [node(pool, ["x"], ["p"], **attrs), node("Sigmoid", ["p"], ["s"]), node("Mul", ["x", "s"])]
    gradcheck(nodes, {"x": x}, opset=17 if pool == "GlobalAveragePool" else 13)
    g = add_input_gradient(build(nodes, {"x": x}, opset=17 if pool == "GlobalAveragePool" else 13), "obj")
    assert not [n for n in g.graph.node if n.op_type == "Mul" and "broadcast" in " ".join(n.input)]


@pytest.mark.parametrize("bounds", ["both", "min", "max", "none"])
def test_clip(bounds):
    lo, hi = np.array(-0.5, np.float32), np.array(0.7, np.float32)
    inputs = {"both": ["x", "lo", "hi"], "min": ["x", "lo"], "max": ["x", "", "hi"],
              "none": ["x"]}[bounds]
    gradcheck([node("Clip", inputs)], {"x": rnd((3, 7), 7)}, {"lo": lo, "hi": hi})


def test_cast_round_trip():
    gradcheck([node("Cast", ["x"], ["d"], to=TensorProto.DOUBLE), node("Tanh", ["d"], ["t"]),
               node("Cast", ["t"], to=TensorProto.FLOAT)], {"x": rnd((2, 3))})


BINARY_SHAPES = [((2, 3, 4), (2, 3, 4)), ((2, 3, 4), (4,)), ((2, 3, 4), (3, 1)),
                 ((2, 1, 4), (1, 3, 1)), ((2, 3, 4), ()), ((1, 3, 1), (2, 3, 4))]


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div", "Pow"])
@pytest.mark.parametrize("sa,sb", BINARY_SHAPES)
def test_binary_broadcasting(op, sa, sb):
    a = rnd(sa, 1)
    b = rnd(sb, 2)
    if op in ("Div", "Pow"):
        b = np.asarray(np.abs(b) + 0.5, np.float32)
    if op == "Pow":
        a = np.asarray(np.abs(a) + 0.5, np.float32)
    feeds = {"a": a, "b": b}
    for wrt in ("a", "b"):
        gradcheck([node(op, ["a", "b"])], feeds, wrt=wrt)


@pytest.mark.parametrize("p", [2.0, 3.0, 0.5, 1.0])
def test_pow_constant_exponent(p):
    gradcheck([node("Pow", ["x", "p"])], {"x": np.abs(rnd((2, 4))) + 0.3},
              {"p": np.array(p, np.float32)})


def test_same_tensor_twice():
    gradcheck([node("Mul", ["x", "x"], ["s"]), node("Add", ["s", "x"])], {"x": rnd((2, 5))})


@pytest.mark.parametrize("op", ["Sum", "Mean", "Max", "Min"])
def test_variadic(op):
    feeds = {"a": rnd((2, 3, 4), 1), "b": rnd((3, 1), 2), "c": rnd((4,), 3)}
    for wrt in ("a", "b", "c"):
        gradcheck([node(op, ["a", "b", "c"])], feeds, wrt=wrt)


def test_where():
    feeds = {"a": rnd((2, 3, 4), 1), "b": rnd((4,), 2)}
    cond = np.random.default_rng(0).random((3, 4)) > 0.5
    for wrt in ("a", "b"):
        gradcheck([node("Where", ["c", "a", "b"])], feeds, {"c": cond}, wrt=wrt)


def test_where_condition_from_the_input():
    # the condition depends on x (bool, no gradient); both branches are x-dependent
    gradcheck([node("Greater", ["x", "zero"], ["c"]), node("Exp", ["x"], ["e"]),
               node("Where", ["c", "x", "e"])], {"x": rnd((3, 4), 5)},
              {"zero": np.array(0.0, np.float32)})


# ---------------------------------------------------------------------------- softmax, norm


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("axis", [-1, 1, 0])
def test_softmax(op, axis):
    gradcheck([node(op, ["x"], axis=axis)], {"x": rnd((2, 3, 4), 2)})


def test_batch_norm_inference():
    c = 3
    inits = {"s": rnd((c,), 1), "bb": rnd((c,), 2), "m": rnd((c,), 3),
             "v": np.abs(rnd((c,), 4)) + 0.5}
    gradcheck([node("BatchNormalization", ["x", "s", "bb", "m", "v"], epsilon=1e-3)],
              {"x": rnd((2, c, 4, 3), 5)}, inits)
    # with a momentum attribute (as exported by torch) on opset 13
    gradcheck([node("BatchNormalization", ["x", "s", "bb", "m", "v"], momentum=0.9)],
              {"x": rnd((2, c, 5), 5)}, inits, opset=13)


def test_batch_norm_training_mode_is_refused():
    c = 2
    inits = {"s": rnd((c,), 1), "bb": rnd((c,), 2), "m": rnd((c,), 3), "v": np.ones(c, np.float32)}
    g = helper.make_graph(
        [node("BatchNormalization", ["x", "s", "bb", "m", "v"], ["y", "rm", "rv"],
              training_mode=1),
         node("ReduceSum", ["y"], ["obj"], keepdims=0)], "bn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, c, 3])],
        [helper.make_tensor_value_info("obj", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)])
    with pytest.raises(AuditorError, match="BatchNormalization.*training"):
        add_input_gradient(m, "obj")
    assert [(op, "training" in r) for _, op, r in differentiability(m)] == [
        ("BatchNormalization", True)]


# ---------------------------------------------------------------------------- pooling


def _pool_case(seed: int, op: str):
    rng = np.random.default_rng(seed)
    sp = 1 if seed % 7 == 6 else 2
    kernel = [int(rng.integers(1, 4)) for _ in range(sp)]
    strides = [int(rng.integers(1, 4)) for _ in range(sp)]
    attrs = dict(kernel_shape=kernel, strides=strides)
    attrs["pads"] = [int(rng.integers(0, k)) for k in kernel + kernel]
    attrs["ceil_mode"] = int(rng.integers(0, 2))
    if op == "MaxPool" and rng.random() < 0.4:
        attrs["dilations"] = [int(rng.integers(1, 3)) for _ in range(sp)]
    if op == "AveragePool":
        attrs["count_include_pad"] = int(rng.integers(0, 2))
    size = [int(rng.integers(4, 9)) for _ in range(sp)]
    if attrs["ceil_mode"]:
        # onnx's shape inference (which onnxruntime applies when loading) keeps a last window
        # that starts past the input, onnxruntime's kernels drop it: such models cannot be loaded
        # with a consumer of static shape, so keep away from that corner.
        dil = attrs.get("dilations", [1] * sp)
        for i in range(sp):
            span = size[i] + attrs["pads"][i] + attrs["pads"][sp + i] - (kernel[i] - 1) * dil[i] - 1
            out = -(-span // strides[i]) + 1
            if (out - 1) * strides[i] >= size[i] + attrs["pads"][i]:
                attrs["ceil_mode"] = 0
    return [node(op, ["x"], **attrs)], {"x": rnd([2, 2] + size, seed)}


@pytest.mark.parametrize("seed", range(14))
def test_max_pool_random(seed):
    nodes, feeds = _pool_case(seed, "MaxPool")
    gradcheck(nodes, feeds)


@pytest.mark.parametrize("attrs,overlapping", [
    (dict(kernel_shape=[2, 2], strides=[2, 2]), False),  # tiled (the bundled models' case)
    (dict(kernel_shape=[2, 2], strides=[3, 3]), False),  # disjoint, not tiled
    (dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]), True),  # padded (resnet)
    (dict(kernel_shape=[2, 3], strides=[2, 2], ceil_mode=1), True),
    (dict(kernel_shape=[2, 2], strides=[2, 2], dilations=[2, 2]), True),  # interleaved windows
    (dict(kernel_shape=[2, 2], strides=[1, 1]), True),
])
@pytest.mark.parametrize("opset", [13, OPSET])
def test_max_pool_first_maximum_on_ties(attrs, overlapping, opset):
    """With many exact ties (a post-ReLU image of few levels, and an all-constant plane), the
    gradient must go where onnxruntime's Indices output points: the first maximum.  Overlapping
    windows take the Indices + ScatterElements rule from opset 16 and the one-hot patches +
    ArgMax one below it: both are checked (and which one ran)."""
    rng = np.random.default_rng(0)
    x = np.maximum(np.round(rng.standard_normal((2, 3, 7, 8)) * 1.5) / 2, 0).astype(np.float32)
    x[1, 2] = 0.25
    nodes = [node("MaxPool", ["x"], **attrs)]
    m = build(nodes, {"x": x}, opset=opset)
    g = analytic(m, {"x": x})
    expect = _first_maximum_gradient(m, x, attrs)
    np.testing.assert_allclose(g.reshape(-1), expect, rtol=1e-6, atol=1e-6)
    back = {n.op_type for n in add_input_gradient(m, "obj").graph.node}
    assert ("ScatterElements" in back) == (overlapping and opset >= 16)
    assert ("ArgMax" in back) == (overlapping and opset < 16)


def test_max_pool_scatter_gradient_is_deterministic():
    """The Indices + ScatterElements rule adds the gradients of the windows sharing an element in
    one fixed order: with two threads, repeated runs give the same bits (and the same as one
    thread's); the values are the first maxima's sums."""
    attrs = dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    x = np.maximum(np.round(rnd((4, 16, 33, 30), 5) * 2) / 2, 0).astype(np.float32)
    m = build([node("MaxPool", ["x"], **attrs)], {"x": x})
    g = add_input_gradient(m, "obj")
    assert "ScatterElements" in {n.op_type for n in g.graph.node}
    runs = []
    for threads in (1, 2, 2, 2):
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        sess = ort.InferenceSession(g.SerializeToString(), so, providers=["CPUExecutionProvider"])
        runs.append(sess.run(["grad_input"], {"x": x})[0])
    for r in runs[1:]:
        assert np.array_equal(r, runs[0])
    np.testing.assert_allclose(runs[0].reshape(-1), _first_maximum_gradient(m, x, attrs), rtol=1e-6, atol=1e-6)


def _first_maximum_gradient(m, x, attrs) -> np.ndarray:
    """The flat input gradient of ``build``'s objective (weights R) through MaxPool(``attrs``) of
    ``x``: each output's weight sent to the element onnxruntime's Indices output points to."""
    ref_model = helper.make_model(helper.make_graph(
        [node("MaxPool", ["x"], ["y", "i"], **attrs)], "mp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("i", TensorProto.INT64, None)]),
        opset_imports=[helper.make_opsetid("", OPSET)])
    _, idx = _session(ref_model).run(None, {"x": x})
    r = numpy_helper.to_array(next(t for t in m.graph.initializer if t.name == "R"))
    expect = np.zeros(x.size, np.float64)
    np.add.at(expect, idx.reshape(-1), r.reshape(-1).astype(np.float64))
    return expect


@pytest.mark.parametrize("seed", range(12))
def test_average_pool_random(seed):
    nodes, feeds = _pool_case(seed, "AveragePool")
    gradcheck(nodes, feeds, linear=True)


@pytest.mark.parametrize("op,auto_pad,extra", [
    ("AveragePool", "SAME_UPPER", {"count_include_pad": 0}),
    ("AveragePool", "SAME_LOWER", {"count_include_pad": 1}),
    ("MaxPool", "SAME_LOWER", {}), ("MaxPool", "VALID", {}),
])
def test_pools_with_auto_pad(op, auto_pad, extra):
    nodes = [node(op, ["x"], kernel_shape=[3, 2], strides=[2, 2], auto_pad=auto_pad, **extra)]
    gradcheck(nodes, {"x": rnd((2, 3, 7, 6), 4)}, linear=op == "AveragePool")


@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool"])
def test_global_pools(op):
    gradcheck([node(op, ["x"])], {"x": rnd((2, 3, 4, 5), 3)})


# ---------------------------------------------------------------------------- data movement


def test_reshapes_and_transpose():
    # (2,3,2,2) -> (6,4) -> (1,6,4,1) -> (4,1,1,6) -> (4,1,6) -> (2,12)
    nodes = [node("Flatten", ["x"], ["f"], axis=2), node("Unsqueeze", ["f", "ax03"], ["u"]),
             node("Transpose", ["u"], ["t"], perm=[2, 0, 3, 1]),
             node("Squeeze", ["t", "ax1"], ["s"]), node("Reshape", ["s", "shape"], ["r"]),
             node("Sigmoid", ["r"])]
    gradcheck(nodes, {"x": rnd((2, 3, 2, 2))},
              {"ax03": np.array([0, 3], np.int64), "ax1": np.array([1], np.int64),
               "shape": np.array([2, -1], np.int64)})


def test_shape_only_subgraph():
    # Reshape target computed from Shape(x): needs no gradient of its own
    nodes = [node("Shape", ["x"], ["sh"]), node("Slice", ["sh", "z", "one"], ["n"]),
             node("Concat", ["n", "m1"], ["tgt"], axis=0), node("Tanh", ["x"], ["t"]),
             node("Reshape", ["t", "tgt"])]
    gradcheck(nodes, {"x": rnd((2, 3, 4))}, {"z": np.array([0], np.int64),
                                             "one": np.array([1], np.int64),
                                             "m1": np.array([-1], np.int64)})


def test_concat_and_split():
    nodes = [node("Concat", ["x", "c", "x"], ["cat"], axis=1),
             node("Split", ["cat", "sizes"], ["p", "q", "r"], axis=1),
             node("Mul", ["p", "r"], ["pr"]), node("Concat", ["pr", "q"], axis=1)]
    gradcheck(nodes, {"x": rnd((2, 3, 4))},
              {"c": rnd((2, 2, 4), 2), "sizes": np.array([3, 2, 3], np.int64)})


def test_split_with_unused_output():
    nodes = [node("Split", ["x"], ["a", "b"], axis=2, num_outputs=2), node("Exp", ["a"])]
    gradcheck(nodes, {"x": rnd((2, 3, 4))}, opset=18)


@pytest.mark.parametrize("starts,ends,axes,steps", [
    ([1], [3], [1], [1]), ([0, 1], [-1, 100], [1, 2], [1, 2]), ([3], [0], [2], [-1]),
    ([-2], [-100], [2], [-2]), ([0], [1], [0], [1]),
])
def test_slice(starts, ends, axes, steps):
    inits = {"s": np.array(starts, np.int64), "e": np.array(ends, np.int64),
             "a": np.array(axes, np.int64), "st": np.array(steps, np.int64)}
    gradcheck([node("Slice", ["x", "s", "e", "a", "st"])], {"x": rnd((2, 4, 5))}, inits)


@pytest.mark.parametrize("mode,pads", [
    ("constant", [0, 1, 2, 0, 2, 1]), ("constant", [0, -1, 1, 0, 1, -2]),
    ("reflect", [0, 2, 1, 0, 1, 3]), ("edge", [0, 2, 1, 0, 3, 2]),
])
def test_pad(mode, pads):
    inits = {"p": np.array(pads, np.int64), "v": np.array(0.3, np.float32)}
    gradcheck([node("Pad", ["x", "p", "v"], mode=mode)], {"x": rnd((2, 4, 5))}, inits)


def test_pad_with_axes_opset18():
    inits = {"p": np.array([1, 2, 0, 1], np.int64), "ax": np.array([1, 2], np.int64)}
    gradcheck([node("Pad", ["x", "p", "", "ax"], mode="reflect")], {"x": rnd((2, 4, 5))},
              inits, opset=18)


def test_expand_tile_gather():
    gradcheck([node("Expand", ["x", "shape"])], {"x": rnd((3, 1), 1)},
              {"shape": np.array([2, 3, 4], np.int64)})
    gradcheck([node("Tile", ["x", "reps"])], {"x": rnd((2, 3), 1)},
              {"reps": np.array([2, 3], np.int64)})
    gradcheck([node("Gather", ["x", "i"], axis=1)], {"x": rnd((2, 4, 3), 1)},
              {"i": np.array([3, 0, 3, -1], np.int64)})
    gradcheck([node("Gather", ["x", "i"], axis=2)], {"x": rnd((2, 4, 3), 1)},
              {"i": np.array(1, np.int64)})


def test_dropout_and_identity():
    gradcheck([node("Dropout", ["x"], ["d"]), node("Identity", ["d"], ["i"]),
               node("Tanh", ["i"])], {"x": rnd((2, 5))})
    gradcheck([node("Dropout", ["x", "ratio", "train"], ["d", "mask"]), node("Tanh", ["d"])],
              {"x": rnd((2, 5))},
              {"ratio": np.array(0.5, np.float32), "train": np.array(False)})


# ---------------------------------------------------------------------------- reductions


@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin",
                                "ReduceL2", "ReduceSumSquare", "ReduceLogSumExp", "ReduceL1"])
@pytest.mark.parametrize("axes,keepdims", [([1], 1), ([1, 2], 0), ([-1], 0), (None, 1)])
def test_reductions(op, axes, keepdims):
    x = rnd((2, 3, 4), 9)
    if op == "ReduceL1":
        x = x + np.sign(x) * 0.1
    for opset in (13, 18):
        inits = {}
        if axes is None:
            inputs, attrs = ["x"], {}
        elif op == "ReduceSum" or opset >= 18:
            inputs, attrs = ["x", "ax"], {}
            inits = {"ax": np.array(axes, np.int64)}
        else:
            inputs, attrs = ["x"], {"axes": axes}
        gradcheck([node(op, inputs, keepdims=keepdims, **attrs)], {"x": x}, inits,
                  opset=opset)


# ---------------------------------------------------------------------------- graph structure


def test_residual_connection_accumulates():
    nodes = [node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             node("Relu", ["c"], ["r"]), node("Add", ["r", "x"], ["a"]),
             node("Conv", ["a", "w"], ["c2"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             node("Add", ["c2", "a"])]
    gradcheck(nodes, {"x": rnd((2, 2, 5, 5), 1)}, {"w": rnd((2, 2, 3, 3), 2)})


def test_objective_independent_of_input_gives_zeros():
    m = build([node("Shape", ["x"], ["s"]), node("Cast", ["s"], ["y"], to=TensorProto.FLOAT)],
              {"x": rnd((2, 3))})
    g = analytic(m, {"x": rnd((2, 3))})
    assert np.array_equal(g, np.zeros((2, 3), np.float32))


def test_off_path_nodes_need_no_rule():
    # TopK has no rule, but it only feeds another output, not the objective
    m = build([node("Tanh", ["x"])], {"x": rnd((2, 4))})
    m.graph.initializer.append(numpy_helper.from_array(np.array([2], np.int64), "k"))
    m.graph.node.append(node("TopK", ["x", "k"], ["tv", "ti"]))
    m.graph.output.append(helper.make_tensor_value_info("tv", TensorProto.FLOAT, None))
    g = add_input_gradient(m, "obj")
    outs = _session(g).run(None, {"x": rnd((2, 4))})
    assert [o.name for o in g.graph.output] == ["y", "obj", "tv", "grad_input"]
    assert outs[-1].shape == (2, 4)


@pytest.mark.parametrize("op,extra", [("Round", {}), ("TopK", {"k": 2})])
def test_unsupported_op_is_a_clear_error(op, extra):
    inits = {}
    inputs = ["x"]
    outputs = ["y"] if op == "Round" else ["y", "idx"]
    if op == "TopK":
        inits["k"] = np.array([2], np.int64)
        inputs.append("k")
    nodes = [helper.make_node(op, inputs, outputs, name="the_node")]
    m = build(nodes, {"x": rnd((2, 4))}, inits)
    with pytest.raises(AuditorError, match=f"{op}.*the_node"):
        add_input_gradient(m, "obj")
    blockers = differentiability(m)
    assert [(n, o) for n, o, _ in blockers] == [("the_node", op)]


def test_custom_domain_op_is_reported():
    g = helper.make_graph(
        [helper.make_node("Tanh", ["x"], ["t"]),
         helper.make_node("Gelu", ["t"], ["y"], domain="com.microsoft")], "m",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET),
                                            helper.make_opsetid("com.microsoft", 1)])
    (blocker,) = differentiability(m)
    assert blocker[:2] == ("Gelu_1", "Gelu") and "com.microsoft" in blocker[2]


def test_rule_table_covers_the_issue_ops():
    wanted = """Conv ConvTranspose Gemm MatMul Relu LeakyRelu PRelu Clip Sigmoid Tanh HardSigmoid
    HardSwish Softmax LogSoftmax MaxPool AveragePool GlobalAveragePool GlobalMaxPool
    BatchNormalization Add Sub Mul Div Flatten Reshape Squeeze Unsqueeze Transpose Concat Split
    Slice Pad Identity Dropout ReduceMean ReduceSum""".split()
    assert sorted(set(wanted) - set(RULES)) == []


def test_dynamic_shapes():
    """Only ranks are known: broadcasting is undone with axes computed in the graph, reductions
    and concat sizes are read from runtime shapes."""
    feeds = {"a": rnd((2, 3, 4, 5), 1), "b": rnd((3, 1, 1), 2)}
    nodes = [node("Mul", ["a", "b"], ["m"]), node("GlobalAveragePool", ["m"], ["g"]),
             node("ReduceMean", ["m", "ax"], ["r"], keepdims=1), node("Add", ["g", "r"], ["s"]),
             node("Add", ["m", "s"], ["t"]), node("Concat", ["t", "m"], ["c"], axis=3),
             node("Softmax", ["c"], axis=1)]
    for wrt in ("a", "b"):
        gradcheck(nodes, feeds, {"ax": np.array([2, 3], np.int64)}, wrt=wrt, dynamic=True,
                  opset=18)
    gradcheck([node("MatMul", ["a", "b"])], {"a": rnd((2, 1, 3, 4), 1), "b": rnd((3, 4, 2), 2)},
              wrt="b", dynamic=True)


def test_control_flow_on_the_path_is_reported():
    # the If's branches read x from the outer scope: a dependency without an explicit input
    then_g = helper.make_graph([node("Tanh", ["x"], ["t"])], "then", [],
                               [helper.make_tensor_value_info("t", TensorProto.FLOAT, None)])
    else_g = helper.make_graph([node("Neg", ["x"], ["e"])], "else", [],
                               [helper.make_tensor_value_info("e", TensorProto.FLOAT, None)])
    nodes = [helper.make_node("If", ["flag"], ["y"], name="branch", then_branch=then_g,
                              else_branch=else_g)]
    m = build(nodes, {"x": rnd((2, 3))}, {"flag": np.array(True)})
    assert [(n, op) for n, op, _ in differentiability(m)] == [("branch", "If")]
    with pytest.raises(AuditorError, match="If node 'branch'.*control flow"):
        add_input_gradient(m, "obj")


def test_in_place_gradient_extends_the_model_itself():
    feeds = {"x": rnd((2, 3), 41)}
    m = build([node("Tanh", ["x"])], feeds)
    before = m.SerializeToString()
    ref = add_input_gradient(m, "obj")
    assert m.SerializeToString() == before  # a new model by default
    own = onnx.ModelProto()
    own.CopyFrom(m)
    g = add_input_gradient(own, "obj", in_place=True)
    assert g is own and g.SerializeToString() == ref.SerializeToString()


def test_silu_one_minus_gate_blocked():
    """SiLU on whole NCHWc channel blocks: 1 - s is a depthwise 1x1 Conv (so onnxruntime keeps
    the backward in its blocked layout), no Sub; values against finite differences."""
    x = rnd((2, 8, 3, 4), 23, scale=2.0)
    nodes = [node("Sigmoid", ["x"], ["s"]), node("Mul", ["x", "s"])]
    gradcheck(nodes, {"x": x})
    g = add_input_gradient(build(nodes, {"x": x}), "obj")
    back = [n for n in g.graph.node if n.name.startswith("auditor::grad")]
    assert [n.op_type for n in back].count("Conv") == 1 and "Sub" not in [n.op_type for n in back]


def test_backward_keeps_symbolic_batch():
    """The backward's tensors keep the model's symbolic batch dimension in shape inference (the
    seed is Pow(objective, 0), a Flatten's gradient copies the batch with Reshape 0): onnxruntime's
    blocked layout needs it to prove a backward and a forward tensor of the same shape."""
    rng = np.random.default_rng(0)
    g = helper.make_graph(
        [node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
         node("Sigmoid", ["c"], ["s"]), node("Mul", ["c", "s"], ["a"]), node("Flatten", ["a"], ["f"]),
         node("Gemm", ["f", "fc"], ["z"], transB=1), node("ReduceSum", ["z", "ax"], ["obj"], keepdims=0)],
        "sym", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8, 4, 4])],
        [helper.make_tensor_value_info("obj", TensorProto.FLOAT, ["N"])],
        [numpy_helper.from_array(rng.standard_normal((8, 8, 3, 3)).astype(np.float32), "w"),
         numpy_helper.from_array(rng.standard_normal((5, 128)).astype(np.float32), "fc"),
         numpy_helper.from_array(np.array([1], np.int64), "ax")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)])
    m.ir_version = 8
    gm = onnx.shape_inference.infer_shapes(add_input_gradient(m, "obj"))
    back = {o for n in gm.graph.node if n.name.startswith("auditor::grad") for o in n.output}
    dims = {vi.name: vi.type.tensor_type.shape.dim for vi in list(gm.graph.value_info) + list(gm.graph.output)}
    batched = [t for t in back if t in dims and len(dims[t]) >= 2]
    assert batched and all(dims[t][0].dim_param == "N" for t in batched)


def test_channel_gate_gradient_sums_by_global_pool():
    """x * g with a per-channel gate g (N, C, 1, 1), C whole NCHWc blocks (squeeze-excite): g's
    gradient, the spatial sum of dY * x, is GlobalAveragePool * H*W; values against finite
    differences."""
    x = rnd((2, 8, 3, 4), 29)
    nodes = [node("ReduceMean", ["x", "ax"], ["r"]), node("Sigmoid", ["r"], ["g"]), node("Mul", ["x", "g"])]
    inits = {"ax": np.array([2, 3], np.int64)}
    gradcheck(nodes, {"x": x}, inits, opset=18)
    g = add_input_gradient(build(nodes, {"x": x}, inits, opset=18), "obj")
    back = [n.op_type for n in g.graph.node if n.name.startswith("auditor::grad")]
    assert "GlobalAveragePool" in back


@pytest.mark.parametrize("attrs", [
    dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),  # overlapping, padded (resnet)
    dict(kernel_shape=[3, 3], strides=[2, 2], pads=[0, 1, 1, 0]),
    dict(kernel_shape=[2, 2], strides=[2, 2]),  # disjoint
])
def test_relu_max_pool_mask_at_pooled_size(attrs):
    """Relu -> MaxPool: the Relu's mask is applied to the pooled gradient (y > 0 at the chosen
    element), so windows whose maximum is 0 send nothing, padded taps included (no -inf bias);
    with many exact ties (rounded levels, an all-negative plane) the gradient is the first
    maximum's, masked by z > 0, as onnxruntime's Indices output says."""
    rng = np.random.default_rng(1)
    z = (np.round(rng.standard_normal((2, 3, 8, 8)) * 1.5) / 2).astype(np.float32)
    z[1, 2] = -0.5
    nodes = [node("Relu", ["x"], ["r"]), node("MaxPool", ["r"], **attrs)]
    m = build(nodes, {"x": z})
    g = analytic(m, {"x": z})
    expect = _first_maximum_gradient(m, np.maximum(z, 0), attrs)
    np.testing.assert_allclose(g.reshape(-1), expect * (z.reshape(-1) > 0), rtol=1e-6, atol=1e-6)
    back = add_input_gradient(m, "obj").graph.node
    assert not any("pool_pad_bias" in i for n in back for i in n.input)
    # one Relu mask, at pooled size (no second one at the Relu's full size)
    assert sum(n.op_type == "Cast" and n.attribute[0].i == TensorProto.BOOL for n in back) == 1
