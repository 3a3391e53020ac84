"""Energy-latency searches (auditor.attacks.energy) on a small analytic classifier.

``ToyMLP`` is a numpy 2-layer ReLU network with exact gradients of the Classifier objectives, so
these tests depend on nothing but auditor.runtime.classifier / norms / progress.
"""

from __future__ import annotations

import numpy as np
import pytest

from auditor.errors import AuditorError
from auditor.norms import norm
from auditor.attacks.energy import (SEARCHES, BlackBoxSparsity, SearchResult, SpongeGA, SpongeLBFGS, TopNatural,
                            UniformSampling, WhiteBoxSparsity, make_search)
from auditor.attacks.energy.analysis import density

from analytic import ToyMLP


def toy_density(model):
    def cost(x):
        return density(model.activations(x))
    return cost


def sparse_images(n, side=6, seed=1):
    """Digit-like inputs: mostly-zero background with a bright blob."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 1, side, side), np.float32)
    for i in range(n):
        r, c = rng.integers(1, side - 2, 2)
        x[i, 0, r:r + 2, c:c + 3] = rng.uniform(0.6, 1.0, (2, 3))
    return x


@pytest.fixture(scope="module")
def toy():
    return ToyMLP()


# --- the toy itself -----------------------------------------------------------------------------

@pytest.mark.parametrize("objective,knobs", [
    ("ce", {"target": np.array([0, 1, 2])}),
    ("sparsity", {"target": np.array([0, 1, 2]), "weights": np.array([1.0, 2.0], np.float32), "beta": 3.0, "c": 0.5}),
    ("act_l2", {}),
])
def test_toy_gradients_match_finite_differences(toy, objective, knobs):
    rng = np.random.default_rng(0)
    x = rng.uniform(0.2, 0.8, (3, 1, 6, 6)).astype(np.float64)
    _, g, _ = toy.value_and_grad(x, objective, **knobs)
    d = rng.normal(size=x.shape)
    h = 1e-4
    vp = toy._value_and_grad(x + h * d, objective, knobs)[0].astype(np.float64)
    vm = toy._value_and_grad(x - h * d, objective, knobs)[0].astype(np.float64)
    fd = (vp - vm) / (2 * h)
    an = (g.astype(np.float64) * d).reshape(3, -1).sum(1)
    np.testing.assert_allclose(an, fd, rtol=2e-2, atol=1e-4)


# --- registry -----------------------------------------------------------------------------------

def test_registry_and_param_errors():
    assert set(SEARCHES) >= {"whitebox", "blackbox", "sponge_ga", "sponge_lbfgs", "uniform", "top_natural"}
    s = make_search("whitebox", beta="1e1", eps=None, iterations=3.0)
    assert isinstance(s, WhiteBoxSparsity) and s.beta == 10.0 and s.eps is None and s.iterations == 3
    with pytest.raises(AuditorError, match="unknown search"):
        make_search("nope")
    with pytest.raises(AuditorError, match="unknown parameter"):
        make_search("uniform", sigmaa=0.1)
    with pytest.raises(AuditorError, match="must be >"):
        make_search("whitebox", eps_iter=0)
    with pytest.raises(AuditorError, match="integer"):
        make_search("sponge_ga", generations=2.5)
    with pytest.raises(AuditorError, match="one of"):
        make_search("whitebox", norm="l7")
    with pytest.raises(AuditorError, match="c_min <= c_in"):
        make_search("whitebox", c_in=2.0)


def test_bad_call_inputs(toy):
    s = WhiteBoxSparsity(iterations=2)
    with pytest.raises(AuditorError, match="shape"):
        s(toy, np.zeros((2, 1, 5, 5)), cost_fn=toy_density(toy))
    with pytest.raises(AuditorError, match="pixel range"):
        s(toy, np.full((2, 1, 6, 6), 2.0), cost_fn=toy_density(toy))
    with pytest.raises(AuditorError, match="layer_weights"):
        s(toy, sparse_images(2), cost_fn=toy_density(toy), layer_weights=[1, 2, 3])
    with pytest.raises(AuditorError, match="cost_fn returned"):
        s(toy, sparse_images(2), cost_fn=lambda x: np.zeros(5))


# --- white-box ----------------------------------------------------------------------------------

def test_whitebox_raises_density_and_keeps_labels(toy):
    x = sparse_images(16)
    cost = toy_density(toy)
    res = WhiteBoxSparsity(eps=None, eps_iter=0.1, iterations=40, beta=10)(toy, x, cost_fn=cost)
    assert isinstance(res, SearchResult) and res.x.shape == x.shape and res.x.dtype == np.float32
    assert res.label_kept.all()
    np.testing.assert_array_equal(toy.predict(res.x), toy.predict(x))
    np.testing.assert_allclose(res.cost, cost(res.x))
    assert res.cost.mean() > 1.5 * res.info["cost_clean"].mean()
    assert res.info["improved"].mean() > 0.9
    assert res.queries > 0 and res.iterations == 41 and res.seconds > 0
    assert res.x.min() >= 0 and res.x.max() <= 1


@pytest.mark.parametrize("kind,eps", [("l2", 0.5), ("linf", 0.05)])
def test_whitebox_respects_eps_ball(toy, kind, eps):
    x = sparse_images(8)
    res = WhiteBoxSparsity(eps=eps, norm=kind, eps_iter=0.05 if kind == "l2" else 0.01, iterations=30, beta=10)(
        toy, x, cost_fn=toy_density(toy))
    assert np.all(norm(res.x - x, kind) <= eps + 1e-5)
    assert res.cost.mean() > res.info["cost_clean"].mean()


def test_whitebox_surrogate_select_and_weights(toy):
    x = sparse_images(8)
    cost = toy_density(toy)
    res = WhiteBoxSparsity(eps=None, eps_iter=0.1, iterations=20, select="surrogate", outer=2)(
        toy, x, cost_fn=cost, layer_weights=[0.0, 1.0])
    assert res.label_kept.all() and res.cost.mean() > res.info["cost_clean"].mean()
    # weights rescaled so that sum_l W_l n_l = k: all weight on h (24 of 60 neurons)
    np.testing.assert_allclose(res.info["layer_weights"], [0.0, 60 / 24], rtol=1e-6)
    assert res.info["c"].shape == (8,)


def test_whitebox_step_size_and_select_every(toy):
    from auditor.attacks.energy.whitebox import step_size

    assert step_size(None, 0.9, "l2") == 0.02 and step_size(None, None, "l2") == 0.5
    assert step_size(None, 0.1, "linf") == pytest.approx(0.01) and step_size(0.3, None, "l2") == 0.3
    x = sparse_images(6)
    calls = []

    def cost(z):
        calls.append(len(z))
        return toy_density(toy)(z)

    res = WhiteBoxSparsity(eps=None, iterations=10, select_every=5)(toy, x, cost_fn=cost)
    # the automatic unconstrained step is 0.5 on 28x28 inputs, scaled by sqrt(D / 784) on the 6x6 toy
    assert res.info["eps_iter"] == pytest.approx(0.5 * 6 / 28) and res.label_kept.all()
    assert len(calls) <= 1 + 2 + 1  # clean, iterations 5 and 10, nothing else
    assert res.info["cost_queries"] == sum(calls)


def test_whitebox_same_seed_same_result(toy):
    x = sparse_images(6)
    a = WhiteBoxSparsity(iterations=10, eps_iter=0.1)(toy, x, cost_fn=toy_density(toy), seed=3)
    b = WhiteBoxSparsity(iterations=10, eps_iter=0.1)(toy, x, cost_fn=toy_density(toy), seed=3)
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.cost, b.cost)


# --- black-box ----------------------------------------------------------------------------------

def test_blackbox_restores_labels_within_eps():
    target = ToyMLP(seed=0)
    surrogate = ToyMLP(seed=5)
    x = sparse_images(10)
    eps = 1.5
    s = BlackBoxSparsity(surrogate=surrogate, eps=eps, eps_iter=0.1, iterations=30, beta=10, query_budget=3000)
    a = s(target, x, cost_fn=toy_density(target), seed=1)
    b = s(target, x, cost_fn=toy_density(target), seed=1)
    np.testing.assert_array_equal(a.x, b.x)
    assert a.label_kept.all()
    np.testing.assert_array_equal(target.predict(a.x), target.predict(x))
    assert np.all(norm(a.x - x, "l2") <= eps + 1e-5)
    assert a.cost.mean() > a.info["cost_clean"].mean()
    assert a.info["target_queries"] > 0 and a.info["surrogate_queries"] > 0
    with pytest.raises(AuditorError, match="surrogate"):
        BlackBoxSparsity()(target, x, cost_fn=toy_density(target))
    # no query budget: the bisection fallback towards the clean input keeps every label
    c = BlackBoxSparsity(surrogate=surrogate, eps=eps, eps_iter=0.1, iterations=30, beta=10, query_budget=0)(
        target, x, cost_fn=toy_density(target), seed=1)
    assert c.label_kept.all() and set(c.info["restored_by"]) <= {"transfer", "blend"}
    assert "blend" in set(c.info["restored_by"])


# --- zero-knowledge and sampling searches ---------------------------------------------------------

def test_ga_improves_fitness(toy):
    cost = toy_density(toy)
    x = np.zeros((4, 1, 6, 6), np.float32)
    res = SpongeGA(population=24, generations=15)(toy, x, cost_fn=cost, seed=0)
    best = res.info["best_fitness"]
    assert len(best) == 16 and best[-1] > best[0]
    assert res.info["mean_fitness"][-1] > res.info["mean_fitness"][0]
    assert res.x.shape == (4, 1, 6, 6) and res.label_kept is None
    np.testing.assert_allclose(res.cost, cost(res.x))
    assert np.all(np.diff(res.cost) <= 0)
    assert res.queries == 24 + 15 * (24 - 2)  # initial population + children (2 elites)
    again = SpongeGA(population=24, generations=15)(toy, x, cost_fn=cost, seed=0)
    np.testing.assert_array_equal(res.x, again.x)


def test_uniform_sampling_beats_random_noise(toy):
    cost = toy_density(toy)
    x = np.zeros((20, 1, 6, 6), np.float32)
    res = UniformSampling(sigma=0.01, grid=[0.1, 0.3, 0.5, 0.7, 0.9], grid_samples=4)(toy, x, cost_fn=cost, seed=0)
    noise = np.random.default_rng(0).uniform(0, 1, x.shape).astype(np.float32)
    assert res.cost.mean() > cost(noise).mean()
    assert res.info["mu"] in (0.1, 0.3, 0.5, 0.7, 0.9)
    assert len(np.unique(res.x.reshape(20, -1), axis=0)) == 20  # distinct inputs
    assert res.queries == 5 * 4 + 20 - 4  # the 4 grid samples at the chosen mean are reused


def test_progress_bar_when_asked(toy, capsys):
    x = np.zeros((3, 1, 6, 6), np.float32)
    UniformSampling(progress=True)(toy, x, cost_fn=toy_density(toy))
    assert "uniform sampling" in capsys.readouterr().err
    UniformSampling()(toy, x, cost_fn=toy_density(toy))  # not a terminal: silent
    assert capsys.readouterr().err == ""


def test_lbfgs_raises_activation_norm(toy):
    x = np.zeros((5, 1, 6, 6), np.float32)
    res = SpongeLBFGS(max_iter=20)(toy, x, cost_fn=toy_density(toy), seed=0)
    assert res.x.min() >= 0 and res.x.max() <= 1
    assert res.info["act_l2"].mean() > res.info["act_l2_init"].mean()


def test_top_natural_keeps_costliest(toy):
    cost = toy_density(toy)
    x = np.concatenate([sparse_images(12), np.random.default_rng(0).uniform(0, 1, (3, 1, 6, 6)).astype(np.float32)])
    res = TopNatural(k=4)(toy, x, cost_fn=cost)
    allc = cost(x)
    np.testing.assert_allclose(np.sort(res.cost)[::-1], np.sort(allc)[::-1][:4])
    np.testing.assert_array_equal(res.x, x[res.info["indices"]])
    assert res.queries == len(x)
