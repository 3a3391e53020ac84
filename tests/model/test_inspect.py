"""``auditor inspect``'s text: full op names and shapes within 80 columns, the batch dimension as
N, a clear line when no compute layer is found (and why), unsupported ops named in one line."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from auditor.model.graph import skipped_compute_nodes
from auditor.model.inspect import inspect_model, render_inspect, shape_text
from builders import make_model

LONG = "/features/stage_four/block_seventeen/" + "very_long_module_name_" * 4 + "Conv"


def _long_names_model(path):
    rng = np.random.default_rng(0)
    inits = {"w": rng.standard_normal((1024, 3, 3, 3)).astype(np.float32),
             "s": np.ones(1024, np.float32), "b": np.zeros(1024, np.float32),
             "wf": rng.standard_normal((10, 1024)).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w"], [LONG + "_output_0"], pads=[1, 1, 1, 1], name=LONG),
             helper.make_node("InstanceNormalization", [LONG + "_output_0", "s", "b"], ["n"], name="norm"),
             helper.make_node("Relu", ["n"], ["r"], name="relu"),
             helper.make_node("GlobalAveragePool", ["r"], ["g"], name="gap"),
             helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "wf"], ["y"], transB=1, name="fc")]
    m = make_model(nodes, inits, in_shape=("batch_size", 3, 112, 112), out_shape=["batch_size", 10])
    onnx.save(m, path)
    return path


def _check_width(text):
    for line in text.splitlines():
        assert len(line) <= 80, line


def test_names_and_shapes_in_full_within_80_columns(tmp_path):
    text = render_inspect(inspect_model(_long_names_model(tmp_path / "m.onnx")))
    _check_width(text)
    for op in ("InstanceNormalization", "GlobalAveragePool"):
        assert f"  {op}  " in text
    assert "Nx1024x112x112" in text and "batch_size" not in text
    # the long node name is wrapped onto continuation lines, not cut
    joined = "".join(line.strip() for line in text.splitlines())
    assert LONG in joined.replace("node ", "")
    assert "2 compute layer(s)" in text and "differentiable" in text


def test_bundled_model_rows():
    text = render_inspect(inspect_model("models/bn_resnet.onnx"))
    _check_width(text)
    assert "  BatchNormalization  Nx16x28x28" in text and "BatchNormaliza " not in text
    assert "fed by input (the model input)" in text


def test_shape_text():
    assert shape_text(["batch", 16, 28, 28]) == "Nx16x28x28"
    assert shape_text([1, 1000]) == "1x1000"
    assert shape_text(["N", 3, "height", "width"]) == "Nx3xheightxwidth"
    assert shape_text(None) == "?" and shape_text([]) == "scalar"


def _dynamic_filter_model(path):
    """A Conv whose weight is cut out of the input itself: weights computed by ops, which no
    constant folding can turn into constants."""
    inits = {"st": np.zeros(4, np.int64), "en": np.array([1, 1, 3, 3], np.int64),
             "sh": np.array([1, 1, 3, 3], np.int64)}
    nodes = [helper.make_node("Slice", ["x", "st", "en"], ["cut"], name="cut"),
             helper.make_node("Reshape", ["cut", "sh"], ["wdyn"], name="as_weight"),
             helper.make_node("Conv", ["x", "wdyn"], ["c"], name="dynconv"),
             helper.make_node("Flatten", ["c"], ["y"], name="flatten")]
    onnx.save(make_model(nodes, inits, in_shape=(1, 1, 8, 8), out_shape=[1, 36]), path)
    return path


def test_no_compute_layer_says_so_and_why(tmp_path):
    path = _dynamic_filter_model(tmp_path / "dyn.onnx")
    info = inspect_model(path)
    assert info["compute_layers"] == 0 and info["total_macs"] == 0
    assert skipped_compute_nodes(onnx.load(path)) == [
        ("dynconv", "Conv", "weight 'wdyn' is computed by Reshape node 'as_weight', not a constant")]
    text = render_inspect(info)
    _check_width(text)
    flat = " ".join(text.split())
    assert "no compute layer found: 1 Conv/Gemm/MatMul node(s) (Conv x1) have no constant weight" in flat
    assert "computed by Reshape node 'as_weight'" in flat
    assert "total MACs per input: 0" not in text and "differentiable (input gradients" not in text


def test_no_compute_op_at_all(tmp_path):
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("ReduceMean", ["r"], ["y"], axes=[2, 3], keepdims=0, name="mean")]
    onnx.save(make_model(nodes, {}, in_shape=("N", 3, 4, 4), out_shape=["N", 3]), tmp_path / "p.onnx")
    text = render_inspect(inspect_model(tmp_path / "p.onnx"))
    flat = " ".join(text.split())
    assert "no compute layer found: the graph has no Conv, ConvTranspose, Gemm or MatMul node" in flat
    assert "gradients differentiable for evasion attacks only: with no compute layer there is no sparsity" in flat


def test_unsupported_ops_named_in_one_line(tmp_path):
    rng = np.random.default_rng(1)
    w = numpy_helper.from_array(rng.standard_normal((4, 1, 3, 3)).astype(np.float32), "w")
    k = numpy_helper.from_array(np.array([2], np.int64), "k")
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
         helper.make_node("Einsum", ["c"], ["e"], equation="nchh->nch", name="diag"),
         helper.make_node("Flatten", ["e"], ["f"], name="flatten"),
         helper.make_node("TopK", ["f", "k"], ["y", "idx"], name="top")], "m",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])], [w, k])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save(m, tmp_path / "u.onnx")
    r = subprocess.run([sys.executable, "-m", "auditor.cli", "inspect", str(tmp_path / "u.onnx")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    _check_width(r.stdout)
    lines = r.stdout.splitlines()
    line = next(ln for ln in lines if ln.startswith("gradients"))
    assert line == "gradients not differentiable; blocked by: Einsum (1 node), TopK (1 node)"
    assert any("Einsum 'diag':" in ln and "repeated indices" in ln for ln in lines)


def test_layers_sharing_an_input_are_marked(tmp_path):
    from test_shared_layers import resnet_downsample

    onnx.save(resnet_downsample(), tmp_path / "r.onnx")
    info = inspect_model(tmp_path / "r.onnx")
    assert [r["data_input"] for r in info["layers"] if r["role"] == "compute"] == ["x", "r0", "ra", "r0", "flat"]
    lines = render_inspect(info).splitlines()
    i = lines.index("    node block_conv1")
    assert lines[i + 1:i + 3] == ["    fed by r0", "    same input as downsample"]
