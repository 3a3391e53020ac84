"""The Local Search Attack, score-based, few pixels (Narodytska & Kasiviswanathan, 2017)."""

from __future__ import annotations

import numpy as np

from ..base import Param, plumbing
from .base import Attack, Context, register_attack


@register_attack("lsa")
class LocalSearchAttack(Attack):
    """LocSearchAdv: a greedy local search over pixel locations guided by the model's scores.

    Each round probes every location of the current candidate set P one at a time (all channels
    of that pixel set to the far end of the pixel range from its value: the in-range version of
    the paper's PERT), ranks the locations by the probability the probe leaves to the true class
    (targeted: minus the target's probability), applies the paper's CYCLIC perturbation to the
    ``t`` best locations of the current image (centred value v ← r·v, wrapped back into the range
    by ± the range), stops when the image is adversarial, and takes as the next P the
    (2d+1)×(2d+1) neighbourhoods of those ``t`` pixels.  The first P is a random ``init_fraction``
    of the pixels.  The result is scored by the number of changed values (``norm="l0"``).

    Defaults: Narodytska & Kasiviswanathan, §5 (r = 1.5, d = 5, t = 5, R = 150, 10 % initial pixels).
    A round costs |P| + 1 queries (up to t·(2d+1)² + 1).
    """

    norm = "l0"
    minimal = True
    query_based = True

    PARAMS = {
        "r": Param("float", 1.5, "the CYCLIC perturbation's factor: centred value v ← r·v", low=0.0, low_open=True),
        "d": Param("int", 5, "half-width of the neighbourhood of a perturbed pixel ((2d+1)×(2d+1) locations)", low=0),
        "t": Param("int", 5, "locations perturbed per round", low=1),
        "rounds": Param("int", 150, "rounds R", low=1),
        "init_fraction": Param("float", 0.1, "the share of the pixels in the first candidate set",
                               low=0.0, high=1.0, low_open=True),
        **plumbing(batch_size=64),
    }

    def _iterations(self) -> int:
        return self.rounds

    def _score(self, ctx: Context, z: np.ndarray, rows: np.ndarray) -> np.ndarray:
        zz = np.asarray(z, np.float64)
        p = np.exp(zz - zz.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        return p[np.arange(len(p)), ctx.goal(rows)] * (-1.0 if ctx.targeted else 1.0)

    def _minimize(self, ctx: Context) -> np.ndarray:
        lo, hi = ctx.bounds
        mid, half = (lo + hi) / 2.0, (hi - lo) / 2.0
        n = len(ctx.x)
        x4 = ctx.x.reshape((n,) + ((1, 1, int(np.prod(ctx.x.shape[1:]))) if ctx.x.ndim != 4 else ctx.x.shape[1:]))
        c, h, w = x4.shape[1:]
        img = x4.astype(np.float64).copy()
        P = ctx.rng.random((n, h, w)) < self.init_fraction
        empty = ~P.reshape(n, -1).any(axis=1)
        for i in np.flatnonzero(empty):  # at least one location each
            P[i, ctx.rng.integers(h), ctx.rng.integers(w)] = True
        act = np.arange(n)
        out = ctx.x.copy()
        for _ in range(self.rounds):
            if len(act) == 0:
                break
            # probe every location of P, one at a time
            cnt = P[act].reshape(len(act), -1).sum(axis=1)
            owner = np.repeat(np.arange(len(act)), cnt)
            loc = np.concatenate([np.flatnonzero(P[i].ravel()) for i in act]) if cnt.sum() else np.zeros(0, int)
            scores = np.empty(len(loc))
            for s in range(0, len(loc), 2048):
                o, l_ = owner[s:s + 2048], loc[s:s + 2048]
                probe = img[act[o]].copy()
                hh, ww = l_ // w, l_ % w
                v = probe[np.arange(len(o)), :, hh, ww]
                probe[np.arange(len(o)), :, hh, ww] = np.where(v > mid, lo, hi)
                rows = act[o]
                z = ctx.oracle.logits(probe.reshape((len(o),) + ctx.x.shape[1:]).astype(np.float32), rows)
                scores[s:s + 2048] = self._score(ctx, z, rows)
            newP = np.zeros((len(act), h, w), bool)
            starts = np.concatenate([[0], np.cumsum(cnt)])
            for j, i in enumerate(act):
                sc, lc = scores[starts[j]:starts[j + 1]], loc[starts[j]:starts[j + 1]]
                best = lc[np.argsort(sc, kind="stable")[:self.t]]
                hh, ww = best // w, best % w
                v = (img[i][:, hh, ww] - mid) / half * self.r
                v = np.where(v < -1, v + 2, np.where(v > 1, v - 2, v))
                img[i][:, hh, ww] = np.clip(mid + half * v, lo, hi)
                for a, b in zip(hh, ww):
                    newP[j, max(a - self.d, 0):a + self.d + 1, max(b - self.d, 0):b + self.d + 1] = True
            xi = img[act].reshape((len(act),) + ctx.x.shape[1:]).astype(np.float32)
            adv = ctx.is_adv(ctx.oracle.logits(xi, act), act)
            out[act[adv]] = xi[adv]
            P[act] = newP
            act = act[~adv]
            ctx.tick()
        return out
