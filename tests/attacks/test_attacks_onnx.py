"""Attacks through the project's ONNX gradients on a bundled model."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "plain_cnn.onnx"
DATA = ROOT / "auditor" / "data" / "digits28_test.npz"


def onnx_classifier(model):
    # skipped only while the ONNX gradient path (OnnxClassifier and its objectives) is not there
    for mod in ("auditor.runtime.session", "auditor.grad.objectives"):
        if importlib.util.find_spec(mod) is None:
            pytest.skip(f"{mod} does not exist yet")
    from auditor.runtime.session import OnnxClassifier

    return OnnxClassifier(model)


@pytest.fixture(scope="module")
def setup():
    clf = onnx_classifier(str(MODEL))
    d = np.load(DATA)
    x, y = (d["x"][:10] / 255.0).astype(np.float32), d["y"][:10]
    return clf, x, y


def test_pgd_on_plain_cnn_leaves_robust_accuracy_well_below_clean(setup):
    from auditor.attacks.evasion import PGD

    clf, x, y = setup
    clean = clf.predict(x) == y
    assert clean.mean() >= 0.8
    res = PGD(steps=10)(clf, x, y, [0.3])
    robust = clean & ~res.success[0]
    assert robust.mean() <= clean.mean() - 0.5
    assert np.abs(res.x_adv[0] - x).max() <= 0.3 + 1e-6


def test_audit_on_plain_cnn_verifies_with_an_independent_session(setup):
    from auditor.model.rewrite.reshape import gradient_inhibition
    from auditor.pipeline.robustness import ort_classifier, robustness_audit, transfer

    clf, x, y = setup
    rep = robustness_audit(clf, x, y, [("fgsm", {}, "linf", [0.1, 0.3]), ("deepfool", {"steps": 10}, "l2", [2.0])],
                           verify=ort_classifier(str(MODEL)), seed=0)
    fg = rep["attacks"][0]["results"]
    assert fg[0]["robust_accuracy"] >= fg[1]["robust_accuracy"]
    assert all(r["n_unverified"] == 0 for a in rep["attacks"] for r in a["results"])
    assert rep["attacks"][1]["minimal_perturbation"]["n_success"] >= 5
    gi = ort_classifier(gradient_inhibition(str(MODEL), 0.1))
    assert 0.0 <= transfer(x, y, gi) <= 0.3  # clean inputs: only the model's own errors
