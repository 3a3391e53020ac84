"""The approximate-multiplier model as a :class:`~auditor.runtime.classifier.ModelClassifier`.

Defensive Approximation (Guesmi et al.): the products of the Conv / Gemm layers run on the Ax-FPM
approximate float32 multiplier (:mod:`auditor.axfpm`: bit-exact emulation, products accumulated in
float64, bias added exactly, one cast to float32).  Which layers are approximate and which
multiplier variant is used come from the hardware profile's ``approx:`` section
(:class:`auditor.hw.profile.Approx`; default: every Conv and Gemm, ``da-reference``).

:class:`ApproxClassifier` is :class:`~auditor.runtime.session.OnnxClassifier` with two things
replaced: the forward pass is the *approximate* execution (:class:`auditor.axfpm.execute.ApproxModel`
over the instrumented model), so ``auditor.runtime.evaluate.evaluate`` and every cost model see the
approximate activations and every query-based attack queries the approximate model; and the
gradient graphs are BPDA (Athalye et al. 2018): the backward pass is the exact network's
vector-Jacobian product evaluated at the approximate forward's intermediate values, through the
rewrite of :func:`auditor.model.rewrite.bpda.bpda_model`, whose extra inputs are fed from the
approximate forward.  Everything else (loading, preprocessing, the logits head, probes, objectives
and their knobs, batching, deadlines) is the exact classifier's.  One BPDA step costs one
approximate forward pass plus one onnxruntime forward+backward.
"""

from __future__ import annotations

import numpy as np
import onnx

from ..axfpm import MULTIPLIERS
from ..axfpm.execute import ApproxModel
from ..errors import AuditorError
from ..model.load import as_model, prepare
from ..model.names import name_nodes
from ..model.rewrite.bpda import bpda_model
from .classifier import Classifier
from .engine import run_batches
from .session import OnnxClassifier


def approx_settings(approx) -> tuple[str, list[str] | None]:
    """(multiplier variant, approximated node names or None for every Conv/Gemm) of an
    :class:`auditor.hw.profile.Approx`, a mapping with ``multiplier`` and ``layers``, or None."""
    if approx is None:
        return "da-reference", None
    variant = getattr(approx, "multiplier", None)
    if variant is None and isinstance(approx, dict):
        variant = approx.get("multiplier", "da-reference")
        layers = approx.get("layers")
    else:
        layers = getattr(approx, "layers", None)
    if variant not in MULTIPLIERS:
        raise AuditorError(f"unknown multiplier {variant!r} (known: {', '.join(MULTIPLIERS)})", where="approx")
    if layers is not None:
        if isinstance(layers, str) or not all(isinstance(n, str) for n in layers):
            raise AuditorError(f"layers must be a list of node names, got {layers!r}", where="approx")
        layers = list(layers)
    return variant, layers


class ApproxClassifier(OnnxClassifier):
    """The exact classifier with its forward pass on the approximate multiplier and BPDA gradients
    (see the module doc).

    ``approx``: an :class:`auditor.hw.profile.Approx` (or a mapping with ``multiplier`` and
    ``layers``); None = every Conv and Gemm node on the ``da-reference`` multiplier.  Layer names are
    the node names of the model as loaded (``<op_type>_<index>`` for unnamed nodes).
    """

    def __init__(self, model, preprocessing=None, approx=None, *, threads: int = 0, batch_size: int = 64,
                 sparsity_f: str = "tanh"):
        self.variant, self._layers = approx_settings(approx)
        self._bpda: tuple[onnx.ModelProto, dict[str, str]] | None = None
        super().__init__(model, preprocessing, threads=threads, batch_size=batch_size, sparsity_f=sparsity_f)

    _model_with_weights = True  # the approximate execution reads them from the model

    def _load(self, model) -> onnx.ModelProto:
        """As the exact classifier loads it, every node named (the approximated layers are named)."""
        if isinstance(model, onnx.ModelProto):
            model = prepare(model, input_size=self.preprocessing.input_size,  # as load_model does for files
                            layout=self.preprocessing.layout)
        out = onnx.ModelProto()
        out.CopyFrom(as_model(model, input_size=self.preprocessing.input_size, layout=self.preprocessing.layout))
        name_nodes(out.graph)
        return out

    @property
    def _ort_threads(self) -> int | None:
        return int(self.threads) if self.threads else None

    # --- the forward pass: the approximate execution -----------------------------------------
    def _start_forward(self) -> None:
        self._rate = [0.0]  # seconds per input seen lately: the estimate of the next batch's time
        self.approx_model = ApproxModel(self.instrumented, self._layers, self.variant,
                                        intra_op_threads=self._ort_threads)
        #: names of the approximated nodes, in graph order
        self.approx_nodes: tuple[str, ...] = self.approx_model.approx_nodes

    def _run(self, x: np.ndarray, outputs: list[str] | None = None) -> dict[str, np.ndarray]:
        """Approximate run of the instrumented model over ``x`` in batches (graph outputs + ``outputs``)."""
        return run_batches(lambda xb, _: self.approx_model.run(xb, outputs), x, self.batch_size,
                           fixed_batch=self.fixed_batch, check=self._check_deadline, rate=self._rate)

    @property
    def batch_note(self) -> str:
        if self.fixed_batch:
            return f"{self.fixed_batch} (the model's fixed batch size)"
        return f"{self.batch_size} (the scenario's batch_size)"

    # --- BPDA gradients ----------------------------------------------------------------------
    @property
    def bpda(self) -> tuple[onnx.ModelProto, dict[str, str]]:
        """The BPDA forward model (before the objective) and its feeds (input -> approximate tensor)."""
        if self._bpda is None:
            self._bpda = bpda_model(self.model, self.approx_nodes)
        return self._bpda

    def _gradient_base(self) -> onnx.ModelProto:
        return self.bpda[0]

    def _gradient_feeds(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Each rewritten node's activation input and output, from the approximate forward of ``x``."""
        feeds = self.bpda[1]
        if not feeds:
            return {}
        fwd = self._run(x, sorted(set(feeds.values())))
        return {inp: fwd[tensor] for inp, tensor in feeds.items()}

    # --- independent verification --------------------------------------------------------------
    def verifier(self) -> "ApproxLogits":
        """A logits-only classifier over a *separate* ApproxModel of the plain (not instrumented)
        model: an independent forward pass to re-verify adversarial examples."""
        return ApproxLogits(self.model, list(self.approx_nodes), self.variant, self.bounds,
                            self.input_shape, self.num_classes, threads=self._ort_threads,
                            batch_size=self.batch_size, fixed_batch=self.fixed_batch)


class ApproxLogits(Classifier):
    """Logits of the approximate model from its own ApproxModel instance (no gradients)."""

    def __init__(self, model: onnx.ModelProto, approx_nodes, variant: str, bounds, input_shape, num_classes, *,
                 threads=None, batch_size: int = 64, fixed_batch=None):
        super().__init__()
        self.approx_model = ApproxModel(model, approx_nodes, variant, intra_op_threads=threads)
        self.logits_name = model.graph.output[0].name
        self.bounds, self.input_shape, self.num_classes = bounds, tuple(input_shape), num_classes
        self.batch_size, self.fixed_batch = batch_size, fixed_batch

    def _logits(self, x):
        if not len(x):
            return np.zeros((0, self.num_classes), np.float32)
        return run_batches(lambda xb, _: {"z": self.approx_model.run(xb)[self.logits_name]}, x, self.batch_size,
                           fixed_batch=self.fixed_batch)["z"]

    def _value_and_grad(self, x, objective, knobs):
        raise AuditorError("the verification classifier has no gradients", where="approx")
