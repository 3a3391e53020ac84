"""Gradient rules of the reductions (ReduceSum, ReduceMean, ... ReduceMax/Min) and of Softmax
and LogSoftmax, which reduce along one axis."""

from __future__ import annotations

import numpy as np

from .builder import GraphBuilder
from .ops_tensor import axes_of
from .registry import GradNode, rule


@rule("Softmax")
def _softmax(b: GraphBuilder, n: GradNode):
    y = n.y()
    axis = int(n.attr("axis", -1))
    dot = b.reduce("ReduceSum", b.op("Mul", [n.dy, y]), [axis], keepdims=1)
    return [b.op("Mul", [y, b.op("Sub", [n.dy, dot])])]


@rule("LogSoftmax")
def _log_softmax(b: GraphBuilder, n: GradNode):
    y = n.y()
    axis = int(n.attr("axis", -1))
    tot = b.reduce("ReduceSum", n.dy, [axis], keepdims=1)
    return [b.op("Sub", [n.dy, b.op("Mul", [b.op("Exp", [y]), tot])])]


def _reduce_setup(b: GraphBuilder, n: GradNode):
    """(sorted non-negative axes, dY with kept dims, Y with kept dims); axes None when the node
    is an identity (empty axes with noop_with_empty_axes).  Only X gets a gradient."""
    n.only(0)
    x = n.x(0)
    rank = b.rank(x)
    axes = axes_of(b, n, 1)
    keepdims = int(n.attr("keepdims", 1))
    if not axes:
        if int(n.attr("noop_with_empty_axes", 0)):
            return None, n.dy, n.y()
        axes = list(range(rank))
    axes = sorted(a % rank for a in axes)
    dyk = n.dy if keepdims else b.unsqueeze(n.dy, axes)
    yk = n.y() if keepdims else b.unsqueeze(n.y(), axes)
    return axes, dyk, yk


def _identity_passes(fn):
    """A reduction rule ``fn(b, n, axes, dyk, yk)`` for which the identity node (empty axes with
    noop_with_empty_axes) passes dY through unchanged."""

    def reduction_rule(b: GraphBuilder, n: GradNode):
        axes, dyk, yk = _reduce_setup(b, n)
        return [n.dy] if axes is None else fn(b, n, axes, dyk, yk)

    return reduction_rule


def expand(b: GraphBuilder, g: str, like: str, axes: list[int], scale: float = 1.0) -> str:
    """Broadcast ``g`` (``like`` with ``axes`` reduced to 1) back to the shape of ``like``, times
    ``scale``.  With static sizes on ``axes`` this is one Mul by a constant (faster than Expand
    in onnxruntime), otherwise an Expand."""
    shp = b.static_shape(like)
    if shp is not None and all(isinstance(shp[a], int) for a in axes):
        first = min(axes)
        const = np.full([shp[a] if a in axes else 1 for a in range(first, len(shp))], scale,
                        dtype=b.np_dtype(like))
        out = b.op("Mul", [g, b.const(const, hint="broadcast")])
        b.broadcast_of[out] = (g, scale, like)
        return out
    if scale != 1.0:
        g = b.op("Mul", [g, b.scalar(scale, like)])
    return b.op("Expand", [g, b.shape_of(like)])


@rule("ReduceSum")
@_identity_passes
def _reduce_sum(b: GraphBuilder, n: GradNode, axes: list[int], dyk: str, yk: str):
    return [expand(b, dyk, n.x(0), axes)]


@rule("ReduceMean")
@_identity_passes
def _reduce_mean(b: GraphBuilder, n: GradNode, axes: list[int], dyk: str, yk: str):
    x = n.x(0)
    shp = b.static_shape(x)
    if shp is not None and all(isinstance(shp[a], int) for a in axes):
        return [expand(b, dyk, x, axes, 1.0 / float(np.prod([shp[a] for a in axes])))]
    dt = b.dtypes[x]
    inv = b.op("Div", [b.op("Cast", [b.op("Size", [n.y()])], to=dt),
                       b.op("Cast", [b.op("Size", [x])], to=dt)])
    return [b.op("Expand", [b.op("Mul", [dyk, inv]), b.shape_of(x)])]


@rule("ReduceSumSquare")
def _reduce_sum_square(b: GraphBuilder, n: GradNode):
    r = _reduce_setup(b, n)
    x = n.x(0)
    g = n.dy if r[0] is None else r[1]
    return [b.op("Mul", [g, b.op("Mul", [x, b.scalar(2, x)])])]


@rule("ReduceL1")
def _reduce_l1(b: GraphBuilder, n: GradNode):
    r = _reduce_setup(b, n)
    g = n.dy if r[0] is None else r[1]
    return [b.op("Mul", [g, b.op("Sign", [n.x(0)])])]


@rule("ReduceL2")
def _reduce_l2(b: GraphBuilder, n: GradNode):
    r = _reduce_setup(b, n)
    x = n.x(0)
    if r[0] is None:  # y = |x|
        return [b.op("Mul", [n.dy, b.op("Sign", [x])])]
    _, dyk, yk = r
    return [b.op("Mul", [x, b.op("Div", [dyk, yk])])]


@rule("ReduceLogSumExp")
@_identity_passes
def _reduce_log_sum_exp(b: GraphBuilder, n: GradNode, axes: list[int], dyk: str, yk: str):
    return [b.op("Mul", [dyk, b.op("Exp", [b.op("Sub", [n.x(0), yk])])])]


@rule("ReduceMax", "ReduceMin")
@_identity_passes
def _reduce_max(b: GraphBuilder, n: GradNode, axes: list[int], dyk: str, yk: str):
    # Subgradient: split evenly between the elements equal to the extremum.
    x = n.x(0)
    mask = b.op("Equal", [x, yk])
    count = b.reduce("ReduceSum", b.op("Cast", [mask], to=b.dtypes[x]), axes, keepdims=1)
    return [b.masked(b.op("Div", [dyk, count]), mask, x)]
