"""The robustness audit: metrics, independent re-verification, transferability and checks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from auditor.attacks.evasion import ATTACKS, PGD
from auditor.attacks.evasion.fgsm import FGSM
from auditor.errors import AuditorError
from auditor.pipeline.checks import CHECKS, check_min_robust_accuracy
from auditor.pipeline.robustness import robustness_audit, transfer
from auditor.runtime.classifier import Classifier
from analytic import make_mlp

SPECS = [
    ("fgsm", {}, "linf", [0.02, 0.05]),
    ("pgd", {"steps": 20}, "linf", [0.02, 0.05]),
    ("pgd", {"steps": 20}, "l2", [0.1]),
    ("deepfool", {}, None, [0.05, 0.1]),
    ("jsma", {}, None, None),
    ("square", {"n_queries": 200}, "linf", [0.05]),
    {"name": "pgd", "params": {"steps": 20}, "epsilons": [0.2], "targeted": "random"},
]


class Lying(Classifier):
    """Always answers the given labels: nothing can be verified as adversarial against it."""

    def __init__(self, inner, labels):
        super().__init__()
        self.inner, self.labels = inner, labels
        self.input_shape, self.num_classes, self.bounds = inner.input_shape, inner.num_classes, inner.bounds

    def _logits(self, x):
        z = np.zeros((len(x), self.num_classes), np.float32)
        z[np.arange(len(x)), self.labels[:len(x)]] = 1.0
        return z

    def _value_and_grad(self, x, objective, knobs):
        raise NotImplementedError


@pytest.fixture(scope="module")
def audited():
    model, x, y = make_mlp()
    verify, _, _ = make_mlp()  # an independent instance of the same model
    y = y.copy()
    y[:4] = (y[:4] + 1) % model.num_classes  # four inputs misclassified from the start
    return model, x, y, robustness_audit(model, x, y, SPECS, verify=verify, seed=0)


def test_report_is_plain_json_with_every_metric(audited):
    model, x, y, rep = audited
    json.dumps(rep, allow_nan=False)
    assert rep["n"] == 40 and rep["clean_accuracy"] == pytest.approx(36 / 40)
    assert set(rep["clean_margin"]) == {"count", "n_infinite", "mean", "quantiles"}
    names = [(a["attack"], a["norm"]) for a in rep["attacks"]]
    assert names == [("fgsm", "linf"), ("pgd", "linf"), ("pgd", "l2"), ("deepfool", "l2"), ("jsma", "l0"),
                     ("square", "linf"), ("pgd", "linf")]
    for a in rep["attacks"]:
        assert a["seconds"] >= 0 and a["queries"]["total"] > 0
        for r in a["results"]:
            assert 0 <= r["robust_accuracy"] <= rep["clean_accuracy"]
            assert r["robust_accuracy"] == pytest.approx(rep["clean_accuracy"] * (1 - r["attack_success_rate"]))
            assert r["n_attacked"] == 36 and r["n_unverified"] == 0
            assert r["margin"]["count"] == 40
    fgsm, pgd = rep["attacks"][0], rep["attacks"][1]
    assert [r["epsilon"] for r in pgd["results"]] == [0.02, 0.05]
    assert pgd["results"][0]["robust_accuracy"] >= pgd["results"][1]["robust_accuracy"]
    assert pgd["results"][0]["robust_accuracy"] <= fgsm["results"][0]["robust_accuracy"]
    # attacked margins shrink
    assert pgd["results"][1]["label_margin"]["mean"] < rep["clean_label_margin"]["mean"]
    # minimal-norm statistics
    mp = rep["attacks"][3]["minimal_perturbation"]
    assert mp["n_success"] == 36 and mp["median_l2"] > 0
    assert set(mp) >= {"l2", "linf", "mse", "psnr", "median_l2"}
    assert mp["l2"]["quantiles"]["0.5"] == pytest.approx(mp["median_l2"])
    assert rep["attacks"][4]["minimal_perturbation"]["median_distance"] >= 1  # JSMA: L0 counts
    # query counts for the query attack
    sq = rep["attacks"][5]["results"][0]["queries"]
    assert sq["per_input"]["mean"] >= 1 and sq["to_success"]["count"] > 0
    # targeted run
    assert rep["attacks"][6]["targeted"] == "random"


def test_only_independently_verified_examples_are_counted():
    model, x, y = make_mlp()
    rep = robustness_audit(model, x, y, [("pgd", {"steps": 10}, "linf", [0.1]), ("deepfool", {}, "l2", [1.0])],
                           verify=Lying(model, y))
    for a in rep["attacks"]:
        r = a["results"][0]
        assert r["attack_success_rate"] == 0 and r["robust_accuracy"] == 1.0 and r["n_unverified"] > 0
    assert rep["attacks"][1]["minimal_perturbation"]["n_success"] == 0
    assert rep["attacks"][1]["minimal_perturbation"]["median_l2"] is None  # infinitely far


def test_examples_outside_the_ball_are_not_counted(monkeypatch):
    class Cheater(FGSM):
        def _attack_eps(self, ctx, eps):
            return ctx.clip(super()._attack_eps(ctx, 3 * eps))

    from auditor.attacks.evasion import base
    monkeypatch.setattr(base, "project", lambda x, x0, eps, kind, bounds: x)  # no projection either
    monkeypatch.setitem(ATTACKS._entries, "fgsm", Cheater)  # the registry's entry, for this test only
    model, x, y = make_mlp()
    rep = robustness_audit(model, x, y, [("fgsm", {}, "linf", [0.02])], verify=model)
    r = rep["attacks"][0]["results"][0]
    assert r["attack_success_rate"] == 0 and r["n_unverified"] > 0


def test_transfer_between_models():
    model, x, y = make_mlp(seed=0)
    other, _, _ = make_mlp(seed=1)
    res = PGD(steps=20)(model, x, y, [0.1])
    assert transfer(res.x_adv[0], y, model, mask=res.success[0]) == 1.0
    rate = transfer(res.x_adv[0], y, other)
    assert 0.0 <= rate <= 1.0
    assert np.isnan(transfer(res.x_adv[0], y, other, mask=np.zeros(len(y), bool)))
    with pytest.raises(AuditorError):
        transfer(res.x_adv[0], y[:3], other)


def test_checks(audited):
    """The robustness checks of the check registry on a robustness report (the per-attack
    success-rate and median-L2 variants, used by no scenario, are gone: the scenario's
    max_attack_success_rate is over every attack and epsilon, min_median_l2 over every
    minimal-norm attack)."""
    _, _, _, rep = audited
    row = check_min_robust_accuracy(rep, "pgd", "linf", 0.05, 0.5)
    assert set(row) == {"check", "attack", "norm", "epsilon", "measured", "threshold", "passed"}
    assert row["passed"] == (row["measured"] >= 0.5)
    pr = {"robustness": rep}
    [(name, measured, thr, _)] = CHECKS.get("max_attack_success_rate").measure(0.99, pr, None)
    assert measured == max(r["attack_success_rate"] for a in rep["attacks"] for r in a["results"]) and thr == 0.99
    [(name, measured, thr, _)] = CHECKS.get("min_median_l2").measure(10.0, pr, None)
    meds = [a["minimal_perturbation"]["median_l2"] for a in rep["attacks"] if "minimal_perturbation" in a]
    assert measured == min(float("inf") if m is None else m for m in meds) and not measured >= 10.0
    assert check_min_robust_accuracy(rep, "pgd", "l2", 0.1, 0.0)["passed"]
    with pytest.raises(AuditorError, match="epsilon"):
        check_min_robust_accuracy(rep, "pgd", "linf", 0.3, 0.5)
    with pytest.raises(AuditorError, match="no cw"):
        check_min_robust_accuracy(rep, "cw", None, 0.3, 0.5)
    with pytest.raises(AuditorError, match="unknown check 'max_queries'"):
        CHECKS.get("max_queries")


def test_bad_attack_entries():
    model, x, y = make_mlp()
    with pytest.raises(AuditorError, match="unknown attack"):
        robustness_audit(model, x, y, [("no_such_attack", {}, "l2", None)])
    with pytest.raises(AuditorError, match="norm"):
        robustness_audit(model, x, y, [("cw", {}, "linf", None)])
    with pytest.raises(AuditorError, match="contradicts"):
        robustness_audit(model, x, y, [("pgd", {"norm": "l2"}, "linf", None)])
    with pytest.raises(AuditorError, match="targeted"):
        robustness_audit(model, x, y, [{"name": "pgd", "targeted": "furthest"}])
    with pytest.raises(AuditorError, match="unknown parameter"):
        robustness_audit(model, x, y, [("pgd", {"stepz": 3}, None, None)])


def test_transfer_audit_both_ways():
    from auditor.pipeline.robustness import transfer_audit

    a, x, y = make_mlp(seed=0)
    b, _, _ = make_mlp(seed=0)
    b.W2 = b.W2 * 1.05  # a slightly reshaped copy of the same model
    rep = transfer_audit(a, b, x, y, ("pgd", {"steps": 10}, "linf", [0.05, 0.1]))
    json.dumps(rep, allow_nan=False)
    assert rep["n_common_correct"] >= 35 and [r["epsilon"] for r in rep["results"]] == [0.05, 0.1]
    for r in rep["results"]:
        assert r["a_to_b"] >= 0.8 and r["b_to_a"] >= 0.8  # nearly the same model: examples transfer
