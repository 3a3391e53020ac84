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


@pytest.mark.parametrize("model", ["plain_cnn.onnx", "bn_resnet.onnx"])
def test_gradient_pass_measures_the_cost_of_the_same_activations(model):
    """value_grad_measure: the gradient pass's value, gradient and logits are those of
    value_and_grad, and the compute layers' inputs it hands over give the cost cost_fn measures
    with a forward pass of its own, bit for bit, one chunk of the gradient runner at a time."""
    from auditor.hw import build_cost_model
    from auditor.runtime.evaluate import cost_fn
    from auditor.runtime.session import OnnxClassifier

    clf = OnnxClassifier(ROOT / "models" / model, batch_size=2)
    cm = build_cost_model("cnvlutin")
    f = cost_fn(clf, cm)
    assert set(f.tensors) == set(clf.gradient_tensors()) == set(clf.probes.layer_inputs)
    x = np.random.default_rng(0).random((5,) + clf.input_shape, dtype=np.float32)
    knobs = dict(weights=np.ones(len(clf.layer_tensors), np.float32), beta=np.float32(10), c=np.float32(0.5),
                 target=clf.predict(x))
    v, g, lg = clf.value_and_grad(x, "sparsity", **knobs)
    seen = []

    def measure(tensors, logits, rows):
        seen.append((rows.start, rows.stop))
        assert set(tensors) == set(f.tensors) and all(len(a) == len(logits) for a in tensors.values())
        return f.of_outputs(tensors)

    q = clf.queries
    v2, g2, lg2, m = clf.value_grad_measure(x, "sparsity", (f.tensors, measure), **knobs)
    assert clf.queries == q + len(x) and seen == [(0, 2), (2, 4), (4, 5)]
    for a, b in ((v, v2), (g, g2), (lg, lg2)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(m, f(x))
    opts = clf._grad_runner("sparsity")[0].session.get_session_options()
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"  # numba runs in between
    with pytest.raises(ValueError, match="does not compute"):
        clf.value_grad_measure(x, "sparsity", (("no_such_tensor",), measure), **knobs)


def test_whitebox_scores_from_the_gradient_pass_as_from_a_forward_pass():
    """The white-box search measures its candidates from the activations of their own gradient
    pass when cost_fn can (cost_fn of the same classifier); a cost function that cannot (a plain
    callable) makes it measure them with forward passes.  Same inputs, costs, iterations and
    counts either way, labels lost on the way (candidates masked) and kept."""
    from auditor.attacks.energy import make_search
    from auditor.hw import build_cost_model
    from auditor.runtime.evaluate import cost_fn
    from auditor.runtime.session import OnnxClassifier

    clf = OnnxClassifier(MODEL, batch_size=3)
    f = cost_fn(clf, build_cost_model("cnvlutin"))
    x = np.load(DATA)["x"][:7].astype(np.float32) / 255.0
    s = make_search("whitebox", eps=None, eps_iter=3.0, c_in=0.0, iterations=12, batch_size=5, progress=False)
    calls = []
    forward = clf.forward
    clf.forward = lambda z: calls.append(len(z)) or forward(z)
    fast = s(clf, x, cost_fn=f, seed=0)
    n_fast = len(calls)
    slow = s(clf, x, cost_fn=lambda z: f(z), seed=0)
    assert n_fast == 3 and len(calls) > n_fast + 12  # the clean cost only (7 inputs, chunks of 3), against per iteration
    for k in ("best_iteration", "cost_clean", "model_queries", "cost_queries"):
        np.testing.assert_array_equal(fast.info[k], slow.info[k])
    np.testing.assert_array_equal(fast.x, slow.x)
    np.testing.assert_array_equal(fast.cost, slow.cost)
    assert fast.info["cost_queries"] < len(x) * 13  # some iterates lost the label: not measured
    assert (fast.info["best_iteration"] > 0).any() and fast.label_kept.all()
    np.testing.assert_array_equal(clf.predict(fast.x), clf.predict(x))
    np.testing.assert_array_equal(fast.cost, f(fast.x))  # the cost reported is the forward pass's
