"""Constant and shape folding at load time.

Exporters compute many tensors that depend only on constants and on the *shapes* of the data:
``x.reshape(x.shape[0], -1)`` (Shape -> Gather -> Unsqueeze -> Concat -> Reshape), pads and slice
bounds computed from a tensor's size, weights built by ops (ConstantOfShape in the models shipped
with the onnx package), shared initializers routed through Identity.  :func:`fold` evaluates every
such value once (onnxruntime, graph optimisations off) and replaces it by an initializer, so
strict shape inference, the compute-layer analysis, the gradient rules, the cost models and the
Ax-FPM executor all see one simplified graph.

The batch dimension stays dynamic.  When the model's batch is dynamic, shape-dependent values are
evaluated for two different batch sizes: a value that is the same for both is a constant; a
value that changes is batch-dependent and is left to the graph, except a Reshape target whose
entries track the batch size, which is rewritten with 0 (copy the input's batch dimension) or -1.

Not folded: non-deterministic ops (Random*), control flow, ops outside the default domain, and
DequantizeLinear (an int8 QDQ model keeps its quantised weights; :func:`auditor.model.load.constant_value`
dequantises them on lookup).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .interface import graph_inputs
from .names import Names
from ..runtime.engine import make_session

NOT_FOLDED = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
              "Bernoulli", "DequantizeLinear", "Constant"}
#: per-sample batch sizes used to tell batch-dependent values from constants
TRIAL_BATCHES = (2, 3)
#: initializers at least this large are hidden from shape inference (their values are not needed
#: to infer shapes, only their shapes)
_SKELETON_MIN = 4096


def fold(model: onnx.ModelProto, max_rounds: int = 8) -> bool:
    """Fold constant and shape-dependent subgraphs of ``model`` in place; True when it changed.

    ``model`` must list no initializer as a graph input (see ``modelio._drop_initializer_inputs``)."""
    changed = False
    for _ in range(max_rounds):
        if not _fold_once(model):
            break
        changed = True
    if _remove_dead(model.graph):
        changed = True
    return changed


# ---------------------------------------------------------------------------- analysis


def _batch_is_dynamic(model: onnx.ModelProto) -> bool:
    for vi in graph_inputs(model):
        dims = vi.type.tensor_type.shape.dim
        if dims and not (dims[0].HasField("dim_value") and dims[0].dim_value > 0):
            return True
    return False


def skeleton(model: onnx.ModelProto, batch: int | None = None) -> tuple[onnx.ModelProto, list]:
    """A light copy of ``model`` in which every large initializer is a typed graph input (for
    shape inference and the version converter, which read only their shapes: copying and
    serialising 100s of MB of weights dominates their time), and those initializers; with
    ``batch``, the data inputs' dynamic batch dimension set to it.  :func:`restore` undoes it."""
    m = onnx.ModelProto()
    for f in ("ir_version", "producer_name", "producer_version", "domain", "model_version", "doc_string"):
        setattr(m, f, getattr(model, f))
    m.opset_import.extend(model.opset_import)
    m.metadata_props.extend(model.metadata_props)
    m.functions.extend(model.functions)
    g, src = m.graph, model.graph
    g.name, g.doc_string = src.name, src.doc_string
    g.node.extend(src.node)
    g.input.extend(src.input)
    g.output.extend(src.output)
    g.value_info.extend(src.value_info)
    g.sparse_initializer.extend(src.sparse_initializer)
    big = []
    for t in src.initializer:
        if int(np.prod(t.dims)) >= _SKELETON_MIN:
            g.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
            big.append(t)
        else:
            g.initializer.append(t)
    if batch is not None:
        inits = {t.name for t in src.initializer}
        for vi in g.input:
            dims = vi.type.tensor_type.shape.dim
            if vi.name not in inits and dims and not (dims[0].HasField("dim_value") and dims[0].dim_value > 0):
                dims[0].Clear()
                dims[0].dim_value = batch
    return m, big


def restore(model: onnx.ModelProto, light: onnx.ModelProto, big: list) -> onnx.ModelProto:
    """``model`` (in place) made like ``light`` (its :func:`skeleton`, transformed: upgraded,
    shape-inferred) except for the large initializers ``big``, which stay where they are: protobuf
    containers copy what they receive, and these are 100s of MB."""
    names = {t.name for t in big}
    model.ir_version = light.ir_version
    del model.opset_import[:]
    model.opset_import.extend(light.opset_import)
    g, lg = model.graph, light.graph
    for field in ("node", "output", "value_info"):
        del getattr(g, field)[:]
        getattr(g, field).extend(getattr(lg, field))
    del g.input[:]
    g.input.extend(vi for vi in lg.input if vi.name not in names)
    for i in reversed([i for i, t in enumerate(g.initializer) if t.name not in names]):
        del g.initializer[i]
    g.initializer.extend(lg.initializer)
    return model


def _static_shapes(model: onnx.ModelProto, batch: int | None) -> dict[str, tuple[int, ...]]:
    """Fully static shapes of the model's tensors with the batch fixed to ``batch``."""
    sk, _ = skeleton(model, batch)
    inferred = None
    for kw in ({"data_prop": True}, {}):
        try:
            inferred = onnx.shape_inference.infer_shapes(sk, **kw)
            break
        except Exception:
            continue
    if inferred is None:
        inferred = sk
    out = {}
    g = inferred.graph
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        tt = vi.type.tensor_type
        if not vi.type.HasField("tensor_type") or not tt.HasField("shape"):
            continue
        dims = tt.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            out[vi.name] = tuple(int(d.dim_value) for d in dims)
    for t in model.graph.initializer:
        out[t.name] = tuple(int(d) for d in t.dims)
    return out


def _has_subgraph(node: onnx.NodeProto) -> bool:
    return any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute)


def _shape_node_value(node: onnx.NodeProto, shape: tuple[int, ...]) -> np.ndarray:
    if node.op_type == "Size":
        return np.array(int(np.prod(shape)), dtype=np.int64)
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    r = len(shape)
    start = int(attrs.get("start", 0))
    end = attrs.get("end")
    start = min(max(start + r if start < 0 else start, 0), r)
    end = r if end is None else int(end)
    end = min(max(end + r if end < 0 else end, 0), r)
    return np.array(shape[start:end], dtype=np.int64)


# ---------------------------------------------------------------------------- one round


def _fold_once(model: onnx.ModelProto) -> bool:
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    const_nodes = {n.output[0]: n for n in g.node if n.op_type == "Constant" and n.output
                   and n.domain in ("", "ai.onnx") and not _has_subgraph(n)}
    known = set(inits) | set(const_nodes)
    dynamic = _batch_is_dynamic(model)
    trials = TRIAL_BATCHES if dynamic else (None,)
    shape_nodes = [n for n in g.node if n.op_type in ("Shape", "Size") and n.domain in ("", "ai.onnx")]
    shapes = [_static_shapes(model, b) for b in trials] if shape_nodes else [{}]

    pure: list[onnx.NodeProto] = []  # depend on constants only
    derived: list[onnx.NodeProto] = []  # depend on some tensor's shape
    pure_out: set[str] = set()
    derived_out: set[str] = set()
    shape_values: dict[str, list[np.ndarray]] = {}
    for node in g.node:
        if node.domain not in ("", "ai.onnx") or node.op_type in NOT_FOLDED or _has_subgraph(node):
            continue
        ins = [i for i in node.input if i]
        if node.op_type in ("Shape", "Size"):
            if not ins:
                continue
            per = [s.get(ins[0]) for s in shapes]
            if any(p is None for p in per):
                continue
            shape_values[node.output[0]] = [_shape_node_value(node, p) for p in per]
            derived.append(node)
            derived_out.update(o for o in node.output if o)
            continue
        if not ins or not all(i in known or i in pure_out or i in derived_out for i in ins):
            continue
        if any(i in derived_out for i in ins):
            derived.append(node)
            derived_out.update(o for o in node.output if o)
        else:
            pure.append(node)
            pure_out.update(o for o in node.output if o)
    if not pure and not derived:
        return False

    graph_outputs = {o.name for o in g.output}
    folded = set(id(n) for n in pure) | set(id(n) for n in derived)
    consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for node in g.node:
        for k, i in enumerate(node.input):
            consumers.setdefault(i, []).append((node, k))
    # pure values needed outside the pure subgraph
    pure_ids = set(id(n) for n in pure)
    pure_frontier = sorted({o for n in pure for o in n.output if o and (
        o in graph_outputs or any(id(c) not in pure_ids for c, _ in consumers.get(o, [])))})
    values: dict[str, np.ndarray] = {}
    if pure_frontier:
        values.update(_evaluate(model, pure, pure_frontier, {}, inits, const_nodes))
    derived_values: list[dict[str, np.ndarray]] = []
    if derived:
        outs = sorted(derived_out)
        for t in range(len(trials)):
            fixed = {k: v[t] for k, v in shape_values.items()}
            derived_values.append(_evaluate(model, [n for n in derived if n.op_type not in ("Shape", "Size")],
                                            outs, dict(values, **fixed), inits, const_nodes))
    batch_dep = set()
    for o in derived_out:
        vs = [d[o] for d in derived_values]
        if all(v.shape == vs[0].shape and v.dtype == vs[0].dtype and np.array_equal(v, vs[0]) for v in vs):
            values[o] = vs[0]
        else:
            batch_dep.add(o)

    producer = {o: n for n in g.node for o in n.output if o}
    kept: set[int] = set()  # folded nodes that must stay (they compute a batch-dependent value)
    new_inits: dict[str, np.ndarray] = {}
    rewrites: list[tuple[onnx.NodeProto, int, str, np.ndarray]] = []

    def need(name: str, consumer: onnx.NodeProto | None, index: int) -> None:
        if name in values:
            new_inits[name] = values[name]
            return
        if name not in batch_dep:
            return
        if consumer is not None and consumer.op_type == "Reshape" and index == 1:
            fixed = _reshape_target(consumer, [d[name] for d in derived_values], trials, shapes)
            if fixed is not None:
                rewrites.append((consumer, index, name, fixed))
                return
        node = producer[name]
        if id(node) in kept:
            return
        kept.add(id(node))
        for k, i in enumerate(node.input):
            if i:
                need(i, node, k)

    for node in g.node:
        if id(node) in folded:
            continue
        for k, i in enumerate(node.input):
            if i in pure_out or i in derived_out:
                need(i, node, k)
    for o in graph_outputs:
        if o in pure_out or o in derived_out:
            kept.add(id(producer[o]))
            for k, i in enumerate(producer[o].input):
                if i:
                    need(i, producer[o], k)

    changed = False
    names = Names({t.name for t in g.initializer} | {o for n in g.node for o in n.output} | {i.name for i in g.input})
    for node, index, name, arr in rewrites:
        new = names.fresh(name + "__folded")
        new_inits[new] = arr
        node.input[index] = new
        changed = True
    keep_nodes = [n for n in g.node if id(n) not in folded or id(n) in kept]
    # outputs of kept folded nodes are produced by the graph: never also initializers
    produced = {o for n in keep_nodes for o in n.output if o}
    new_inits = {k: v for k, v in new_inits.items() if k not in produced}
    if len(keep_nodes) != len(g.node):
        changed = True
    if not changed and not new_inits:
        return False
    del g.node[:]
    g.node.extend(keep_nodes)
    for name, arr in new_inits.items():
        _add_initializer(g, name, arr)
    # value_info of tensors that became initializers would be stale duplicates
    init_names = {t.name for t in g.initializer}
    vis = [vi for vi in g.value_info if vi.name not in init_names]
    del g.value_info[:]
    g.value_info.extend(vis)
    _remove_dead(g)
    return True


def _add_initializer(g: onnx.GraphProto, name: str, arr: np.ndarray) -> None:
    """Append ``arr`` as initializer ``name``, filled in place (``append`` would copy the proto
    that ``numpy_helper.from_array`` built: seconds for a VGG-sized weight)."""
    arr = np.asarray(arr)
    if arr.dtype.kind not in "biuf" or arr.dtype.byteorder == ">":
        g.initializer.append(numpy_helper.from_array(np.array(arr, order="C"), name))
        return
    t = g.initializer.add()
    t.name = name
    t.data_type = helper.np_dtype_to_tensor_dtype(arr.dtype)
    t.dims.extend(arr.shape)
    t.raw_data = np.ascontiguousarray(arr).tobytes()


def _reshape_target(node: onnx.NodeProto, vals: list[np.ndarray], trials, shapes) -> np.ndarray | None:
    """A batch-independent Reshape target equivalent to ``vals`` (one per trial batch), or None."""
    if any(a.name == "allowzero" and a.i for a in node.attribute):
        return None
    v0 = vals[0]
    if v0.ndim != 1 or any(v.shape != v0.shape for v in vals):
        return None
    data_shapes = [s.get(node.input[0]) for s in shapes]
    out = v0.astype(np.int64).copy()
    differing = [i for i in range(len(v0)) if any(v[i] != v0[i] for v in vals)]
    for i in differing:
        if not all(int(v[i]) == b for v, b in zip(vals, trials)):
            return None
        if all(s is not None and len(s) > i and s[i] == b for s, b in zip(data_shapes, trials)):
            out[i] = 0  # copies the input's (batch) dimension
        elif len(differing) == 1 and not (v0 == -1).any():
            out[i] = -1
        else:
            return None
    return out


# ---------------------------------------------------------------------------- evaluation


def _evaluate(model: onnx.ModelProto, nodes: list[onnx.NodeProto], outputs: list[str],
              fixed: dict[str, np.ndarray], inits: dict[str, onnx.TensorProto],
              const_nodes: dict[str, onnx.NodeProto]) -> dict[str, np.ndarray]:
    """Values of ``outputs`` of the constant subgraph ``nodes`` (onnxruntime, no optimisation)."""
    produced = {o for n in nodes for o in n.output if o}
    needed = {i for n in nodes for i in n.input if i and i not in produced}
    want = [o for o in outputs if o not in fixed]
    if not want:
        return {o: fixed[o] for o in outputs}
    g = helper.make_graph([], "fold", [], [])
    for name in sorted(needed):
        if name in fixed:
            g.initializer.append(numpy_helper.from_array(np.array(fixed[name], order="C"), name))
        elif name in inits:
            g.initializer.append(inits[name])
        elif name in const_nodes:
            g.node.append(const_nodes[name])
    g.node.extend(nodes)
    for o in want:
        if o in produced:
            g.output.append(helper.make_empty_tensor_value_info(o))
    m = helper.make_model(g, opset_imports=list(model.opset_import))
    m.ir_version = max(model.ir_version, 4)
    sess = make_session(m, 1, optimize=False, what="the constant sub-graph")
    names = [o.name for o in g.output]
    res = dict(zip(names, sess.run(names, {})))
    res.update({o: fixed[o] for o in outputs if o in fixed})
    return res


# ---------------------------------------------------------------------------- clean-up


def node_inputs(node: onnx.NodeProto) -> list[str]:
    """Explicit inputs plus the outer-scope tensors that the node's subgraphs read."""
    names = [i for i in node.input if i]
    for a in node.attribute:
        graphs = [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)
        for sub in graphs:
            names += outer_refs(sub)
    return names


def outer_refs(graph: onnx.GraphProto) -> list[str]:
    """Tensors a (sub)graph reads from an enclosing scope."""
    local = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    refs = []
    for node in graph.node:
        for name in node_inputs(node):
            if name not in local:
                refs.append(name)
        local.update(node.output)
    return refs


def _remove_dead(g: onnx.GraphProto) -> bool:
    """Drop nodes whose outputs nothing uses and initializers nothing reads; True when it did."""
    needed = {o.name for o in g.output}
    keep = []
    for node in reversed(list(g.node)):
        if any(o in needed for o in node.output if o):
            keep.append(node)
            needed.update(node_inputs(node))
    keep.reverse()
    changed = len(keep) != len(g.node)
    if changed:
        del g.node[:]
        g.node.extend(keep)
    unused = [i for i, t in enumerate(g.initializer) if t.name not in needed]
    for i in reversed(unused):  # in place: re-adding would copy every (large) initializer
        del g.initializer[i]
    return changed or bool(unused)
