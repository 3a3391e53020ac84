"""The real-architecture models shipped inside the onnx wheel (onnx/backend/test/data/light:
opset 8-9, IR 3, weights built by ConstantOfShape ops): each loads (folded and upgraded),
`auditor inspect` reports compute layers and a differentiable graph, a 2-input clean audit on the
Cnvlutin, SparCE and dense profiles reaches a verdict, and its input gradient agrees with finite
differences.

The suite runs SqueezeNet, ShuffleNet and Inception v1 (LRN); the other six (DenseNet-121,
Inception v2, ResNet-50: 25-50 s each here; AlexNet, VGG-19, ZFNet-512: 60-140 M parameters,
15-45 s to load alone) are run with the white-box attack and PGD by
``benchmarks/bench_light_models.py``, which also does the float64 gradient check (onnxruntime
has no float64 Conv, and onnx's reference evaluator needs 10-50 s per forward pass of these
224x224 networks).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import auditor
from auditor.model.graph import compute_layers
from auditor.model.inspect import inspect_model, render_inspect
from auditor.model.load import load_model
from auditor.runtime.session import OnnxClassifier

ROOT = Path(__file__).resolve().parents[2]
LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
#: the models small enough for the test suite (all nine, with the white-box attack and PGD:
#: benchmarks/bench_light_models.py; DenseNet-121, Inception v2 and ResNet-50 take 25-50 s each
#: here on 2 shared cores)
IN_CI = ["light_squeezenet", "light_shufflenet", "light_inception_v1"]


def light_path(name: str) -> Path:
    p = LIGHT / f"{name}.onnx"
    if not p.exists():
        pytest.skip(f"the installed onnx package does not ship {p} (onnx stopped shipping its light models?)")
    return p


_CACHE: dict[str, onnx.ModelProto] = {}


def loaded(name: str) -> onnx.ModelProto:
    if name not in _CACHE:
        _CACHE[name] = load_model(light_path(name))
    return _CACHE[name]


def randomised(model: onnx.ModelProto, seed: int = 0) -> onnx.ModelProto:
    """The model with He-initialised random weights and identity batch normalisations: the shipped
    weights are constants (every weight 0.02), which makes every logit equal and the gradient of
    any class objective exactly zero, and their BN variances blow deep networks up."""
    rng = np.random.default_rng(seed)
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    bn = {}
    for n in g.node:
        if n.op_type == "BatchNormalization":
            bn.update({n.input[1]: 1.0, n.input[2]: 0.0, n.input[3]: 0.0, n.input[4]: 1.0})
    for k, t in enumerate(g.initializer):
        if t.data_type != onnx.TensorProto.FLOAT:
            continue
        if t.name in bn:
            w = np.full(tuple(t.dims), bn[t.name])
        elif len(t.dims) >= 2:
            w = rng.standard_normal(tuple(t.dims)) * np.sqrt(2.0 / int(np.prod(t.dims[1:])))
        else:
            continue
        g.initializer[k].CopyFrom(numpy_helper.from_array(w.astype(np.float32), t.name))
    return m


@pytest.mark.parametrize("name", IN_CI)
def test_light_model_loads_and_inspect_reports_it_differentiable(name):
    m = loaded(name)
    ops = {n.op_type for n in m.graph.node}
    assert "ConstantOfShape" not in ops and m.opset_import[0].version >= 11
    layers = compute_layers(m)
    convs = sum(n.op_type == "Conv" for n in m.graph.node)
    assert len(layers) >= convs > 0
    info = inspect_model(m)
    assert info["differentiable"] is True, info["blocking_ops"]
    assert info["total_macs"] == sum(c.macs for c in layers) > 10 ** 8
    assert "gradients differentiable" in render_inspect(info)


@pytest.mark.parametrize("name", IN_CI)
def test_light_model_clean_audit_on_three_profiles(name, tmp_path):
    m = loaded(name)
    x = np.random.default_rng(1).random((2, 3, 224, 224), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    sc = tmp_path / "light.yaml"
    sc.write_text("name: light\ndata: {source: npy, path: x.npy}\nbatch_size: 2\n"
                  "checks:\n  worst_case_latency_ms: 100000.0\n  max_density: 1.0\n")
    profiles = [str(ROOT / "hwprofiles" / p) for p in ("cnvlutin.yaml", "sparce.yaml", "dense.yaml")]
    rep = auditor.audit(m, profiles, str(sc), seed=0)
    assert rep.verdict == "PASS"
    n_layers = len(compute_layers(m))
    for p in rep.data["profiles"]:
        clean = p["clean"]
        assert clean["accuracy"] is None  # unlabelled data: no accuracy, still a verdict
        assert len(clean["worst_input"]["layers"]) == n_layers
        assert 0 < clean["density"]["mean"] <= 1 and clean["latency_s"]["mean"] > 0
    by = {p["name"]: p["clean"]["cycles"]["mean"] for p in rep.data["profiles"]}
    assert len(by) == 3


@pytest.mark.parametrize("name", IN_CI)
def test_light_model_input_gradient_matches_finite_differences(name):
    """The cross-entropy gradient of the (randomised) model against a central difference of the
    same objective along the gradient's own direction, with a step that moves the objective by
    1e-4 of its value (float32 onnxruntime; the float64 check on random directions is in the
    benchmark)."""
    clf = OnnxClassifier(randomised(loaded(name)))
    x = np.random.default_rng(2).random((1, 3, 224, 224), dtype=np.float32)
    target = np.array([3], np.int64)
    value, grad, _ = clf.value_and_grad(x, "ce", target=target)
    g = grad.astype(np.float64)
    v = g / np.linalg.norm(g) * np.sqrt(g.size)  # per-pixel RMS 1
    analytic = float(np.sum(g * v))
    assert analytic > 0
    h = 1e-4 * max(abs(float(value[0])), 1.0) / analytic
    fp, _, _ = clf.value_and_grad((x + h * v).astype(np.float32), "ce", target=target)
    fm, _, _ = clf.value_and_grad((x - h * v).astype(np.float32), "ce", target=target)
    fd = (float(fp[0]) - float(fm[0])) / (2 * h)
    assert abs(fd - analytic) <= 1e-2 * analytic, (analytic, fd)
