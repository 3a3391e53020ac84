"""Uniform-sampling sponge examples (Müller & Quiring, Section III-B, "Uniform Sampling Strategy").

Sponge examples are dense because they are *uniform*: flat images give narrow convolution outputs
that batch normalisation shifts into the positive ReLU region.  This strategy mimics that directly:
every pixel is drawn i.i.d. from N(mu, sigma^2) and clipped to the pixel range.  A small sigma
works best on every model (the paper's Fig. 6: sigma = 0.01); mu matters little and is picked by
a grid search on ``grid_samples`` samples per grid value (measured in one batch), by mean
``cost_fn``; the grid samples drawn at the chosen mean are part of the output.  Each sample gets
its own noise, so the N inputs returned are distinct (repeating one input would be easy to
detect).  Cost: one cost measurement per grid sample plus one per further input returned —
forward-pass cost, no optimisation.
"""

from __future__ import annotations

import numpy as np

from ..base import Param, bounds_of, plumbing
from .base import register_search, Search, SearchResult


@register_search("uniform", aliases=('uniform_sampling', 'uniform-sampling', 'uniformsampling'))
class UniformSampling(Search):
    """Narrow-Gaussian images with the mean chosen by grid search on the measured cost."""

    needs_clean = False
    per_input = False
    PARAMS = {
        "sigma": Param("float", 0.01, "standard deviation of the pixel distribution (pixel-range units)", low=0.0),
        "mu": Param("float?", None, "fixed mean (skips the grid search)"),
        "grid": Param("floats", [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0],
                      "candidate means, as fractions of the pixel range"),
        "grid_samples": Param("int", 4, "samples measured per grid value", low=1, high=10_000),
        **plumbing(),
    }

    def _run(self, model, x_clean, cost_fn, layer_weights, labels, seed) -> SearchResult:
        p = self.params
        rng = np.random.default_rng(seed)
        n = len(x_clean)
        shape = x_clean.shape[1:]
        lo, hi = bounds_of(model)
        span = hi - lo
        sigma = p["sigma"] * span

        def sample(mu: float, k: int) -> np.ndarray:
            return np.clip(rng.normal(mu, sigma, (k,) + shape), lo, hi).astype(np.float32)

        grid_cost = {}
        kept_x = np.zeros((0,) + shape, np.float32)
        kept_c = np.zeros(0)
        if p["mu"] is None:
            grid = [lo + g * span for g in p["grid"]]
            k = p["grid_samples"]
            with self._bar("uniform sampling", 2) as bar:
                xg = np.concatenate([sample(mu, k) for mu in grid])
                cg = cost_fn(xg).reshape(len(grid), k)  # one measurement batch for the whole grid
                bar.update()
                means = cg.mean(axis=1)
                best = int(np.argmax(means))  # first of equal maxima
                grid_cost = {float(mu): float(c) for mu, c in zip(grid, means)}
                mu = float(grid[best])
                # the grid samples drawn at the chosen mean are sponge examples too
                kept_x, kept_c = xg.reshape((len(grid), k) + shape)[best][:n], cg[best][:n]
        else:
            mu = float(p["mu"])
        x_new = sample(mu, n - len(kept_x))
        x = np.concatenate([kept_x, x_new])
        cost = np.concatenate([kept_c, cost_fn(x_new)])
        info = {"mu": mu, "sigma": sigma, "grid_cost": grid_cost}
        return SearchResult(self.name, x, cost, 0, len(grid_cost), 0.0, None, info)
