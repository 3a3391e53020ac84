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
