"""Carlini & Wagner L2 attack (Carlini & Wagner, 2017)."""

from __future__ import annotations

import numpy as np

from ..base import Param, plumbing
from ..primitives import adam_step, next_const
from .base import Attack, _bshape, Context, NO_CLAMP, register_attack, shrink_to_boundary


def trade_off_params(binary_search_steps: int, initial_const: float, source: str) -> dict[str, Param]:
    """The tunables of the C&W objective ‖δ‖₂² + c·max(margin, -κ) that C&W and ZOO share: the
    binary search on c, Adam's step and κ (defaults and their ``source`` as the attack sets them)."""
    return {
        "binary_search_steps": Param("int", binary_search_steps, "rounds of the per-input binary search on the "
                                     f"trade-off constant c ({source})", low=1),
        "initial_const": Param("float", initial_const, f"c of the first round ({source})", low=0.0, low_open=True),
        "learning_rate": Param("float", 0.01, f"Adam step size ({source})", low=0.0, low_open=True),
        "confidence": Param("float", 0.0, f"κ: the margin an example must clear to count ({source})", low=0.0),
    }


def adaptive_lr_param(auto: str) -> Param:
    """``adaptive_lr`` of C&W and ZOO; ``auto``: when the automatic choice adapts, and why."""
    return Param("bool?", None, "per-input step-size adaptation (null: auto): after a step that lowers the loss the "
                 "learning rate doubles, after one that raises it the step is undone and the rate halved (the role of "
                 f"ART's learning-rate line search, at no extra query); auto adapts when {auto}")


@register_attack("cw")
class CarliniWagnerL2(Attack):
    """Minimise ‖δ‖₂² + c·f(x+δ) with Adam in tanh space, binary search on c per input.

    ``f`` is the C&W margin ``max(z_label - max_{j≠label} z_j, -κ)`` (untargeted) or
    ``max(max_{j≠t} z_j - z_t, -κ)`` (targeted).  The variable is ``w`` with
    ``x+δ = lo + (tanh(w)+1)/2·(hi-lo)``, so every iterate is inside the pixel range.  The smallest
    adversarial iterate (with confidence κ) over all steps and all c is kept; it is then pulled
    back along the segment to the decision boundary (``refine_steps`` bisection queries), which
    can only shorten it.

    Defaults: Carlini & Wagner's reference code and foolbox 3, but for ``steps``.
    """

    norm = "l2"
    minimal = True

    PARAMS = {
        "steps": Param("int", 100, "Adam steps per value of c (reference code 10 000, foolbox 10 000, ART 10, "
                       "torchattacks 50); raise it for a more precise minimum", low=1),
        **trade_off_params(9, 1e-3, "reference code, foolbox 3"),
        "abort_early": Param("bool", True, "end a round when the loss stops falling (reference code, foolbox 3)"),
        "refine_steps": Param("int", 12, "boundary bisection after the search (0 disables it)", low=0),
        "adaptive_lr": adaptive_lr_param(
            "`learning_rate·steps < 0.5`: with a fixed rate Adam moves a tanh-space coordinate by at most "
            "`learning_rate·steps`, far too little for few-step budgets (pixels at 0 or 1 sit at |w| ≈ 7.25).  "
            "Measured on 100 bundled-model test images: at 10 steps × 10 binary steps (ART's defaults) success went "
            "from 5 % to 100 % (median L2 1.46 on lenet5, ART 1.64); at 50 and 100 steps the fixed rate gave 3 % and "
            "1 % smaller medians, hence the threshold"),
        **plumbing(batch_size=256),
    }

    def _iterations(self) -> int:
        return self.steps * self.binary_search_steps

    def _minimize(self, ctx: Context) -> np.ndarray:
        lo, hi = ctx.bounds
        n, x0 = len(ctx.x), ctx.x.astype(np.float64)
        half = (hi - lo) / 2.0
        w0 = np.arctanh(np.clip((x0 - lo) / half - 1.0, -1, 1) * 0.999999)
        goal = ctx.goal()
        kappa = self.confidence
        sign = 1.0 if ctx.targeted else -1.0  # f = max(-sign·margin(goal), -κ)

        const = np.full(n, self.initial_const)
        lower, upper = np.zeros(n), np.full(n, np.inf)
        best = ctx.x.copy()
        best_l2 = np.full(n, np.inf)

        adaptive = self.adaptive_lr if self.adaptive_lr is not None else self.learning_rate * self.steps < 0.5
        for bs in range(self.binary_search_steps):
            w = w0.copy()
            m, v = np.zeros_like(w), np.zeros_like(w)
            round_ok = np.zeros(n, bool)
            prev = np.inf
            lr = np.full(n, self.learning_rate)
            last = np.full(n, np.inf)
            w_prev = m_prev = v_prev = gw_prev = None
            for t in range(1, self.steps + 1):
                tw = np.tanh(w)
                xa = (lo + (tw + 1.0) * half).astype(np.float32)
                mval, g, z = ctx.oracle.value_and_grad(xa, "margin", label=goal, kappa=NO_CLAMP)
                mval = np.asarray(mval, np.float64)
                d = xa.astype(np.float64) - x0
                l2sq = (d.reshape(n, -1) ** 2).sum(axis=1)
                f_raw = -sign * mval  # > 0 while not adversarial
                active_f = f_raw > -kappa
                loss = l2sq + const * np.maximum(f_raw, -kappa)
                # success with confidence: f_raw <= -κ (and the argmax criterion itself)
                ok = ctx.is_adv(z) & (f_raw <= -kappa + 1e-12 if kappa > 0 else True)
                l2 = np.sqrt(l2sq)
                better = ok & (l2 < best_l2)
                best[better] = xa[better]
                best_l2[better] = l2[better]
                round_ok |= ok
                ctx.tick()
                # gradient of the loss w.r.t. w
                gx = 2.0 * d + _bshape(const * active_f, d.ndim) * (-sign) * g.astype(np.float64)
                gw = gx * (1.0 - tw * tw) * half
                if adaptive:
                    if w_prev is not None:
                        worse = loss > last
                        if worse.any():  # undo the step and retry it shorter
                            w[worse], m[worse], v[worse] = w_prev[worse], m_prev[worse], v_prev[worse]
                            gw[worse], loss[worse] = gw_prev[worse], last[worse]
                        lr = np.where(worse, lr * 0.5, lr * 2.0)
                    w_prev, m_prev, v_prev, gw_prev, last = w.copy(), m.copy(), v.copy(), gw, loss.copy()
                if self.abort_early and t % max(self.steps // 10, 1) == 0:
                    total = loss.sum()
                    if total > 0.9999 * prev:
                        break
                    prev = total
                m, v, step = adam_step(m, v, t, gw, _bshape(lr, w.ndim))
                w = w - step
            const, lower, upper = next_const(const, lower, upper, round_ok)
        found = np.isfinite(best_l2)
        return shrink_to_boundary(ctx, best, found, self.refine_steps)
