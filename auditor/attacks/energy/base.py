"""What every energy-latency search shares: the result record, parameter checking, the uniform call.

A *search* is configured once (``WhiteBoxSparsity(beta=15, eps=0.9)`` or, from a scenario file,
``make_search("whitebox", beta=15, eps=0.9)``) and then called on a model and a batch:

    result = search(model, x_clean, cost_fn=cost, layer_weights=w, labels=None, seed=0)

``cost_fn(x) -> (N,) float64`` is the simulated cost (latency or energy, the caller's choice) of raw
inputs; every search either maximises it directly (zero-knowledge searches) or uses it to pick the
best of its candidates, and reports it for the inputs it returns.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import numpy as np

from ...errors import AuditorError
from ...registry import Registry
from ..base import Configurable, check_inputs, registrar

#: every energy-latency search, registered by its module (names and other spellings)
SEARCHES: "Registry[type[Search]]" = Registry("search")
register_search = registrar(SEARCHES)

CostFn = Callable[[np.ndarray], np.ndarray]


@dataclass
class SearchResult:
    """What a search found.

    ``x``           (N, *input_shape) float32 — the inputs found (raw pixel domain)
    ``cost``        (N,) float64 — ``cost_fn`` of those inputs
    ``queries``     samples sent to the system under attack: model evaluations (forward or
                    forward+backward) plus cost measurements; ``info`` splits them
    ``iterations``  optimisation steps (attack iterations, generations, L-BFGS iterations, ...)
    ``seconds``     wall-clock time of the whole search
    ``label_kept``  (N,) bool — whether the model still gives the clean label, for searches that
                    must keep it (white-box, black-box); None for the others
    ``info``        search-specific details (clean cost, histories, chosen parameters, ...)
    """

    search: str
    x: np.ndarray
    cost: np.ndarray
    queries: int
    iterations: int
    seconds: float
    label_kept: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Base class
# --------------------------------------------------------------------------------------------


class Search(Configurable):
    """Base of all searches: the checks of the uniform call and its accounting.

    Subclasses are registered with ``@register_search("name", aliases=(...))``, declare
    ``PARAMS`` (their tunables, :class:`auditor.attacks.base.Param`) and implement :meth:`_run`.
    """

    kind = "search"
    #: fields of its scenario entry (besides ``params``) the search cannot run without, e.g. the
    #: black-box search's ``surrogate`` model; ``auditor validate`` and the audit both read it
    needs: ClassVar[frozenset[str]] = frozenset()
    #: whether the search works from clean inputs and must keep their label
    needs_clean: ClassVar[bool] = True
    #: whether each input's result depends on that input alone (the audit may then split the
    #: inputs in chunks); false for searches over a population, a grid or a ranking of them all
    per_input: ClassVar[bool] = True

    # the uniform call --------------------------------------------------------------------------
    def __call__(self, model, x_clean, *, cost_fn: CostFn, layer_weights=None, labels=None, seed: int = 0) -> SearchResult:
        where = self.where
        x_clean = check_inputs(model, x_clean, where)
        if not callable(cost_fn):
            raise AuditorError("cost_fn must be callable", where)
        if labels is not None:
            labels = np.asarray(labels)
            if labels.shape != (len(x_clean),) or not np.issubdtype(labels.dtype, np.integer):
                raise AuditorError(f"labels must be {len(x_clean)} integers, got shape {labels.shape} dtype {labels.dtype}", where)
            labels = labels.astype(np.int64)
        seed = int(seed)
        budget = _Counter(cost_fn, where, model)
        q0 = getattr(model, "queries", 0)
        t0 = time.perf_counter()
        res = self._run(model, x_clean, budget, layer_weights, labels, seed)
        res.seconds = time.perf_counter() - t0
        # model evaluations the search made itself (those inside cost_fn are cost measurements)
        mq = int(getattr(model, "queries", 0) - q0) - budget.model_queries
        res.info.setdefault("model_queries", mq)
        res.info.setdefault("cost_queries", budget.samples)
        res.queries = int(res.info["model_queries"] + res.info["cost_queries"])
        res.info.setdefault("params", self.settings())
        res.info.setdefault("seed", seed)
        return res

    def _run(self, model, x_clean, cost_fn: "_Counter", layer_weights, labels, seed) -> SearchResult:
        raise NotImplementedError


class _Counter:
    """Wraps cost_fn: checks its output and counts the samples measured."""

    def __init__(self, fn: CostFn, where: str, model=None):
        self.fn, self.where, self.samples, self.calls = fn, where, 0, 0
        self.model, self.model_queries = model, 0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if len(x) == 0:
            return np.zeros(0, dtype=np.float64)
        q0 = getattr(self.model, "queries", 0)
        c = np.asarray(self.fn(x), dtype=np.float64).reshape(-1)
        self.model_queries += int(getattr(self.model, "queries", 0) - q0)
        return self._counted(c, len(x))

    def _counted(self, c: np.ndarray, n: int) -> np.ndarray:
        if c.shape != (n,):
            raise AuditorError(f"cost_fn returned shape {c.shape} for {n} inputs", self.where)
        if not np.all(np.isfinite(c)):
            raise AuditorError("cost_fn returned non-finite costs", self.where)
        self.samples += n
        self.calls += 1
        return c

    def tensors(self) -> tuple[str, ...] | None:
        """The tensors this cost is computed from when the search's model hands them all over
        from its gradient pass (``cost_fn.of_outputs``, ``model.gradient_tensors``), so that an
        iterate is measured without a forward pass of its own; None when it cannot be."""
        fn, model = self.fn, self.model
        need = getattr(fn, "tensors", None)
        if not need or getattr(fn, "model", None) is not model or not hasattr(fn, "of_outputs"):
            return None
        have = set(getattr(model, "gradient_tensors", lambda: ())())
        return tuple(need) if set(need) <= have else None

    def of_outputs(self, out: dict[str, np.ndarray], n: int) -> np.ndarray:
        """The cost of the ``n`` inputs whose :meth:`tensors` ``out`` holds, counted as measured."""
        if n == 0:
            return np.zeros(0, dtype=np.float64)
        return self._counted(np.asarray(self.fn.of_outputs(out), dtype=np.float64).reshape(-1), n)


def chunks(n: int, size: int):
    size = max(int(size), 1)
    for s in range(0, n, size):
        yield slice(s, min(s + size, n))


def layer_names(model) -> list[str]:
    """The data input of each compute layer, one per layer (the order of W_l)."""
    return list(getattr(model, "layer_tensors", None) or getattr(model, "activation_names", []) or [])


def layer_sizes(model, x1: np.ndarray) -> np.ndarray | None:
    """Per-sample element count of each compute layer's data input (None if activations are hidden)."""
    try:
        acts = model.activations(x1[:1])
    except NotImplementedError:
        return None
    names = layer_names(model) or list(acts.keys())
    return np.array([int(np.prod(np.asarray(acts[k]).shape[1:])) for k in names], dtype=np.float64)


def resolve_layer_weights(model, layer_weights, x_clean: np.ndarray, where: str) -> np.ndarray:
    """W_l for the "sparsity" objective, rescaled so that sum_l W_l n_l = k (total neurons).

    The rescaling keeps L_sparsity in [-1, 0] whatever scale the caller's shares have, so the
    trade-off constant c means the same with hardware weights as with uniform ones (reading the
    layer sizes costs one forward pass of one sample).
    """
    names = layer_names(model)
    if layer_weights is None:
        if not names:
            raise AuditorError("the model exposes no compute layers (layer_tensors is empty)", where)
        return np.ones(len(names), dtype=np.float32)
    w = np.asarray(layer_weights, dtype=np.float64).reshape(-1)
    if names and len(w) != len(names):
        raise AuditorError(f"layer_weights has {len(w)} entries but the model has {len(names)} compute layers", where)
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise AuditorError("layer_weights must be finite, non-negative and not all zero", where)
    sizes = layer_sizes(model, x_clean)
    if sizes is None or len(sizes) != len(w):
        w = w * len(w) / w.sum()
    else:
        w = w * sizes.sum() / float((w * sizes).sum())
    return w.astype(np.float32)
