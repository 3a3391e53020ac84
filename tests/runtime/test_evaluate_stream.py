"""evaluate() streams batch by batch: no forward run holds more inputs than the memory budget
allows, and the per-input results do not depend on how the inputs were batched."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from auditor.runtime.evaluate import batch_note, evaluate
from auditor.hw import build_cost_model
from auditor.runtime.session import OnnxClassifier, Runner, tensor_bytes

ROOT = Path(__file__).resolve().parents[2]


def digits(n):
    x = np.load(ROOT / "auditor" / "data" / "digits28_test.npz")["x"][:n].astype(np.float32) / 255.0
    return x.reshape(n, 1, 28, 28)


def test_budget_bounds_the_batch_and_results_do_not_depend_on_it():
    path = ROOT / "models" / "bn_resnet.onnx"
    full = OnnxClassifier(path, batch_size=64)
    small = OnnxClassifier(path, batch_size=64)
    per_input = tensor_bytes(small.instrumented)
    assert per_input == full.runner.input_bytes > 28 * 28 * 4
    small.runner = Runner(small.instrumented, batch_size=64, budget=3 * per_input + 1)
    assert small.runner.batch_size == 3 and "lowered" in batch_note(small)
    assert "scenario's batch_size" in batch_note(full)
    seen = []
    forward = small.forward
    small.forward = lambda x: seen.append(len(x)) or forward(x)
    d = yaml.safe_load((ROOT / "hwprofiles" / "cnvlutin.yaml").read_text())
    cm = build_cost_model(d["cost_model"], d["params"])
    x = digits(20)
    a, b = evaluate(full, x, cm), evaluate(small, x, cm)
    assert seen == [3] * 6 + [2]
    np.testing.assert_allclose(a.logits, b.logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(a.cost.cycles, b.cost.cycles)
    np.testing.assert_array_equal(a.cost.energy_j, b.cost.energy_j)
    np.testing.assert_array_equal(a.model_density, b.model_density)
    assert a.densities.keys() == b.densities.keys()
    for t in a.densities:
        np.testing.assert_array_equal(a.densities[t], b.densities[t])


def test_classifiers_of_one_deployed_model_share_its_derivations_and_weights():
    """The profiles of an audit and their verifiers deploy the same model object: one copy of the
    raw-domain model, the instrumented model and the weights serves all of them (memory, issue 12)."""
    from auditor.model.load import load_model
    from auditor.model.rewrite.preprocess import Preprocessing

    proto = load_model(ROOT / "models" / "bn_resnet.onnx")
    a, b = OnnxClassifier(proto, batch_size=8), OnnxClassifier(proto, batch_size=64)
    assert a.model is b.model and a.instrumented is b.instrumented and a.weights is b.weights
    assert a.runner is not b.runner and a.runner.session is not b.runner.session  # independent sessions
    c = OnnxClassifier(proto, Preprocessing(mean=[0.1], std=[0.25]))
    assert c.model is not a.model and c.base_model is a.base_model
    x = digits(5)
    np.testing.assert_array_equal(a.logits(x), b.logits(x))
    y = np.zeros(5, np.int64)
    np.testing.assert_array_equal(a.value_and_grad(x, "ce", target=y)[1], b.value_and_grad(x, "ce", target=y)[1])


def test_gradient_sessions_live_until_released_and_are_built_again_the_same():
    """release_gradients drops every gradient runner of the process (the audit does at the end of
    each stage); the next gradient builds its runner again and computes the same."""
    import weakref

    from auditor.model.load import load_model
    from auditor.runtime.session import release_gradients

    proto = load_model(ROOT / "models" / "bn_resnet.onnx")
    a, b = OnnxClassifier(proto, batch_size=8), OnnxClassifier(proto, batch_size=8)
    verify = OnnxClassifier(proto, batch_size=8, role="verify")
    x, y = digits(3), np.array([1, 2, 3])
    first = a.value_and_grad(x, "ce", target=y)
    assert b._grad_runner("ce") is a._grad_runner("ce")  # one gradient session per role, threads, batch
    assert set(a._grad_runners) == {"ce"} and not verify._grad_runners
    gone = weakref.ref(a._grad_runner("ce")[0])
    release_gradients()
    assert not a._grad_runners and not b._grad_runners and gone() is None  # its session went with it
    again = b.value_and_grad(x, "ce", target=y)
    assert set(a._grad_runners) == {"ce"}
    for u, v in zip(first, again):
        np.testing.assert_array_equal(u, v)
    release_gradients()


def test_a_preprocessing_is_prepended_to_the_model_without_its_weights_data():
    """The raw-domain model of a non-identity preprocessing is a rewrite of the deployed model
    without its large weights' data: its sessions are given them from the deployed model, and it
    computes what the deployed model computes on inputs normalised in numpy."""
    import onnx

    from auditor.model.load import load_model
    from auditor.model.rewrite.preprocess import Preprocessing

    proto = load_model(ROOT / "models" / "bn_resnet.onnx")
    pre = Preprocessing(mean=[0.1], std=[0.25])
    c, plain = OnnxClassifier(proto, pre, batch_size=8), OnnxClassifier(proto, batch_size=8)
    left_out = {t.name for t in c.model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL}
    assert left_out and left_out == set(c.weights.shared_in(c.model)) and c.weights.source is proto
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in c.instrumented.graph.initializer)
    x, y = digits(4), np.array([1, 2, 3, 4])
    np.testing.assert_array_equal(c.logits(x), plain.logits(pre.apply(x)))
    g = c.value_and_grad(x, "ce", target=y)[1]
    np.testing.assert_allclose(g, plain.value_and_grad(pre.apply(x), "ce", target=y)[1] / 0.25, rtol=1e-4, atol=1e-6)
