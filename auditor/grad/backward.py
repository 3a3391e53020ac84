"""Reverse-mode differentiation of an ONNX graph into plain ONNX ops.

Forward nodes are kept untouched; the backward nodes are appended after them, so onnxruntime
computes the forward outputs, the objective and the input gradient in one ``session.run``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import onnx
from onnx import TensorProto, helper

from auditor.errors import AuditorError
from auditor.model.fold import node_inputs as _node_inputs

from . import (ops_conv, ops_elementwise, ops_matmul, ops_norm, ops_pool, ops_quant,  # noqa: F401
               ops_reduce, ops_tensor)  # (they register the rules)
from .builder import GraphBuilder, NotDifferentiable, default_opset
from .canon import upgrade_opset, with_shapes
from .registry import FOLDED, PIECEWISE_CONSTANT, RULES, STRAIGHT_THROUGH, GradNode

FLOAT_TYPES = {TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16}
DEFAULT_DOMAINS = ("", "ai.onnx")


def _topological(graph: onnx.GraphProto) -> list[tuple[int, onnx.NodeProto]]:
    """Nodes in a topological order (graph order when it already is one)."""
    produced = {o: i for i, n in enumerate(graph.node) for o in n.output if o}
    nodes = list(graph.node)
    state = [0] * len(nodes)
    order: list[int] = []
    for start in range(len(nodes)):
        if state[start]:
            continue
        stack = [(start, iter(_node_inputs(nodes[start])))]
        state[start] = 1
        while stack:
            idx, it = stack[-1]
            for name in it:
                j = produced.get(name)
                if j is not None and state[j] == 0:
                    state[j] = 1
                    stack.append((j, iter(_node_inputs(nodes[j]))))
                    break
            else:
                stack.pop()
                state[idx] = 2
                order.append(idx)
    return [(i, nodes[i]) for i in order]


def node_label(index: int, node: onnx.NodeProto) -> str:
    return node.name or f"{node.op_type}_{index}"


@dataclass
class _Plan:
    order: list[tuple[int, onnx.NodeProto]]
    dependent: set[str]  # floating tensors that depend on the sources
    active: list[tuple[int, onnx.NodeProto]]  # nodes a gradient flows through, topological


def _plan(graph: onnx.GraphProto, dtypes: dict[str, int], sources: set[str],
          targets: list[str]) -> _Plan:
    order = _topological(graph)
    dep = set(sources)
    for _, node in order:
        if any(i in dep for i in _node_inputs(node)):
            for o in node.output:
                if o and (dtypes.get(o, TensorProto.FLOAT) in FLOAT_TYPES or node.op_type in STRAIGHT_THROUGH):
                    dep.add(o)
    flowing = {t for t in targets if t in dep}
    active = []
    for item in reversed(order):
        node = item[1]
        if any(o in flowing for o in node.output):
            active.append(item)
            flowing.update(i for i in _node_inputs(node) if i in dep)
    active.reverse()
    return _Plan(order, dep, active)


def _blocking_reason(node: onnx.NodeProto) -> str | None:
    """Reason why ``node`` cannot be differentiated before even trying its rule."""
    if node.domain not in DEFAULT_DOMAINS:
        return f"no gradient rule for op {node.domain}::{node.op_type}"
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
           for a in node.attribute):
        return f"control flow ({node.op_type}) is not differentiated"
    if node.op_type in PIECEWISE_CONSTANT:
        return f"{node.op_type} is piecewise constant (zero gradient almost everywhere)"
    if node.op_type not in RULES:
        return f"no gradient rule for op {node.op_type}"
    return None


def _run_rule(b: GraphBuilder, label: str, node: onnx.NodeProto, dys: list,
              dep: set[str]) -> list:
    needs = [bool(i) and i in dep for i in node.input]
    reason = _blocking_reason(node)
    if reason is not None:
        raise NotDifferentiable(reason)
    dxs = RULES[node.op_type](b, GradNode(node, label, dys, needs))
    out = []
    for i, need in enumerate(needs):
        dx = dxs[i] if i < len(dxs) else None
        if need and dx is None:
            raise NotDifferentiable(f"no gradient for input {i} ({node.input[i]!r})")
        out.append(dx if need and dx is not FOLDED else None)
    return out


KNOB_DOC = "auditor objective knob"  # see auditor.grad.objectives


def _single_input(graph: onnx.GraphProto) -> str:
    inits = {t.name for t in graph.initializer}
    real = [i.name for i in graph.input if i.name not in inits and i.doc_string != KNOB_DOC]
    if len(real) != 1:
        raise AuditorError(
            f"the model has {len(real)} non-initializer inputs ({', '.join(real) or 'none'}); "
            "name the one to differentiate with wrt=")
    return real[0]


def add_input_gradient(model: onnx.ModelProto, objective: str, wrt: str | None = None,
                       grad_name: str = "grad_input", in_place: bool = False,
                       values: onnx.ModelProto | None = None) -> onnx.ModelProto:
    """A new model with all outputs of ``model`` plus ``grad_name`` = d(sum(objective))/d(wrt).

    ``objective`` is the name of a tensor of the model (normally a per-sample objective of shape
    (N,), so that the gradient of its sum gives every sample its own gradient).  ``wrt`` defaults
    to the model's single non-initializer input (not counting the knob inputs that
    :func:`auditor.grad.objectives.append_objective` adds).  Nodes that the gradient does not flow
    through need no rule; a node it does flow through without a rule raises AuditorError naming it.
    Models below opset 13 are upgraded first (the returned model is at the upgraded opset).
    ``in_place``: the result is ``model`` itself, extended (for a caller's own intermediate model:
    no copy of a large model's weights).  ``values``: a model whose initializers hold the data of
    those ``model`` has without it (``model`` a copy without its large weights' data,
    :meth:`~auditor.runtime.engine.SharedWeights.light`: the rules read the weights they fold from
    ``values``, and the result is as light as ``model``).
    """
    base = upgrade_opset(model, copy=False)  # read only until the backward is built
    inferred = with_shapes(base)
    graph = base.graph
    if wrt is None:
        wrt = _single_input(graph)
    b = GraphBuilder(inferred, source=base if values is None else [values, base])
    known = b.is_taken
    if not known(wrt):
        raise AuditorError(f"no tensor named {wrt!r} in the model (wrt)")
    if not known(objective):
        raise AuditorError(f"no tensor named {objective!r} in the model (objective)")
    if known(grad_name):
        raise AuditorError(f"the model already has a tensor named {grad_name!r}")
    b.reserve(grad_name)
    if b.dtypes.get(wrt) not in FLOAT_TYPES:
        raise AuditorError(f"cannot differentiate w.r.t. {wrt!r}: not a floating-point tensor")

    plan = _plan(graph, b.dtypes, {wrt}, [objective])
    grads: dict[str, list[str]] = defaultdict(list)
    if objective in plan.dependent:
        grads[objective].append(b.ones_like(objective))
    for index, node in reversed(plan.active):
        label = node_label(index, node)
        dys = [b.accumulate(grads.pop(o)) if grads.get(o) else None for o in node.output]
        if all(d is None for d in dys):
            continue
        try:
            dxs = _run_rule(b, label, node, dys, plan.dependent)
        except NotDifferentiable as e:
            raise AuditorError(f"cannot differentiate through {node.op_type} node {label!r}: {e}",
                               where="gradient") from None
        for name, dx in zip(node.input, dxs):
            if dx is not None:
                grads[name].append(dx)
    if grads.get(wrt):
        total = b.accumulate(grads[wrt])
    else:
        total = b.zeros_like(wrt)
    b.nodes.append(helper.make_node("Identity", [total], [grad_name], name=b.fresh("grad_out")))

    out = base
    if base is model and not in_place:  # (an upgraded model is a new one already)
        out = onnx.ModelProto()
        out.CopyFrom(base)
    nodes = _live(b.nodes, grad_name)
    out.graph.node.extend(nodes)
    used = {i for node in nodes for i in node.input}
    out.graph.initializer.extend(t for t in b.initializers if t.name in used)
    wshape = b.static_shape(wrt)
    out.graph.output.append(helper.make_tensor_value_info(
        grad_name, b.dtypes[wrt], list(wshape) if wshape is not None else None))
    return out


def _live(nodes: list[onnx.NodeProto], output: str) -> list[onnx.NodeProto]:
    """The backward nodes that ``output`` depends on (rules may build helpers they end up not
    using; onnxruntime would still run them)."""
    needed = {output}
    keep = []
    for node in reversed(nodes):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(_node_inputs(node))
    keep.reverse()
    return keep


def differentiability(model: onnx.ModelProto) -> list[tuple[str, str, str]]:
    """Nodes that block the gradient from the model's outputs to its floating-point inputs.

    Returns ``(node_name, op_type, reason)`` for every node on a path input -> output whose
    gradient cannot be built; an empty list means the model is fully differentiable.
    Unnamed nodes are called ``<op_type>_<index>``.  A model whose opset cannot be upgraded to
    13 is reported as one entry ``("(model)", "opset <n>", reason)``.
    """
    try:
        base = upgrade_opset(model, copy=False)
    except AuditorError as e:
        return [("(model)", f"opset {default_opset(model)}", str(e))]
    inferred = with_shapes(base)
    graph = base.graph
    inits = {t.name for t in graph.initializer}
    b = GraphBuilder(inferred, source=base)
    sources = {i.name for i in graph.input
               if i.name not in inits and b.dtypes.get(i.name) in FLOAT_TYPES}
    targets = [o.name for o in graph.output]
    plan = _plan(graph, b.dtypes, sources, targets)
    blocking = []
    for index, node in plan.active:
        label = node_label(index, node)
        dys = [b.fresh("dy") if o in plan.dependent else None for o in node.output]
        try:
            _run_rule(b, label, node, dys, plan.dependent)
        except NotDifferentiable as e:
            blocking.append((label, node.op_type, str(e)))
        except Exception as e:  # a rule tripping over an unusual node: still a blocker
            blocking.append((label, node.op_type, f"gradient rule failed: {e}"))
    return blocking


__all__ = ["add_input_gradient", "differentiability"]
