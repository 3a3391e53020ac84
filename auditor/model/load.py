"""Loading an ONNX model safely: parse, check, upgrade old opsets, name nodes, infer shapes.

Everything a user can get wrong about the model file ends here as one :class:`AuditorError`
line that names the file and the problem.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper, shape_inference

from ..errors import AuditorError
from ..files import read_bytes, regular_file
from ..runtime.engine import self_bytes
from .fold import fold, restore, skeleton
from .interface import check_classifier, check_sizes, check_strings, default_opset, graph_inputs
from .names import name_nodes

MIN_OPSET = 11
#: the largest .onnx file read, and the most bytes of external data its tensors may add
#: (checked against the file sizes before anything is read)
MAX_MODEL_BYTES = 1 << 30
#: the opset that models older than MIN_OPSET are upgraded to
UPGRADE_OPSET = 13


def load_model(path: str | os.PathLike, *, input_size=None, layout: str = "NCHW") -> onnx.ModelProto:
    """Read, validate and normalise an ONNX image classifier (see :func:`prepare`).

    Refuses external-data files outside the model's folder; ``input_size`` ([H, W]) fixes the
    spatial size of a model exported with dynamic height and width."""

    p = Path(path)
    where = str(path)
    model = _read_in_pieces(p)
    if model is None:  # a small file, or one the piecewise reader does not take: parsed whole
        data = read_bytes(p, "model file", MAX_MODEL_BYTES)
        if not data:
            raise AuditorError("model file is empty", where=where)
        try:
            model = onnx.load_model_from_string(data)
        except Exception as e:  # protobuf DecodeError and friends
            raise AuditorError(f"not a valid ONNX model (cannot parse protobuf: {_first_line(e)})",
                               where=where) from None
        del data  # the file's bytes: as large as the weights, and parsed
    if not model.graph.node:
        raise AuditorError("not a valid ONNX model (the graph has no nodes)", where=where)

    check_strings(model, where)
    _load_external_data(model, p.parent.resolve(), where)
    check_sizes(model, where, light=skeleton(model)[0])
    model = _prepare(model, where, input_size=input_size, layout=layout)  # the parsed model is ours: no copy

    check_classifier(model, where)
    return model


#: model files at least this large are parsed piece by piece (:func:`_read_in_pieces`)
PIECEWISE_MIN_BYTES = 64 << 20


class _NotPlain(Exception):
    """The file is not a plain sequence of fields the piecewise reader takes."""


def _read_in_pieces(p: Path) -> onnx.ModelProto | None:
    """The model in the file ``p`` parsed piece by piece, or None to parse it whole (a file under
    :data:`PIECEWISE_MIN_BYTES`, or anything the field scan does not take: the whole parse then
    names what is wrong).  Parsing a serialisation whole holds its bytes and the message at once,
    twice the weights; a message is the merge of its fields in turn, so the model's fields are
    merged one run at a time and each initializer of its graph parsed on its own: the bytes of one
    tensor at most are held beside the message (vgg11_bn: load peak 1.06 -> 0.95 GB)."""
    try:
        p = regular_file(p, "model file", MAX_MODEL_BYTES)
        size = p.stat().st_size
        if not size or size < PIECEWISE_MIN_BYTES:
            return None
        model = onnx.ModelProto()
        with open(p, "rb") as f:
            top = None  # a run of model fields other than the graph: merged at once
            for number, start, body, end in _scan(f, 0, size):
                if number != _GRAPH:
                    top = (start, end) if top is None else (top[0], end)
                    continue
                if top is not None:
                    _merge_run(model, f, *top)
                    top = None
                model.graph.SetInParent()
                run = None  # a run of graph fields other than initializers: merged at once
                for n, s, b, e in _scan(f, body, end):
                    if n == _INITIALIZER:
                        if run is not None:
                            _merge_run(model.graph, f, *run)
                            run = None
                        f.seek(b)
                        model.graph.initializer.add().ParseFromString(_exactly(f, e - b))
                    else:
                        run = (s, e) if run is None else (run[0], e)
                if run is not None:
                    _merge_run(model.graph, f, *run)
            if top is not None:
                _merge_run(model, f, *top)
        return model
    except Exception:  # _NotPlain, OSError, protobuf's DecodeError (its class differs between implementations)
        return None


def _exactly(f, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise _NotPlain("truncated")
    return data


def _merge_run(msg, f, start: int, end: int) -> None:
    f.seek(start)
    msg.MergeFromString(_exactly(f, end - start))


#: fields one scan walks at most before the file is left to the whole parse: a real model has a
#: few top-level fields and a graph field per node, value_info and initializer; a file of millions
#: of tiny fields (hostile, or not a model) would keep the Python scan busy for minutes
MAX_SCANNED_FIELDS = 200_000


def _scan(f, pos: int, end: int):
    """(field number, field start, payload start, field end) of each field of the message that
    fills bytes ``pos:end`` of ``f`` (at most :data:`MAX_SCANNED_FIELDS` of them)."""
    count = 0
    while pos < end:
        count += 1
        if count > MAX_SCANNED_FIELDS:
            raise _NotPlain("too many fields")
        f.seek(pos)
        head = f.read(20)
        key, k = _read_varint(head, 0)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, k2 = _read_varint(head, k)
            body, stop = pos + k, pos + k2
        elif wire == 1:
            body, stop = pos + k, pos + k + 8
        elif wire == 5:
            body, stop = pos + k, pos + k + 4
        elif wire == 2:
            n, k2 = _read_varint(head, k)
            body, stop = pos + k2, pos + k2 + n
        else:  # groups, or not protobuf
            raise _NotPlain("wire type")
        if number == 0 or stop > end:
            raise _NotPlain("field")
        yield number, pos, body, stop
        pos = stop


def _read_varint(buf: bytes, i: int) -> tuple[int, int]:
    """(value, index after it) of the varint at ``buf[i:]``."""
    value, shift = 0, 0
    while True:
        if i >= len(buf) or shift > 63:
            raise _NotPlain("varint")
        b = buf[i]
        value |= (b & 0x7F) << shift
        i += 1
        if not b & 0x80:
            return value, i
        shift += 7


def as_model(model, *, input_size=None, layout: str = "NCHW", copy: bool = False,
             where: str = "model") -> onnx.ModelProto:
    """``model`` as a ModelProto: a path is read by :func:`load_model` (validated, folded, named
    and shape-inferred like every model file; ``input_size`` and ``layout`` as there), a
    ModelProto is returned as given (with ``copy``, a copy); anything else is an AuditorError."""
    if isinstance(model, onnx.ModelProto):
        return _copy(model) if copy else model
    if isinstance(model, (str, os.PathLike)):
        return load_model(model, input_size=input_size, layout=layout)
    raise AuditorError(f"expected an ONNX ModelProto or a path, got {type(model).__name__}", where=where)


def prepare(model: onnx.ModelProto, where: str = "model", *, input_size=None,
            layout: str = "NCHW") -> onnx.ModelProto:
    """Validate and normalise an in-memory model; the one load-time pipeline every path uses.

    1. opset imports that no node uses are dropped (only the domains nodes use matter);
       non-standard ops are refused by name;
    2. initializers are removed from the graph inputs (IR < 4 exporters list them there) and the
       IR version raised to 4 where needed;
    3. a float16 model becomes a float32 one (weights, constants, Casts, inputs and outputs:
       cast at the boundary; noted in the model, see :func:`load_notes`);
    4. ``input_size`` ([H, W]) fixes dynamic spatial dimensions of the data input (``layout``
       says where H and W are); the batch dimension stays as the model declares it;
    5. constant and shape-dependent subgraphs are folded (:func:`auditor.model.fold.fold`);
    6. opsets older than 11 are upgraded to 13 with onnx's version converter, after folding;
    7. every node gets a unique name; onnx's checker and strict shape inference run;
    8. the model must have one data input whose per-sample shape is static.
    """
    return _prepare(_copy(model), where, input_size=input_size, layout=layout)


def _prepare(model: onnx.ModelProto, where: str, *, input_size, layout: str) -> onnx.ModelProto:
    """:func:`prepare` on a model of the caller's own, changed in place (no copy of its weights)."""
    _drop_unused_opsets(model)
    for imp in model.opset_import:
        if imp.domain not in ("", "ai.onnx"):
            raise AuditorError(f"custom op domain '{imp.domain}' is not supported", where=where)
    _check_known_ops(model, where)
    version = default_opset(model)
    if version == 0:
        raise AuditorError("model imports no default ONNX opset", where=where)
    _drop_initializer_inputs(model)
    if model.ir_version < 4:
        model.ir_version = 4
    inputs = graph_inputs(model)
    if len(inputs) != 1:
        raise AuditorError(f"expected exactly one image input, the model has {len(inputs)}: "
                           f"{', '.join(i.name for i in inputs) or 'none'}", where=where)
    _float16_to_float32(model)
    if input_size is not None:
        _fix_input_size(model, input_size, layout, where)
    try:
        fold(model)
    except AuditorError:
        raise
    except Exception as e:
        raise AuditorError(f"cannot fold the model's constant subgraphs: {_first_line(e)}", where=where) from None
    if version < MIN_OPSET:
        model = upgrade(model, UPGRADE_OPSET, where)
        fold(model)  # the converter may add constant subgraphs (axes, scales)
    name_nodes(model.graph)
    light, big = skeleton(model)  # the checker and shape inference serialise what they check: not the weights
    try:
        onnx.checker.check_model(light)
        check_weights(big)
    except onnx.checker.ValidationError as e:
        raise AuditorError(f"invalid ONNX model: {_first_line(e)}", where=where) from None
    try:
        model = restore(model, shape_inference.infer_shapes(light, check_type=True, strict_mode=True, data_prop=True),
                        big)
    except Exception as e:
        raise AuditorError(f"shape inference failed: {_first_line(e)}", where=where) from None
    if not model.graph.output:
        raise AuditorError("model has no outputs", where=where)
    _require_static_input(model, where)
    if any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node):
        _note(model, "quantised (QDQ) model: activations are the real (de)quantised tensors; input gradients "
                     "pass QuantizeLinear/DequantizeLinear by the straight-through estimator")
    return model


#: the data types whose raw data check_weights measures itself (fixed size per element)
_FIXED_SIZE = {t for t in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16,
                           onnx.TensorProto.BFLOAT16, onnx.TensorProto.INT8, onnx.TensorProto.UINT8,
                           onnx.TensorProto.INT16, onnx.TensorProto.UINT16, onnx.TensorProto.INT32,
                           onnx.TensorProto.UINT32, onnx.TensorProto.INT64, onnx.TensorProto.UINT64,
                           onnx.TensorProto.BOOL)}


def check_weights(tensors: list[onnx.TensorProto]) -> None:
    """onnx's checker on initializers that :func:`prepare` keeps out of ``check_model`` (the
    skeleton's large weights): ``onnx.checker.check_tensor`` serialises a tensor and reading
    ``raw_data`` from Python copies it, so a tensor that holds raw data of a fixed-size type and
    nothing else is checked here on its declared size, one tensor's bytes copied at a time
    (ValidationError as the checker's when they are too few); any other tensor goes to
    ``check_tensor``."""
    value_fields = [f.name for f in onnx.TensorProto.DESCRIPTOR.fields if f.name.endswith("_data")]
    for t in tensors:
        if not (t.HasField("raw_data") and t.data_type in _FIXED_SIZE and not t.external_data
                and t.data_location != onnx.TensorProto.EXTERNAL
                and not any(len(getattr(t, f)) for f in value_fields if f != "raw_data")):
            onnx.checker.check_tensor(t)
            continue
        need = self_bytes(t)
        have = _raw_data_bytes(t)
        if have < need:
            raise onnx.checker.ValidationError(
                f"TensorProto (tensor name: {t.name}) raw_data size ({have} bytes) is too small "
                f"for the declared shape and type ({need} bytes required).")


def _raw_data_bytes(t: onnx.TensorProto) -> int:
    """len(t.raw_data).  Protobuf (upb) hands raw_data out as a copy, and computes ByteSize by
    serialising the message, so reading it once is the cheaper way to its size (measured on a
    392 MiB weight, one process, load 18: ByteSize 16.1 s and +0.77 GB peak, the copy 8.5 s and
    +0.38 GB)."""
    return len(t.raw_data)


def upgrade(model: onnx.ModelProto, target: int, where: str = "model") -> onnx.ModelProto:
    """``model`` converted to default-domain opset ``target`` by onnx's version converter, with
    the meaning of Upsample-9/Resize-10 kept (see :func:`_keep_resize10_semantics`)."""
    from onnx import version_converter


    version = default_opset(model)
    light, big = skeleton(model)  # the converter copies the model several times: not its weights
    try:
        converted = restore(model, version_converter.convert_version(light, target), big)
    except Exception as e:  # the converter raises a variety of types
        raise AuditorError(f"cannot upgrade the model from opset {version} to {target} "
                           f"({_first_line(e)})", where=where) from None
    if version < 11:
        _keep_resize10_semantics(converted, where)
    return converted


def _keep_resize10_semantics(model: onnx.ModelProto, where: str) -> None:
    """Upsample-9 and Resize-10 map output to input coordinates asymmetrically (x / scale) and
    round nearest neighbours down when upsampling, up when downsampling; the version converter
    leaves the opset-11 defaults (half_pixel, round_prefer_floor), which compute something else
    for linear and non-integer nearest resizes.  Set the attributes that keep the old meaning."""
    for node in model.graph.node:
        if node.op_type != "Resize" or node.domain not in ("", "ai.onnx") or any(
                a.name == "coordinate_transformation_mode" for a in node.attribute):
            continue
        node.attribute.append(onnx.helper.make_attribute(
            "coordinate_transformation_mode", "asymmetric"))
        mode = next((onnx.helper.get_attribute_value(a) for a in node.attribute
                     if a.name == "mode"), b"nearest")
        if mode not in (b"nearest", "nearest"):
            continue
        scales = constant_value(model, node.input[2]) if len(node.input) > 2 else None
        label = node.name or node.output[0]
        if scales is None or not scales.size:
            raise AuditorError(f"cannot upgrade the nearest Resize/Upsample {label!r} to opset 11: "
                               "its scales are not constants", where=where)
        if (scales >= 1).all():
            rounding = "floor"
        elif (scales <= 1).all():
            rounding = "ceil"
        else:
            raise AuditorError(f"cannot upgrade the nearest Resize/Upsample {label!r} to opset 11: "
                               "it upsamples some axes and downsamples others", where=where)
        node.attribute.append(onnx.helper.make_attribute("nearest_mode", rounding))


#: the metadata key under which load-time notes (conversions the report states) are kept
NOTES_KEY = "auditor.load_notes"


def load_notes(model: onnx.ModelProto) -> list[str]:
    """What loading changed about the model that a report must state (float16 -> float32, ...)."""
    for p in model.metadata_props:
        if p.key == NOTES_KEY:
            return [ln for ln in p.value.split("\n") if ln]
    return []


def _note(model: onnx.ModelProto, text: str) -> None:
    notes = load_notes(model)
    if text in notes:
        return
    notes.append(text)
    for p in model.metadata_props:
        if p.key == NOTES_KEY:
            p.value = "\n".join(notes)
            return
    model.metadata_props.add(key=NOTES_KEY, value=text)


def _drop_unused_opsets(model: onnx.ModelProto) -> None:
    """Keep the default opset and the domains some node uses (onnxruntime-saved models import
    ai.onnx.ml, com.microsoft, ... that no node needs)."""
    used = {n.domain or "" for n in model.graph.node}
    keep = [imp for imp in model.opset_import if imp.domain in ("", "ai.onnx") or imp.domain in used]
    if len(keep) != len(model.opset_import):
        del model.opset_import[:]
        model.opset_import.extend(keep)


def _float16_to_float32(model: onnx.ModelProto) -> None:
    """Cast a float16 model to float32 at the boundary: weights, constants, Cast targets, the
    data input and outputs.  Values are exactly representable; the arithmetic then runs in
    float32 (more precise than the float16 runtime would be)."""
    F16, F32 = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT
    g = model.graph
    changed = False

    def conv(t: onnx.TensorProto) -> onnx.TensorProto:
        return numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float32), t.name)

    for i, t in enumerate(g.initializer):
        if t.data_type == F16:
            g.initializer[i].CopyFrom(conv(t))
            changed = True
    for node in g.node:
        for a in node.attribute:
            if a.type == onnx.AttributeProto.TENSOR and a.t.data_type == F16:
                a.t.CopyFrom(conv(a.t))
                changed = True
            if a.name in ("to", "dtype", "output_dtype") and a.type == onnx.AttributeProto.INT and a.i == F16:
                a.i = F32
                changed = True
    for vi in list(g.input) + list(g.output):
        if vi.type.tensor_type.elem_type == F16:
            vi.type.tensor_type.elem_type = F32
            changed = True
    if changed:
        del g.value_info[:]
        _note(model, "float16 model: audited in float32 (weights, inputs and outputs cast at load)")


def _input_dims(vi: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
            for d in vi.type.tensor_type.shape.dim]


def _fix_input_size(model: onnx.ModelProto, size, layout: str, where: str) -> None:
    """Set the spatial dims ([H, W]) of the data input; a static dim must already agree."""
    inp = graph_inputs(model)[0]
    dims = inp.type.tensor_type.shape.dim
    if len(dims) != 4:
        raise AuditorError(f"preprocessing.input_size needs a 4-D image input; '{inp.name}' has shape "
                           f"{_input_dims(inp)}", where=where)
    axes = (1, 2) if layout == "NHWC" else (2, 3)
    for ax, v in zip(axes, size):
        d = dims[ax]
        if d.HasField("dim_value") and d.dim_value > 0:
            if d.dim_value != int(v):
                raise AuditorError(f"preprocessing.input_size {list(size)} disagrees with the model's input "
                                   f"'{inp.name}' of shape {_input_dims(inp)}", where=where)
            continue
        d.Clear()
        d.dim_value = int(v)
    del model.graph.value_info[:]


def _require_static_input(model: onnx.ModelProto, where: str) -> None:
    inp = graph_inputs(model)[0]
    dims = _input_dims(inp)
    if any(not isinstance(d, int) or d <= 0 for d in dims[1:]):
        raise AuditorError(f"the model's input '{inp.name}' has dynamic dimensions {dims}: set "
                           "preprocessing.input_size: [H, W] in the scenario (auditor inspect: --input-size H W)",
                           where=where)


def input_shape(model: onnx.ModelProto) -> list[int | str]:
    """Shape of the single data input, symbolic dims as strings."""
    dims = graph_inputs(model)[0].type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]


def model_hash(model: onnx.ModelProto) -> str:
    """SHA-256 of the model's serialisation (``SerializeToString(deterministic=True)``), fed piece
    by piece instead of built whole, which holds twice the weights' bytes while protobuf writes
    it: a message is its fields in field-number order, a sub-message one as its tag, its length and
    its bytes, so the model is hashed as its fields before the graph, the graph's fields before
    its initializers, each initializer (a large one's ``raw_data`` on its own), and so on."""
    h = hashlib.sha256()
    for piece in _model_pieces(model):
        h.update(piece)
    return h.hexdigest()


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field_key(number: int) -> bytes:
    """The key of a length-delimited field (wire type 2)."""
    return _varint(number << 3 | 2)


def _but(msg, lo: int, hi: int):
    """A copy of ``msg`` with only its fields numbered in (lo, hi): the others are not copied."""
    out = type(msg)()
    for fd in msg.DESCRIPTOR.fields:
        if not lo < fd.number < hi:
            continue
        if fd.is_repeated:
            getattr(out, fd.name).extend(getattr(msg, fd.name))
        elif msg.HasField(fd.name):
            if fd.message_type is not None:
                getattr(out, fd.name).CopyFrom(getattr(msg, fd.name))
            else:
                setattr(out, fd.name, getattr(msg, fd.name))
    return out


def _around(msg, number: int) -> tuple[bytes, bytes]:
    """The serialised fields of ``msg`` before and after field ``number``."""
    return _but(msg, -1, number).SerializeToString(), _but(msg, number, 1 << 30).SerializeToString()


_GRAPH, _INITIALIZER, _RAW_DATA = 7, 5, 9  # field numbers in ModelProto, GraphProto, TensorProto


def _tensor_pieces(t: onnx.TensorProto, data: bool = True) -> list:
    """The serialisation of ``t`` in pieces; a large one's raw_data (a copy of its bytes, protobuf
    hands out no other) only with ``data``, else its length."""
    if not t.HasField("raw_data") or int(np.prod(t.dims, dtype=np.int64)) < 4096:
        return [t.SerializeToString()]
    before, after = _around(t, _RAW_DATA)
    raw = t.raw_data
    return [before, _field_key(_RAW_DATA), _varint(len(raw)), raw if data else len(raw), after]


def _size(pieces: list) -> int:
    return sum(p if isinstance(p, int) else len(p) for p in pieces)


def _model_pieces(model: onnx.ModelProto):
    g = model.graph
    g_before, g_after = _around(g, _INITIALIZER)
    sizes = [_size(_tensor_pieces(t, data=False)) for t in g.initializer]
    g_size = len(g_before) + len(g_after) + sum(len(_field_key(_INITIALIZER)) + len(_varint(n)) + n for n in sizes)
    m_before, m_after = _around(model, _GRAPH)
    yield m_before
    if model.HasField("graph"):
        yield _field_key(_GRAPH) + _varint(g_size)
        yield g_before
        for t, n in zip(g.initializer, sizes):
            yield _field_key(_INITIALIZER) + _varint(n)
            yield from _tensor_pieces(t)
        yield g_after
    yield m_after


def constant_node_value(node: onnx.NodeProto) -> np.ndarray | None:
    """The value of a ``Constant`` node, or None for forms that are not tensors (sparse, strings)."""
    for a in node.attribute:
        if a.name == "value":
            return numpy_helper.to_array(a.t)
        if a.name == "value_float":
            return np.array(a.f, dtype=np.float32)
        if a.name == "value_floats":
            return np.array(list(a.floats), dtype=np.float32)
        if a.name == "value_int":
            return np.array(a.i, dtype=np.int64)
        if a.name == "value_ints":
            return np.array(list(a.ints), dtype=np.int64)
    return None


def constant_value(model: onnx.ModelProto, name: str) -> np.ndarray | None:
    """The value of a tensor if it is a constant, else None: an initializer, a Constant node's
    output, an Identity of a constant, or a DequantizeLinear of constants (the dequantised
    float weight of an int8 QDQ layer).  The one constant-lookup helper of the project."""
    for init in model.graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    for node in model.graph.node:
        if not node.output or node.output[0] != name or node.domain not in ("", "ai.onnx"):
            continue
        if node.op_type == "Constant":
            return constant_node_value(node)
        if node.op_type == "Identity":
            return constant_value(model, node.input[0])
        if node.op_type == "DequantizeLinear":
            return dequantize(node, [constant_value(model, i) if i else None for i in node.input])
        return None
    return None


def constant_shape(model: onnx.ModelProto, name: str) -> tuple[int, ...] | None:
    """The shape of :func:`constant_value`'s value (None when the tensor is not a constant); an
    initializer's from its dims, without reading (copying) its data."""
    for init in model.graph.initializer:
        if init.name == name:
            return tuple(int(d) for d in init.dims)
    v = constant_value(model, name)
    return None if v is None else tuple(v.shape)


def dequantize(node: onnx.NodeProto, args: list) -> np.ndarray | None:
    """DequantizeLinear of constant operands ((q - zero_point) * scale, per tensor or per axis),
    or None when an operand is not constant or the form is not supported (blocked)."""
    q, scale = args[0], args[1] if len(args) > 1 else None
    zp = args[2] if len(args) > 2 else None
    if q is None or scale is None or (len(node.input) > 2 and node.input[2] and zp is None):
        return None
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    if attrs.get("block_size"):
        return None
    qf = q.astype(np.float64)
    if zp is not None:
        qf = qf - _along(zp.astype(np.float64), q.ndim, int(attrs.get("axis", 1)))
    return (qf * _along(scale.astype(np.float64), q.ndim, int(attrs.get("axis", 1)))).astype(scale.dtype)


def _along(v: np.ndarray, rank: int, axis: int) -> np.ndarray:
    """A per-tensor (scalar) or per-axis (1-D) quantisation parameter shaped to broadcast."""
    if v.ndim == 0 or v.size == 1 and rank == 0:
        return v.reshape(())
    shape = [1] * rank
    shape[axis % rank] = v.size
    return v.reshape(shape)


def _first_line(e: Exception) -> str:
    text = str(e).strip() or e.__class__.__name__
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    # onnx errors often start with a bracketed location line; keep the informative part
    msg = lines[0] if lines else text
    for ln in lines:
        if "Error" in ln or "error" in ln or "Unrecognized" in ln or "not" in ln:
            msg = ln
            break
    return msg[:300]


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    return m


def _load_external_data(model: onnx.ModelProto, base: Path, where: str) -> None:
    from onnx.external_data_helper import load_external_data_for_tensor, uses_external_data

    tensors = list(model.graph.initializer)
    for node in model.graph.node:
        for a in node.attribute:
            if a.HasField("t"):
                tensors.append(a.t)
    total = 0
    for t in tensors:
        if not uses_external_data(t):
            continue
        info = {e.key: e.value for e in t.external_data}
        loc = info.get("location", "")
        if not loc or "\0" in loc:
            raise AuditorError(f"external data of tensor '{t.name}' has {'no' if not loc else 'an invalid'} location",
                               where=where)
        try:
            offset, length = int(info.get("offset") or 0), int(info["length"]) if info.get("length") else None
        except ValueError:
            raise AuditorError(f"external data of tensor '{t.name}' has a non-integer offset or length", where=where) from None
        target = (base / loc).resolve()
        if os.path.isabs(loc) or not str(target).startswith(str(base) + os.sep):
            raise AuditorError(f"external data '{loc}' of tensor '{t.name}' lies outside the model's folder; refusing to read it", where=where)
        if not target.is_file():
            raise AuditorError(f"external data file '{loc}' of tensor '{t.name}' not found", where=where)
        size = target.stat().st_size
        if offset < 0 or (length is not None and length < 0) or offset > size or \
                (length is not None and offset + length > size):
            raise AuditorError(f"external data of tensor '{t.name}' (offset {offset}, length {length}) lies outside "
                               f"'{loc}' ({size} bytes)", where=where)
        total += (size - offset) if length is None else length
        if total > MAX_MODEL_BYTES:
            raise AuditorError(f"external data of the model exceeds the {MAX_MODEL_BYTES >> 20} MiB the tool reads "
                               f"(at tensor '{t.name}')", where=where)
        try:
            load_external_data_for_tensor(t, str(base))
        except Exception as e:
            raise AuditorError(f"cannot read external data of tensor '{t.name}': {_first_line(e)}", where=where) from None
        t.data_location = onnx.TensorProto.DEFAULT
        del t.external_data[:]


def _check_known_ops(model: onnx.ModelProto, where: str) -> None:
    version = default_opset(model) or 1
    for i, node in enumerate(model.graph.node):
        if node.domain not in ("", "ai.onnx"):
            raise AuditorError(f"unsupported op '{node.domain}::{node.op_type}' (node '{node.name or i}'): "
                               "only standard ONNX ops are supported", where=where)
        try:
            onnx.defs.get_schema(node.op_type, max(version, 1), "")
        except Exception:
            raise AuditorError(f"unknown op '{node.op_type}' (node '{node.name or f'#{i}'}') is not a standard "
                               f"ONNX operator at opset {version}", where=where) from None


def _drop_initializer_inputs(model: onnx.ModelProto) -> None:
    inits = {i.name for i in model.graph.initializer}
    keep = [i for i in model.graph.input if i.name not in inits]
    if len(keep) != len(model.graph.input):
        del model.graph.input[:]
        model.graph.input.extend(keep)
        if model.ir_version < 4:
            model.ir_version = 4
