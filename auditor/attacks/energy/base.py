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

from ...errors import AuditorError, short
from ...progress import Progress
from ...registry import Registry
from ..base import registrar

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

    @property
    def n(self) -> int:
        return len(self.x)

    @property
    def seconds_per_example(self) -> float:
        return self.seconds / max(self.n, 1)

    def summary(self) -> dict[str, Any]:
        """A small JSON-able digest (for reports)."""
        out = {
            "search": self.search,
            "n": self.n,
            "cost_mean": float(np.mean(self.cost)) if self.n else float("nan"),
            "queries": int(self.queries),
            "iterations": int(self.iterations),
            "seconds": round(float(self.seconds), 4),
            "seconds_per_example": round(float(self.seconds_per_example), 6),
        }
        if self.label_kept is not None:
            out["label_kept_rate"] = float(np.mean(self.label_kept)) if self.n else float("nan")
        if "cost_clean" in self.info:
            clean = float(np.mean(self.info["cost_clean"]))
            out["cost_clean_mean"] = clean
            out["cost_increase"] = out["cost_mean"] / clean if clean > 0 else float("nan")
        return out


# --------------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Param:
    """One tunable of a search: kind, default, allowed range, a line of documentation.

    kinds: "int", "float", "float?" (None allowed = unlimited; "auto" too where it is the default:
    the search resolves it from its input), "bool", "choice", "floats"
    (a list of floats), "object" (passed through, e.g. a surrogate Classifier).
    """

    kind: str
    default: Any
    doc: str = ""
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # low excluded
    choices: tuple = ()


def _num(value, name: str, where: str) -> float:
    if isinstance(value, bool):
        raise AuditorError(f"parameter '{name}' must be a number, got {short(value)}", where)
    if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
        try:
            value = float(value.strip())
        except ValueError:
            raise AuditorError(f"parameter '{name}' must be a number, got {short(value)}", where) from None
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise AuditorError(f"parameter '{name}' must be a number, got {short(value)}", where) from None
    if not np.isfinite(out):
        raise AuditorError(f"parameter '{name}' must be finite, got {short(value)}", where)
    return out


def coerce(spec: Param, name: str, value, where: str):
    """Check and convert one parameter value (AuditorError on bad input)."""
    if spec.kind == "object":
        return value
    if spec.kind == "float?" and (value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null", "inf"))):
        return None
    if spec.kind == "float?" and spec.default == "auto" and isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"  # resolved by the search from the input it is given
    if spec.kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "yes", "on", "false", "no", "off"):
            return value.strip().lower() in ("true", "yes", "on")
        raise AuditorError(f"parameter '{name}' must be true or false, got {short(value)}", where)
    if spec.kind == "choice":
        v = str(value).strip().lower() if isinstance(value, str) else value
        if v not in spec.choices:
            raise AuditorError(f"parameter '{name}' must be one of {', '.join(map(str, spec.choices))}; got {short(value)}", where)
        return v
    if spec.kind == "floats":
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            value = [value]
        try:
            vals = [_num(v, name, where) for v in value]
        except TypeError:
            raise AuditorError(f"parameter '{name}' must be a list of numbers, got {short(value)}", where) from None
        if not vals:
            raise AuditorError(f"parameter '{name}' must not be empty", where)
        for v in vals:
            _check_range(spec, name, v, where)
        return vals
    v = _num(value, name, where)
    if spec.kind == "int":
        if v != int(v):
            raise AuditorError(f"parameter '{name}' must be an integer, got {short(value)}", where)
        v = int(v)
    _check_range(spec, name, v, where)
    return v


#: an integer parameter without a declared maximum may not exceed this (sizes and counts beyond
#: it only exhaust memory or time)
MAX_INT_PARAM = 1_000_000


def _check_range(spec: Param, name: str, v: float, where: str) -> None:
    if spec.kind == "int" and spec.high is None and abs(v) > MAX_INT_PARAM:
        raise AuditorError(f"parameter '{name}' must be <= {MAX_INT_PARAM}, got {v}", where)
    if spec.low is not None and (v < spec.low or (spec.low_open and v == spec.low)):
        rel = ">" if spec.low_open else ">="
        raise AuditorError(f"parameter '{name}' must be {rel} {spec.low}, got {v}", where)
    if spec.high is not None and v > spec.high:
        raise AuditorError(f"parameter '{name}' must be <= {spec.high}, got {v}", where)


# --------------------------------------------------------------------------------------------
# Base class
# --------------------------------------------------------------------------------------------


class Search:
    """Base of all searches: parameter handling and the checks of the uniform call.

    Subclasses declare ``name``, ``PARAMS`` (name -> :class:`Param`) and implement :meth:`_run`.
    """

    name: ClassVar[str] = "search"
    PARAMS: ClassVar[dict[str, Param]] = {}
    #: fields of its scenario entry (besides ``params``) the search cannot run without, e.g. the
    #: black-box search's ``surrogate`` model; ``auditor validate`` and the audit both read it
    needs: ClassVar[frozenset[str]] = frozenset()
    #: whether the search works from clean inputs and must keep their label
    needs_clean: ClassVar[bool] = True
    #: whether each input's result depends on that input alone (the audit may then split the
    #: inputs in chunks); false for searches over a population, a grid or a ranking of them all
    per_input: ClassVar[bool] = True

    def __init__(self, **params):
        where = f"search '{self.name}'"
        unknown = sorted(set(params) - set(self.PARAMS))
        if unknown:
            raise AuditorError(f"unknown parameter(s) {', '.join(unknown)}; valid: {', '.join(sorted(self.PARAMS))}", where)
        self.params: dict[str, Any] = {}
        for k, spec in self.PARAMS.items():
            self.params[k] = coerce(spec, k, params[k], where) if k in params else spec.default
        self._check_params(where)

    def _check_params(self, where: str) -> None:
        """Cross-parameter checks of a subclass."""

    def __getattr__(self, item):
        params = self.__dict__.get("params")
        if params is not None and item in params:
            return params[item]
        raise AttributeError(item)

    def __repr__(self) -> str:
        shown = {k: v for k, v in self.params.items() if self.PARAMS[k].kind != "object"}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in shown.items())})"

    # the uniform call --------------------------------------------------------------------------
    def __call__(self, model, x_clean, *, cost_fn: CostFn, layer_weights=None, labels=None, seed: int = 0) -> SearchResult:
        where = f"search '{self.name}'"
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
        res.info.setdefault("params", {k: v for k, v in self.params.items() if self.PARAMS[k].kind != "object"})
        res.info.setdefault("seed", seed)
        return res

    run = __call__

    def _run(self, model, x_clean, cost_fn: "_Counter", layer_weights, labels, seed) -> SearchResult:
        raise NotImplementedError

    def progress(self, label: str, total: int) -> Progress:
        enabled = self.params.get("progress")
        return Progress(label, total, enabled=None if enabled is None else bool(enabled))


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
        if c.shape != (len(x),):
            raise AuditorError(f"cost_fn returned shape {c.shape} for {len(x)} inputs", self.where)
        if not np.all(np.isfinite(c)):
            raise AuditorError("cost_fn returned non-finite costs", self.where)
        self.samples += len(x)
        self.calls += 1
        return c


def check_inputs(model, x, where: str) -> np.ndarray:
    x = np.asarray(x)
    shape = tuple(getattr(model, "input_shape", x.shape[1:]) or x.shape[1:])
    if x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != shape:
        raise AuditorError(f"inputs must have shape (N, {', '.join(map(str, shape))}), got {x.shape}", where)
    if len(x) == 0:
        raise AuditorError("no inputs given", where)
    x = x.astype(np.float32)
    if not np.all(np.isfinite(x)):
        raise AuditorError("inputs contain NaN or infinite values", where)
    lo, hi = bounds_of(model)
    if x.min() < lo - 1e-6 or x.max() > hi + 1e-6:
        raise AuditorError(f"inputs must lie in the pixel range [{lo}, {hi}], got [{x.min():.4g}, {x.max():.4g}]", where)
    return np.clip(x, lo, hi)


def bounds_of(model) -> tuple[float, float]:
    b = getattr(model, "bounds", (0.0, 1.0)) or (0.0, 1.0)
    return float(b[0]), float(b[1])


def chunks(n: int, size: int):
    size = max(int(size), 1)
    for s in range(0, n, size):
        yield slice(s, min(s + size, n))


def cross_entropy(logits: np.ndarray, target: np.ndarray) -> np.ndarray:
    """-log softmax(z)[target] per sample, float64."""
    z = np.asarray(logits, np.float64)
    m = z.max(axis=1, keepdims=True)
    lse = (m + np.log(np.exp(z - m).sum(axis=1, keepdims=True)))[:, 0]
    return lse - z[np.arange(len(z)), target]


def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, np.float64)
    m = z.max(axis=1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=1, keepdims=True))


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
