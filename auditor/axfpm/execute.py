"""Run an ONNX model with selected Conv / Gemm / MatMul nodes on the Ax-FPM kernels.

:class:`ApproxModel` partitions the graph (in topological order) into runs of ordinary nodes, each
executed by one onnxruntime ``InferenceSession`` built once from the node slice, and the
approximated nodes, executed by :mod:`auditor.axfpm.kernels`.

Node names: a node is identified by its ``name``; an unnamed node gets ``f"{op_type}_{index}"``
(``index`` = position in ``graph.node``), and a name that an earlier node holds gets ``f"_{index}"``
appended, so every node has a unique deterministic name (the project's one rule,
:func:`auditor.model.names.node_names`; :attr:`ApproxModel.node_names`).

Operands: the weight (and bias) of an approximated node must be a graph initializer or the output of
a Constant node; the weight is the multiplier's operand ``b``, the other (data) input the
activation, operand ``a``.  For Gemm / MatMul whichever of A / B is constant is the weight (if both
are, A is treated as the activation).

Runtime: sub-sessions are created once (a session with extra outputs is built and cached the first
time :meth:`ApproxModel.run` is asked for an intermediate tensor inside a segment); onnxruntime's
idle workers are told not to spin, since the numba kernels run between its calls; tensors are
dropped as soon as no later step reads them.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Iterable, Mapping

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

from ..errors import AuditorError
from ..runtime.engine import make_session
from ..model.load import constant_node_value
from ..model.names import node_names as assign_node_names
from . import finish_gemm, matmul
from .kernels import (
    ConvWeight,
    OperandFields,
    conv2d_prepared,
    matmul2d_f64,
    prepare_conv_weight,
    prepare_operand,
)
from .multiplier import variant_code

APPROX_OPS = ("Conv", "Gemm", "MatMul")
DEFAULT_APPROX_OPS = ("Conv", "Gemm")
MIN_OPSET = 11


def _subgraph_inputs(graph: onnx.GraphProto) -> set[str]:
    """Outer-scope names a subgraph (If/Loop/Scan body) reads."""
    local = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    used: set[str] = set()
    for node in graph.node:
        used |= _node_inputs(node)
        local |= set(node.output)
    return used - local


def _node_inputs(node: onnx.NodeProto) -> set[str]:
    names = {n for n in node.input if n}
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            names |= _subgraph_inputs(attr.g)
        elif attr.type == onnx.AttributeProto.GRAPHS:
            for g in attr.graphs:
                names |= _subgraph_inputs(g)
    return names


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


@dataclass
class _OrtSegment:
    nodes: list[int]  # indices into graph.node, topological order
    inputs: list[str] = field(default_factory=list)  # runtime inputs (not initializers)
    outputs: list[str] = field(default_factory=list)
    session: ort.InferenceSession | None = None
    reads: set[str] = field(default_factory=set)  # every tensor any node of the segment reads


@dataclass
class _ApproxStep:
    node: int
    name: str
    op_type: str
    activation: str  # input tensor name of the activation
    output: str
    # Conv
    conv_weight: ConvWeight | None = None
    conv_attrs: dict = field(default_factory=dict)
    # Gemm / MatMul
    weight: np.ndarray | None = None  # float32, Gemm: op(B) (K, N) or op(A) (M, K)
    weight_fields: OperandFields | None = None
    act_is_a: bool = True
    trans_act: bool = False
    bias: np.ndarray | None = None
    alpha: float = 1.0
    beta: float = 1.0

    @property
    def inputs(self) -> list[str]:
        return [self.activation]

    @property
    def outputs(self) -> list[str]:
        return [self.output]


class ApproxModel:
    """An ONNX model whose chosen Conv/Gemm/MatMul nodes run on the Ax-FPM kernels.

    Parameters
    ----------
    model:
        the ``onnx.ModelProto`` (opset >= 11; dynamic batch is fine).
    approx_nodes:
        names (see :attr:`node_names`) of the Conv / Gemm / MatMul nodes to approximate; ``None``
        means every Conv and Gemm node.  An empty set runs the model entirely in onnxruntime.
    variant:
        one of :data:`auditor.axfpm.MULTIPLIERS`.
    intra_op_threads:
        onnxruntime intra-op threads per sub-session (``None``: onnxruntime's default).
    """

    def __init__(self, model: onnx.ModelProto, approx_nodes: Iterable[str] | None = None,
                 variant: str = "da-reference", *, intra_op_threads: int | None = None):
        if not isinstance(model, onnx.ModelProto):
            raise AuditorError(f"ApproxModel needs an onnx.ModelProto, got {type(model).__name__}")
        self.variant = variant
        self._code = variant_code(variant)
        self._model = model
        self._threads = intra_op_threads
        graph = model.graph
        opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
        if opset is None or opset < MIN_OPSET:
            raise AuditorError(f"model opset {opset} is not supported (need >= {MIN_OPSET})")

        #: index -> assigned node name
        self.node_names: list[str] = assign_node_names(graph)
        #: assigned node name -> index
        self.node_index: dict[str, int] = {n: i for i, n in enumerate(self.node_names)}

        self._initializers = {t.name: t for t in graph.initializer}
        self._constants: dict[str, np.ndarray] = {}  # Constant-node outputs
        for node in graph.node:
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and node.output:
                value = constant_node_value(node)
                if value is not None:
                    self._constants[node.output[0]] = value
        self._inputs = [i for i in graph.input if i.name not in self._initializers]
        self.input_names = [i.name for i in self._inputs]
        self.output_names = [o.name for o in graph.output]
        self._types = self._infer_types(model)

        if approx_nodes is None:
            chosen = {i for i, n in enumerate(graph.node) if n.op_type in DEFAULT_APPROX_OPS}
        else:
            if isinstance(approx_nodes, str):
                approx_nodes = [approx_nodes]
            chosen = set()
            for name in approx_nodes:
                if name not in self.node_index:
                    raise AuditorError(f"no node named {name!r} in the model")
                idx = self.node_index[name]
                op = graph.node[idx].op_type
                if op not in APPROX_OPS:
                    raise AuditorError(
                        f"node {name!r} is a {op}; only {', '.join(APPROX_OPS)} can be approximated"
                    )
                chosen.add(idx)
        #: names of the approximated nodes, in graph order
        self.approx_nodes: tuple[str, ...] = tuple(self.node_names[i] for i in sorted(chosen))

        order = self._topological_order()
        self._steps: list[_OrtSegment | _ApproxStep] = []
        current: list[int] = []
        for idx in order:
            if idx in chosen:
                if current:
                    self._steps.append(_OrtSegment(current))
                    current = []
                self._steps.append(self._make_approx_step(idx))
            else:
                current.append(idx)
        if current:
            self._steps.append(_OrtSegment(current))
        self._extra_sessions: dict[tuple[int, frozenset], tuple] = {}
        self._wire()

    # ------------------------------------------------------------------------------------------
    # construction helpers
    # ------------------------------------------------------------------------------------------

    def _infer_types(self, model: onnx.ModelProto) -> dict[str, int]:
        types: dict[str, int] = {}
        try:
            inferred = onnx.shape_inference.infer_shapes(model)
            infos = list(inferred.graph.value_info)
        except Exception:  # shape inference is best effort; types default to float32
            infos = []
        for vi in list(model.graph.input) + list(model.graph.output) + infos:
            t = vi.type.tensor_type.elem_type if vi.type.HasField("tensor_type") else 0
            if t:
                types[vi.name] = t
        for name, t in self._initializers.items():
            types[name] = t.data_type
        return types

    def _topological_order(self) -> list[int]:
        nodes = self._model.graph.node
        producer: dict[str, int] = {}
        for i, node in enumerate(nodes):
            for out in node.output:
                if out:
                    producer[out] = i
        deps = []
        users: list[list[int]] = [[] for _ in nodes]
        for i, node in enumerate(nodes):
            d = {producer[n] for n in _node_inputs(node) if n in producer and producer[n] != i}
            deps.append(len(d))
            for j in d:
                users[j].append(i)
        heap = [i for i, d in enumerate(deps) if d == 0]
        heapq.heapify(heap)
        order = []
        while heap:
            i = heapq.heappop(heap)
            order.append(i)
            for u in users[i]:
                deps[u] -= 1
                if deps[u] == 0:
                    heapq.heappush(heap, u)
        if len(order) != len(nodes):
            raise AuditorError("the model graph has a cycle")
        return order

    def _const(self, tensor: str, node_name: str, what: str) -> np.ndarray:
        if tensor in self._initializers:
            return numpy_helper.to_array(self._initializers[tensor])
        if tensor in self._constants:
            return self._constants[tensor]
        raise AuditorError(
            f"{what} {tensor!r} must be an initializer or a Constant node output to approximate it",
            where=f"node {node_name}",
        )

    def _float_weight(self, tensor: str, node_name: str, what: str) -> np.ndarray:
        value = self._const(tensor, node_name, what)
        if value.dtype != np.float32:
            raise AuditorError(f"{what} {tensor!r} is {value.dtype}, only float32 can be approximated",
                               where=f"node {node_name}")
        return value

    def _make_approx_step(self, idx: int) -> _ApproxStep:
        node = self._model.graph.node[idx]
        name = self.node_names[idx]
        op = node.op_type
        ins = list(node.input)
        attrs = _attrs(node)
        if op == "Conv":
            if len(ins) < 2:
                raise AuditorError("Conv needs an input and a weight", where=f"node {name}")
            w = self._float_weight(ins[1], name, "Conv weight")
            if w.ndim != 4:
                raise AuditorError(f"only 2-D Conv is supported (weight shape {w.shape})",
                                   where=f"node {name}")
            b = self._float_weight(ins[2], name, "Conv bias") if len(ins) > 2 and ins[2] else None
            ks = attrs.get("kernel_shape")
            if ks is not None and tuple(ks) != tuple(w.shape[2:]):
                raise AuditorError(f"kernel_shape {list(ks)} does not match weight {w.shape}",
                                   where=f"node {name}")
            try:
                cw = prepare_conv_weight(w, b, self.variant)
            except AuditorError as e:
                raise AuditorError(str(e), where=f"node {name}") from None
            return _ApproxStep(idx, name, op, ins[0], node.output[0], conv_weight=cw,
                               conv_attrs=attrs)
        # Gemm / MatMul: the constant operand is the weight
        const = [n in self._initializers or n in self._constants for n in ins[:2]]
        if len(ins) < 2 or not any(const):
            raise AuditorError(
                f"{op} needs one operand that is an initializer or a Constant node output "
                f"(the weight) to approximate it; inputs {ins[:2]} are both computed",
                where=f"node {name}",
            )
        act_is_a = const[1]  # B constant -> A is the activation (also when both are constant)
        if op == "Gemm":
            trans_a, trans_b = bool(attrs.get("transA", 0)), bool(attrs.get("transB", 0))
            if act_is_a:
                wt = self._float_weight(ins[1], name, "Gemm weight B")
                wt = np.ascontiguousarray(wt.T if trans_b else wt)  # (K, N)
                trans_act = trans_a
            else:
                wt = self._float_weight(ins[0], name, "Gemm weight A")
                wt = np.ascontiguousarray(wt.T if trans_a else wt)  # (M, K)
                trans_act = trans_b
            if wt.ndim != 2:
                raise AuditorError(f"Gemm weight must be 2-D, got {wt.shape}", where=f"node {name}")
            bias = self._float_weight(ins[2], name, "Gemm bias C") if len(ins) > 2 and ins[2] \
                else None
            return _ApproxStep(idx, name, op, ins[0] if act_is_a else ins[1], node.output[0],
                               weight=wt, weight_fields=prepare_operand(wt, self._code, True),
                               act_is_a=act_is_a, trans_act=trans_act, bias=bias,
                               alpha=float(attrs.get("alpha", 1.0)),
                               beta=float(attrs.get("beta", 1.0)))
        # MatMul
        wt = self._float_weight(ins[1] if act_is_a else ins[0], name, "MatMul weight")
        fields = prepare_operand(wt, self._code, True) if (act_is_a and wt.ndim == 2) else None
        return _ApproxStep(idx, name, op, ins[0] if act_is_a else ins[1], node.output[0],
                           weight=np.ascontiguousarray(wt), weight_fields=fields,
                           act_is_a=act_is_a)

    def _wire(self) -> None:
        """Decide each ORT segment's outputs and build the default sessions."""
        graph = self._model.graph
        needed_after: set[str] = set(self.output_names)
        # walk backwards so each step knows what later steps need
        for step in reversed(self._steps):
            if isinstance(step, _ApproxStep):
                needed_after.discard(step.output)
                needed_after.add(step.activation)
                continue
            produced = {o for i in step.nodes for o in graph.node[i].output if o}
            step.outputs = [o for i in step.nodes for o in graph.node[i].output
                            if o and o in needed_after]
            consumed: set[str] = set()
            for i in step.nodes:
                consumed |= _node_inputs(graph.node[i])
            step.reads = consumed - produced
            # every tensor any node of the segment reads stays available, so that sessions with
            # extra (intermediate) outputs can be built later without re-wiring
            needed_after -= produced
            needed_after |= consumed - produced - set(self._initializers)
        for step in self._steps:  # a segment with no needed output runs only on request
            if isinstance(step, _OrtSegment) and step.outputs:
                step.session, step.inputs = self._session(step, step.outputs)
        # after which step each tensor can be dropped
        self._last_use: dict[str, int] = {}
        for k, step in enumerate(self._steps):
            reads = step.reads if isinstance(step, _OrtSegment) else {step.activation}
            for name in reads:
                self._last_use[name] = k
        self._producers: dict[str, int] = {}
        for k, step in enumerate(self._steps):
            if isinstance(step, _OrtSegment):
                for i in step.nodes:
                    for o in graph.node[i].output:
                        if o:
                            self._producers[o] = k
            else:
                self._producers[step.output] = k
        missing = needed_after - set(self.input_names) - set(self._initializers)
        if missing:
            raise AuditorError(f"the model reads undefined tensors: {', '.join(sorted(missing))}")

    def _value_info(self, name: str) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(name, self._types.get(name, onnx.TensorProto.FLOAT),
                                             None)

    def _session(self, seg: _OrtSegment, outputs: list[str]
                 ) -> tuple[ort.InferenceSession, list[str]]:
        """Session computing ``outputs`` from the segment's live nodes, and its input names."""
        graph = self._model.graph
        live = set(outputs)
        kept = []
        for i in reversed(seg.nodes):  # drop nodes that do not contribute to the outputs
            node = graph.node[i]
            if any(o in live for o in node.output):
                kept.append(i)
                live |= _node_inputs(node)
        nodes = []
        for i in reversed(kept):  # copies carrying the assigned (unique) names
            node = onnx.NodeProto()
            node.CopyFrom(graph.node[i])
            node.name = self.node_names[i]
            nodes.append(node)
        produced = {o for n in nodes for o in n.output if o}
        used: set[str] = set()
        for n in nodes:
            used |= _node_inputs(n)
        inputs = sorted(used - produced - set(self._initializers))
        inits = [self._initializers[n] for n in sorted(used) if n in self._initializers]
        sub = helper.make_graph(
            nodes, f"{graph.name or 'graph'}_part",
            [self._value_info(n) for n in inputs],
            [self._value_info(n) for n in outputs],
            initializer=inits,
        )
        sub_model = helper.make_model(sub, opset_imports=list(self._model.opset_import),
                                      ir_version=self._model.ir_version)
        sub_model.functions.extend(self._model.functions)
        # the numba kernels run between onnxruntime calls: idle ORT workers must not spin
        sess = make_session(sub_model, self._threads, spin=False, what="the model part")
        return sess, inputs

    # ------------------------------------------------------------------------------------------
    # execution
    # ------------------------------------------------------------------------------------------

    def _feeds(self, x) -> dict[str, np.ndarray]:
        if isinstance(x, Mapping):
            feeds = dict(x)
            unknown = set(feeds) - set(self.input_names)
            if unknown:
                raise AuditorError(f"unknown model input(s): {', '.join(sorted(unknown))}")
        else:
            if len(self.input_names) != 1:
                raise AuditorError(
                    f"the model has {len(self.input_names)} inputs "
                    f"({', '.join(self.input_names)}); pass a dict"
                )
            feeds = {self.input_names[0]: x}
        missing = set(self.input_names) - set(feeds)
        if missing:
            raise AuditorError(f"missing model input(s): {', '.join(sorted(missing))}")
        for name in list(feeds):
            dtype = helper.tensor_dtype_to_np_dtype(self._types.get(name, onnx.TensorProto.FLOAT))
            feeds[name] = np.ascontiguousarray(feeds[name], dtype=dtype)
        return feeds

    def _segment_session(self, k: int, seg: _OrtSegment, extra: frozenset):
        key = (k, extra)
        if key not in self._extra_sessions:
            outputs = seg.outputs + sorted(extra)
            sess, inputs = self._session(seg, outputs)
            self._extra_sessions[key] = (outputs, sess, inputs)
        return self._extra_sessions[key]

    def run(self, x, outputs: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """Run the model on ``x`` (an array for a single-input model, or a dict name -> array).

        Returns a dict with every graph output plus the tensors named in ``outputs`` (any
        intermediate tensor of the graph).
        """
        if isinstance(outputs, str):
            outputs = [outputs]
        requested = list(dict.fromkeys(outputs)) if outputs is not None else []
        env = self._feeds(x)
        producers = self._producers
        extra_by_step: dict[int, set[str]] = {}
        for name in requested:
            if name in env or name in self.output_names:
                continue
            if name in self._initializers or name in self._constants:
                continue
            if name not in producers:
                raise AuditorError(f"no tensor named {name!r} is computed by the model")
            k = producers[name]
            step = self._steps[k]
            if isinstance(step, _OrtSegment) and name not in step.outputs:
                extra_by_step.setdefault(k, set()).add(name)
        keep = set(self.output_names) | set(requested)
        for k, step in enumerate(self._steps):
            if isinstance(step, _ApproxStep):
                env[step.output] = self._run_approx(step, env[step.activation])
            else:
                if k in extra_by_step:
                    names, sess, inputs = self._segment_session(k, step,
                                                                frozenset(extra_by_step[k]))
                elif step.outputs:
                    names, sess, inputs = step.outputs, step.session, step.inputs
                else:
                    continue
                feeds = {n: env[n] for n in inputs}
                try:
                    results = sess.run(names, feeds)
                except Exception as e:  # noqa: BLE001
                    raise AuditorError(f"onnxruntime failed: {e}") from None
                env.update(zip(names, results))
            for name in [n for n in env if n not in keep and self._last_use.get(n, -1) <= k]:
                del env[name]  # no later step reads it
        result = {}
        for name in self.output_names + requested:
            if name in env:
                result[name] = env[name]
            elif name in self._initializers:
                result[name] = numpy_helper.to_array(self._initializers[name])
            elif name in self._constants:
                result[name] = self._constants[name]
        return result

    def __call__(self, x) -> dict[str, np.ndarray]:
        return self.run(x)

    def _run_approx(self, step: _ApproxStep, act: np.ndarray) -> np.ndarray:
        where = f"node {step.name}"
        act = np.asarray(act)
        if act.dtype != np.float32:
            raise AuditorError(f"activation is {act.dtype}, only float32 can be approximated",
                               where=where)
        try:
            if step.op_type == "Conv":
                return self._run_conv(step, act)
            if step.op_type == "Gemm":
                if act.ndim != 2:
                    raise AuditorError(f"Gemm input must be 2-D, got {act.shape}")
                a = act.T if step.trans_act else act
                if step.act_is_a:
                    acc = matmul2d_f64(a, step.weight, self.variant, "a", step.weight_fields)
                else:
                    acc = matmul2d_f64(step.weight, a, self.variant, "b", step.weight_fields)
                return finish_gemm(acc, step.bias, step.alpha, step.beta)
            # MatMul
            if step.weight_fields is not None and act.ndim >= 1:
                w = step.weight
                if act.shape[-1] != w.shape[0]:
                    raise AuditorError(f"MatMul shapes do not match: {act.shape} x {w.shape}")
                if act.ndim == 1:
                    return matmul(act, w, self.variant)
                acc = matmul2d_f64(act.reshape(-1, w.shape[0]), w, self.variant, "a",
                                   step.weight_fields)
                return acc.reshape(act.shape[:-1] + (w.shape[1],)).astype(np.float32)
            if step.act_is_a:
                return matmul(act, step.weight, self.variant, activation="a")
            return matmul(step.weight, act, self.variant, activation="b")
        except AuditorError as e:
            if e.where:
                raise
            raise AuditorError(str(e), where=where) from None

    def _run_conv(self, step: _ApproxStep, x: np.ndarray) -> np.ndarray:
        attrs = step.conv_attrs
        if x.ndim != 4:
            raise AuditorError(f"Conv input must be 4-D NCHW, got shape {x.shape}")
        kh, kw = step.conv_weight.shape[2:]
        strides = tuple(attrs.get("strides", (1, 1)))
        dil = tuple(attrs.get("dilations", (1, 1)))
        auto_pad = attrs.get("auto_pad", b"NOTSET")
        auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad)
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            pads_b, pads_e = [], []
            for size, s, d, k in zip(x.shape[2:], strides, dil, (kh, kw)):
                out = -(-size // s)
                total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
                small, big = total // 2, total - total // 2
                pads_b.append(small if auto_pad == "SAME_UPPER" else big)
                pads_e.append(big if auto_pad == "SAME_UPPER" else small)
            pads = (pads_b[0], pads_b[1], pads_e[0], pads_e[1])
        elif auto_pad == "VALID":
            pads = (0, 0, 0, 0)
        else:
            pads = tuple(attrs.get("pads", (0, 0, 0, 0)))
        return conv2d_prepared(x, step.conv_weight, strides, pads, dil,
                               int(attrs.get("group", 1)))
