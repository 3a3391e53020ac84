"""The table of gradient rules, one small function per ONNX op.

A rule receives the :class:`~auditor.grad.builder.GraphBuilder` and a :class:`GradNode` (the
forward node, the names of the gradients arriving at its outputs, and which of its inputs need a
gradient).  It emits backward nodes through the builder and returns, for every input, the name of
the gradient tensor (or None where the input needs none; :data:`FOLDED` where the gradient through that
input is already part of another input's, as in x * Sigmoid(x)).  A rule that cannot do its job raises
:class:`~auditor.grad.builder.NotDifferentiable` with the reason; it never returns a wrong or
silently-zero gradient.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import onnx
from onnx import helper

from .builder import GraphBuilder, NotDifferentiable

Rule = Callable[[GraphBuilder, "GradNode"], list]

RULES: dict[str, Rule] = {}

# Ops whose outputs have a zero (or undefined) derivative everywhere that matters: they are
# reported as blocking, with this reason, rather than silently passing zeros.
PIECEWISE_CONSTANT = {
    "Floor", "Ceil", "Round", "Sign", "DynamicQuantizeLinear", "BitShift", "Mod",
}
# Ops with an integer output through which the gradient still flows: the straight-through
# estimator of quantisation (see ops_quant).
STRAIGHT_THROUGH = {"QuantizeLinear"}


class _Folded:
    def __repr__(self) -> str:
        return "FOLDED"


#: returned by a rule for an input whose gradient contribution it has added to another input's
FOLDED = _Folded()


def rule(*op_types: str):
    """Register the decorated function as the gradient rule for ``op_types``."""

    def deco(fn: Rule) -> Rule:
        for t in op_types:
            if t in RULES:
                raise RuntimeError(f"duplicate gradient rule for {t}")
            RULES[t] = fn
        return fn

    return deco


@dataclass
class GradNode:
    node: onnx.NodeProto
    name: str  # the node's display name (node.name, or "<op_type>_<index>" when unnamed)
    dys: list  # gradient tensor name per output, None where no gradient arrives
    needs: list  # per input: does it need a gradient

    @property
    def op_type(self) -> str:
        return self.node.op_type

    def x(self, i: int = 0) -> str:
        return self.node.input[i] if i < len(self.node.input) else ""

    def y(self, k: int = 0) -> str:
        return self.node.output[k]

    @property
    def dy(self) -> str:
        if self.dys[0] is None:
            raise NotDifferentiable("no gradient reaches output 0")
        return self.dys[0]

    def need(self, i: int) -> bool:
        return i < len(self.needs) and self.needs[i]

    def attr(self, name: str, default=None):
        for a in self.node.attribute:
            if a.name == name:
                return helper.get_attribute_value(a)
        return default

    def text_attr(self, name: str, default: str) -> str:
        """A string attribute as text (onnx returns bytes)."""
        v = self.attr(name, default)
        return v.decode() if isinstance(v, bytes) else str(v)

    def only(self, *indices: int) -> None:
        """Refuse gradients for inputs other than ``indices``."""
        for i, n in enumerate(self.needs):
            if n and i not in indices:
                raise NotDifferentiable(
                    f"gradient w.r.t. input {i} ({self.node.input[i]!r}) of {self.op_type} "
                    "is not supported"
                )
