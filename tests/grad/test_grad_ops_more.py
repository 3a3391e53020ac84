"""Gradient rules for the ops real CNN exports use, beyond tests/test_grad_ops.py: LRN (AlexNet,
ZFNet, Inception v1), Gelu (opset 20), Celu, ThresholdedRelu, Mish, Shrink, DepthToSpace /
SpaceToDepth, channel shuffle, and the attribute forms of opsets 7-12 (upgraded to 13 before the
rules run).  Same harness: float32 analytic gradient against a float64 central finite
difference."""

from __future__ import annotations

import numpy as np
import pytest

from onnx import helper, numpy_helper

from auditor.grad import RULES, differentiability, upgrade_opset
from auditor.grad.check import elementwise_fd
from test_grad_ops import _session, analytic, build, gradcheck, node, rnd


def _decompose_lrn(model):
    """The model with every LRN written with Pad/Slice/Add/Pow/Div, ops that onnxruntime runs in
    float64 (it has no float64 LRN, and onnx 1.23's reference LRN is wrong)."""
    m = upgrade_opset(model, 15)  # Shape with start/end
    nodes = []
    for k, nd in enumerate(m.graph.node):
        if nd.op_type != "LRN":
            nodes.append(nd)
            continue
        a = {x.name: helper.get_attribute_value(x) for x in nd.attribute}
        size, alpha, beta, bias = a["size"], a.get("alpha", 1e-4), a.get("beta", 0.75), a.get("bias", 1.0)
        lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
        x, y, p = nd.input[0], nd.output[0], f"lrn{k}_"
        consts = {p + "pads": np.array([0, lo, 0, 0, 0, hi, 0, 0], np.int64),
                  p + "alpha": np.array(alpha / size, np.float32), p + "bias": np.array(bias, np.float32),
                  p + "beta": np.array(beta, np.float32), p + "ax": np.array([1], np.int64)}
        m.graph.initializer.extend(numpy_helper.from_array(v, n) for n, v in consts.items())
        nodes += [helper.make_node("Mul", [x, x], [p + "sq"]),
                  helper.make_node("Pad", [p + "sq", p + "pads"], [p + "padded"]),
                  helper.make_node("Shape", [x], [p + "shape"], start=1, end=2)]
        parts = []
        for j in range(size):
            st, en = p + f"st{j}", p + f"en{j}"
            m.graph.initializer.append(numpy_helper.from_array(np.array([j], np.int64), st))
            nodes += [helper.make_node("Add", [p + "shape", st], [en]),
                      helper.make_node("Slice", [p + "padded", st, en, p + "ax"], [p + f"part{j}"])]
            parts.append(p + f"part{j}")
        nodes += [helper.make_node("Sum", parts, [p + "sum"]),
                  helper.make_node("Mul", [p + "sum", p + "alpha"], [p + "scaled"]),
                  helper.make_node("Add", [p + "scaled", p + "bias"], [p + "den"]),
                  helper.make_node("Pow", [p + "den", p + "beta"], [p + "pow"]),
                  helper.make_node("Div", [x, p + "pow"], [y])]
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    return m


def build_any(nodes, feeds, inits=None, opset=17):
    """``build`` for any opset: before 13 the objective's ReduceSum takes its axes as an attribute."""
    m = build(nodes, feeds, inits, opset=opset)
    if opset < 13:
        for nd in m.graph.node:
            if nd.output[0] == "obj" and nd.op_type == "ReduceSum":
                axes = next(numpy_helper.to_array(t) for t in m.graph.initializer if t.name == nd.input[1])
                del nd.input[1:]
                nd.attribute.append(helper.make_attribute("axes", [int(a) for a in axes]))
    return m


def fd_check(m, feeds, plain=None, rtol=1e-4):
    """Analytic gradient of ``m`` against the float64 finite difference of ``plain`` (default
    ``m``); returns the largest error relative to the largest gradient entry."""
    g = analytic(m, feeds)
    plain = m if plain is None else plain
    fd = elementwise_fd(plain, "obj", feeds, "x")
    np.testing.assert_allclose(g, fd, rtol=rtol, atol=rtol * (1e-2 + np.abs(fd).max()))
    return float(np.abs(g - fd).max() / np.abs(fd).max())


def lrn_check(nodes, feeds, inits=None, opset=17):
    m = build_any(nodes, feeds, inits, opset=opset)
    plain = _decompose_lrn(m)
    np.testing.assert_allclose(_session(plain).run(["obj"], feeds)[0], _session(m).run(["obj"], feeds)[0],
                               rtol=1e-5, atol=1e-5)
    return fd_check(m, feeds, plain)


@pytest.mark.parametrize("size,alpha,beta,bias", [(5, 1e-4, 0.75, 1.0), (3, 0.5, 0.6, 2.0),
                                                  (5, 2.0, 0.75, 1.5), (1, 0.3, 1.0, 1.0)])
def test_lrn(size, alpha, beta, bias):
    # a large alpha makes the cross-channel term matter (onnxruntime runs odd sizes only)
    x = rnd((2, 6, 3, 4), 1, scale=1.5)
    lrn_check([node("LRN", ["x"], size=size, alpha=alpha, beta=beta, bias=bias)], {"x": x})


def test_lrn_opset9_alexnet_pattern():
    # Conv -> Relu -> LRN -> MaxPool as in the onnx zoo's AlexNet / Inception v1, at opset 9
    nodes = [node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             node("Relu", ["c"], ["r"]), node("LRN", ["r"], ["n"], size=3, alpha=0.2, beta=0.75, bias=1.0),
             node("MaxPool", ["n"], kernel_shape=[2, 2], strides=[2, 2])]
    lrn_check(nodes, {"x": rnd((2, 3, 4, 4), 2)}, {"w": rnd((5, 3, 3, 3), 3)}, opset=9)


def _gelu(x, approximate="none"):
    import math

    if approximate == "tanh":
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


def _shrink(x, lambd=0.5, bias=0.0):
    return np.where(x > lambd, x - bias, np.where(x < -lambd, x + bias, 0.0))


def numpy_fd_check(op, attrs, f, x, opset):
    """For ops that neither float64 engine runs faithfully (onnxruntime lacks Gelu-20 in float64
    and computes Shrink's float64 step in float32; the reference evaluator's Erf is float32):
    finite differences of the float64 formula ``f``, after checking that onnxruntime's forward
    agrees with it."""
    m = build([node(op, ["x"], **attrs)], {"x": x}, opset=opset)
    np.testing.assert_allclose(_session(m).run(["y"], {"x": x})[0], f(x.astype(np.float64), **attrs),
                               rtol=1e-5, atol=1e-6)
    R = numpy_helper.to_array(next(t for t in m.graph.initializer if t.name == "R")).astype(np.float64)
    x64, h = x.astype(np.float64), 1e-6
    fd = (f(x64 + h, **attrs) - f(x64 - h, **attrs)) / (2 * h) * R
    g = analytic(m, {"x": x})
    np.testing.assert_allclose(g, fd, rtol=1e-4, atol=1e-5)
    return float(np.abs(g - fd).max() / np.abs(fd).max())


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_opset20(approximate):
    numpy_fd_check("Gelu", {"approximate": approximate}, _gelu, rnd((2, 3, 4), 3, scale=2.0), 20)


def test_shrink():
    x = rnd((2, 3, 4), 4, scale=2.0)
    x = np.where(np.abs(np.abs(x) - 0.5) < 1e-2, x + 0.05, x).astype(np.float32)
    numpy_fd_check("Shrink", {"lambd": 0.5, "bias": 0.2}, _shrink, x, 18)


@pytest.mark.parametrize("op,attrs,shift", [
    ("Celu", {"alpha": 0.7}, 0.0), ("ThresholdedRelu", {"alpha": 0.4}, 0.0), ("Mish", {}, 0.0),
])
def test_more_activations(op, attrs, shift):
    x = rnd((2, 3, 4), 4, scale=2.0)
    # keep clear of the kinks, where a finite difference straddles two slopes
    for kink in (attrs.get("alpha", 0.0) if op == "ThresholdedRelu" else 0.0, 0.0):
        x = np.where(np.abs(x - kink) < 1e-2, x + 0.05, x).astype(np.float32)
    gradcheck([node(op, ["x"], **attrs)], {"x": x}, opset=18)


@pytest.mark.parametrize("op,mode", [("DepthToSpace", "DCR"), ("DepthToSpace", "CRD"),
                                     ("SpaceToDepth", None)])
def test_depth_space(op, mode):
    attrs = {"blocksize": 2}
    if mode:
        attrs["mode"] = mode
    shape = (2, 8, 2, 3) if op == "DepthToSpace" else (2, 2, 4, 6)
    gradcheck([node(op, ["x"], ["d"], **attrs), node("Tanh", ["d"])], {"x": rnd(shape, 5)})


def test_channel_shuffle_and_split_opset18():
    # ShuffleNet v2: split the channels in two (num_outputs, opset 18), process one half,
    # concatenate and shuffle by Reshape -> Transpose -> Reshape
    nodes = [node("Split", ["x"], ["a", "b"], axis=1, num_outputs=2), node("Tanh", ["b"], ["bt"]),
             node("Concat", ["a", "bt"], ["c"], axis=1), node("Reshape", ["c", "s5"], ["r"]),
             node("Transpose", ["r"], ["t"], perm=[0, 2, 1, 3, 4]), node("Reshape", ["t", "s4"], ["u"]),
             node("Sigmoid", ["u"])]
    gradcheck(nodes, {"x": rnd((2, 4, 3, 3), 6)},
              {"s5": np.array([2, 2, 2, 3, 3], np.int64), "s4": np.array([2, 4, 3, 3], np.int64)}, opset=18)


def test_silu_and_hardswish_blocks():
    # SiLU exported as Sigmoid * x, squeeze-excite gate with HardSigmoid, HardSwish
    nodes = [node("Sigmoid", ["x"], ["s"]), node("Mul", ["x", "s"], ["silu"]),
             node("GlobalAveragePool", ["silu"], ["g"]), node("HardSigmoid", ["g"], ["gate"], alpha=1 / 6, beta=0.5),
             node("Mul", ["silu", "gate"], ["se"]), node("HardSwish", ["se"])]
    gradcheck(nodes, {"x": rnd((2, 3, 4, 4), 7, scale=2.0)}, opset=14)


def test_pad_wrap_opset19():
    inits = {"p": np.array([0, 0, 1, 2, 0, 0, 2, 1], np.int64)}
    gradcheck([node("Pad", ["x", "p"], mode="wrap")], {"x": rnd((2, 2, 4, 5), 8)}, inits, opset=19)


# ---------------------------------------------------------------- old opsets (attribute forms)


OLD_FORMS = [
    # (opset, nodes, inits)
    (7, [node("Dropout", ["x"], ["d"], ratio=0.3), node("Tanh", ["d"])], {}),
    (9, [node("Slice", ["x"], ["s"], starts=[1, 0], ends=[3, 100], axes=[1, 2]), node("Tanh", ["s"])], {}),
    (10, [node("Pad", ["x"], ["p"], pads=[0, 1, 2, 0, 2, 1], mode="reflect"), node("Tanh", ["p"])], {}),
    (10, [node("Pad", ["x"], ["p"], pads=[0, 1, 0, 0, 2, 1], mode="constant", value=0.5), node("Tanh", ["p"])], {}),
    (11, [node("Split", ["x"], ["a", "b"], axis=1, split=[1, 3]), node("Mul", ["a", "b"])], {}),
    (11, [node("Unsqueeze", ["x"], ["u"], axes=[0]), node("Squeeze", ["u"], ["q"], axes=[0]),
          node("ReduceMean", ["q"], ["m"], axes=[2], keepdims=1), node("Add", ["q", "m"])], {}),
    (11, [node("Softmax", ["x"], axis=1)], {}),  # coerced to 2-D before opset 13
    (11, [node("LogSoftmax", ["x"], axis=2)], {}),
    (7, [node("Clip", ["x"], ["c"], min=-0.5, max=0.7), node("Tanh", ["c"])], {}),
    (12, [node("Clip", ["x", "lo", "hi"])], {"lo": np.array(-0.4, np.float32), "hi": np.array(0.6, np.float32)}),
    (9, [node("Flatten", ["x"], ["f"], axis=1), node("Gemm", ["f", "w", "c"], ["g"], transB=1), node("Relu", ["g"])],
     {"w": rnd((3, 12), 9), "c": rnd((3,), 10)}),
]


@pytest.mark.parametrize("opset,nodes,inits", OLD_FORMS, ids=[f"opset{o}-{n[0].op_type}" for o, n, _ in OLD_FORMS])
def test_old_opset_attribute_forms(opset, nodes, inits):
    x = rnd((2, 4, 3), 11, scale=1.2)
    x = np.where(np.abs(np.abs(x) - 0.5) < 2e-2, x + 0.05, x).astype(np.float32)
    if nodes[0].op_type == "Clip":
        x = np.where(np.abs(x - 0.7) < 2e-2, x + 0.05, x).astype(np.float32)
        x = np.where(np.abs(x - 0.6) < 2e-2, x + 0.05, x).astype(np.float32)
        x = np.where(np.abs(x + 0.4) < 2e-2, x + 0.05, x).astype(np.float32)
    fd_check(build_any(nodes, {"x": x}, inits, opset=opset), {"x": x})


OLD_FORMS_4D = [
    (7, [node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y0"], epsilon=1e-3), node("Tanh", ["y0"])],
     {"s": rnd((4,), 1), "b": rnd((4,), 2), "m": rnd((4,), 3), "v": np.abs(rnd((4,), 4)) + 0.5}),
    (7, [node("AveragePool", ["x"], ["p"], kernel_shape=[2, 2], pads=[1, 1, 0, 0], count_include_pad=1),
         node("Tanh", ["p"])], {}),
    (8, [node("MaxPool", ["x"], kernel_shape=[2, 2], strides=[1, 1])], {}),
    (7, [node("Unsqueeze", ["x"], ["u"], axes=[1]), node("Squeeze", ["u"], ["q"], axes=[1]),
         node("Sum", ["q", "x"], ["s"]), node("Concat", ["s", "x"], ["c"], axis=1), node("Tanh", ["c"])], {}),
    (7, [node("Reshape", ["x", "sh"], ["r"]), node("Softmax", ["r"], axis=1)], {"sh": np.array([2, -1], np.int64)}),
    (8, [node("Transpose", ["x"], ["t"], perm=[0, 2, 3, 1]), node("Flatten", ["t"], ["f"], axis=1),
         node("Gemm", ["f", "w", "c"], transB=1, alpha=0.5, beta=2.0)], {"w": rnd((3, 48), 5), "c": rnd((3,), 6)}),
]


@pytest.mark.parametrize("opset,nodes,inits", OLD_FORMS_4D,
                         ids=[f"opset{o}-{n[0].op_type}" for o, n, _ in OLD_FORMS_4D])
def test_old_opset_forms_4d(opset, nodes, inits):
    x = rnd((2, 4, 3, 4), 11, scale=1.2)
    fd_check(build_any(nodes, {"x": x}, inits, opset=opset), {"x": x})


def test_lrn_opset7():
    x = rnd((2, 4, 3, 4), 11, scale=1.2)
    lrn_check([node("LRN", ["x"], ["l"], size=3, alpha=0.5, beta=0.75), node("Tanh", ["l"])], {"x": x}, opset=7)


def test_rule_table_covers_real_model_ops():
    wanted = """LRN Gelu Celu ThresholdedRelu Mish Shrink DepthToSpace SpaceToDepth HardSwish
    HardSigmoid Erf LayerNormalization Split Concat Pad Slice ReduceMean Softmax LogSoftmax Dropout
    Identity Squeeze Unsqueeze Flatten Clip GlobalAveragePool AveragePool""".split()
    assert sorted(set(wanted) - set(RULES)) == []


def test_lrn_model_is_differentiable():
    m = build([node("LRN", ["x"], size=3)], {"x": rnd((1, 4, 2, 2))})
    assert differentiability(m) == []


# ---------------------------------------------------------------- newer opsets (18-21)


def test_average_pool_with_dilations_opset19():
    gradcheck([node("AveragePool", ["x"], kernel_shape=[2, 2], dilations=[2, 1], strides=[1, 2], pads=[1, 0, 0, 1],
                    count_include_pad=0)], {"x": rnd((2, 2, 5, 6), 12)}, opset=19)


@pytest.mark.parametrize("opset", [14, 18, 21])
def test_mobilenet_v3_block_across_opsets(opset):
    # squeeze-excite with ReduceMean (axes as attribute before 18, as input from 18), Squeeze /
    # Unsqueeze with axes inputs, HardSwish, HardSigmoid gate, Pad and Split (num_outputs from 18)
    mean_axes = {"axes": [2, 3]} if opset < 18 else {}
    mean_in = ["x"] if opset < 18 else ["x", "ax23"]
    split = (node("Split", ["se"], ["p", "q"], axis=1, num_outputs=2) if opset >= 18 else
             node("Split", ["se", "halves"], ["p", "q"], axis=1))
    nodes = [node("ReduceMean", mean_in, ["m"], keepdims=1, **mean_axes),
             node("Squeeze", ["m", "ax23"], ["s"]), node("HardSwish", ["s"], ["h"]),
             node("Unsqueeze", ["h", "ax23"], ["u"]), node("HardSigmoid", ["u"], ["gate"], alpha=1 / 6, beta=0.5),
             node("Mul", ["x", "gate"], ["se"]), split, node("Pad", ["q", "pads"], ["qp"], mode="edge"),
             node("Slice", ["qp", "st", "en", "ax2", "neg"], ["qs"]), node("Concat", ["p", "qs"], axis=1)]
    inits = {"ax23": np.array([2, 3], np.int64), "halves": np.array([2, 2], np.int64),
             "pads": np.array([0, 0, 1, 0, 0, 0, 1, 0], np.int64), "st": np.array([-2], np.int64),
             "en": np.array([0], np.int64), "ax2": np.array([2], np.int64), "neg": np.array([-1], np.int64)}
    gradcheck(nodes, {"x": rnd((2, 4, 3, 3), 13, scale=2.0)}, inits, opset=opset)


# ---------------------------------------------------------------- gathers and scatters


def test_gather_elements_and_gather_nd():
    idx = np.array([[[2, 0, 1, 2], [0, 0, -1, 1]], [[1, 1, 1, 0], [2, -3, 0, 1]]], np.int64)  # repeats
    gradcheck([node("GatherElements", ["x", "i"], axis=1)], {"x": rnd((2, 3, 4), 1)}, {"i": idx}, opset=18)
    gradcheck([node("GatherND", ["x", "i"])], {"x": rnd((2, 3, 4), 2)},
              {"i": np.array([[0, 1], [1, 2], [0, 1]], np.int64)}, opset=18)


@pytest.mark.parametrize("reduction", ["none", "add"])
def test_scatter_elements_and_nd(reduction):
    x, u = rnd((2, 3, 4), 3), rnd((2, 2, 4), 4)
    idx = np.array([[[2, 0, 1, 2], [0, 1, 2, 1]], [[1, 2, 0, 0], [2, 0, 1, 1]]], np.int64)  # unique per column
    for wrt in ("x", "u"):
        gradcheck([node("ScatterElements", ["x", "i", "u"], axis=1, reduction=reduction)], {"x": x, "u": u},
                  {"i": idx}, wrt=wrt, opset=18)
        gradcheck([node("ScatterND", ["x", "j", "v"], reduction=reduction)], {"x": x, "v": rnd((2, 4), 5)},
                  {"j": np.array([[0, 2], [1, 0]], np.int64)}, wrt="x" if wrt == "x" else "v", opset=18)


def test_gather_elements_before_opset16_is_a_clear_blocker():
    m = build([node("GatherElements", ["x", "i"], axis=0)], {"x": rnd((2, 3), 1)},
              {"i": np.array([[1, 0, 1]], np.int64)}, opset=13)
    ((name, op, reason),) = differentiability(m)
    assert op == "GatherElements" and "opset >= 16" in reason


@pytest.mark.parametrize("equation,shapes", [
    ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)]), ("nchw->nhwc", [(2, 3, 2, 4)]), ("bi,bi->b", [(2, 5), (2, 5)]),
    ("bij->b", [(2, 3, 4)]), ("bij,jk", [(2, 3, 4), (4, 5)]), ("bci,c->bi", [(2, 3, 4), (3,)]),
])
def test_einsum(equation, shapes):
    feeds = {f"x{k}" if k else "x": rnd(s, 20 + k) for k, s in enumerate(shapes)}
    names = list(feeds)
    for wrt in names:
        gradcheck([node("Einsum", names, equation=equation)], feeds, wrt=wrt)


def test_einsum_with_a_diagonal_is_a_clear_blocker():
    m = build([node("Einsum", ["x"], equation="bii->bi")], {"x": rnd((2, 3, 3), 1)})
    ((_, op, reason),) = differentiability(m)
    assert op == "Einsum" and "repeated indices" in reason


def _computed_flat_gather(reverse: bool):
    """x (N, 3, 2, 2) flattened and gathered back by indices made from its own size at run time,
    as torch.export writes a batch-dependent flatten (convnext_tiny's as_strided); ``reverse``:
    negative indices -1 ... -size, so every element moves."""
    nodes = [node("Reshape", ["x", "flat"], ["f"]), node("Shape", ["f"], ["fs"]),
             node("Squeeze", ["fs", "zero1"], ["size"]),
             node("Range", ["zero", "size", "one"], ["r"])]
    if reverse:
        nodes += [node("Add", ["r", "one"], ["r1"]), node("Neg", ["r1"], ["i"])]
    else:
        nodes += [node("Identity", ["r"], ["i"])]
    nodes += [node("Gather", ["f", "i"], ["g"], axis=0), node("Reshape", ["g", "back"], ["gr"]),
              node("Tanh", ["gr"])]
    inits = {"flat": np.array([-1], np.int64), "zero1": np.array([0], np.int64), "zero": np.array(0, np.int64),
             "one": np.array(1, np.int64), "back": np.array([-1, 12], np.int64)}
    return nodes, inits


@pytest.mark.parametrize("reverse", [False, True])
def test_gather_with_indices_computed_at_run_time_over_a_dynamic_axis(reverse):
    nodes, inits = _computed_flat_gather(reverse)
    gradcheck(nodes, {"x": rnd((2, 3, 2, 2), 6)}, inits, opset=18, dynamic=True)


def test_gather_with_constant_indices_of_rank_2_and_a_computed_scalar_index():
    idx = np.array([[3, 0], [-1, 3], [1, 1]], np.int64)  # repeats and a negative index
    gradcheck([node("Gather", ["x", "i"], axis=1)], {"x": rnd((2, 4, 3), 7)}, {"i": idx}, opset=18)
    # a scalar index computed from the input's shape: the last position of axis 2
    nodes = [node("Shape", ["x"], ["s"]), node("Gather", ["s", "two"], ["n"], axis=0),
             node("Sub", ["n", "one"], ["last"]), node("Gather", ["x", "last"], ["g"], axis=2), node("Tanh", ["g"])]
    gradcheck(nodes, {"x": rnd((2, 4, 3), 8)}, {"two": np.array(2, np.int64), "one": np.array(1, np.int64)},
              opset=18, dynamic=True)


def test_gather_with_computed_indices_before_opset16_is_a_clear_blocker():
    nodes, inits = _computed_flat_gather(False)
    m = build(nodes, {"x": rnd((2, 3, 2, 2), 6)}, inits, opset=13, dynamic=True)
    ((name, op, reason),) = differentiability(m)
    assert op == "Gather" and "opset >= 16" in reason
