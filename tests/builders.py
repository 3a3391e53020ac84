"""Small ONNX models built with onnx.helper for the tests (no files, no downloads)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def make_model(nodes, inits, inp="x", in_shape=("N", 1, 8, 8), out="y", out_shape=None, opset=13,
               extra_outputs=()):
    graph = helper.make_graph(
        nodes, "test",
        [helper.make_tensor_value_info(inp, TensorProto.FLOAT, list(in_shape))],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, out_shape)]
        + [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in extra_outputs],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def tiny_cnn(rng=None, integer=True, opset=13):
    """Conv(1->4, 3x3, pad 1)-Relu-MaxPool(2)-Flatten-Gemm(64->5, transB)-Relu-Gemm(5->3).

    With integer=True, weights and biases are small integers so float32 arithmetic is exact.
    """
    rng = rng or np.random.default_rng(0)
    f = (lambda s: rng.integers(-2, 3, size=s).astype(np.float32)) if integer else \
        (lambda s: rng.normal(size=s).astype(np.float32))
    inits = {"w1": f((4, 1, 3, 3)), "b1": f((4,)), "w2": f((5, 64)), "b2": f((5,)),
             "w3": f((5, 3)), "b3": f((3,))}
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2], name="pool1"),
        helper.make_node("Flatten", ["p1"], ["f1"], name="flat"),
        helper.make_node("Gemm", ["f1", "w2", "b2"], ["g1"], transB=1, name="fc1"),
        helper.make_node("Relu", ["g1"], ["r2"], name="relu2"),
        helper.make_node("Gemm", ["r2", "w3", "b3"], ["y"], name="fc2"),
    ]
    return make_model(nodes, inits, out_shape=["N", 3], opset=opset), inits


def tiny_cnn_numpy(x, inits):
    """Independent float64 numpy forward of tiny_cnn: returns (logits, {tensor: value})."""
    w1, b1 = inits["w1"].astype(np.float64), inits["b1"].astype(np.float64)
    n = len(x)
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    c1 = np.zeros((n, 4, 8, 8))
    for m in range(4):
        for i in range(3):
            for j in range(3):
                c1[:, m] += w1[m, 0, i, j] * xp[:, 0, i:i + 8, j:j + 8]
        c1[:, m] += b1[m]
    r1 = np.maximum(c1, 0)
    p1 = r1.reshape(n, 4, 4, 2, 4, 2).max(axis=(3, 5))
    f1 = p1.reshape(n, -1)
    g1 = f1 @ inits["w2"].T.astype(np.float64) + inits["b2"]
    r2 = np.maximum(g1, 0)
    y = r2 @ inits["w3"].astype(np.float64) + inits["b3"]
    return y, {"x": x, "r1": r1, "p1": p1, "f1": f1, "r2": r2}


def zoo_model():
    """A model with the awkward bits torch exporters produce: Reshape via a Constant, grouped conv,
    MaxPool with ceil_mode, Clip with min/max inputs (ReLU6), Gemm with transB, Flatten."""
    rng = np.random.default_rng(1)
    inits = {
        "w1": rng.normal(size=(4, 1, 3, 3)).astype(np.float32),
        "w2": rng.normal(size=(4, 2, 3, 3)).astype(np.float32),  # group=2
        "lo": np.array(0.0, np.float32), "hi": np.array(6.0, np.float32),
        "wf": rng.normal(size=(10, 64)).astype(np.float32), "bf": np.zeros(10, np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Clip", ["c1", "lo", "hi"], ["a1"]),
        helper.make_node("MaxPool", ["a1"], ["p1"], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1),
        helper.make_node("Conv", ["p1", "w2"], ["c2"], group=2, pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["a2"]),
        helper.make_node("Constant", [], ["shape"], value=numpy_helper.from_array(np.array([-1, 64], np.int64))),
        helper.make_node("Reshape", ["a2", "shape"], ["f"]),
        helper.make_node("Gemm", ["f", "wf", "bf"], ["y"], transB=1),
    ]
    return make_model(nodes, inits, in_shape=("N", 1, 8, 8), out_shape=["N", 10])


def random_activations(layers, n: int, seed: int, zero_fraction: float) -> dict:
    """{layer input: (n, ...) float32 normal values, about ``zero_fraction`` of them zeros} for
    compute layers, drawn in layer order from one seeded generator (each input once)."""
    rng = np.random.default_rng(seed)
    acts = {}
    for layer in layers:
        if layer.input not in acts:
            a = rng.normal(size=(n,) + tuple(layer.input_shape)).astype(np.float32)
            a[rng.random(a.shape) < zero_fraction] = 0.0
            acts[layer.input] = a
    return acts
