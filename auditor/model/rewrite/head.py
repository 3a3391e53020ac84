"""The classifier head as an ONNX rewrite: which tensor holds the logits (N, C).

:func:`logits_head` makes the model's first output its logits: a final Softmax/LogSoftmax over
the class axis is removed, and logits of shape (N, C, 1, ..., 1) are flattened into
``auditor::logits``.  :class:`Head` records what was done, for the report's notes.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from ...errors import AuditorError
from ..graph import tensor_shapes
from ..interface import default_opset
from ..names import check_free, graph_names, ns

#: ops between a final Softmax and the model's output that do not change the values
_HEAD_PASS = ("Identity", "Flatten", "Reshape", "Squeeze")
#: the (N, C) logits tensor the tool adds when the model's own has trailing singleton dimensions
LOGITS = ns("logits")


@dataclass(frozen=True)
class Head:
    """How the classifier reads the model's first output as logits (N, C)."""

    output: str  # the model's first output
    logits: str  # the tensor the classifier uses as logits (N, C)
    shape: tuple  # the shape of the tensor the logits come from, as the model declares it
    softmax: str | None = None  # "Softmax"/"LogSoftmax": a final normalisation the tool skips
    softmax_node: str | None = None

    @property
    def notes(self) -> list[str]:
        out = []
        if self.softmax:
            out.append(f"the model ends in {self.softmax} (node '{self.softmax_node}'): attacks, margins and "
                       f"cross-entropies use its input, the logits, not the output '{self.output}'")
        if len(self.shape) > 2:
            dims = "x".join(str(d) for d in self.shape)
            out.append(f"the logits of shape {dims} are read as (N, C) after dropping their trailing "
                       f"singleton dimensions (a Flatten added to the graph)")
        return out

    def to_dict(self) -> dict:
        return {"output": self.output, "logits": self.logits, "shape": [str(d) for d in self.shape],
                "softmax_removed": self.softmax, "notes": self.notes}


def _softmax_over_classes(node, rank: int, opset: int) -> bool:
    axis = next((onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"),
                -1 if opset >= 13 else 1)
    axis = axis + rank if axis < 0 else axis
    return axis == 1


def logits_head(model: onnx.ModelProto) -> tuple[onnx.ModelProto, Head]:
    """``model`` with logits (N, C) as its first output, and how they were found.

    A final Softmax/LogSoftmax over the class axis (possibly followed by Identity, Flatten,
    Reshape or Squeeze) is removed: probabilities are not logits, and attacks that take their
    cross-entropy or margins would optimise the wrong function.  Logits of shape (N, C, 1, ..., 1)
    (caffe2-style heads) get a Flatten (``auditor::logits``), so the plain and the gradient
    sessions read the same (N, C) tensor.  Other shapes are refused.
    """
    g = model.graph
    if not g.output:
        raise AuditorError("the model has no outputs")
    out0 = g.output[0].name
    shapes = tensor_shapes(model)
    producer = {o: n for n in g.node for o in n.output}
    chain, t = [], out0
    while t in producer and producer[t].op_type in _HEAD_PASS:
        chain.append(producer[t])
        t = producer[t].input[0]
    logits, removed, softmax = out0, [], None
    node = producer.get(t)
    if node is not None and node.op_type in ("Softmax", "LogSoftmax"):
        ishape = shapes.get(node.input[0])
        if ishape is not None and len(ishape) >= 2 and _softmax_over_classes(node, len(ishape), default_opset(model)):
            logits, removed, softmax = node.input[0], chain + [node], node
    shape = shapes.get(logits)
    if shape is None:  # nothing known: leave the model as it is (the objectives say what they need)
        return model, Head(out0, out0, ())
    shape = tuple(shape)
    if len(shape) < 2 or any(d != 1 for d in shape[2:]):
        raise AuditorError(f"the model's output {logits!r} has shape {list(shape)}; a classifier's logits must be "
                           "(N, C), or (N, C, 1, ..., 1)", where="model output")
    if len(shape) == 2 and softmax is None:
        return model, Head(out0, out0, shape)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    og = out.graph
    if len(shape) > 2:
        check_free(graph_names(model), LOGITS)
        og.node.append(onnx.helper.make_node("Flatten", [logits], [LOGITS], axis=1, name=ns("logits/Flatten")))
        logits = LOGITS
    elem = g.output[0].type.tensor_type.elem_type or onnx.TensorProto.FLOAT
    vi = onnx.helper.make_tensor_value_info(logits, elem, [shape[0] if isinstance(shape[0], int) else "N", shape[1]])
    rest = [o for o in og.output[1:] if o.name != logits]
    del og.output[:]
    og.output.extend([vi] + rest)
    if removed:  # drop the normalisation when nothing else reads it
        used = {i for n in og.node for i in n.input} | {o.name for o in og.output}
        for n in removed:
            if not set(n.output) & used:
                og.node.remove(next(m for m in og.node if m.name == n.name and list(m.output) == list(n.output)))
                used = {i for m in og.node for i in m.input} | {o.name for o in og.output}
    # outputs that became internal tensors keep their shapes (compute layers need them)
    produced = {o for n in og.node for o in n.output}
    known = {vi.name for vi in og.value_info} | {o.name for o in og.output}
    og.value_info.extend(o for o in g.output if o.name in produced and o.name not in known)
    return out, Head(out0, logits, shape, softmax.op_type if softmax is not None else None,
                     softmax.name if softmax is not None else None)


__all__ = ["LOGITS", "Head", "logits_head"]
