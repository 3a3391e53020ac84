"""Model loading, graph analysis and instrumentation."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper

from auditor.errors import AuditorError
from auditor.model.graph import compute_layers, layer_table
from auditor.model.load import as_model, load_model, prepare
from auditor.model.rewrite.instrument import instrument
from auditor.runtime.session import OnnxClassifier, Runner
from auditor.runtime.evaluate import evaluate

from builders import make_model, tiny_cnn, tiny_cnn_numpy, zoo_model


def save(tmp_path, model, name="m.onnx"):
    p = tmp_path / name
    onnx.save(model, p)
    return p


def test_garbage_truncated_unknown_op(tmp_path):
    g = tmp_path / "garbage.onnx"
    g.write_bytes(b"\x00\xffnot a model at all" * 10)
    with pytest.raises(AuditorError, match="not a valid ONNX model"):
        load_model(g)
    m, _ = tiny_cnn()
    data = m.SerializeToString()
    t = tmp_path / "trunc.onnx"
    t.write_bytes(data[: len(data) // 2])
    with pytest.raises(AuditorError, match="garbage|trunc|not a valid"):
        load_model(t)
    bad = tiny_cnn()[0]
    bad.graph.node[1].op_type = "FancyRelu"
    with pytest.raises(AuditorError, match="unknown op 'FancyRelu'"):
        load_model(save(tmp_path, bad, "bad.onnx"))
    with pytest.raises(AuditorError, match="not found"):
        load_model(tmp_path / "missing.onnx")


def test_external_data_outside_folder_refused(tmp_path):
    m, _ = tiny_cnn()
    sub = tmp_path / "model"
    sub.mkdir()
    onnx.save(m, sub / "m.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
              location="weights.bin", size_threshold=0)
    assert load_model(sub / "m.onnx").graph.initializer[0].raw_data  # inside the folder: loaded
    m2 = onnx.load(sub / "m.onnx", load_external_data=False)
    for t in m2.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = "../escape.bin"
    (tmp_path / "escape.bin").write_bytes((sub / "weights.bin").read_bytes())
    onnx.save(m2, sub / "evil.onnx")
    with pytest.raises(AuditorError, match="outside the model's folder"):
        load_model(sub / "evil.onnx")


def test_initializers_as_inputs_and_unnamed_nodes():
    m, inits = tiny_cnn()
    for k, v in inits.items():
        m.graph.input.append(helper.make_tensor_value_info(k, onnx.TensorProto.FLOAT, list(v.shape)))
    for n in m.graph.node:
        n.name = ""
    p = prepare(m)
    assert [i.name for i in p.graph.input] == ["x"]
    names = [n.name for n in p.graph.node]
    assert len(set(names)) == len(names) and all(names)


def test_old_opset_is_upgraded_and_equal():
    m, _ = tiny_cnn(opset=9)
    m.graph.node[2].attribute.pop()  # opset 9 MaxPool is fine; keep graph valid
    m.graph.node[2].attribute.extend([helper.make_attribute("strides", [2, 2])])
    p = prepare(m)
    x = np.random.default_rng(0).integers(0, 3, (2, 1, 8, 8)).astype(np.float32)
    ref = ort.InferenceSession(m.SerializeToString()).run(None, {"x": x})[0]
    got = Runner(p).run(x)["y"]
    np.testing.assert_array_equal(ref, got)


def test_compute_layers_of_zoo_model():
    m = prepare(zoo_model())
    layers = compute_layers(m)
    assert [l.op_type for l in layers] == ["Conv", "Conv", "Gemm"]
    assert layers[1].group == 2 and layers[1].input_shape == (4, 4, 4)  # ceil_mode pool: 8 -> 4 (floor would give 3)
    assert layers[1].macs == 4 * 4 * 4 * 2 * 9  # outputs x (C/group) x kernel
    assert layers[2].weight_shape == (64, 10) and layers[2].macs == 640
    rows = layer_table(m)
    gemm = [r for r in rows if r.op_type == "Gemm"][0]
    assert gemm.feeds_from == "a2"  # through Reshape
    assert [r for r in rows if r.op_type == "Conv"][1].feeds_from == "a1"  # through MaxPool, from Clip


def test_density_through_rewrite_equals_numpy_forward():
    m, inits = tiny_cnn()
    clf = OnnxClassifier(prepare(m))
    x = np.random.default_rng(3).integers(0, 3, (16, 1, 8, 8)).astype(np.float32)
    x[::2, :, :4] = 0  # some inputs much sparser than others
    ev = evaluate(clf, x)
    y, ref = tiny_cnn_numpy(x, inits)
    np.testing.assert_array_equal(ev.logits, y.astype(np.float32))
    for t in ("r1", "r2"):
        expect = (ref[t].reshape(16, -1) != 0).mean(axis=1)
        np.testing.assert_array_equal(ev.densities[t], expect)
    total = ref["r1"][0].size + ref["r2"][0].size
    nz = (ref["r1"].reshape(16, -1) != 0).sum(1) + (ref["r2"].reshape(16, -1) != 0).sum(1)
    np.testing.assert_array_equal(ev.model_density, nz / total)
    assert ev.counted == ("r1", "r2")


def test_instrument_keeps_logits_bit_exact():
    m = prepare(zoo_model())
    im, probes = instrument(m)
    assert im.graph.output[0].name == "y"
    assert set(probes.activations) == {"a1", "a2"} and "p1" in probes.layer_inputs
    x = np.random.default_rng(0).random((5, 1, 8, 8)).astype(np.float32)
    a = ort.InferenceSession(m.SerializeToString()).run(["y"], {"x": x})[0]
    b = Runner(im).run(x)["y"]
    np.testing.assert_array_equal(a, b)


def test_bundled_models_load_and_have_compute_layers():
    import glob

    for path in sorted(glob.glob("models/*.onnx")):
        m = load_model(path)
        layers = compute_layers(m)
        assert layers and all(l.macs > 0 for l in layers), path


def test_as_model_is_the_one_model_or_path_entry(tmp_path):
    model, _ = tiny_cnn()
    assert as_model(model) is model
    copy = as_model(model, copy=True)
    assert copy is not model and copy.SerializeToString() == model.SerializeToString()
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    for p in (path, str(path)):
        loaded = as_model(p)
        assert [n.name for n in loaded.graph.node] == [n.name for n in load_model(path).graph.node]
    with pytest.raises(AuditorError, match="expected an ONNX ModelProto or a path, got int"):
        as_model(3)


def _wide_fc(rows=512, cols=1024):
    """x (N, 1, 32, 32) -> Flatten -> Gemm with a (rows, 1024) weight: 2 MiB of weights."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("Gemm", ["f", "w", "b"], ["y"], transB=1)]
    return make_model(nodes, {"w": rng.standard_normal((rows, cols)).astype(np.float32),
                              "b": np.zeros(rows, np.float32)}, in_shape=("N", 1, 32, 32), out_shape=["N", rows])


def test_loading_checks_and_infers_shapes_without_serialising_the_weights(tmp_path, monkeypatch):
    """onnx's checker and shape inference serialise and parse the model they are given: loading
    hands them the skeleton (weights as typed inputs), not the 2 MiB of weights, and the loaded
    model still holds every weight and computes what the file does."""
    seen = []
    real_check, real_infer = onnx.checker.check_model, onnx.shape_inference.infer_shapes

    def check(m, *a, **k):
        seen.append(("check_model", m.ByteSize()))
        return real_check(m, *a, **k)

    def infer(m, *a, **k):
        seen.append(("infer_shapes", m.ByteSize()))
        return real_infer(m, *a, **k)

    monkeypatch.setattr(onnx.checker, "check_model", check)
    monkeypatch.setattr(onnx.shape_inference, "infer_shapes", infer)
    src = _wide_fc()
    p = save(tmp_path, src)
    m = load_model(p)
    assert {s[0] for s in seen} == {"check_model", "infer_shapes"}
    assert max(size for _, size in seen) < 64 << 10, seen
    x = np.random.default_rng(1).random((2, 1, 32, 32), dtype=np.float32)
    want = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_array_equal(got, want)


def test_a_large_weight_with_too_few_bytes_is_still_refused(tmp_path):
    m = _wide_fc()
    w = next(t for t in m.graph.initializer if t.name == "w")
    w.raw_data = w.raw_data[:-4]
    with pytest.raises(AuditorError, match=r"invalid ONNX model: .*\(tensor name: w\) raw_data size \(2097148 bytes\) "
                                           r"is too small .*\(2097152 bytes required\)"):
        load_model(save(tmp_path, m))


@pytest.mark.parametrize("n", [0, 1, 127, 128, 16383, 16384, 2097151, 2097152])
def test_raw_data_size(n):
    from onnx import numpy_helper

    from auditor.model.load import _raw_data_bytes

    t = numpy_helper.from_array(np.zeros(n, np.uint8), "w" * 40)
    t.doc_string = "a weight"
    t.metadata_props.add(key="k", value="v")
    assert _raw_data_bytes(t) == len(t.raw_data) == n


def test_model_hash_is_the_hash_of_the_whole_serialisation():
    """model_hash feeds the serialisation piece by piece (a large initializer's raw_data on its
    own): the same digest as hashing the whole deterministic serialisation."""
    import glob
    import hashlib
    from pathlib import Path

    from onnx import numpy_helper

    from auditor.model.load import model_hash

    def whole(m):
        return hashlib.sha256(m.SerializeToString(deterministic=True)).hexdigest()

    root = Path(__file__).resolve().parents[2]
    for p in sorted(glob.glob(str(root / "models" / "*.onnx"))):
        for m in (onnx.load(p), load_model(p)):
            assert model_hash(m) == whole(m), p
    # fields on every side of the split points: doc strings, metadata, a large initializer (raw
    # data, with a doc string and a data location after it) beside small and typed-field ones
    m, _ = tiny_cnn()
    big = numpy_helper.from_array(np.random.default_rng(0).random((300, 70), dtype=np.float32), "big")
    big.doc_string = "after raw_data"
    big.data_location = onnx.TensorProto.DEFAULT
    m.graph.initializer.append(big)
    m.graph.initializer.append(helper.make_tensor("typed", onnx.TensorProto.FLOAT, [5000], [0.5] * 5000))
    m.graph.doc_string = "graph doc"
    m.doc_string, m.model_version = "model doc", 3
    m.metadata_props.add(key="k", value="v")
    assert model_hash(m) == whole(m)
    m.graph.initializer[0].raw_data = m.graph.initializer[0].raw_data + b"x" * 3000
    assert model_hash(m) == whole(m)



def test_large_files_read_in_pieces_parse_to_the_same_model(tmp_path, monkeypatch):
    """A model file read piece by piece (its fields merged in runs, each initializer of the graph
    parsed on its own) is the model the whole parse gives; a file the field scan does not take
    is parsed whole, so bad files get the same errors."""
    import glob
    from pathlib import Path

    from onnx import numpy_helper

    import auditor.model.load as load_mod

    monkeypatch.setattr(load_mod, "PIECEWISE_MIN_BYTES", 0)
    m, _ = tiny_cnn()
    # initializers between other graph fields, fields after the graph, an empty initializer
    m.graph.initializer.insert(0, numpy_helper.from_array(np.arange(6000, dtype=np.float32), "first"))
    m.graph.initializer.append(onnx.TensorProto(name="empty", data_type=onnx.TensorProto.FLOAT))
    m.graph.doc_string = "graph doc"
    m.metadata_props.add(key="k", value="v")
    root = Path(__file__).resolve().parents[2]
    paths = [save(tmp_path, m, "mixed.onnx")] + [Path(p) for p in sorted(glob.glob(str(root / "models" / "*.onnx")))]
    for p in paths:
        got = load_mod._read_in_pieces(p)
        assert got is not None and got.SerializeToString() == onnx.load(str(p)).SerializeToString(), p
    # the loader's refusals are the whole parse's
    data = tiny_cnn()[0].SerializeToString()
    for name, content in (("garbage.onnx", b"\x00\xffnot a model at all" * 10), ("trunc.onnx", data[: len(data) // 2]),
                          ("empty.onnx", b"")):
        f = tmp_path / name
        f.write_bytes(content)
        assert load_mod._read_in_pieces(f) is None or name == "trunc.onnx"
        with pytest.raises(AuditorError, match="not a valid ONNX model|empty"):
            load_model(f)


def test_piecewise_reader_leaves_a_file_of_many_tiny_fields_to_the_whole_parse(tmp_path, monkeypatch):
    """A file of millions of 2-byte fields (hostile, or not a model) kept the Python field scan
    busy for minutes (69 MB: 86 s); the scan stops after MAX_SCANNED_FIELDS fields and leaves the
    file to the whole parse, and runs of model fields are merged at once, not one by one."""
    import auditor.model.load as load_mod

    monkeypatch.setattr(load_mod, "PIECEWISE_MIN_BYTES", 0)
    monkeypatch.setattr(load_mod, "MAX_SCANNED_FIELDS", 1000)
    m, _ = tiny_cnn()
    data = m.SerializeToString()
    # 500 repeated ir_version fields before the model's own: still read in pieces, same model
    ok = tmp_path / "repeated.onnx"
    ok.write_bytes(b"\x08\x01" * 500 + data)
    got = load_mod._read_in_pieces(ok)
    assert got is not None and got.SerializeToString() == onnx.load(str(ok)).SerializeToString()
    merges = []
    real_merge = load_mod._merge_run
    monkeypatch.setattr(load_mod, "_merge_run", lambda *a: (merges.append(a[2:]), real_merge(*a)))
    load_mod._read_in_pieces(ok)
    assert len(merges) <= 4  # the run before the graph, the graph's own runs, the run after it
    # more fields than the scan walks: left to the whole parse
    many = tmp_path / "many.onnx"
    many.write_bytes(b"\x08\x01" * 5000)
    assert load_mod._read_in_pieces(many) is None
    with pytest.raises(AuditorError, match="not a valid ONNX model"):
        load_model(many)
