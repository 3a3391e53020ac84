"""Gradient rules of the convolutions (Conv, ConvTranspose).  Gradients w.r.t. weights are not
built (weights are constants); the bias gradient is."""

from __future__ import annotations

import numpy as np

from .builder import NCHWC_BLOCK, GraphBuilder
from .registry import GradNode, rule
from .window import Window, conv_any_pads, scatter_windows, window


FLIPPED_CONV_CHANNELS = NCHWC_BLOCK

#: an ungrouped stride-1 Conv whose gradient has at least this many channels takes the flipped
#: adjoint even when dY has more (a VGG-style channel increase): at ImageNet scale (3x3, batch 8,
#: ``benchmarks/bench_conv_adjoint.py``) it took 0.74-0.87x ConvTranspose's time with 2 threads
#: (64->128 at 112x112: 171 vs 208 ms; 256->512 at 28x28: 105 vs 133 ms) and 0.55-0.88x with one.
#: (Narrower layers measured faster flipped too, 16->32 and 32->64 at 56x56: 0.6x, but the bundled
#: models' small layers keep their measured choice.)
WIDE_FLIPPED_CHANNELS = 64


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


def _conv_node(b: GraphBuilder, n: GradNode):
    """(x, w, rank, weight shape, kernel, group) of a Conv / ConvTranspose node whose gradient is
    wanted w.r.t. X and the bias only (the weight is a constant)."""
    n.only(0, 2)
    x, w = n.x(0), n.x(1)
    rank = b.rank(x)
    wshape = b.int_dims(w, range(rank), f"{n.op_type} gradient")
    return x, w, rank, wshape, list(n.attr("kernel_shape", wshape[2:])), int(n.attr("group", 1))


@rule("Conv")
def _conv(b: GraphBuilder, n: GradNode):
    x, w, rank, wshape, kernel, group = _conv_node(b, n)
    win = window(b, n, x, kernel)
    dx = None
    if n.need(0):
        wv = b.const_value(w)
        cin_per_group, cout = wshape[1], wshape[0]
        dy, scale = _channel_scaled(b, n.dy, cout, rank) if wv is not None else (n.dy, None)
        if scale is not None:  # dY = g * k[m]: the adjoint of W on k * g is that of k[m] W[m] on g
            wv = (wv * scale.reshape((-1,) + (1,) * (rank - 1))).astype(wv.dtype)
            w = b.const(wv, hint="conv_grad_scaled_weight")
        depthwise = cin_per_group == 1 and group == cout > 1
        pointwise = all(k == 1 for k in kernel) and group == 1 and cin_per_group % FLIPPED_CONV_CHANNELS == 0
        wide = group == 1 and cin_per_group % FLIPPED_CONV_CHANNELS == 0 and cin_per_group >= WIDE_FLIPPED_CHANNELS
        if (wv is not None and all(s == 1 for s in win.strides)
                and (cin_per_group % FLIPPED_CONV_CHANNELS == 0 and cin_per_group * group >= cout
                     or depthwise or pointwise or wide)):
            # The adjoint as a Conv with flipped, transposed weights: onnxruntime runs it on its
            # blocked (NCHWc) kernels, faster than ConvTranspose when the gradient has at least
            # as many channels as dY, in whole blocks; ConvTranspose wins otherwise (measured:
            # e.g. 16->16 and 32->32 3x3: flipped 25% faster; 1 or 6 channels: 2-5x slower),
            # except for wide layers (WIDE_FLIPPED_CHANNELS).  Depthwise (its own depthwise
            # kernel: 3x3 2x, 5x5 9x faster than a grouped ConvTranspose) and 1x1 layers (a
            # plain GEMM either way; 1-3x faster) too.
            wf = b.const(_flipped_weight(wv, group), hint="conv_grad_weight")
            ext = win.extent
            dx = conv_any_pads(
                b, dy, wf, win.out_size, kernel, [1] * len(kernel), win.dilations,
                [e - 1 - p for e, p in zip(ext, win.pad_begin)],
                [e - 1 - p for e, p in zip(ext, win.pad_end)], group, win.in_size)
        elif (wv is not None and all(s == 1 for s in win.strides) and group == 1
              and all(d == 1 for d in win.dilations) and rank >= 3 and kernel[-1] >= 5
              and cin_per_group % FLIPPED_CONV_CHANNELS == 0
              and 4 * FLIPPED_CONV_CHANNELS <= 2 * cin_per_group <= cout):
            # Measured (1 thread, batch 64): 32->16 5x5 6-10% faster than ConvTranspose; 16->8
            # 5x5 even; with 3x3 kernels (50% more taps) 7-13% slower, hence kernel >= 5.
            dx = _conv_adjoint_split(b, dy, wv, win)
        elif wv is not None and _phases_fit(win, wshape, group, rank):
            dx = _conv_adjoint_phases(b, dy, wv, win)
        else:  # ConvTranspose with the same weight is the adjoint of Conv.
            dx = scatter_windows(b, dy, w, win, group)
    db = _bias_grad(b, n.dy, rank) if n.need(2) else None
    return [dx, None, db]


def _channel_scaled(b: GraphBuilder, dy: str, channels: int, rank: int):
    """``(g, k)`` when the gradient ``dy`` reaching a Conv output is ``g * k`` with ``k`` a constant
    per output channel (the BatchNormalization rule's scale; inference-mode BN after a Conv), so
    the Conv rule folds ``k`` into its weights instead of running that Mul; else ``(dy, None)``."""
    node = b.emitted.get(dy)
    if node is None or node.op_type != "Mul":
        return dy, None
    for i in (0, 1):
        k = b.const_value(node.input[i])
        g = node.input[1 - i]
        if (k is not None and k.shape == (channels,) + (1,) * (rank - 2)
                and b.static_shape(g) == b.static_shape(dy)):
            return g, k.reshape(-1).astype(np.float64)
    return dy, None


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


def _phase_taps(k: int, s: int, pad: int) -> list[list[tuple[int, int]]]:
    """Along one axis of a stride-``s`` Conv (kernel ``k``, pad ``pad`` in front, dilation 1),
    input position s*i + a receives tap t from output o = i + d: the (t, d) pairs of each phase a."""
    return [[(t, (a + pad - t) // s) for t in range(k) if (a + pad - t) % s == 0] for a in range(s)]


def _phases_fit(win: Window, wshape, group: int, rank: int) -> bool:
    """Whether :func:`_conv_adjoint_phases` applies: an ungrouped 2-D Conv, stride s > 1 on both
    axes, dilation 1, input sizes that the stride divides, every phase reached by some tap, whole
    NCHWc blocks of output channels and fewer input channels than a block (a network's first
    layer: the gradient w.r.t. the image) and a kernel of at most 1.5 strides.  Measured at
    224x224, batch 8 (profiler, per-node minimum): mobilenet_v2's 3->32 3x3/2 stem 15 -> 11 ms
    (ConvTranspose -> phases); resnet18's 64->3 7x7/2 stem 89 -> 126 ms (its phases' 4x4 union
    kernel, on a blocked kernel with one block of 12 outputs padded to 16).  Not taken:
    the strided depthwise layers (a grouped ConvTranspose there: 20 ms, CPU time, for 96
    channels at 112x112; s*s depthwise phase Convs + Concat + interleave: 42 ms, with
    DepthToSpace as the interleave 69 ms) and the wide ungrouped 3x3/2 ones (resnet18: no gain
    measured; the phases' union kernel has 16 taps for 9)."""
    s = win.strides[0]
    cout, cin_g = wshape[0], wshape[1]
    return (rank == 4 and group == 1 and s > 1 and all(t == s for t in win.strides)
            and all(d == 1 for d in win.dilations) and all(n % s == 0 for n in win.in_size)
            and cout % FLIPPED_CONV_CHANNELS == 0 and cin_g < FLIPPED_CONV_CHANNELS and max(win.kernel) <= 3 * s // 2
            and all(all(ph) for k, p in zip(win.kernel, win.pad_begin) for ph in [_phase_taps(k, s, p)]))


def _conv_adjoint_phases(b: GraphBuilder, dy: str, wv: np.ndarray, win: Window) -> str:
    """Adjoint of a stride-s ungrouped 2-D Conv (see :func:`_phases_fit`) as ONE stride-1 Conv
    with s*s*C outputs, one block of C per output phase (the input pixels s*i + a, s*j + c: the
    taps that reach them, over the union of the phases' tap offsets), then the phases
    interleaved.  The DCR DepthToSpace that interleaves them is written as a ConvTranspose with
    s*s input channels and a one-hot s x s kernel of stride s over (N, s*s, C*H, W): the same
    permutation, 2-5x faster than onnxruntime's DepthToSpace."""
    s = win.strides[0]
    taps = [_phase_taps(k, s, p) for k, p in zip(win.kernel, win.pad_begin)]
    size = [n // s for n in win.in_size]  # every phase's size
    m, c = wv.shape[:2]
    wt = np.swapaxes(wv, 0, 1)  # (C, M, kh, kw): the adjoint maps dY's M channels to C
    lo = [min(d for ph in ax for _, d in ph) for ax in taps]
    ks = [max(d for ph in ax for _, d in ph) - low + 1 for ax, low in zip(taps, lo)]
    wp = np.zeros((s, s, c, m, ks[0], ks[1]), dtype=wv.dtype)
    for a, ph_a in enumerate(taps[0]):
        for j, ph_j in enumerate(taps[1]):
            for th, dh in ph_a:
                for tw, dw in ph_j:
                    wp[a, j, :, :, dh - lo[0], dw - lo[1]] = wt[:, :, th, tw]
    wp = wp.reshape((s * s * c, m, ks[0], ks[1]))
    # phase output i' reads dY[i' + d] for its offsets d: pads -lo in front, the rest behind
    out = conv_any_pads(b, dy, b.const(wp, hint="conv_grad_phase_weight"), win.out_size, ks, [1, 1], [1, 1],
                        [-lo[0], -lo[1]], [size[i] - 1 + ks[i] - win.out_size[i] + lo[i] for i in range(2)],
                        1, size)
    onehot = np.zeros((s * s, 1, s, s), dtype=wv.dtype)
    for a in range(s):
        for j in range(s):
            onehot[a * s + j, 0, a, j] = 1
    r = b.op("Reshape", [out, b.ints([0, s * s, c * size[0], size[1]])])
    u = b.op("ConvTranspose", [r, b.const(onehot, hint="interleave")], kernel_shape=[s, s], strides=[s, s])
    return b.op("Reshape", [u, b.ints([0, c] + list(win.in_size))])


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
    x, w, rank, _, kernel, group = _conv_node(b, n)
    sp = rank - 2
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
