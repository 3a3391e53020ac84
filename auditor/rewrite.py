"""Instrumentation by graph rewrite: expose activations and compute-layer inputs as outputs.

``instrument(model)`` returns a new ModelProto with the original outputs first (logits unchanged)
followed by one extra output per probed tensor, so a single onnxruntime run yields the logits and
every tensor the density report and the cost models need.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx
from onnx import helper

from .graph import activation_tensors, compute_layers
from .layers import ComputeLayer


@dataclass(frozen=True)
class Probes:
    """What an instrumented model exposes beyond its own outputs."""

    activations: tuple[str, ...]  # outputs of activation ops (Relu, Clip, ...)
    layer_inputs: tuple[str, ...]  # data inputs of the compute layers, in layer order
    layers: tuple[ComputeLayer, ...]

    @property
    def tensors(self) -> tuple[str, ...]:
        seen, out = set(), []
        for t in self.activations + self.layer_inputs:
            if t not in seen:
                seen.add(t)
                out.append(t)
        return tuple(out)


def probes_of(model: onnx.ModelProto) -> Probes:
    layers = compute_layers(model)
    return Probes(activations=tuple(activation_tensors(model)),
                  layer_inputs=tuple(dict.fromkeys(c.input for c in layers)), layers=tuple(layers))


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
