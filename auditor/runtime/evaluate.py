"""One forward pass -> logits, activation densities and the hardware cost of every input.

This is the single place where a batch of raw inputs is turned into what the verdict is made of;
the clean audit, every energy-latency search (through :func:`cost_fn`) and the re-verification
of every reported input all call it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..hw.base import CostResult
from ..norms import density
from .classifier import ModelClassifier


@dataclass
class Evaluation:
    logits: np.ndarray  # (N, C)
    densities: dict[str, np.ndarray]  # tensor -> (N,)
    sizes: dict[str, int]  # tensor -> elements per sample
    counted: tuple[str, ...]  # tensors counted in the model-wide density
    model_density: np.ndarray  # (N,) element-weighted mean over `counted`
    cost: CostResult | None

    @property
    def pred(self) -> np.ndarray:
        return self.logits.argmax(axis=1)

    @classmethod
    def concat(cls, parts: list["Evaluation"]) -> "Evaluation":
        """The evaluations of consecutive chunks of inputs as one (same model, same machine)."""
        first = parts[0]
        cost = None if first.cost is None else CostResult.concat([p.cost for p in parts])
        return cls(np.concatenate([p.logits for p in parts]),
                   {t: np.concatenate([p.densities[t] for p in parts]) for t in first.densities},
                   dict(first.sizes), first.counted, np.concatenate([p.model_density for p in parts]), cost)


def eval_batch(clf) -> int:
    """Inputs evaluated together: the classifier's runner batch (bounded by its memory budget,
    :data:`auditor.runtime.session.MEMORY_BUDGET`), or its batch_size."""
    runner = getattr(clf, "runner", None)
    return int(getattr(runner, "batch_size", 0) or getattr(clf, "batch_size", 0) or 64)


def batch_note(clf) -> str:
    """How many inputs one forward run evaluates, and why (for the report)."""
    return getattr(clf, "batch_note", None) or f"{eval_batch(clf)} (the scenario's batch_size)"


def evaluate(clf: ModelClassifier, x: np.ndarray, cost_model=None, counted: str = "activations") -> Evaluation:
    """Logits, densities and cost of ``x``, streamed batch by batch (:func:`eval_batch`): only the
    per-input summaries of a batch outlive it, never its activations."""
    step = eval_batch(clf)
    if len(x) <= step:
        return _evaluate(clf, x, cost_model, counted)
    return Evaluation.concat([_evaluate(clf, x[s:s + step], cost_model, counted) for s in range(0, len(x), step)])


def _evaluate(clf: ModelClassifier, x: np.ndarray, cost_model, counted: str) -> Evaluation:
    out = clf.forward(x)
    tensors = clf.probes.tensors
    dens = {t: density(out[t]) for t in tensors}
    sizes = {t: int(np.prod(out[t].shape[1:])) for t in tensors}
    # what a zero-skipping machine can skip (auditor.model.rewrite.instrument.DENSITY_RULES): activations that
    # reach a compute layer's data input, or the data inputs themselves
    names = clf.probes.counted(counted)
    total = sum(sizes[t] for t in names)
    model_density = sum(dens[t] * sizes[t] for t in names) / max(total, 1)
    cost = None if cost_model is None else simulate(clf, cost_model, out)
    return Evaluation(out[clf.logits_name], dens, sizes, tuple(names), model_density, cost)


def simulate(clf: ModelClassifier, cost_model, out: dict[str, np.ndarray]) -> CostResult:
    """The cost of the inputs whose compute-layer inputs ``out`` holds (a forward pass's outputs)."""
    return cost_model.simulate(list(clf.probes.layers), {t: out[t] for t in clf.probes.layer_inputs})


class cost_fn:
    """x -> (N,) simulated latency [s] or energy [J] of raw inputs (what the sponge searches
    maximise), streamed batch by batch (:func:`eval_batch`).

    ``of_outputs(out)`` is the same cost of inputs whose compute-layer inputs (``tensors``) are
    already at hand, e.g. from the forward part of a gradient pass of ``model``
    (:meth:`~auditor.runtime.classifier.Classifier.value_grad_measure`): the cost of the same
    activations without a forward pass of their own."""

    def __init__(self, clf: ModelClassifier, cost_model, what: str = "latency"):
        self.model, self.cost_model, self.what = clf, cost_model, what
        self.tensors = tuple(clf.probes.layer_inputs)

    def of_outputs(self, out: dict[str, np.ndarray]) -> np.ndarray:
        c = simulate(self.model, self.cost_model, out)
        return c.latency_s if self.what == "latency" else c.energy_total_j

    def __call__(self, x: np.ndarray) -> np.ndarray:
        step = eval_batch(self.model)
        parts = [self.of_outputs(self.model.forward(x[s:s + step])) for s in range(0, len(x), step)]
        return np.concatenate(parts) if parts else np.zeros(0, np.float64)


def per_input(clf: ModelClassifier, ev: Evaluation, mask=None) -> dict:
    """Per-input values (for distributions in reports): latency, energy, density, per-layer density."""
    sel = slice(None) if mask is None else mask
    c = ev.cost
    r = lambda v: [float(f"{x:.6g}") for x in np.asarray(v, dtype=np.float64)[sel]]  # noqa: E731
    return {"latency_s": r(c.latency_s), "energy_j": r(c.energy_total_j), "density": r(ev.model_density),
            "layer_density": {layer.name: r(ev.densities[layer.input]) for layer in clf.probes.layers}}
