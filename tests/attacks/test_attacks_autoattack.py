"""APGD, APGD-T, FAB, AutoAttack, Square L2, Boundary and Local Search on analytic models."""

from __future__ import annotations

import numpy as np
import pytest

from auditor.attacks.evasion import (APGD, APGDT, FAB, AutoAttack, BoundaryAttack, LocalSearchAttack, SquareAttack,
                             make_attack)
from auditor.attacks.evasion.apgd import checkpoints, dlr_value_and_grad
from auditor.attacks.evasion.base import Context, Oracle
from auditor.attacks.evasion.fab import project_hyperplane
from auditor.errors import AuditorError
from auditor.norms import norm
from analytic import make_linear_binary, make_linear_multiclass, make_mlp
from test_attacks_query import NoGradients


def _linf_distance_multiclass(model, x, y):
    """Closed form: the smallest Linf perturbation that flips a linear model (no box active)."""
    z = x.reshape(len(x), -1).astype(np.float64) @ model.W.T + model.b
    d = np.full(len(x), np.inf)
    for j in range(model.num_classes):
        wd = model.W[y] - model.W[j]
        with np.errstate(invalid="ignore"):
            dist = (z[np.arange(len(x)), y] - z[:, j]) / np.abs(wd).sum(axis=1)
        d = np.where(j != y, np.minimum(d, dist), d)
    return d


def test_checkpoints_follow_the_paper_schedule():
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]


def _ctx(model, x, y, targets=None):
    n = len(x)
    return Context(Oracle(model, np.zeros(n, np.int64), np.arange(n)), x, y, targets, np.random.default_rng(0),
                   model.bounds, model.num_classes, clean_logits=model.logits(x))


@pytest.mark.parametrize("targeted", [False, True])
def test_dlr_gradient_matches_finite_differences(targeted):
    model, x, y = make_mlp(classes=6)
    x, y = x[:6].astype(np.float64), y[:6]
    t = (y + 2) % 6 if targeted else None

    def dlr(xx):  # the loss from logits only, float64
        z = model._forward(xx)[1]
        s = np.sort(z, axis=1)
        r = np.arange(len(z))
        if t is None:
            other = z.copy()
            other[r, y] = -np.inf
            return -(z[r, y] - other.max(axis=1)) / (s[:, -1] - s[:, -3] + 1e-12)
        return -(z[r, y] - z[r, t]) / (s[:, -1] - 0.5 * (s[:, -3] + s[:, -4]) + 1e-12)

    v, g, _ = dlr_value_and_grad(_ctx(model, x.astype(np.float32), y, t), x, np.arange(len(x)), y, t)
    np.testing.assert_allclose(v, dlr(x), rtol=1e-4, atol=1e-5)
    h = 1e-6
    flat = x.reshape(len(x), -1)
    num = np.zeros_like(flat)
    for i in range(flat.shape[1]):
        e = np.zeros_like(flat)
        e[:, i] = h
        num[:, i] = (dlr((flat + e).reshape(x.shape)) - dlr((flat - e).reshape(x.shape))) / (2 * h)
    np.testing.assert_allclose(g.reshape(len(x), -1), num, rtol=1e-3, atol=1e-3)


def test_apgd_finds_every_linear_boundary_closer_than_eps_and_nothing_else():
    model, x, y = make_linear_multiclass(n=40)
    dist = _linf_distance_multiclass(model, x, y)
    eps = float(np.median(dist))
    for att in (APGD(steps=30), APGD(steps=30, loss="dlr"), APGDT(steps=30, n_target_classes=3)):
        res = att(model, x, y, [eps])
        ok = res.success[0]
        assert not np.any(ok & (dist > eps * (1 + 1e-5)))  # cannot beat the closed form
        # finds what is clearly reachable: all of it when every target class is tried (APGD-T); the
        # untargeted losses may follow a class whose boundary is farther
        assert ok[dist < 0.9 * eps].mean() >= (1.0 if att.name == "apgd_t" else 0.9), att.name
        assert np.all(norm(res.x_adv[0] - x, "linf") <= eps * (1 + 1e-6))
        np.testing.assert_array_equal(ok, model.predict(res.x_adv[0]) != y)


def test_apgd_l2_on_a_binary_linear_model():
    model, x, y, true_dist = make_linear_binary(n=16)
    eps = float(np.median(true_dist))
    res = APGD(norm="l2", steps=20)(model, x, y, [eps])
    ok = res.success[0]
    assert np.all(ok[true_dist < 0.95 * eps]) and not np.any(ok & (true_dist > eps * (1 + 1e-5)))
    assert np.all(norm(res.x_adv[0] - x, "l2") <= eps * (1 + 1e-5))


def test_apgd_is_deterministic_by_seed_and_dlr_needs_three_classes():
    model, x, y = make_mlp()
    a = APGD(steps=10)(model, x, y, [0.03], seed=3)
    b = APGD(steps=10)(model, x, y, [0.03], seed=3)
    np.testing.assert_array_equal(a.x_adv[0], b.x_adv[0])
    m2, x2, y2, _ = make_linear_binary(n=4)
    with pytest.raises(AuditorError, match="at least 3 classes"):
        APGD(steps=2, loss="dlr")(m2, x2, y2, [0.1])


def test_hyperplane_projection_closed_forms_and_box():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(5, 12))
    c = rng.uniform(-1, 1, 5)
    big = np.full_like(w, 1e3)
    d2 = project_hyperplane(w, c, -big, big, "l2")
    np.testing.assert_allclose(d2, c[:, None] * w / (w ** 2).sum(axis=1, keepdims=True), atol=1e-9)
    dinf = project_hyperplane(w, c, -big, big, "linf")
    np.testing.assert_allclose(dinf, c[:, None] * np.sign(w) / np.abs(w).sum(axis=1, keepdims=True), atol=1e-9)
    # a box that binds: still on the plane, inside the box, no larger than any random feasible point
    lo, hi = -rng.uniform(0, 0.05, w.shape), rng.uniform(0, 0.05, w.shape)
    cc = 0.3 * (np.where(w > 0, w * hi, w * lo)).sum(axis=1)
    for kind in ("l2", "linf"):
        d = project_hyperplane(w, cc, lo, hi, kind)
        np.testing.assert_allclose((w * d).sum(axis=1), cc, rtol=1e-6)
        assert np.all(d >= lo - 1e-12) and np.all(d <= hi + 1e-12)
        for _ in range(200):  # random feasible points: scale a box point onto the plane
            r = rng.uniform(lo, hi)
            s = cc / (w * r).sum(axis=1)
            good = (s > 0) & (s <= 1)
            cand = s[:, None] * r
            if good.any():
                assert np.all(norm(d[good], kind) <= norm(cand[good], kind) + 1e-9)


@pytest.mark.parametrize("kind", ["l2", "linf"])
def test_fab_reaches_the_minimal_distance_of_a_linear_model(kind):
    model, x, y, true_l2 = make_linear_binary(n=10)
    wd = model.W[0] - model.W[1]
    true = true_l2 if kind == "l2" else true_l2 * np.linalg.norm(wd) / np.abs(wd).sum()
    res = FAB(norm=kind, steps=20)(model, x, y)
    assert res.success[0].all()
    ratio = res.distances / true
    assert ratio.min() >= 1 - 1e-4 and ratio.max() <= 1.02


def test_fab_targeted_and_fab_t_on_an_mlp():
    model, x, y = make_mlp()
    t = (y + 1) % model.num_classes
    res = FAB(steps=30)(model, x, y, targets=t)
    ok = res.success[0]
    assert ok.mean() >= 0.9
    np.testing.assert_array_equal(model.predict(res.x_adv[0])[ok], t[ok])
    fab_t = FAB(steps=30, n_target_classes=3)(model, x, y, [0.05])
    apgd = APGD(steps=30)(model, x, y, [0.05])
    assert fab_t.success[0].mean() >= apgd.success[0].mean() - 0.1


class Spy:
    """Records the inputs each AutoAttack member is run on."""

    def __init__(self, att, log, name):
        self.att, self.log, self.name = att, log, name
        self.minimal = att.minimal

    def _attack_eps(self, ctx, eps):
        self.log.append((self.name, ctx.oracle.index.copy()))
        return self.att._attack_eps(ctx, eps)

    def _minimize(self, ctx):
        self.log.append((self.name, ctx.oracle.index.copy()))
        return self.att._minimize(ctx)

    def _iterations(self):
        return self.att._iterations()


def test_autoattack_runs_each_member_only_on_still_robust_points():
    model, x, y = make_mlp()
    eps = 0.035
    aa = AutoAttack(steps=10, n_target_classes=2, n_queries=100)
    log: list = []
    aa._attacks = {k: Spy(v, log, k) for k, v in aa._attacks.items()}
    res = aa(model, x, y, [eps], seed=1)
    assert [name for name, _ in log] == ["apgd_ce", "apgd_t", "fab_t", "square"]
    members = res.details["members"][0]["members"]
    sets = [set(idx.tolist()) for _, idx in log]
    assert sets[0] == set(range(len(x)))  # every input is classified correctly by make_mlp
    for k in range(3):  # each member sees exactly the inputs the earlier ones left unbroken
        assert sets[k + 1] <= sets[k] and len(sets[k]) - len(sets[k + 1]) == members[k]["n_broken"]
        assert members[k]["n_attacked"] == len(sets[k])
    ok = res.success[0]
    assert ok[sorted(sets[0] - sets[3])].all()
    assert ok[sorted(sets[3])].sum() == members[3]["n_broken"]
    assert sum(r["n_broken"] for r in members) == int(ok.sum())
    np.testing.assert_array_equal(res.success[0], model.predict(res.x_adv[0]) != y)
    # robust accuracy of the ensemble <= every member's alone
    for name in ("apgd_ce", "apgd_t", "fab_t", "square"):
        alone = AutoAttack(steps=10, n_target_classes=2, n_queries=100, members=[name])(model, x, y, [eps], seed=1)
        assert res.success[0].mean() >= alone.success[0].mean() - 1e-12, name


def test_autoattack_is_deterministic_and_selectable_by_name():
    model, x, y = make_mlp()
    aa = make_attack("autoattack", norm="l2", steps=5, n_target_classes=2, n_queries=50)
    a = aa(model, x, y, [0.2, 0.4], seed=0)
    b = aa(model, x, y, [0.2, 0.4], seed=0)
    for u, v in zip(a.x_adv, b.x_adv):
        np.testing.assert_array_equal(u, v)
    assert a.details == b.details and a.norm == "l2"
    with pytest.raises(AuditorError, match="members"):
        make_attack("autoattack", members=["pgd"])


def test_square_l2_stays_on_the_ball_and_is_score_based():
    inner, x, y = make_mlp()
    model = NoGradients(inner)
    eps = [0.15, 0.3]
    res = SquareAttack(norm="l2", n_queries=200)(model, x, y, eps)
    rates = [s.mean() for s in res.success]
    assert rates[0] <= rates[1] and rates[1] >= 0.8
    for xa, e in zip(res.x_adv, eps):
        assert np.all(norm(xa - x, "l2") <= e * (1 + 1e-5)) and xa.min() >= 0 and xa.max() <= 1
    assert res.queries.sum() == model.queries


def test_boundary_attack_walks_to_the_linear_boundary_with_labels_only():
    inner, x, y, true_dist = make_linear_binary(n=10)
    model = NoGradients(inner)
    res = BoundaryAttack(steps=400)(model, x, y)
    assert res.success[0].all()
    ratio = res.distances / true_dist
    assert ratio.min() >= 1 - 1e-4 and np.median(ratio) <= 1.3
    assert res.queries.sum() == model.queries


def test_local_search_changes_few_pixels_with_scores_only():
    inner, x, y = make_mlp()
    model = NoGradients(inner)
    res = LocalSearchAttack(rounds=15, d=1, t=2)(model, x, y)
    ok = res.success[0]
    assert ok.mean() >= 0.8
    np.testing.assert_array_equal(inner.predict(res.x_adv[0])[ok] != y[ok], True)
    changed = norm(res.x_adv[0] - x, "l0")
    assert np.all(changed[ok] <= 2 * 15) and np.all(res.distances[ok] == changed[ok])
    assert res.queries.sum() == model.queries
