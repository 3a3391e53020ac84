"""White-box sparsity attack on the bundled plain CNN through the ONNX classifier and a cost model.

Skipped while the ONNX gradient machinery (auditor.runtime.session / auditor.grad / auditor.grad.objectives) or
the cost models (auditor.hw) are not there.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "plain_cnn.onnx"
DATA = ROOT / "auditor" / "data" / "digits28_test.npz"

_needed = ("auditor.runtime.session", "auditor.hw", "auditor.grad", "auditor.grad.objectives")
_missing = [m for m in _needed if importlib.util.find_spec(m) is None]
pytestmark = pytest.mark.skipif(bool(_missing) or not MODEL.exists() or not DATA.exists(),
                                reason=f"needs {', '.join(_missing) or 'the bundled model and data'}")


@pytest.fixture(scope="module")
def setup():
    from auditor.hw import build_cost_model
    from auditor.runtime.session import OnnxClassifier

    clf = OnnxClassifier(MODEL)
    cm = build_cost_model("cnvlutin")
    d = np.load(DATA)
    x = d["x"][:8].astype(np.float32) / 255.0

    def latency(z):
        return cm.simulate(list(clf.layers), clf.activations(z)).latency_s

    return clf, cm, x, latency


def _relu_sparsity(clf, x):
    out = clf.forward(x)
    acts = [out[k].reshape(len(x), -1) for k in clf.probes.activations]
    return 1.0 - np.concatenate(acts, axis=1).astype(bool).mean(axis=1)


def test_whitebox_lowers_post_relu_sparsity(setup):
    from auditor.attacks.energy import make_search

    clf, cm, x, latency = setup
    s = make_search("whitebox", eps=None, iterations=40, eps_iter=0.1, select="surrogate", progress=False)
    res = s(clf, x, cost_fn=latency, seed=0)
    assert res.label_kept.all()
    np.testing.assert_array_equal(clf.predict(res.x), clf.predict(x))
    sp0, sp1 = _relu_sparsity(clf, x), _relu_sparsity(clf, res.x)
    assert sp1.mean() < 0.9 * sp0.mean()
    assert res.cost.mean() > res.info["cost_clean"].mean()
    assert res.x.min() >= 0 and res.x.max() <= 1


def test_hardware_weights_are_accepted(setup):
    from auditor.attacks.energy import make_search

    clf, cm, x, latency = setup
    shares = cm.simulate(list(clf.layers), clf.activations(x)).runtime_shares()
    s = make_search("whitebox", eps=0.9, iterations=10, progress=False)
    res = s(clf, x[:4], cost_fn=latency, layer_weights=shares, seed=0)
    assert res.label_kept.all() and np.all(res.cost >= res.info["cost_clean"] - 1e-15)
    assert np.all(res.info["perturbation"]["l2"] <= 0.9 + 1e-5)
