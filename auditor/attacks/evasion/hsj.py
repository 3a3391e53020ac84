"""HopSkipJump, decision-based L2 (Chen, Jordan & Wainwright, 2020)."""

from __future__ import annotations

import numpy as np

from ..base import Param, plumbing
from .base import Attack, _bshape, Context, register_attack


@register_attack("hsj")
class HopSkipJump(Attack):
    """Label-only attack: walk along the decision boundary, estimating the boundary's normal from
    the labels of random probes, stepping along it with a geometric step-size search, and
    projecting back onto the boundary by bisection.

    Start: the better (after bisection towards the input) of uniform-noise images and the nearest
    other input of the batch that the model already labels adversarially (for targeted runs: one
    labelled as the target); inputs with no adversarial start fail.

    Defaults: foolbox 3 ``HopSkipJumpAttack`` (the reference code and ART ``HopSkipJump`` use 40 / 50
    iterations).

    The queries it spends are counted per input (``AttackResult.queries``).
    """

    norm = "l2"
    minimal = True
    query_based = True

    PARAMS = {
        "steps": Param("int", 64, "boundary iterations", low=1),
        "init_evals": Param("int", 100, "probes of the first gradient estimate; iteration t uses init_evals·√t, capped "
                            "at `max_evals` (reference code, foolbox, ART)", low=1),
        "max_evals": Param("int", 10000, "the most probes of one gradient estimate (reference code, foolbox, ART)",
                           low=1),
        "gamma": Param("float", 1.0, "bisection threshold θ = γ / d^{3/2} (reference code, foolbox, ART)",
                       low=0.0, low_open=True),
        "init_trials": Param("int", 100, "random-noise draws for the start (ART `init_size`)", low=0),
        **plumbing(batch_size=256),
    }

    def _iterations(self) -> int:
        return self.steps

    # --- helpers ------------------------------------------------------------------------------

    def _adv(self, ctx: Context, x: np.ndarray, sel: np.ndarray) -> np.ndarray:
        return ctx.is_adv(ctx.oracle.logits(x.astype(np.float32), sel), sel)

    def _bisect(self, ctx: Context, sel: np.ndarray, x_adv: np.ndarray, theta: float) -> np.ndarray:
        """Boundary point between x[sel] (not adversarial) and x_adv (adversarial), adv side."""
        x0 = ctx.x[sel].astype(np.float64)
        d = x_adv.astype(np.float64) - x0
        lo, hi = np.zeros(len(sel)), np.ones(len(sel))
        while True:
            open_ = (hi - lo) > theta
            if not open_.any():
                break
            idx = np.flatnonzero(open_)
            mid = (lo[idx] + hi[idx]) / 2
            xm = x0[idx] + _bshape(mid, d.ndim) * d[idx]
            a = self._adv(ctx, xm, sel[idx])
            hi[idx] = np.where(a, mid, hi[idx])
            lo[idx] = np.where(a, lo[idx], mid)
        return (x0 + _bshape(hi, d.ndim) * d).astype(np.float32)

    def _initial(self, ctx: Context, theta: float):
        """Adversarial starting points on the boundary; found[i] False where none exists."""
        n = len(ctx.x)
        lo, hi = ctx.bounds
        start = ctx.x.copy()
        found = np.zeros(n, bool)
        dist = np.full(n, np.inf)

        def consider(cand, ok):
            idx = np.flatnonzero(ok)
            if len(idx) == 0:
                return
            xb = self._bisect(ctx, idx, cand[idx], theta)
            dd = np.linalg.norm((xb - ctx.x[idx]).reshape(len(idx), -1), axis=1)
            better = dd < dist[idx]
            start[idx[better]] = xb[better]
            dist[idx[better]] = dd[better]
            found[idx[better]] = True

        # 1) uniform noise
        cand = np.zeros_like(ctx.x)
        ok = np.zeros(n, bool)
        for _ in range(self.init_trials):
            todo = np.flatnonzero(~ok)
            if len(todo) == 0:
                break
            noise = ctx.rng.uniform(lo, hi, size=(len(todo),) + ctx.x.shape[1:]).astype(np.float32)
            a = self._adv(ctx, noise, todo)
            cand[todo[a]] = noise[a]
            ok[todo[a]] = True
        consider(cand, ok)
        # 2) the nearest other input of the batch that is already adversarial for this one
        if ctx.clean_logits is not None and n > 1:
            pred = np.asarray(ctx.clean_logits).argmax(axis=1)
            flat = ctx.x.reshape(n, -1).astype(np.float64)
            sq = (flat ** 2).sum(axis=1)
            dmat = sq[:, None] + sq[None, :] - 2 * flat @ flat.T
            if ctx.targeted:
                valid = pred[None, :] == ctx.targets[:, None]
            else:
                valid = pred[None, :] != ctx.labels[:, None]
            dmat = np.where(valid, dmat, np.inf)
            np.fill_diagonal(dmat, np.inf)
            j = dmat.argmin(axis=1)
            has = np.isfinite(dmat[np.arange(n), j])
            if has.any():
                cand2 = ctx.x[j]
                ok2 = has.copy()
                idx = np.flatnonzero(has)
                ok2[idx] = self._adv(ctx, cand2[idx], idx)  # confirm on this model
                consider(cand2, ok2)
        return start, found

    # --- the attack ---------------------------------------------------------------------------

    def _minimize(self, ctx: Context) -> np.ndarray:
        lo, hi = ctx.bounds
        n = len(ctx.x)
        shape = ctx.x.shape[1:]
        d = int(np.prod(shape))
        theta = self.gamma / (d * np.sqrt(d))
        x_adv, found = self._initial(ctx, theta)
        act = np.flatnonzero(found)
        best = np.where(_bshape(found, ctx.x.ndim), x_adv, ctx.x)
        if len(act) == 0:
            return best
        x0 = ctx.x.reshape(n, d).astype(np.float64)
        xb = x_adv.reshape(n, d).astype(np.float64)
        dist = np.linalg.norm(xb - x0, axis=1)
        best_xb, best_d = xb.copy(), dist.copy()
        group_rows = 1 << 22  # floats per probe batch
        for t in range(1, self.steps + 1):
            # --- gradient-direction estimate at the boundary point
            num = int(min(self.init_evals * np.sqrt(t), self.max_evals))
            delta = np.where(t == 1, 0.1 * (hi - lo), np.sqrt(d) * theta * dist)
            grad = np.zeros((n, d))
            per = max(1, group_rows // max(num * d, 1))
            for s in range(0, len(act), per):
                sel = act[s:s + per]
                u = ctx.rng.standard_normal((len(sel), num, d))
                u /= np.linalg.norm(u, axis=2, keepdims=True)
                probe = np.clip(xb[sel, None, :] + delta[sel, None, None] * u, lo, hi)
                u = (probe - xb[sel, None, :]) / np.maximum(delta[sel, None, None], 1e-20)
                rows = np.repeat(sel, num)
                a = ctx.is_adv(ctx.oracle.logits(probe.reshape((-1,) + shape).astype(np.float32), rows), rows)
                phi = np.where(a, 1.0, -1.0).reshape(len(sel), num)
                mean = phi.mean(axis=1, keepdims=True)
                centred = np.where(np.abs(mean) == 1.0, phi, phi - mean)
                g = (centred[:, :, None] * u).mean(axis=1)
                grad[sel] = g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-20)
            # --- geometric step-size search
            eps = dist[act] / np.sqrt(t)
            xn = np.clip(xb[act] + eps[:, None] * grad[act], lo, hi)
            pending = np.ones(len(act), bool)
            for _ in range(30):
                idx = np.flatnonzero(pending)
                if len(idx) == 0:
                    break
                a = self._adv(ctx, xn[idx].reshape((-1,) + shape), act[idx])
                pending[idx[a]] = False
                still = idx[~a]
                eps[still] /= 2.0
                xn[still] = np.clip(xb[act[still]] + eps[still, None] * grad[act[still]], lo, hi)
            moved = ~pending
            mv = act[moved]
            if len(mv):
                nb = self._bisect(ctx, mv, xn[moved].reshape((-1,) + shape), theta).reshape(len(mv), d)
                nd = np.linalg.norm(nb - x0[mv], axis=1)
                xb[mv] = nb
                dist[mv] = nd
                imp = mv[nd < best_d[mv]]
                best_xb[imp], best_d[imp] = xb[imp], dist[imp]
            ctx.tick()
        out = best_xb.reshape(ctx.x.shape).astype(np.float32)
        return np.where(_bshape(found, ctx.x.ndim), out, ctx.x)
