"""Instrumentation by graph rewrite: expose activations and compute-layer inputs as outputs.

``instrument(model)`` returns a new ModelProto with the original outputs first (logits unchanged)
followed by one extra output per probed tensor, so a single onnxruntime run yields the logits and
every tensor the density report and the cost models need.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx
from onnx import helper

from ..graph import TRANSPARENT_OPS, activation_tensors, compute_layers
from ..layers import ComputeLayer

#: ops through which an activation's values reach a compute layer's data input: the transparent
#: ops and average pooling (a gate such as the Mul of squeeze-excite or SiLU is not one of them)
DATA_PATH_OPS = TRANSPARENT_OPS + ("AveragePool", "GlobalAveragePool")

#: what the model-wide density counts, by ``density_tensors`` (the report states it)
DENSITY_RULES = {
    "activations": "outputs of activation ops that reach a compute layer's data input through data-path ops "
                   "(" + ", ".join(DATA_PATH_OPS) + "); gates (e.g. the Sigmoid of squeeze-excite or SiLU) are not "
                   "counted; a model with none counts the compute layers' data inputs",
    "layer_inputs": "the data inputs of the compute layers (Conv, ConvTranspose, Gemm, MatMul): what a "
                    "zero-skipping machine can skip",
}


@dataclass(frozen=True)
class Probes:
    """What an instrumented model exposes beyond its own outputs."""

    activations: tuple[str, ...]  # outputs of activation ops (Relu, Clip, ...)
    layer_inputs: tuple[str, ...]  # the distinct data inputs of the compute layers, in layer order
    layers: tuple[ComputeLayer, ...]
    #: the activations whose output reaches a compute layer's data input (see DENSITY_RULES)
    counted_activations: tuple[str, ...] = ()

    def counted(self, density_tensors: str = "activations") -> tuple[str, ...]:
        """The tensors the model-wide density counts (``density_tensors``: activations | layer_inputs)."""
        if density_tensors == "activations" and self.counted_activations:
            return self.counted_activations
        return self.layer_inputs

    @property
    def layer_tensors(self) -> tuple[str, ...]:
        """The data input of each compute layer, one entry per layer (a tensor that k layers
        read, as a ResNet block's first conv and its 1x1 downsample do, appears k times)."""
        return tuple(c.input for c in self.layers)

    @property
    def tensors(self) -> tuple[str, ...]:
        seen, out = set(), []
        for t in self.activations + self.layer_inputs:
            if t not in seen:
                seen.add(t)
                out.append(t)
        return tuple(out)


def density_rule(probes: Probes, density_tensors: str) -> str:
    """One sentence saying which tensors the model-wide density counts (for the report)."""
    if density_tensors == "activations" and not probes.counted_activations:
        return ("no activation output reaches a compute layer's data input, so the data inputs of the compute "
                "layers are counted: " + DENSITY_RULES["layer_inputs"])
    return DENSITY_RULES.get(density_tensors, DENSITY_RULES["layer_inputs"])


def reaching_activations(model: onnx.ModelProto, layers) -> tuple[str, ...]:
    """Activation outputs (graph order) that reach a compute layer's data input through
    :data:`DATA_PATH_OPS` (every input of a Concat, the first input of the others)."""
    acts = activation_tensors(model)
    is_act = set(acts)
    producer = {o: n for n in model.graph.node for o in n.output}
    found, seen = set(), set()
    stack = [layer.input for layer in layers]
    while stack:
        t = stack.pop()
        if t in seen:
            continue
        seen.add(t)
        if t in is_act:
            found.add(t)
            continue
        node = producer.get(t)
        if node is None or node.op_type not in DATA_PATH_OPS:
            continue
        stack.extend(i for i in (node.input if node.op_type == "Concat" else node.input[:1]) if i)
    return tuple(a for a in acts if a in found)


def probes_of(model: onnx.ModelProto) -> Probes:
    layers = compute_layers(model)
    return Probes(activations=tuple(activation_tensors(model)),
                  layer_inputs=tuple(dict.fromkeys(c.input for c in layers)), layers=tuple(layers),
                  counted_activations=reaching_activations(model, layers))


def add_outputs(model: onnx.ModelProto, tensors) -> onnx.ModelProto:
    """A copy of ``model`` with ``tensors`` appended to its graph outputs (existing ones kept)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    existing = {o.name for o in out.graph.output}
    types = {vi.name: vi.type.tensor_type.elem_type
             for vi in list(out.graph.input) + list(out.graph.value_info) + list(out.graph.output)}
    for t in tensors:
        if t in existing:
            continue
        existing.add(t)
        out.graph.output.append(helper.make_tensor_value_info(t, types.get(t, onnx.TensorProto.FLOAT), None))
    return out


def instrument(model: onnx.ModelProto) -> tuple[onnx.ModelProto, Probes]:
    probes = probes_of(model)
    return add_outputs(model, probes.tensors), probes
