"""What the tool needs of a model to audit it as an image classifier, checked once when it loads.

One float input (float32, or float16), logits ``(N, classes)`` as the first output (trailing
axes of size 1, as ``(N, C, 1, 1)``, are accepted), a batch and tensors of sizes a machine can
hold.  Anything else is refused with one line naming the input, output or tensor, before a
session is built or a buffer allocated.
"""

from __future__ import annotations

import onnx

from ..errors import AuditorError, clip, short

#: the largest static batch a model may declare
MAX_STATIC_BATCH = 4096
#: the most bytes one input's tensor may take, for the input and every intermediate whose size
#: shape inference knows (symbolic batch dims counted as 1)
MAX_TENSOR_BYTES = 256 << 20
#: the most bytes one tensor that does not scale with the batch (a weight, folded or computed by
#: ops) may take: VGG's first FC weight is 411 MB, a 1 GiB ConstantOfShape is refused
MAX_CONSTANT_BYTES = 512 << 20
_FLOAT_INPUTS = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)
_FLOAT_OUTPUTS = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE)


def default_opset(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    return 0


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """The graph inputs that are not initializers (the data inputs)."""
    inits = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def _type_name(elem: int) -> str:
    try:
        return onnx.helper.tensor_dtype_to_np_dtype(elem).name if elem not in (0, onnx.TensorProto.STRING) else \
            ("string" if elem == onnx.TensorProto.STRING else "undefined")
    except (KeyError, ValueError, TypeError):
        return onnx.TensorProto.DataType.Name(elem).lower() if elem in onnx.TensorProto.DataType.values() else str(elem)


def _dims(vi: onnx.ValueInfoProto) -> list[int | None] | None:
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]


def _bytes(dims: list[int | None], elem: int) -> int:
    size = {onnx.TensorProto.DOUBLE: 8, onnx.TensorProto.INT64: 8, onnx.TensorProto.UINT64: 8,
            onnx.TensorProto.FLOAT16: 2, onnx.TensorProto.BFLOAT16: 2, onnx.TensorProto.INT16: 2,
            onnx.TensorProto.UINT16: 2, onnx.TensorProto.INT8: 1, onnx.TensorProto.UINT8: 1,
            onnx.TensorProto.BOOL: 1, onnx.TensorProto.COMPLEX128: 16, onnx.TensorProto.COMPLEX64: 8}.get(elem, 4)
    n = size
    for d in dims:
        n *= d if d else 1
    return n


def check_classifier(model: onnx.ModelProto, where: str = "model") -> None:
    """Refuse a model the audit cannot run as an image classifier (see the module docstring)."""

    inp = graph_inputs(model)[0]
    t = inp.type.tensor_type
    if not inp.type.HasField("tensor_type"):
        raise AuditorError(f"input '{clip(inp.name)}' is not a tensor; expected a float image tensor", where=where)
    if t.elem_type not in _FLOAT_INPUTS:
        raise AuditorError(f"input '{clip(inp.name)}' has type {_type_name(t.elem_type)}; the audit needs an "
                           "image classifier with a float32 (or float16) input", where=where)
    dims = _dims(inp)
    if dims:
        if any(d is not None and d < 0 for d in dims):
            raise AuditorError(f"input '{clip(inp.name)}' declares a negative dimension {dims}", where=where)
        if dims[0] is not None and dims[0] > MAX_STATIC_BATCH:
            raise AuditorError(f"input '{clip(inp.name)}' declares a static batch of {dims[0]} (the tool runs at "
                               f"most {MAX_STATIC_BATCH} inputs at once)", where=where)
        if _bytes([1] + dims[1:], t.elem_type) > MAX_TENSOR_BYTES:
            raise AuditorError(f"input '{clip(inp.name)}' has shape {short(dims)}: one input would take more than "
                               f"{MAX_TENSOR_BYTES >> 20} MiB", where=where)
    out = model.graph.output[0]
    name = clip(out.name)
    if not out.type.HasField("tensor_type"):
        raise AuditorError(f"output '{name}' is not a tensor; expected the logits (N, classes)", where=where)
    ot = out.type.tensor_type
    if ot.elem_type not in _FLOAT_OUTPUTS:
        raise AuditorError(f"output '{name}' has type {_type_name(ot.elem_type)}; expected float logits (N, classes) "
                           "(a model ending in ArgMax or a label lookup cannot be audited: export the logits)",
                           where=where)
    od = _dims(out)
    if od is not None:
        if len(od) < 2 or any(d != 1 for d in od[2:]):
            raise AuditorError(f"output '{name}' has rank {len(od)} (shape {short(od)}); expected the logits "
                               "(N, classes)", where=where)
        if od[1] is not None and od[1] < 2:
            raise AuditorError(f"output '{name}' has {od[1]} class; a classifier needs at least 2 logits", where=where)
        if dims and dims[0] is not None and od[0] is not None and od[0] != dims[0]:
            raise AuditorError(f"output '{name}' has batch {od[0]} but input '{clip(inp.name)}' has batch "
                               f"{dims[0]}; expected one row of logits per input", where=where)

    newest = onnx.defs.onnx_opset_version()
    if default_opset(model) > newest:
        raise AuditorError(f"the model imports opset {default_opset(model)}, newer than the {newest} this onnx "
                           "supports", where=where)
    _check_conv_channels(model, where)
    for vi in list(model.graph.value_info) + list(model.graph.output):
        d = _dims(vi)
        if d and vi.type.tensor_type.elem_type:
            batched = bool(dims and dims[0] is not None and d[0] == dims[0])
            _check_tensor_size(vi, [1] + d[1:] if batched else d, batched, where)


def check_strings(model: onnx.ModelProto, where: str = "model") -> None:
    """Every name of the graph is text: protobuf hands a string field that is not valid UTF-8
    (a flipped byte) back as bytes, which nothing downstream expects."""
    g = model.graph
    named = [("graph input", v.name) for v in g.input] + [("graph output", v.name) for v in g.output]
    named += [("initializer", t.name) for t in g.initializer] + [("value_info", v.name) for v in g.value_info]
    for i, n in enumerate(g.node):
        named += [(f"node #{i}", x) for x in (n.name, n.op_type, n.domain, *n.input, *n.output)]
        named += [(f"node #{i} attribute", a.name) for a in n.attribute]
    named += [("opset domain", o.domain) for o in model.opset_import]
    for what, v in named:
        if not isinstance(v, str):
            raise AuditorError(f"a name of {what} is not valid UTF-8 ({short(v, 40)}): the file is corrupt", where=where)


def check_sizes(model: onnx.ModelProto, where: str = "model", light: onnx.ModelProto | None = None) -> None:
    """Before anything evaluates the graph (constant folding runs it): the sizes of the tensors
    shape inference can tell from the file alone, so a 1 KB model whose ConstantOfShape makes a
    gigabyte is refused without allocating it.  A model shape inference cannot read is left to
    the full checks that follow.  ``light``: the model's skeleton (``auditor.model.fold.skeleton``:
    large weights as typed inputs) to infer shapes on instead: inference serialises and parses the
    model it is given, which is most of the time of loading a model of 100s of MB."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model if light is None else light, data_prop=True)
    except Exception:  # reported by the loader's own strict inference
        return

    inputs = graph_inputs(model)  # not the skeleton's: its weights are inputs there
    batch = _dims(inputs[0])[0] if inputs and _dims(inputs[0]) else None
    for vi in inputs + list(inferred.graph.value_info) + list(inferred.graph.output):
        d = _dims(vi)
        if d and vi.type.tensor_type.elem_type:
            batched = batch is not None and d[0] == batch
            _check_tensor_size(vi, [1] + d[1:] if batched else d, batched, where)


def _check_tensor_size(vi: onnx.ValueInfoProto, per: list, batched: bool, where: str) -> None:
    """A tensor that scales with the batch may take MAX_TENSOR_BYTES per input, one that does not
    (a symbolic batch counts as 1, so weights and computed constants land here) MAX_CONSTANT_BYTES."""
    d = _dims(vi)
    limit = MAX_TENSOR_BYTES if batched or (d and d[0] is None) else MAX_CONSTANT_BYTES
    if _bytes(per, vi.type.tensor_type.elem_type) > limit:
        raise AuditorError(f"tensor '{clip(vi.name)}' has shape {short(d)}: more than {limit >> 20} MiB"
                           f"{' per input' if limit == MAX_TENSOR_BYTES else ''}", where=where)


def _check_conv_channels(model: onnx.ModelProto, where: str) -> None:
    """A Conv whose weight's input channels (times its groups) differ from its input's channels:
    strict shape inference lets it through, onnxruntime fails on the first run."""
    g = model.graph
    shapes = {vi.name: _dims(vi) for vi in list(g.input) + list(g.value_info)}
    weights = {t.name: list(t.dims) for t in g.initializer}
    for n in g.node:
        if n.op_type != "Conv" or len(n.input) < 2:
            continue
        w, xs = weights.get(n.input[1]), shapes.get(n.input[0])
        group = next((a.i for a in n.attribute if a.name == "group"), 1) or 1
        if w and xs and len(w) >= 2 and len(xs) >= 2 and xs[1] is not None and xs[1] != w[1] * group:
            raise AuditorError(f"node '{clip(n.name)}' (Conv): its weight '{clip(n.input[1])}' takes {w[1]} x {group} "
                               f"group(s) = {w[1] * group} input channels, but its input '{clip(n.input[0])}' has "
                               f"{xs[1]}", where=where)


def input_channels(model: onnx.ModelProto, layout: str = "NCHW") -> int | None:
    """Channels of the image input (None when not static or not 4-D)."""

    d = _dims(graph_inputs(model)[0])
    if not d or len(d) != 4:
        return None
    return d[3] if layout == "NHWC" else d[1]


def num_classes(model: onnx.ModelProto) -> int | None:
    """Classes of the logits output (None when not static)."""
    d = _dims(model.graph.output[0])
    return d[1] if d and len(d) >= 2 and d[1] else None
