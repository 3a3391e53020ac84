"""The naming of everything in a model's graph: node names, fresh tensor names, the tool's namespace.

The one place where names are made:

* :func:`node_names` / :func:`name_nodes` — every node gets a unique, deterministic name when the
  model is loaded (and wherever a graph that did not come through the loader is run): a node keeps
  its own name if no earlier node holds it; an unnamed node is ``<op_type>_<index>`` and a repeated
  name ``<name>_<index>`` (``index`` = position in ``graph.node``), with ``_`` appended until the
  name is free.  Layer names in reports, profiles (``approx.layers``, ``reshaping.*.layers``) and
  the cost models all follow this rule.
* :class:`Names` — fresh tensor and node names for a graph rewrite: ``hint``, then ``hint_1``,
  ``hint_2``, ... until one is not taken.
* the tool's namespace: knobs of the attack objectives, the objective and gradient outputs, the
  preprocessing nodes, the logits head, BPDA feeds, quantisers and defence thresholds are all named
  ``auditor::<name>`` (:func:`ns`), so a model whose own tensors are called ``c``, ``target``,
  ``beta``, ``x_raw`` or ``grad_input`` loads and is attacked like any other.  A model that already
  uses a fixed name of this namespace is refused with the name (:func:`check_free`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:  # onnx is imported by those who build graphs (validate does not need it)
    import onnx

from ..errors import AuditorError

NS = "auditor::"


def ns(name: str) -> str:
    """``name`` in the tool's namespace (``auditor::name``)."""
    return name if name.startswith(NS) else NS + name


def node_names(graph: onnx.GraphProto) -> list[str]:
    """The unique name of each node of ``graph`` (index -> name), by the rule of the module doc."""
    first: dict[str, int] = {}
    for i, node in enumerate(graph.node):
        if node.name:
            first.setdefault(node.name, i)
    taken = set(first)
    out = []
    for i, node in enumerate(graph.node):
        if node.name and first[node.name] == i:
            out.append(node.name)
            continue
        name = f"{node.name}_{i}" if node.name else f"{node.op_type}_{i}"
        while name in taken:
            name += "_"
        taken.add(name)
        out.append(name)
    return out


def name_nodes(graph: onnx.GraphProto) -> None:
    """Give every node of ``graph`` its :func:`node_names` name (in place)."""
    for node, name in zip(graph.node, node_names(graph)):
        node.name = name


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


class Names:
    """Fresh names against the names a graph already uses (``Names.of(model)``) or a given set."""

    def __init__(self, taken: Iterable[str] = ()):
        self.taken = set(taken)

    @classmethod
    def of(cls, model: onnx.ModelProto) -> Names:
        return cls(graph_names(model))

    def fresh(self, hint: str) -> str:
        """``hint`` if it is free, else the first free ``hint_<k>`` (k = 1, 2, ...); then taken."""
        name, k = hint, 0
        while name in self.taken:
            k += 1
            name = f"{hint}_{k}"
        self.taken.add(name)
        return name


def check_free(names: set[str], name: str) -> str:
    """``name`` if the model does not use it, else an AuditorError naming it."""
    if name in names:
        raise AuditorError(f"the model has a tensor named {name!r}, which is reserved for the tool's own "
                           f"graph additions (names starting with {NS!r})")
    return name


__all__ = ["NS", "ns", "node_names", "name_nodes", "graph_names", "Names", "check_free"]
