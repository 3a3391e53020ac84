"""Gradient rules of the pooling ops: global average / max pooling, MaxPool (the gradient of each
window goes to its first maximum, the element onnxruntime's Indices output points to) and
AveragePool (the runtime's own divisors)."""

from __future__ import annotations

import itertools
from functools import lru_cache

import numpy as np
from onnx import TensorProto, helper

from .builder import GraphBuilder, NotDifferentiable, node_runner
from .ops_reduce import expand
from .registry import GradNode, rule
from .window import Window, scatter_windows, window


@rule("GlobalAveragePool")
def _global_average_pool(b: GraphBuilder, n: GradNode):
    x = n.x(0)
    rank = b.rank(x)
    shp = b.static_shape(x)
    axes = list(range(2, rank))
    if shp is not None and all(isinstance(d, int) for d in shp[2:]):
        return [expand(b, n.dy, x, axes, 1.0 / float(np.prod(shp[2:])))]
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
    if b.opset >= 16 and b.dtypes[x] in (TensorProto.FLOAT, TensorProto.DOUBLE):
        return [_max_pool_scatter(b, n, x)]
    return [_max_pool_overlapping(b, n, x, win_ext)]


def _relu_folded(b: GraphBuilder, n: GradNode, x: str) -> tuple[str, bool]:
    """When ``x`` = Relu(.), the MaxPool's output gradient times the Relu's mask at pooled size
    (at a window's chosen element x == y, so the mask is y > 0): ``(masked dY, True)``; else
    ``(dY, False)``.  A window whose maximum is 0 then sends nothing, padded taps included."""
    relu = b.producer(x)
    if relu is None or relu.op_type != "Relu" or relu.domain not in ("", "ai.onnx"):
        return n.dy, False
    return b.relu_mask(n.dy, n.y()), True


def _max_pool_scatter(b: GraphBuilder, n: GradNode, x: str) -> str:
    """Overlapping windows (opset >= 16): a second MaxPool of ``x`` with the node's window
    attributes and the Indices output (the first maximum of each window, as a flat index into
    ``x``), then every window's gradient added at its index by ScatterElements (reduction add,
    in a fixed order).  Measured at ImageNet scale (batch 8, 2 threads, 64x112x112 3x3/2 pad 1,
    the resnet18 / densenet121 stem; profiler kernel sums): 51 ms (MaxPool with Indices 32.6,
    ScatterElements 18.4) against 77 for :func:`_max_pool_overlapping` (ConvTranspose 29.4,
    ArgMax 14.4, patches Conv 11.2, Cast, Mul, Equal 21.6).  Indices puts onnxruntime on a
    plain-layout kernel, so the forward MaxPool stays apart, on its blocked one.  Not for
    disjoint windows: on vgg11_bn's tiled 2x2/2 pools it took twice :func:`_max_pool_disjoint`'s
    time."""
    attrs = {a.name: helper.get_attribute_value(a) for a in n.node.attribute
             if a.name in ("auto_pad", "ceil_mode", "dilations", "kernel_shape", "pads", "strides")}
    _, first = b.op("MaxPool", [x], n_out=2, **attrs)
    g, fold = _relu_folded(b, n, x)
    flat = b.ints([-1])
    # zeros of x's size made at run time (zeros_like makes a constant of a static shape: 26 MB
    # in the graph for resnet18's stem at batch 8)
    zeros = b.op("ConstantOfShape", [b.op("Reshape", [b.op("Size", [x]), flat])],
                 value=helper.make_tensor("zero", b.dtypes[x], [1], [0]))
    dx = b.op("ScatterElements", [zeros, b.op("Reshape", [first, flat]), b.op("Reshape", [g, flat])],
              axis=0, reduction="add")
    dx = b.reshape_like(dx, x)
    if fold:
        b.relu_masked[dx] = x
    return dx


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
    g, fold = _relu_folded(b, n, x)
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
    # With a folded Relu mask the padded taps (zeros in the patches, -inf for MaxPool) need no
    # -inf bias: they can only tie with a maximum of 0, whose window sends nothing.
    g, fold = _relu_folded(b, n, x)
    if not fold:
        valid = _tap_validity(win)
        if not valid.all():  # padded taps hold zeros; MaxPool pads with -inf
            bias = np.where(valid, 0, -np.inf).astype(dt)
            patches = b.op("Add", [patches, b.const(bias, hint="pool_pad_bias")])
    first = b.op("ArgMax", [patches], axis=1, keepdims=1)
    taps = b.const(np.arange(k, dtype=np.int64).reshape([k] + [1] * len(win.kernel)),
                   hint="taps")
    g = b.masked(_flat_planes(b, g, win.out_size), b.op("Equal", [first, taps]), x)
    dx = b.reshape_like(scatter_windows(b, g, eye, win), x)
    if fold:
        b.relu_masked[dx] = x
    return dx


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
