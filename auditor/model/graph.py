"""Static analysis of a loaded model: tensor shapes, compute layers, activation tensors.

Used by ``auditor inspect`` (the layer table), by the instrumentation rewrite (which tensors to
expose) and by the cost models (the geometry of each compute layer).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from ..errors import AuditorError
from .layers import ComputeLayer
from .load import constant_shape, graph_inputs

COMPUTE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
#: ops whose output is an "activation" in the sense of the sparsity literature
ACTIVATION_OPS = ("Relu", "LeakyRelu", "PRelu", "Clip", "HardSwish", "HardSigmoid", "Sigmoid", "Tanh",
                  "Elu", "Selu", "Celu", "ThresholdedRelu", "Softplus", "Gelu", "Mish")
#: ops that move, select or re-order activation values without creating non-zeros from zeros;
#: a compute layer's data input is traced back through them to the activation that feeds it
TRANSPARENT_OPS = ("MaxPool", "GlobalMaxPool", "Flatten", "Reshape", "Squeeze", "Unsqueeze", "Transpose",
                   "Identity", "Dropout", "Pad", "Concat", "Slice", "Split", "Cast")


def tensor_shapes(model: onnx.ModelProto) -> dict[str, list[int | str]]:
    """Shapes of every typed tensor of a shape-inferred model (symbolic dims as strings)."""
    out = {}
    vis = list(model.graph.input) + list(model.graph.value_info) + list(model.graph.output)
    for vi in vis:
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.HasField("shape"):
            out[vi.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                            for d in vi.type.tensor_type.shape.dim]
    for init in model.graph.initializer:
        out[init.name] = list(init.dims)
    return out


def _per_sample(shape, name: str, node: onnx.NodeProto) -> tuple[int, ...]:
    if shape is None:
        raise AuditorError(f"shape of tensor '{name}' (node '{node.name}', {node.op_type}) could not be inferred")
    rest = shape[1:]
    if any(not isinstance(d, int) or d <= 0 for d in rest):
        raise AuditorError(f"tensor '{name}' (node '{node.name}', {node.op_type}) has a non-static shape "
                           f"{shape}; only the batch dimension may be dynamic")
    return tuple(int(d) for d in rest)


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def compute_layers(model: onnx.ModelProto) -> list[ComputeLayer]:
    """Every Conv/ConvTranspose/Gemm/MatMul node with a constant weight, in graph order."""
    shapes = tensor_shapes(model)
    layers = []
    for node in model.graph.node:
        if node.op_type not in COMPUTE_OPS:
            continue
        a = _attrs(node)
        if node.op_type in ("Conv", "ConvTranspose"):
            w = constant_shape(model, node.input[1])  # (the weights' shapes: their values are not read)
            if w is None:
                continue
            data = node.input[0]
            ishape = _per_sample(shapes.get(data), data, node)
            oshape = _per_sample(shapes.get(node.output[0]), node.output[0], node)
            if len(ishape) != 3:
                raise AuditorError(f"node '{node.name}' ({node.op_type}): only 2-D convolutions are supported, "
                                   f"input has shape {ishape}")
            kh, kw = int(w[2]), int(w[3])
            pads = a.get("pads", [0, 0, 0, 0])
            auto = a.get("auto_pad", b"NOTSET")
            auto = auto.decode() if isinstance(auto, bytes) else auto
            strides = tuple(a.get("strides", [1, 1]))
            dil = tuple(a.get("dilations", [1, 1]))
            if auto in ("SAME_UPPER", "SAME_LOWER") and node.op_type == "Conv":
                pads = _same_pads(ishape[1:], (kh, kw), strides, dil, auto)
            group = int(a.get("group", 1))
            if node.op_type == "Conv":
                macs = int(np.prod(oshape)) * (ishape[0] // group) * kh * kw
            else:  # every input element meets every kernel tap of its group's output channels
                macs = int(np.prod(ishape)) * (oshape[0] // group) * kh * kw
            layers.append(ComputeLayer(
                name=node.name, op_type=node.op_type, input=data, output=node.output[0],
                input_shape=ishape, output_shape=oshape, weight_shape=tuple(int(d) for d in w),
                kernel=(kh, kw), strides=(int(strides[0]), int(strides[1])),
                pads=(int(pads[0]), int(pads[1]), int(pads[2]), int(pads[3])),
                dilations=(int(dil[0]), int(dil[1])), group=group, macs=macs))
        else:
            wa, wb = constant_shape(model, node.input[0]), constant_shape(model, node.input[1])
            if node.op_type == "Gemm":
                if wb is None or wa is not None:
                    continue
                data = node.input[0]
                w = wb[::-1] if a.get("transB", 0) else wb
                if a.get("transA", 0):
                    raise AuditorError(f"node '{node.name}' (Gemm): transA=1 on the data input is not supported")
            else:
                if wb is not None and wa is None:
                    data, w = node.input[0], wb
                elif wa is not None and wb is None:
                    data, w = node.input[1], wa[::-1]
                else:
                    continue
            ishape = _per_sample(shapes.get(data), data, node)
            oshape = _per_sample(shapes.get(node.output[0]), node.output[0], node)
            if len(w) != 2:
                continue
            k, m = int(w[0]), int(w[1])
            rows = int(np.prod(ishape[:-1])) if len(ishape) > 1 else 1
            layers.append(ComputeLayer(
                name=node.name, op_type=node.op_type, input=data, output=node.output[0],
                input_shape=ishape, output_shape=oshape, weight_shape=(k, m), macs=rows * k * m))
    return layers


@dataclass(frozen=True)
class WeightOperand:
    """A compute node whose weight is an initializer, for the rewrites that replace weights."""

    index: int  # position in graph.node
    node: onnx.NodeProto
    data: int  # input index of the data (activation) operand
    weight: int  # input index of the weight operand
    initializer: onnx.TensorProto


def weight_initializers(model: onnx.ModelProto, ops=COMPUTE_OPS) -> list[WeightOperand]:
    """Every node of ``ops`` whose weight is an initializer, in graph order: the weight of a
    Conv/ConvTranspose is input 1; of a Gemm/MatMul, the initializer operand (B when only B is
    one, A when only A is one; none when both or neither are)."""
    inits = {t.name: t for t in model.graph.initializer}
    out = []
    for i, node in enumerate(model.graph.node):
        if node.op_type not in ops or len(node.input) < 2:
            continue
        if node.op_type in ("Conv", "ConvTranspose"):
            if node.input[1] in inits:
                out.append(WeightOperand(i, node, 0, 1, inits[node.input[1]]))
            continue
        for wi, di in ((1, 0), (0, 1)):
            if node.input[wi] in inits and node.input[di] not in inits:
                out.append(WeightOperand(i, node, di, wi, inits[node.input[wi]]))
                break
    return out


def skipped_compute_nodes(model: onnx.ModelProto) -> list[tuple[str, str, str]]:
    """``(node name, op type, reason)`` for every Conv/ConvTranspose/Gemm/MatMul node that
    :func:`compute_layers` does not count as a compute layer (its weight is not a constant, or
    both operands are), in graph order."""
    layers = {c.name for c in compute_layers(model)}
    producer = {o: n for n in model.graph.node for o in n.output}
    inputs = {i.name for i in graph_inputs(model)}

    def origin(t: str) -> str:
        if t in inputs:
            return f"'{t}' is a graph input"
        node = producer.get(t)
        return f"'{t}' is computed by {node.op_type} node '{node.name}'" if node is not None else f"'{t}' is unknown"

    out = []
    for node in model.graph.node:
        if node.op_type not in COMPUTE_OPS or node.name in layers:
            continue
        if node.op_type in ("Conv", "ConvTranspose"):
            reason = f"weight {origin(node.input[1])}, not a constant"
        else:
            a, b = (constant_shape(model, t) is not None for t in node.input[:2])
            if a and b:
                reason = "both operands are constants"
            elif not a and not b:
                reason = f"no constant weight: both operands are computed ({origin(node.input[1])})"
            elif node.op_type == "Gemm" and a:
                reason = "the constant is operand A; only B may be the weight"
            else:
                reason = "the weight is not a matrix"
        out.append((node.name, node.op_type, reason))
    return out


def _same_pads(spatial, kernel, strides, dil, mode):
    pads_begin, pads_end = [], []
    for size, k, s, d in zip(spatial, kernel, strides, dil):
        out = -(-size // s)
        total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
        small, big = total // 2, total - total // 2
        pads_begin.append(small if mode == "SAME_UPPER" else big)
        pads_end.append(big if mode == "SAME_UPPER" else small)
    return pads_begin + pads_end


def activation_tensors(model: onnx.ModelProto) -> list[str]:
    """Outputs of activation ops (Relu, LeakyRelu, Clip/ReLU6, ...), in graph order."""
    return [n.output[0] for n in model.graph.node if n.op_type in ACTIVATION_OPS]


def feeding_activation(model: onnx.ModelProto, tensor: str) -> str | None:
    """The activation output a compute layer's data input comes from, through transparent ops."""
    producer = {o: n for n in model.graph.node for o in n.output}
    acts = set(activation_tensors(model))
    seen = set()
    while tensor not in seen:
        seen.add(tensor)
        if tensor in acts:
            return tensor
        node = producer.get(tensor)
        if node is None or node.op_type not in TRANSPARENT_OPS:
            return None
        tensor = node.input[0]
    return None


@dataclass
class LayerRow:
    """One row of ``auditor inspect``'s layer table."""

    name: str
    op_type: str
    inputs: list[tuple[str, list]]
    outputs: list[tuple[str, list]]
    macs: int
    role: str  # "compute", "activation" or ""
    feeds_from: str | None  # for compute layers: the activation tensor feeding its data input
    data_input: str | None = None  # for compute layers: the data input tensor itself


def layer_table(model: onnx.ModelProto) -> list[LayerRow]:
    shapes = tensor_shapes(model)
    comp = {c.name: c for c in compute_layers(model)}
    inits = {i.name for i in model.graph.initializer}
    rows = []
    for node in model.graph.node:
        if node.op_type == "Constant":
            continue
        c = comp.get(node.name)
        role = "compute" if c else ("activation" if node.op_type in ACTIVATION_OPS else "")
        rows.append(LayerRow(
            name=node.name, op_type=node.op_type,
            inputs=[(i, shapes.get(i)) for i in node.input if i and i not in inits],
            outputs=[(o, shapes.get(o)) for o in node.output if o],
            macs=c.macs if c else 0, role=role,
            feeds_from=(feeding_activation(model, c.input) or
                        (c.input if c.input in {i.name for i in graph_inputs(model)} else None)) if c else None,
            data_input=c.input if c else None))
    return rows
