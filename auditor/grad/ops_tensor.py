"""Gradient rules for ops that move data around: reshapes, transposes, slicing, padding, concat."""

from __future__ import annotations

import numpy as np

from .builder import GraphBuilder, NotDifferentiable
from .registry import GradNode, rule

INT64_MAX = np.iinfo(np.int64).max


def const_input(b: GraphBuilder, n: GradNode, i: int, what: str) -> np.ndarray | None:
    """Value of optional input ``i`` (None if absent); NotDifferentiable if it is not constant."""
    if i >= len(n.node.input) or not n.node.input[i]:
        return None
    v = b.const_value(n.node.input[i])
    if v is None:
        raise NotDifferentiable(f"{n.op_type} needs a constant {what} (input {i})")
    return v


def axes_of(b: GraphBuilder, n: GradNode, input_index: int) -> list[int] | None:
    """``axes`` given as an attribute (older opsets) or as a constant input (newer ones)."""
    a = n.attr("axes")
    if a is not None:
        return [int(v) for v in a]
    v = const_input(b, n, input_index, "axes")
    return None if v is None else [int(t) for t in v.reshape(-1)]


def _move_axis_last(b: GraphBuilder, x: str, axis: int, rank: int) -> tuple[str, list[int]]:
    if axis == rank - 1:
        return x, list(range(rank))
    perm = [i for i in range(rank) if i != axis] + [axis]
    return b.op("Transpose", [x], perm=perm), perm


def _move_axis_back(b: GraphBuilder, x: str, perm: list[int]) -> str:
    if perm == sorted(perm):
        return x
    inv = [0] * len(perm)
    for i, p in enumerate(perm):
        inv[p] = i
    return b.op("Transpose", [x], perm=inv)


def apply_along_axis(b: GraphBuilder, x: str, axis: int, rank: int, mat: np.ndarray) -> str:
    """Contract axis ``axis`` of ``x`` (size mat.shape[0]) with ``mat``; -> size mat.shape[1]."""
    xt, perm = _move_axis_last(b, x, axis, rank)
    r = b.op("MatMul", [xt, b.const(mat, hint="axis_map")])
    return _move_axis_back(b, r, perm)


# ---------------------------------------------------------------- reshapes


@rule("Flatten", "Reshape", "Squeeze", "Unsqueeze")
def _reshape(b: GraphBuilder, n: GradNode):
    n.only(0)
    return [b.reshape_like(n.dy, n.x(0))]


@rule("Dropout")
def _dropout(b: GraphBuilder, n: GradNode):
    n.only(0)
    if n.attr("training_mode", 0):
        raise NotDifferentiable("Dropout in training mode")
    if len(n.node.input) > 2 and n.node.input[2]:
        t = b.const_value(n.node.input[2])
        if t is None:
            raise NotDifferentiable("Dropout training_mode is not a constant")
        if bool(np.asarray(t).reshape(-1)[0]):
            raise NotDifferentiable("Dropout in training mode")
    return [n.dy]


@rule("Transpose")
def _transpose(b: GraphBuilder, n: GradNode):
    perm = n.attr("perm")
    if perm is None:
        perm = list(reversed(range(b.rank(n.x()))))
    inv = [0] * len(perm)
    for i, p in enumerate(perm):
        inv[p] = i
    return [b.op("Transpose", [n.dy], perm=inv)]


@rule("Expand")
def _expand(b: GraphBuilder, n: GradNode):
    n.only(0)
    return [b.reduce_to(n.dy, n.y(), n.x(0))]


@rule("Tile")
def _tile(b: GraphBuilder, n: GradNode):
    n.only(0)
    reps = const_input(b, n, 1, "repeats")
    x = n.x(0)
    rank = b.rank(x)
    dims = b.int_dims(x, range(rank), "Tile gradient")
    reps = [int(r) for r in reps.reshape(-1)]
    inter = []
    for r, d in zip(reps, dims):
        inter += [r, d]
    g = b.op("Reshape", [n.dy, b.ints(inter)])
    g = b.reduce("ReduceSum", g, [2 * i for i in range(rank)], keepdims=0)
    return [g]


# ---------------------------------------------------------------- concat / split


@rule("Concat")
def _concat(b: GraphBuilder, n: GradNode):
    y = n.y()
    rank = b.rank(y)
    axis = int(n.attr("axis")) % rank
    sizes = []
    static = True
    for x in n.node.input:
        shp = b.static_shape(x)
        d = shp[axis] if shp is not None else None
        if not isinstance(d, int):
            static = False
        sizes.append(d)
    if static:
        split = b.ints(sizes)
    else:
        split = b.op("Concat", [b.op("Slice", [b.shape_of(x), b.ints([axis]), b.ints([axis + 1])])
                                for x in n.node.input], axis=0)
    if len(n.node.input) == 1:
        return [n.dy]
    parts = b.op("Split", [n.dy, split], n_out=len(n.node.input), axis=axis)
    return [p if n.need(i) else None for i, p in enumerate(parts)]


@rule("Split")
def _split(b: GraphBuilder, n: GradNode):
    n.only(0)
    rank = b.rank(n.x(0))
    axis = int(n.attr("axis", 0)) % rank
    parts = [dy if dy is not None else b.zeros_like(y, dtype_like=n.x(0))
             for dy, y in zip(n.dys, n.node.output)]
    if len(parts) == 1:
        return [parts[0]]
    return [b.op("Concat", parts, axis=axis)]


# ---------------------------------------------------------------- slice / pad / gather


def _slice_params(b: GraphBuilder, n: GradNode, rank: int):
    if b.opset < 10:
        starts, ends = n.attr("starts"), n.attr("ends")
        axes = n.attr("axes", list(range(len(starts))))
        steps = [1] * len(starts)
    else:
        starts = const_input(b, n, 1, "starts").reshape(-1).tolist()
        ends = const_input(b, n, 2, "ends").reshape(-1).tolist()
        av = const_input(b, n, 3, "axes")
        sv = const_input(b, n, 4, "steps")
        axes = list(range(len(starts))) if av is None else av.reshape(-1).tolist()
        steps = [1] * len(starts) if sv is None else sv.reshape(-1).tolist()
    return [(int(a) % rank, int(s), int(e), int(st)) for a, s, e, st in
            zip(axes, starts, ends, steps)]


@rule("Slice")
def _slice(b: GraphBuilder, n: GradNode):
    n.only(0)
    x = n.x(0)
    rank = b.rank(x)
    g = n.dy
    pads = [0] * (2 * rank)
    strided = []
    for axis, start, end, step in _slice_params(b, n, rank):
        (length,) = b.int_dims(x, [axis], "Slice gradient")
        idx = list(range(length))[slice(start, end, step)]
        if not idx:
            return [b.zeros_like(x)]
        if step == 1:
            pads[axis] = idx[0]
            pads[rank + axis] = length - idx[-1] - 1
        else:
            strided.append((axis, idx, length))
    for axis, idx, length in strided:
        mat = np.zeros((len(idx), length), dtype=b.np_dtype(x))
        mat[np.arange(len(idx)), idx] = 1
        g = apply_along_axis(b, g, axis, rank, mat)
    if any(pads):
        # strided axes already have their full length; their pads are 0
        g = b.op("Pad", [g, b.ints(pads), b.scalar(0, x)], mode="constant")
    return [g]


def _pad_index_map(mode: str, length: int, begin: int, end: int) -> np.ndarray:
    """Input index read by each output position of a 1-D Pad (-1: the constant)."""
    src = np.arange(length)
    if mode == "constant":
        return np.pad(src, (begin, end), mode="constant", constant_values=-1)
    if mode == "reflect":
        if begin >= length or end >= length:
            raise NotDifferentiable("reflect Pad wider than the input")
        return np.pad(src, (begin, end), mode="reflect")
    if mode == "edge":
        return np.pad(src, (begin, end), mode="edge")
    if mode == "wrap":
        return np.pad(src, (begin, end), mode="wrap")
    raise NotDifferentiable(f"Pad mode {mode!r}")


@rule("Pad")
def _pad(b: GraphBuilder, n: GradNode):
    n.only(0)
    x = n.x(0)
    rank = b.rank(x)
    mode = n.attr("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else str(mode)
    if b.opset < 11:
        pads = list(n.attr("pads"))
        axes = list(range(rank))
    else:
        pads = const_input(b, n, 1, "pads").reshape(-1).tolist()
        av = const_input(b, n, 3, "axes")
        axes = list(range(rank)) if av is None else [int(a) % rank for a in av.reshape(-1)]
    k = len(axes)
    begin = {a: int(pads[i]) for i, a in enumerate(axes)}
    end = {a: int(pads[k + i]) for i, a in enumerate(axes)}
    g = n.dy
    if mode == "constant":
        # Undo positive pads by slicing, negative ones (crops) by zero-padding.
        starts, ends, sl_axes = [], [], []
        re_pads = [0] * (2 * rank)
        for a in axes:
            if begin[a] > 0 or end[a] > 0:
                sl_axes.append(a)
                starts.append(max(begin[a], 0))
                ends.append(-end[a] if end[a] > 0 else INT64_MAX)
            re_pads[a] = max(-begin[a], 0)
            re_pads[rank + a] = max(-end[a], 0)
        if sl_axes:
            g = b.op("Slice", [g, b.ints(starts), b.ints(ends), b.ints(sl_axes)])
        if any(re_pads):
            g = b.op("Pad", [g, b.ints(re_pads), b.scalar(0, x)], mode="constant")
        return [g]
    for a in axes:
        if begin[a] == 0 and end[a] == 0:
            continue
        if begin[a] < 0 or end[a] < 0:
            raise NotDifferentiable(f"negative pads in {mode!r} Pad")
        (length,) = b.int_dims(x, [a], "Pad gradient")
        src = _pad_index_map(mode, length, begin[a], end[a])
        mat = np.zeros((len(src), length), dtype=b.np_dtype(x))
        ok = src >= 0
        mat[np.nonzero(ok)[0], src[ok]] = 1  # one entry per row: += not needed
        g = apply_along_axis(b, g, a, rank, mat)
    return [g]


@rule("Gather")
def _gather(b: GraphBuilder, n: GradNode):
    n.only(0)
    x, idx = n.x(0), n.x(1)
    rank = b.rank(x)
    axis = int(n.attr("axis", 0)) % rank
    (length,) = b.int_dims(x, [axis], "Gather gradient")
    iv = b.const_value(idx)
    if iv is None:
        raise NotDifferentiable("Gather gradient needs constant indices")
    if iv.ndim > 1:
        raise NotDifferentiable("Gather gradient with indices of rank > 1")
    flat = iv.reshape(-1).astype(np.int64) % length
    g = b.unsqueeze(n.dy, [axis]) if iv.ndim == 0 else n.dy
    mat = np.zeros((len(flat), length), dtype=b.np_dtype(x))
    np.add.at(mat, (np.arange(len(flat)), flat), 1)
    return [apply_along_axis(b, g, axis, rank, mat)]
