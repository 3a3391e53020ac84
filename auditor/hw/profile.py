"""Hardware profile YAML: which cost model, its parameters, and how the deployment reshapes the model.

The ``params:`` section is validated against the chosen cost model's ``Params`` dataclass, so a
typo'd key or a wrong type is reported as ``file:line:col: params.key: reason``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional

import yaml

from .. import schema
from ..axfpm.variants import MULTIPLIERS
from .base import COST_MODELS
from ..errors import AuditorError


@dataclass
class Reshape:
    """Model reshaping applied by the deployment (ONNX rewrites, seen by attacks and cost models)."""

    hashnet_ratio: Optional[float] = schema.field(None, doc="HashNet weight sharing: buckets per weight (e.g. 0.0625 = 1/16)",
                                                  source="Chen et al. 2015; Liu et al.")
    hashnet_layers: Optional[list[str]] = schema.field(None, doc="node names to hash (default: every Conv and Gemm/MatMul)")
    gradient_inhibition_tau: Optional[float] = schema.field(None, doc="gradient inhibition w <- w + tau*sign(w)", source="Liu et al.")
    gradient_inhibition_layers: Optional[list[str]] = schema.field(None, doc="node names (default: the last fully connected layer)")
    seed: int = schema.field(0, doc="seed of the HashNet hash functions")
    quantize_bits: Optional[int] = schema.field(
        None, doc="post-training symmetric k-bit quantisation of the Conv/Gemm/MatMul weights (no retraining; auditor/model/rewrite/quantize.py)",
        source="Guesmi et al. §7.1 (DQ weight-only / full)")
    quantize_activations: bool = schema.field(False, doc="also quantise the compute layers' data inputs (per tensor, "
                                                         "scale calibrated on the scenario's clean data; at most 8 bits)")
    quantize_per_channel: bool = schema.field(True, doc="weight scales per output channel (false: one per tensor)")

    def validate(self) -> None:
        if self.quantize_bits is not None and not 2 <= self.quantize_bits <= (8 if self.quantize_activations else 16):
            raise ValueError("quantize_bits must be in [2, 16] (weights only) or [2, 8] (with activations)")
        if self.hashnet_ratio is not None and not 0 < self.hashnet_ratio <= 1:
            raise ValueError("hashnet_ratio must be in (0, 1]")
        if self.gradient_inhibition_tau is not None and self.gradient_inhibition_tau < 0:
            raise ValueError("gradient_inhibition_tau must be >= 0")


@dataclass
class Approx:
    """Approximate multiplier used for the products of the compute layers (Defensive Approximation)."""

    multiplier: Literal[MULTIPLIERS] = schema.field(
        "da-reference", doc="multiplier variant: the authors' Ax-FPM implementation, a flat AMA5 array, exact, or bfloat16 "
        "(operands rounded to bfloat16, product in float32)", source="Guesmi et al.")
    layers: Optional[list[str]] = schema.field(None, doc="node names computed approximately (default: every Conv and Gemm)")


@dataclass
class HardwareProfile:
    """A hardware profile."""

    name: str = schema.field(doc="short name shown in reports")
    cost_model: str = schema.field(doc="cost model: " + ", ".join(COST_MODELS))
    description: str = schema.field("", doc="one line")
    params: Any = schema.field(None, doc="parameters of the cost model (see its Params)")
    reshape: Optional[Reshape] = schema.field(None, doc="model reshaping (HashNet, gradient inhibition)")
    approx: Optional[Approx] = schema.field(None, doc="approximate multiplier (Defensive Approximation)")

    path: str = dataclasses.field(default="", init=False, repr=False)

    def build_cost_model(self):
        return COST_MODELS.get(self.cost_model).from_profile(self)

    def to_dict(self) -> dict:
        d = schema.to_dict(self)
        d["params"] = schema.to_dict(self.params)
        return d


def load_profile(path: str | Path) -> HardwareProfile:
    node, file = schema.load_yaml(path)
    prof = schema.build(HardwareProfile, node, file)
    try:
        prof.cost_model = COST_MODELS.canonical(prof.cost_model)
    except AuditorError as e:
        raise AuditorError(f"cost_model: {e}", where=_loc(file, _child(node, "cost_model"))) from None
    params_cls = COST_MODELS.get(prof.cost_model).Params
    prof.params = schema.build(params_cls, _child(node, "params"), file, "params")
    prof.path = str(path)
    return prof


def _child(node, key: str):
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if getattr(k, "value", None) == key:
                return v
    return None


def _loc(file: str, node) -> str:
    if node is None:
        return file
    return f"{file}:{node.start_mark.line + 1}:{node.start_mark.column + 1}"
