"""ZOO: zeroth-order optimisation attack, score-based L2 (Chen et al., 2017)."""

from __future__ import annotations

import numpy as np

from ..base import Param, plumbing
from ..primitives import adam_step, next_const, probe_logits
from .base import Attack, Context, register_attack, shrink_to_boundary
from .cw import adaptive_lr_param, trade_off_params


@register_attack("zoo")
class ZOO(Attack):
    """The C&W L2 objective ‖δ‖₂² + c·max(margin, -κ) optimised with only the model's scores:
    at each step a random subset of coordinates gets a symmetric finite-difference estimate of
    the margin's partial derivative (two queries per coordinate, the distance term is exact), and
    each chosen coordinate takes a coordinate-wise Adam step (ZOO-ADAM), inside the pixel range.
    Binary search on c per input as in C&W; the smallest adversarial point is kept and bisected
    back to the boundary.

    The margin on logits equals the paper's margin on log-probabilities (log-softmax differences
    are logit differences).

    Defaults: Chen et al. 2017 / ART ``ZooAttack``, but for the CPU query budget of ``steps``,
    ``binary_search_steps`` and ``initial_const``.

    Importance sampling and hierarchical resizing (for large images) are not implemented.
    """

    norm = "l2"
    minimal = True
    query_based = True

    PARAMS = {
        "steps": Param("int", 200, "Adam steps per value of c, each costing 2·coordinates + 1 queries per input "
                       "(chosen for a CPU query budget; ART: 10, the paper: thousands)", low=1),
        **trade_off_params(5, 1.0, "ART: 1 round, c 1e-3; the paper: 9 rounds"),
        "coordinates": Param("int", 128, "coordinates estimated per step (ZOO and ART `nb_parallel`)", low=1),
        "h": Param("float", 0.001, "finite-difference step (ZOO and ART use 1e-4 in float64; 1e-3 keeps the estimate "
                   "above float32 rounding noise of ONNX logits)", low=0.0, low_open=True),
        "abort_early": Param("bool", True, "end a round when the loss stops falling (ZOO, ART)"),
        "refine_steps": Param("int", 12, "boundary bisection after the search (0 disables it)", low=0),
        "adaptive_lr": adaptive_lr_param(
            "`steps·coordinates/d·learning_rate` < 0.1, for budgets where the fixed rate cannot move a coordinate far "
            "(a coordinate is updated about `steps·coordinates/d` times by at most `learning_rate` each).  On 20 lenet5 "
            "test images at 20 steps × 3 binary steps the success rate went from 15 % to 100 % (median L2 3.2; ART "
            "1.20 at the same settings: 60 %, 4.3); at 100 steps the fixed rate was better (median 1.36 against 2.94), "
            "hence the threshold"),
        **plumbing(batch_size=64),
    }

    def _iterations(self) -> int:
        return self.steps * self.binary_search_steps

    def _minimize(self, ctx: Context) -> np.ndarray:
        lo, hi = ctx.bounds
        n = len(ctx.x)
        shape = ctx.x.shape[1:]
        d = int(np.prod(shape))
        k = min(self.coordinates, d)
        x0 = ctx.x.reshape(n, d).astype(np.float64)
        kappa = self.confidence
        const = np.full(n, self.initial_const)
        lower, upper = np.zeros(n), np.full(n, np.inf)
        best = ctx.x.copy()
        best_l2 = np.full(n, np.inf)

        adaptive = self.adaptive_lr if self.adaptive_lr is not None else \
            self.learning_rate * self.steps * k / d < 0.1
        for bs in range(self.binary_search_steps):
            xc = x0.copy()
            m, v = np.zeros((n, d)), np.zeros((n, d))
            tcount = np.zeros((n, d), np.int64)
            round_ok = np.zeros(n, bool)
            prev = np.inf
            lr = np.full(n, self.learning_rate)
            last, snap = np.full(n, np.inf), None
            for it in range(self.steps):
                coords = np.argpartition(ctx.rng.random((n, d)), k - 1, axis=1)[:, :k] if k < d \
                    else np.tile(np.arange(d), (n, 1))
                rows = np.arange(n)[:, None]
                xp = np.minimum(xc[rows, coords] + self.h, hi)
                xm = np.maximum(xc[rows, coords] - self.h, lo)
                z = probe_logits(ctx.oracle.logits, xc, coords, xp, xm, shape)  # (n, 2k+1, classes)
                loss = ctx.loss(z.reshape(n * (2 * k + 1), -1), np.repeat(np.arange(n), 2 * k + 1)).reshape(n, 2 * k + 1)
                # progress bookkeeping on the current point
                ok = ctx.is_adv(z[:, 0]) & (loss[:, 0] <= -kappa + 1e-12 if kappa > 0 else True)
                l2 = np.sqrt(((xc - x0) ** 2).sum(axis=1))
                better = ok & (l2 < best_l2)
                best[better] = xc[better].reshape((int(better.sum()),) + shape).astype(np.float32)
                best_l2[better] = l2[better]
                round_ok |= ok
                f0 = np.maximum(loss[:, 0], -kappa)
                fp = np.maximum(loss[:, 1:k + 1], -kappa)
                fm = np.maximum(loss[:, k + 1:], -kappa)
                ctx.tick()
                cur_loss = ((xc - x0) ** 2).sum(axis=1) + const * f0
                if self.abort_early and (it + 1) % max(self.steps // 10, 1) == 0:
                    total = cur_loss.sum()
                    if total > 0.9999 * prev:
                        break
                    prev = total
                step_ok = np.ones(n, bool)
                if adaptive:
                    if snap is not None:
                        worse = cur_loss > last
                        if worse.any():  # undo the last update of those inputs, retry shorter
                            xc[worse], m[worse], v[worse], tcount[worse] = (a[worse] for a in snap)
                            step_ok = ~worse
                        lr = np.where(worse, lr * 0.5, lr * 2.0)
                        last = np.where(worse, last, cur_loss)
                    else:
                        last = cur_loss
                    snap = (xc.copy(), m.copy(), v.copy(), tcount.copy())
                # coordinate gradient of ‖x - x0‖² + c·f, then coordinate-wise Adam
                cur = xc[rows, coords]
                grad = 2.0 * (cur - x0[rows, coords]) + const[:, None] * (fp - fm) / np.maximum(xp - xm, 1e-12)
                tt = tcount[rows, coords] + 1
                mm, vv, step = adam_step(m[rows, coords], v[rows, coords], tt, grad, lr[:, None])
                new = np.clip(cur - step, lo, hi)
                upd = np.flatnonzero(step_ok)
                m[upd[:, None], coords[upd]], v[upd[:, None], coords[upd]] = mm[upd], vv[upd]
                tcount[upd[:, None], coords[upd]] = tt[upd]
                xc[upd[:, None], coords[upd]] = new[upd]
            const, lower, upper = next_const(const, lower, upper, round_ok)
        found = np.isfinite(best_l2)
        return shrink_to_boundary(ctx, best, found, self.refine_steps)
