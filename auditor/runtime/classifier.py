"""What an attack sees of a model: the :class:`Classifier` protocol.

Every search (sparsity/sponge attacks, evasion attacks) talks to the model only through this
interface, in the *raw pixel domain* of the scenario (preprocessing is part of the model), so the
same attack code serves the exact ONNX model, a hardware-reshaped model (HashNet, gradient
inhibition) and the approximate-multiplier model (BPDA gradients), and tests can pass small
analytic models.

Objectives understood by :meth:`Classifier.value_and_grad` (all values are per sample, shape (N,);
the gradient is d value / d x for each sample, shape of x):

``"ce"``        knobs ``target`` (N,) int64 — cross-entropy  -log softmax(z)[target]
``"margin"``    knobs ``label`` (N,) int64, ``kappa`` float — C&W margin
                ``max(z[label] - max_{j != label} z[j], -kappa)``  (positive while x is classified as
                ``label``; an untargeted attack drives it down, a targeted one uses the target
                label and drives it up)
``"logit"``     knobs ``index`` (N,) int64 — the logit z[index]
``"sparsity"``  knobs ``weights`` (L,) float32 (one per compute layer, in ``layer_tensors`` order),
                ``beta`` float, ``c`` float, ``target`` (N,) int64 — the sparsity-attack loss
                L = L_sparsity + c * CE(target), with
                L_sparsity = -(1/k) * sum_l W_l * sum_n F(beta * a_{l,n}) over the compute layers
                l and their data inputs a_l (F = tanh unless the classifier was built with
                sigmoid); k = sum_l n_l.  A tensor read by several layers enters once per layer
``"act_l2"``    no knobs — sum of squares of the compute layers' input activations (Sponge L-BFGS)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # annotations only: the contract loads without onnx (auditor validate imports it)
    import onnx


class BudgetExceeded(Exception):
    """Raised by a classifier whose deadline (the audit's --max-seconds) has passed."""


class Classifier(ABC):
    """A batched image classifier in the raw pixel domain."""

    #: valid pixel range of the raw inputs
    bounds: tuple[float, float] = (0.0, 1.0)
    #: per-sample input shape, e.g. (1, 28, 28)
    input_shape: tuple[int, ...]
    num_classes: int
    #: names of the activation tensors returned by :meth:`activations` (compute-layer inputs)
    activation_names: list[str] = []

    @property
    def layer_tensors(self) -> list[str]:
        """The data input of each compute layer, one per layer (repeats where layers share an
        input); the "sparsity" objective's weights W_l follow this order.  Classifiers whose
        layers all read distinct tensors need not override it."""
        return list(self.activation_names)

    def __init__(self) -> None:
        self.queries = 0  # number of samples evaluated (forward or forward+backward)
        #: set by the audit while searches run: an object with .expired() (the --max-seconds budget)
        self.deadline = None

    def _check_deadline(self, need: float = 0.0) -> None:
        """Subclasses call this before every model evaluation (and every batch of one); raises
        BudgetExceeded when the deadline has passed or when work estimated to take ``need`` seconds
        (a batch, a gradient-graph build) would not end before it: onnxruntime calls cannot be
        interrupted, so the audit stops before one rather than after it."""
        if self.deadline is None:
            return
        try:
            due = self.deadline.expired(need)
        except TypeError:  # a deadline object without the estimate argument
            due = self.deadline.expired()
        if due:
            raise BudgetExceeded

    @abstractmethod
    def _logits(self, x: np.ndarray) -> np.ndarray: ...

    @abstractmethod
    def _value_and_grad(self, x: np.ndarray, objective: str, knobs: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Logits (N, num_classes) of a batch of raw inputs (N, *input_shape)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        self.queries += len(x)
        return self._logits(x)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.logits(x).argmax(axis=1)

    def value_and_grad(self, x: np.ndarray, objective: str, **knobs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(value (N,), d value/d x (N, *input_shape), logits (N, C)) in one forward+backward pass."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        self.queries += len(x)
        return self._value_and_grad(x, objective, knobs)

    def gradient_tensors(self) -> tuple[str, ...]:
        """Tensors the gradient pass can hand to a measurement besides its logits
        (:meth:`value_grad_measure`), each equal to what the classifier's forward pass computes
        for the same input; none by default."""
        return ()

    def value_grad_measure(self, x: np.ndarray, objective: str, measure, **knobs
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`value_and_grad` and, from the same pass, a per-input measurement of ``x``:
        ``measure = (tensors, fn)`` with ``tensors`` among :meth:`gradient_tensors`, and
        ``fn(tensors, logits, rows) -> (m,)`` called on each chunk of inputs (rows ``rows`` of
        ``x``) with the chunk's ``tensors`` (name -> array) and logits, so that they live one chunk
        at a time.  Returns
        ``(value, grad, logits, measured (N,))``."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        self.queries += len(x)
        return self._value_grad_measure(x, objective, knobs, measure)

    def _value_grad_measure(self, x: np.ndarray, objective: str, knobs: dict, measure):
        raise NotImplementedError(f"{type(self).__name__} hands no tensors from its gradient pass")

    def activations(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """The compute layers' input activations for a batch (name -> array with batch first)."""
        raise NotImplementedError(f"{type(self).__name__} does not expose activations")


class ModelClassifier(Classifier):
    """A :class:`Classifier` over an ONNX model: everything the audit pipeline reads of one beyond
    what an attack sees (the clean evaluation, the cost models, the energy searches, the reports
    and the independent verifiers use these members).

    Implementations: :class:`auditor.runtime.session.OnnxClassifier` (the exact model, run by
    onnxruntime) and :class:`auditor.runtime.approx.ApproxClassifier` (the same model with its
    products on an approximate multiplier), which differs from it only in its forward pass and
    in the feeds of its (BPDA) gradient graphs.
    """

    #: the model as deployed, before the preprocessing is prepended (the verifiers run it)
    base_model: onnx.ModelProto
    #: the model in the raw pixel domain: preprocessing prepended, logits (N, C) as first output
    model: onnx.ModelProto
    #: ``model`` with every probed tensor (activations, compute-layer inputs) as an output
    instrumented: onnx.ModelProto
    #: how the logits were found (:class:`auditor.model.rewrite.head.Head`)
    head: object
    #: what ``instrumented`` outputs (:class:`auditor.model.rewrite.instrument.Probes`)
    probes: object
    #: the scenario's preprocessing (:class:`auditor.model.rewrite.preprocess.Preprocessing`)
    preprocessing: object
    #: onnxruntime intra-op threads (0 = its default)
    threads: int
    #: inputs evaluated together at most (the scenario's batch_size)
    batch_size: int
    #: F of the sparsity objective ("tanh" or "sigmoid")
    sparsity_f: str
    #: the logits tensor of ``model`` and ``instrumented``, and their data input
    logits_name: str
    input_name: str
    #: the model's fixed batch size (None: any batch)
    fixed_batch: int | None

    @property
    def layers(self):
        """The compute layers (:class:`auditor.model.layers.ComputeLayer`), in graph order."""
        return self.probes.layers

    @property
    def layer_tensors(self) -> list[str]:
        return list(self.probes.layer_tensors)

    @property
    @abstractmethod
    def batch_note(self) -> str:
        """How many inputs one forward run evaluates, and why (for the report)."""

    @abstractmethod
    def forward(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Logits and every probed tensor of ``instrumented`` for a batch, in one pass."""

    def activations(self, x: np.ndarray) -> dict[str, np.ndarray]:
        out = self.forward(x)
        return {k: out[k] for k in self.activation_names}
