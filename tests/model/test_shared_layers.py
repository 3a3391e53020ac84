"""Compute layers are layers, not tensors: several Conv/Gemm layers reading one tensor.

onnx.helper graphs with the three export patterns where this happens (a ResNet block's first
conv and its 1x1 downsample, Inception branches, DenseNet concatenations read by two convs):
W_l, the sparsity objective, the cost models' per-layer results and the reports are keyed by
layer; the white-box sparsity attack and PGD run end to end on cnvlutin, sparce and dense."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

import auditor
from auditor.grad import add_input_gradient
from auditor.grad.check import directional_check
from auditor.grad.objectives import Sparsity, append_objective
from auditor.model.rewrite.instrument import probes_of
from auditor.runtime.session import OnnxClassifier
from builders import make_model

IN = ("N", 1, 28, 28)


def _model(nodes, inits):
    m = make_model(nodes, inits, in_shape=IN, out_shape=["N", 10])
    onnx.checker.check_model(m)
    return onnx.shape_inference.infer_shapes(m, strict_mode=True)


def _w(rng, *shape):
    fan_in = int(np.prod(shape[1:])) or 1
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)


def _stem(rng, inits, out_ch=4):
    inits.update(w0=_w(rng, out_ch, 1, 3, 3), b0=np.full(out_ch, 0.05, np.float32))
    return [helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                             strides=[2, 2], name="stem"),
            helper.make_node("Relu", ["c0"], ["r0"], name="stem_relu")]


def _head(rng, inits, src, ch):
    inits.update(wf=_w(rng, 10, ch), bf=np.zeros(10, np.float32))
    return [helper.make_node("GlobalAveragePool", [src], ["gap"], name="gap"),
            helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
            helper.make_node("Gemm", ["flat", "wf", "bf"], ["y"], transB=1, name="fc")]


def resnet_downsample(seed=0):
    """stem -> [conv_a (3x3, stride 2) -> relu -> conv_b] + downsample (1x1, stride 2) on r0."""
    rng = np.random.default_rng(seed)
    inits = {}
    nodes = _stem(rng, inits)
    inits.update(wa=_w(rng, 8, 4, 3, 3), wb=_w(rng, 8, 8, 3, 3), wd=_w(rng, 8, 4, 1, 1))
    nodes += [helper.make_node("Conv", ["r0", "wa"], ["ca"], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                               strides=[2, 2], name="block_conv1"),
              helper.make_node("Relu", ["ca"], ["ra"], name="block_relu1"),
              helper.make_node("Conv", ["ra", "wb"], ["cb"], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                               name="block_conv2"),
              helper.make_node("Conv", ["r0", "wd"], ["cd"], kernel_shape=[1, 1], strides=[2, 2],
                               name="downsample"),
              helper.make_node("Add", ["cb", "cd"], ["s"], name="residual"),
              helper.make_node("Relu", ["s"], ["r1"], name="block_relu2")]
    nodes += _head(rng, inits, "r1", 8)
    return _model(nodes, inits)


def inception(seed=1):
    """stem -> three branches on r0 (1x1, 3x3, maxpool -> 1x1) -> Concat -> Relu -> head."""
    rng = np.random.default_rng(seed)
    inits = {}
    nodes = _stem(rng, inits)
    inits.update(w1=_w(rng, 4, 4, 1, 1), w3=_w(rng, 4, 4, 3, 3), wp=_w(rng, 4, 4, 1, 1))
    nodes += [helper.make_node("Conv", ["r0", "w1"], ["b1"], kernel_shape=[1, 1], name="branch1x1"),
              helper.make_node("Conv", ["r0", "w3"], ["b3"], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                               name="branch3x3"),
              helper.make_node("MaxPool", ["r0"], ["mp"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], name="pool"),
              helper.make_node("Conv", ["mp", "wp"], ["bp"], kernel_shape=[1, 1], name="branch_pool"),
              helper.make_node("Concat", ["b1", "b3", "bp"], ["cat"], axis=1, name="concat"),
              helper.make_node("Relu", ["cat"], ["rc"], name="cat_relu")]
    nodes += _head(rng, inits, "rc", 12)
    return _model(nodes, inits)


def densenet(seed=2):
    """stem -> conv1 -> relu -> Concat(r0, r1) read by two 1x1 convs (a transition and a
    bottleneck), summed -> relu -> head."""
    rng = np.random.default_rng(seed)
    inits = {}
    nodes = _stem(rng, inits)
    inits.update(wc=_w(rng, 4, 4, 3, 3), wt=_w(rng, 6, 8, 1, 1), wn=_w(rng, 6, 8, 1, 1))
    nodes += [helper.make_node("Conv", ["r0", "wc"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                               name="dense_conv"),
              helper.make_node("Relu", ["c1"], ["r1"], name="dense_relu"),
              helper.make_node("Concat", ["r0", "r1"], ["cat"], axis=1, name="dense_concat"),
              helper.make_node("Conv", ["cat", "wt"], ["t"], kernel_shape=[1, 1], name="transition"),
              helper.make_node("Conv", ["cat", "wn"], ["u"], kernel_shape=[1, 1], name="bottleneck"),
              helper.make_node("Add", ["t", "u"], ["s"], name="merge"),
              helper.make_node("Relu", ["s"], ["r2"], name="merge_relu")]
    nodes += _head(rng, inits, "r2", 6)
    return _model(nodes, inits)


MODELS = {"resnet": (resnet_downsample, {"r0": ["block_conv1", "downsample"]}),
          "inception": (inception, {"r0": ["branch1x1", "branch3x3"]}),
          "densenet": (densenet, {"cat": ["transition", "bottleneck"]})}


def _x(n=4):
    from pathlib import Path

    from auditor.data import DataSpec, load_data

    return load_data(DataSpec(count=n), Path(".")).x


@pytest.mark.parametrize("name", list(MODELS))
def test_probes_have_one_entry_per_layer(name):
    build, shared = MODELS[name]
    probes = probes_of(build())
    assert len(probes.layer_tensors) == len(probes.layers) == 5
    assert len(probes.layer_inputs) == 4  # the shared tensor is exposed once
    for tensor, layers in shared.items():
        assert [c.name for c in probes.layers if c.input == tensor] == layers


def test_sparsity_objective_counts_a_shared_tensor_once_per_layer():
    m = resnet_downsample()
    clf = OnnxClassifier(m)
    x = _x(3)
    w = np.array([0.5, 1.0, 2.0, 3.0, 0.25], np.float32)  # stem, block_conv1, block_conv2, downsample, fc
    beta = 3.0
    val, grad, _ = clf.value_and_grad(x, "sparsity", weights=w, beta=np.float32(beta), c=np.float32(0.0),
                                      target=np.zeros(len(x), np.int64))
    acts = clf.activations(x)
    tensors = clf.layer_tensors
    assert tensors == ["x", "r0", "ra", "r0", "flat"]
    k = sum(int(np.prod(acts[t].shape[1:])) for t in tensors)
    want = -sum(wl * np.tanh(beta * acts[t].astype(np.float64)).reshape(len(x), -1).sum(1)
                for wl, t in zip(w, tensors)) / k
    np.testing.assert_allclose(val, want, rtol=1e-5)
    # the same as listing r0 once with the summed weight, the elements of r0 counted twice in k
    shared = -(w[1] + w[3]) * np.tanh(beta * acts["r0"].astype(np.float64)).reshape(len(x), -1).sum(1) / k
    rest = -sum(wl * np.tanh(beta * acts[t].astype(np.float64)).reshape(len(x), -1).sum(1)
                for wl, t in zip(w, tensors) if t != "r0") / k
    np.testing.assert_allclose(val, shared + rest, rtol=1e-5)
    assert grad.shape == x.shape and np.abs(grad).max() > 0


def test_sparsity_gradient_with_a_shared_tensor_matches_finite_differences():
    m = inception()
    tensors = list(probes_of(m).layer_tensors)
    spec = Sparsity(tensors, f="tanh", weights_input="w", beta_input="beta")
    mo, obj, knobs = append_objective(m, spec)
    g = add_input_gradient(mo, obj, wrt="x")
    rng = np.random.default_rng(4)
    # random pixels: the digits' flat background would put MaxPool on ties, where it has no derivative
    feeds = {"x": rng.uniform(0, 1, (2, 1, 28, 28)).astype(np.float32), "w": rng.uniform(0.5, 2.0, len(tensors)).astype(np.float32),
             "beta": np.array(2.0, np.float32)}
    import onnxruntime as ort

    sess = ort.InferenceSession(g.SerializeToString(), providers=["CPUExecutionProvider"])
    grad = sess.run(["grad_input"], feeds)[0]
    for an, fd, scale in directional_check(mo, obj, feeds, "x", grad, n_dirs=3):
        assert abs(an - fd) <= 1e-4 * scale + 1e-7, (an, fd, scale)


def test_whitebox_weights_follow_layers():
    from auditor.runtime.evaluate import cost_fn, evaluate
    from auditor.hw.profile import load_profile
    from auditor.attacks.energy import WhiteBoxSparsity

    clf = OnnxClassifier(resnet_downsample())
    cm = load_profile("hwprofiles/cnvlutin.yaml").build_cost_model()
    x = _x(2)
    shares = evaluate(clf, x, cm).cost.runtime_shares()
    assert len(shares) == len(clf.layers) == 5
    res = WhiteBoxSparsity(iterations=2)(clf, x, cost_fn=cost_fn(clf, cm), layer_weights=shares)
    w = res.info["layer_weights"]
    assert len(w) == 5 and np.all(w > 0)
    sizes = [int(np.prod(c.input_shape)) for c in clf.layers]
    assert float(np.dot(w, sizes)) == pytest.approx(sum(sizes), rel=1e-5)  # sum_l W_l n_l = k


SCENARIO = """name: shared
data: {source: digits, count: 6}
energy_attacks:
  - {search: whitebox, count: 3, params: {iterations: 4}}
robustness:
  count: 3
  attacks:
    - {attack: pgd, norm: linf, epsilons: [0.1], params: {steps: 3}}
"""


@pytest.mark.parametrize("name,profiles", [
    ("resnet", ["cnvlutin", "sparce", "dense"]), ("inception", ["cnvlutin"]), ("densenet", ["sparce"])])
def test_audit_end_to_end(tmp_path, name, profiles):
    build, shared = MODELS[name]
    path = tmp_path / f"{name}.onnx"
    onnx.save(build(), path)
    sc = tmp_path / "sc.yaml"
    sc.write_text(SCENARIO)
    rep = auditor.audit(str(path), [f"hwprofiles/{p}.yaml" for p in profiles], str(sc), seed=0)
    layer_names = [c.name for c in probes_of(build()).layers]
    for p in rep.data["profiles"]:
        assert list(p["clean"]["layer_shares"]) == layer_names
        assert [r["layer"] for r in p["clean"]["worst_input"]["layers"]] == layer_names
        pgd = p["robustness"]["attacks"][0]
        assert pgd["attack"] == "pgd" and pgd["results"][0]["epsilon"] == 0.1
        (wb,) = p["attacks"]
        assert wb["search"] == "whitebox"
        if p["name"] == "dense":  # a machine that cannot be slowed: the search is skipped, said so
            assert wb["skipped"] == "input-independent cost"
            continue
        assert wb["verified"] + wb["rejected"] == 3
        assert [r["layer"] for r in wb["layers"]] == layer_names
        rows = {r["layer"]: r for r in wb["layers"]}
        for tensor, layers in shared.items():  # layers reading one tensor see one density
            assert len({rows[n]["density_clean"] for n in layers}) == 1
    assert rep.verdict in ("PASS", "FAIL")
