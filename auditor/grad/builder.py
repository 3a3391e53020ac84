"""Emitting ONNX nodes for the backward graph.

:class:`GraphBuilder` knows the forward graph (static shapes and dtypes from shape inference, the
values of constant tensors) and appends new nodes and initializers with fresh, collision-free
names.  Gradient rules only talk to the builder; they never touch the graph directly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..model.load import constant_node_value  # noqa: F401 (re-exported for the rules)
from ..runtime.engine import make_session

Dim = int | str | None  # a static dimension, a symbolic one (e.g. "batch"), or unknown
Shape = tuple[Dim, ...]


_ELEMENTWISE = {
    "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "Where", "Relu", "LeakyRelu",
    "PRelu", "Sigmoid", "Tanh", "Exp", "Log", "Neg", "Abs", "Sqrt", "Reciprocal", "Identity",
    "HardSigmoid", "HardSwish", "Elu", "Selu", "Softplus", "Softsign", "Erf", "Sin", "Cos",
    "Softmax", "LogSoftmax", "Dropout", "Clip",
}


#: onnxruntime's blocked-layout (NCHWc) channel block on AVX2 machines: Conv, pooling, Add/Sum,
#: Mul of two same-shaped blocked tensors, Relu/Sigmoid/Tanh and Concat run blocked when their
#: channel counts are multiples of it; any other consumer of a blocked tensor makes onnxruntime
#: reorder it to NCHW first (a full pass) and back before the next Conv
NCHWC_BLOCK = 8


class NotDifferentiable(Exception):
    """A rule cannot build the gradient of this node (the message says why)."""


def node_runner(op_type: str, inputs: dict, attrs: dict, opset: int, shape: Sequence[int],
                dtype) -> Callable[[np.ndarray], np.ndarray]:
    """run(x) for a model of one ``op_type`` node applied to ``x`` (of ``shape`` and ``dtype``) and
    the constant ``inputs`` (name -> array; an entry None leaves that input empty), executed by
    onnxruntime.  Rules use it to measure, at build time, what a linear op computes exactly as
    the runtime computes it.  NotDifferentiable if onnxruntime cannot run the node."""
    np_dt = np.dtype(dtype)
    et = helper.np_dtype_to_tensor_dtype(np_dt)
    names = [k if v is not None else "" for k, v in inputs.items()]
    while names and not names[-1]:
        names.pop()
    node = helper.make_node(op_type, ["x"] + names, ["y"], **attrs)
    graph = helper.make_graph(
        [node], op_type.lower(), [helper.make_tensor_value_info("x", et, list(shape))],
        [helper.make_tensor_value_info("y", et, None)],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in inputs.items() if v is not None])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = min(model.ir_version, 8)
    try:  # a refusal is reported by the caller
        sess = make_session(model, None, optimize=False, log_severity=4)
        sess.run(None, {"x": np.zeros(shape, np_dt)})
    except Exception as e:
        raise NotDifferentiable(f"onnxruntime cannot run this {op_type}: {str(e)[:200]}") from None
    return lambda x: sess.run(None, {"x": x})[0]


def default_opset(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    return 1


def _shape_from_type(tp: onnx.TypeProto) -> Shape | None:
    if not tp.HasField("tensor_type") or not tp.tensor_type.HasField("shape"):
        return None
    dims: list[Dim] = []
    for d in tp.tensor_type.shape.dim:
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param") and d.dim_param:
            dims.append(d.dim_param)
        else:
            dims.append(None)
    return tuple(dims)


class _Constants:
    """Tensor name -> constant value, initializers converted to arrays on first use."""

    def __init__(self):
        self._values: dict[str, np.ndarray] = {}
        self._protos: dict[str, onnx.TensorProto] = {}

    def later(self, name: str, proto: onnx.TensorProto) -> None:
        self._values.pop(name, None)
        self._protos[name] = proto

    def __setitem__(self, name: str, value: np.ndarray) -> None:
        self._protos.pop(name, None)
        self._values[name] = value

    def __contains__(self, name) -> bool:
        return name in self._values or name in self._protos

    def get(self, name, default=None):
        if name in self._values:
            return self._values[name]
        proto = self._protos.pop(name, None)
        if proto is None:
            return default
        arr = numpy_helper.to_array(proto)
        self._values[name] = arr
        return arr

    def __getitem__(self, name):
        if name not in self:
            raise KeyError(name)
        return self.get(name)

    def pop(self, name, default=None):
        """Forget ``name`` (returns its value if it was converted, else ``default``)."""
        self._protos.pop(name, None)
        return self._values.pop(name, default)


class GraphBuilder:
    """Appends nodes to (a copy of) a model whose forward part it never modifies."""

    def __init__(self, model: onnx.ModelProto, prefix: str = "auditor::grad",
                 source: onnx.ModelProto | Sequence[onnx.ModelProto] | None = None):
        """``model``: the forward model with inferred shapes; ``source``: the model (or models, the
        first that has an initializer wins) whose initializers hold the values of those that
        ``model`` has without their data (the shape-inferred copies of
        :func:`auditor.grad.canon.with_shapes`)."""
        self.model = model
        self.graph = model.graph
        self.opset = default_opset(model)
        self.prefix = prefix
        self.nodes: list[onnx.NodeProto] = []
        self.emitted: dict[str, onnx.NodeProto] = {}  # output name -> the backward node computing it
        # gradients that are a smaller tensor broadcast to full size times a constant (a reduction's
        # gradient): name -> (small tensor, constant, the tensor whose shape it has) ...
        self.broadcast_of: dict[str, tuple[str, float, str]] = {}
        # ... and full-size gradients emitted as (full-size factor) * (small tensor): name -> both
        self.factored: dict[str, tuple[str, str]] = {}
        self.initializers: list[onnx.TensorProto] = []
        self.shapes: dict[str, Shape | None] = {}
        self.dtypes: dict[str, int] = {}
        self.consts = _Constants()
        self._taken: set[str] = set()
        self._counter = 0
        self._cache: dict[tuple, str] = {}
        # Gradient tensors already multiplied by the mask of the Relu whose output they are the
        # gradient of (name -> Relu output; see the MaxPool rule): when such a tensor is the
        # whole gradient reaching that Relu, the Relu rule passes it through unchanged.
        self.relu_masked: dict[str, str] = {}
        self._producers: dict[str, onnx.NodeProto] | None = None

        g = self.graph
        for vi in list(g.input) + list(g.output) + list(g.value_info):
            self._taken.add(vi.name)
            if vi.type.HasField("tensor_type"):
                if vi.type.tensor_type.elem_type:
                    self.dtypes[vi.name] = vi.type.tensor_type.elem_type
                shp = _shape_from_type(vi.type)
                if shp is not None or vi.name not in self.shapes:
                    self.shapes[vi.name] = shp
        full: dict[str, onnx.TensorProto] = {}
        for src in [source] if isinstance(source, onnx.ModelProto) else source or ():
            for t in src.graph.initializer:
                full.setdefault(t.name, t)
        for init in g.initializer:
            self._taken.add(init.name)
            # values are converted when a rule asks for them (most weights never are)
            self.consts.later(init.name, full.get(init.name, init))
            self.dtypes[init.name] = init.data_type
            self.shapes[init.name] = tuple(int(d) for d in init.dims)
        for node in g.node:
            self._taken.add(node.name)
            self._taken.update(node.output)
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
                val = constant_node_value(node)
                if val is not None:
                    self.consts[node.output[0]] = val
                    self.shapes[node.output[0]] = tuple(int(d) for d in val.shape)
                    self.dtypes.setdefault(
                        node.output[0], helper.np_dtype_to_tensor_dtype(val.dtype)
                    )
        # Graph inputs that are overridable initializers are not constants.
        for vi in g.input:
            self.consts.pop(vi.name, None)
        self._fill_elementwise_shapes()

    def _fill_elementwise_shapes(self) -> None:
        """Shapes that shape inference missed, for elementwise ops (same shape / broadcast)."""
        for node in self.graph.node:
            if node.domain not in ("", "ai.onnx") or node.op_type not in _ELEMENTWISE:
                continue
            out = node.output[0]
            if self.shapes.get(out) is not None:
                continue
            shapes = [self.shapes.get(i) for i in node.input if i]
            if not shapes or any(s is None for s in shapes):
                continue
            rank = max(len(s) for s in shapes)
            dims: list[Dim] = []
            for j in range(rank):
                cand = [s[len(s) - rank + j] for s in shapes if len(s) - rank + j >= 0]
                known = [d for d in cand if d != 1]
                dims.append(known[0] if known and all(d == known[0] for d in known)
                            else (1 if not known else None))
            self.shapes[out] = tuple(dims)
            if out not in self.dtypes:
                first = 1 if node.op_type == "Where" else 0
                src = [self.dtypes.get(i) for i in node.input[first:] if i]
                if src and src[0]:
                    self.dtypes[out] = src[0]

    # ------------------------------------------------------------------ names and emission

    def fresh(self, hint: str) -> str:
        base = f"{self.prefix}/{hint}"
        while True:
            self._counter += 1
            name = f"{base}_{self._counter}"
            if name not in self._taken:
                self._taken.add(name)
                return name

    def reserve(self, name: str) -> None:
        self._taken.add(name)

    def is_taken(self, name: str) -> bool:
        return name in self._taken

    def op(self, op_type: str, inputs: Sequence[str], n_out: int = 1, **attrs):
        """Emit one node; returns its output name (or a list when n_out > 1)."""
        outs = [self.fresh(op_type) for _ in range(n_out)]
        attrs = {k: v for k, v in attrs.items() if v is not None}
        node = helper.make_node(
            op_type, list(inputs), outs, name=self.fresh(f"{op_type}_node"), **attrs
        )
        self.nodes.append(node)
        self.emitted.update((o, node) for o in outs)
        return outs[0] if n_out == 1 else outs

    def const(self, value, dtype=None, hint: str = "const") -> str:
        """An initializer holding ``value`` (small values are shared)."""
        arr = np.asarray(value, dtype=dtype)
        if arr.dtype == np.float64 and dtype is None and not isinstance(value, np.ndarray):
            arr = arr.astype(np.float32)
        key = None
        if arr.size <= 64:
            key = ("const", arr.dtype.str, arr.shape, arr.tobytes())
            if key in self._cache:
                return self._cache[key]
        name = self.fresh(hint)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
        self.consts[name] = arr
        self.shapes[name] = tuple(int(d) for d in arr.shape)
        self.dtypes[name] = helper.np_dtype_to_tensor_dtype(arr.dtype)
        if key is not None:
            self._cache[key] = name
        return name

    def ints(self, values: Sequence[int]) -> str:
        return self.const(np.asarray(list(values), dtype=np.int64), hint="ints")

    def scalar(self, value: float, like: str) -> str:
        """A 0-d constant with the floating dtype of tensor ``like``."""
        return self.const(np.asarray(value, dtype=self.np_dtype(like)), hint="scalar")

    # ------------------------------------------------------------------ what is known

    def np_dtype(self, name: str) -> np.dtype:
        if name not in self.dtypes:
            raise NotDifferentiable(f"the element type of tensor {name!r} is unknown")
        return np.dtype(helper.tensor_dtype_to_np_dtype(self.dtypes[name]))

    def static_shape(self, name: str) -> Shape | None:
        return self.shapes.get(name)

    def rank(self, name: str) -> int:
        shp = self.shapes.get(name)
        if shp is None:
            raise NotDifferentiable(f"the rank of tensor {name!r} is unknown")
        return len(shp)

    def int_dims(self, name: str, axes: Sequence[int], why: str) -> list[int]:
        """Static sizes of ``axes`` of tensor ``name``; NotDifferentiable when not known."""
        shp = self.shapes.get(name)
        out = []
        for ax in axes:
            d = shp[ax] if shp is not None and -len(shp) <= ax < len(shp) else None
            if not isinstance(d, int):
                raise NotDifferentiable(f"{why} needs a static size for axis {ax} of {name!r}")
            out.append(d)
        return out

    def producer(self, name: str) -> onnx.NodeProto | None:
        """The forward node that computes tensor ``name`` (None for inputs and initializers)."""
        if self._producers is None:
            self._producers = {o: node for node in self.graph.node for o in node.output if o}
        return self._producers.get(name)

    def const_value(self, name: str) -> np.ndarray | None:
        if not name:
            return None
        return self.consts.get(name)

    def is_const(self, name: str) -> bool:
        """Whether ``name`` is a constant (:meth:`const_value` would give its value), without
        converting an initializer to an array."""
        return bool(name) and name in self.consts

    # ------------------------------------------------------------------ common subgraphs

    def shape_of(self, name: str) -> str:
        key = ("shape", name)
        if key not in self._cache:
            self._cache[key] = self.op("Shape", [name])
        return self._cache[key]

    def zeros_like(self, name: str, dtype_like: str | None = None) -> str:
        dt = self.np_dtype(dtype_like or name)
        shp = self.shapes.get(name)
        if shp is not None and all(isinstance(d, int) for d in shp):
            return self.const(np.zeros(shp, dtype=dt), hint="zeros")
        value = numpy_helper.from_array(np.zeros((1,), dtype=dt))
        return self.op("ConstantOfShape", [self.shape_of(name)], value=value)

    def ones_like(self, name: str) -> str:
        """Ones shaped like tensor ``name``.  A floating ``name`` gets Pow(name, 0) (1 for every
        value, NaN and infinities included), whose inferred shape keeps ``name``'s symbolic dims:
        from ConstantOfShape(Shape(.)) shape inference makes a fresh unknown batch dimension, and
        onnxruntime's blocked-layout (NCHWc) pass then cannot prove a backward tensor and a forward
        one of the same shape, so it reorders both to NCHW for every Mul that combines them."""
        dt = self.np_dtype(name)
        if np.issubdtype(dt, np.floating):
            return self.op("Pow", [name, self.const(np.zeros((), dtype=dt), hint="zero")])
        value = numpy_helper.from_array(np.ones((1,), dtype=dt))
        return self.op("ConstantOfShape", [self.shape_of(name)], value=value)

    def reduce(self, op_type: str, x: str, axes: Sequence[int] | None, keepdims: int) -> str:
        """ReduceXxx over ``axes`` (None: all), in the form the model's opset wants."""
        axes_as_input = op_type == "ReduceSum" and self.opset >= 13 or self.opset >= 18
        if axes is None:
            return self.op(op_type, [x], keepdims=keepdims)
        if axes_as_input:
            return self.op(op_type, [x, self.ints(axes)], keepdims=keepdims)
        return self.op(op_type, [x], axes=list(axes), keepdims=keepdims)

    def unsqueeze(self, x: str, axes: Sequence[int]) -> str:
        if not axes:
            return x
        if self.opset >= 13:
            return self.op("Unsqueeze", [x, self.ints(axes)])
        return self.op("Unsqueeze", [x], axes=list(axes))

    def squeeze(self, x: str, axes: Sequence[int]) -> str:
        if not axes:
            return x
        if self.opset >= 13:
            return self.op("Squeeze", [x, self.ints(axes)])
        return self.op("Squeeze", [x], axes=list(axes))

    def reshape_like(self, x: str, like: str, x_like: str | None = None) -> str:
        """``x`` (shaped like tensor ``x_like`` when given) reshaped to the shape of ``like``."""
        shp = self.shapes.get(like)
        if shp is not None and all(isinstance(d, int) for d in shp):
            return self.op("Reshape", [x, self.ints(shp)])
        if shp is not None:
            # a symbolic dim that x has on the same axis is copied (0: the inferred shape keeps the
            # symbol, see ones_like); at most one other unknown dim is inferred (-1)
            xs = self.shapes.get(x_like or x) or ()
            dims = [d if isinstance(d, int) else 0 if i < len(xs) and d is not None and xs[i] == d else -1
                    for i, d in enumerate(shp)]
            if dims.count(-1) <= 1 and not (0 in dims and 0 in shp):
                return self.op("Reshape", [x, self.ints(dims)])
        return self.op("Reshape", [x, self.shape_of(like)])

    def channel_affine(self, x: str, scale: float, shift: float) -> str | None:
        """``scale * x + shift`` for a 4-D float32 ``x`` whose channel count is a multiple of
        :data:`NCHWC_BLOCK`, as a depthwise 1x1 Conv (one rounding, as Mul/Add by constants do
        it: scale is -1 or a power of two), so that a blocked ``x`` stays blocked; None otherwise."""
        shp = self.shapes.get(x)
        if (shp is None or len(shp) != 4 or not isinstance(shp[1], int) or shp[1] % NCHWC_BLOCK
                or self.dtypes.get(x) != onnx.TensorProto.FLOAT):
            return None
        c = shp[1]
        w = self.const(np.full((c, 1, 1, 1), scale, np.float32), hint="affine_scale")
        bias = self.const(np.full((c,), shift, np.float32), hint="affine_shift")
        return self.op("Conv", [x, w, bias], kernel_shape=[1, 1], group=c)

    def masked(self, g: str, cond: str, like: str) -> str:
        """``g`` where the boolean ``cond`` holds, 0 elsewhere (Mul by a cast mask: onnxruntime's
        Where is several times slower than Cast + Mul)."""
        return self.op("Mul", [g, self.op("Cast", [cond], to=self.dtypes[like])])

    def times(self, dy: str, d: str, like: str) -> str:
        """``dy * d`` for an elementwise factor ``d`` shaped like tensor ``like``.  When ``dy`` is a
        reduction's gradient broadcast to full size (:attr:`broadcast_of`), ``d`` times the small
        tensor instead: one full-size Mul instead of two."""
        src = self.broadcast_of.get(dy)
        shp = self.static_shape(like)
        if src is not None and shp is not None and shp == self.static_shape(src[2]):
            g = self._small(dy)
            out = self.op("Mul", [d, g])
            self.factored[out] = (d, g)
            return out
        return self.op("Mul", [dy, d])

    def times_scalar(self, dy: str, c: str) -> str | None:
        """``dy * c`` for a 0-d ``c`` when ``dy`` is :attr:`factored` (full * small): the small
        factor times ``c`` (no full-size op); None otherwise."""
        if dy not in self.factored or self.static_shape(c) != ():
            return None
        full, small = self.factored[dy]
        small = self.op("Mul", [small, c])
        out = self.op("Mul", [full, small])
        self.factored[out] = (full, small)
        return out

    def relu_mask(self, g: str, y: str) -> str:
        """``g`` where the Relu output ``y`` is positive.  ``y`` >= 0, so y > 0 is y != 0, which
        a Cast to bool computes 10-15% faster than Greater (measured at 64x8x26x26).

        Measured without a clear gain (onnxruntime 1.32, torchvision models at 224, batch 8, 2
        threads, profiler sums, bit-identical gradients): the mask in onnxruntime's blocked layout,
        a depthwise 1x1 Conv by 2**127 fused with HardSigmoid(alpha=2**22) (exact down to the
        smallest subnormal), which spares the reorders of y, g and the result: cross-entropy
        gradient 0.94x on densenet121, 0.98-0.99x on resnet18 and vgg11_bn, but the sparsity
        objective's 1.04x on both (its g is in plain layout, so the mask is reordered instead); for
        ReLU6 (two such Convs) mobilenet_v2's 0.98-1.02x and 1.10-1.12x."""
        return self.masked(g, self.op("Cast", [y], to=onnx.TensorProto.BOOL), y)

    def accumulate(self, terms: list[str]) -> str:
        """The sum of the gradient contributions ``terms`` reaching one tensor.  A contribution that
        is a reduction's gradient broadcast to full size (:attr:`broadcast_of`) enters as its small
        tensor when another one is full-size: the Add broadcasts it (one full-size op fewer)."""
        if len(terms) > 1 and any(t not in self.broadcast_of for t in terms):
            terms = [t if t not in self.broadcast_of else self._small(t) for t in terms]
        return self.add_all(terms)

    def _small(self, t: str) -> str:
        g, scale, like = self.broadcast_of[t]
        return g if scale == 1.0 else self.op("Mul", [g, self.scalar(scale, like)])

    def add_all(self, terms: list[str]) -> str:
        if len(terms) == 1:
            return terms[0]
        if len(terms) == 2:
            return self.op("Add", terms)
        return self.op("Sum", terms)

    def reduce_to(self, grad: str, grad_shape_of: str, target: str) -> str:
        """Sum ``grad`` (shaped like tensor ``grad_shape_of``) down to the shape of ``target``.

        This undoes multidirectional broadcasting: leading axes that ``target`` lacks and axes
        where ``target`` has size 1 are summed.  Static shapes give static axes; otherwise the
        axes are computed in the graph.
        """
        gs = self.shapes.get(grad_shape_of)
        ts = self.shapes.get(target)
        if gs is not None and ts is not None and len(ts) <= len(gs):
            lead = len(gs) - len(ts)
            axes = list(range(lead))
            static = True
            for j, dt in enumerate(ts):
                dg = gs[lead + j]
                if dt == 1:
                    if dg != 1:
                        axes.append(lead + j)
                elif dt is not None and dt == dg:
                    continue
                else:
                    static = False
                    break
            if static:
                if not axes:
                    return grad
                if (axes == [2, 3] and len(gs) == 4 and isinstance(gs[1], int) and gs[1] % NCHWC_BLOCK == 0
                        and isinstance(gs[2], int) and isinstance(gs[3], int)
                        and self.dtypes.get(grad_shape_of) == onnx.TensorProto.FLOAT):
                    # a per-channel sum over the spatial axes (a squeeze-excite gate's gradient) as
                    # GlobalAveragePool * H*W: onnxruntime runs it on a blocked tensor, where
                    # ReduceSum would have it reordered to NCHW first (the mean and the product
                    # round once more than the sum: a few ulp)
                    r = self.op("GlobalAveragePool", [grad])
                    return self.op("Mul", [r, self.scalar(float(gs[2] * gs[3]), grad_shape_of)])
                r = self.reduce("ReduceSum", grad, axes, keepdims=1)
                return self.squeeze(r, list(range(lead)))
        # Dynamic: axes where the (left-padded) target shape is 1 and the gradient's is not.
        if gs is None or ts is None:
            raise NotDifferentiable(
                f"undoing broadcasting from {grad_shape_of!r} to {target!r} needs known ranks"
            )
        if len(ts) > len(gs):
            raise NotDifferentiable(f"cannot reduce {grad_shape_of!r} to larger rank {target!r}")
        lead = len(gs) - len(ts)
        st = self.shape_of(target)
        if lead:
            st_pad = self.op("Concat", [self.ints([1] * lead), st], axis=0)
        else:
            st_pad = st
        sg = self.op("Shape", [grad])
        one = self.ints([1])
        cond = self.op("And", [self.op("Equal", [st_pad, one]),
                               self.op("Not", [self.op("Equal", [sg, one])])])
        axes = self.op("Reshape", [self.op("NonZero", [cond]), self.ints([-1])])
        r = self.op("ReduceSum", [grad, axes], keepdims=1, noop_with_empty_axes=1)
        return self.op("Reshape", [r, st])
