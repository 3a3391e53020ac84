"""FAB, the Fast Adaptive Boundary attack (Croce & Hein, ICML 2020), minimal-norm Linf and L2."""

from __future__ import annotations

import numpy as np

from ..base import Param, plumbing
from .base import Attack, Context, register_attack


def logit_jacobian(ctx: Context, x: np.ndarray, act: np.ndarray, classes: np.ndarray):
    """Logits of ``x`` and the input gradients of the logits ``classes[:, k]`` (one gradient query
    per input and class, stacked in one oracle call). -> (z (m, C), J (m, K, d) float64)."""
    m, k = classes.shape
    xx = np.repeat(x[None], k, axis=0).reshape((m * k,) + x.shape[1:])
    _, g, z = ctx.oracle.value_and_grad(xx, "logit", rows=np.tile(act, k), index=classes.T.reshape(-1))
    g = np.nan_to_num(g.reshape(k, m, -1).astype(np.float64)).transpose(1, 0, 2)
    return np.asarray(z, np.float64)[:m], g


def project_hyperplane(w: np.ndarray, c: np.ndarray, lo: np.ndarray, hi: np.ndarray, norm: str) -> np.ndarray:
    """The smallest δ (in ``norm``) with ``w·δ = c`` and ``lo <= δ <= hi`` (lo <= 0 <= hi), per row;
    where the box cannot reach the plane, the box point closest to it.

    Both norms reduce to a monotone scalar equation solved exactly by sorting: for L2 the
    minimiser is ``δ = clip(λ·w, lo, hi)`` (KKT), for Linf ``δ = clip(t·sign(w), lo, hi)``, with λ,
    t >= 0 the smallest values whose ``w·δ`` reaches ``c``; ``w·δ(s) = s·Σ_{unsaturated} a_i +
    Σ_{saturated} a_i t_i`` is piecewise linear between the coordinates' saturation points t_i
    (a_i = w_i² and t_i = u_i/w_i for L2, a_i = |w_i| and t_i = |u_i| for Linf, u_i the bound in
    the helpful direction).  Rows with c < 0 are solved as (-w, -c)."""
    w = np.asarray(w, np.float64)
    c = np.asarray(c, np.float64)
    flip = c < 0
    w = np.where(flip[:, None], -w, w)
    c = np.abs(c)
    u = np.where(w > 0, hi, lo)  # the room in the helpful direction, per coordinate
    dirn = w if norm == "l2" else np.sign(w)
    nz = w != 0
    a = np.where(nz, w * dirn, 0.0)  # w_i² or |w_i|
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(nz, u / np.where(nz, dirn, 1.0), np.inf)  # saturation point of each coordinate
    order = np.argsort(t, axis=1, kind="stable")
    ts = np.take_along_axis(t, order, axis=1)
    as_ = np.take_along_axis(a, order, axis=1)
    bs = np.where(np.isfinite(ts), as_ * np.where(np.isfinite(ts), ts, 0.0), 0.0)
    cum_a, cum_b = np.cumsum(as_, axis=1), np.cumsum(bs, axis=1)
    total_a = cum_a[:, -1:]
    with np.errstate(invalid="ignore"):
        # w·δ at each breakpoint (past the last finite one: everything that can move is saturated)
        g = np.where(np.isfinite(ts), np.where(np.isfinite(ts), ts, 0.0) * (total_a - cum_a) + cum_b, cum_b)
    k = np.argmax(g >= c[:, None], axis=1)  # first breakpoint that reaches c
    feasible = np.any(g >= c[:, None], axis=1)
    r = np.arange(len(w))
    prev_a = np.where(k > 0, cum_a[r, np.maximum(k - 1, 0)], 0.0)
    prev_b = np.where(k > 0, cum_b[r, np.maximum(k - 1, 0)], 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = (c - prev_b) / (total_a[:, 0] - prev_a)
    scale = np.where(np.isfinite(scale), scale, 0.0)
    out = np.clip(scale[:, None] * dirn, np.minimum(lo, 0), np.maximum(hi, 0))
    out = np.where(feasible[:, None], out, u * nz)
    out[c == 0] = 0.0
    return out


@register_attack("fab")
class FAB(Attack):
    """Fast Adaptive Boundary attack: at each step, linearise the decision boundary of the
    closest other class (untargeted) or of the target, project both the current iterate and the
    original input onto that hyperplane within the pixel box, and step to a convex combination
    biased towards the original (weight α = min(‖δ‖/(‖δ‖+‖δ₀‖), α_max)), with overshoot η; after
    a success, step back towards the original by the factor β.  The smallest adversarial
    perturbation found is kept.

    Gradients: untargeted FAB needs every class's logit gradient (``num_classes`` gradient queries
    per step); FAB-T (``n_target_classes > 0``: AutoAttack's ``fab-t``) runs targeted FAB against
    the 2nd, 3rd, ... largest clean logit in turn, 2 gradient queries per step, success being any
    misclassification (the plane of the target against the label); with ``targets`` given it is
    one targeted run whose plane is the target against the current top class (one more gradient
    query where that is not the label).

    Defaults: Croce & Hein, ``autoattack``.
    """

    minimal = True
    #: set by an ensemble that only needs examples within this distance: inputs are dropped once
    #: one is found (None: keep refining the minimal perturbation)
    stop_distance: float | None = None

    PARAMS = {
        "norm": Param("choice", "linf", "the threat model: `linf` or `l2`", choices=("linf", "l2")),
        "steps": Param("int", 100, "iterations per run", low=1),
        "restarts": Param("int", 1, "runs per input; restarts after the first start at a random point of the ε-ball "
                          "of the best distance found, or of radius `start_eps` while none is known", low=1),
        "eta": Param("float", 1.05, "overshoot η of the step to the projection on the linearised boundary", low=1.0),
        "beta": Param("float", 0.9, "after a success, the factor β of the step back towards the original",
                      low=0.0, high=1.0, low_open=True),
        "alpha_max": Param("float", 0.1, "the largest weight α of the projection of the original in a step",
                           low=0.0, high=1.0),
        "n_target_classes": Param("int", 0, "0: untargeted FAB; k > 0: FAB-T against the k runner-up classes in turn",
                                  low=0),
        "start_eps": Param("float?", None, "radius of the random restarts while no distance is known (absolute; "
                           "None: 0.3·range Linf, 1.0·range L2)", low=0.0, low_open=True),
        **plumbing(batch_size=256),
    }

    def _iterations(self) -> int:
        return self.steps * self.restarts * max(self.n_target_classes, 1)

    def _dnorm(self, v: np.ndarray) -> np.ndarray:
        return np.abs(v).max(axis=1) if self.norm == "linf" else np.linalg.norm(v, axis=1)

    def _dual(self, v: np.ndarray) -> np.ndarray:
        return np.abs(v).sum(axis=-1) if self.norm == "linf" else np.linalg.norm(v, axis=-1)

    def _plane(self, ctx: Context, x: np.ndarray, act: np.ndarray, target: np.ndarray | None):
        """Logits at x and the hyperplane (w, b): f_other - f_label ≈ b + w·(x' - x) of the class
        the attack crosses to. -> (z, w (m, d), b (m,))"""
        labels = ctx.labels[act]
        m = len(x)
        if target is not None:
            z, J = logit_jacobian(ctx, x, act, np.stack([target, labels], axis=1))
            r = np.arange(m)
            w, other = J[:, 0] - J[:, 1], labels
            if ctx.targeted:  # success is reaching the target: cross to it from the current top class
                zo = z.copy()
                zo[r, target] = -np.inf
                other = zo.argmax(axis=1)
                moved = np.flatnonzero(other != labels)
                if len(moved):
                    _, Jk = logit_jacobian(ctx, x[moved], act[moved], other[moved, None])
                    w[moved] = J[moved, 0] - Jk[:, 0]
            return z, w, z[r, target] - z[r, other]
        c = ctx.num_classes
        z, J = logit_jacobian(ctx, x, act, np.tile(np.arange(c), (m, 1)))
        r = np.arange(m)
        w = J - J[r, labels][:, None, :]
        b = z - z[r, labels][:, None]
        dist = np.abs(b) / (self._dual(w) + 1e-12)
        dist[r, labels] = np.inf
        k = dist.argmin(axis=1)
        return z, w[r, k], b[r, k]

    def _minimize(self, ctx: Context) -> np.ndarray:
        n = len(ctx.x)
        best = ctx.x.copy()
        best_d = np.full(n, np.inf)
        if ctx.targeted or self.n_target_classes == 0:
            self._run(ctx, ctx.targets, best, best_d)
            return best
        order = np.argsort(-np.asarray(ctx.clean_logits, np.float64), axis=1, kind="stable")
        for k in range(1, min(self.n_target_classes, ctx.num_classes - 1) + 1):
            todo = np.flatnonzero(~self._done(best_d))
            if len(todo) == 0:
                break
            sub_best, sub_d = best[todo], best_d[todo]
            self._run(ctx.sub(todo), order[todo, k], sub_best, sub_d)
            best[todo], best_d[todo] = sub_best, sub_d
        return best

    def _done(self, best_d: np.ndarray) -> np.ndarray:
        if self.stop_distance is None:
            return np.zeros(len(best_d), bool)
        return best_d <= self.stop_distance

    def _run(self, ctx: Context, targets, best: np.ndarray, best_d: np.ndarray) -> None:
        lo_b, hi_b = ctx.bounds
        shape = ctx.x.shape[1:]
        n = len(ctx.x)
        x0 = ctx.x.reshape(n, -1).astype(np.float64)
        scale = hi_b - lo_b
        for r in range(self.restarts):
            act = np.arange(n)
            if r == 0:
                xc = x0.copy()
            else:
                rad = np.where(np.isfinite(best_d), best_d,
                               self.start_eps or (0.3 if self.norm == "linf" else 1.0) * scale)
                t = ctx.rng.uniform(-1, 1, size=x0.shape) if self.norm == "linf" else ctx.rng.standard_normal(x0.shape)
                t /= np.maximum(self._dnorm(t), 1e-12)[:, None]
                xc = np.clip(x0 + 0.5 * rad[:, None] * t, lo_b, hi_b)
            for _ in range(self.steps):
                keep = ~self._done(best_d[act])
                act, xc = act[keep], xc[keep]
                if len(act) == 0:
                    break
                tg = None if targets is None else targets[act]
                z, w, b = self._plane(ctx, xc.reshape((len(act),) + shape).astype(np.float32), act, tg)
                adv_now = ctx.is_adv(z.astype(np.float32), act)
                self._keep(ctx, act, xc, adv_now, best, best_d, x0)
                xo = x0[act]
                # iterate onto the plane: w·δ = -b ; original onto it: w·δ0 = -b - w·(xo - xc)
                d1 = project_hyperplane(w, -b, lo_b - xc, hi_b - xc, self.norm)
                d0 = project_hyperplane(w, -b - (w * (xo - xc)).sum(axis=1), lo_b - xo, hi_b - xo, self.norm)
                n1, n0 = self._dnorm(d1), self._dnorm(d0)
                alpha = np.minimum(n1 / np.maximum(n1 + n0, 1e-12), self.alpha_max)[:, None]
                xn = np.clip((1 - alpha) * (xc + self.eta * d1) + alpha * (xo + self.eta * d0), lo_b, hi_b)
                zn = ctx.oracle.logits(xn.reshape((len(act),) + shape).astype(np.float32), act)
                adv = ctx.is_adv(zn, act)
                self._keep(ctx, act, xn, adv, best, best_d, x0)
                # after a success, step back towards the original input
                xc = np.where(adv[:, None], (1 - self.beta) * xo + self.beta * xn, xn)
                ctx.tick()

    def _keep(self, ctx, act, xc, adv, best, best_d, x0) -> None:
        d = self._dnorm(xc - x0[act])
        better = adv & (d < best_d[act])
        idx = act[better]
        best[idx] = xc[better].reshape((len(idx),) + ctx.x.shape[1:]).astype(np.float32)
        best_d[idx] = d[better]
