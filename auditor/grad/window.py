"""Sliding-window geometry shared by the convolution and pooling rules: explicit pads of a
Conv / pooling node, a Conv that accepts negative pads, and the ConvTranspose that scatters
window values back onto the input grid."""

from __future__ import annotations

from dataclasses import dataclass

from .builder import GraphBuilder, NotDifferentiable
from .registry import GradNode


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
