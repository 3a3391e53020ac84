"""Bringing a model into the form the gradient rules expect.

Rules are written for the default-domain opsets 13 and later (axes as inputs for ReduceSum,
Squeeze, Unsqueeze and Split; Softmax over one axis; Clip bounds as inputs).  Older models
(opset 11 and 12, or earlier) are upgraded with onnx's version converter; the forward nodes of a
model that is already at opset 13 or later are left exactly as they are.
"""

from __future__ import annotations

import onnx

from auditor.model.load import upgrade

from .builder import default_opset

MIN_OPSET = 13


def upgrade_opset(model: onnx.ModelProto, target: int = MIN_OPSET, copy: bool = True) -> onnx.ModelProto:
    """A copy of ``model`` at default-domain opset >= ``target`` (unchanged when already there;
    ``copy=False``: ``model`` itself then, for callers that only read it)."""
    if default_opset(model) >= target and not copy:
        return model
    m = onnx.ModelProto()
    m.CopyFrom(model)
    if default_opset(m) >= target:
        return m
    return upgrade(m, target)


# Ops for which onnx's shape inference infers nothing (GroupNormalization is a context-dependent
# function without an inference function): their output 0 is shaped and typed like input 0.
_SAME_AS_INPUT0 = {"GroupNormalization"}


#: location of the initializers whose data :func:`with_shapes` leaves out of its copy
STRIPPED = "auditor::stripped"
#: initializers with more elements than this travel to shape inference without their data
_KEEP_ELEMENTS = 4096


def _light(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` whose large initializers keep their name, type and dims but not their
    data (marked as external data at :data:`STRIPPED`): shape inference reads only those, and
    serialising a model's weights to the inference and parsing them back dominated the gradient
    build of large models (tens of seconds on VGG).  Small ones (shapes, axes) keep their values
    for data propagation."""
    m = onnx.ModelProto()
    for f in ("ir_version", "producer_name", "producer_version", "domain", "model_version"):
        setattr(m, f, getattr(model, f))
    m.opset_import.extend(model.opset_import)
    m.functions.extend(model.functions)
    src, g = model.graph, m.graph
    g.name = src.name
    g.node.extend(src.node)
    g.input.extend(src.input)
    g.output.extend(src.output)
    g.value_info.extend(src.value_info)
    g.sparse_initializer.extend(src.sparse_initializer)
    for t in src.initializer:
        n = 1
        for d in t.dims:
            n *= d
        if n <= _KEEP_ELEMENTS or t.data_location == onnx.TensorProto.EXTERNAL:
            g.initializer.append(t)
            continue
        ph = g.initializer.add()
        ph.name, ph.data_type = t.name, t.data_type
        ph.dims.extend(t.dims)
        ph.data_location = onnx.TensorProto.EXTERNAL
        e = ph.external_data.add()
        e.key, e.value = "location", STRIPPED
    return m


def with_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy with shapes and types inferred (best effort: partial information is kept).  Large
    initializers are in the copy without their data (see :func:`_light`): a
    :class:`~auditor.grad.builder.GraphBuilder` over it takes their values from ``model``
    (its ``source``)."""
    inferred = _infer(_light(model))
    for _ in range(1 + sum(n.op_type in _SAME_AS_INPUT0 for n in model.graph.node)):
        if not _fill_same_as_input0(inferred):
            break
        inferred = _infer(inferred)
    return inferred


def _infer(model: onnx.ModelProto) -> onnx.ModelProto:
    try:
        return onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:
        try:
            return onnx.shape_inference.infer_shapes(model)
        except Exception:
            m = onnx.ModelProto()
            m.CopyFrom(model)
            return m


def _fill_same_as_input0(model: onnx.ModelProto) -> bool:
    """Give the outputs of ``_SAME_AS_INPUT0`` ops the type of their input (in place); True when
    something was added."""
    g = model.graph
    infos = {vi.name: vi for vi in list(g.input) + list(g.value_info) + list(g.output)}

    def shaped(name: str) -> bool:
        vi = infos.get(name)
        return vi is not None and vi.type.tensor_type.HasField("shape")

    added = False
    for node in g.node:
        if (node.op_type not in _SAME_AS_INPUT0 or node.domain not in ("", "ai.onnx")
                or not node.input or not node.output or not shaped(node.input[0])
                or shaped(node.output[0])):
            continue
        out = node.output[0]
        vi = infos.get(out)
        if vi is None:
            vi = g.value_info.add()
            vi.name = out
            infos[out] = vi
        vi.type.CopyFrom(infos[node.input[0]].type)
        added = True
    return added
