"""The BPDA rewrite on its own: fed with the exact forward's tensors it computes the model exactly,
and with other values of the approximated nodes' outputs the logits follow those values."""

import numpy as np
import onnx
import onnxruntime as ort
from builders import tiny_cnn

from auditor.model.names import NS
from auditor.model.rewrite.bpda import bpda_model
from auditor.model.rewrite.instrument import add_outputs


def _run(model, feeds, outputs=None):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(outputs, feeds)


def test_bpda_graph_reproduces_the_forward_it_is_fed():
    model, _ = tiny_cnn()
    x = np.random.default_rng(0).uniform(-1, 1, (3, 1, 8, 8)).astype(np.float32)
    rewritten, feeds = bpda_model(model, ["conv1", "fc2"])
    onnx.checker.check_model(rewritten)
    assert len(feeds) == 4 and all(k.startswith(NS + "bpda/") for k in feeds)
    assert sorted(feeds.values()) == sorted(["x", "c1", "r2", "y"])
    tensors = sorted(set(feeds.values()) - {"x"})
    exact = dict(zip(tensors, _run(add_outputs(model, tensors), {"x": x}, tensors)))
    exact["x"] = x
    got = _run(rewritten, {"x": x, **{k: exact[v] for k, v in feeds.items()}}, ["y"])[0]
    np.testing.assert_array_equal(got, exact["y"])
    # the output of an approximated node is what it is fed: y_fed + f(a - a_fed) with a == a_fed
    y_in = next(k for k, v in feeds.items() if v == "y")
    shifted = {k: exact[v] for k, v in feeds.items()}
    shifted[y_in] = exact["y"] + np.float32(0.5)
    np.testing.assert_array_equal(_run(rewritten, {"x": x, **shifted}, ["y"])[0], exact["y"] + np.float32(0.5))
    # nodes that are not approximated are kept as they are, by name
    kept = [n.name for n in rewritten.graph.node if not n.name.startswith(NS)]
    assert kept == ["relu1", "pool1", "flat", "fc1", "relu2"]
