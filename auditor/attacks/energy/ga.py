"""Sponge-GA (Shumailov et al. 2021, as re-implemented by Müller & Quiring, Section II-D / IV-A).

A zero-knowledge search: it only measures the cost of its candidates (``cost_fn`` is the fitness)
and never looks at the model.  A population of images drawn uniformly over the pixel range
evolves for ``generations`` rounds:

* selection — the ``elite`` fittest survive unchanged; parents are drawn by binary tournaments
  from the fitter half;
* crossover — a child mixes two parents: per-pixel uniform crossover (``crossover="mask"``), a
  random convex blend (``"blend"``) or either at random (``"mixed"``, the default);
* mutation — Gaussian noise of scale ``mutation_sigma`` on a ``mutation_rate`` share of the
  child's pixels, then clipping to the pixel range.

The search returns the N fittest distinct members of the final population (N = len(x_clean); the
population is enlarged to N if smaller).  ``x_clean`` only fixes N and the input shape.
"""

from __future__ import annotations

import numpy as np

from ..base import Param, bounds_of, plumbing
from .base import register_search, Search, SearchResult


@register_search("sponge_ga", aliases=('ga', 'sponge-ga', 'spongega'))
class SpongeGA(Search):
    """Genetic algorithm maximising the measured cost (zero knowledge)."""

    needs_clean = False
    per_input = False
    PARAMS = {
        "population": Param("int", 100, "population size", low=2, high=10_000),
        "generations": Param("int", 100, "generations evolved", low=0),
        "elite": Param("float", 0.1, "share of the population kept unchanged", low=0.0, high=1.0),
        "crossover": Param("choice", "mixed", "how two parents are combined", choices=("mask", "blend", "mixed")),
        "mutation_rate": Param("float", 0.05, "share of pixels mutated per child", low=0.0, high=1.0),
        "mutation_sigma": Param("float", 0.1, "std of the mutation noise (pixel-range units)", low=0.0),
        **plumbing(),
    }

    def _run(self, model, x_clean, cost_fn, layer_weights, labels, seed) -> SearchResult:
        p = self.params
        rng = np.random.default_rng(seed)
        n = len(x_clean)
        shape = x_clean.shape[1:]
        lo, hi = bounds_of(model)
        P = max(p["population"], n)
        n_elite = min(max(int(round(p["elite"] * P)), 1), P)
        pop = rng.uniform(lo, hi, (P,) + shape).astype(np.float32)
        fit = cost_fn(pop)
        best_hist, mean_hist = [float(fit.max())], [float(fit.mean())]
        span = hi - lo
        with self._bar("Sponge-GA", p["generations"]) as bar:
            for _ in range(p["generations"]):
                order = np.argsort(-fit, kind="stable")
                pop, fit = pop[order], fit[order]
                n_child = P - n_elite
                pool = max(P // 2, 2)
                a = rng.integers(0, pool, (n_child, 2))
                b = rng.integers(0, pool, (n_child, 2))
                pa = np.minimum(a[:, 0], a[:, 1])  # binary tournament on the sorted pool
                pb = np.minimum(b[:, 0], b[:, 1])
                children = self._crossover(pop[pa], pop[pb], rng)
                mut = rng.random(children.shape) < p["mutation_rate"]
                noise = rng.normal(0.0, p["mutation_sigma"] * span, children.shape).astype(np.float32)
                children = np.clip(children + mut * noise, lo, hi).astype(np.float32)
                cfit = cost_fn(children)
                pop = np.concatenate([pop[:n_elite], children])
                fit = np.concatenate([fit[:n_elite], cfit])
                best_hist.append(float(fit.max()))
                mean_hist.append(float(fit.mean()))
                bar.update()
        order = self._distinct_best(pop, fit, n)
        info = {"best_fitness": best_hist, "mean_fitness": mean_hist, "population": P}
        return SearchResult(self.name, pop[order], fit[order], 0, p["generations"], 0.0, None, info)

    def _crossover(self, pa: np.ndarray, pb: np.ndarray, rng) -> np.ndarray:
        kind = self.params["crossover"]
        m = len(pa)
        bshape = (m,) + (1,) * (pa.ndim - 1)
        mask = rng.random(pa.shape) < 0.5
        alpha = rng.random(bshape).astype(np.float32)
        use_mask = np.full(bshape, kind == "mask") if kind != "mixed" else (rng.random(bshape) < 0.5)
        mixed = np.where(mask, pa, pb)
        blended = alpha * pa + (1 - alpha) * pb
        return np.where(use_mask, mixed, blended).astype(np.float32)

    @staticmethod
    def _distinct_best(pop: np.ndarray, fit: np.ndarray, n: int) -> np.ndarray:
        order = np.argsort(-fit, kind="stable")
        flat = pop.reshape(len(pop), -1)
        seen, keep = set(), []
        for i in order:
            key = flat[i].tobytes()
            if key not in seen:
                seen.add(key)
                keep.append(i)
            if len(keep) == n:
                break
        if len(keep) < n:  # fewer distinct members than requested: repeat the best
            rest = [i for i in order if i not in set(keep)]
            keep += rest[: n - len(keep)]
        return np.asarray(keep)
