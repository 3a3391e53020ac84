"""Fast Gradient Sign Method (Goodfellow et al., 2015) and its L2 variant (FGM)."""

from __future__ import annotations

import numpy as np

from ...norms import normalize
from .base import register_attack, Attack, Context, check_choice
from .pgd import steepest_ascent


@register_attack("fgsm")
class FGSM(Attack):
    """One gradient step of size ε: ``x + ε·sign(∇ CE(x, label))`` (untargeted) or
    ``x - ε·sign(∇ CE(x, target))`` (targeted), clipped to the pixel range.

    Parameters (defaults as in foolbox 3 ``FGSM``/``FGM``, ART ``FastGradientMethod``):

    * ``norm`` — ``"linf"`` (FGSM, sign of the gradient) or ``"l2"`` (FGM, gradient / ‖gradient‖₂).
    * ``loss`` — ``"ce"`` cross-entropy (Goodfellow et al.) or ``"margin"`` (C&W margin); a
      saturated cross-entropy (zero gradient in float32) falls back to the margin for that input;
      ``"ce_raw"`` keeps the cross-entropy gradient as it is (the naive attack).
    """


    def __init__(self, norm: str = "linf", loss: str = "ce", batch_size: int = 256, progress: bool | None = None):
        super().__init__(batch_size, progress)
        self.norm = check_choice("norm", norm, ("linf", "l2"))
        self.loss = check_choice("loss", loss, ("ce", "margin", "ce_raw"))

    def _attack_eps(self, ctx: Context, eps: float) -> np.ndarray:
        g, _ = steepest_ascent(ctx, ctx.x, np.arange(len(ctx.x)), self.loss)
        ctx.tick()
        return ctx.clip(ctx.x + np.float32(eps) * normalize(g, self.norm))
