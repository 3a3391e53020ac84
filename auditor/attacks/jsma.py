"""Jacobian-based Saliency Map Attack, L0 (Papernot et al., 2016)."""

from __future__ import annotations

import numpy as np

from ..errors import AuditorError
from .base import Attack, Context, check_float


def _best_pair(alpha: np.ndarray, beta: np.ndarray, domain: np.ndarray, increase: bool) -> tuple[int, int] | None:
    """The feature pair (p, q) of the saliency map for one sample.

    Increasing features (θ > 0): among pairs with α_p+α_q > 0 and β_p+β_q < 0 maximise
    (α_p+α_q)·|β_p+β_q|; decreasing (θ < 0): α < 0, β > 0, maximise |α|·β.  When no pair
    qualifies, fall back to the pair that best increases α - β (θ > 0) or decreases it (θ < 0).
    """
    idx = np.flatnonzero(domain)
    if len(idx) < 2:
        return None
    a, b = alpha[idx], beta[idx]
    if not increase:
        a, b = -a, -b
    A = a[:, None] + a[None, :]
    B = b[:, None] + b[None, :]
    score = np.where((A > 0) & (B < 0), -A * B, -np.inf)
    np.fill_diagonal(score, -np.inf)
    flat = int(np.argmax(score))
    if np.isfinite(score.flat[flat]):
        i, j = divmod(flat, len(idx))
        return int(idx[i]), int(idx[j])
    order = np.argsort(-(a - b), kind="stable")[:2]
    return int(idx[order[0]]), int(idx[order[1]])


class JSMA(Attack):
    """Greedy L0 attack: repeatedly pick the pair of input features whose joint change most
    increases the target logit while decreasing the others (saliency map over the Jacobian of the
    logits), and move both by θ·(hi - lo).

    Targeted by design.  Without targets the target is the runner-up class at the clean input
    (the cheapest class to reach) and success is any change of the label.

    Parameters and defaults:

    * ``theta=1.0`` — change per chosen feature, as a fraction of the pixel range (Papernot et al.
      and cleverhans: +1, i.e. set to the maximum; ART uses 0.1); negative values decrease features.
    * ``gamma=1.0`` — largest fraction of features that may be changed (cleverhans and ART: 1.0;
      Papernot et al. used 0.145 on MNIST).

    Each iteration costs one gradient per class (the full Jacobian of the logits).  The L0 norm
    reported is the number of input features changed.
    """

    name = "jsma"
    _mode = "papernot"
    _tmode = "papernot"
    _repeat = False
    norm = "l0"
    minimal = True

    def __init__(self, theta: float = 1.0, gamma: float = 1.0, batch_size: int = 256, progress: bool | None = None):
        super().__init__(batch_size, progress)
        self.theta = check_float("theta", theta, -1.0, 1.0)
        if self.theta == 0:
            raise AuditorError("parameter theta must be non-zero", where="attack")
        self.gamma = check_float("gamma", gamma, 0, 1.0, open_lo=True)

    def _max_iter(self, d: int) -> int:
        per = int(np.ceil(1.0 / abs(self.theta))) if self._repeat else 1
        return max(int(np.floor(self.gamma * d / 2)), 1) * per

    def _iterations(self) -> int:
        return 20

    def _minimize(self, ctx: Context) -> np.ndarray:
        lo, hi = ctx.bounds
        n = len(ctx.x)
        shape = ctx.x.shape[1:]
        d = int(np.prod(shape))
        increase = self.theta > 0
        if ctx.targeted:
            tgt = ctx.targets
        else:
            z = np.asarray(ctx.clean_logits, np.float64).copy()
            z[np.arange(n), ctx.labels] = -np.inf
            tgt = z.argmax(axis=1)
        x = ctx.x.reshape(n, d).astype(np.float32).copy()
        domain = (x < hi) if increase else (x > lo)
        changed = np.zeros((n, d), bool)
        best = ctx.x.copy()
        act = np.arange(n)
        for it in range(self._max_iter(d) + 1):
            xa = x[act].reshape((len(act),) + shape)
            # the Jacobian of the logits, one class at a time
            jac = []
            z = None
            for c in range(ctx.num_classes):
                _, g, zc = ctx.oracle.value_and_grad(xa, "logit", rows=act, index=np.full(len(act), c))
                jac.append(g.reshape(len(act), d).astype(np.float64))
                z = zc if z is None else z
            ctx.tick()
            adv = ctx.is_adv(z, act)
            best[act[adv]] = xa[adv]
            over = changed[act].sum(axis=1) > self.gamma * d
            stop = adv | over | (domain[act].sum(axis=1) < 2)
            act_keep = ~stop
            if not act_keep.any() or it == self._max_iter(d):
                break
            jac = np.stack(jac)[:, act_keep]
            act = act[act_keep]
            total = jac.sum(axis=0)
            zz = np.asarray(z, np.float64)[act_keep]
            for r, s in enumerate(act):
                t = tgt[s]
                if not ctx.targeted and self._mode in ("dyn", "label", "single"):
                    zr = zz[r].copy()
                    zr[ctx.labels[s]] = -np.inf
                    t = int(zr.argmax())
                alpha = jac[t, r]
                beta = total[r] - alpha
                if self._mode == "label" and not ctx.targeted:
                    beta = jac[ctx.labels[s], r]
                if self._tmode == "comp" and ctx.targeted:
                    zr = zz[r].copy()
                    zr[t] = -np.inf
                    beta = jac[int(zr.argmax()), r]
                if self._mode == "single":
                    idx = np.flatnonzero(domain[s])
                    sc = (alpha - beta)[idx] * (1 if increase else -1)
                    top = idx[np.argsort(-sc, kind="stable")[:2]]
                    pair = (int(top[0]), int(top[1])) if len(top) == 2 else None
                else:
                    pair = _best_pair(alpha, beta, domain[s], increase)
                if pair is None:
                    continue
                for p in pair:
                    x[s, p] = np.clip(x[s, p] + self.theta * (hi - lo), lo, hi)
                    changed[s, p] = True
                    if not self._repeat or (x[s, p] >= hi if increase else x[s, p] <= lo):
                        domain[s, p] = False
        return best
