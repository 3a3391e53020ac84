"""Gradient-based attacks against analytic models with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from auditor.attacks.evasion import FGSM, JSMA, PGD, CarliniWagnerL2, DeepFool, make_attack
from auditor.norms import norm
from analytic import make_linear_binary, make_linear_multiclass, make_mlp


def test_fgsm_on_a_linear_model_is_the_closed_form():
    model, x, y = make_linear_multiclass()
    eps = 0.3
    res = FGSM()(model, x, y, [eps])
    # d CE / dx = W^T (softmax(z) - onehot(y))
    xf = x.reshape(len(x), -1).astype(np.float64)
    z = xf @ model.W.T + model.b
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    p[np.arange(len(x)), y] -= 1
    expected = np.clip(xf + eps * np.sign(p @ model.W), *model.bounds).reshape(x.shape)
    np.testing.assert_allclose(res.x_adv[0], expected, atol=1e-6)
    assert res.norm == "linf" and res.epsilons == [eps]
    np.testing.assert_array_equal(res.success[0], model.predict(expected) != y)
    # the L2 variant (FGM) steps along the normalised gradient
    res2 = FGSM(norm="l2")(model, x, y, [0.5])
    g = p @ model.W
    exp2 = np.clip(xf + 0.5 * g / np.linalg.norm(g, axis=1, keepdims=True), *model.bounds).reshape(x.shape)
    np.testing.assert_allclose(res2.x_adv[0], exp2, atol=1e-5)


def test_fgsm_targeted_descends_the_target_loss():
    model, x, y = make_linear_multiclass()
    t = (y + 1) % model.num_classes
    res = FGSM()(model, x, y, [0.5], targets=t)
    xf = x.reshape(len(x), -1).astype(np.float64)
    z = xf @ model.W.T + model.b
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    p[np.arange(len(x)), t] -= 1
    expected = np.clip(xf - 0.5 * np.sign(p @ model.W), *model.bounds).reshape(x.shape)
    np.testing.assert_allclose(res.x_adv[0], expected, atol=1e-6)
    np.testing.assert_array_equal(res.success[0], model.predict(expected) == t)


@pytest.mark.parametrize("kind", ["linf", "l2"])
def test_pgd_robust_accuracy_is_non_increasing_in_eps_and_stays_in_the_ball(kind):
    model, x, y = make_mlp()
    eps = [0.01, 0.03, 0.05, 0.08, 0.12] if kind == "linf" else [0.05, 0.15, 0.25, 0.4, 0.6]
    res = PGD(norm=kind, steps=20)(model, x, y, eps[::-1])  # any order in, same order out
    assert res.epsilons == eps[::-1]
    rates = [s.mean() for s in res.success[::-1]]
    assert all(a <= b + 1e-12 for a, b in zip(rates, rates[1:]))
    assert rates[0] < 1.0 and rates[-1] == 1.0
    for xa, e, s in zip(res.x_adv, res.epsilons, res.success):
        assert np.all(norm(xa - x, kind) <= e * (1 + 1e-5) + 1e-6)
        assert xa.min() >= 0.0 and xa.max() <= 1.0
        np.testing.assert_array_equal(s, model.predict(xa) != y)  # success = fresh forward pass
    # separate runs agree with the nested run within random-start noise
    single = [PGD(norm=kind, steps=20)(model, x, y, [e]).success[0].mean() for e in eps]
    assert np.all(np.diff(single) >= -0.1)


def test_pgd_beats_fgsm_and_restarts_do_not_hurt():
    model, x, y = make_mlp(seed=1)
    eps = [0.04]
    f = FGSM()(model, x, y, eps).success[0].mean()
    p1 = PGD(steps=30)(model, x, y, eps, seed=3)
    p3 = PGD(steps=30, restarts=3)(model, x, y, eps, seed=3)
    assert p1.success[0].mean() >= f
    assert p3.success[0].mean() >= p1.success[0].mean()
    for sched in ("step", "cosine"):
        ps = PGD(steps=30, schedule=sched, loss="margin")(model, x, y, eps)
        assert ps.success[0].mean() >= f - 0.05


@pytest.mark.parametrize("attack", [PGD(steps=40), PGD(norm="l2", steps=40),
                                    CarliniWagnerL2(steps=60, binary_search_steps=6),
                                    DeepFool(), JSMA()], ids=["pgd-linf", "pgd-l2", "cw", "deepfool", "jsma"])
def test_targeted_attacks_reach_their_target(attack):
    model, x, y = make_mlp()
    t = (y + 2) % model.num_classes
    eps = None if attack.minimal else [1.0 if attack.norm == "linf" else 6.0]
    res = attack(model, x, y, eps, targets=t)
    assert res.targeted
    pred = model.predict(res.x_adv[0])
    assert res.success[0].mean() >= 0.9
    np.testing.assert_array_equal(pred[res.success[0]], t[res.success[0]])


@pytest.mark.parametrize("name", ["deepfool", "cw"])
def test_minimal_attacks_find_the_distance_to_the_hyperplane(name):
    model, x, y, true_dist = make_linear_binary()
    res = make_attack(name)(model, x, y)
    assert res.success[0].all()
    ratio = res.distances / true_dist
    assert ratio.min() >= 1 - 1e-4  # nothing closer than the hyperplane exists
    assert ratio.max() <= 1.01
    np.testing.assert_allclose(norm(res.x_adv[0] - x, "l2"), res.distances, rtol=1e-6)
    # with epsilons, success is the perturbation fitting into the ball
    eps = float(np.median(true_dist))
    r2 = make_attack(name)(model, x, y, [eps])
    np.testing.assert_array_equal(r2.success[0], res.distances <= eps)


def test_cw_is_not_worse_than_deepfool_on_an_mlp():
    model, x, y = make_mlp()
    df = DeepFool()(model, x, y)
    cw = CarliniWagnerL2(steps=100, binary_search_steps=6)(model, x, y)
    assert df.success[0].all() and cw.success[0].all()
    # C&W optimises; it should not be much worse than DeepFool's linearised steps
    assert np.median(cw.distances) <= 1.05 * np.median(df.distances)


def test_jsma_changes_few_features_and_reports_l0():
    model, x, y = make_mlp()
    res = JSMA()(model, x, y)
    assert res.norm == "l0" and res.success[0].mean() >= 0.9
    changed = (res.x_adv[0] != x).reshape(len(x), -1).sum(axis=1)
    np.testing.assert_array_equal(changed[res.success[0]], res.distances[res.success[0]])
    assert np.all(changed % 2 == 0)  # features move in pairs
    r2 = JSMA()(model, x, y, [4])
    np.testing.assert_array_equal(r2.success[0], res.distances <= 4)
    # decreasing variant
    r3 = JSMA(theta=-1.0)(model, x, y)
    assert r3.success[0].mean() >= 0.5
    assert np.all(r3.x_adv[0] <= x + 1e-7)


def test_saturated_cross_entropy_falls_back_to_the_margin():
    model, x, y = make_linear_multiclass()
    model.W, model.b = model.W * 1e4, model.b * 1e4  # softmax saturates: CE gradient exactly 0
    _, g, _ = model.value_and_grad(x, "ce", target=y)
    assert np.mean(~np.any(g.reshape(len(x), -1) != 0, axis=1)) > 0.5
    eps = [2.0]
    assert FGSM()(model, x, y, eps).success[0].mean() > 0.5
    assert PGD(steps=10)(model, x, y, eps).success[0].mean() >= FGSM()(model, x, y, eps).success[0].mean()


def test_cw_adapts_its_step_size_on_few_step_budgets():
    model, x, y = make_mlp()
    few = dict(steps=10, binary_search_steps=10, initial_const=0.01)  # ART's default budget
    auto = CarliniWagnerL2(**few)(model, x, y)
    fixed = CarliniWagnerL2(adaptive_lr=False, **few)(model, x, y)
    assert auto.success[0].mean() == 1.0 and fixed.success[0].mean() < 1.0
    ref = CarliniWagnerL2()(model, x, y)  # 100 steps: reference Adam
    assert np.median(auto.distances) <= 1.1 * np.median(ref.distances)
