"""The session factory and Runner: feeds typed after the graph's inputs, fixed-batch padding,
weights shared between sessions, refusals as AuditorError."""

from __future__ import annotations

import gc

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from auditor.errors import AuditorError
from auditor.runtime.engine import Runner, SharedWeights, make_session, run_batches
from builders import make_model, tiny_cnn, tiny_cnn_numpy


def knob_model(batch="N"):
    """y = x.sum(1) * scale + onehot(label) . w: an int64 per-sample knob, a float scalar knob and
    a float (3,) knob."""
    nodes = [helper.make_node("ReduceSum", ["x"], ["s"], axes=[1], keepdims=0),
             helper.make_node("Mul", ["s", "scale"], ["a"]),
             helper.make_node("OneHot", ["label", "depth", "values"], ["oh"], axis=-1),
             helper.make_node("MatMul", ["oh", "w"], ["b"]),
             helper.make_node("Add", ["a", "b"], ["y"])]
    graph = helper.make_graph(
        nodes, "knobs",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3]),
         helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
         helper.make_tensor_value_info("scale", TensorProto.FLOAT, []),
         helper.make_tensor_value_info("w", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch])],
        [onnx.numpy_helper.from_array(np.array(3, np.int64), "depth"),
         onnx.numpy_helper.from_array(np.array([0.0, 1.0], np.float32), "values")])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    m.ir_version = 8
    return m


def expected(x, label, scale, w):
    return x.sum(1) * scale + np.asarray(w, np.float32)[np.asarray(label)]


def test_knob_feeds_take_their_types_and_shapes_from_the_graph():
    x = np.arange(9, dtype=np.float32).reshape(3, 3)
    r = Runner(knob_model(), batch_size=2)  # chunks of 2: per-sample knobs are sliced, the others are not
    w = np.array([10.0, 20.0, 30.0])  # float64, and len(w) == len(x): still one (3,) knob
    for label, scale in ((np.array([0, 1, 2], np.int32), 0.0),  # int32 labels, a Python float
                         ([2, 1, 0], np.float64(2.0)),  # a list, a float64 scalar
                         (np.int32(1), np.array([0.5])),  # a scalar label for every input, a (1,) scale
                         (np.array([1.0, 2.0, 0.0]), 1)):  # integral floats as labels, an int scale
        got = r.run(x, ["y"], feeds={"label": label, "scale": scale, "w": w})["y"]
        lab = np.broadcast_to(np.asarray(label).astype(np.int64), (3,))
        np.testing.assert_allclose(got, expected(x, lab, float(np.asarray(scale).ravel()[0]), w), rtol=1e-6)
    with pytest.raises(AuditorError, match="takes int64"):
        r.run(x, ["y"], feeds={"label": np.array([0.5, 1.0, 2.0]), "scale": 1.0, "w": w})
    with pytest.raises(AuditorError, match="no input 'bogus'"):
        r.run(x, ["y"], feeds={"bogus": 1.0})


def test_fixed_batch_models_are_padded_and_the_padding_dropped():
    x = np.random.default_rng(0).random((5, 3), dtype=np.float32)
    r = Runner(knob_model(batch=2), batch_size=64)
    assert r.fixed_batch == r.batch_size == 2 and "fixed batch" in r.batch_note
    got = r.run(x, ["y"], feeds={"label": np.array([0, 1, 2, 0, 1]), "scale": 1.0, "w": [1.0, 2.0, 3.0]})["y"]
    np.testing.assert_allclose(got, expected(x, [0, 1, 2, 0, 1], 1.0, [1.0, 2.0, 3.0]), rtol=1e-6)
    seen = []
    out = run_batches(lambda xb, f: seen.append((len(xb), f["k"].tolist())) or {"y": xb[:, 0]}, x, 64,
                      fixed_batch=2, feeds={"k": np.arange(5)}, per_sample=lambda k: True)
    assert seen == [(2, [0, 1]), (2, [2, 3]), (2, [4, 4])]
    np.testing.assert_array_equal(out["y"], x[:, 0])
    # reduce: each chunk's results without the padding, with its rows; only what it keeps is gathered
    rows = []
    out = r.run(x, ["y"], feeds={"label": np.array([0, 1, 2, 0, 1]), "scale": 1.0, "w": [1.0, 2.0, 3.0]},
                reduce=lambda res, sl: rows.append((sl.start, sl.stop, len(res["y"]))) or {"z": res["y"] * 2})
    assert rows == [(0, 2, 2), (2, 4, 2), (4, 5, 1)] and set(out) == {"z"}
    np.testing.assert_allclose(out["z"], 2 * expected(x, [0, 1, 2, 0, 1], 1.0, [1.0, 2.0, 3.0]), rtol=1e-6)


def test_sessions_sharing_weights_compute_what_a_plain_session_computes(monkeypatch):
    monkeypatch.setattr(SharedWeights, "MIN_BYTES", 1024)
    model, inits = tiny_cnn(integer=False)
    big = {k for k, v in inits.items() if v.nbytes >= SharedWeights.MIN_BYTES}
    assert big == {"w2"}  # the 64x5 weight is shared, the small ones stay in the model
    shared = SharedWeights(model)
    assert shared.shared_in(model) == ["w2"]
    x = np.random.default_rng(1).random((4, 1, 8, 8), dtype=np.float32)
    want, _ = tiny_cnn_numpy(x, inits)
    light = shared.light(model)  # without the shared weight's data: the sessions are given it
    assert next(t for t in light.graph.initializer if t.name == "w2").data_location == onnx.TensorProto.EXTERNAL
    assert len(light.SerializeToString()) < len(model.SerializeToString()) - 1000  # its 1280 bytes are not in it
    a, b, c = Runner(model, shared=shared), Runner(model, shared=shared), Runner(light, shared=shared)
    # the OrtValues a build is given are dropped after it (onnxruntime copies them): the sessions
    # still compute the same once that memory is reused
    gc.collect()
    junk = [np.full(1 << 16, 7.0, np.float32) for _ in range(64)]
    for r in (a, b, c, Runner(model)):
        np.testing.assert_allclose(r.run(x, ["y"])["y"], want, rtol=1e-4, atol=1e-4)
    del junk


def test_a_model_onnxruntime_refuses_is_bad_input():
    bad = make_model([helper.make_node("Relu", ["x", "x"], ["y"])], {})
    with pytest.raises(AuditorError, match="onnxruntime cannot load the test model"):
        make_session(bad, what="the test model")


def test_a_gradient_graph_built_without_the_shared_weights_data_computes_the_same(monkeypatch):
    """gradient_model with the model's shared weights builds on a copy without their data (the
    rules that fold a weight, the flipped-kernel Conv adjoint here, read it from the model): the
    graph carries none of their bytes and its session computes the gradient bit for bit as the
    graph built from the model with its weights."""
    from auditor.runtime.session import GRAD_INPUT, gradient_model, knob_feeds, objective_spec

    monkeypatch.setattr(SharedWeights, "MIN_BYTES", 256)
    rng = np.random.default_rng(3)
    inits = {"w1": rng.normal(size=(8, 8, 3, 3)).astype(np.float32), "b1": rng.normal(size=8).astype(np.float32),
             "wm": rng.normal(size=(8, 16)).astype(np.float32), "w3": rng.normal(size=(16, 3)).astype(np.float32),
             "ax": np.array([1, 2], np.int64)}
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Transpose", ["r1"], ["t1"], perm=[0, 2, 3, 1]),
             helper.make_node("MatMul", ["t1", "wm"], ["m1"]),
             helper.make_node("Tanh", ["m1"], ["h1"]),
             helper.make_node("ReduceMean", ["h1", "ax"], ["p1"], keepdims=0),
             helper.make_node("Gemm", ["p1", "w3"], ["y"])]
    model = make_model(nodes, inits, in_shape=("N", 8, 6, 6), out_shape=["N", 3], opset=18)
    shared = SharedWeights(model)
    assert set(shared.shared_in(model)) == {"w1", "wm"}
    spec = objective_spec("ce", [])
    full, obj, _ = gradient_model(model, spec, "y", wrt="x")
    light, obj2, _ = gradient_model(model, spec, "y", wrt="x", weights=shared)
    assert obj == obj2
    for name in ("w1", "wm"):
        assert next(t for t in light.graph.initializer if t.name == name).data_location == onnx.TensorProto.EXTERNAL
    assert len(light.SerializeToString()) < len(full.SerializeToString()) - 2000
    x = rng.random((3, 8, 6, 6), dtype=np.float32)
    feeds = knob_feeds("ce", {"target": np.array([0, 2, 1])})
    want = Runner(full).run(x, [obj, GRAD_INPUT], feeds=feeds)
    got = Runner(light, shared=shared).run(x, [obj, GRAD_INPUT], feeds=feeds)
    assert np.abs(want[GRAD_INPUT]).max() > 0
    for k in (obj, GRAD_INPUT):
        np.testing.assert_array_equal(got[k], want[k])

    # the classifier builds its gradient graphs so: the model the objective is appended to has
    # none of the shared weights' data, and the gradient is the same
    from auditor.runtime import session as session_module
    given = []
    append = session_module.append_objective
    monkeypatch.setattr(session_module, "append_objective", lambda m, *a, **k: given.append(m) or append(m, *a, **k))
    clf = session_module.OnnxClassifier(onnx.shape_inference.infer_shapes(model))
    _, grad, _ = clf.value_and_grad(x, "ce", target=np.array([0, 2, 1]))
    assert len(given) == 1 and set(clf.weights.shared_in(given[0])) == {"w1", "wm"}
    assert all(t.data_location == onnx.TensorProto.EXTERNAL for t in given[0].graph.initializer if t.name in ("w1", "wm"))
    np.testing.assert_array_equal(grad, want[GRAD_INPUT])

def _rss_bytes() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS"))


def _gemm_model(rows: int, cols: int):
    """y = Relu(x @ W.T + b), W (rows, cols) random: a classifier head's weight."""
    rng = np.random.default_rng(3)
    inits = {"W": rng.standard_normal((rows, cols), dtype=np.float32), "b": rng.standard_normal(rows, dtype=np.float32)}
    nodes = [helper.make_node("Gemm", ["x", "W", "b"], ["h"], transB=1), helper.make_node("Relu", ["h"], ["y"])]
    graph = helper.make_graph(nodes, "head", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", cols])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", rows])],
                              [onnx.numpy_helper.from_array(v, k) for k, v in inits.items()])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m, inits


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/status"), reason="reads VmRSS from /proc")
def test_a_huge_gemm_weight_is_read_in_place_by_every_session(monkeypatch):
    import auditor.runtime.engine as engine

    monkeypatch.setattr(engine, "PREPACK_MAX_BYTES", 16 << 20)  # so that a 32 MiB weight turns prepacking off
    model, inits = _gemm_model(2048, 4096)  # W: 32 MiB
    size = inits["W"].nbytes
    x = np.random.default_rng(4).standard_normal((3, 4096), dtype=np.float32)
    want = Runner(model).run(x, ["y"])["y"]  # a session of the serialized model
    grown = {}
    for mode, least in (("copied", 1 << 60), ("in place", SharedWeights.IN_PLACE_MIN_BYTES)):
        monkeypatch.setattr(SharedWeights, "IN_PLACE_MIN_BYTES", least)
        shared = SharedWeights(model)
        assert shared.in_place(model) == (["W"] if mode == "in place" else [])  # a Gemm reads it; b is too small
        gc.collect()
        before = _rss_bytes()
        runners = [Runner(shared.light(model) if i else model, shared=shared) for i in range(4)]
        gc.collect()
        grown[mode] = _rss_bytes() - before
        for r in runners:  # what a session of the serialized model computes, to the bit
            np.testing.assert_array_equal(r.run(x, ["y"])["y"], want)
        assert bool(runners[0].session._auditor_in_place) == (mode == "in place")
        del runners, shared
    # copied: four sessions hold four copies; in place: the one copy they all read
    assert grown["copied"] > 3.5 * size and grown["in place"] < 1.5 * size, grown


def test_a_build_that_needs_a_weight_given_in_place_copies_them_all(monkeypatch):
    import auditor.runtime.engine as engine

    rng = np.random.default_rng(5)
    inits = {"w": rng.standard_normal((8, 3, 3, 3), dtype=np.float32),
             **{k: (rng.random(8) + 0.5).astype(np.float32) for k in ("s", "v")},
             **{k: rng.standard_normal(8, dtype=np.float32) for k in ("b", "m")}}
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["y"])]
    graph = helper.make_graph(nodes, "convbn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8, 6, 6])],
                              [onnx.numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    # as if Conv's weight could be read in place: onnxruntime fuses the BatchNormalization into it,
    # which reads the weight, and finds none where its entry points
    monkeypatch.setattr(engine, "PREPACK_MAX_BYTES", 256)
    monkeypatch.setattr(engine, "_IN_PLACE_OPS", frozenset({"Conv"}))
    monkeypatch.setattr(SharedWeights, "MIN_BYTES", 256)
    monkeypatch.setattr(SharedWeights, "IN_PLACE_MIN_BYTES", 256)
    shared = SharedWeights(model)
    assert shared.in_place(model) == ["w"]
    x = rng.standard_normal((2, 3, 6, 6), dtype=np.float32)
    r = Runner(model, shared=shared)
    assert r.session._auditor_in_place == {}  # built again with the weight copied
    np.testing.assert_array_equal(r.run(x, ["y"])["y"], Runner(model).run(x, ["y"])["y"])


#: in a fresh process, on a thread of its own (as onnxruntime's workers allocate): a 16 MiB block
#: freed (glibc raises its threshold to it), then 32 blocks of 4 MiB, each followed by a small one
#: kept, freed: the MiB given back to the system
_FREED = """
import sys, threading
import numpy as np
from auditor.runtime.engine import return_freed_memory
if sys.argv[1] == "fixed" and not return_freed_memory():
    print("no-glibc"); sys.exit()
def rss():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS"))
def work():
    big = np.ones(16 << 20, np.uint8)
    del big
    blocks, pins = [], []
    for _ in range(32):
        blocks.append(np.ones(1 << 20, np.float32))
        pins.append(np.ones(256, np.float32))
    before = rss()
    del blocks
    print((before - rss()) >> 20)
t = threading.Thread(target=work)
t.start()
t.join()
"""


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/status"), reason="reads VmRSS from /proc")
def test_freed_blocks_go_back_to_the_system_once_asked():
    """return_freed_memory (glibc): freed blocks of a few MiB go back to the system at once, where
    glibc's own threshold, raised by an earlier larger free, keeps them in its heap."""
    import os
    import subprocess
    import sys

    root = str(__import__("pathlib").Path(__file__).resolve().parents[2])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p))
    got = {mode: subprocess.run([sys.executable, "-c", _FREED, mode], capture_output=True, text=True, env=env,
                                check=True).stdout.strip() for mode in ("default", "fixed")}
    if got["fixed"] == "no-glibc":
        pytest.skip("not glibc")
    assert int(got["fixed"]) >= 120 and int(got["default"]) < 64, got  # of the 128 MiB freed


def test_huge_model_is_one_with_a_weight_of_the_prepacking_limit():
    from onnx import TensorProto, helper

    from auditor.runtime.engine import PREPACK_MAX_BYTES, huge_model

    def model(floats):
        w = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[floats])  # sized by its dims, no data
        return helper.make_model(helper.make_graph([], "g", [], [], [w]))

    assert huge_model(model(PREPACK_MAX_BYTES // 4))
    assert not huge_model(model(PREPACK_MAX_BYTES // 4 - 1))
