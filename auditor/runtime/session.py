"""onnxruntime sessions over (rewritten) models, and the ONNX-backed :class:`Classifier`.

Data flow: model -> ``preprocess.prepend`` -> ``rewrite.instrument`` -> :class:`Runner` (one
onnxruntime session, batched).  :class:`OnnxClassifier` adds one gradient session per objective
(``grad.add_input_gradient`` over ``objectives.append_objective``): one ``session.run`` per attack
iteration returns the objective, the logits and the input gradient together.
"""

from __future__ import annotations

import time
import weakref

import numpy as np
import onnx

from ..errors import AuditorError
from ..grad import add_input_gradient
from ..grad.objectives import OBJECTIVES, append_objective
from ..model.load import as_model, graph_inputs
from ..model.names import check_free, graph_names, ns
from ..model.rewrite.preprocess import Preprocessing, prepend
from ..model.rewrite.head import LOGITS, Head, logits_head  # noqa: F401 (re-exported)
from ..model.rewrite.instrument import Probes, add_outputs, probes_of  # noqa: F401 (Probes re-exported)
from .classifier import BudgetExceeded, ModelClassifier  # noqa: F401 (BudgetExceeded re-exported)
from .engine import MEMORY_BUDGET, Runner, SharedWeights, tensor_bytes  # noqa: F401 (re-exported)


# ------------------------------------------------------------------------------------------------
# The classifier head (found and rewritten by auditor.model.rewrite.head): are they logits?
# ------------------------------------------------------------------------------------------------


def probability_warning(logits: np.ndarray, head: Head | None = None) -> str | None:
    """A warning when a model's outputs look like probabilities (non-negative, summing to one per
    input) although no final Softmax was found to skip: attacks would treat them as logits."""
    z = np.asarray(logits, np.float64)
    if head is not None and head.softmax or z.ndim != 2 or z.shape[1] < 2 or not len(z):
        return None
    if z.min() >= -1e-6 and np.allclose(z.sum(axis=1), 1.0, atol=1e-3):
        return ("the model's outputs are non-negative and sum to one for every input: they look like probabilities, "
                "not logits (a normalisation other than a final Softmax?); attacks treat them as logits, so their "
                "cross-entropies and margins are those of probabilities")
    return None


# ------------------------------------------------------------------------------------------------
# Gradient sessions: one per objective, knobs in the tool's namespace
# ------------------------------------------------------------------------------------------------

#: the input-gradient and objective outputs of the gradient sessions
GRAD_INPUT, OBJECTIVE = ns("grad_input"), ns("objective")
#: the key of a measurement's values among a gradient run's results (never a graph tensor)
MEASURED = ns("measured")


def objective_spec(objective: str, layer_tensors, sparsity_f: str = "tanh"):
    """The specification of the named objective ``objective`` (:data:`~auditor.grad.objectives.OBJECTIVES`),
    its knobs (``target``, ``c``, ...) graph inputs in the tool's namespace (``auditor::target``).
    ``layer_tensors``: the data input of each compute layer, one per layer (``Probes.layer_tensors``;
    the sparsity objective's W_l follow it, activation L2 counts each distinct tensor once)."""
    return OBJECTIVES.get(objective).spec(layer_tensors, sparsity_f)


def gradient_model(model: onnx.ModelProto, spec, logits: str, wrt: str | None = None,
                   weights: SharedWeights | None = None) -> tuple[onnx.ModelProto, str, dict]:
    """``model`` + objective ``spec`` + its input gradient (``auditor::grad_input``).  With
    ``weights`` (the shared weights its session is given) the result lacks their data
    (:meth:`SharedWeights.light`): the graph is built on a copy of ``model`` without them, the
    rules reading the weights they fold from the model they are given from (``weights.source``:
    ``model`` itself, or the deployed model of a rewrite without their data; no copy of the
    weights is made: on vgg11_bn at 224 that copy took 0.7 s of a 0.9 s graph build)."""
    check_free(graph_names(model), OBJECTIVE)
    light = weights.light(model) if weights is not None else model
    m, obj_name, knobs = append_objective(light, spec, logits=logits, output_name=OBJECTIVE)
    # the weights' values from the model they are given from (``model`` may be a rewrite without them)
    g = add_input_gradient(m, obj_name, wrt=wrt, grad_name=GRAD_INPUT, in_place=True,  # m is ours
                           values=weights.source if light is not model else None)
    return g, obj_name, knobs


def knob_feeds(objective: str, knobs: dict) -> dict[str, np.ndarray]:
    """Graph feeds of the named objective's knobs: ``knobs`` are keyed by the knob names
    (``target``, ``c``, ...), cast to the declared types (labels int64, the rest float32)."""
    return OBJECTIVES.get(objective).feeds(knobs)


#: a gradient session takes up to about this many times as long to build as the plain session of
#: the same model (graph building + onnxruntime, the first build's estimate).  Measured (2 threads,
#: the longer of the cross-entropy and sparsity builds, best of 2): the bundled models 5.4-9.6x
#: (a few ms), torchvision's at 224 resnet18 2.5x, mobilenet_v2 8.3x, efficientnet_b0 9.2x,
#: densenet121 10.6x, convnext_tiny 3.2x, vgg11_bn 0.6x (its forward session's build, 0.73 s, is
#: its weights' prepacking, which the gradient session's shared in-place weights skip)
GRAD_BUILD_FACTOR = 12.0


class build_timer:
    """Around the build of a gradient session: refuses to start it when it would not end before
    the classifier's deadline (the estimate: the slowest build seen, or GRAD_BUILD_FACTOR x the
    plain session's build time), and records how long it took."""

    def __init__(self, clf):
        self.clf = clf

    def __enter__(self):
        est = getattr(self.clf, "_grad_build_seconds", None)
        if est is None:
            est = GRAD_BUILD_FACTOR * getattr(getattr(self.clf, "runner", None), "build_seconds", 0.0)
        self.clf._check_deadline(est)
        self.t0 = time.monotonic()
        return self

    def __exit__(self, kind, *_):
        if kind is None:
            took = time.monotonic() - self.t0
            self.clf._grad_build_seconds = max(took, getattr(self.clf, "_grad_build_seconds", None) or 0.0)
        return False


class _Derived:
    """What a classifier derives from a deployed model and its preprocessing (read only): the
    model in the raw pixel domain, its logits head, the probes, the weights its sessions are given
    and the sessions themselves.  The profiles of an audit and their verifiers deploy the same
    model object: they share one of these instead of a copy of every weight each.

    No copy of the weights is made: with an identity preprocessing and a head that needs no
    rewrite ``model`` is the deployed model itself; a preprocessing or a head rewrite is made on
    the deployed model without its large weights' data (``SharedWeights.light``), which the
    sessions are given from the deployed model (:class:`~auditor.runtime.engine.SharedWeights`
    over ``base``), and the gradient rules read from it (torchvision's vgg11_bn with a mean/std
    preprocessing: the copy held 0.5 GB).  ``with_weights`` (the approximate execution, which
    reads the weights from ``model``): the rewrite is a copy with its weights, as before.  The
    forward session is built from the instrumented model without the weights' data
    (``forward_model``); ``instrumented`` with its weights is built on first use.

    Sessions: the forward runner and the gradient runner of each objective are built once per
    role, threads and batch size and serve every classifier of that role (the search classifiers
    of every profile share theirs); a verifier's role is its own, so that every check runs on a
    session no search used.  The forward runners live as long as this object, the gradient
    runners until :func:`release_gradients` (the audit releases them at the end of each stage:
    a gradient session of a large model holds as much as its forward session and more)."""

    def __init__(self, base: onnx.ModelProto, preprocessing: Preprocessing, with_weights: bool = False):
        self.base, self.preprocessing = base, preprocessing
        weights = SharedWeights(base)
        light = weights.light(base)
        model, self.head = self._rewrite(light)
        if model is light:  # no rewrite: the deployed model itself
            model = base
        elif light is base:  # no weight large enough to leave out: the rewrite holds them all
            weights = None
        elif with_weights:
            model, weights = self._rewrite(base)[0], None
        self.model = model
        self.weights = weights or SharedWeights(model)
        self.probes = probes_of(self.model)  # (compute layers read their weights)
        self.forward_model = add_outputs(self.weights.light(self.model), self.probes.tensors)
        self._instrumented: onnx.ModelProto | None = None
        self.runners: dict[tuple, object] = {}  # forward runners, by role, threads, batch size
        self.gradients: dict[tuple, tuple] = {}  # gradient runners, by the same and the objective

    def _rewrite(self, model: onnx.ModelProto) -> tuple[onnx.ModelProto, Head]:
        """``model`` in the raw pixel domain (the preprocessing prepended) and its logits head
        (``model`` itself when neither needs a rewrite)."""
        pre = self.preprocessing
        return logits_head(model if pre.is_identity else prepend(model, pre))

    def _with_weights(self) -> onnx.ModelProto:
        """``model`` with its weights' data (a copy when ``model`` is a rewrite without them)."""
        if self.weights.source is self.model:
            return self.model
        return self._rewrite(self.base)[0]

    @property
    def instrumented(self) -> onnx.ModelProto:
        """The instrumented model with its weights (built on first use)."""
        if self._instrumented is None:
            self._instrumented = add_outputs(self._with_weights(), self.probes.tensors)
        return self._instrumented


#: the live derivations, by (id of the deployed model, preprocessing)
_DERIVED: "weakref.WeakValueDictionary[tuple, _Derived]" = weakref.WeakValueDictionary()


#: the classifiers whose gradient graphs are their own (not the model's: see ``_grad_runner``)
_OWN_GRADIENTS: "weakref.WeakSet[OnnxClassifier]" = weakref.WeakSet()


def release_gradients() -> int:
    """Drop the gradient runners of every classifier of this process (a session goes with the
    last reference to it; the next gradient asked for builds its runner again); returns how many
    were dropped.  The audit calls it where a stage ends (:func:`auditor.pipeline.units.run_unit`),
    so that the gradient sessions of one stage do not live beside those of the next."""
    n = 0
    for d in list(_DERIVED.values()):
        n += len(d.gradients)
        d.gradients.clear()
    for clf in list(_OWN_GRADIENTS):
        n += len(clf._own_gradients)
        clf._own_gradients.clear()
    return n


def _derived(base: onnx.ModelProto, preprocessing: Preprocessing, with_weights: bool = False) -> _Derived:
    key = (id(base), repr(preprocessing), with_weights)
    d = _DERIVED.get(key)
    if d is None or d.base is not base:
        d = _DERIVED[key] = _Derived(base, preprocessing, with_weights)
    return d


class OnnxClassifier(ModelClassifier):
    """The exact :class:`ModelClassifier`: an ONNX model with preprocessing prepended (raw pixel
    domain), its forward pass one onnxruntime session over the instrumented model, one gradient
    session per objective (over :meth:`_gradient_base`, fed by :meth:`_gradient_feeds`).  The
    sessions are given the model's weights from one proto (:class:`~auditor.runtime.engine.SharedWeights`)
    and serve every classifier of the same deployed model, preprocessing, ``role``, threads and
    batch size (see ``_Derived``): ``role="verify"`` for the independent forward pass that checks
    what the searches (``"search"``) report, so that no check runs on a session a search used."""

    #: whether ``model`` must hold its weights' data (see ``_Derived``: the approximate execution reads them)
    _model_with_weights = False

    def __init__(self, model, preprocessing: Preprocessing | None = None, *, threads: int = 0,
                 batch_size: int = 64, sparsity_f: str = "tanh", role: str = "search"):
        super().__init__()
        self.preprocessing = preprocessing or Preprocessing()
        d = _derived(self._load(model), self.preprocessing, self._model_with_weights)
        self._derived = d  # shared with every classifier of the same deployed model and preprocessing
        self.base_model = d.base  # the model as deployed, before preprocessing is prepended
        self.model, self.head, self.probes, self.weights = d.model, d.head, d.probes, d.weights
        self.threads, self.batch_size, self.sparsity_f = threads, max(int(batch_size), 1), sparsity_f
        self.role = role
        self.logits_name = self.model.graph.output[0].name
        inp = graph_inputs(self.model)[0]
        self.input_name = inp.name
        dims = [d.dim_value if d.HasField("dim_value") else None for d in inp.type.tensor_type.shape.dim]
        self.fixed_batch = dims[0] if dims and dims[0] else None
        self.input_shape = tuple(int(d) for d in dims[1:])
        self.bounds = self.preprocessing.bounds
        self.activation_names = list(self.probes.layer_inputs)
        self._start_forward()
        out = [d for d in self.model.graph.output[0].type.tensor_type.shape.dim]
        self.num_classes = int(out[-1].dim_value) if out and out[-1].HasField("dim_value") else None
        if self.num_classes is None:  # not declared: one forward pass says it
            self.num_classes = int(self._run(np.zeros((1,) + self.input_shape, np.float32),
                                             [self.logits_name])[self.logits_name].shape[-1])
        self._own_gradients: dict[str, tuple[Runner, str, dict]] = {}  # see _grad_runner

    @property
    def instrumented(self) -> onnx.ModelProto:
        """The instrumented model (graph outputs: logits, then every probed tensor), with its weights."""
        return self._derived.instrumented

    def _shared_runner(self, key: tuple, build):
        """The runner ``key`` of this classifier's role, threads and batch size, built once for
        every classifier of the deployed model that has them (``build()``)."""
        key = (self.role, self.threads, self.batch_size) + key
        runner = self._derived.runners.get(key)
        if runner is None:
            runner = self._derived.runners[key] = build()
        return runner

    # --- what the approximate classifier replaces ------------------------------------------
    def _load(self, model) -> onnx.ModelProto:
        """The deployed model: a path loaded with the preprocessing's input size, a proto as given."""
        return as_model(model, input_size=self.preprocessing.input_size, layout=self.preprocessing.layout)

    def _start_forward(self) -> None:
        """The forward pass over the instrumented model (one session per role, threads and batch size)."""
        self.runner = self._shared_runner(("forward",), lambda: Runner(self._derived.forward_model, self.threads,
                                                                       self.batch_size, shared=self.weights))

    def _run(self, x: np.ndarray, outputs: list[str] | None = None) -> dict[str, np.ndarray]:
        """The forward pass over ``x`` in batches: ``outputs`` of ``instrumented`` (all by default)."""
        return self.runner.run(x, outputs, check=self._check_deadline)

    def _gradient_base(self) -> onnx.ModelProto:
        """The forward graph the gradient graphs differentiate."""
        return self.model

    def _gradient_feeds(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Feeds of the gradient graphs besides the input and the objective's knobs."""
        return {}

    @property
    def batch_note(self) -> str:
        return self.runner.batch_note

    # --- shared by both ---------------------------------------------------------------------
    def forward(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Logits and every probed tensor (activations and compute-layer inputs) in one run."""
        self._check_deadline()
        x = np.ascontiguousarray(x, dtype=np.float32)
        self.queries += len(x)
        return self._run(x)

    def _logits(self, x):
        self._check_deadline()
        return self._run(x, [self.logits_name])[self.logits_name]

    def _objective_spec(self, objective: str):
        return objective_spec(objective, self.probes.layer_tensors, self.sparsity_f)

    def gradient_tensors(self) -> tuple[str, ...]:
        """The compute layers' data inputs, when the gradient graphs differentiate the model
        itself (not a stand-in for it, as BPDA's): their forward part computes them as the
        forward pass does (the same ops on the same weights; bit-identical on the bundled and
        ImageNet models; tests/attacks/test_sponge_integration.py)."""
        return tuple(self.probes.layer_inputs) if self._gradient_base() is self.model else ()

    def _shares_gradients(self) -> bool:
        return type(self)._gradient_base is OnnxClassifier._gradient_base  # the graph depends on the model only

    def _gradient_key(self, objective: str) -> tuple:
        return (self.role, self.threads, self.batch_size, self.sparsity_f, objective)

    @property
    def _grad_runners(self) -> dict[str, tuple[Runner, str, dict]]:
        """The gradient runners of this classifier alive now, by objective."""
        if not self._shares_gradients():
            return dict(self._own_gradients)
        mine = self._gradient_key("")[:-1]
        return {k[-1]: v for k, v in self._derived.gradients.items() if k[:-1] == mine}

    def _grad_runner(self, objective: str):
        """(runner, objective output, knobs) of the gradient graph of ``objective``: shared by the
        classifiers of the deployed model, role, threads and batch size when the graph depends on
        the model only, else this classifier's own; built on first use and again after
        :func:`release_gradients`."""
        shared = self._shares_gradients()
        store, key = ((self._derived.gradients, self._gradient_key(objective)) if shared
                      else (self._own_gradients, objective))
        got = store.get(key)
        if got is None:
            def build():
                with build_timer(self):
                    # built without the shared weights' data (the session is given them): no copy of them
                    g, obj_name, knobs = gradient_model(self._gradient_base(), self._objective_spec(objective),
                                                        self.logits_name, wrt=self.input_name, weights=self.weights)
                    # the tensors a measurement may read from the same pass are outputs too (computed by
                    # the forward part in any case; copied out only when a run asks for them)
                    have = {o.name for o in g.graph.output} | {i.name for i in g.graph.input}
                    g.graph.output.extend(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None)
                                          for t in self.gradient_tensors() if t not in have)
                    # the forward tensors are kept for the backward pass, which computes as many again.
                    # Idle workers do not spin: the attacks' numpy steps and the cost model's numba kernels
                    # run between (and inside, value_grad_measure) the gradient runs, and on a loaded
                    # machine spinning workers slowed the runs themselves (mobilenet_v2 at 224, 2 threads,
                    # load 10: 1.14 -> 0.76 s per run of 2 inputs)
                    return (Runner(g, self.threads, self.batch_size, factor=2.0, shared=self.weights, spin=False),
                            obj_name, knobs)

            got = store[key] = build()
            if not shared:
                _OWN_GRADIENTS.add(self)
        return got

    def _value_and_grad(self, x, objective, knobs):
        return self._value_grad_measure(x, objective, knobs, None)[:3]

    def _value_grad_measure(self, x, objective, knobs, measure):
        self._check_deadline()
        runner, obj_name, _ = self._grad_runner(objective)
        feeds = dict(knob_feeds(objective, knobs), **self._gradient_feeds(x))
        names = [obj_name, GRAD_INPUT, self.logits_name]
        reduce = None
        if measure is not None:
            tensors, fn = measure
            missing = set(tensors) - set(self.gradient_tensors())
            if missing:
                raise ValueError(f"the gradient pass does not compute {sorted(missing)}")
            names += [t for t in dict.fromkeys(tensors) if t not in (self.input_name, self.logits_name)]

            def reduce(res, rows):
                if self.input_name in tensors:  # a compute layer reads the input itself
                    res[self.input_name] = x[rows]
                kept = {k: res[k] for k in (obj_name, GRAD_INPUT, self.logits_name)}
                kept[MEASURED] = np.asarray(fn({t: res[t] for t in tensors}, res[self.logits_name], rows),
                                           dtype=np.float64).reshape(-1)
                return kept
        out = runner.run(x, names, feeds=feeds, check=self._check_deadline, reduce=reduce)
        measured = out[MEASURED] if measure is not None else None
        return out[obj_name], out[GRAD_INPUT], out[self.logits_name], measured
