"""Sponge-L-BFGS (Shumailov et al. 2021; Müller & Quiring eq. 2 and Section IV-A).

Maximises the L2 norm of the activations, sum over the compute layers' input activations of a^2
(the Classifier's "act_l2" objective), over the pixel range with scipy's L-BFGS-B.  Starts from
inputs drawn uniformly over the pixel range, as in Müller & Quiring's re-implementation.

The objective is a sum of independent per-sample terms, so a chunk of ``batch_size`` samples is
optimised as one vector: one batched gradient pass per function evaluation.  The value is divided
by its value at the start so that L-BFGS-B's tolerances mean the same for every model.
"""

from __future__ import annotations

import numpy as np

from ..base import Param, bounds_of, plumbing
from .base import register_search, Search, SearchResult, chunks


@register_search("sponge_lbfgs", aliases=('lbfgs', 'l-bfgs', 'sponge-l-bfgs', 'sponge_l_bfgs', 'spongelbfgs'))
class SpongeLBFGS(Search):
    """L-BFGS-B on the activation L2 norm (white-box, no label constraint)."""

    needs_clean = False
    PARAMS = {
        "max_iter": Param("int", 100, "L-BFGS-B iterations per chunk", low=1),
        "batch_size": Param("int", 32, "samples optimised together", low=1),
        "init": Param("choice", "uniform", "start from uniform noise or from the given inputs", choices=("uniform", "clean")),
        **plumbing(),
    }

    def _run(self, model, x_clean, cost_fn, layer_weights, labels, seed) -> SearchResult:
        from scipy.optimize import Bounds, minimize  # here: importing the search (validate) needs no scipy

        p = self.params
        rng = np.random.default_rng(seed)
        n = len(x_clean)
        shape = x_clean.shape[1:]
        lo, hi = bounds_of(model)
        x_init = (rng.uniform(lo, hi, x_clean.shape).astype(np.float32) if p["init"] == "uniform" else x_clean.copy())
        x_out = np.empty_like(x_init)
        a_init = np.empty(n)
        a_out = np.empty(n)
        iters, nfev = 0, 0
        with self._bar("Sponge-L-BFGS", len(range(0, n, p["batch_size"])) * p["max_iter"]) as bar:
            for sl in chunks(n, p["batch_size"]):
                x0 = x_init[sl]
                m = len(x0)
                v0, _, _ = model.value_and_grad(x0, "act_l2")
                v0 = np.asarray(v0, np.float64)
                a_init[sl] = v0
                scale = max(float(v0.sum()), 1e-12)

                def fun(z, m=m):
                    v, g, _ = model.value_and_grad(z.reshape((m,) + shape).astype(np.float32), "act_l2")
                    return -float(np.sum(v, dtype=np.float64)) / scale, -(g.astype(np.float64).reshape(-1) / scale)

                res = minimize(fun, x0.reshape(-1).astype(np.float64), jac=True, method="L-BFGS-B",
                               bounds=Bounds(np.full(x0.size, lo), np.full(x0.size, hi)),
                               options={"maxiter": p["max_iter"], "maxfun": 2 * p["max_iter"] + 20},
                               callback=lambda *_: bar.update())
                xs = np.clip(res.x.reshape((m,) + shape), lo, hi).astype(np.float32)
                x_out[sl] = xs
                a_out[sl] = np.asarray(model.value_and_grad(xs, "act_l2")[0], np.float64)
                iters += int(res.nit)
                nfev += int(res.nfev)
        cost = cost_fn(x_out)
        info = {"act_l2": a_out, "act_l2_init": a_init, "function_evals": nfev}
        return SearchResult(self.name, x_out, cost, 0, iters, 0.0, None, info)
