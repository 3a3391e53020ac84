"""Gradient rules for int8 quantisation (QDQ models): the straight-through estimator.

``QuantizeLinear`` (q = saturate(round(x / s) + zp)) and ``DequantizeLinear`` (y = (q - zp) * s)
are piecewise constant in x; their exact derivative is zero almost everywhere.  The
straight-through estimator (Bengio et al., 2013) differentiates the rounding as the identity: the
quantiser's derivative is 1 / s and the dequantiser's is s, so a QuantizeLinear -> DequantizeLinear
pair passes the gradient unchanged, and the forward pass keeps the real (de)quantised values.
The gradient of the integer tensor q is carried in the floating type of the scale.  Reports state
that a QDQ model's gradients are straight-through (``auditor.model.load.load_notes``).
"""

from __future__ import annotations

from .builder import GraphBuilder, NotDifferentiable
from .registry import GradNode, rule


def _scale_along(b: GraphBuilder, n: GradNode) -> str:
    """The scale input shaped to broadcast against the quantised tensor (per tensor or per axis)."""
    if n.attr("block_size"):
        raise NotDifferentiable("blocked quantisation (block_size) is not supported")
    s = n.x(1)
    shape = b.static_shape(s)
    if shape is None:
        raise NotDifferentiable(f"the rank of the scale {s!r} is unknown")
    if len(shape) == 0:
        return s
    rank = b.rank(n.x(0))
    axis = int(n.attr("axis", 1)) % rank
    target = [1] * rank
    target[axis] = -1
    return b.op("Reshape", [s, b.ints(target)])


@rule("QuantizeLinear")
def _quantize(b: GraphBuilder, n: GradNode):
    n.only(0)
    return [b.op("Div", [n.dy, _scale_along(b, n)])]


@rule("DequantizeLinear")
def _dequantize(b: GraphBuilder, n: GradNode):
    n.only(0)
    return [b.op("Mul", [n.dy, _scale_along(b, n)])]
