"""Fast Gradient Sign Method (Goodfellow et al., 2015) and its L2 variant (FGM)."""

from __future__ import annotations

import numpy as np

from ..norms import normalize
from .base import NO_CLAMP, Attack, Context, check_choice


class FGSM(Attack):
    """One gradient step of size ε: ``x + ε·sign(∇ CE(x, label))`` (untargeted) or
    ``x - ε·sign(∇ CE(x, target))`` (targeted), clipped to the pixel range.

    Parameters (defaults as in foolbox 3 ``FGSM``/``FGM``, ART ``FastGradientMethod``):

    * ``norm`` — ``"linf"`` (FGSM, sign of the gradient) or ``"l2"`` (FGM, gradient / ‖gradient‖₂).
    * ``loss`` — ``"ce"`` cross-entropy (Goodfellow et al.) or ``"margin"`` (C&W margin).
    """

    name = "fgsm"

    def __init__(self, norm: str = "linf", loss: str = "ce", batch_size: int = 256, progress: bool | None = None):
        super().__init__(batch_size, progress)
        self.norm = check_choice("norm", norm, ("linf", "l2"))
        self.loss = check_choice("loss", loss, ("ce", "margin"))

    def _attack_eps(self, ctx: Context, eps: float) -> np.ndarray:
        goal = ctx.goal()
        if self.loss == "ce":
            _, g, _ = ctx.oracle.value_and_grad(ctx.x, "ce", target=goal)
            sign = -1.0 if ctx.targeted else 1.0  # ascend CE(label) / descend CE(target)
        else:
            _, g, _ = ctx.oracle.value_and_grad(ctx.x, "margin", label=goal, kappa=NO_CLAMP)
            sign = 1.0 if ctx.targeted else -1.0  # descend margin(label) / ascend margin(target)
        ctx.tick()
        return ctx.clip(ctx.x + np.float32(sign * eps) * normalize(g, self.norm))
