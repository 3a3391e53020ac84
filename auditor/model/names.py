"""The namespace of everything the tool adds to a model's graph.

Knobs of the attack objectives, the objective and gradient outputs, the preprocessing nodes, the
logits head, BPDA feeds and defence thresholds are all named ``auditor::<name>``, so a model
whose own tensors are called ``c``, ``target``, ``beta``, ``x_raw`` or ``grad_input`` loads and
is attacked like any other.  A model that already uses a name of this namespace is refused with
the name (see :func:`check_free`); the fresh-name helpers of the graph builders add a counter.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # onnx is imported by those who build graphs (validate does not need it)
    import onnx

from ..errors import AuditorError

NS = "auditor::"


def ns(name: str) -> str:
    """``name`` in the tool's namespace (``auditor::name``)."""
    return name if name.startswith(NS) else NS + name


def graph_names(model: onnx.ModelProto) -> set[str]:
    """Every tensor and node name of the main graph."""
    g = model.graph
    out = {vi.name for vi in list(g.input) + list(g.output) + list(g.value_info)}
    out |= {t.name for t in g.initializer}
    for node in g.node:
        out.update(node.output)
        out.update(node.input)
        out.add(node.name)
    out.discard("")
    return out


def check_free(names: set[str], name: str) -> str:
    """``name`` if the model does not use it, else an AuditorError naming it."""
    if name in names:
        raise AuditorError(f"the model has a tensor named {name!r}, which is reserved for the tool's own "
                           f"graph additions (names starting with {NS!r})")
    return name


__all__ = ["NS", "ns", "graph_names", "check_free"]
