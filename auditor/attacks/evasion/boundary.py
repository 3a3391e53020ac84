"""The Boundary Attack, decision-based L2 (Brendel, Rauber & Bethge, ICLR 2018)."""

from __future__ import annotations

import numpy as np

from ..base import Param, plumbing
from .base import Attack, Context, register_attack
from .hsj import HopSkipJump


@register_attack("boundary")
class BoundaryAttack(Attack):
    """Label-only random walk along the decision boundary towards the input.

    Start: an adversarial point on the boundary (uniform noise or the nearest other input of the
    batch that is already adversarial, bisected towards the input: HopSkipJump's start).  Each
    step draws a Gaussian direction orthogonal to the line to the input, scaled to
    ``spherical_step`` times the current distance, puts the result back on the sphere around the
    input (the *spherical candidate*), then moves towards the input by ``source_step`` times the
    distance; the candidate replaces the current point when it is still adversarial.  Every
    ``stats_every`` steps the two step sizes adapt by ``step_adaptation``: both grow when more
    than half of the last 100 spherical candidates were adversarial and shrink below 20 %; the
    source step alone grows above 25 % and shrinks below 10 % success of the last 30 candidates.

    Defaults: Brendel et al.; foolbox 3 ``BoundaryAttack`` (which uses 25 000 steps).
    """

    norm = "l2"
    minimal = True
    query_based = True

    PARAMS = {
        "steps": Param("int", 5000, "random-walk steps (2 queries each; foolbox 3 uses 25 000)", low=1),
        "spherical_step": Param("float", 0.01, "the orthogonal step, relative to the current distance",
                                low=0.0, low_open=True),
        "source_step": Param("float", 0.01, "the step towards the input, relative to the current distance",
                             low=0.0, high=1.0, low_open=True),
        "step_adaptation": Param("float", 1.5, "the factor both step sizes grow or shrink by", low=1.0, low_open=True),
        "stats_every": Param("int", 10, "steps between step-size adaptations", low=1),
        "init_trials": Param("int", 100, "random-noise draws for the start", low=0),
        **plumbing(batch_size=256),
    }

    def _iterations(self) -> int:
        return self.steps

    def _minimize(self, ctx: Context) -> np.ndarray:
        lo, hi = ctx.bounds
        n = len(ctx.x)
        shape = ctx.x.shape[1:]
        d = int(np.prod(shape))
        start, found = HopSkipJump(init_trials=self.init_trials)._initial(ctx, 1.0 / (d * np.sqrt(d)))
        act = np.flatnonzero(found)
        if len(act) == 0:
            return ctx.x.copy()
        x0 = ctx.x.reshape(n, d).astype(np.float64)[act]
        cur = start.reshape(n, d).astype(np.float64)[act]
        m = len(act)
        sph = np.full(m, self.spherical_step)
        src = np.full(m, self.source_step)
        sph_hist = np.zeros((m, 100))
        sph_n = np.zeros(m, int)
        step_hist = np.zeros((m, 30))
        step_n = np.zeros(m, int)
        for t in range(self.steps):
            diff = x0 - cur  # towards the input
            dist = np.linalg.norm(diff, axis=1)
            live = dist > 1e-12
            u = diff / np.maximum(dist, 1e-12)[:, None]
            eta = ctx.rng.standard_normal((m, d))
            eta -= (eta * u).sum(axis=1, keepdims=True) * u
            eta *= (sph * dist / np.maximum(np.linalg.norm(eta, axis=1), 1e-12))[:, None]
            direc = eta - diff
            direc *= (dist / np.maximum(np.linalg.norm(direc, axis=1), 1e-12))[:, None]
            spherical = np.clip(x0 + direc, lo, hi)
            new_diff = x0 - spherical
            new_norm = np.linalg.norm(new_diff, axis=1)
            length = np.maximum(src * dist + new_norm - dist, 0.0) / np.maximum(new_norm, 1e-12)
            cand = np.clip(spherical + length[:, None] * new_diff, lo, hi)
            both = np.concatenate([spherical, cand]).reshape((2 * m,) + shape).astype(np.float32)
            rows = np.concatenate([act, act])
            adv = ctx.is_adv(ctx.oracle.logits(both, rows), rows)
            a_sph, a_cand = adv[:m], adv[m:]
            closer = a_cand & live & (np.linalg.norm(x0 - cand, axis=1) < dist)
            cur[closer] = cand[closer]
            sph_hist[np.arange(m), sph_n % 100] = a_sph
            sph_n += 1
            step_hist[np.arange(m), step_n % 30] = a_cand
            step_n += 1
            if (t + 1) % self.stats_every == 0:
                full = sph_n >= 100
                p = sph_hist.mean(axis=1)
                up, down = full & (p > 0.5), full & (p < 0.2)
                f = self.step_adaptation
                sph = np.where(up, sph * f, np.where(down, sph / f, sph))
                src = np.where(up, src * f, np.where(down, src / f, src))
                sph_n[up | down] = 0
                sph_hist[up | down] = 0
                full = step_n >= 30
                p = step_hist.mean(axis=1)
                up, down = full & (p > 0.25), full & (p < 0.1)
                src = np.minimum(np.where(up, src * f, np.where(down, src / f, src)), 0.5)
                step_n[up | down] = 0
                step_hist[up | down] = 0
            ctx.tick()
        out = ctx.x.copy()
        out[act] = cur.reshape((m,) + shape).astype(np.float32)
        return out
