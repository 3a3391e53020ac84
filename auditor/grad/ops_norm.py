"""Gradient rules of the normalisations: batch (inference mode), layer, instance and group
normalisation, and local response normalisation (LRN)."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper

from .builder import GraphBuilder, NotDifferentiable
from .registry import GradNode, rule


@rule("BatchNormalization")
def _batch_norm(b: GraphBuilder, n: GradNode):
    n.only(0)
    if n.attr("training_mode", 0) or (len(n.node.output) > 1 and any(n.node.output[1:])):
        raise NotDifferentiable("BatchNormalization in training mode")
    x, scale, var = n.x(0), n.x(1), n.x(4)
    eps = float(n.attr("epsilon", 1e-5))
    rank = b.rank(x)
    sv, vv = b.const_value(scale), b.const_value(var)
    bshape = (-1,) + (1,) * (rank - 2)
    if sv is not None and vv is not None:
        k = (sv.astype(np.float64) / np.sqrt(vv.astype(np.float64) + eps)).astype(b.np_dtype(x))
        kname = b.const(k.reshape(bshape), hint="bn_grad_scale")
    else:
        den = b.op("Sqrt", [b.op("Add", [var, b.scalar(eps, var)])])
        kname = b.op("Reshape", [b.op("Div", [scale, den]), b.ints(bshape)])
    return [b.op("Mul", [n.dy, kname])]


# Normalisation over some axes (LayerNormalization, InstanceNormalization, GroupNormalization):
# y = xhat * scale + bias with xhat = (x - mean(x)) * istd, istd = 1 / sqrt(var(x) + eps), the
# mean and (biased) variance taken over the normalised axes.  With g = dy * scale,
#   dx = istd * (g - mean(g) - xhat * mean(g * xhat)).
# xhat is recomputed from X (not recovered from Y, which loses it where scale == 0).

_LOW_PRECISION = (TensorProto.FLOAT16, TensorProto.BFLOAT16)


def _stash_dtype(b: GraphBuilder, n: GradNode, x: str) -> int:
    """Element type the backward computes in: float32 for float16/bfloat16 inputs when the node
    computes its statistics in float32 (stash_type 1, the default), else X's own type."""
    et = b.dtypes.get(x)
    if et is None:
        raise NotDifferentiable(f"the element type of tensor {x!r} is unknown")
    stash = int(n.attr("stash_type", 1))
    if stash not in (0, 1):
        raise NotDifferentiable(f"{n.op_type} with stash_type={stash} is not supported")
    return TensorProto.FLOAT if stash == 1 and et in _LOW_PRECISION else et


def _cast(b: GraphBuilder, t: str, frm: int | None, to: int) -> str:
    return t if frm == to else b.op("Cast", [t], to=to)


def _norm_backward(b: GraphBuilder, xc: str, g: str, axes: list[int], eps: float, et: int,
                   d_mean: str | None = None, d_istd: str | None = None,
                   count: int | None = None) -> tuple[str, str]:
    """(dx, xhat) for a normalisation of ``xc`` over ``axes``, all in element type ``et``.

    ``g`` is dY times the scale (broadcast to ``xc``).  ``d_mean`` / ``d_istd`` (shaped like the
    statistics, keepdims) are gradients reaching the node's Mean / InvStdDev outputs; they need
    ``count``, the number of elements each statistic is taken over."""
    dt = helper.tensor_dtype_to_np_dtype(et)
    d = b.op("Sub", [xc, b.reduce("ReduceMean", xc, axes, keepdims=1)])
    var = b.reduce("ReduceMean", b.op("Mul", [d, d]), axes, keepdims=1)
    istd = b.op("Reciprocal", [b.op("Sqrt", [b.op("Add", [var, b.const(np.asarray(eps, dt))])])])
    xhat = b.op("Mul", [d, istd])
    mg = b.reduce("ReduceMean", g, axes, keepdims=1)
    mgx = b.reduce("ReduceMean", b.op("Mul", [g, xhat]), axes, keepdims=1)
    if d_mean is not None:  # d mean / dx_i = 1/count
        mg = b.op("Sub", [mg, b.op("Div", [d_mean, b.op("Mul", [istd, b.const(
            np.asarray(count, dt))])])])
    if d_istd is not None:  # d istd / dx_i = -istd^3 (x_i - mean) / count = -istd^2 xhat_i / count
        mgx = b.op("Add", [mgx, b.op("Mul", [d_istd, b.op("Mul", [istd, b.const(
            np.asarray(1.0 / count, dt))])])])
    dx = b.op("Mul", [istd, b.op("Sub", [b.op("Sub", [g, mg]), b.op("Mul", [xhat, mgx])])])
    return dx, xhat


def _norm_param(b: GraphBuilder, p: str, et: int, shape: list[int] | None = None) -> str:
    """A scale parameter in element type ``et``, reshaped to ``shape`` when one is given: a
    constant when ``p`` is one, else Reshape + Cast in the graph."""
    pv = b.const_value(p)
    if pv is not None:
        pv = pv.astype(helper.tensor_dtype_to_np_dtype(et))
        return b.const(pv if shape is None else pv.reshape(shape), hint="norm_scale")
    frm = b.dtypes.get(p)
    if shape is not None:
        p = b.op("Reshape", [p, b.ints(shape)])
    return _cast(b, p, frm, et)


def _channel_param(b: GraphBuilder, p: str, rank: int, et: int) -> str:
    """A per-channel parameter (C,) as (C, 1, ..., 1) of element type ``et``."""
    return _norm_param(b, p, et, [-1] + [1] * (rank - 2))


@rule("LayerNormalization")
def _layer_norm(b: GraphBuilder, n: GradNode):
    n.only(0, 1, 2)
    x, scale, y = n.x(0), n.x(1), n.y()
    rank = b.rank(x)
    axis = int(n.attr("axis", -1))
    if not -rank <= axis < rank:
        raise NotDifferentiable(f"LayerNormalization axis {axis} out of range for rank {rank}")
    axes = list(range(axis % rank, rank))
    eps = float(n.attr("epsilon", 1e-5))
    et, ct = b.dtypes.get(x), _stash_dtype(b, n, x)
    dy = n.dys[0] if n.dys[0] is not None else b.zeros_like(y)
    extra = {}
    for k, key in ((1, "d_mean"), (2, "d_istd")):
        if k < len(n.dys) and n.dys[k] is not None:
            extra[key] = _cast(b, n.dys[k], b.dtypes.get(n.y(k)), ct)
    if extra:
        dims = b.int_dims(x, axes, "the gradient through LayerNormalization's Mean/InvStdDev")
        extra["count"] = int(np.prod(dims))
    g = b.op("Mul", [_cast(b, dy, et, ct), _norm_param(b, scale, ct)])
    dx, xhat = _norm_backward(b, _cast(b, x, et, ct), g, axes, eps, ct, **extra)
    dscale = dbias = None
    if n.need(1):
        prod = b.op("Mul", [dy, _cast(b, xhat, ct, et)])
        b.shapes[prod] = b.static_shape(x)
        dscale = b.reduce_to(prod, prod, scale)
    if n.need(2):
        dbias = b.reduce_to(dy, x, n.x(2))
    return [_cast(b, dx, ct, et), dscale, dbias]


@rule("InstanceNormalization")
def _instance_norm(b: GraphBuilder, n: GradNode):
    n.only(0, 1, 2)
    x = n.x(0)
    rank = b.rank(x)
    if rank < 3:
        raise NotDifferentiable("InstanceNormalization needs an input of rank 3 or more")
    axes = list(range(2, rank))
    eps = float(n.attr("epsilon", 1e-5))
    et = b.dtypes.get(x)
    # onnxruntime's float16 kernel computes in float32; the backward does the same.
    ct = TensorProto.FLOAT if et in _LOW_PRECISION else et
    dy = n.dy
    g = b.op("Mul", [_cast(b, dy, et, ct), _channel_param(b, n.x(1), rank, ct)])
    dx, xhat = _norm_backward(b, _cast(b, x, et, ct), g, axes, eps, ct)
    sum_axes = [0] + axes
    dscale = dbias = None
    if n.need(1):
        prod = b.op("Mul", [dy, _cast(b, xhat, ct, et)])
        dscale = b.reduce("ReduceSum", prod, sum_axes, keepdims=0)
    if n.need(2):
        dbias = b.reduce("ReduceSum", dy, sum_axes, keepdims=0)
    return [_cast(b, dx, ct, et), dscale, dbias]


@rule("GroupNormalization")
def _group_norm(b: GraphBuilder, n: GradNode):
    """Opset 18-20: scale and bias per group (G,); opset 21+: per channel (C,).  The statistics
    are taken per (sample, group) on the (N, G, C/G * spatial) view of X."""
    n.only(0, 1, 2)
    x, scale = n.x(0), n.x(1)
    rank = b.rank(x)
    if rank < 2:
        raise NotDifferentiable("GroupNormalization needs an input of rank 2 or more")
    groups = n.attr("num_groups")
    if groups is None:
        raise NotDifferentiable("GroupNormalization without num_groups")
    groups = int(groups)
    eps = float(n.attr("epsilon", 1e-5))
    per_channel = b.opset >= 21
    et = b.dtypes.get(x)
    ct = _stash_dtype(b, n, x) if per_channel else (
        TensorProto.FLOAT if et in _LOW_PRECISION else et)
    view = b.ints([0, groups, -1])
    dy = n.dy
    dyc = _cast(b, dy, et, ct)
    if per_channel:
        g = b.op("Reshape", [b.op("Mul", [dyc, _channel_param(b, scale, rank, ct)]), view])
    else:
        g = b.op("Mul", [b.op("Reshape", [dyc, view]), _norm_param(b, scale, ct, [-1, 1])])
    x3 = b.op("Reshape", [_cast(b, x, et, ct), view])
    dx3, xhat3 = _norm_backward(b, x3, g, [2], eps, ct)
    dscale = dbias = None
    if n.need(1) or n.need(2):
        if per_channel:
            sum_axes = [0] + list(range(2, rank))
            dyv, xhat = dy, b.reshape_like(_cast(b, xhat3, ct, et), x)
        else:
            sum_axes = [0, 2]
            dyv, xhat = b.op("Reshape", [dy, view]), _cast(b, xhat3, ct, et)
        if n.need(1):
            dscale = b.reduce("ReduceSum", b.op("Mul", [dyv, xhat]), sum_axes, keepdims=0)
        if n.need(2):
            dbias = b.reduce("ReduceSum", dyv, sum_axes, keepdims=0)
    return [b.reshape_like(_cast(b, dx3, ct, et), x), dscale, dbias]


@rule("LRN")
def _lrn(b: GraphBuilder, n: GradNode):
    # y_c = x_c s_c^-beta with s_c = bias + alpha/size * sum_{j=c-lo}^{c+hi} x_j^2 (lo, hi =
    # floor, ceil of (size-1)/2); dx_j = dy_j s_j^-beta - 2 alpha beta/size * x_j *
    # sum_{c=j-hi}^{j+lo} dy_c y_c / s_c.  The channel-window sums are one Conv with a (size, 1)
    # kernel of ones over x viewed as (N, 1, C, rest).
    x, y = n.x(0), n.y()
    size = int(n.attr("size"))
    alpha, beta, bias = float(n.attr("alpha", 1e-4)), float(n.attr("beta", 0.75)), float(n.attr("bias", 1.0))
    rank = b.rank(x)
    if rank < 2 or size < 1:
        raise NotDifferentiable(f"LRN needs an input of rank >= 2 and size >= 1, got rank {rank}, size {size}")
    (channels,) = b.int_dims(x, [1], "LRN gradient")
    lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
    view = b.ints([0, 1, channels, -1])
    ones = b.const(np.ones((1, 1, size, 1), dtype=b.np_dtype(x)), hint="lrn_window")

    def window_sum(t: str, before: int, after: int) -> str:
        s = b.op("Conv", [b.op("Reshape", [t, view]), ones], kernel_shape=[size, 1],
                 pads=[before, 0, after, 0])
        return b.reshape_like(s, x)

    s = b.op("Add", [b.op("Mul", [window_sum(b.op("Mul", [x, x]), lo, hi), b.scalar(alpha / size, x)]),
                     b.scalar(bias, x)])
    direct = b.op("Mul", [n.dy, b.op("Pow", [s, b.scalar(-beta, x)])])
    t = b.op("Div", [b.op("Mul", [n.dy, y]), s])
    cross = b.op("Mul", [b.op("Mul", [window_sum(t, hi, lo), x]), b.scalar(2 * alpha * beta / size, x)])
    return [b.op("Sub", [direct, cross])]
