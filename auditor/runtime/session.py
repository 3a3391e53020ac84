"""onnxruntime sessions over (rewritten) models, and the ONNX-backed :class:`Classifier`.

Data flow: model -> ``preprocess.prepend`` -> ``rewrite.instrument`` -> :class:`Runner` (one
onnxruntime session, batched).  :class:`OnnxClassifier` adds one gradient session per objective
(``grad.add_input_gradient`` over ``objectives.append_objective``): one ``session.run`` per attack
iteration returns the objective, the logits and the input gradient together.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

ort.set_default_logger_severity(3)  # onnxruntime warnings never reach stderr beside an error line

from ..errors import AuditorError
from ..grad import add_input_gradient
from ..grad.objectives import OBJECTIVES, append_objective
from ..model.load import graph_inputs, load_model
from ..model.names import check_free, graph_names, ns
from ..model.rewrite.preprocess import Preprocessing, prepend
from ..model.rewrite.head import LOGITS, Head, logits_head  # noqa: F401 (re-exported)
from ..model.rewrite.instrument import Probes, instrument
from .classifier import BudgetExceeded, Classifier  # noqa: F401 (BudgetExceeded re-exported)


def session_options(threads: int = 0) -> ort.SessionOptions:
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    return so


def _ort_message(e: Exception) -> str:
    """The informative part of an onnxruntime error (its node and status message), one line."""
    text = " ".join(str(e).split())
    for marker in ("Non-zero status code returned while running ", "FAIL : "):
        if marker in text:
            text = text.split(marker, 1)[1]
            break
    return text[:300]


#: bytes of tensors one onnxruntime run may compute: a :class:`Runner` runs at most as many inputs
#: together as fit in it (and never more than its batch_size), so that memory is bounded by the
#: batch, not by the data, on ImageNet-sized models as on digits
MEMORY_BUDGET = 384 * 2**20


def tensor_bytes(model: onnx.ModelProto) -> int:
    """Bytes per input of the tensors a model computes: every value_info/output with a known
    element type and static dimensions after the batch axis (a lower bound when shapes are
    missing; backward tensors of a gradient graph mirror forward ones and are not counted)."""
    total = 0
    g = model.graph
    for vi in list(g.value_info) + list(g.output):
        tt = vi.type.tensor_type
        if not tt.elem_type or not tt.HasField("shape") or len(tt.shape.dim) < 1:
            continue
        n = 1
        for d in tt.shape.dim[1:]:
            if not d.HasField("dim_value"):
                n = 0
                break
            n *= d.dim_value
        if n:
            total += n * np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)).itemsize
    return total


class Runner:
    """One onnxruntime CPU session over a model, run in batches of at most ``batch_size`` inputs,
    fewer when their tensors (``tensor_bytes`` x ``factor`` per input) would exceed ``budget``
    bytes (``batch_note`` says which)."""

    def __init__(self, model: onnx.ModelProto, threads: int = 0, batch_size: int = 64,
                 budget: int | None = MEMORY_BUDGET, factor: float = 1.0):
        t0 = time.monotonic()
        try:
            self.session = ort.InferenceSession(model.SerializeToString(), session_options(threads),
                                                providers=["CPUExecutionProvider"])
        except Exception as e:
            raise AuditorError(f"onnxruntime cannot load the model: {str(e).strip().splitlines()[0][:300]}") from None
        self.build_seconds = time.monotonic() - t0  # how long onnxruntime took to build the session
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.input_name = graph_inputs(model)[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        dim0 = self.session.get_inputs()[self.inputs.index(self.input_name)].shape[0]
        self.fixed_batch = dim0 if isinstance(dim0, int) and dim0 > 0 else None
        self.requested_batch = max(int(batch_size), 1)
        self.input_bytes = int(tensor_bytes(model) * factor)
        fit = self.requested_batch if not budget or not self.input_bytes else max(1, int(budget // self.input_bytes))
        self.batch_size = self.fixed_batch or min(self.requested_batch, fit)
        if self.fixed_batch:
            self.batch_note = f"{self.fixed_batch} (the model's fixed batch size)"
        elif self.batch_size < self.requested_batch:
            self.batch_note = (f"{self.batch_size} (batch_size {self.requested_batch} lowered so that one run's tensors, "
                               f"{self.input_bytes / 2**20:.1f} MiB per input, stay within {budget / 2**20:.0f} MiB)")
        else:
            self.batch_note = f"{self.batch_size} (the scenario's batch_size)"
        self.seconds_per_sample = 0.0  # measured by run()

    def run(self, x: np.ndarray, outputs: list[str] | None = None, feeds: dict | None = None,
            check=None) -> dict[str, np.ndarray]:
        """Outputs (all by default) for a batch ``x``; extra ``feeds`` (knobs) are per sample when
        their first dimension equals len(x), else broadcast to every chunk.  ``check(seconds)`` is
        called before every chunk with the estimated time of that chunk (the time budget)."""
        names = outputs or self.output_names
        x = np.ascontiguousarray(x, dtype=np.float32)
        n = len(x)
        chunks: dict[str, list] = {k: [] for k in names}
        for s in range(0, max(n, 1), self.batch_size):
            xb = x[s:s + self.batch_size]
            real = len(xb)
            if check is not None:
                check(self.seconds_per_sample * len(xb))
            t0 = time.monotonic()
            if self.fixed_batch and real < self.fixed_batch:
                xb = np.concatenate([xb, np.repeat(xb[-1:], self.fixed_batch - real, axis=0)])
            feed = {self.input_name: xb}
            for k, v in (feeds or {}).items():
                v = np.asarray(v)
                if v.ndim and v.shape[0] == n and n != 1 or (v.ndim and v.shape[0] == n == 1):
                    vb = v[s:s + self.batch_size]
                    if self.fixed_batch and len(vb) < self.fixed_batch:
                        vb = np.concatenate([vb, np.repeat(vb[-1:], self.fixed_batch - len(vb), axis=0)])
                    feed[k] = vb
                else:
                    feed[k] = v
            try:
                res = self.session.run(names, feed)
            except ort.capi.onnxruntime_pybind11_state.Fail as e:  # the model's own ops refuse the data
                raise AuditorError(f"onnxruntime cannot run the model: {_ort_message(e)}") from None
            # the slowest rate seen lately: the estimate of the next chunk's time
            rate = (time.monotonic() - t0) / max(len(xb), 1)
            self.seconds_per_sample = max(rate, 0.5 * self.seconds_per_sample)
            for k, r in zip(names, res):
                chunks[k].append(r[:real] if r.ndim and r.shape[0] == len(xb) else r)
        return {k: (np.concatenate(v) if v and v[0].ndim and len(v) > 1 else v[0]) for k, v in chunks.items()}


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


def objective_spec(objective: str, layer_tensors, sparsity_f: str = "tanh"):
    """The specification of the named objective ``objective`` (:data:`~auditor.grad.objectives.OBJECTIVES`),
    its knobs (``target``, ``c``, ...) graph inputs in the tool's namespace (``auditor::target``).
    ``layer_tensors``: the data input of each compute layer, one per layer (``Probes.layer_tensors``;
    the sparsity objective's W_l follow it, activation L2 counts each distinct tensor once)."""
    return OBJECTIVES.get(objective).spec(layer_tensors, sparsity_f)


def gradient_model(model: onnx.ModelProto, spec, logits: str, wrt: str | None = None
                   ) -> tuple[onnx.ModelProto, str, dict]:
    """``model`` + objective ``spec`` + its input gradient (``auditor::grad_input``)."""
    check_free(graph_names(model), OBJECTIVE)
    m, obj_name, knobs = append_objective(model, spec, logits=logits, output_name=OBJECTIVE)
    g = add_input_gradient(m, obj_name, wrt=wrt, grad_name=GRAD_INPUT)
    return g, obj_name, knobs


def knob_feeds(objective: str, knobs: dict) -> dict[str, np.ndarray]:
    """Graph feeds of the named objective's knobs: ``knobs`` are keyed by the knob names
    (``target``, ``c``, ...), cast to the declared types (labels int64, the rest float32)."""
    return OBJECTIVES.get(objective).feeds(knobs)


#: a gradient session takes about this many times as long to build as the plain session of the
#: same model (graph building + onnxruntime; 4-40x measured on the bundled models)
GRAD_BUILD_FACTOR = 20.0


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


def _as_model(model, pre: Preprocessing | None = None) -> onnx.ModelProto:
    """A model path loaded (with the preprocessing's input size), or the ModelProto as given."""
    if isinstance(model, (str, os.PathLike, Path)):
        pre = pre or Preprocessing()
        return load_model(model, input_size=pre.input_size, layout=pre.layout)
    return model


class OnnxClassifier(Classifier):
    """A :class:`Classifier` over an ONNX model with preprocessing prepended (raw pixel domain)."""

    def __init__(self, model, preprocessing: Preprocessing | None = None, *, threads: int = 0,
                 batch_size: int = 64, sparsity_f: str = "tanh"):
        super().__init__()
        self.preprocessing = preprocessing or Preprocessing()
        base = _as_model(model, self.preprocessing)
        self.base_model = base  # the model as deployed, before preprocessing is prepended
        self.model, self.head = logits_head(prepend(base, self.preprocessing))
        self.instrumented, self.probes = instrument(self.model)
        self.threads, self.batch_size, self.sparsity_f = threads, batch_size, sparsity_f
        self.runner = Runner(self.instrumented, threads, batch_size)
        self.logits_name = self.model.graph.output[0].name
        self.bounds = self.preprocessing.bounds
        shape = self.runner.session.get_inputs()[0].shape
        self.input_shape = tuple(int(d) for d in shape[1:])
        self.activation_names = list(self.probes.layer_inputs)
        out_shape = self.runner.session.get_outputs()[0].shape
        self.num_classes = int(out_shape[-1]) if isinstance(out_shape[-1], int) else None
        self._grad_runners: dict[str, tuple[Runner, str, dict]] = {}

    @property
    def layers(self):
        return self.probes.layers

    @property
    def layer_tensors(self) -> list[str]:
        return list(self.probes.layer_tensors)

    def forward(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Logits and every probed tensor (activations and compute-layer inputs) in one run."""
        self._check_deadline()
        x = np.ascontiguousarray(x, dtype=np.float32)
        self.queries += len(x)
        return self.runner.run(x, check=self._check_deadline)

    def _logits(self, x):
        self._check_deadline()
        return self.runner.run(x, [self.logits_name], check=self._check_deadline)[self.logits_name]

    def activations(self, x):
        out = self.forward(x)
        return {k: out[k] for k in self.activation_names}

    # --- gradients -------------------------------------------------------------------------
    def _objective_spec(self, objective: str):
        return objective_spec(objective, self.probes.layer_tensors, self.sparsity_f)

    def _grad_runner(self, objective: str):
        if objective not in self._grad_runners:
            with build_timer(self):
                g, obj_name, knobs = gradient_model(self.model, self._objective_spec(objective), self.logits_name)
                # the forward tensors are kept for the backward pass, which computes as many again
                self._grad_runners[objective] = (Runner(g, self.threads, self.batch_size, factor=2.0), obj_name,
                                                 knobs)
        return self._grad_runners[objective]

    def _value_and_grad(self, x, objective, knobs):
        self._check_deadline()
        runner, obj_name, _ = self._grad_runner(objective)
        feeds = knob_feeds(objective, knobs)
        out = runner.run(x, [obj_name, GRAD_INPUT, self.logits_name], feeds=feeds, check=self._check_deadline)
        return out[obj_name], out[GRAD_INPUT], out[self.logits_name]
