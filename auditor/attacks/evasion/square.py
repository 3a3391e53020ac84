"""Square Attack, score-based Linf and L2 (Andriushchenko et al., 2020)."""

from __future__ import annotations

import numpy as np

from ...norms import norm
from ..base import Param, plumbing
from .base import Attack, _bshape, Context, register_attack


def p_selection(p_init: float, it: int, n_iters: int) -> float:
    """The fraction of pixels changed at iteration ``it``: p_init halved at the fixed milestones
    of the reference schedule (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000 out of 10 000
    iterations, rescaled to ``n_iters``)."""
    it = int(it / max(n_iters, 1) * 10000)
    milestones = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
    halvings = sum(it > m for m in milestones)
    return p_init / (2 ** halvings)


def eta_rectangles(h: int, w: int) -> np.ndarray:
    """Concentric rectangles of weight 1/(k+1)^2 around the centre, unit L2 norm (reference code)."""
    d = np.zeros((h, w))
    xc, yc = h // 2 + 1, w // 2 + 1
    a, b = xc - 1, yc - 1
    for k in range(max(xc, yc)):
        d[max(a, 0):min(a + 2 * k + 1, h), max(b, 0):min(b + 2 * k + 1, w)] += 1.0 / (k + 1) ** 2
        a, b = a - 1, b - 1
    return d / max(np.sqrt((d ** 2).sum()), 1e-12)


def meta_pseudo_gaussian(s: int, rng: np.random.Generator) -> np.ndarray:
    """The L2 Square attack's s x s update: two halves of opposite sign, each made of concentric
    rectangles, unit L2 norm, transposed with probability 1/2."""
    d = np.zeros((s, s))
    if s // 2:
        d[:s // 2] = eta_rectangles(s // 2, s)
    d[s // 2:] = -eta_rectangles(s - s // 2, s)
    d /= max(np.sqrt((d ** 2).sum()), 1e-12)
    return d.T.copy() if rng.random() > 0.5 else d


def _image_shape(x: np.ndarray) -> tuple[int, int, int]:
    """(C, H, W) of a batch of images; anything that is not NCHW is one channel, one row of pixels."""
    return tuple(x.shape[1:]) if x.ndim == 4 else (1, 1, int(np.prod(x.shape[1:])))


@register_attack("square")
class SquareAttack(Attack):
    """Random search over square-shaped perturbations: Linf at the corners of the ε-box, or L2
    on the ε-sphere.

    Starts from vertical stripes of ±ε; each query changes one random square window (side
    √(p·H·W), shrinking by the schedule of :func:`p_selection`) to a new ±ε value per channel and
    keeps it when the loss drops.  Only inputs not yet fooled are queried.

    Parameters and defaults (Andriushchenko et al.; AutoAttack, torchattacks ``Square``):

    L2 (``norm="l2"``, the reference code's ``square_attack_l2``): the start tiles the image with
    squares of side h/5 carrying :func:`meta_pseudo_gaussian` patterns of random sign per
    channel, scaled to ‖δ‖₂ = ε; each query picks two windows, moves the mass of the second
    (and the unused budget) into a fresh pattern in the first, sets the second to zero and rescales
    the perturbation to ε (then clips to the pixel range); the window side follows
    :func:`p_selection`, odd and at least 3 pixels.
    """

    query_based = True

    PARAMS = {
        "norm": Param("choice", "linf", "the threat model: `linf` or `l2`", choices=("linf", "l2")),
        "n_queries": Param("int", 5000, "query budget per input (AutoAttack and torchattacks: 5000)", low=1),
        "p_init": Param("float", 0.8, "initial fraction of pixels in a square (AutoAttack, torchattacks, ART)",
                        low=0.0, high=1.0, low_open=True),
        "restarts": Param("int", 1, "runs per input (only inputs not yet fooled are restarted)", low=1),
        "loss": Param("choice", "margin", "the loss of untargeted runs: the `margin` loss or `ce`",
                      choices=("margin", "ce")),
        "targeted_loss": Param("choice", "ce", "the loss of targeted runs: cross-entropy of the target `ce` (as in the "
                               "reference code) or `margin`", choices=("margin", "ce")),
        **plumbing(batch_size=256),
    }

    def _iterations(self) -> int:
        return self.n_queries * self.restarts

    def _loss(self, ctx: Context, z: np.ndarray, sel: np.ndarray) -> np.ndarray:
        kind = self.targeted_loss if ctx.targeted else self.loss
        zz = np.asarray(z, np.float64)
        if kind == "margin":
            return ctx.loss(zz, sel)
        goal = ctx.goal(sel)
        mx = zz.max(axis=1, keepdims=True)
        lse = np.log(np.exp(zz - mx).sum(axis=1)) + mx[:, 0]
        ce = lse - zz[np.arange(len(zz)), goal]
        return ce if ctx.targeted else -ce

    def _attack_eps(self, ctx: Context, eps: float) -> np.ndarray:
        if self.norm == "l2":
            return self._attack_l2(ctx, eps)
        lo, hi = ctx.bounds
        n = len(ctx.x)
        c, h, w = _image_shape(ctx.x)
        x0 = ctx.x.reshape(n, c, h, w)
        best_x = ctx.x.copy()
        found = np.zeros(n, bool)
        best_overall = np.full(n, np.inf)
        for r in range(self.restarts):
            act = np.flatnonzero(~found)
            if len(act) == 0:
                break
            # init: vertical stripes of +-eps
            stripes = ctx.rng.choice([-eps, eps], size=(len(act), c, 1, w)).astype(np.float32)
            xb = np.clip(x0[act] + stripes, lo, hi).astype(np.float32)
            z = ctx.oracle.logits(xb.reshape((len(act),) + ctx.x.shape[1:]), act)
            loss = self._loss(ctx, z, act)
            adv = ctx.is_adv(z, act)
            queries = 1
            while True:
                # bookkeeping: record the best point per input, drop the fooled ones
                improved = (loss < best_overall[act]) | adv
                best_overall[act[improved]] = np.where(adv[improved], -np.inf, loss[improved])
                best_x[act[improved]] = xb[improved].reshape((improved.sum(),) + ctx.x.shape[1:])
                found[act[adv]] = True
                keep = ~adv
                act, xb, loss = act[keep], xb[keep], loss[keep]
                if len(act) == 0 or queries >= self.n_queries:
                    break
                m = len(act)
                p = p_selection(self.p_init, queries, self.n_queries)
                s = int(round(np.sqrt(p * h * w)))
                s = min(max(s, 1), max(h - 1, 1) if h > 1 else 1, w)
                ch = ctx.rng.integers(0, h - s + 1, size=m) if h > s else np.zeros(m, int)
                cw = ctx.rng.integers(0, w - s + 1, size=m)
                delta = xb - x0[act]
                ii = np.arange(s)
                rows_h = (ch[:, None] + ii[None, :])  # (m, s)
                cols_w = (cw[:, None] + ii[None, :])
                mi = np.arange(m)[:, None, None, None]
                ci = np.arange(c)[None, :, None, None]
                hi_idx = rows_h[:, None, :, None]
                wi_idx = cols_w[:, None, None, :]
                window_best = xb[mi, ci, hi_idx, wi_idx]
                new_delta = delta.copy()
                todo = np.ones(m, bool)
                for _ in range(10):  # redraw until the window actually changes
                    vals = ctx.rng.choice([-eps, eps], size=(int(todo.sum()), c, 1, 1)).astype(np.float32)
                    sub = np.flatnonzero(todo)
                    new_delta[sub[:, None, None, None], ci, hi_idx[sub], wi_idx[sub]] = vals
                    cand = np.clip(x0[act][mi, ci, hi_idx, wi_idx] + new_delta[mi, ci, hi_idx, wi_idx], lo, hi)
                    same = np.all(np.abs(cand - window_best) < 1e-7, axis=(1, 2, 3))
                    todo = same
                    if not todo.any():
                        break
                xn = np.clip(x0[act] + new_delta, lo, hi).astype(np.float32)
                zn = ctx.oracle.logits(xn.reshape((m,) + ctx.x.shape[1:]), act)
                ln = self._loss(ctx, zn, act)
                adv = ctx.is_adv(zn, act)
                better = (ln < loss) | adv
                xb = np.where(better[:, None, None, None], xn, xb)
                loss = np.where(better, ln, loss)
                queries += 1
                ctx.tick()
        return best_x

    def _attack_l2(self, ctx: Context, eps: float) -> np.ndarray:
        lo, hi = ctx.bounds
        n = len(ctx.x)
        c, h, w = _image_shape(ctx.x)
        x0 = ctx.x.reshape(n, c, h, w).astype(np.float64)

        def place(delta):  # scale to the sphere, clip to the pixel range
            d = delta * _bshape(eps / np.maximum(norm(delta, "l2"), 1e-12), 4)
            return np.clip(x0[act] + d, lo, hi)

        def evaluate(xb):
            z = ctx.oracle.logits(xb.reshape((len(act),) + ctx.x.shape[1:]).astype(np.float32), act)
            return self._loss(ctx, z, act), ctx.is_adv(z, act)

        best_x = ctx.x.copy()
        found = np.zeros(n, bool)
        best_overall = np.full(n, np.inf)
        for _ in range(self.restarts):
            act = np.flatnonzero(~found)
            if len(act) == 0:
                break
            m = len(act)
            s0 = max(min(h, w) // 5, 1)
            delta = np.zeros((m, c, h, w))
            off_h, off_w = (h - s0 * (h // s0)) // 2, (w - s0 * (w // s0)) // 2
            for i in range(h // s0):
                for j in range(w // s0):
                    pat = meta_pseudo_gaussian(s0, ctx.rng)
                    sign = ctx.rng.choice([-1.0, 1.0], size=(m, c, 1, 1))
                    delta[:, :, off_h + i * s0:off_h + (i + 1) * s0, off_w + j * s0:off_w + (j + 1) * s0] += pat * sign
            xb = place(delta)
            loss, adv = evaluate(xb)
            queries = 1
            while True:
                improved = (loss < best_overall[act]) | adv
                best_overall[act[improved]] = np.where(adv[improved], -np.inf, loss[improved])
                best_x[act[improved]] = xb[improved].reshape((int(improved.sum()),) + ctx.x.shape[1:])
                found[act[adv]] = True
                keep = ~adv
                act, xb, loss = act[keep], xb[keep], loss[keep]
                if len(act) == 0 or queries >= self.n_queries:
                    break
                m = len(act)
                p = p_selection(self.p_init, queries, self.n_queries)
                s = max(int(round(np.sqrt(p * h * w))), 3)
                s += 1 - s % 2
                s = min(s, h, w)
                d_cur = xb - x0[act]
                norm_img = norm(d_cur, "l2")
                a1, b1 = ctx.rng.integers(0, h - s + 1, size=m), ctx.rng.integers(0, w - s + 1, size=m)
                a2, b2 = ctx.rng.integers(0, h - s + 1, size=m), ctx.rng.integers(0, w - s + 1, size=m)
                hh, ww = np.arange(h)[None, :, None], np.arange(w)[None, None, :]

                def window(a, b):
                    return ((hh >= a[:, None, None]) & (hh < a[:, None, None] + s)
                            & (ww >= b[:, None, None]) & (ww < b[:, None, None] + s))

                m1, m2 = window(a1, b1), window(a2, b2)
                norm_win = np.sqrt((d_cur ** 2 * (m1 | m2)[:, None]).sum(axis=(1, 2, 3)))
                ii = np.arange(s)
                mi, ci = np.arange(m)[:, None, None, None], np.arange(c)[None, :, None, None]
                hi_idx, wi_idx = (a1[:, None] + ii)[:, None, :, None], (b1[:, None] + ii)[:, None, None, :]
                w1 = d_cur[mi, ci, hi_idx, wi_idx]  # (m, c, s, s)
                old = w1 / (1e-12 + np.sqrt((w1 ** 2).sum(axis=(2, 3), keepdims=True)))
                pat = meta_pseudo_gaussian(s, ctx.rng)
                flip = ctx.rng.random(m) > 0.5
                pats = np.where(flip[:, None, None], pat.T[None], pat[None])[:, None]
                new = pats * ctx.rng.choice([-1.0, 1.0], size=(m, c, 1, 1)) + old
                scale = np.sqrt(np.maximum(eps ** 2 - norm_img ** 2, 0.0) / c + norm_win ** 2) / \
                    np.maximum(np.sqrt((new ** 2).sum(axis=(1, 2, 3))), 1e-12)
                xn = np.where(m2[:, None], 0.0, d_cur)
                xn[mi, ci, hi_idx, wi_idx] = new * scale[:, None, None, None]
                xn = np.clip(x0[act] + xn * _bshape(eps / np.maximum(norm(xn, "l2"), 1e-12), 4), lo, hi)
                ln, adv = evaluate(xn)
                better = (ln < loss) | adv
                xb = np.where(better[:, None, None, None], xn, xb)
                loss = np.where(better, ln, loss)
                queries += 1
                ctx.tick()
        return best_x
