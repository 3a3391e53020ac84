"""Load-time normalisation of real export patterns (auditor.model.load.prepare, auditor.model.fold):
shape-dependent subgraphs folded with the batch kept dynamic, dynamic spatial dims fixed by the
scenario, old opsets upgraded after folding, float16 and int8 QDQ models, constants through
Identity, unused opset imports.  Every pattern is built with onnx.helper, loaded, audited end to
end (white-box sparsity attack and PGD) and its input gradient checked by finite differences."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import auditor
from auditor.errors import AuditorError
from auditor.grad import add_input_gradient, differentiability
from auditor.grad.check import directional_check
from auditor.model.load import constant_value, load_model, load_notes, prepare
from auditor.grad.objectives import CrossEntropy, append_objective
from auditor.model.rewrite.preprocess import Preprocessing
from auditor.runtime.session import OnnxClassifier

ROOT = Path(__file__).resolve().parents[2]
F = TensorProto.FLOAT
RNG = np.random.default_rng(0)


def _w(*shape, scale=None):
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    s = scale if scale is not None else np.sqrt(2.0 / fan_in)
    return (RNG.standard_normal(shape) * s).astype(np.float32)


def _init(name, arr):
    return numpy_helper.from_array(np.asarray(arr), name)


def _i64(name, values):
    return _init(name, np.asarray(values, dtype=np.int64))


def _model(nodes, inits, inp_shape, out_shape, opset=13, in_type=F, ir=None, extra_opsets=()):
    g = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("x", in_type, inp_shape)],
                          [helper.make_tensor_value_info("logits", in_type, out_shape)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)] + list(extra_opsets))
    m.ir_version = ir if ir is not None else min(m.ir_version, 8)
    return m


def _conv_relu(prefix, x, cin, cout, k=3, pad=1, stride=1):
    nodes = [helper.make_node("Conv", [x, prefix + "_w", prefix + "_b"], [prefix + "_c"], kernel_shape=[k, k],
                              pads=[pad] * 4, strides=[stride, stride]),
             helper.make_node("Relu", [prefix + "_c"], [prefix + "_r"])]
    inits = [_init(prefix + "_w", _w(cout, cin, k, k)), _init(prefix + "_b", _w(cout, scale=0.1))]
    return nodes, inits, prefix + "_r"


# ------------------------------------------------------------------------- the export patterns


def dynamic_reshape():
    """x.reshape(x.shape[0], -1) before the FC: Shape -> Gather -> Unsqueeze -> Concat -> Reshape."""
    n, i, r = _conv_relu("c1", "x", 1, 4)
    n += [helper.make_node("Shape", [r], ["s"]),
          helper.make_node("Gather", ["s", "zero"], ["b"], axis=0),
          helper.make_node("Unsqueeze", ["b", "ax0"], ["b1"]),
          helper.make_node("Concat", ["b1", "minus1"], ["target"], axis=0),
          helper.make_node("Reshape", [r, "target"], ["flat"]),
          helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], transB=1)]
    i += [_i64("zero", 0), _i64("ax0", [0]), _i64("minus1", [-1]), _init("fc_w", _w(10, 4 * 8 * 8)),
          _init("fc_b", _w(10, scale=0.1))]
    return _model(n, i, ["N", 1, 8, 8], ["N", 10])


def computed_pad():
    """ResNet option-A shortcut F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, p, p)) with the pads
    computed by ops from the tensor's rank, as the torch exporter writes it."""
    n, i, r = _conv_relu("c1", "x", 1, 4)
    n += [helper.make_node("Slice", [r, "st", "en", "axs", "stp"], ["sub"]),
          # pads = reshape(transpose(reshape(concat([0,0,0,0,p,p], zeros(2*rank - 6)), (-1, 2))[::-1]), -1)
          helper.make_node("Shape", ["sub"], ["shp"]),
          helper.make_node("Size", ["shp"], ["rank"]),
          helper.make_node("Mul", ["rank", "two"], ["r2"]),
          helper.make_node("Sub", ["r2", "six"], ["nz"]),
          helper.make_node("Unsqueeze", ["nz", "ax0"], ["nz1"]),
          helper.make_node("ConstantOfShape", ["nz1"], ["zeros"], value=helper.make_tensor("v", TensorProto.INT64, [1], [0])),
          helper.make_node("Concat", ["given", "zeros"], ["pp"], axis=0),
          helper.make_node("Reshape", ["pp", "m12"], ["pp2"]),
          helper.make_node("Slice", ["pp2", "rs", "re", "ax0", "rstep"], ["rev"]),
          helper.make_node("Transpose", ["rev"], ["tr"], perm=[1, 0]),
          helper.make_node("Reshape", ["tr", "minus1"], ["pads"]),
          helper.make_node("Pad", ["sub", "pads", "padval"], ["padded"], mode="constant")]
    n2, i2, _ = _conv_relu("c2", r, 4, 8, stride=2)
    n += n2
    n += [helper.make_node("Add", ["padded", "c2_r"], ["sum"]),
          helper.make_node("GlobalAveragePool", ["sum"], ["gap"]),
          helper.make_node("Flatten", ["gap"], ["flat"]),
          helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], transB=1)]
    i += i2 + [_i64("st", [0, 0]), _i64("en", [2 ** 62, 2 ** 62]), _i64("axs", [2, 3]), _i64("stp", [2, 2]),
               _i64("two", 2), _i64("six", 6), _i64("ax0", [0]), _i64("given", [0, 0, 0, 0, 2, 2]),
               _i64("m12", [-1, 2]), _i64("rs", [-1]), _i64("re", [-(2 ** 62)]), _i64("rstep", [-1]),
               _i64("minus1", [-1]), _init("padval", np.array(0, np.float32)),
               _init("fc_w", _w(10, 8)), _init("fc_b", _w(10, scale=0.1))]
    return _model(n, i, ["N", 1, 8, 8], ["N", 10])


def channel_split():
    """shufflenet_v2: Slice channel split with starts/ends computed from the channel count,
    then a channel shuffle by Reshape/Transpose/Reshape with computed targets."""
    n, i, r = _conv_relu("c1", "x", 1, 8)
    n += [helper.make_node("Shape", [r], ["s"]),
          helper.make_node("Gather", ["s", "one"], ["c"], axis=0),
          helper.make_node("Div", ["c", "two"], ["half"]),
          helper.make_node("Unsqueeze", ["half", "ax0"], ["half1"]),
          helper.make_node("Unsqueeze", ["c", "ax0"], ["c1"]),
          helper.make_node("Slice", [r, "zero1", "half1", "ax1"], ["left"]),
          helper.make_node("Slice", [r, "half1", "c1", "ax1"], ["right"])]
    n2, i2, r2 = _conv_relu("c2", "right", 4, 4)
    n += n2
    n += [helper.make_node("Concat", ["left", r2], ["cat"], axis=1),
          helper.make_node("Shape", ["cat"], ["cs"]),
          helper.make_node("Gather", ["cs", "zero"], ["nb"], axis=0),
          helper.make_node("Unsqueeze", ["nb", "ax0"], ["nb1"]),
          helper.make_node("Concat", ["nb1", "g2", "half1", "hw"], ["t1"], axis=0),
          helper.make_node("Reshape", ["cat", "t1"], ["r1"]),
          helper.make_node("Transpose", ["r1"], ["tr"], perm=[0, 2, 1, 3, 4]),
          helper.make_node("Concat", ["nb1", "minus1", "hw"], ["t2"], axis=0),
          helper.make_node("Reshape", ["tr", "t2"], ["shuf"])]
    n3, i3, r3 = _conv_relu("c3", "shuf", 8, 8)
    n += n3
    n += [helper.make_node("GlobalAveragePool", [r3], ["gap"]),
          helper.make_node("Flatten", ["gap"], ["flat"]),
          helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], transB=1)]
    i += i2 + i3 + [_i64("one", 1), _i64("zero", 0), _i64("two", 2), _i64("ax0", [0]), _i64("ax1", [1]),
                    _i64("zero1", [0]), _i64("g2", [2]), _i64("hw", [8, 8]), _i64("minus1", [-1]),
                    _init("fc_w", _w(10, 8)), _init("fc_b", _w(10, scale=0.1))]
    return _model(n, i, ["N", 1, 8, 8], ["N", 10])


def dynamic_hw():
    """Input N x 3 x H x W (PaddleOCR-style export), flattened with a Shape-built target."""
    n, i, r = _conv_relu("c1", "x", 3, 4, stride=2)
    n += [helper.make_node("MaxPool", [r], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
          helper.make_node("Shape", ["p"], ["s"]),
          helper.make_node("Slice", ["s", "zero1", "one1"], ["b1"]),
          helper.make_node("Concat", ["b1", "minus1"], ["target"], axis=0),
          helper.make_node("Reshape", ["p", "target"], ["flat"]),
          helper.make_node("MatMul", ["flat", "fc_w"], ["mm"]),
          helper.make_node("Add", ["mm", "fc_b"], ["logits"])]
    i += [_i64("zero1", [0]), _i64("one1", [1]), _i64("minus1", [-1]),
          _init("fc_w", _w(128, 5)), _init("fc_b", _w(5, scale=0.1))]
    return _model(n, i, ["N", 3, "H", "W"], ["N", 5])


def identity_routed():
    """The torch exporter merges identical initializers and routes them through Identity: a
    shared conv weight and BatchNormalization parameters."""
    n = [helper.make_node("Identity", ["w_shared"], ["w_a"]),
         helper.make_node("Identity", ["w_shared"], ["w_b"]),
         helper.make_node("Identity", ["ones"], ["bn_scale"]),
         helper.make_node("Identity", ["zeros"], ["bn_bias"]),
         helper.make_node("Identity", ["zeros"], ["bn_mean"]),
         helper.make_node("Identity", ["ones"], ["bn_var"]),
         helper.make_node("Conv", ["x", "w_in"], ["c0"], kernel_shape=[3, 3], pads=[1] * 4),
         helper.make_node("BatchNormalization", ["c0", "bn_scale", "bn_bias", "bn_mean", "bn_var"], ["bn"]),
         helper.make_node("Relu", ["bn"], ["r0"]),
         helper.make_node("Conv", ["r0", "w_a"], ["c1"], kernel_shape=[3, 3], pads=[1] * 4),
         helper.make_node("Relu", ["c1"], ["r1"]),
         helper.make_node("Conv", ["r1", "w_b"], ["c2"], kernel_shape=[3, 3], pads=[1] * 4),
         helper.make_node("Relu", ["c2"], ["r2"]),
         helper.make_node("GlobalAveragePool", ["r2"], ["gap"]),
         helper.make_node("Flatten", ["gap"], ["flat"]),
         helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], transB=1)]
    i = [_init("w_in", _w(4, 1, 3, 3)), _init("w_shared", _w(4, 4, 3, 3)), _init("ones", np.ones(4, np.float32)),
         _init("zeros", np.zeros(4, np.float32) + 0.05), _init("fc_w", _w(10, 4)), _init("fc_b", _w(10, scale=0.1))]
    return _model(n, i, ["N", 1, 8, 8], ["N", 10])


def float16():
    """A float16 model: input, weights and output in float16."""
    m = dynamic_reshape()
    g = m.graph
    for k, t in enumerate(g.initializer):
        if t.data_type == F:
            g.initializer[k].CopyFrom(_init(t.name, numpy_helper.to_array(t).astype(np.float16)))
    for vi in list(g.input) + list(g.output):
        vi.type.tensor_type.elem_type = TensorProto.FLOAT16
    return m


def qdq_int8():
    """onnxruntime static quantisation (QDQ format): activations quantised to uint8 around every
    Conv/MatMul, weights int8 per output channel, biases int32."""
    def q(x, s, zp, out):
        return [helper.make_node("QuantizeLinear", [x, s, zp], [out + "_q"]),
                helper.make_node("DequantizeLinear", [out + "_q", s, zp], [out])]

    def wq(name, w, axis=0):
        amax = np.abs(w).reshape(w.shape[axis], -1).max(axis=1) if axis == 0 else np.abs(w).max(axis=0)
        s = (amax / 127).astype(np.float32)
        shape = [-1] + [1] * (w.ndim - 1) if axis == 0 else [1, -1]
        qw = np.clip(np.round(w / s.reshape(shape)), -127, 127).astype(np.int8)
        return ([helper.make_node("DequantizeLinear", [name + "_int8", name + "_s", name + "_zp"], [name], axis=axis)],
                [_init(name + "_int8", qw), _init(name + "_s", s), _init(name + "_zp", np.zeros(len(s), np.int8))])

    n, i = [], [_init("s_in", np.array(1 / 255, np.float32)), _init("zp_u", np.array(0, np.uint8)),
                _init("s_a", np.array(0.02, np.float32))]
    n += q("x", "s_in", "zp_u", "xq")
    wn, wi = wq("c1_w", _w(8, 1, 3, 3))
    n += wn
    i += wi
    n += [helper.make_node("Conv", ["xq", "c1_w", "c1_b"], ["c1"], kernel_shape=[3, 3], pads=[1] * 4),
          helper.make_node("Relu", ["c1"], ["r1"])]
    i += [_init("c1_b", _w(8, scale=0.1))]
    n += q("r1", "s_a", "zp_u", "r1d")
    wn, wi = wq("c2_w", _w(8, 8, 3, 3))
    n += wn
    i += wi
    n += [helper.make_node("Conv", ["r1d", "c2_w"], ["c2"], kernel_shape=[3, 3], pads=[1] * 4, strides=[2, 2]),
          helper.make_node("Relu", ["c2"], ["r2"])]
    n += q("r2", "s_a", "zp_u", "r2d")
    wn, wi = wq("fc_w", _w(8 * 4 * 4, 10).reshape(128, 10), axis=1)
    n += wn
    i += wi
    n += [helper.make_node("Flatten", ["r2d"], ["flat"]),
          helper.make_node("MatMul", ["flat", "fc_w"], ["logits"])]
    return _model(n, i, ["N", 1, 8, 8], ["N", 10])


def unused_opsets():
    """Saved by onnxruntime: ai.onnx.ml and com.microsoft imported, no node uses them."""
    m = dynamic_reshape()
    m.opset_import.extend([helper.make_opsetid("ai.onnx.ml", 3), helper.make_opsetid("com.microsoft", 1)])
    return m


def _old(opset, listed: bool):
    """A CNN at an old opset (Reshape with a Shape-built target, Upsample at 7/9, Dropout), IR 3
    with the initializers listed as inputs or not."""
    n, i, r = _conv_relu("c1", "x", 1, 4)
    n += [helper.make_node("MaxPool", [r], ["p"], kernel_shape=[2, 2], strides=[2, 2])]
    if opset == 7:
        n += [helper.make_node("Upsample", ["p"], ["u"], scales=[1.0, 1.0, 2.0, 2.0], mode="nearest")]
    else:
        n += [helper.make_node("Upsample", ["p", "ups"], ["u"], mode="nearest")]
        i += [_init("ups", np.array([1, 1, 2, 2], np.float32))]
    n += [helper.make_node("Dropout", ["u"], ["d"], ratio=0.5),
          helper.make_node("Shape", ["d"], ["s"]),
          helper.make_node("Gather", ["s", "zero"], ["b"], axis=0),
          helper.make_node("Unsqueeze", ["b"], ["b1"], axes=[0]),
          helper.make_node("Concat", ["b1", "minus1"], ["target"], axis=0),
          helper.make_node("Reshape", ["d", "target"], ["flat"]),
          helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], transB=1)]
    i += [_i64("zero", 0), _i64("minus1", [-1]), _init("fc_w", _w(10, 4 * 8 * 8)), _init("fc_b", _w(10, scale=0.1))]
    m = _model(n, i, ["N", 1, 8, 8], ["N", 10], opset=opset, ir=3)
    if listed:
        m.graph.input.extend(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in i)
    return m


PATTERNS = {
    "dynamic_reshape": (dynamic_reshape, (1, 8, 8), None),
    "computed_pad": (computed_pad, (1, 8, 8), None),
    "channel_split": (channel_split, (1, 8, 8), None),
    "dynamic_hw": (dynamic_hw, (3, 16, 32), [16, 32]),
    "identity_routed": (identity_routed, (1, 8, 8), None),
    "float16": (float16, (1, 8, 8), None),
    "qdq_int8": (qdq_int8, (1, 8, 8), None),
    "unused_opsets": (unused_opsets, (1, 8, 8), None),
    "opset7": (lambda: _old(7, True), (1, 8, 8), None),
    "opset9_ir3_unlisted": (lambda: _old(9, False), (1, 8, 8), None),
}


def _session(m):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = 1
    return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _raw_logits(m, x):
    s = _session(m)
    dt = np.float16 if m.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT16 else np.float32
    return s.run(None, {"x": x.astype(dt)})[0].astype(np.float32)


# ------------------------------------------------------------------------- loading


@pytest.mark.parametrize("name", sorted(PATTERNS))
def test_pattern_loads_folded_with_the_same_outputs(name, tmp_path):
    build, shape, size = PATTERNS[name]
    raw = build()
    path = tmp_path / f"{name}.onnx"
    onnx.save(raw, str(path))
    m = load_model(path, input_size=size)
    ops = {n.op_type for n in m.graph.node}
    # every shape computation is gone: no Shape/Size/ConstantOfShape/Identity survives folding
    assert not ops & {"Shape", "Size", "ConstantOfShape", "Identity", "Gather", "Unsqueeze"}, ops
    assert m.opset_import[0].version >= 11 and all(o.domain in ("", "ai.onnx") for o in m.opset_import)
    # the batch stays dynamic: two batch sizes, the same per-sample outputs as the raw model
    x = RNG.random((3,) + shape, dtype=np.float32)
    got3 = _session(m).run(None, {"x": x})[0]
    got1 = _session(m).run(None, {"x": x[:1]})[0]
    np.testing.assert_allclose(got1, got3[:1], rtol=1e-5, atol=1e-5)
    if name != "dynamic_hw":
        want = _raw_logits(raw, x)
        tol = 2e-2 if name == "float16" else 1e-5
        np.testing.assert_allclose(got3, want, rtol=tol, atol=tol)
    # compute layers are found (QDQ: the weight through DequantizeLinear of an int8 constant)
    clf = OnnxClassifier(m)
    assert len(clf.layers) >= 2 and clf.input_shape == shape
    assert differentiability(m) == []


def _at_opset(opset):
    """Conv-Relu-MaxPool, a Shape-built flatten and Gemm in the forms of ``opset``."""
    n, i, r = _conv_relu("c1", "x", 1, 4)
    unsq = (helper.make_node("Unsqueeze", ["b", "ax0"], ["b1"]) if opset >= 13 else
            helper.make_node("Unsqueeze", ["b"], ["b1"], axes=[0]))
    n += [helper.make_node("MaxPool", [r], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
          helper.make_node("Shape", ["p"], ["s"]),
          helper.make_node("Gather", ["s", "zero"], ["b"], axis=0), unsq,
          helper.make_node("Concat", ["b1", "minus1"], ["target"], axis=0),
          helper.make_node("Reshape", ["p", "target"], ["flat"]),
          helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], transB=1)]
    i += [_i64("zero", 0), _i64("minus1", [-1]), _init("fc_w", _w(10, 4 * 4 * 4)), _init("fc_b", _w(10, scale=0.1))]
    if opset >= 13:
        i.append(_i64("ax0", [0]))
    return _model(n, i, ["N", 1, 8, 8], ["N", 10], opset=opset, ir=3 if opset < 8 else None)


@pytest.mark.parametrize("opset", [7, 8, 9, 10, 11, 12, 13, 15, 17, 18, 21])
def test_opsets_7_to_21_load_folded_with_the_same_outputs(opset):
    raw = _at_opset(opset)
    m = prepare(raw)
    assert m.opset_import[0].version == (13 if opset < 11 else opset)
    assert not {n.op_type for n in m.graph.node} & {"Shape", "Gather", "Unsqueeze", "Concat"}
    x = RNG.random((3, 1, 8, 8), dtype=np.float32)
    np.testing.assert_allclose(_session(m).run(None, {"x": x})[0], _raw_logits(raw, x), rtol=1e-5, atol=1e-5)
    assert differentiability(m) == []


def test_folding_rewrites_batch_copies_to_zero_and_keeps_constants():
    m = prepare(dynamic_reshape())
    reshape = next(n for n in m.graph.node if n.op_type == "Reshape")
    assert constant_value(m, reshape.input[1]).tolist() == [0, -1]
    # a model with a fixed batch folds the batch size itself
    fixed = dynamic_reshape()
    fixed.graph.input[0].type.tensor_type.shape.dim[0].Clear()
    fixed.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 2
    fixed.graph.output[0].type.tensor_type.shape.dim[0].Clear()
    m2 = prepare(fixed)
    reshape = next(n for n in m2.graph.node if n.op_type == "Reshape")
    assert constant_value(m2, reshape.input[1]).tolist() == [2, -1]


def test_computed_pads_and_slice_bounds_are_constants_for_the_gradient_rules():
    m = prepare(computed_pad())
    pad = next(n for n in m.graph.node if n.op_type == "Pad")
    assert constant_value(m, pad.input[1]).tolist() == [0, 2, 0, 0, 0, 2, 0, 0]
    m = prepare(channel_split())
    starts = [constant_value(m, n.input[1]).tolist() for n in m.graph.node if n.op_type == "Slice"]
    assert sorted(starts) == [[0], [4]]


def test_dynamic_spatial_dims_need_the_scenario_field(tmp_path):
    path = tmp_path / "dyn.onnx"
    onnx.save(dynamic_hw(), str(path))
    with pytest.raises(AuditorError, match=r"dynamic dimensions.*preprocessing\.input_size: \[H, W\]"):
        load_model(path)
    with pytest.raises(AuditorError, match="disagrees"):
        load_model(tmp_path / "dyn.onnx", input_size=[16, 32]) and prepare(
            load_model(path, input_size=[16, 32]), input_size=[8, 8])
    r = subprocess.run([sys.executable, "-m", "auditor.cli", "inspect", str(path)], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 2 and "input_size" in r.stderr and "--input-size" in r.stderr
    r = subprocess.run([sys.executable, "-m", "auditor.cli", "inspect", str(path), "--input-size", "16", "32"],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "gradients differentiable" in r.stdout and "3x16x32" in r.stdout


def test_identity_routed_parameters_are_initializers():
    m = prepare(identity_routed())
    assert not [n for n in m.graph.node if n.op_type == "Identity"]
    bn = next(n for n in m.graph.node if n.op_type == "BatchNormalization")
    inits = {t.name for t in m.graph.initializer}
    assert all(i in inits for i in bn.input[1:])
    from auditor.attacks.energy.analysis import zero_threshold_summary

    assert zero_threshold_summary(m)  # the BN zero-threshold analysis reads them
    # the one constant-lookup helper also resolves Identity in a graph that was not folded
    raw = identity_routed()
    assert np.array_equal(constant_value(raw, "w_a"), constant_value(raw, "w_shared"))


def test_custom_domain_used_by_a_node_is_still_refused():
    m = unused_opsets()
    m.graph.node[-1].domain = "com.microsoft"
    with pytest.raises(AuditorError, match="com.microsoft"):
        prepare(m)


def test_float16_and_qdq_loads_are_noted():
    assert any("float16" in n for n in load_notes(prepare(float16())))
    m = prepare(qdq_int8())
    assert any("straight-through" in n for n in load_notes(m))
    # QDQ structure kept: the int8 weights stay int8, looked up dequantised
    conv = next(n for n in m.graph.node if n.op_type == "Conv")
    dq = next(n for n in m.graph.node if n.output[0] == conv.input[1])
    assert dq.op_type == "DequantizeLinear"
    w = constant_value(m, conv.input[1])
    assert w.dtype == np.float32 and w.shape == (8, 1, 3, 3)
    assert len({float(v) for v in (w / constant_value(m, dq.input[1]).reshape(-1, 1, 1, 1)).ravel()
                if abs(v - round(v)) > 1e-4}) == 0  # integer multiples of the per-channel scale
    # densities and costs are those of the real dequantised activations (the DequantizeLinear
    # outputs the compute layers read), not of the float tensors before quantisation
    from auditor.runtime.evaluate import evaluate

    clf = OnnxClassifier(m)
    assert [c.input for c in clf.layers] == ["xq", "r1d", "flat"]
    ev = evaluate(clf, RNG.random((4, 1, 8, 8), dtype=np.float32), None)
    assert "r1d" in ev.counted and "r1" not in ev.counted


# ------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("name", sorted(PATTERNS))
def test_pattern_gradient_matches_finite_differences(name):
    build, shape, size = PATTERNS[name]
    m = prepare(build(), input_size=size)
    x = RNG.random((2,) + shape, dtype=np.float32)
    y = np.array([1, 3], np.int64)
    mo, obj, _ = append_objective(m, CrossEntropy())
    g = add_input_gradient(mo, obj)
    feeds = {"x": x, "target": y}
    grad = _session(g).run(["grad_input"], feeds)[0]
    assert np.abs(grad).sum() > 0
    if name == "qdq_int8":
        # straight-through: the gradient of the model with its quantisers removed (the float
        # model on the dequantised weights), evaluated at the dequantised activations
        ste = _without_activation_quantisers(mo)
        want = _session(add_input_gradient(ste, obj)).run(["grad_input"], feeds)[0]
        # the two differ only where rounding moves a Relu mask or a pre-activation: compare the
        # bulk of the gradient
        cos = float(np.sum(grad * want) / np.linalg.norm(grad) / np.linalg.norm(want))
        assert cos > 0.95, cos
        return
    for analytic, fd, scale in directional_check(mo, obj, feeds, "x", grad, n_dirs=3):
        assert abs(analytic - fd) <= 1e-4 * max(scale, 1e-3) + 1e-6, (analytic, fd, scale)


def _without_activation_quantisers(m):
    """The QDQ model with every activation Q -> DQ pair replaced by Identity."""
    out = onnx.ModelProto()
    out.CopyFrom(m)
    g = out.graph
    inits = {t.name for t in g.initializer}
    qs = {n.output[0]: n for n in g.node if n.op_type == "QuantizeLinear"}
    nodes = []
    for n in g.node:
        if n.op_type == "QuantizeLinear":
            continue
        if n.op_type == "DequantizeLinear" and n.input[0] in qs and n.input[0] not in inits:
            nodes.append(helper.make_node("Identity", [qs[n.input[0]].input[0]], [n.output[0]]))
            continue
        nodes.append(n)
    del g.node[:]
    g.node.extend(nodes)
    del g.value_info[:]
    return out


# ------------------------------------------------------------------------- audits end to end


def _scenario(tmp_path, model, shape, size, name):
    x = RNG.random((3,) + shape, dtype=np.float32)
    clf = OnnxClassifier(model, Preprocessing(input_size=size))
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", clf.predict(x).astype(np.int64))
    size_line = f"  input_size: [{size[0]}, {size[1]}]\n" if size else ""
    sc = tmp_path / f"{name}.yaml"
    sc.write_text(f"name: {name}\ndata: {{source: npy, path: x.npy, labels: y.npy}}\n"
                  f"preprocessing:\n  range: [0.0, 1.0]\n{size_line}"
                  "energy_attacks:\n  - {search: whitebox, count: 2, params: {iterations: 3}}\n"
                  "robustness:\n  count: 2\n  attacks:\n"
                  "    - {attack: pgd, norm: linf, epsilons: [0.05], params: {steps: 3}}\n"
                  "checks:\n  max_latency_increase: 100.0\n"
                  "  min_robust_accuracy: [{attack: pgd, epsilon: 0.05, threshold: 0.0}]\n")
    return sc


@pytest.mark.parametrize("name", sorted(PATTERNS))
def test_pattern_audits_to_a_verdict(name, tmp_path):
    build, shape, size = PATTERNS[name]
    path = tmp_path / f"{name}.onnx"
    onnx.save(build(), str(path))
    sc = _scenario(tmp_path, path, shape, size, name)
    # every profile for the quantised and float16 models, Cnvlutin for the other patterns (the
    # light-model tests run all three on real architectures)
    profiles = ["hwprofiles/cnvlutin.yaml"] + (
        ["hwprofiles/sparce.yaml", "hwprofiles/dense.yaml"] if name in ("qdq_int8", "float16") else [])
    rep = auditor.audit(str(path), [str(ROOT / p) for p in profiles], str(sc), seed=0)
    assert rep.verdict == "PASS", [c for c in rep.checks if not c["passed"]]
    for p in rep.data["profiles"]:
        wb = p["attacks"][0]
        assert wb["search"] == "whitebox"
        if p["name"] == "dense":  # a machine that cannot be slowed: the search is skipped, said so
            assert wb["skipped"] == "input-independent cost"
        else:
            assert wb["verified"] + wb["rejected"] == 2
        assert p["robustness"]["attacks"][0]["results"][0]["epsilon"] == 0.05
    notes = rep.data["model"]["load_notes"]
    assert bool(notes) == (name in ("float16", "qdq_int8"))
    text = rep.render("text")
    assert all(f"note: {n[:30]}" in text for n in notes)


def test_analysis_preconditions_fail_before_any_search(tmp_path):
    """A BatchNormalization whose scale is computed from the input: the zero-threshold analysis
    cannot run, and the audit says so at load time, not after the searches."""
    m = identity_routed()
    g = m.graph
    nodes = [helper.make_node("ReduceMean", ["x"], ["xm"], keepdims=0),
             helper.make_node("Add", ["ones", "xm"], ["bn_scale_x"])] + list(g.node)
    del g.node[:]
    g.node.extend(nodes)
    next(n for n in g.node if n.op_type == "BatchNormalization").input[1] = "bn_scale_x"
    path = tmp_path / "bnx.onnx"
    onnx.save(m, str(path))
    sc = _scenario(tmp_path, path, (1, 8, 8), None, "bnx")
    with pytest.raises(AuditorError, match="BatchNormalization parameter bn_scale_x is not a constant"):
        auditor.audit(str(path), [str(ROOT / "hwprofiles/cnvlutin.yaml")], str(sc), seed=0)
