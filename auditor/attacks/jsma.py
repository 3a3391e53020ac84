"""Jacobian-based Saliency Map Attack, L0 (Papernot et al., 2016)."""

from __future__ import annotations

import numpy as np

from ..errors import AuditorError
from .base import Attack, Context, check_choice, check_float


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
    increases the logit of the class to reach while decreasing its competitor (a saliency map over
    input gradients of the logits), and move both by θ·(hi - lo).  A feature may be picked again
    until it reaches the end of the pixel range; the L0 norm reported is the number of input
    features changed.

    Saliency (``saliency``):

    * ``"margin"`` (default) — α = ∂z_a, β = ∂z_b for the two classes that decide the outcome now:
      untargeted a = the current runner-up (re-chosen every step), b = the true label; targeted
      a = the target, b = the strongest other class.  Two gradients per step.
    * ``"papernot"`` — the original map: a = the target (untargeted: the runner-up at the clean
      input), β = Σ_{j≠a} ∂z_j.  One gradient per class per step.

    On the bundled lenet5 (60 test images) the margin map reached 100 % success with a median of
    22 changed pixels at θ = 1, γ = 0.2 where the original map reached 95 % with 72 (ART 1.20:
    97 %, 70); at θ = 0.1, γ = 1: 40 against 95; targeted (random targets, γ = 0.3): 100 % with
    50 against 80 % with 128.

    Targeted by design.  Without targets success is any change of the label.

    Parameters and defaults:

    * ``theta=1.0`` — change per pick, as a fraction of the pixel range (Papernot et al. and
      cleverhans: +1, i.e. set to the maximum; ART uses 0.1); negative values decrease features.
    * ``gamma=1.0`` — largest fraction of features that may be changed (cleverhans and ART: 1.0;
      Papernot et al. used 0.145 on MNIST).
    * ``saliency="margin"``.
    """

    name = "jsma"
    norm = "l0"
    minimal = True

    def __init__(self, theta: float = 1.0, gamma: float = 1.0, saliency: str = "margin", batch_size: int = 256,
                 progress: bool | None = None):
        super().__init__(batch_size, progress)
        self.theta = check_float("theta", theta, -1.0, 1.0)
        if self.theta == 0:
            raise AuditorError("parameter theta must be non-zero", where="attack")
        self.gamma = check_float("gamma", gamma, 0, 1.0, open_lo=True)
        self.saliency = check_choice("saliency", saliency, ("margin", "papernot"))

    def _max_iter(self, d: int) -> int:
        return max(int(np.floor(self.gamma * d / 2)), 1) * int(np.ceil(1.0 / abs(self.theta)))

    def _iterations(self) -> int:
        return 20

    def _grad(self, ctx: Context, xa: np.ndarray, act: np.ndarray, cls: np.ndarray):
        _, g, z = ctx.oracle.value_and_grad(xa, "logit", rows=act, index=cls)
        return g.reshape(len(act), -1).astype(np.float64), np.asarray(z, np.float64)

    def _maps(self, ctx: Context, xa: np.ndarray, act: np.ndarray, fixed_target: np.ndarray):
        """(logits, α, β) of the active samples."""
        n = len(act)
        rows = np.arange(n)
        if self.saliency == "papernot":
            jac, z = [], None
            for c in range(ctx.num_classes):
                g, zc = self._grad(ctx, xa, act, np.full(n, c))
                jac.append(g)
                z = zc if z is None else z
            jac = np.stack(jac)
            alpha = jac[fixed_target[act], rows]
            return z, alpha, jac.sum(axis=0) - alpha
        if ctx.targeted:
            first = ctx.targets[act]
            ga, z = self._grad(ctx, xa, act, first)
            other = z.copy()
            other[rows, first] = -np.inf
            gb, _ = self._grad(ctx, xa, act, other.argmax(axis=1))
            return z, ga, gb
        lab = ctx.labels[act]
        gb, z = self._grad(ctx, xa, act, lab)
        other = z.copy()
        other[rows, lab] = -np.inf
        ga, _ = self._grad(ctx, xa, act, other.argmax(axis=1))
        return z, ga, gb

    def _minimize(self, ctx: Context) -> np.ndarray:
        lo, hi = ctx.bounds
        n = len(ctx.x)
        shape = ctx.x.shape[1:]
        d = int(np.prod(shape))
        increase = self.theta > 0
        if ctx.targeted:
            tgt = ctx.targets
        else:
            z0 = np.asarray(ctx.clean_logits, np.float64).copy()
            z0[np.arange(n), ctx.labels] = -np.inf
            tgt = z0.argmax(axis=1)
        x = ctx.x.reshape(n, d).astype(np.float32).copy()
        domain = (x < hi) if increase else (x > lo)
        changed = np.zeros((n, d), bool)
        best = ctx.x.copy()
        act = np.arange(n)
        max_iter = self._max_iter(d)
        for it in range(max_iter + 1):
            xa = x[act].reshape((len(act),) + shape)
            z, alpha, beta = self._maps(ctx, xa, act, tgt)
            ctx.tick()
            adv = ctx.is_adv(z, act)
            best[act[adv]] = xa[adv]
            over = changed[act].sum(axis=1) >= self.gamma * d
            stop = adv | over | (domain[act].sum(axis=1) < 2)
            keep = ~stop
            if not keep.any() or it == max_iter:
                break
            alpha, beta, act = alpha[keep], beta[keep], act[keep]
            for r, s in enumerate(act):
                pair = _best_pair(alpha[r], beta[r], domain[s], increase)
                if pair is None:
                    continue
                for p in pair:
                    x[s, p] = np.clip(x[s, p] + self.theta * (hi - lo), lo, hi)
                    changed[s, p] = True
                    if (x[s, p] >= hi) if increase else (x[s, p] <= lo):
                        domain[s, p] = False
        return best
