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

from .errors import AuditorError

MIN_OPSET = 11
#: the opset that models older than MIN_OPSET are upgraded to
UPGRADE_OPSET = 13


def default_opset(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    return 0


def load_model(path: str | os.PathLike) -> onnx.ModelProto:
    """Read, validate and normalise an ONNX image classifier.

    - refuses external-data files outside the model's folder;
    - upgrades opsets older than 11 with onnx's version converter;
    - removes initializers from the graph inputs (old exporters list them there);
    - gives every node a unique name (``<op_type>_<index>`` where missing);
    - runs onnx's checker and strict shape inference.
    """
    p = Path(path)
    where = str(path)
    if not p.exists():
        raise AuditorError("model file not found", where=where)
    if p.is_dir():
        raise AuditorError("is a directory, expected an .onnx file", where=where)
    data = p.read_bytes()
    if not data:
        raise AuditorError("model file is empty", where=where)
    try:
        model = onnx.load_model_from_string(data)
    except Exception as e:  # protobuf DecodeError and friends
        raise AuditorError(f"not a valid ONNX model (cannot parse protobuf: {_first_line(e)})", where=where) from None
    if not model.graph.node:
        raise AuditorError("not a valid ONNX model (the graph has no nodes)", where=where)
    _load_external_data(model, p.parent.resolve(), where)
    return prepare(model, where)


def prepare(model: onnx.ModelProto, where: str = "model") -> onnx.ModelProto:
    """Validate and normalise an in-memory model (see :func:`load_model`)."""
    model = _copy(model)
    for imp in model.opset_import:
        if imp.domain not in ("", "ai.onnx"):
            raise AuditorError(f"custom op domain '{imp.domain}' is not supported", where=where)
    _check_known_ops(model, where)
    version = default_opset(model)
    if version == 0:
        raise AuditorError("model imports no default ONNX opset", where=where)
    if version < MIN_OPSET:
        try:
            from onnx import version_converter

            model = version_converter.convert_version(model, UPGRADE_OPSET)
        except Exception as e:
            raise AuditorError(f"opset {version} is older than {MIN_OPSET} and could not be upgraded "
                               f"({_first_line(e)})", where=where) from None
    _drop_initializer_inputs(model)
    _name_nodes(model)
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as e:
        raise AuditorError(f"invalid ONNX model: {_first_line(e)}", where=where) from None
    try:
        model = shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    except Exception as e:
        raise AuditorError(f"shape inference failed: {_first_line(e)}", where=where) from None
    inputs = graph_inputs(model)
    if len(inputs) != 1:
        raise AuditorError(f"expected exactly one image input, the model has {len(inputs)}: "
                           f"{', '.join(i.name for i in inputs) or 'none'}", where=where)
    if not model.graph.output:
        raise AuditorError("model has no outputs", where=where)
    return model


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """The graph inputs that are not initializers (the data inputs)."""
    inits = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def input_shape(model: onnx.ModelProto) -> list[int | str]:
    """Shape of the single data input, symbolic dims as strings."""
    dims = graph_inputs(model)[0].type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]


def model_hash(model: onnx.ModelProto) -> str:
    return hashlib.sha256(model.SerializeToString(deterministic=True)).hexdigest()


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
    """The value of a tensor if it is an initializer or a Constant node's output, else None."""
    for init in model.graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output and node.output[0] == name:
            return constant_node_value(node)
    return None


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
    for t in tensors:
        if not uses_external_data(t):
            continue
        info = {e.key: e.value for e in t.external_data}
        loc = info.get("location", "")
        target = (base / loc).resolve()
        if os.path.isabs(loc) or not str(target).startswith(str(base) + os.sep):
            raise AuditorError(f"external data '{loc}' of tensor '{t.name}' lies outside the model's folder; refusing to read it", where=where)
        if not target.is_file():
            raise AuditorError(f"external data file '{loc}' of tensor '{t.name}' not found", where=where)
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


def _name_nodes(model: onnx.ModelProto) -> None:
    used = {n.name for n in model.graph.node if n.name}
    seen = set()
    for i, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            name = f"{node.op_type}_{i}"
            while name in used or name in seen:
                name += "_"
            node.name = name
        seen.add(node.name)
