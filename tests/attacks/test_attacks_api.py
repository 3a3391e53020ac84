"""The uniform attack interface: registry, parameter and input checking, ε conventions."""

from __future__ import annotations

import numpy as np
import pytest

from auditor.attacks.evasion import ATTACKS, PGD, DeepFool, attack_parameters, default_epsilon, make_attack
from auditor.errors import AuditorError
from analytic import LinearSoftmax, make_mlp


def test_registry_and_make_attack():
    # the attacks shipped are registered (a new one needs no edit here: test_contract.py iterates the registry)
    assert set(ATTACKS) >= {"fgsm", "pgd", "cw", "deepfool", "jsma", "zoo", "square", "hsj", "apgd", "apgd_t", "fab",
                            "autoattack", "boundary", "lsa"}
    a = make_attack("PGD", steps=7, norm="l2")
    assert isinstance(a, PGD) and a.steps == 7 and a.norm == "l2"
    assert attack_parameters("pgd")["steps"] == 40
    with pytest.raises(AuditorError, match="unknown attack"):
        make_attack("no_such_attack")
    with pytest.raises(AuditorError, match="unknown parameter"):
        make_attack("pgd", step=3)
    for bad in ({"steps": 0}, {"steps": 2.5}, {"norm": "l1"}, {"rel_stepsize": -1.0}, {"loss": "hinge"},
                {"restarts": True}):
        with pytest.raises(AuditorError):
            make_attack("pgd", **bad)
    with pytest.raises(AuditorError):
        make_attack("jsma", theta=0.0)
    with pytest.raises(AuditorError):
        make_attack("square", p_init=1.5)


# every attack's uniform call (shapes, pixel range, ε list, queries, minimal distances): test_contract.py


def test_input_checking():
    model, x, y = make_mlp()
    a = PGD(steps=2)
    with pytest.raises(AuditorError, match="shape"):
        a(model, x[:, 0], y)
    with pytest.raises(AuditorError, match="pixel range"):
        a(model, x + 2, y)
    bad = x.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(AuditorError, match="NaN"):
        a(model, bad, y)
    with pytest.raises(AuditorError, match="labels"):
        a(model, x, y[:-1])
    with pytest.raises(AuditorError, match="labels"):
        a(model, x, y + 10)
    with pytest.raises(AuditorError, match="target"):
        a(model, x, y, targets=y)
    with pytest.raises(AuditorError, match="epsilons"):
        a(model, x, y, [-0.1])
    with pytest.raises(AuditorError, match="seed"):
        a(model, x, y, seed="zero")
    with pytest.raises(AuditorError, match="Classifier"):
        a(object(), x, y)


def test_robustbench_default_budgets():
    assert default_epsilon("linf", (1, 28, 28)) == pytest.approx(0.3)
    assert default_epsilon("linf", (3, 32, 32)) == pytest.approx(8 / 255)
    assert default_epsilon("l2", (3, 32, 32)) == pytest.approx(0.5)
    assert default_epsilon("linf", (3, 224, 224)) == pytest.approx(4 / 255)
    assert default_epsilon("linf", (1, 28, 28), (0, 255)) == pytest.approx(0.3 * 255)
    with pytest.raises(AuditorError):
        default_epsilon("l0", (1, 28, 28))
    model, x, y = make_mlp()
    res = PGD(steps=2)(model, x, y)
    assert res.epsilons == [pytest.approx(0.3)]  # single channel: the MNIST budget


def test_seeded_runs_are_reproducible_and_batching_does_not_matter():
    model, x, y = make_mlp()
    a = PGD(steps=5, random_start=True)
    r1, r2, r3 = a(model, x, y, [0.05], seed=4), a(model, x, y, [0.05], seed=4), a(model, x, y, [0.05], seed=5)
    np.testing.assert_array_equal(r1.x_adv[0], r2.x_adv[0])
    assert not np.array_equal(r1.x_adv[0], r3.x_adv[0])
    d1 = DeepFool()(model, x, y)
    d2 = DeepFool(batch_size=7)(model, x, y)
    np.testing.assert_allclose(d1.distances, d2.distances, rtol=1e-5)


def test_already_misclassified_inputs_are_free_successes():
    model, x, y = make_mlp()
    wrong = (y + 1) % model.num_classes
    res = PGD(steps=3)(model, x, wrong, [0.01])
    assert res.success[0].all()
    np.testing.assert_array_equal(res.x_adv[0], x)
    d = DeepFool()(model, x, wrong)
    assert np.all(d.distances == 0)


def test_progress_bar_can_be_forced(capsys):
    model, x, y = make_mlp()
    PGD(steps=3, progress=True)(model, x, y, [0.01])
    assert "pgd attack" in capsys.readouterr().err


def test_bounds_other_than_unit_range_are_respected():
    rng = np.random.default_rng(0)
    model = LinearSoftmax(rng.normal(size=(3, 8)), np.zeros(3), (1, 2, 4), bounds=(0.0, 255.0))
    x = rng.uniform(0, 255, (10, 1, 2, 4)).astype(np.float32)
    y = model.predict(x)
    res = PGD(steps=10)(model, x, y)
    assert res.epsilons == [pytest.approx(0.3 * 255)]
    assert res.x_adv[0].min() >= 0 and res.x_adv[0].max() <= 255
