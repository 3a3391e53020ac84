"""Attack objectives as small ONNX subgraphs appended to a model.

:func:`append_objective` adds nodes that compute a per-sample objective of shape (N,) from the
model's logits and/or activations, and returns the new model, the objective's output name and
the *knobs* it added.  Knobs (target labels, weights, beta, kappa, coefficients) are real graph
inputs, not initializers, so one onnxruntime session serves every attack iteration whatever
their values.  Knob dtypes: labels/indices are int64, everything else has the logits' float
type.  Shapes in the returned dict use ``'N'`` for the batch dimension.

Objectives (value per sample ``n``; ``z`` = logits (N, C)):

* ``CrossEntropy(target_input)``: ``-log softmax(z)[t]``; knob ``t``: int64 labels (N,).
* ``CWMargin(kappa_input, label_input, targeted)``: Carlini-Wagner margin.  Untargeted (``t`` is
  the true label): ``max(z_t - max_{i!=t} z_i, -kappa)``; targeted (``t`` is the target):
  ``max(max_{i!=t} z_i - z_t, -kappa)``.  Attacks minimise it.  Knobs: ``t`` int64 (N,),
  ``kappa`` float scalar ().
* ``Logit(index_input)``: ``z_{idx}``; knob ``idx`` int64 (N,).
* ``Sparsity(tensors, f)``: the sparsity-attack surrogate
  ``-(1/k) * sum_l W_l * sum_n F(beta * a_{l,n})`` with ``F`` = tanh or sigmoid, summed over
  the elements of each listed activation ``a_l`` of the sample; ``k`` is the total element count
  of the listed tensors per sample.  Knobs: ``W`` float (L,), ``beta`` float scalar ().
  ``tensors`` has one entry per compute layer: a tensor that several layers read (a ResNet
  block's first conv and its 1x1 downsample, Inception branches) is listed once per layer, so
  it enters the sum once per layer that can skip its zeros (its F-sum weighted by the sum of
  those layers' W_l, its elements counted once per layer in ``k``); the subgraph computes its
  F-sum only once.
* ``ActivationL2(tensors)``: ``sum_l sum_n a_{l,n}^2`` (the *squared* L2 norm, summed over the
  listed tensors: smooth everywhere, unlike the norm itself at 0).  No knobs.
* ``WeightedSum([(coef, spec), ...])``: ``sum_i coef_i * spec_i``; a ``str`` coefficient is a
  float scalar knob of that name, a number is a constant.

Two terms may share a knob (e.g. one ``target`` for CE and CW) when they agree on its shape.

The objectives that :meth:`Classifier.value_and_grad` takes by name (``"ce"``, ``"margin"``,
``"logit"``, ``"sparsity"``, ``"act_l2"``) are the :data:`OBJECTIVES` registry: each entry builds
its specification for a model's compute layers and declares its knobs (keyword, shape, type), from
which :meth:`Objective.feeds` makes the graph feeds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper

from auditor.errors import AuditorError
from auditor.grad.builder import GraphBuilder, NotDifferentiable
from auditor.grad.canon import with_shapes
from auditor.model.names import ns
from auditor.registry import Registry

# The doc_string of knob graph inputs: add_input_gradient skips them when it picks the input
# to differentiate by default.
KNOB_DOC = "auditor objective knob"

# ---------------------------------------------------------------- specifications
#
# Each specification emits its own subgraph (``emit(em) -> name of the (N,) value``) through the
# :class:`_Emitter` of the model it is appended to.


@dataclass
class CrossEntropy:
    target_input: str = "target"

    def emit(self, em: _Emitter) -> str:
        b = em.b
        oh = em.onehot(em.label_knob(self.target_input))
        logp = b.op("LogSoftmax", [em.logits], axis=1)
        return b.op("Neg", [em.per_sample_sum(b.op("Mul", [logp, oh]))])


@dataclass
class CWMargin:
    kappa_input: str = "kappa"
    label_input: str = "target"
    targeted: bool = False

    def emit(self, em: _Emitter) -> str:
        b, z = em.b, em.logits
        oh = em.onehot(em.label_knob(self.label_input))
        kappa = em.float_knob(self.kappa_input, ())
        z_t = em.per_sample_sum(b.op("Mul", [z, oh]))
        is_t = b.op("Cast", [oh], to=TensorProto.BOOL)
        lowest = b.scalar(np.finfo(b.np_dtype(z)).min, z)
        others = b.reduce("ReduceMax", b.op("Where", [is_t, lowest, z]), [1], keepdims=0)
        diff = b.op("Sub", [others, z_t] if self.targeted else [z_t, others])
        return b.op("Max", [diff, b.op("Neg", [kappa])])


@dataclass
class Logit:
    index_input: str = "logit_index"

    def emit(self, em: _Emitter) -> str:
        oh = em.onehot(em.label_knob(self.index_input))
        return em.per_sample_sum(em.b.op("Mul", [em.logits, oh]))


@dataclass
class Sparsity:
    tensors: list[str]
    f: str = "tanh"
    weights_input: str = "sparsity_weights"
    beta_input: str = "sparsity_beta"

    def emit(self, em: _Emitter) -> str:
        b = em.b
        if self.f not in ("tanh", "sigmoid"):
            raise AuditorError(f"Sparsity f must be 'tanh' or 'sigmoid', got {self.f!r}")
        tensors = em.activations(self.tensors, "Sparsity")
        weights = em.float_knob(self.weights_input, (len(tensors),))
        beta = em.float_knob(self.beta_input, ())
        k = sum(em.per_sample_size(t) for t in tensors)
        fop = "Tanh" if self.f == "tanh" else "Sigmoid"
        # Per tensor: Mul by beta, F, ReduceSum here; the gradient adds F' (Mul, Sub), the scale
        # (a Mul by a per-sample factor) and the Add into the tensor's gradient: seven full-size
        # passes.  Measured without gain (onnxruntime 1.32, 224x224 torchvision models, 2 threads,
        # bit-identical gradients): the scale by beta as a depthwise 1x1 Conv fused with F (in the
        # graph 92-110 ms against 84-100 for Mul + Tanh on mobilenet_v2: its per-channel GEMMs lose
        # on small maps), the scale and the Add as one com.microsoft GatedAdd (about 1%), the
        # ReduceSum over one flattened axis (same time).
        distinct = list(dict.fromkeys(tensors))
        sums = []
        for t in distinct:
            bt_beta = beta if b.dtypes[t] == em.float_type else b.op("Cast", [beta], to=b.dtypes[t])
            bt = b.op("Mul", [t, bt_beta])
            sums.append(b.unsqueeze(em.in_float(em.per_sample_sum(b.op(fop, [bt]), b.rank(t)), t), [1]))
        stacked = sums[0] if len(sums) == 1 else b.op("Concat", sums, axis=1)  # (N, distinct)
        if len(distinct) < len(tensors):  # one column per listed tensor: (N, L)
            column = {t: i for i, t in enumerate(distinct)}
            stacked = b.op("Gather", [stacked, b.ints([column[t] for t in tensors])], axis=1)
        weighted = b.op("MatMul", [stacked, weights])  # (N,)
        return b.op("Mul", [weighted, b.scalar(-1.0 / k, em.logits)])


@dataclass
class ActivationL2:
    tensors: list[str]

    def emit(self, em: _Emitter) -> str:
        b = em.b
        parts = []
        for t in em.activations(self.tensors, "ActivationL2"):
            rank = b.rank(t)
            s = (b.op("Mul", [t, t]) if rank == 1 else
                 b.reduce("ReduceSumSquare", t, list(range(1, rank)), keepdims=0))
            parts.append(em.in_float(s, t))
        return b.add_all(parts)


@dataclass
class WeightedSum:
    terms: list[tuple[str | float, object]] = field(default_factory=list)

    def emit(self, em: _Emitter) -> str:
        b = em.b
        if not self.terms:
            raise AuditorError("WeightedSum needs at least one term")
        parts = []
        for term in self.terms:
            try:
                coef, sub = term
            except (TypeError, ValueError):
                raise AuditorError(f"WeightedSum terms are (coef, spec) pairs, got {term!r}")
            value = em.build(sub)
            if isinstance(coef, str):
                c = em.float_knob(coef, ())
            elif isinstance(coef, (int, float)) and not isinstance(coef, bool):
                if coef == 1:
                    parts.append(value)
                    continue
                c = b.scalar(float(coef), em.logits)
            else:
                raise AuditorError(f"WeightedSum coefficient must be a knob name or a number, got {coef!r}")
            parts.append(b.op("Mul", [value, c]))
        return b.add_all(parts)


Spec = CrossEntropy | CWMargin | Logit | Sparsity | ActivationL2 | WeightedSum

# ---------------------------------------------------------------- building


class _Emitter:
    def __init__(self, model: onnx.ModelProto, logits: str):
        self.b = GraphBuilder(with_shapes(model), source=model, prefix="auditor::objective")
        self.logits = logits
        if not self.b.is_taken(logits):
            raise AuditorError(f"no tensor named {logits!r} in the model (logits)")
        shp = self.b.static_shape(logits)
        if shp is None or len(shp) != 2:
            raise AuditorError(f"logits {logits!r} must have shape (N, C), got {shp}")
        self.batch_dim = shp[0] if shp[0] is not None else "N"
        self.classes = shp[1]
        self.float_type = self.b.dtypes.get(logits, TensorProto.FLOAT)
        self.knobs: dict[str, tuple] = {}
        self.knob_types: dict[str, int] = {}
        self.inputs: list[onnx.ValueInfoProto] = []
        self._onehot: dict[str, str] = {}

    # knobs ---------------------------------------------------------------
    def knob(self, name: str, shape: tuple, elem_type: int) -> str:
        if not isinstance(name, str) or not name:
            raise AuditorError(f"knob input names must be non-empty strings, got {name!r}")
        if name in self.knobs:
            if self.knobs[name] != shape or self.knob_types[name] != elem_type:
                raise AuditorError(
                    f"knob {name!r} is used with two different shapes or types "
                    f"({self.knobs[name]} vs {shape})")
            return name
        if self.b.is_taken(name):
            raise AuditorError(f"knob name {name!r} clashes with a tensor of the model")
        self.b.reserve(name)
        self.knobs[name] = shape
        self.knob_types[name] = elem_type
        graph_shape = [self.batch_dim if d == "N" else d for d in shape]
        self.inputs.append(helper.make_tensor_value_info(name, elem_type, graph_shape,
                                                         doc_string=KNOB_DOC))
        self.b.dtypes[name] = elem_type
        self.b.shapes[name] = tuple(graph_shape)
        return name

    def float_knob(self, name: str, shape: tuple) -> str:
        return self.knob(name, shape, self.float_type)

    def label_knob(self, name: str) -> str:
        return self.knob(name, ("N",), TensorProto.INT64)

    # helpers -------------------------------------------------------------
    def onehot(self, labels: str) -> str:
        """(N, C) float one-hot of int64 labels (shared between terms)."""
        if labels not in self._onehot:
            # Equal against 0..C-1 rather than OneHot: onnxruntime's OneHot is oddly slow.
            b = self.b
            if isinstance(self.classes, int):
                classes = b.const(np.arange(self.classes, dtype=np.int64), hint="classes")
            else:
                depth = b.op("Gather", [b.shape_of(self.logits), b.const(np.array(1, np.int64))])
                classes = b.op("Range", [b.const(np.array(0, np.int64)), depth,
                                         b.const(np.array(1, np.int64))])
            hit = b.op("Equal", [b.unsqueeze(labels, [1]), classes])
            self._onehot[labels] = b.op("Cast", [hit], to=self.float_type)
        return self._onehot[labels]

    def per_sample_sum(self, t: str, rank: int = 2) -> str:
        """Sum over every axis but the first: (N, ...) of rank ``rank`` -> (N,)."""
        if rank == 1:
            return t
        return self.b.reduce("ReduceSum", t, list(range(1, rank)), keepdims=0)

    def activation(self, name: str) -> str:
        if not self.b.is_taken(name):
            raise AuditorError(f"no tensor named {name!r} in the model (activation)")
        shp = self.b.static_shape(name)
        if shp is None or len(shp) < 1:
            raise AuditorError(f"the shape of activation {name!r} is unknown")
        if not np.issubdtype(self.b.np_dtype(name), np.floating):
            raise AuditorError(f"activation {name!r} is not a floating-point tensor")
        return name

    def per_sample_size(self, name: str) -> int:
        shp = self.b.static_shape(name)
        dims = shp[1:]
        if not all(isinstance(d, int) for d in dims):
            raise AuditorError(f"activation {name!r} needs a static per-sample shape, got {shp}")
        return int(np.prod(dims)) if dims else 1

    def activations(self, names: list[str], what: str) -> list[str]:
        tensors = [self.activation(t) for t in names]
        if not tensors:
            raise AuditorError(f"{what} needs at least one activation tensor")
        return tensors

    def in_float(self, s: str, like: str) -> str:
        """``s`` (computed in the element type of activation ``like``) in the logits' type."""
        return s if self.b.dtypes[like] == self.float_type else self.b.op("Cast", [s], to=self.float_type)

    def build(self, spec) -> str:
        emit = getattr(spec, "emit", None)
        if not callable(emit):
            raise AuditorError(f"unknown objective specification {spec!r}")
        return emit(self)


def append_objective(model: onnx.ModelProto, spec, logits: str | None = None,
                     output_name: str = "objective"
                     ) -> tuple[onnx.ModelProto, str, dict[str, tuple]]:
    """Append ``spec``'s subgraph to (a copy of) ``model``.

    Returns ``(new_model, objective_output_name, knobs)``: the objective (shape (N,)) is added to
    the model's outputs; ``knobs`` maps each added graph input to its shape (``'N'`` = batch).
    ``logits`` defaults to the model's first output.
    """
    if logits is None:
        if not model.graph.output:
            raise AuditorError("the model has no outputs")
        logits = model.graph.output[0].name
    em = _Emitter(model, logits)
    try:
        value = em.build(spec)
    except NotDifferentiable as e:  # builder complaints (unknown ranks/types) are input errors
        raise AuditorError(f"cannot build the objective: {e}") from None
    name = output_name
    i = 0
    while em.b.is_taken(name):
        i += 1
        name = f"{output_name}_{i}"
    em.b.reserve(name)
    em.b.nodes.append(helper.make_node("Identity", [value], [name], name=em.b.fresh("output")))

    out = onnx.ModelProto()
    out.CopyFrom(model)
    out.graph.input.extend(em.inputs)
    out.graph.node.extend(em.b.nodes)
    out.graph.initializer.extend(em.b.initializers)
    out.graph.output.append(helper.make_tensor_value_info(name, em.float_type, [em.batch_dim]))
    return out, name, dict(em.knobs)


# ---------------------------------------------------------------- the named objectives


@dataclass(frozen=True)
class Knob:
    """A knob of a named objective: the keyword :meth:`Classifier.value_and_grad` takes, fed to the
    graph input ``auditor::<name>``.  ``shape`` uses ``'N'`` for the batch and ``'L'`` for the
    number of compute layers; ``label`` knobs are int64 labels or class indices, the others
    float32 (the logits' type)."""

    name: str
    shape: tuple
    label: bool = False
    doc: str = ""

    @property
    def input(self) -> str:
        return ns(self.name)

    def feed(self, objective: str, value) -> np.ndarray:
        v = np.asarray(value)
        if self.label:
            if not np.issubdtype(v.dtype, np.integer):
                raise AuditorError(f"knob '{self.name}' of objective '{objective}' takes integer labels, "
                                   f"got {v.dtype}")
            return v.astype(np.int64)
        if not (np.issubdtype(v.dtype, np.floating) or np.issubdtype(v.dtype, np.integer)):
            raise AuditorError(f"knob '{self.name}' of objective '{objective}' takes numbers, got {v.dtype}")
        return v.astype(np.float32)


@dataclass(frozen=True)
class Objective:
    """A named objective: ``make(layer_tensors, f)`` builds its specification for the data inputs
    of a model's compute layers (one per layer, ``Probes.layer_tensors``) and the sparsity
    function ``f``; ``knobs`` are the graph inputs that specification adds."""

    name: str
    doc: str
    knobs: tuple[Knob, ...]
    make: Callable[[list[str], str], object]

    def spec(self, layer_tensors, f: str = "tanh"):
        return self.make(list(layer_tensors), f)

    def feeds(self, values: dict) -> dict[str, np.ndarray]:
        """Graph feeds of the knobs from ``values`` keyed by knob name (extra keys are ignored)."""
        missing = [k.name for k in self.knobs if k.name not in values]
        if missing:
            raise AuditorError(f"objective '{self.name}' needs knob '{missing[0]}'")
        return {k.input: k.feed(self.name, values[k.name]) for k in self.knobs}


OBJECTIVES: Registry[Objective] = Registry("objective")

TARGET = Knob("target", ("N",), label=True, doc="the label whose cross-entropy is taken")
LABEL = Knob("label", ("N",), label=True, doc="the label whose margin is taken")
KAPPA = Knob("kappa", (), doc="the margin's clamp: values below -kappa are -kappa")
INDEX = Knob("index", ("N",), label=True, doc="the logit taken")
WEIGHTS = Knob("weights", ("L",), doc="W_l, one per compute layer")
BETA = Knob("beta", (), doc="the sharpness of F")
C = Knob("c", (), doc="the weight of the cross-entropy term")


def _objective(name: str, doc: str, *knobs: Knob):
    def deco(make):
        OBJECTIVES.add(name, Objective(name, doc, knobs, make))
        return make
    return deco


@_objective("ce", "cross-entropy -log softmax(z)[target]", TARGET)
def _ce(layer_tensors, f):
    return CrossEntropy(target_input=TARGET.input)


@_objective("margin", "C&W margin max(z[label] - max_{j != label} z[j], -kappa)", LABEL, KAPPA)
def _margin(layer_tensors, f):
    return CWMargin(kappa_input=KAPPA.input, label_input=LABEL.input, targeted=False)


@_objective("logit", "the logit z[index]", INDEX)
def _logit(layer_tensors, f):
    return Logit(index_input=INDEX.input)


@_objective("sparsity", "the sparsity-attack loss -(1/k) sum_l W_l sum_n F(beta a_{l,n}) + c CE(target) "
            "over the compute layers' data inputs", WEIGHTS, BETA, C, TARGET)
def _sparsity(layer_tensors, f):
    return WeightedSum([(1.0, Sparsity(layer_tensors, f=f, weights_input=WEIGHTS.input, beta_input=BETA.input)),
                        (C.input, CrossEntropy(target_input=TARGET.input))])


@_objective("act_l2", "sum of squares of the compute layers' distinct input activations (Sponge L-BFGS)")
def _act_l2(layer_tensors, f):
    return ActivationL2(list(dict.fromkeys(layer_tensors)))


__all__ = ["CrossEntropy", "CWMargin", "Logit", "Sparsity", "ActivationL2", "WeightedSum",
           "append_objective", "OBJECTIVES", "Objective", "Knob"]
