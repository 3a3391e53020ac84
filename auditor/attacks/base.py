"""What evasion attacks, energy-latency searches and input defences share.

* :class:`Param` — one tunable: kind, default, allowed range or choices, meaning.  A class
  declares its tunables once, in ``PARAMS`` (name -> Param); that one declaration checks the
  ``params:`` of a scenario entry (:class:`Configurable`), types them in the scenario's JSON
  Schema and documents them (``auditor list``, docs/reference.md), through :mod:`auditor.catalog`.
* :class:`Configurable` — the base of every attack, search and defence: builds an instance from
  its parameters (unknown, ill-typed or out-of-range ones are an :class:`AuditorError` naming the
  parameter), exposes them as attributes and as ``params``, and draws its progress bar.
* :func:`registrar` — the class decorator that registers a class under the name scenario files
  use, so the module that defines a class is all it takes to add one.
* :func:`check_inputs` — the checks of a batch of raw inputs every uniform call starts with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar, TypeVar

import numpy as np

from ..errors import AuditorError, short
from ..progress import Progress
from ..registry import Registry
from ..norms import within_bounds

T = TypeVar("T", bound=type)

#: the kinds of :class:`Param`
KINDS = ("int", "float", "float?", "bool", "bool?", "choice", "choices", "floats", "object")

#: an integer parameter without a declared maximum may not exceed this (sizes and counts beyond
#: it only exhaust memory or time)
MAX_INT_PARAM = 1_000_000

_TRUE, _FALSE = ("true", "yes", "on"), ("false", "no", "off")
_NULL = ("none", "null")


@dataclass(frozen=True)
class Param:
    """One tunable of an attack, search or defence.

    ``kind``: ``"int"``, ``"float"``, ``"float?"`` (None allowed — unlimited or automatic; the
    string ``"auto"`` too where it is the default: the class resolves it from its input),
    ``"bool"``, ``"bool?"`` (None = automatic), ``"choice"`` (one of ``choices``), ``"choices"``
    (a non-empty list of them, None = all), ``"floats"`` (a non-empty list of numbers) or
    ``"object"`` (passed through, e.g. a surrogate Classifier; not part of a scenario file).
    ``low``/``high`` bound numbers (``low_open``: ``low`` itself excluded); ``required``: no
    default, the parameter must be given.
    """

    kind: str
    default: Any = None
    doc: str = ""
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    choices: tuple = ()
    required: bool = False

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown parameter kind {self.kind!r}")

    # -- checking ------------------------------------------------------------------------------
    def coerce(self, name: str, value, where: str):
        """``value`` checked and converted (AuditorError naming ``name`` when it does not fit)."""
        kind = self.kind
        if kind == "object":
            return value
        if kind in ("float?", "bool?", "choices") and (value is None or _word(value) in _NULL
                                                       or (kind == "float?" and _word(value) == "inf")):
            return None
        if kind == "float?" and self.default == "auto" and _word(value) == "auto":
            return "auto"  # resolved by the class from the input it is given
        if kind in ("bool", "bool?"):
            if isinstance(value, (bool, np.bool_)):
                return bool(value)
            if _word(value) in _TRUE + _FALSE:
                return _word(value) in _TRUE
            raise AuditorError(f"parameter '{name}' must be true or false, got {short(value)}", where)
        if kind == "choice":
            return self._choice(name, value, where)
        if kind == "choices":
            if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)) or not value:
                raise AuditorError(f"parameter '{name}' must be a non-empty list of "
                                   f"{', '.join(map(str, self.choices))}, got {short(value)}", where)
            return [self._choice(name, v, where) for v in value]
        if kind == "floats":
            if isinstance(value, (int, float, str)) and not isinstance(value, bool):
                value = [value]
            try:
                vals = [_number(v, name, where) for v in value]
            except TypeError:
                raise AuditorError(f"parameter '{name}' must be a list of numbers, got {short(value)}", where) from None
            if not vals:
                raise AuditorError(f"parameter '{name}' must not be empty", where)
            for v in vals:
                self._check_range(name, v, where)
            return vals
        v = _number(value, name, where)
        if kind == "int":
            if v != int(v):
                raise AuditorError(f"parameter '{name}' must be an integer, got {short(value)}", where)
            v = int(v)
        self._check_range(name, v, where)
        return v

    def _choice(self, name: str, value, where: str):
        v = value.strip().lower() if isinstance(value, str) else value
        if isinstance(v, bool) or v not in self.choices:
            raise AuditorError(f"parameter '{name}' must be one of {', '.join(map(str, self.choices))}; "
                               f"got {short(value)}", where)
        return v

    def _check_range(self, name: str, v: float, where: str) -> None:
        if self.kind == "int" and self.high is None and abs(v) > MAX_INT_PARAM:
            raise AuditorError(f"parameter '{name}' must be <= {MAX_INT_PARAM}, got {v}", where)
        if self.low is not None and (v < self.low or (self.low_open and v == self.low)):
            raise AuditorError(f"parameter '{name}' must be {'>' if self.low_open else '>='} {self.low}, got {v}", where)
        if self.high is not None and v > self.high:
            raise AuditorError(f"parameter '{name}' must be <= {self.high}, got {v}", where)

    # -- describing ----------------------------------------------------------------------------
    def describe(self) -> dict:
        """The catalog entry: type, default, meaning, and the bounds or choices."""
        e: dict = {"type": self.kind, "default": None if self.kind == "object" else _plain(self.default),
                   "doc": self.doc}
        if self.required:
            e["required"] = True
        if self.low is not None:
            e["exclusiveMinimum" if self.low_open else "minimum"] = self.low
        if self.high is not None or self.kind == "int":
            e["maximum"] = self.high if self.high is not None else MAX_INT_PARAM
        if self.choices:
            e["choices"] = [_plain(c) for c in self.choices]
        return e

    def json_schema(self) -> dict:
        """The JSON Schema of a value of this parameter in a scenario file."""
        number = {"int": "integer"}.get(self.kind, "number")
        if self.kind in ("choice", "choices"):
            s: dict = {"enum": [_plain(c) for c in self.choices]}
            if self.kind == "choices":
                s = {"type": ["array", "null"], "items": s, "minItems": 1}
        elif self.kind in ("bool", "bool?"):
            s = {"type": "boolean" if self.kind == "bool" else ["boolean", "null"]}
        elif self.kind == "floats":
            s = {"type": "array", "items": self._bounded({"type": "number"}), "minItems": 1}
        else:
            s = self._bounded({"type": number if self.kind != "float?" else ["number", "null"]})
            if self.kind == "float?" and self.default == "auto":
                s = {"anyOf": [s, {"const": "auto"}]}
        s["description"] = self.doc
        if self.default is not None and not self.required:
            s["default"] = _plain(self.default)
        return s

    def _bounded(self, s: dict) -> dict:
        if self.low is not None:
            s["exclusiveMinimum" if self.low_open else "minimum"] = self.low
        if self.high is not None:
            s["maximum"] = self.high
        elif self.kind == "int":
            s["maximum"] = MAX_INT_PARAM
        return s


def _word(value) -> str | None:
    return value.strip().lower() if isinstance(value, str) else None


def _plain(v):
    return list(v) if isinstance(v, tuple) else v


def _number(value, name: str, where: str) -> float:
    if isinstance(value, (bool, np.bool_)):
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


def plumbing(batch_size: int | None = None) -> dict[str, Param]:
    """The parameters that are plumbing, not tuning: ``batch_size`` (when the class batches,
    with its default) and ``progress``."""
    out = {}
    if batch_size is not None:
        out["batch_size"] = Param("int", batch_size, "plumbing: inputs processed together", low=1)
    out["progress"] = Param("bool?", None, "show a progress bar (default: when stderr is a terminal)")
    return out


class Configurable:
    """The base of every attack, search and defence: parameters from one declaration.

    Subclasses declare ``PARAMS`` (name -> :class:`Param`, in the order positional arguments
    take them) and may override :meth:`_configure` for checks across parameters (and what is
    derived from them).  ``cls(**params)`` checks every parameter; the values are attributes
    (``self.steps``) and ``self.params`` is the whole mapping.
    """

    #: what the class is, in messages ("attack", "search", "defence")
    kind: ClassVar[str] = "component"
    #: the name it is registered under (set by :func:`registrar`)
    name: ClassVar[str] = ""
    PARAMS: ClassVar[dict[str, Param]] = {}

    def __init__(self, *args, **params):
        where = self.where
        names = list(self.PARAMS)
        if len(args) > len(names):
            raise AuditorError(f"takes at most {len(names)} positional parameters, got {len(args)}", where)
        for k, v in zip(names, args):
            if k in params:
                raise AuditorError(f"parameter '{k}' given twice", where)
            params[k] = v
        unknown = sorted(set(params) - set(names))
        if unknown:
            raise AuditorError(f"unknown parameter(s) {', '.join(unknown)}; valid: {', '.join(names)}", where)
        for k, spec in self.PARAMS.items():
            if k in params:
                value = spec.coerce(k, params[k], where)
            elif spec.required:
                raise AuditorError(f"parameter '{k}' is required", where)
            else:
                value = list(spec.default) if isinstance(spec.default, list) else spec.default
            setattr(self, k, value)
        self._configure()

    @property
    def where(self) -> str:
        return f"{self.kind} '{self.name}'"

    def _configure(self) -> None:
        """Checks across parameters (AuditorError with ``self.where``) and derived state."""

    @property
    def params(self) -> dict[str, Any]:
        """Every parameter and its value."""
        return {k: getattr(self, k) for k in self.PARAMS}

    def settings(self) -> dict[str, Any]:
        """The parameters a report shows (those a scenario file can give: no objects)."""
        return {k: getattr(self, k) for k, p in self.PARAMS.items() if p.kind != "object"}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.settings().items())})"

    def _bar(self, label: str, total: int) -> Progress:
        """A progress bar (drawn when ``progress`` says so, by default when stderr is a terminal)."""
        enabled = getattr(self, "progress", None)
        return Progress(label, total, enabled=None if enabled is None else bool(enabled))


def registrar(registry: Registry) -> Callable[..., Callable[[T], T]]:
    """The class decorator of ``registry``: ``@register("name", aliases=(...))`` sets the class's
    ``name`` and adds it to the registry, so the module that defines a class is all it takes."""
    def register(name: str, aliases: tuple[str, ...] = ()) -> Callable[[T], T]:
        def deco(cls: T) -> T:
            cls.name = name
            return registry.add(name, cls, aliases)
        return deco
    return register


# --------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------


def bounds_of(model) -> tuple[float, float]:
    """The pixel range of a model's raw inputs ([0, 1] when it declares none)."""
    b = getattr(model, "bounds", (0.0, 1.0)) or (0.0, 1.0)
    return float(b[0]), float(b[1])


def check_inputs(model, x, where: str) -> np.ndarray:
    """A batch of raw inputs for ``model``: numeric, shaped (N, *model.input_shape), N >= 1,
    finite and inside the pixel range (up to :data:`auditor.norms.PIXEL_TOL`, then clipped).
    -> float32 copy."""
    try:
        x = np.asarray(x, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise AuditorError(f"inputs are not numeric: {e}", where) from None
    shape = tuple(getattr(model, "input_shape", x.shape[1:]) or x.shape[1:])
    if x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != shape:
        raise AuditorError(f"inputs have shape {tuple(x.shape)}, the model expects (N, {', '.join(map(str, shape))})",
                           where)
    if len(x) == 0:
        raise AuditorError("no inputs given", where)
    if not np.all(np.isfinite(x)):
        raise AuditorError("inputs contain NaN or infinite values", where)
    lo, hi = bounds_of(model)
    if not within_bounds(x, (lo, hi)).all():
        raise AuditorError(f"inputs lie outside the valid pixel range [{lo:g}, {hi:g}] "
                           f"(min {x.min():.4g}, max {x.max():.4g})", where)
    return np.clip(x, lo, hi).astype(np.float32)
