"""Bringing a model into the form the gradient rules expect.

Rules are written for the default-domain opsets 13 and later (axes as inputs for ReduceSum,
Squeeze, Unsqueeze and Split; Softmax over one axis; Clip bounds as inputs).  Older models
(opset 11 and 12, or earlier) are upgraded with onnx's version converter; the forward nodes of a
model that is already at opset 13 or later are left exactly as they are.
"""

from __future__ import annotations

import onnx

from auditor.modelio import upgrade

from .builder import default_opset

MIN_OPSET = 13


def upgrade_opset(model: onnx.ModelProto, target: int = MIN_OPSET) -> onnx.ModelProto:
    """A copy of ``model`` at default-domain opset >= ``target`` (unchanged when already there)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    if default_opset(m) >= target:
        return m
    return upgrade(m, target)


# Ops for which onnx's shape inference infers nothing (GroupNormalization is a context-dependent
# function without an inference function): their output 0 is shaped and typed like input 0.
_SAME_AS_INPUT0 = {"GroupNormalization"}


def with_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy with shapes and types inferred (best effort: partial information is kept)."""
    inferred = _infer(model)
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
