"""Gradient rules for ops that move data around: reshapes, transposes, slicing, padding, concat,
resize."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from onnx import helper

from .builder import GraphBuilder, NotDifferentiable, node_runner
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
    return [b.reshape_like(n.dy, n.x(0), n.y())]


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


@rule("DepthToSpace", "SpaceToDepth")
def _depth_space(b: GraphBuilder, n: GradNode):
    # Both are permutations of the elements, so the gradient is the inverse permutation:
    # SpaceToDepth undoes DepthToSpace in DCR mode (and vice versa); CRD mode is undone by
    # the inverse Reshape/Transpose/Reshape.
    bs = int(n.attr("blocksize"))
    if n.op_type == "SpaceToDepth":
        return [b.op("DepthToSpace", [n.dy], blocksize=bs, mode="DCR")]
    if n.text_attr("mode", "DCR") == "DCR":
        return [b.op("SpaceToDepth", [n.dy], blocksize=bs)]
    c, h, w = b.int_dims(n.x(), [1, 2, 3], "DepthToSpace gradient")
    g = b.op("Reshape", [n.dy, b.ints([0, c // (bs * bs), h, bs, w, bs])])
    g = b.op("Transpose", [g], perm=[0, 1, 3, 5, 2, 4])
    return [b.reshape_like(g, n.x())]


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
    mode = n.text_attr("mode", "constant")
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
    iv = b.const_value(idx)
    shp = b.static_shape(x)
    if iv is None or iv.ndim > 1 or not isinstance(shp[axis], int):
        return [_gather_scattered(b, n, x, idx, axis, rank)]
    (length,) = b.int_dims(x, [axis], "Gather gradient")
    flat = iv.reshape(-1).astype(np.int64) % length
    g = b.unsqueeze(n.dy, [axis]) if iv.ndim == 0 else n.dy
    mat = np.zeros((len(flat), length), dtype=b.np_dtype(x))
    np.add.at(mat, (np.arange(len(flat)), flat), 1)
    return [apply_along_axis(b, g, axis, rank, mat)]


def _gather_scattered(b: GraphBuilder, n: GradNode, x: str, idx: str, axis: int, rank: int) -> str:
    """d data of a Gather whose indices are computed at run time, of rank > 1, or index an axis
    of dynamic size (torch.export writes a batch-dependent flatten as a Gather over indices made
    from the batch size: convnext_tiny's as_strided): the output gradients added back at the
    gathered positions by ScatterND (reduction 'add', opset 16), on data with the gathered axis
    moved to the front; negative indices taken modulo the axis' length."""
    _need_opset(b, n, 16, "ScatterND with reduction='add' (computed indices)")
    dy = n.dy
    r = b.rank(idx)
    if r == 0:  # a scalar index dropped the axis: as the gather of a (1,) index
        idx, dy, r = b.unsqueeze(idx, [0]), b.unsqueeze(dy, [axis]), 1
    length = b.op("Gather", [b.shape_of(x), b.ints([axis])], axis=0)
    where = b.unsqueeze(b.op("Mod", [b.op("Cast", [idx], to=helper.np_dtype_to_tensor_dtype(np.dtype(np.int64))),
                                     length]), [r])
    front = [axis] + [d for d in range(rank) if d != axis]  # data, gathered axis first
    dy_front = list(range(axis, axis + r)) + [d for d in range(rank - 1 + r) if not axis <= d < axis + r]
    zeros = b.zeros_like(x)
    if front != list(range(rank)):
        zeros = b.op("Transpose", [zeros], perm=front)
    if dy_front != list(range(rank - 1 + r)):
        dy = b.op("Transpose", [dy], perm=dy_front)
    d = b.op("ScatterND", [zeros, where, dy], reduction="add")
    if front != list(range(rank)):
        d = b.op("Transpose", [d], perm=[int(i) for i in np.argsort(front)])
    return d


def _need_opset(b: GraphBuilder, n: GradNode, version: int, what: str) -> None:
    if b.opset < version:
        raise NotDifferentiable(f"the {n.op_type} gradient needs {what} (opset >= {version}); "
                                f"the model is at opset {b.opset}")


@rule("GatherElements")
def _gather_elements(b: GraphBuilder, n: GradNode):
    # d data = the output gradients added back at the gathered positions
    n.only(0)
    _need_opset(b, n, 16, "ScatterElements with reduction='add'")
    axis = int(n.attr("axis", 0)) % b.rank(n.x(0))
    return [b.op("ScatterElements", [b.zeros_like(n.x(0)), n.x(1), n.dy], axis=axis, reduction="add")]


@rule("GatherND")
def _gather_nd(b: GraphBuilder, n: GradNode):
    n.only(0)
    if int(n.attr("batch_dims", 0)):
        raise NotDifferentiable("GatherND with batch_dims > 0")
    _need_opset(b, n, 16, "ScatterND with reduction='add'")
    return [b.op("ScatterND", [b.zeros_like(n.x(0)), n.x(1), n.dy], reduction="add")]


@rule("ScatterElements", "ScatterND")
def _scatter(b: GraphBuilder, n: GradNode):
    # y = data with updates written at indices (reduction 'none', indices unique as the spec
    # requires) or added there ('add'): d data = dy, with the overwritten positions zeroed for
    # 'none'; d updates = dy gathered at the indices.
    n.only(0, 2)
    reduction = n.text_attr("reduction", "none")
    if reduction not in ("none", "add"):
        raise NotDifferentiable(f"{n.op_type} with reduction={reduction!r}")
    elements = n.op_type == "ScatterElements"
    axis = int(n.attr("axis", 0)) % b.rank(n.x(0)) if elements else None
    d_data = d_upd = None
    if n.need(0):
        d_data = n.dy if reduction == "add" else b.op(
            n.op_type, [n.dy, n.x(1), b.zeros_like(n.x(2))], axis=axis)
    if n.need(2):
        d_upd = b.op("GatherElements" if elements else "GatherND", [n.dy, n.x(1)], axis=axis)
    return [d_data, None, d_upd]


# ---------------------------------------------------------------- resize
#
# With constant scales/sizes, Resize is linear in X (tf_crop_and_resize: affine, the
# extrapolation value being a constant) and, in onnxruntime's nearest/linear/cubic kernels, a
# product of 1-D maps, one per resized axis: Y = X x_a M_a.  The M_a (out_a x in_a) are measured
# with onnxruntime's own Resize at build time, and their product is checked against the node
# itself on a random input before it is trusted.  The gradient is then dX = dY x_a M_a^T:
# MatMuls on constants, or a Reshape + ReduceSum for axes that nearest upsampling by an integer
# factor merely repeats.


def _resize_inputs(b: GraphBuilder, n: GradNode, rank: int):
    """(axes, roi, scales, sizes, unchanged): the constant inputs (None when absent or
    empty) and the axes that Resize provably leaves as they are (unlisted in ``axes``, or
    scale 1 / size unchanged with the full roi), which need no static size."""
    axes = [int(a) % rank for a in n.attr("axes", range(rank))]
    crop = n.text_attr("coordinate_transformation_mode", "half_pixel") == "tf_crop_and_resize"
    roi = const_input(b, n, 1, "roi") if crop else None
    scales, sizes = const_input(b, n, 2, "scales"), const_input(b, n, 3, "sizes")
    roi, scales, sizes = [None if v is None or v.size == 0 else v.reshape(-1)
                          for v in (roi, scales, sizes)]
    if (scales is None) == (sizes is None):
        raise NotDifferentiable("Resize needs exactly one of scales and sizes")
    k = len(axes)
    if len(scales if sizes is None else sizes) != k or roi is not None and roi.size != 2 * k:
        raise NotDifferentiable("Resize scales/sizes/roi do not match its axes")
    shape = b.static_shape(n.x(0))
    stretch = n.text_attr("keep_aspect_ratio_policy", "stretch") == "stretch"
    unchanged = set(range(rank)) - set(axes)
    for j, a in enumerate(axes):
        full = roi is None or (roi[j], roi[k + j]) == (0, 1)
        same = scales[j] == 1 if sizes is None else stretch and sizes[j] == shape[a]
        if full and same:
            unchanged.add(a)
    return axes, roi, scales, sizes, unchanged


def _resize_session(attrs: tuple, opset: int, shape: list, roi, scales, sizes):
    """run(x) for a model of the one Resize node, on float32 data of ``shape``."""
    return node_runner("Resize", {
        "roi": None if roi is None else np.asarray(roi, np.float32),
        "scales": None if scales is None else np.asarray(scales, np.float32),
        "sizes": None if sizes is None else np.asarray(sizes, np.int64)},
        dict(attrs), opset, shape, np.float32)


def _apply_maps(x: np.ndarray, mats: dict) -> np.ndarray:
    for axis, m in mats.items():
        x = np.moveaxis(np.tensordot(m, x, axes=([1], [axis])), 0, axis)
    return x


def _maps_per_axis(attrs: tuple, opset: int, shape: tuple, unchanged: frozenset, axes: tuple,
                   roi, scales, sizes) -> dict | None:
    """{axis: M_a}, each measured alone, cheaply: one-hot inputs along axis a with its own scale
    or size and roi, other axes of size 1 and one of them going to 2 (onnxruntime merely copies
    X when no size changes).  None under a keep_aspect_ratio_policy (one scale for all axes)."""
    if dict(attrs).get("keep_aspect_ratio_policy", "stretch") != "stretch":
        return None
    attrs = tuple((k, v) for k, v in attrs if k not in ("axes", "keep_aspect_ratio_policy"))
    rank, k, mats = len(shape), len(axes), {}
    for a in (a for a in range(rank) if a not in unchanged):
        j = axes.index(a)
        dims, sc, sz = [1] * rank, [1.0] * rank, [1] * rank
        p = (a + 1 if a + 1 < rank else a - 1) if rank > 1 else None
        if p is not None:
            sc[p], sz[p] = 2.0, 2
        dims[a] = shape[a]
        if sizes is None:
            sc[a] = scales[j]
        else:
            sz[a] = sizes[j]
        full_roi = [0.0] * rank + [1.0] * rank
        if roi is not None:
            full_roi[a], full_roi[rank + a] = roi[j], roi[k + j]
        run = _resize_session(attrs, opset, dims, full_roi, sc if sizes is None else None,
                              None if sizes is None else sz)
        cols = [run(e.reshape(dims)) for e in np.eye(shape[a], dtype=np.float32)]
        mats[a] = np.stack([c.reshape(-1) if p is None else c.take(0, axis=p).reshape(-1)
                            for c in cols], axis=1)
    return mats


def _maps_of_node(run, dims: list, measured: list) -> dict:
    """{axis: M_a} measured on the node itself (``run`` on inputs of ``dims``).  A probe one-hot
    along axis a and all ones along the others gives column k of M_a times a product of row sums
    of the other maps, taken at the position J where the all-ones response is largest; that
    leaves the product of the maps off by ones(J)^(n-1), taken off the first one."""
    ones = run(np.ones(dims, np.float32))
    if not ones.size or not np.abs(ones).max():  # all extrapolated: a constant output
        return {a: np.zeros((ones.shape[a], dims[a])) for a in measured}
    j = np.unravel_index(np.argmax(np.abs(ones)), ones.shape)
    mats = {}
    for a in measured:
        cols = []
        for k in range(dims[a]):
            probe = np.zeros(dims, np.float32)
            probe[(slice(None),) * a + (k,)] = 1
            cols.append(run(probe)[j[:a] + (slice(None),) + j[a + 1:]])
        mats[a] = np.stack(cols, axis=1).astype(np.float64)
    mats[measured[0]] /= float(ones[j]) ** (len(mats) - 1)
    return mats


@lru_cache(maxsize=64)
def _resize_maps(attrs: tuple, opset: int, shape: tuple, unchanged: frozenset, axes: tuple,
                 roi, scales, sizes) -> dict:
    """{axis: M_a} for the axes not in ``unchanged``, such that the node (``attrs`` and its
    constant inputs) is the product of the M_a, checked by running the node on a random input
    (axes it leaves unchanged cut to size 2: onnxruntime's results may depend on them)."""

    def node(cut: int):
        dims = [min(d or cut, cut) if a in unchanged else d for a, d in enumerate(shape)]
        sz = None if sizes is None else [dims[a] if a in unchanged else v
                                         for a, v in zip(axes, sizes)]
        return dims, _resize_session(attrs, opset, dims, roi, scales, sz)

    dims, run = node(2)
    x = np.random.default_rng(0).uniform(-1, 1, dims).astype(np.float32)
    got = run(x)

    def fits(mats):
        want = _apply_maps(x.astype(np.float64), mats)
        return got.shape == want.shape and np.allclose(got, want, rtol=1e-5, atol=1e-5)

    measured = [a for a in range(len(shape)) if a not in unchanged]
    try:
        mats = _maps_per_axis(attrs, opset, shape, unchanged, axes, roi, scales, sizes)
    except NotDifferentiable:  # onnxruntime refuses that axis alone
        mats = None
    if mats is None or not fits(mats):
        # the slow way (sum(in_a) runs of the node at full size): some onnxruntime kernels
        # treat an axis differently depending on the others
        dims, run = node(1)
        mats = _maps_of_node(run, dims, measured) if measured else {}
        if not fits(mats):
            raise NotDifferentiable("this Resize is not a product of 1-D interpolations in "
                                    "onnxruntime (unsupported mode/attribute combination)")
    return mats


def _repeat_factor(m: np.ndarray) -> int:
    """k when ``m`` just repeats every input element k times (nearest, integer upsampling)."""
    k = m.shape[0] // m.shape[1]
    return k if np.array_equal(m, np.repeat(np.eye(m.shape[1], dtype=m.dtype), k, axis=0)) else 0


def _as_key(v):
    return None if v is None else tuple(v.tolist())


@rule("Resize")
def _resize(b: GraphBuilder, n: GradNode):
    n.only(0)
    x = n.x(0)
    rank = b.rank(x)
    known = {"mode", "coordinate_transformation_mode", "nearest_mode", "cubic_coeff_a",
             "exclude_outside", "antialias", "axes", "keep_aspect_ratio_policy",
             "extrapolation_value"}
    attrs = {a.name: helper.get_attribute_value(a) for a in n.node.attribute}
    attrs = {k: v.decode() if isinstance(v, bytes) else v for k, v in attrs.items()}
    if set(attrs) - known:
        raise NotDifferentiable(f"Resize attribute(s) {sorted(set(attrs) - known)}")
    # measured with extrapolated outputs 0: the extrapolation value is a constant
    attrs = dict(attrs, extrapolation_value=0.0)
    attrs = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in attrs.items()))
    axes, roi, scales, sizes, unchanged = _resize_inputs(b, n, rank)
    b.int_dims(x, [a for a in range(rank) if a not in unchanged], "Resize gradient")
    shp = b.static_shape(x)
    mats = _resize_maps(attrs, b.opset, tuple(d if isinstance(d, int) else None for d in shp),
                        frozenset(unchanged), tuple(axes), _as_key(roi), _as_key(scales),
                        _as_key(sizes))
    out = b.static_shape(n.y()) or (None,) * rank
    for a, m in mats.items():  # other rules trust the inferred shape
        if isinstance(out[a], int) and out[a] != m.shape[0]:
            raise NotDifferentiable(f"onnxruntime's Resize gives size {m.shape[0]} to axis {a}, "
                                    f"shape inference {out[a]}")
    dt = b.np_dtype(x)
    mats = {a: m.astype(dt) for a, m in mats.items() if m.shape[0] != m.shape[1]
            or not np.array_equal(m, np.eye(len(m)))}
    g = n.dy
    # Axes that are only repeated (from the first one on, all dims static): one Reshape +
    # ReduceSum sums the copies.
    reps = {a: k for a, k in ((a, _repeat_factor(m)) for a, m in mats.items()) if k}
    if reps and all(isinstance(shp[a], int) for a in range(min(reps), rank)):
        dims, summed = [], []
        for a in range(rank):
            if a < min(reps):
                dims.append(0)  # Reshape: copy this dim
            elif a in reps:
                dims += [shp[a], reps[a]]
                summed.append(len(dims) - 1)
            else:
                dims.append(mats[a].shape[0] if a in mats else shp[a])
        g = b.reduce("ReduceSum", b.op("Reshape", [g, b.ints(dims)]), summed, keepdims=0)
        mats = {a: m for a, m in mats.items() if a not in reps}
    # The axis that shrinks the gradient most first.
    for a, m in sorted(mats.items(), key=lambda am: am[1].shape[1] / am[1].shape[0]):
        if a == rank - 2:  # M^T @ dY: no transposes
            g = b.op("MatMul", [b.const(np.ascontiguousarray(m.T), hint="resize_map_t"), g])
        else:
            g = apply_along_axis(b, g, a, rank, m)
    return [g]
