"""Malformed, hostile and unsupported ONNX models through `inspect` and `audit`: exit 2 with one
line naming the file and the input, output, tensor or node, in bounded time and memory."""

import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from badinput_harness import MODEL, assert_one_line_error, base_files, check, run_cli, sparse_file
from builders import make_model, tiny_cnn

F = TensorProto.FLOAT


def _graph_model(nodes, inputs, outputs, inits=(), opset=13, value_info=()):
    g = helper.make_graph(nodes, "bad", inputs, outputs, list(inits), value_info=list(value_info))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def _vi(name, elem, shape):
    return helper.make_tensor_value_info(name, elem, shape)


def _typed_input(elem):
    """Cast(input) -> tiny classifier: a model whose input has type ``elem``."""
    m, _ = tiny_cnn()
    m.graph.input[0].type.tensor_type.elem_type = elem
    m.graph.node.insert(0, helper.make_node("Cast", ["x"], ["x_f"], to=F, name="cast_in"))
    for n in m.graph.node[1:]:
        n.input[:] = ["x_f" if i == "x" else i for i in n.input]
    return m


def _output_op(op, shape, elem=F, **attrs):
    m, _ = tiny_cnn()
    m.graph.node.append(helper.make_node(op, ["y"], ["z"], name="last", **attrs))
    del m.graph.output[:]
    m.graph.output.append(_vi("z", elem, shape))
    return m


def _reshape_output(shape, declared):
    m, _ = tiny_cnn()
    m.graph.initializer.append(numpy_helper.from_array(np.array(shape, np.int64), "oshape"))
    m.graph.node.append(helper.make_node("Reshape", ["y", "oshape"], ["z"], name="reshape_out"))
    del m.graph.output[:]
    m.graph.output.append(_vi("z", F, declared))
    return m


def _static_input(shape):
    m, _ = tiny_cnn()
    d = m.graph.input[0].type.tensor_type.shape.dim
    for i, v in enumerate(shape):
        d[i].Clear()
        d[i].dim_value = v
    return m


def _huge_intermediate():
    x = _vi("x", F, ["N", 1, 8, 8])
    shape = numpy_helper.from_array(np.array([1, 1 << 14, 1 << 14], np.int64), "big_shape")
    nodes = [helper.make_node("ConstantOfShape", ["big_shape"], ["big"], name="big",
                              value=numpy_helper.from_array(np.array([0], np.float32))),
             helper.make_node("ReduceSum", ["big"], ["s"], keepdims=0, name="sum"),
             helper.make_node("Flatten", ["x"], ["f"], name="flat"),
             helper.make_node("MatMul", ["f", "w"], ["y0"], name="fc"),
             helper.make_node("Add", ["y0", "s"], ["y"], name="add")]
    w = numpy_helper.from_array(np.ones((64, 3), np.float32), "w")
    return _graph_model(nodes, [x], [_vi("y", F, ["N", 3])], [shape, w])


def _conv_channels_disagree():
    m, inits = tiny_cnn()
    w = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w1")  # expects 3 input channels, the input has 1
    for i, t in enumerate(m.graph.initializer):
        if t.name == "w1":
            m.graph.initializer[i].CopyFrom(w)
    return m


def _two_inputs():
    m, _ = tiny_cnn()
    m.graph.input.append(_vi("extra", F, ["N", 3]))
    m.graph.node.append(helper.make_node("Add", ["y", "extra"], ["z"], name="add"))
    del m.graph.output[:]
    m.graph.output.append(_vi("z", F, ["N", 3]))
    return m


def _custom_op():
    m, _ = tiny_cnn()
    m.graph.node[1].domain = "com.example"
    m.opset_import.append(helper.make_opsetid("com.example", 1))
    return m


def _unknown_op():
    m, _ = tiny_cnn()
    m.graph.node[1].op_type = "Swish2"
    return m


def _no_opset():
    m, _ = tiny_cnn()
    del m.opset_import[:]
    return m


def _future_opset():
    m, _ = tiny_cnn()
    m.opset_import[0].version = 999
    return m


def _nan_weights():
    m, _ = tiny_cnn()
    for i, t in enumerate(m.graph.initializer):
        if t.name == "w3":
            m.graph.initializer[i].CopyFrom(numpy_helper.from_array(np.full((5, 3), np.nan, np.float32), "w3"))
    return m


def _no_nodes():
    return _graph_model([], [_vi("x", F, ["N", 3])], [_vi("x", F, ["N", 3])])


def _one_class():
    m, _ = tiny_cnn()
    for i, t in enumerate(m.graph.initializer):
        if t.name == "w3":
            m.graph.initializer[i].CopyFrom(numpy_helper.from_array(np.ones((5, 1), np.float32), "w3"))
        if t.name == "b3":
            m.graph.initializer[i].CopyFrom(numpy_helper.from_array(np.ones((1,), np.float32), "b3"))
    m.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 1
    return m


def _rank2_input():
    x = _vi("x", F, ["N", 64])
    w = numpy_helper.from_array(np.ones((64, 3), np.float32), "w")
    return _graph_model([helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")], [x], [_vi("y", F, ["N", 3])], [w])


def _input_is_output():
    m, _ = tiny_cnn()
    m.graph.output.insert(0, _vi("x", F, ["N", 1, 8, 8]))
    return m


def _batch_mismatch():
    m = _static_input([2, 1, 8, 8])
    m.graph.output[0].type.tensor_type.shape.dim[0].Clear()
    m.graph.output[0].type.tensor_type.shape.dim[0].dim_value = 5
    return m


def _sequence_output():
    m, _ = tiny_cnn()
    m.graph.node.append(helper.make_node("SequenceConstruct", ["y"], ["z"], name="seq"))
    del m.graph.output[:]
    m.graph.output.append(helper.make_tensor_sequence_value_info("z", F, None))
    return m


# (id, model builder, what the error line names)
MODELS = [
    ("input-int64", lambda: _typed_input(TensorProto.INT64), "input 'x' has type int64"),
    ("input-int32", lambda: _typed_input(TensorProto.INT32), "input 'x' has type int32"),
    ("input-uint8", lambda: _typed_input(TensorProto.UINT8), "input 'x' has type uint8"),
    ("input-float64", lambda: _typed_input(TensorProto.DOUBLE), "input 'x' has type float64"),
    ("input-bool", lambda: _typed_input(TensorProto.BOOL), "input 'x' has type bool"),
    ("input-int8", lambda: _typed_input(TensorProto.INT8), "input 'x' has type int8"),
    ("output-argmax", lambda: _output_op("ArgMax", ["N", 1], TensorProto.INT64, axis=1), "output 'z' has type int64"),
    ("output-string", lambda: _output_op("Cast", ["N", 3], TensorProto.STRING, to=TensorProto.STRING), "output 'z' has type string"),
    ("output-bool", lambda: _output_op("Cast", ["N", 3], TensorProto.BOOL, to=TensorProto.BOOL), "output 'z' has type bool"),
    ("output-4d", lambda: _reshape_output([-1, 1, 3, 1], ["N", 1, 3, 1]), "output 'z' has rank 4"),
    ("output-1d", lambda: _reshape_output([-1], ["M"]), "output 'z' has rank 1"),
    ("output-scalar", lambda: _output_op("ReduceSum", [], keepdims=0), "output 'z' has rank 0"),
    ("output-sequence", _sequence_output, "output 'z' is not a tensor"),
    ("output-one-class", _one_class, "output 'y' has 1 class"),
    ("output-batch-mismatch", _batch_mismatch, "Inferred shape and existing shape differ"),
    ("static-batch-2-40", lambda: _static_input([1 << 40, 1, 8, 8]), "input 'x' declares a static batch of 1099511627776"),
    ("static-batch-5000", lambda: _static_input([5000, 1, 8, 8]), "static batch of 5000"),
    ("huge-input", lambda: make_model([helper.make_node("Flatten", ["x"], ["y"])], {}, in_shape=["N", 1, 1 << 15, 1 << 15],
                                      out_shape=["N", 1 << 30]), "'x' has shape [None, 1, 32768, 32768]"),
    ("huge-intermediate", _huge_intermediate, "tensor 'big' has shape"),
    ("conv-channels", _conv_channels_disagree, "node 'conv1' (Conv): its weight 'w1' takes 3 x 1 group(s) = 3 input "
     "channels, but its input 'x' has 1"),
    ("two-inputs", _two_inputs, "expected exactly one image input"),
    ("custom-op", _custom_op, "com.example"),
    ("unknown-op", _unknown_op, "unknown op 'Swish2'"),
    ("no-opset", _no_opset, "opset"),
    ("future-opset", _future_opset, "imports opset 999, newer than"),
    ("no-nodes", _no_nodes, "the graph has no nodes"),
    ("input-is-output", _input_is_output, "x"),
]


def model_files(tmp):
    """A valid profile and a scenario of unlabelled 8x8 inputs (what tiny_cnn takes)."""
    prof, sc = base_files(tmp)
    np.save(tmp / "x.npy", np.random.default_rng(0).random((4, 1, 8, 8), np.float32))
    sc.write_text("name: t\ndata: {source: npy, path: x.npy}\n")
    return prof, sc


def _save(m, path):
    path.write_bytes(m.SerializeToString())
    return path


@pytest.mark.parametrize("build,where", [c[1:] for c in MODELS], ids=[c[0] for c in MODELS])
def test_bad_model_audit(tmp_path, build, where):
    prof, sc = model_files(tmp_path)
    p = _save(build(), tmp_path / "plain.onnx")
    line = check(["audit", p, "--hw", prof, "--scenario", sc], tmp_path, where)
    assert str(p) in line


@pytest.mark.parametrize("build,where", [c[1:] for c in MODELS], ids=[c[0] for c in MODELS])
def test_bad_model_inspect(tmp_path, build, where):
    p = _save(build(), tmp_path / "plain.onnx")
    check(["inspect", p], tmp_path, where)


# --- corrupt files -------------------------------------------------------------------------------
def _valid_bytes():
    return MODEL.read_bytes()


def _flip(pos_frac, xor=0xFF):
    def make(p):
        b = bytearray(_valid_bytes())
        i = int(len(b) * pos_frac)
        b[i] ^= xor
        p.write_bytes(bytes(b))
    return make


def _bad_utf8_name(p):
    m, _ = tiny_cnn()
    m.graph.node[0].name = "conv_\u00e9"
    b = m.SerializeToString()
    p.write_bytes(b.replace("conv_\u00e9".encode(), b"conv_\xff\xfe"))


def _truncate(frac):
    def make(p):
        b = _valid_bytes()
        p.write_bytes(b[:int(len(b) * frac)])
    return make


def _external(location, size=None, offset=None, length=None, make_file=True):
    def make(p):
        m, _ = tiny_cnn()
        t = next(t for t in m.graph.initializer if t.name == "w2")
        raw = numpy_helper.to_array(t).tobytes()
        t.ClearField("float_data")
        t.ClearField("raw_data")
        t.data_location = TensorProto.EXTERNAL
        for k, v in (("location", location), ("offset", offset), ("length", length)):
            if v is not None:
                e = t.external_data.add()
                e.key, e.value = k, str(v)
        if make_file and "\0" not in location and not os.path.isabs(location) and ".." not in location:
            target = p.parent / location
            if size is not None:
                sparse_file(target, size, raw)
            else:
                target.write_bytes(raw)
        p.write_bytes(m.SerializeToString())
    return make


def _dev_zero(p):
    p.symlink_to("/dev/zero")


def _fifo(p):
    os.mkfifo(p)


def _sparse_model(p):
    sparse_file(p, (1 << 30) + 1, b"\x08\x07")


CORRUPT = [
    ("garbage", lambda p: p.write_bytes(b"\x08\x01garbage" * 50), "not a valid ONNX model"),
    ("empty", lambda p: p.write_bytes(b""), "model file is empty"),
    ("text", lambda p: p.write_text("this is not a model\n" * 10), "not a valid ONNX model"),
    ("zeros", lambda p: p.write_bytes(b"\0" * 4096), "not a valid ONNX model"),
    ("bad-utf8-name", _bad_utf8_name, "plain.onnx"),
    ("dev-zero", _dev_zero, "not a regular file"),
    ("fifo", _fifo, "not a regular file"),
    ("sparse-1GiB", _sparse_model, "larger than the 1 GiB"),
    ("missing", lambda p: None, "model file not found"),
    ("ext-nul", _external("w\0.bin"), "tensor 'w2' has an invalid location"),
    ("ext-escape", _external("../outside.bin"), "lies outside the model's folder"),
    ("ext-absolute", _external("/etc/passwd"), "lies outside the model's folder"),
    ("ext-missing", _external("gone.bin", make_file=False), "external data file 'gone.bin' of tensor 'w2' not found"),
    ("ext-offset-beyond", _external("w.bin", offset=10_000_000), "lies outside 'w.bin'"),
    ("ext-length-beyond", _external("w.bin", length=10_000_000), "lies outside 'w.bin'"),
    ("ext-offset-text", _external("w.bin", offset="abc"), "non-integer offset"),
    ("ext-negative-offset", _external("w.bin", offset=-5), "lies outside"),
    ("ext-sparse-3GiB", _external("big.bin", size=3 << 30), "exceeds the 1024 MiB"),
    ("ext-wrong-length", _external("w.bin", length=16), "w2"),
]


# a flipped or cut byte may leave a valid model (a changed weight): the promise is no crash, and
# one located line when it is refused
DAMAGED = [(f"flip-{f}-{x:02x}", _flip(f / 100, x)) for f in (0, 1, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 99)
           for x in (0x01, 0x80, 0xFF)] + [(f"cut-{f}", _truncate(f / 100)) for f in (1, 2, 10, 30, 50, 70, 90, 98, 99)]


@pytest.mark.parametrize("make", [c[1] for c in DAMAGED], ids=[c[0] for c in DAMAGED])
def test_damaged_model_never_crashes(tmp_path, make):
    p = tmp_path / "plain.onnx"
    make(p)
    o = run_cli(["inspect", p], tmp_path)
    assert "Traceback" not in o.stderr and o.code in (0, 2), o.stderr[-2000:]
    if o.code == 2:
        assert_one_line_error(o, str(p))
    assert o.seconds < 10 and o.peak_bytes < 1 << 30 and not o.changed


@pytest.mark.parametrize("make,where", [c[1:] for c in CORRUPT], ids=[c[0] for c in CORRUPT])
def test_corrupt_model(tmp_path, make, where):
    prof, sc = model_files(tmp_path)
    p = tmp_path / "plain.onnx"
    make(p)
    line = check(["audit", p, "--hw", prof, "--scenario", sc], tmp_path, where)
    assert str(p) in line
    check(["inspect", p], tmp_path, where)


# --- the model against the scenario ---------------------------------------------------------------
def test_mean_length_against_model_channels(tmp_path):
    prof, _ = base_files(tmp_path)
    sc = tmp_path / "sc.yaml"
    sc.write_text("name: t\ndata: {count: 8}\npreprocessing:\n  mean: [0.1, 0.2, 0.3]\n")
    line = check(["audit", MODEL, "--hw", prof, "--scenario", sc], tmp_path,
                 "sc.yaml:4:9: preprocessing.mean: has 3 values but the data has 1 channel")
    assert "Traceback" not in line


def test_mean_length_rgb_data_on_gray_model(tmp_path):
    prof, _ = base_files(tmp_path)
    np.save(tmp_path / "x.npy", np.zeros((4, 3, 28, 28), np.float32))
    sc = tmp_path / "sc.yaml"
    sc.write_text("name: t\ndata: {source: npy, path: x.npy}\npreprocessing:\n  mean: [0.1, 0.2, 0.3]\n")
    check(["audit", MODEL, "--hw", prof, "--scenario", sc], tmp_path,
          "preprocessing.mean: has 3 values but the model's input has 1 channel")


def test_rank2_model_with_mean_std(tmp_path):
    prof, _ = model_files(tmp_path)
    p = _save(_rank2_input(), tmp_path / "mlp.onnx")
    sc = tmp_path / "sc.yaml"
    sc.write_text("name: t\ndata: {source: npy, path: x.npy}\npreprocessing: {mean: [0.5], std: [0.5]}\n")
    check(["audit", p, "--hw", prof, "--scenario", sc], tmp_path, "input 'x' has rank 2")


def test_labels_beyond_the_model_classes(tmp_path):
    prof, _ = base_files(tmp_path)
    p = _save(tiny_cnn()[0], tmp_path / "three.onnx")  # 3 classes; the digits have 10
    np.save(tmp_path / "x.npy", np.zeros((4, 1, 8, 8), np.float32))
    np.save(tmp_path / "y.npy", np.array([0, 1, 2, 7]))
    sc = tmp_path / "sc.yaml"
    sc.write_text("name: t\ndata: {source: npy, path: x.npy, labels: y.npy}\n")
    check(["audit", p, "--hw", prof, "--scenario", sc], tmp_path, "label 3 is 7 but the model has 3 classes")


def test_nan_weights(tmp_path):
    prof, sc = base_files(tmp_path)
    p = _save(_nan_weights(), tmp_path / "nan.onnx")
    sc.write_text("name: t\ndata: {source: npy, path: x.npy}\n")
    np.save(tmp_path / "x.npy", np.zeros((4, 1, 8, 8), np.float32))
    check(["audit", p, "--hw", prof, "--scenario", sc], tmp_path, "NaN or infinite logits")


def test_surrogate_that_is_not_a_classifier(tmp_path):
    prof, _ = base_files(tmp_path)
    _save(_typed_input(TensorProto.INT64), tmp_path / "sur.onnx")
    sc = tmp_path / "sc.yaml"
    sc.write_text("name: t\ndata: {count: 8}\nenergy_attacks:\n  - {search: blackbox, surrogate: sur.onnx}\n")
    check(["validate", sc], tmp_path, "energy_attacks[0].surrogate: ")
    check(["audit", MODEL, "--hw", prof, "--scenario", sc], tmp_path, "input 'x' has type int64")


def _computed_weight_model(rows, cols):
    """x (N, cols) -> MatMul with a weight made by ConstantOfShape (as the onnx wheel's light models build theirs)."""
    x = _vi("x", F, ["N", cols])
    shape = numpy_helper.from_array(np.array([cols, rows], np.int64), "w_shape")
    nodes = [helper.make_node("ConstantOfShape", ["w_shape"], ["w"], name="w_fill",
                              value=numpy_helper.from_array(np.array([0.01], np.float32))),
             helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")]
    return _graph_model(nodes, [x], [_vi("y", F, ["N", rows])], [shape])


def test_large_real_weight_is_not_refused_but_a_gigabyte_constant_is():
    """VGG's first FC weight (4096 x 25088 floats, 411 MB) is a real model's, not an attack on memory;
    a computed 1 GiB constant still is.  Only shapes are inferred: nothing is allocated."""
    from auditor.errors import AuditorError
    from auditor.model.interface import check_sizes

    check_sizes(_computed_weight_model(4096, 25088))
    with pytest.raises(AuditorError, match="tensor 'w' has shape .*more than 512 MiB"):
        check_sizes(_computed_weight_model(16384, 16384))
