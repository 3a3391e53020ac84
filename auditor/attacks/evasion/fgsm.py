"""Fast Gradient Sign Method (Goodfellow et al., 2015) and its L2 variant (FGM)."""

from __future__ import annotations

import numpy as np

from ...norms import normalize
from ..base import Param, plumbing
from .base import Attack, Context, register_attack


from .pgd import steepest_ascent


@register_attack("fgsm")
class FGSM(Attack):
    """One gradient step of size ε: ``x + ε·sign(∇ CE(x, label))`` (untargeted) or
    ``x - ε·sign(∇ CE(x, target))`` (targeted), clipped to the pixel range.

    Defaults as in foolbox 3 ``FGSM``/``FGM``, ART ``FastGradientMethod``.
    """

    PARAMS = {
        "norm": Param("choice", "linf", "`linf` (FGSM, sign of the gradient) or `l2` (FGM, gradient / ‖gradient‖₂)", choices=("linf", "l2")),
        "loss": Param("choice", "ce", "`ce` cross-entropy (Goodfellow et al.) or `margin` (C&W margin); a saturated "
                      "cross-entropy (zero gradient in float32) falls back to the margin for that input; `ce_raw` keeps "
                      "the cross-entropy gradient as it is (the naive attack)", choices=("ce", "margin", "ce_raw")),
        **plumbing(batch_size=256),
    }

    def _attack_eps(self, ctx: Context, eps: float) -> np.ndarray:
        g, _ = steepest_ascent(ctx, ctx.x, np.arange(len(ctx.x)), self.loss)
        ctx.tick()
        return ctx.clip(ctx.x + np.float32(eps) * normalize(g, self.norm))
