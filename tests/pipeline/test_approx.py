"""ApproxClassifier (approximate forward, BPDA gradients) and the approximate-model audit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from auditor.pipeline.approx import approx_audit
from auditor.runtime.approx import ApproxClassifier
from auditor.errors import AuditorError
from auditor.runtime.evaluate import evaluate
from auditor.hw.profile import Approx
from auditor.model.load import prepare
from auditor.model.rewrite.preprocess import Preprocessing
from auditor.runtime.session import OnnxClassifier
from builders import tiny_cnn

ROOT = Path(__file__).resolve().parents[2]
LENET = str(ROOT / "models" / "lenet5.onnx")
RESNET = str(ROOT / "models" / "bn_resnet.onnx")
OBJECTIVES = [("ce", lambda y: {"target": y}),
              ("margin", lambda y: {"label": y, "kappa": np.float32(1e30)}),
              ("logit", lambda y: {"index": (y + 1) % 10}),
              ("act_l2", lambda y: {})]


def digits(n, start=0):
    d = np.load(ROOT / "auditor" / "data" / "digits28_test.npz")
    return d["x"][start:start + n].astype(np.float32) / 255, d["y"][start:start + n].astype(np.int64)


@pytest.fixture(scope="module")
def lenet():
    return OnnxClassifier(LENET), ApproxClassifier(LENET, None, Approx())


@pytest.mark.parametrize("path,pre", [(LENET, None), (RESNET, Preprocessing(mean=[0.1], std=[0.25]))])
def test_bpda_with_exact_multiplier_is_the_exact_gradient(path, pre):
    x, y = digits(6)
    ex = OnnxClassifier(path, pre)
    ap = ApproxClassifier(path, pre, Approx(multiplier="exact"))
    for objective, knobs in OBJECTIVES:
        v, g, z = ap.value_and_grad(x, objective, **knobs(y))
        ve, ge, ze = ex.value_and_grad(x, objective, **knobs(y))
        # the exact variant differs from onnxruntime only by float64 accumulation
        np.testing.assert_allclose(z, ze, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(v, ve, rtol=1e-4, atol=1e-4)
        scale = np.abs(ge).max()
        np.testing.assert_allclose(g, ge, rtol=1e-3, atol=1e-4 * scale)


@pytest.mark.parametrize("variant", ["da-reference", "flat-ama5"])
def test_bpda_logits_are_the_approximate_forward_bit_exactly(variant):
    x, y = digits(5, 10)
    pre = Preprocessing(mean=[0.1], std=[0.25])
    for path, p in ((LENET, None), (RESNET, pre)):
        ap = ApproxClassifier(path, p, Approx(multiplier=variant))
        z = ap.logits(x)
        ex = OnnxClassifier(path, p).logits(x)
        assert not np.allclose(z, ex, atol=1e-2)  # the approximation is visible
        for objective, knobs in OBJECTIVES:
            v, g, zz = ap.value_and_grad(x, objective, **knobs(y))
            np.testing.assert_array_equal(zz, z)
            assert np.isfinite(g).all() and np.abs(g).max() > 0
        # independent verifier: a separate ApproxModel of the plain model gives the same logits
        np.testing.assert_array_equal(ap.verifier().logits(x), z)


def test_bpda_gradient_is_the_exact_vjp_at_the_approximate_activations():
    """Manual VJP of Conv-Relu-MaxPool-Gemm-Relu-Gemm with the approximate forward's values."""
    model, inits = tiny_cnn(np.random.default_rng(3), integer=False)
    model = prepare(model)
    ap = ApproxClassifier(model, None, Approx())
    assert ap.approx_nodes == ("conv1", "fc1", "fc2")
    x = np.random.default_rng(4).random((3, 1, 8, 8)).astype(np.float32)
    idx = np.array([0, 2, 1])
    _, g, z = ap.value_and_grad(x, "logit", index=idx)
    fwd = ap.approx_model.run(x, ["c1", "r1", "g1"])
    np.testing.assert_array_equal(z, fwd["y"])
    c1, r1, g1 = (fwd[k].astype(np.float64) for k in ("c1", "r1", "g1"))
    w1, w2, w3 = (inits[k].astype(np.float64) for k in ("w1", "w2", "w3"))
    dr2 = w3[:, idx].T  # (N, 5)
    dg1 = dr2 * (g1 > 0)
    dp1 = (dg1 @ w2).reshape(3, 4, 4, 4)
    win = r1.reshape(3, 4, 4, 2, 4, 2).transpose(0, 1, 2, 4, 3, 5).reshape(3, 4, 4, 4, 4)
    first = win.argmax(axis=-1)
    dr1 = np.zeros((3, 4, 4, 4, 4))
    np.put_along_axis(dr1, first[..., None], dp1[..., None], axis=-1)
    dr1 = dr1.reshape(3, 4, 4, 4, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(3, 4, 8, 8)
    dc1 = dr1 * (c1 > 0)
    pad = np.pad(dc1, ((0, 0), (0, 0), (1, 1), (1, 1)))
    dx = np.zeros((3, 1, 8, 8))
    for ki in range(3):
        for kj in range(3):  # y[i, j] = sum x[i + ki - 1, j + kj - 1] w[ki, kj]
            dx[:, 0] += np.einsum("noij,o->nij", pad[:, :, 2 - ki:10 - ki, 2 - kj:10 - kj], w1[:, 0, ki, kj])
    np.testing.assert_allclose(g, dx, rtol=1e-4, atol=1e-5 * np.abs(dx).max())
    # and it differs from the exact model's gradient (the approximate activations matter)
    ge = OnnxClassifier(model).value_and_grad(x, "logit", index=idx)[1]
    assert not np.allclose(g, ge, rtol=1e-3, atol=1e-4)


def test_layer_subset_and_evaluate(lenet):
    ex, ap = lenet
    x, _ = digits(4)
    first = ApproxClassifier(LENET, None, Approx(layers=["/features/features.0/Conv"]))
    assert first.approx_nodes == ("/features/features.0/Conv",)
    assert ap.approx_nodes == tuple(layer.name for layer in ap.layers)  # every Conv and Gemm of LeNet-5
    none = ApproxClassifier(LENET, None, Approx(layers=[]))
    np.testing.assert_allclose(none.logits(x), ex.logits(x), rtol=1e-5, atol=1e-5)
    # evaluate() and a cost model work unchanged on the approximate classifier
    from auditor.hw.fpu import FpuModel

    ev = evaluate(ap, x, FpuModel())
    assert ev.logits.shape == (4, 10) and ev.cost.cycles.shape == (4, len(ap.layers))
    np.testing.assert_array_equal(ev.logits, ap.logits(x))
    out = ap.forward(x)
    assert set(ap.activation_names) <= set(out) and ap.input_shape == (1, 28, 28) and ap.num_classes == 10
    assert ap.queries > 0


def test_bad_approx_settings():
    with pytest.raises(AuditorError, match="no node named"):
        ApproxClassifier(LENET, None, Approx(layers=["nope"]))
    with pytest.raises(AuditorError, match="multiplier"):
        ApproxClassifier(LENET, None, {"multiplier": "bogus"})
    with pytest.raises(AuditorError, match="only Conv"):
        ApproxClassifier(LENET, None, Approx(layers=["/features/features.1/Relu"]))


def test_approx_audit_small(lenet):
    ex, ap = lenet
    x, y = digits(4)
    sur = OnnxClassifier(str(ROOT / "models" / "surrogate_cnn.onnx"))
    rep = approx_audit(
        ex, ap, x, y,
        attacks=[{"name": "fgsm", "epsilons": [0.2]},
                 {"name": "pgd", "params": {"steps": 5}, "epsilons": [0.1, 0.3]},
                 {"name": "cw", "params": {"steps": 5, "binary_search_steps": 2}},
                 {"name": "deepfool", "params": {"steps": 5}},
                 {"name": "jsma", "params": {"gamma": 0.05}}],
        surrogate=sur, substitute_attacks=[{"name": "fgsm", "epsilons": [0.3]}],
        whitebox_attacks=[{"name": "pgd", "params": {"steps": 5}, "epsilons": [0.3]}],
        query_attacks=[{"name": "square", "params": {"n_queries": 20}, "epsilons": [0.3]},
                       {"name": "hsj", "params": {"steps": 2, "init_evals": 10, "max_evals": 100}}],
        minimal_attacks=[{"name": "deepfool", "params": {"steps": 5}}])
    json.dumps(rep)  # plain JSON
    assert set(rep) >= {"clean", "margins", "transfer", "substitute", "whitebox_bpda", "query", "perturbation",
                        "strongest", "worst_case", "candidates"}
    c = rep["clean"]
    assert 0 <= c["exact_accuracy"] <= 1 and 0 <= c["approx_accuracy"] <= 1
    assert c["exact_accuracy"] == 1.0 and c["approx_accuracy"] == 1.0
    assert rep["margins"]["approx"]["top_margin"]["count"] == 4
    assert [t["attack"] for t in rep["transfer"]] == ["fgsm", "pgd", "cw", "deepfool", "jsma"]
    for t in rep["transfer"] + rep["substitute"]:
        for r in t["results"]:
            for k in ("source_success_rate", "exact_success_rate", "approx_success_rate", "transfer_rate_approx"):
                assert r[k] is None or 0 <= r[k] <= 1, (t["attack"], k, r[k])
    pgd = rep["transfer"][1]["results"]
    assert [r["epsilon"] for r in pgd] == [0.1, 0.3]
    assert pgd[1]["source_success_rate"] == 1.0  # PGD at 0.3 always fools the exact LeNet
    wb = rep["whitebox_bpda"][0]["results"][0]
    assert 0 <= wb["approx"]["success_rate"] <= 1 and wb["exact"]["success_rate"] == 1.0
    assert [q["attack"] for q in rep["query"]] == ["square", "hsj"]
    pm = rep["perturbation"][0]
    assert pm["attack"] == "deepfool" and pm["exact"]["n_success"] >= 1
    if pm["paired"]["n"]:
        assert pm["paired"]["mse_ratio"] > 0
    s = rep["strongest"]
    assert s is not None and s["bounded"] and 0 <= s["success_rate"] <= 1
    assert s["success_rate"] == max(c["success_rate"] for c in rep["candidates"] if c["bounded"])
    assert all(0 <= w["success_rate"] <= 1 for w in rep["worst_case"].values())
    assert rep["worst_case"]["linf@0.3"]["success_rate"] >= s["success_rate"] or s["norm"] != "linf"


def test_approx_audit_rejects_bad_input(lenet):
    ex, ap = lenet
    x, y = digits(2)
    with pytest.raises(AuditorError):
        approx_audit(ex, ap, x, y[:1], attacks=[])
    with pytest.raises(AuditorError, match="unknown attack"):
        approx_audit(ex, ap, x, y, attacks=[{"name": "nope"}], whitebox_attacks=[], query_attacks=[],
                     minimal_attacks=[])


def test_deadline_stops_the_approximate_classifier():
    from auditor.runtime.session import BudgetExceeded

    class Expired:
        def expired(self):
            return True

    ap = ApproxClassifier(LENET, None, Approx())
    x, y = digits(2)
    ap.deadline = Expired()
    with pytest.raises(BudgetExceeded):
        ap.logits(x)
    with pytest.raises(BudgetExceeded):
        ap.value_and_grad(x, "ce", target=y)
    ap.deadline = None
    assert ap.logits(x).shape == (2, 10)


@pytest.mark.parametrize("objective,knobs", [
    ("ce", lambda y: {"target": y.astype(np.int32)}),  # int32 labels
    ("margin", lambda y: {"label": y.astype(np.int32), "kappa": 0.0}),  # a Python float
    ("margin", lambda y: {"label": list(y), "kappa": np.float64(0.0)}),
    ("logit", lambda y: {"index": np.int32(3)}),  # one index for every input
    ("sparsity", lambda y: {"target": y.astype(np.int32), "weights": [1.0] * 5, "beta": 15, "c": 0.5}),
])
def test_knobs_of_any_numeric_type_work_on_the_exact_and_the_approximate_classifier(lenet, objective, knobs):
    """Regression (issue 13): value_and_grad(x, "ce", target=<int32 array>) or kappa=0.0 worked on
    the exact classifier and failed inside onnxruntime on the approximate one; both now feed knobs
    through the same Runner, typed after the gradient graph's inputs."""
    x, y = digits(3)
    exact, approx = lenet
    n_layers = len(exact.layer_tensors)
    kn = knobs(y)
    if "weights" in kn:
        kn["weights"] = [1.0] * n_layers
    for clf in (exact, approx):
        v, g, z = clf.value_and_grad(x, objective, **kn)
        assert v.shape == (3,) and g.shape == x.shape and z.shape == (3, 10)
        assert np.isfinite(v).all() and np.isfinite(g).all()
        typed = {k: (np.asarray(val).astype(np.int64) if k in ("target", "label", "index") else
                     np.asarray(val, np.float32)) for k, val in kn.items()}
        if objective == "logit":
            typed["index"] = np.full(3, 3, np.int64)
        v2, g2, _ = clf.value_and_grad(x, objective, **typed)  # the declared types give the same values
        np.testing.assert_array_equal(v, v2)
        np.testing.assert_array_equal(g, g2)
