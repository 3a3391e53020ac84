"""ApproxModel: ONNX graphs with Conv/Gemm/MatMul nodes on the Ax-FPM kernels."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from auditor.axfpm import conv2d, gemm, matmul
from auditor.axfpm.execute import ApproxModel, assign_node_names
from auditor.errors import AuditorError


def _init(name, arr):
    return numpy_helper.from_array(np.asarray(arr, dtype=np.float32), name)


def _params(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "W1": rng.standard_normal((4, 1, 3, 3)) * 0.5,
        "B1": rng.standard_normal(4) * 0.1,
        "W2": rng.standard_normal((10, 4 * 4 * 4)) * 0.2,
        "B2": rng.standard_normal(10) * 0.1,
    }


def small_cnn(opset=13, names=("", "", "", "", ""), constant_gemm_weight=False):
    """Conv -> Relu -> MaxPool -> Flatten -> Gemm on (N, 1, 8, 8) input."""
    p = _params()
    nodes = [
        helper.make_node("Conv", ["x", "W1", "B1"], ["c1"], pads=[1, 1, 1, 1],
                         kernel_shape=[3, 3], name=names[0]),
        helper.make_node("Relu", ["c1"], ["r1"], name=names[1]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2],
                         name=names[2]),
        helper.make_node("Flatten", ["p1"], ["f1"], name=names[3]),
        helper.make_node("Gemm", ["f1", "W2", "B2"], ["y"], transB=1, name=names[4]),
    ]
    inits = [_init("W1", p["W1"]), _init("B1", p["B1"]), _init("B2", p["B2"])]
    if constant_gemm_weight:
        nodes.insert(0, helper.make_node("Constant", [], ["W2"],
                                         value=numpy_helper.from_array(
                                             p["W2"].astype(np.float32), "W2v")))
    else:
        inits.append(_init("W2", p["W2"]))
    graph = helper.make_graph(
        nodes, "small_cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    return model


def _ort(model, x, outputs=None):
    m = onnx.ModelProto()
    m.CopyFrom(model)
    graph_outputs = {o.name for o in m.graph.output}
    for name in outputs or []:
        if name not in graph_outputs:
            m.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(outputs, {"x": x})


def _x(n=5, seed=1):
    return np.random.default_rng(seed).random((n, 1, 8, 8)).astype(np.float32)


def test_exact_variant_matches_onnxruntime():
    model = small_cnn()
    am = ApproxModel(model, variant="exact")
    assert am.approx_nodes == ("Conv_0", "Gemm_4")
    for n in (1, 5):  # dynamic batch
        x = _x(n)
        ref_y, ref_c1 = _ort(model, x, ["y", "c1"])
        out = am.run(x, outputs=["c1", "r1"])
        assert set(out) == {"y", "c1", "r1"}
        np.testing.assert_allclose(out["y"], ref_y, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(out["c1"], ref_c1, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(out["r1"], np.maximum(out["c1"], 0))


def test_approx_model_equals_manual_composition():
    model = small_cnn()
    p = {k: v.astype(np.float32) for k, v in _params().items()}
    x = _x(3)
    for variant in ("da-reference", "flat-ama5"):
        am = ApproxModel(model, variant=variant)
        c1 = conv2d(x, p["W1"], p["B1"], (1, 1), (1, 1, 1, 1), (1, 1), 1, variant)
        r1 = np.maximum(c1, 0)
        p1 = r1.reshape(3, 4, 4, 2, 4, 2).max(axis=(3, 5))
        y = gemm(p1.reshape(3, -1), p["W2"], p["B2"], 0, 1, variant=variant)
        out = am.run(x, outputs=["c1", "p1"])
        np.testing.assert_array_equal(out["c1"], c1)
        np.testing.assert_array_equal(out["p1"], p1)
        np.testing.assert_array_equal(out["y"], y)
        # approximation is visible
        assert not np.allclose(out["y"], _ort(model, x)[0], atol=1e-3)


def test_subset_of_nodes_and_plain_run():
    model = small_cnn()
    x = _x(4)
    ref = _ort(model, x)[0]
    plain = ApproxModel(model, approx_nodes=set(), variant="da-reference")
    np.testing.assert_array_equal(plain.run(x)["y"], ref)
    only_gemm = ApproxModel(model, approx_nodes={"Gemm_4"}, variant="da-reference")
    assert only_gemm.approx_nodes == ("Gemm_4",)
    out = only_gemm.run(x, outputs=["f1"])
    p = _params()
    np.testing.assert_array_equal(
        out["y"], gemm(out["f1"], p["W2"].astype(np.float32), p["B2"].astype(np.float32), 0, 1))


def test_node_names_assigned_and_unique():
    model = small_cnn(names=("conv", "", "dup", "dup", "Gemm_4x"))
    names = assign_node_names(model.graph)
    assert names == ["conv", "Relu_1", "dup", "dup_3", "Gemm_4x"]
    am = ApproxModel(model, variant="exact")
    assert am.node_names == names
    assert am.node_index["dup_3"] == 3
    assert am.approx_nodes == ("conv", "Gemm_4x")
    with pytest.raises(AuditorError, match="no node named"):
        ApproxModel(model, approx_nodes={"Conv_0"})
    with pytest.raises(AuditorError, match="Relu"):
        ApproxModel(model, approx_nodes={"Relu_1"})


def test_constant_node_weight():
    model = small_cnn(constant_gemm_weight=True)
    x = _x(2)
    am = ApproxModel(model, variant="exact")
    assert am.approx_nodes == ("Conv_1", "Gemm_5")
    np.testing.assert_allclose(am.run(x)["y"], _ort(model, x)[0], rtol=1e-5, atol=1e-5)


def test_non_constant_weight_is_rejected():
    nodes = [
        helper.make_node("Relu", ["w_in"], ["w"]),
        helper.make_node("Conv", ["x", "w"], ["y"], name="the_conv"),
    ]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8]),
         helper.make_tensor_value_info("w_in", TensorProto.FLOAT, [4, 1, 3, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    with pytest.raises(AuditorError, match="the_conv"):
        ApproxModel(model)


def test_matmul_node_and_multi_segment_graph():
    rng = np.random.default_rng(3)
    w1 = rng.standard_normal((6, 8)).astype(np.float32)
    w2 = rng.standard_normal((8, 3)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("Tanh", ["h"], ["t"]),
        helper.make_node("Add", ["t", "h"], ["s"]),  # reads an approximated output twice
        helper.make_node("MatMul", ["w2t", "s2"], ["y"]),  # weight is input A
        helper.make_node("Transpose", ["s"], ["s2"], perm=[1, 0]),
        helper.make_node("Transpose", ["w2"], ["w2t"], perm=[1, 0]),  # not constant!
    ]
    graph = helper.make_graph(
        nodes, "mm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("t", TensorProto.FLOAT, None)],
        [_init("w1", w1), _init("w2", w2)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    x = rng.standard_normal((4, 6)).astype(np.float32)
    am = ApproxModel(model, approx_nodes={"MatMul_0"}, variant="da-reference")
    out = am.run(x)
    h = matmul(x, w1, "da-reference")
    t = np.tanh(h)
    np.testing.assert_allclose(out["t"], t, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out["y"], w2.T @ (t + h).T, rtol=1e-4, atol=1e-4)
    with pytest.raises(AuditorError, match="MatMul_3"):
        ApproxModel(model, approx_nodes={"MatMul_3"})
    # weight as operand A (constant) with the activation as B
    graph2 = helper.make_graph(
        [helper.make_node("MatMul", ["wa", "x"], ["y"])], "mm2",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [6, "N"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [_init("wa", w1.T)],
    )
    model2 = helper.make_model(graph2, opset_imports=[helper.make_opsetid("", 13)])
    am2 = ApproxModel(model2, approx_nodes={"MatMul_0"}, variant="da-reference")
    np.testing.assert_array_equal(am2.run(x.T.copy())["y"],
                                  matmul(w1.T, x.T, "da-reference", activation="b"))


def test_bad_inputs():
    with pytest.raises(AuditorError, match="opset"):
        ApproxModel(small_cnn(opset=10))
    with pytest.raises(AuditorError):
        ApproxModel(small_cnn(), variant="bogus")
    am = ApproxModel(small_cnn(), variant="exact")
    with pytest.raises(AuditorError, match="no tensor"):
        am.run(_x(1), outputs=["nope"])
    with pytest.raises(AuditorError, match="unknown model input"):
        am.run({"z": _x(1)})


def test_conv_attributes_and_gemm_weight_as_a_match_onnxruntime():
    rng = np.random.default_rng(5)
    w1 = rng.standard_normal((6, 2, 3, 3)).astype(np.float32)
    w2 = rng.standard_normal((6, 2, 3, 3)).astype(np.float32)  # group 3, 2 channels each
    wa = rng.standard_normal((7, 6 * 3 * 4)).astype(np.float32)  # Gemm A = weight (transA=0)
    c = rng.standard_normal((7, 1)).astype(np.float32)
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "w1"], ["c1"], auto_pad="SAME_UPPER", strides=[2, 2]),
        n("Conv", ["c1", "w2"], ["c2"], group=3, dilations=[2, 1], pads=[2, 0, 1, 2]),
        n("Flatten", ["c2"], ["f"]),
        n("Gemm", ["wa", "f"], ["y"], transB=1, alpha=0.5, beta=2.0),  # y = 0.5 wa f^T + 2 c
        n("Conv", ["x", "w1"], ["c3"], auto_pad="SAME_LOWER", strides=[2, 1]),
    ]
    graph = helper.make_graph(
        nodes, "attrs",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 7, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("c3", TensorProto.FLOAT, None)],
        [_init("w1", w1), _init("w2", w2), _init("wa", wa), _init("c", c)],
    )
    graph.node[3].input.append("c")
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    x = rng.standard_normal((3, 2, 7, 8)).astype(np.float32)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ref_y, ref_c3 = sess.run(None, {"x": x})
    am = ApproxModel(model, variant="exact")
    assert len(am.approx_nodes) == 4
    out = am.run(x)
    assert out["y"].shape == ref_y.shape and out["c3"].shape == ref_c3.shape
    np.testing.assert_allclose(out["y"], ref_y, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out["c3"], ref_c3, rtol=1e-5, atol=1e-5)
    # approximate: the Gemm's activation is its B input (f), the weight is A
    am = ApproxModel(model, variant="da-reference")
    out = am.run(x, outputs=["f"])
    expect = gemm(wa, out["f"], c, 0, 1, 0.5, 2.0, "da-reference", activation="b")
    np.testing.assert_array_equal(out["y"], expect)
