"""Gradient rules for the neural-network ops: convolutions, matrix products, pooling, batch,
layer, instance and group normalisation, softmax and reductions.  Gradients w.r.t. weights are
built only where a rule says so and the weight is not a constant (normally it is)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from onnx import TensorProto, helper

from .builder import GraphBuilder, NotDifferentiable, node_runner
from .ops_tensor import axes_of
from .registry import GradNode, rule

# ---------------------------------------------------------------- window geometry


@dataclass
class Window:
    """Sliding-window geometry of a Conv / pooling node along its spatial axes (explicit pads)."""

    in_size: list[int]
    out_size: list[int]
    kernel: list[int]
    strides: list[int]
    dilations: list[int]
    pad_begin: list[int]
    pad_end: list[int]

    @property
    def extent(self) -> list[int]:  # (k - 1) * d + 1
        return [(k - 1) * d + 1 for k, d in zip(self.kernel, self.dilations)]


def window(b: GraphBuilder, n: GradNode, x: str, kernel: list[int]) -> Window:
    rank = b.rank(x)
    sp = rank - 2
    in_size = b.int_dims(x, range(2, rank), f"{n.op_type} gradient")
    strides = list(n.attr("strides", [1] * sp))
    dilations = list(n.attr("dilations", [1] * sp))
    pads = list(n.attr("pads", [0] * 2 * sp))
    auto_pad = n.text_attr("auto_pad", "NOTSET")
    ext = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    if auto_pad == "VALID":
        pads = [0] * 2 * sp
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        pads = [0] * 2 * sp
        for i in range(sp):
            out = -(-in_size[i] // strides[i])
            total = max(0, (out - 1) * strides[i] + ext[i] - in_size[i])
            small, big = total // 2, total - total // 2
            pads[i], pads[sp + i] = (small, big) if auto_pad == "SAME_UPPER" else (big, small)
    pb, pe = pads[:sp], pads[sp:]
    ceil_mode = int(n.attr("ceil_mode", 0))
    out_size = []
    for i in range(sp):
        span = in_size[i] + pb[i] + pe[i] - ext[i]
        if not ceil_mode:
            out = span // strides[i] + 1
        else:  # onnxruntime (like PyTorch) drops a last window that starts past the input
            out = -(-span // strides[i]) + 1
            if (out - 1) * strides[i] >= in_size[i] + pb[i]:
                out -= 1
        if out < 1:
            raise NotDifferentiable(f"{n.op_type} window larger than its padded input")
        out_size.append(out)
    return Window(in_size, out_size, list(kernel), strides, dilations, pb, pe)


def _conv_out(size: int, pb: int, pe: int, ext: int, s: int) -> int:
    return (size + pb + pe - ext) // s + 1


def conv_any_pads(b: GraphBuilder, x: str, w: str, x_size: list[int], kernel: list[int],
                  strides: list[int], dilations: list[int], pb: list[int], pe: list[int],
                  group: int, want: list[int]) -> str:
    """Conv that allows negative pads (crops ``x`` first) and crops its output to ``want``."""
    sp = len(x_size)
    if any(p < 0 for p in pb + pe):
        starts = [max(-p, 0) for p in pb]
        ends = [x_size[i] - max(-pe[i], 0) for i in range(sp)]
        x = b.op("Slice", [x, b.ints(starts), b.ints(ends), b.ints(range(2, 2 + sp))])
        x_size = [ends[i] - starts[i] for i in range(sp)]
        pb = [max(p, 0) for p in pb]
        pe = [max(p, 0) for p in pe]
    ext = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    got = [_conv_out(x_size[i], pb[i], pe[i], ext[i], strides[i]) for i in range(sp)]
    if any(g < w for g, w in zip(got, want)):
        pe = [pe[i] + (want[i] - got[i]) * strides[i] if got[i] < want[i] else pe[i]
              for i in range(sp)]
        got = [_conv_out(x_size[i], pb[i], pe[i], ext[i], strides[i]) for i in range(sp)]
    y = b.op("Conv", [x, w], kernel_shape=kernel, strides=strides, dilations=dilations,
             pads=pb + pe, group=group)
    if got != want:
        y = b.op("Slice", [y, b.ints([0] * sp), b.ints(want), b.ints(range(2, 2 + sp))])
    return y


def scatter_windows(b: GraphBuilder, g: str, w: str, win: Window, group: int = 1) -> str:
    """ConvTranspose that sends window values back to the input grid of ``win`` (exact size)."""
    sp = len(win.in_size)
    ext = win.extent
    pe = []
    opad = []
    for i in range(sp):
        full = (win.out_size[i] - 1) * win.strides[i] + ext[i]
        e = full - win.in_size[i] - win.pad_begin[i]
        if e >= 0:
            pe.append(e)
            opad.append(0)
        else:
            pe.append(0)
            opad.append(-e)
    if any(o >= s for o, s in zip(opad, win.strides)):
        raise NotDifferentiable("window geometry leaves rows no window reads")
    return b.op("ConvTranspose", [g, w], kernel_shape=win.kernel, strides=win.strides,
                dilations=win.dilations, pads=win.pad_begin + pe, group=group,
                output_padding=opad if any(opad) else None)


# ---------------------------------------------------------------- convolutions


FLIPPED_CONV_CHANNELS = 8  # onnxruntime's NCHWc block on AVX2 machines


def _flipped_weight(w: np.ndarray, group: int) -> np.ndarray:
    """Conv weight (M, C/g, *k) -> weight of the adjoint written as a Conv: (C, M/g, *k)."""
    m, cg = w.shape[:2]
    k = w.shape[2:]
    wg = w.reshape((group, m // group, cg) + k)
    wt = np.swapaxes(wg, 1, 2)  # (g, C/g, M/g, *k)
    wt = wt[(Ellipsis,) + (slice(None, None, -1),) * len(k)]
    return np.ascontiguousarray(wt.reshape((group * cg, m // group) + k))


def _bias_grad(b: GraphBuilder, dy: str, rank: int) -> str:
    return b.reduce("ReduceSum", dy, [0] + list(range(2, rank)), keepdims=0)


@rule("Conv")
def _conv(b: GraphBuilder, n: GradNode):
    n.only(0, 2)
    x, w = n.x(0), n.x(1)
    rank = b.rank(x)
    wshape = b.int_dims(w, range(rank), "Conv gradient")
    kernel = list(n.attr("kernel_shape", wshape[2:]))
    group = int(n.attr("group", 1))
    win = window(b, n, x, kernel)
    dx = None
    if n.need(0):
        wv = b.const_value(w)
        cin_per_group, cout = wshape[1], wshape[0]
        depthwise = cin_per_group == 1 and group == cout > 1
        pointwise = all(k == 1 for k in kernel) and group == 1 and cin_per_group % FLIPPED_CONV_CHANNELS == 0
        if (wv is not None and all(s == 1 for s in win.strides)
                and (cin_per_group % FLIPPED_CONV_CHANNELS == 0 and cin_per_group * group >= cout
                     or depthwise or pointwise)):
            # The adjoint as a Conv with flipped, transposed weights: onnxruntime runs it on its
            # blocked (NCHWc) kernels, faster than ConvTranspose when the gradient has at least
            # as many channels as dY, in whole blocks; ConvTranspose wins otherwise (measured:
            # e.g. 16->16 and 32->32 3x3: flipped 25% faster; 1 or 6 channels: 2-5x slower).
            # Depthwise (its own depthwise kernel: 3x3 2x, 5x5 9x faster than a grouped
            # ConvTranspose) and 1x1 layers (a plain GEMM either way; 1-3x faster) too.
            wf = b.const(_flipped_weight(wv, group), hint="conv_grad_weight")
            ext = win.extent
            dx = conv_any_pads(
                b, n.dy, wf, win.out_size, kernel, [1] * len(kernel), win.dilations,
                [e - 1 - p for e, p in zip(ext, win.pad_begin)],
                [e - 1 - p for e, p in zip(ext, win.pad_end)], group, win.in_size)
        elif (wv is not None and all(s == 1 for s in win.strides) and group == 1
              and all(d == 1 for d in win.dilations) and rank >= 3 and kernel[-1] >= 5
              and cin_per_group % FLIPPED_CONV_CHANNELS == 0
              and 4 * FLIPPED_CONV_CHANNELS <= 2 * cin_per_group <= cout):
            # Measured (1 thread, batch 64): 32->16 5x5 6-10% faster than ConvTranspose; 16->8
            # 5x5 even; with 3x3 kernels (50% more taps) 7-13% slower, hence kernel >= 5.
            dx = _conv_adjoint_split(b, n.dy, wv, win)
        else:  # ConvTranspose with the same weight is the adjoint of Conv.
            dx = scatter_windows(b, n.dy, w, win, group)
    db = _bias_grad(b, n.dy, rank) if n.need(2) else None
    return [dx, None, db]


def _conv_adjoint_split(b: GraphBuilder, dy: str, wv: np.ndarray, win: Window) -> str:
    """Adjoint of a stride-1, ungrouped Conv whose input has fewer channels than its output (in
    whole NCHWc blocks), as ONE flipped-weight Conv with the kernel's last axis cut in two halves
    stacked as output channels (2C outputs), then the two halves shifted and added.

    A flipped Conv with only C < M output channels runs onnxruntime's blocked kernel with few
    filter blocks (poor register use); ConvTranspose is no faster (its im2col buffer is huge).
    Measured for 32->16 5x5 at 14x14: 6-10% faster than either, despite 20% more taps."""
    wf = _flipped_weight(wv, 1)  # (C, M, *k)
    c = wf.shape[0]
    k = list(wf.shape[2:])
    kw = k[-1]
    r = -(-kw // 2)
    wb = np.zeros((2 * c,) + wf.shape[1:-1] + (r,), dtype=wf.dtype)
    wb[:c] = wf[..., :r]
    wb[c:, ..., :kw - r] = wf[..., r:]
    ext = win.extent
    pb = [e - 1 - p for e, p in zip(ext, win.pad_begin)]
    pe = [e - 1 - p for e, p in zip(ext, win.pad_end)]
    pe[-1] += 2 * r - kw  # r more output columns (the shift), kernel width r instead of kw
    want = list(win.in_size)
    want[-1] += r
    sp = len(k)
    g = conv_any_pads(b, dy, b.const(wb, hint="conv_grad_weight"), win.out_size, k[:-1] + [r],
                      [1] * sp, [1] * sp, pb, pe, 1, want)
    axes = b.ints([1, 1 + sp])
    first = b.op("Slice", [g, b.ints([0, 0]), b.ints([c, win.in_size[-1]]), axes])
    second = b.op("Slice", [g, b.ints([c, r]), b.ints([2 * c, r + win.in_size[-1]]), axes])
    return b.op("Add", [first, second])


def _conv_transpose_pads(b: GraphBuilder, n: GradNode, in_size, kernel, strides, dilations):
    sp = len(in_size)
    opad = list(n.attr("output_padding", [0] * sp))
    out_shape = n.attr("output_shape")
    auto_pad = n.text_attr("auto_pad", "NOTSET")
    ext = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    if out_shape is None and auto_pad in ("NOTSET", "VALID"):
        pads = list(n.attr("pads", [0] * 2 * sp)) if auto_pad == "NOTSET" else [0] * 2 * sp
        return pads[:sp], pads[sp:]
    if out_shape is not None:
        out = list(out_shape)[-sp:]
    else:
        out = [in_size[i] * strides[i] for i in range(sp)]
    pb, pe = [], []
    for i in range(sp):
        total = max(0, strides[i] * (in_size[i] - 1) + opad[i] + ext[i] - out[i])
        if auto_pad == "SAME_UPPER":
            pb.append(total // 2)
            pe.append(total - total // 2)
        else:
            pb.append(total - total // 2)
            pe.append(total // 2)
    return pb, pe


@rule("ConvTranspose")
def _conv_transpose(b: GraphBuilder, n: GradNode):
    n.only(0, 2)
    x, w = n.x(0), n.x(1)
    rank = b.rank(x)
    wshape = b.int_dims(w, range(rank), "ConvTranspose gradient")
    kernel = list(n.attr("kernel_shape", wshape[2:]))
    sp = rank - 2
    group = int(n.attr("group", 1))
    strides = list(n.attr("strides", [1] * sp))
    dilations = list(n.attr("dilations", [1] * sp))
    in_size = b.int_dims(x, range(2, rank), "ConvTranspose gradient")
    pb, pe = _conv_transpose_pads(b, n, in_size, kernel, strides, dilations)
    opad = list(n.attr("output_padding", [0] * sp))
    out_size = [strides[i] * (in_size[i] - 1) + opad[i] + (kernel[i] - 1) * dilations[i] + 1
                - pb[i] - pe[i] for i in range(sp)]
    dx = None
    if n.need(0):  # Conv with the same weight is the adjoint of ConvTranspose.
        dx = conv_any_pads(b, n.dy, w, out_size, kernel, strides, dilations, pb, pe, group,
                           in_size)
    db = _bias_grad(b, n.dy, rank) if n.need(2) else None
    return [dx, None, db]


# ---------------------------------------------------------------- matrix products


@rule("Gemm")
def _gemm(b: GraphBuilder, n: GradNode):
    a, w, y = n.x(0), n.x(1), n.y()
    alpha = float(n.attr("alpha", 1.0))
    beta = float(n.attr("beta", 1.0))
    ta, tb = int(n.attr("transA", 0)), int(n.attr("transB", 0))
    dy = n.dy
    da = dw = dc = None
    al = alpha if alpha != 1.0 else None
    if n.need(0):
        if not ta:  # dA = alpha * dY @ op(B)^T
            da = b.op("Gemm", [dy, w], transB=1 - tb, alpha=al)
        else:  # dA = alpha * op(B) @ dY^T
            da = b.op("Gemm", [w, dy], transA=tb, transB=1, alpha=al)
    if n.need(1):
        if not tb:  # dB = alpha * op(A)^T @ dY
            dw = b.op("Gemm", [a, dy], transA=1 - ta, alpha=al)
        else:  # dB = alpha * dY^T @ op(A)
            dw = b.op("Gemm", [dy, a], transA=1, transB=ta, alpha=al)
    if n.need(2):
        g = dy if beta == 1.0 else b.op("Mul", [dy, b.scalar(beta, y)])
        dc = b.reduce_to(g, y, n.x(2))
    return [da, dw, dc]


def _swap_last(b: GraphBuilder, x: str, rank: int) -> str:
    perm = list(range(rank - 2)) + [rank - 1, rank - 2]
    return b.op("Transpose", [x], perm=perm)


@rule("MatMul")
def _matmul(b: GraphBuilder, n: GradNode):
    a, c, y = n.x(0), n.x(1), n.y()
    ra, rc, _ = b.rank(a), b.rank(c), b.rank(y)
    sa, sc, sy = b.static_shape(a), b.static_shape(c), b.static_shape(y)
    # Promote 1-D operands to matrices the way MatMul does: A (k,) -> (1, k), C (k,) -> (k, 1);
    # dY gets the matching unit dimension(s) back.
    a2, c2, dy2 = a, c, n.dy
    sa2, sc2, sy2 = sa, sc, sy
    if ra == 1:
        a2 = b.unsqueeze(a, [0])
        sa2 = (1,) + tuple(sa)
        dy2 = b.unsqueeze(dy2, [-2] if rc > 1 else [0])
        sy2 = sy[:-1] + (1, sy[-1]) if rc > 1 else (1,)
    if rc == 1:
        c2 = b.unsqueeze(c, [1])
        sc2 = tuple(sc) + (1,)
        dy2 = b.unsqueeze(dy2, [-1])
        sy2 = tuple(sy2) + (1,)
    for name, shp in ((a2, sa2), (c2, sc2), (dy2, sy2)):
        b.shapes[name] = shp
    da = dc = None
    if n.need(0):  # dA = dY @ C^T, summed over broadcast batch dims
        cv = b.const_value(c)
        if cv is not None and cv.ndim == 2:
            g = b.op("MatMul", [dy2, b.const(np.ascontiguousarray(cv.T), hint="matmul_grad_w")])
        else:
            g = b.op("MatMul", [dy2, _swap_last(b, c2, len(sc2))])
        b.shapes[g] = tuple(sy2[:-1]) + (sa2[-1],)
        g = b.reduce_to(g, g, a2)
        da = b.reshape_like(g, a) if ra == 1 else g
    if n.need(1):  # dC = A^T @ dY, summed over broadcast batch dims
        g = b.op("MatMul", [_swap_last(b, a2, len(sa2)), dy2])
        b.shapes[g] = tuple(sy2[:-2]) + (sc2[-2], sy2[-1])
        g = b.reduce_to(g, g, c2)
        dc = b.reshape_like(g, c) if rc == 1 else g
    return [da, dc]


def _einsum_terms(n: GradNode) -> tuple[list[str], str]:
    eq = n.text_attr("equation", "").replace(" ", "")
    if "." in eq:
        raise NotDifferentiable("Einsum with an ellipsis")
    lhs, arrow, out = eq.partition("->")
    terms = lhs.split(",")
    if not arrow:  # implicit output: the letters used once, in alphabetical order
        letters = "".join(terms)
        out = "".join(sorted(c for c in set(letters) if letters.count(c) == 1))
    if len(terms) != len(n.node.input) or any(len(set(t)) != len(t) for t in terms + [out]):
        raise NotDifferentiable(f"Einsum equation {eq!r}: repeated indices (diagonals) are not supported")
    return terms, out


@rule("Einsum")
def _einsum(b: GraphBuilder, n: GradNode):
    # d operand_i = einsum(dY, the other operands -> term_i); letters of term_i found nowhere
    # else were summed over in the forward: the gradient is broadcast back along them.
    terms, out = _einsum_terms(n)
    grads = []
    for i, term in enumerate(terms):
        if not n.need(i):
            grads.append(None)
            continue
        others = [t for j, t in enumerate(terms) if j != i]
        seen = set(out).union(*others) if others else set(out)
        kept = "".join(c for c in term if c in seen)
        eq = ",".join([out] + others) + "->" + kept
        g = b.op("Einsum", [n.dy] + [x for j, x in enumerate(n.node.input) if j != i], equation=eq)
        missing = [k for k, c in enumerate(term) if c not in seen]
        if missing:
            g = b.op("Expand", [b.unsqueeze(g, missing), b.shape_of(n.x(i))])
        grads.append(g)
    return grads


# ---------------------------------------------------------------- normalisation, softmax


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


# ---------------------------------------------------------------- reductions


def _reduce_setup(b: GraphBuilder, n: GradNode):
    """(sorted non-negative axes, dY with kept dims, Y with kept dims); axes None when the node
    is an identity (empty axes with noop_with_empty_axes)."""
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


def _expand(b: GraphBuilder, g: str, like: str, axes: list[int], scale: float = 1.0) -> str:
    """Broadcast ``g`` (``like`` with ``axes`` reduced to 1) back to the shape of ``like``, times
    ``scale``.  With static sizes on ``axes`` this is one Mul by a constant (faster than Expand
    in onnxruntime), otherwise an Expand."""
    shp = b.static_shape(like)
    if shp is not None and all(isinstance(shp[a], int) for a in axes):
        first = min(axes)
        const = np.full([shp[a] if a in axes else 1 for a in range(first, len(shp))], scale,
                        dtype=b.np_dtype(like))
        return b.op("Mul", [g, b.const(const, hint="broadcast")])
    if scale != 1.0:
        g = b.op("Mul", [g, b.scalar(scale, like)])
    return b.op("Expand", [g, b.shape_of(like)])


@rule("ReduceSum")
def _reduce_sum(b: GraphBuilder, n: GradNode):
    n.only(0)
    r = _reduce_setup(b, n)
    if r[0] is None:
        return [n.dy]
    return [_expand(b, r[1], n.x(0), r[0])]


@rule("ReduceMean")
def _reduce_mean(b: GraphBuilder, n: GradNode):
    n.only(0)
    r = _reduce_setup(b, n)
    if r[0] is None:
        return [n.dy]
    axes, dyk, _ = r
    x = n.x(0)
    shp = b.static_shape(x)
    if shp is not None and all(isinstance(shp[a], int) for a in axes):
        return [_expand(b, dyk, x, axes, 1.0 / float(np.prod([shp[a] for a in axes])))]
    dt = b.dtypes[x]
    inv = b.op("Div", [b.op("Cast", [b.op("Size", [n.y()])], to=dt),
                       b.op("Cast", [b.op("Size", [x])], to=dt)])
    return [b.op("Expand", [b.op("Mul", [dyk, inv]), b.shape_of(x)])]


@rule("ReduceSumSquare")
def _reduce_sum_square(b: GraphBuilder, n: GradNode):
    n.only(0)
    r = _reduce_setup(b, n)
    x = n.x(0)
    g = n.dy if r[0] is None else r[1]
    return [b.op("Mul", [g, b.op("Mul", [x, b.scalar(2, x)])])]


@rule("ReduceL1")
def _reduce_l1(b: GraphBuilder, n: GradNode):
    n.only(0)
    r = _reduce_setup(b, n)
    g = n.dy if r[0] is None else r[1]
    return [b.op("Mul", [g, b.op("Sign", [n.x(0)])])]


@rule("ReduceL2")
def _reduce_l2(b: GraphBuilder, n: GradNode):
    n.only(0)
    r = _reduce_setup(b, n)
    x = n.x(0)
    if r[0] is None:  # y = |x|
        return [b.op("Mul", [n.dy, b.op("Sign", [x])])]
    _, dyk, yk = r
    return [b.op("Mul", [x, b.op("Div", [dyk, yk])])]


@rule("ReduceLogSumExp")
def _reduce_log_sum_exp(b: GraphBuilder, n: GradNode):
    n.only(0)
    r = _reduce_setup(b, n)
    if r[0] is None:
        return [n.dy]
    _, dyk, yk = r
    return [b.op("Mul", [dyk, b.op("Exp", [b.op("Sub", [n.x(0), yk])])])]


@rule("ReduceMax", "ReduceMin")
def _reduce_max(b: GraphBuilder, n: GradNode):
    # Subgradient: split evenly between the elements equal to the extremum.
    n.only(0)
    r = _reduce_setup(b, n)
    if r[0] is None:
        return [n.dy]
    axes, dyk, yk = r
    x = n.x(0)
    mask = b.op("Equal", [x, yk])
    count = b.reduce("ReduceSum", b.op("Cast", [mask], to=b.dtypes[x]), axes, keepdims=1)
    return [b.masked(b.op("Div", [dyk, count]), mask, x)]


# ---------------------------------------------------------------- pooling


@rule("GlobalAveragePool")
def _global_average_pool(b: GraphBuilder, n: GradNode):
    x = n.x(0)
    rank = b.rank(x)
    shp = b.static_shape(x)
    axes = list(range(2, rank))
    if shp is not None and all(isinstance(d, int) for d in shp[2:]):
        return [_expand(b, n.dy, x, axes, 1.0 / float(np.prod(shp[2:])))]
    dt = b.dtypes[x]
    hw = b.reduce("ReduceProd", b.op("Slice", [b.shape_of(x), b.ints([2]), b.ints([rank])]),
                  None, keepdims=0)
    inv = b.op("Reciprocal", [b.op("Cast", [hw], to=dt)])
    return [b.op("Expand", [b.op("Mul", [n.dy, inv]), b.shape_of(x)])]


@rule("GlobalMaxPool")
def _global_max_pool(b: GraphBuilder, n: GradNode):
    # All of the gradient goes to the first maximum (as for MaxPool).
    x = n.x(0)
    rank = b.rank(x)
    hw = int(np.prod(b.int_dims(x, range(2, rank), "GlobalMaxPool gradient")))
    flat = b.op("Reshape", [x, b.ints([0, 0, hw])])
    idx = b.op("ArgMax", [flat], axis=2, keepdims=1)
    onehot = b.op("Equal", [idx, b.const(np.arange(hw, dtype=np.int64), hint="arange")])
    g = b.masked(b.op("Reshape", [n.dy, b.ints([0, 0, 1])]), onehot, x)
    return [b.reshape_like(g, x)]


def _one_hot_kernel(kernel: list[int], dtype) -> np.ndarray:
    k = int(np.prod(kernel))
    return np.eye(k, dtype=dtype).reshape([k, 1] + list(kernel))


def _pool_extended_end(win: Window) -> list[int]:
    """End pads that make a floor-mode Conv produce exactly ``win.out_size`` windows."""
    ext = win.extent
    return [max(win.pad_end[i], (win.out_size[i] - 1) * win.strides[i] + ext[i]
                - win.in_size[i] - win.pad_begin[i]) for i in range(len(ext))]


def _tap_validity(win: Window) -> np.ndarray:
    """valid[t, *o]: tap t of window o reads a real element (not padding)."""
    sp = len(win.kernel)
    taps = list(itertools.product(*[range(k) for k in win.kernel]))
    valid = np.ones([len(taps)] + win.out_size, dtype=bool)
    for t, tap in enumerate(taps):
        for i in range(sp):
            pos = (np.arange(win.out_size[i]) * win.strides[i] - win.pad_begin[i]
                   + tap[i] * win.dilations[i])
            ok = (pos >= 0) & (pos < win.in_size[i])
            shape = [1] * sp
            shape[i] = win.out_size[i]
            valid[t] &= ok.reshape(shape)
    return valid


def _flat_planes(b: GraphBuilder, t: str, spatial: list[int]) -> str:
    """(N, C, *spatial) -> (N*C, 1, *spatial)."""
    return b.op("Reshape", [t, b.ints([-1, 1] + list(spatial))])


def _non_overlapping(win: Window) -> bool:
    return (all(k == s for k, s in zip(win.kernel, win.strides))
            and all(d == 1 for d in win.dilations)
            and not any(win.pad_begin) and not any(win.pad_end)
            and all(i == o * k for i, o, k in zip(win.in_size, win.out_size, win.kernel)))


def _coverage(win: Window) -> tuple[np.ndarray, np.ndarray]:
    """(number of windows reading each input position, last tap index reading it)."""
    sp = len(win.kernel)
    count = np.zeros(win.in_size, dtype=np.int64)
    tap_of = np.full(win.in_size, -1, dtype=np.int64)
    for t, tap in enumerate(itertools.product(*[range(k) for k in win.kernel])):
        idx = []
        for i in range(sp):
            pos = (np.arange(win.out_size[i]) * win.strides[i] - win.pad_begin[i]
                   + tap[i] * win.dilations[i])
            idx.append(pos[(pos >= 0) & (pos < win.in_size[i])])
        grid = np.ix_(*idx)
        count[grid] += 1
        tap_of[grid] = t
    return count, tap_of


@rule("MaxPool")
def _max_pool(b: GraphBuilder, n: GradNode):
    # The gradient of each window goes to its first maximum (row-major order of the taps), the
    # element onnxruntime's Indices output and PyTorch pick.  The forward MaxPool stays as it
    # is (no Indices output, which would put onnxruntime on a much slower kernel).
    if n.dys[0] is None:
        raise NotDifferentiable("no gradient reaches MaxPool output 0")
    x = n.x(0)
    kernel = list(n.attr("kernel_shape"))
    win = window(b, n, x, kernel)
    end = _pool_extended_end(win)  # explicit end pads for which floor mode gives out_size
    win_ext = Window(win.in_size, win.out_size, win.kernel, win.strides, win.dilations,
                     win.pad_begin, end)
    count, tap_of = _coverage(win)
    if count.max() <= 1:
        return [_max_pool_disjoint(b, n, x, win_ext, tap_of)]
    return [_max_pool_overlapping(b, n, x, win_ext)]


def _max_pool_disjoint(b: GraphBuilder, n: GradNode, x: str, win: Window,
                       tap_of: np.ndarray) -> str:
    """Windows that share no element: compare with the upsampled maximum, then break ties with a
    second MaxPool over tap priorities (first tap = highest).  All plain, fast kernels."""
    dt = b.np_dtype(x)
    k = int(np.prod(win.kernel))
    tiled = (all(k_ == s for k_, s in zip(win.kernel, win.strides))
             and all(d == 1 for d in win.dilations) and not any(win.pad_begin)
             and all(i == o * s for i, o, s in zip(win.in_size, win.out_size, win.strides)))
    if tiled:  # windows tile the input exactly: nearest-neighbour upsampling (fastest)
        scales = b.const(np.array([1, 1] + win.strides, dtype=np.float32), hint="pool_scales")

        def up(t: str) -> str:
            return b.op("Resize", [_flat_planes(b, t, win.out_size), "", scales], mode="nearest",
                        coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    else:
        ones = b.const(np.ones([1, 1] + win.kernel, dtype=dt), hint="pool_ones")

        def up(t: str) -> str:  # window value -> every element of the window (0 elsewhere)
            return scatter_windows(b, _flat_planes(b, t, win.out_size), ones, win)

    # Work on (N*C, 1, H, W) planes: onnxruntime then leaves these ops in plain NCHW layout
    # instead of converting them to its blocked layout with costly reorders around them.
    x1 = _flat_planes(b, x, win.in_size)
    at_max = b.op("Equal", [x1, up(n.y())])
    prio = np.where(tap_of >= 0, k - tap_of, 0).astype(dt)
    z = b.op("Mul", [b.op("Cast", [at_max], to=b.dtypes[x]), b.const(prio, hint="pool_prio")])
    best = b.op("MaxPool", [z], kernel_shape=win.kernel, strides=win.strides,
                dilations=win.dilations if any(d != 1 for d in win.dilations) else None,
                pads=win.pad_begin + win.pad_end)
    first = b.op("Equal", [z, up(best)])
    g = n.dy
    relu = b.producer(x)
    fold = relu is not None and relu.op_type == "Relu" and relu.domain in ("", "ai.onnx")
    if fold:  # x = Relu(.): its mask at the chosen element x == y is (y > 0), at pooled size
        y = n.y()
        g = b.relu_mask(g, y)
    dx = b.reshape_like(b.masked(up(g), first, x), x)
    if fold:
        b.relu_masked[dx] = x
    return dx


def _max_pool_overlapping(b: GraphBuilder, n: GradNode, x: str, win: Window) -> str:
    """General windows: read them with a one-hot-kernel Conv, take the first maximum with
    ArgMax, and scatter-add the gradient back with the transposed Conv."""
    dt = b.np_dtype(x)
    k = int(np.prod(win.kernel))
    x1 = _flat_planes(b, x, win.in_size)
    eye = b.const(_one_hot_kernel(win.kernel, dt), hint="pool_taps")
    patches = b.op("Conv", [x1, eye], kernel_shape=win.kernel, strides=win.strides,
                   dilations=win.dilations, pads=win.pad_begin + win.pad_end)
    valid = _tap_validity(win)
    if not valid.all():  # padded taps hold zeros; MaxPool pads with -inf
        bias = np.where(valid, 0, -np.inf).astype(dt)
        patches = b.op("Add", [patches, b.const(bias, hint="pool_pad_bias")])
    first = b.op("ArgMax", [patches], axis=1, keepdims=1)
    taps = b.const(np.arange(k, dtype=np.int64).reshape([k] + [1] * len(win.kernel)),
                   hint="taps")
    g = b.masked(_flat_planes(b, n.dy, win.out_size), b.op("Equal", [first, taps]), x)
    return b.reshape_like(scatter_windows(b, g, eye, win), x)


@lru_cache(maxsize=64)
def _average_pool_divisor_inverse(in_size: tuple, attrs: tuple, opset: int, dtype: str):
    """1/divisor of every window, measured by running the AveragePool on ones with onnxruntime.

    On an all-ones input each output is (#real taps)/divisor, and #real taps is geometry only,
    so this captures every ceil_mode / count_include_pad convention exactly as the runtime does.
    """
    shape = [1, 1] + list(in_size)
    run = node_runner("AveragePool", {},
                      {k: list(v) if isinstance(v, tuple) else v for k, v in attrs}, opset,
                      shape, dtype)
    return run(np.ones(shape, dtype=np.dtype(dtype)))[0, 0]


@rule("AveragePool")
def _average_pool(b: GraphBuilder, n: GradNode):
    x = n.x(0)
    kernel = list(n.attr("kernel_shape"))
    win = window(b, n, x, kernel)
    dt = b.np_dtype(x)
    attrs = tuple(sorted((a.name, _hashable(helper.get_attribute_value(a)))
                         for a in n.node.attribute))
    ones_out = _average_pool_divisor_inverse(tuple(win.in_size), attrs, b.opset, dt.str)
    real = _tap_validity(win).sum(axis=0)
    inv = np.where(real > 0, ones_out / np.maximum(real, 1), 0).astype(dt)
    if list(inv.shape) != win.out_size:
        raise NotDifferentiable("AveragePool output shape disagrees with shape inference")
    g = _flat_planes(b, n.dy, win.out_size)
    if np.all(inv == inv.flat[0]):
        kern = b.const(np.full([1, 1] + kernel, inv.flat[0], dtype=dt), hint="avgpool_kernel")
    else:
        g = b.op("Mul", [g, b.const(inv, hint="avgpool_inv_divisor")])
        kern = b.const(np.ones([1, 1] + kernel, dtype=dt), hint="avgpool_kernel")
    dx1 = scatter_windows(b, g, kern, win)
    return [b.reshape_like(dx1, x)]


def _hashable(v):
    if isinstance(v, list):
        return tuple(v)
    return v
