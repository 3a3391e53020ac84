"""DeepFool, L2 (Moosavi-Dezfooli et al., 2016)."""

from __future__ import annotations

import numpy as np

from ..base import Param, plumbing
from .base import Attack, _bshape, Context, register_attack, shrink_to_boundary


@register_attack("deepfool")
class DeepFool(Attack):
    """Linearise the classifier around the current point and step to the nearest linearised
    decision boundary among the candidate classes, until the input is misclassified.

    With targets, the only candidate is the target class (a targeted DeepFool variant).  The final
    overshoot is followed by a bisection back to the boundary along the segment (can only shorten
    the perturbation), so on a linear model the result is the exact distance to the hyperplane.

    Defaults: foolbox 3 ``L2DeepFoolAttack`` (torchattacks uses the same ``steps``/``overshoot``, ART
    ``DeepFool`` ``max_iter=100, nb_grads=10, epsilon=1e-6``).
    """

    norm = "l2"
    minimal = True

    PARAMS = {
        "steps": Param("int", 50, "maximum linearisation steps", low=1),
        "candidates": Param("int", 10, "classes considered, the most likely ones at the clean input (label included); "
                            "each step costs one gradient per candidate", low=2),
        "overshoot": Param("float", 0.02, "relative overshoot past the linearised boundary", low=0.0),
        "refine_steps": Param("int", 12, "boundary bisection after the search (0 disables it)", low=0),
        **plumbing(batch_size=256),
    }

    def _iterations(self) -> int:
        return self.steps

    def _minimize(self, ctx: Context) -> np.ndarray:
        n = len(ctx.x)
        x0 = ctx.x
        if ctx.targeted:
            first = ctx.targets  # linearise z_target - z_runner-up
            cand = None
        else:
            first = ctx.labels  # linearise z_k - z_label for every candidate k
            order = np.argsort(-np.asarray(ctx.clean_logits, np.float64), axis=1, kind="stable")
            k = min(self.candidates, ctx.num_classes)
            cand = np.stack([row[row != y][:k - 1] for row, y in zip(order[:, :k + 1], ctx.labels)])
        p_total = np.zeros(x0.shape, np.float64)
        xc = x0.copy()
        best = x0.copy()
        found = np.zeros(n, bool)
        act = np.arange(n)
        for it in range(self.steps + 1):
            _, g_first, z = ctx.oracle.value_and_grad(xc[act], "logit", rows=act, index=first[act])
            adv = ctx.is_adv(z, act)
            best[act[adv]] = xc[act[adv]]
            found[act[adv]] = True
            keep = ~adv
            act, g_first, z = act[keep], g_first[keep].astype(np.float64), np.asarray(z, np.float64)[keep]
            ctx.tick()
            if len(act) == 0 or it == self.steps:
                break
            rows = np.arange(len(act))
            zf = z[rows, first[act]]
            if ctx.targeted:
                zo = z.copy()
                zo[rows, first[act]] = -np.inf
                columns = [zo.argmax(axis=1)]
            else:
                columns = [cand[act, j] for j in range(cand.shape[1])]
            best_dist = np.full(len(act), np.inf)
            best_r = np.zeros((len(act),) + x0.shape[1:])
            for kk in columns:
                _, g_k, _ = ctx.oracle.value_and_grad(xc[act], "logit", rows=act, index=kk)
                w = g_k.astype(np.float64) - g_first
                f = z[rows, kk] - zf  # < 0 while the label beats k (untargeted)
                if ctx.targeted:  # target must overtake k: move along -(w), f = z_t - z_k < 0
                    w, f = -w, -f
                wn = np.sqrt((w.reshape(len(act), -1) ** 2).sum(axis=1))
                dist = np.abs(f) / np.maximum(wn, 1e-12)
                sel = (dist < best_dist) & (wn > 0)
                best_dist = np.where(sel, dist, best_dist)
                r = _bshape((np.abs(f) + 1e-4) / np.maximum(wn, 1e-12) ** 2, w.ndim) * w
                best_r[sel] = r[sel]
            p_total[act] += best_r
            xc[act] = ctx.clip(x0[act] + (1.0 + self.overshoot) * p_total[act])
        return shrink_to_boundary(ctx, best, found, self.refine_steps)
