"""The cost-model interface: what every hardware model takes and what it reports.

A cost model is a class with

* ``Params`` - a plain dataclass of its profile parameters.  Every field has a default and
  ``metadata={"doc", "unit", "source"}``; only int/float/bool/str (or ``Literal`` of str) fields.
  The YAML profile loader validates the ``params:`` section of a profile against it (unknown
  keys and wrong types are errors) and then calls ``Params.validate()`` (``ValueError`` on bad
  values).
* ``simulate(layers, acts) -> CostResult`` - ``layers`` is the list of
  :class:`~auditor.model.layers.ComputeLayer` of the model, ``acts[layer.input]`` the float32 data input
  of that layer for a batch: (N, C, H, W) for convolutions, (N, K) for Gemm/MatMul.  The cost of
  an input depends on the zeros of *its* activations.

:class:`CostResult` holds per-input, per-layer cycles and dynamic energy plus the derived
latency, total energy (dynamic + static power x latency), EDP and an energy breakdown, and the
helpers the attacks need (concatenation of batches, per-layer runtime/energy shares).

:func:`lower` turns a compute layer and its activation batch into the one geometry all kernels
work on: a grouped 2-D convolution over an NCHW tensor (Gemm/MatMul become a 1x1 convolution over
a (K, 1, 1) input; ConvTranspose becomes a stride-1 convolution over the zero-inserted input, whose
inserted zeros a sparsity-aware machine can skip like any other zero).
"""

from __future__ import annotations

import dataclasses
import math
import typing
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import numba
import numpy as np

from ..errors import AuditorError
from ..registry import Registry
from ..model.layers import ComputeLayer


# ----------------------------------------------------------------------------------------------
# Result
# ----------------------------------------------------------------------------------------------


@dataclass
class CostResult:
    """Cost of a batch of N inputs on one machine, per input and per compute layer (L layers)."""

    layer_names: list[str]
    cycles: np.ndarray  # (N, L) int64, cycles the machine spends on each layer
    dense_cycles: np.ndarray  # (N, L) int64, cycles of the same machine without zero skipping
    energy_j: np.ndarray  # (N, L) float64, dynamic energy per layer [J]
    latency_s: np.ndarray  # (N,) = cycles.sum(1) / clock_hz [s]
    energy_total_j: np.ndarray  # (N,) = energy_j.sum(1) + static_power_w * latency_s [J]
    edp: np.ndarray  # (N,) = energy_total_j * latency_s [J s]
    breakdown: dict[str, np.ndarray]  # name -> (N,) [J]; the entries sum to energy_total_j
    clock_hz: float
    static_power_w: float = 0.0

    @classmethod
    def build(cls, layer_names, cycles, dense_cycles, breakdown_layers: dict[str, np.ndarray],
              clock_hz: float, static_power_w: float) -> "CostResult":
        """Derive latency, totals and EDP from per-layer cycles and per-layer dynamic energies.

        ``breakdown_layers`` maps a component name (e.g. "mac") to its (N, L) dynamic energy [J];
        their sum is ``energy_j``; the breakdown gets a "static" entry = static power x latency.
        """
        cycles = np.asarray(cycles, dtype=np.int64)
        dense_cycles = np.asarray(dense_cycles, dtype=np.int64)
        n, nl = cycles.shape
        energy = np.zeros((n, nl), dtype=np.float64)
        breakdown = {}
        for k, v in breakdown_layers.items():
            v = np.asarray(v, dtype=np.float64)
            energy += v
            breakdown[k] = v.sum(axis=1)
        latency = cycles.sum(axis=1) / float(clock_hz)
        static = float(static_power_w) * latency
        breakdown["static"] = static
        total = energy.sum(axis=1) + static
        return cls(list(layer_names), cycles, dense_cycles, energy, latency, total, total * latency,
                   breakdown, float(clock_hz), float(static_power_w))

    # -- shape helpers -------------------------------------------------------------------------
    @property
    def n(self) -> int:
        return int(self.cycles.shape[0])

    def __len__(self) -> int:
        return self.n

    @property
    def total_cycles(self) -> np.ndarray:
        """(N,) cycles summed over layers."""
        return self.cycles.sum(axis=1)

    @property
    def speedup(self) -> np.ndarray:
        """(N,) dense cycles / cycles: the benefit of zero skipping for each input."""
        return self.dense_cycles.sum(axis=1) / np.maximum(self.cycles.sum(axis=1), 1)

    def layer_energy_j(self) -> np.ndarray:
        """(N, L) energy per layer including its share of static energy (static power x its time)."""
        return self.energy_j + self.static_power_w * self.cycles / self.clock_hz

    def select(self, index) -> "CostResult":
        """The result restricted to some inputs (an index array, a slice or a boolean mask)."""
        return CostResult(list(self.layer_names), self.cycles[index], self.dense_cycles[index],
                          self.energy_j[index], self.latency_s[index], self.energy_total_j[index],
                          self.edp[index], {k: v[index] for k, v in self.breakdown.items()},
                          self.clock_hz, self.static_power_w)

    @classmethod
    def concat(cls, results: list["CostResult"]) -> "CostResult":
        """Concatenate the results of several batches (same layers, same machine) along N."""
        if not results:
            raise ValueError("CostResult.concat needs at least one result")
        first = results[0]
        for r in results[1:]:
            if r.layer_names != first.layer_names or r.clock_hz != first.clock_hz \
                    or r.static_power_w != first.static_power_w or set(r.breakdown) != set(first.breakdown):
                raise ValueError("CostResult.concat: results are from different models or machines")

        def cat(name):
            return np.concatenate([getattr(r, name) for r in results], axis=0)

        return cls(list(first.layer_names), cat("cycles"), cat("dense_cycles"), cat("energy_j"),
                   cat("latency_s"), cat("energy_total_j"), cat("edp"),
                   {k: np.concatenate([r.breakdown[k] for r in results]) for k in first.breakdown},
                   first.clock_hz, first.static_power_w)

    # -- shares (attack layer weights W_l) ---------------------------------------------------------
    @staticmethod
    def _mean_share(per_layer: np.ndarray) -> np.ndarray:
        tot = per_layer.sum(axis=1, keepdims=True)
        share = np.divide(per_layer, tot, out=np.zeros_like(per_layer, dtype=np.float64), where=tot > 0)
        return share.mean(axis=0) if len(share) else share.sum(axis=0)

    def runtime_shares(self) -> np.ndarray:
        """(L,) fraction of the runtime spent in each layer, averaged over the inputs (sums to 1)."""
        return self._mean_share(self.cycles.astype(np.float64))

    def energy_shares(self) -> np.ndarray:
        """(L,) fraction of the total energy (dynamic + static) of each layer, averaged over inputs."""
        return self._mean_share(self.layer_energy_j())

    def shares(self) -> dict[str, dict[str, float]]:
        """{layer name: {"runtime": share, "energy": share}} averaged over the inputs."""
        rt, en = self.runtime_shares(), self.energy_shares()
        return {name: {"runtime": float(rt[i]), "energy": float(en[i])} for i, name in enumerate(self.layer_names)}

    def summary(self) -> dict:
        """Means over the inputs, as plain numbers (for reports)."""
        return {
            "n": self.n,
            "cycles": float(self.total_cycles.mean()) if self.n else 0.0,
            "dense_cycles": float(self.dense_cycles.sum(axis=1).mean()) if self.n else 0.0,
            "latency_s": float(self.latency_s.mean()) if self.n else 0.0,
            "energy_j": float(self.energy_total_j.mean()) if self.n else 0.0,
            "edp": float(self.edp.mean()) if self.n else 0.0,
            "speedup": float(self.speedup.mean()) if self.n else 0.0,
            "breakdown_j": {k: float(v.mean()) if self.n else 0.0 for k, v in self.breakdown.items()},
        }


# ----------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------


#: every cost model, by the ``cost_model:`` name of a hardware profile (filled by :func:`cost_model`)
COST_MODELS: Registry[type["CostModel"]] = Registry("cost model")


def cost_model(name: str):
    """Class decorator: register a :class:`CostModel` subclass as ``name`` (its ``kind``)."""
    def deco(cls):
        cls.kind = name
        return COST_MODELS.add(name, cls)
    return deco


class CostModel:
    """Base class of the cost models (see the module docstring for the contract)."""

    kind: ClassVar[str] = ""
    Params: ClassVar[type]

    @classmethod
    def from_params(cls, params=None) -> "CostModel":
        """The model with ``params``: a Params object, or an (already validated) mapping whose ints
        (and numeric strings such as PyYAML's '1.0e9') for float fields become floats."""
        if params is None or isinstance(params, cls.Params):
            return cls(params)
        hints = typing.get_type_hints(cls.Params)
        values = {k: float(v) if hints.get(k) is float and not isinstance(v, bool) and isinstance(v, (int, str)) else v
                  for k, v in dict(params).items()}
        try:
            p = cls.Params(**values)
        except (TypeError, ValueError) as e:
            raise AuditorError(f"params: {e}", where=cls.kind) from None
        return cls(p)

    @classmethod
    def from_profile(cls, profile) -> "CostModel":
        """The model of a hardware profile (:class:`auditor.hw.profile.HardwareProfile`); a model
        that reads more of the profile than its ``params`` overrides this."""
        return cls.from_params(profile.params)

    def __init__(self, params=None):
        if params is None:
            params = self.Params()
        elif isinstance(params, dict):
            params = self.Params(**params)
        if not isinstance(params, self.Params):
            raise TypeError(f"{type(self).__name__} expects {self.Params.__qualname__}, got {type(params).__name__}")
        check = getattr(params, "validate", None)
        if check is not None:
            try:
                check()
            except ValueError as e:
                raise AuditorError(f"params: {e}", where=self.kind or type(self).__name__) from None
        self.params = params

    def simulate(self, layers: list[ComputeLayer], acts: dict[str, np.ndarray]) -> CostResult:
        raise NotImplementedError

    @property
    def input_independent(self) -> bool:
        """True when the cost of an input does not depend on its values (a machine that never
        skips): energy-latency searches cannot slow it down, and the audit does not run them."""
        return False

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params!r})"


def param_doc(params_cls) -> list[dict]:
    """[{name, default, doc, unit, source}] of a Params dataclass (for reports and docs)."""
    out = []
    for f in dataclasses.fields(params_cls):
        md = f.metadata
        out.append({"name": f.name, "default": f.default, "doc": md.get("doc", ""),
                    "unit": md.get("unit", ""), "source": md.get("source", "")})
    return out


# ----------------------------------------------------------------------------------------------
# Lowering of compute layers to one grouped-convolution geometry
# ----------------------------------------------------------------------------------------------


class ConvGeom(NamedTuple):
    """A grouped 2-D convolution as the kernels see it (all ints)."""

    C: int  # input channels
    H: int
    W: int
    M: int  # output channels (filters)
    group: int
    KH: int
    KW: int
    sh: int
    sw: int
    pt: int  # zero padding top/left/bottom/right
    pl: int
    pb: int
    pr: int
    dh: int
    dw: int
    OH: int
    OW: int

    @property
    def Cg(self) -> int:
        return self.C // self.group

    @property
    def Mg(self) -> int:
        return self.M // self.group


def _out_size(size: int, k: int, s: int, p0: int, p1: int, d: int) -> int:
    return (size + p0 + p1 - d * (k - 1) - 1) // s + 1


def all_finite(x: np.ndarray) -> bool:
    """Whether every value of ``x`` is finite: a finite sum proves it (NaN and infinities
    propagate into the sum); only an overflowing sum needs the element-wise check."""
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(x.sum()):
            return True
    return bool(np.isfinite(x).all())


def check_finite(layer: ComputeLayer, x: np.ndarray) -> None:
    """AuditorError when the activation ``x`` of ``layer`` holds a NaN or an infinity."""
    if x.size and not all_finite(x):
        raise AuditorError(f"activation '{layer.input}' contains NaN or infinity", where=f"layer {layer.name}")


def lower(layer: ComputeLayer, x: np.ndarray, finite: bool = True) -> tuple[np.ndarray, ConvGeom]:
    """Check ``x`` against the layer and return it as an NCHW float32 array with its geometry.

    Raises :class:`AuditorError` when the activation does not fit the layer, or (``finite``) holds
    a NaN or an infinity; a caller whose kernel reads every value anyway passes ``finite=False``
    and has that kernel check (:func:`window_reads` with its ``layer``), saving a pass.
    """
    where = f"layer {layer.name}"
    x = np.asarray(x)
    if x.dtype != np.float32:
        x = x.astype(np.float32)
    exp = tuple(int(v) for v in layer.input_shape)
    if x.ndim < 1 or tuple(x.shape[1:]) != exp:
        raise AuditorError(f"activation '{layer.input}' has shape {tuple(x.shape)}, expected (N, {', '.join(map(str, exp))})",
                           where=where)
    if finite:
        check_finite(layer, x)
    op = layer.op_type
    if op in ("Gemm", "MatMul"):
        # rows x K input (rows = 1 for a plain FC layer): a 1x1 convolution over K channels at `rows`
        # positions, each row one output position
        if len(exp) < 1:
            raise AuditorError(f"{op} data input must be (..., K) per sample, got {exp}", where=where)
        k = exp[-1]
        rows = math.prod(exp[:-1])
        m = int(layer.output_shape[-1])
        x4 = np.ascontiguousarray(x.reshape(len(x), rows, k).transpose(0, 2, 1).reshape(len(x), k, rows, 1))
        return x4, ConvGeom(k, rows, 1, m, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, rows, 1)
    if op not in ("Conv", "ConvTranspose"):
        raise AuditorError(f"unsupported compute op '{op}' for the cost models", where=where)
    if len(exp) != 3 or len(layer.output_shape) != 3:
        raise AuditorError(f"{op} needs (C, H, W) input and (M, OH, OW) output shapes, got {exp} -> "
                           f"{tuple(layer.output_shape)}", where=where)
    C, H, W = exp
    M, OH, OW = (int(v) for v in layer.output_shape)
    KH, KW = (int(v) for v in layer.kernel)
    sh, sw = (int(v) for v in layer.strides)
    pt, pl, pb, pr = (int(v) for v in layer.pads)
    dh, dw = (int(v) for v in layer.dilations)
    g = int(layer.group)
    if g < 1 or C % g or M % g or min(KH, KW, sh, sw, dh, dw) < 1 or min(pt, pl, pb, pr) < 0:
        raise AuditorError(f"inconsistent {op} attributes (C={C}, M={M}, group={g}, kernel={layer.kernel}, "
                           f"strides={layer.strides}, dilations={layer.dilations}, pads={layer.pads})", where=where)
    if op == "ConvTranspose":
        # transposed conv = stride-1 conv over the input with (s-1) zeros inserted between pixels and
        # d*(k-1)-p zeros around it (extra at bottom/right for output_padding, read off the shape)
        UH, UW = (H - 1) * sh + 1, (W - 1) * sw + 1
        up = np.zeros((len(x), C, UH, UW), dtype=np.float32)
        up[:, :, ::sh, ::sw] = x
        qt, ql = dh * (KH - 1) - pt, dw * (KW - 1) - pl
        qb = OH - 1 + dh * (KH - 1) - (UH - 1) - qt  # so that UH + qt + qb - dh*(KH-1) == OH
        qr = OW - 1 + dw * (KW - 1) - (UW - 1) - ql
        # negative padding = cropping of the upsampled input
        y0, y1 = max(0, -qt), UH - max(0, -qb)
        x0, x1 = max(0, -ql), UW - max(0, -qr)
        if y1 <= y0 or x1 <= x0:
            raise AuditorError("ConvTranspose crops away its whole input", where=where)
        up = np.ascontiguousarray(up[:, :, y0:y1, x0:x1])
        geom = ConvGeom(C, y1 - y0, x1 - x0, M, g, KH, KW, 1, 1, max(qt, 0), max(ql, 0), max(qb, 0), max(qr, 0),
                        dh, dw, OH, OW)
        x = up
    else:
        geom = ConvGeom(C, H, W, M, g, KH, KW, sh, sw, pt, pl, pb, pr, dh, dw, OH, OW)
    if (_out_size(geom.H, KH, geom.sh, geom.pt, geom.pb, dh), _out_size(geom.W, KW, geom.sw, geom.pl, geom.pr, dw)) != (OH, OW):
        raise AuditorError(f"output shape {tuple(layer.output_shape)} does not match input {exp}, kernel {layer.kernel}, "
                           f"strides {layer.strides}, pads {layer.pads}, dilations {layer.dilations}", where=where)
    return np.ascontiguousarray(x), geom


def check_acts(layers: list[ComputeLayer], acts: dict[str, np.ndarray]) -> int:
    """Number of inputs N in the batch; every layer's data input must be present with the same N."""
    if not layers:
        raise AuditorError("the model has no compute layers (Conv/Gemm/MatMul) to cost")
    n = None
    for layer in layers:
        if layer.input not in acts:
            raise AuditorError(f"no activation '{layer.input}' given for layer {layer.name}")
        a = acts[layer.input]
        if n is None:
            n = len(a)
        elif len(a) != n:
            raise AuditorError(f"activation '{layer.input}' has batch size {len(a)}, expected {n}",
                               where=f"layer {layer.name}")
    return int(n)


def nonzero_mask(x: np.ndarray, threshold: float = 0.0) -> np.ndarray:
    """uint8 mask (same shape) of the activations a machine must process: |x| > threshold."""
    if threshold > 0:
        return (np.abs(x) > threshold).view(np.uint8)
    return (x != 0).view(np.uint8)


@numba.njit(cache=True, inline="always")
def inside_columns(x0: int, W: int, OW: int, sw: int) -> tuple[int, int]:
    """Output columns [lo, hi) whose input column ox*sw + x0 lies inside [0, W) (not padding)."""
    lo = 0
    if x0 < 0:
        lo = (-x0 + sw - 1) // sw
    hi = 0
    if W - 1 - x0 >= 0:
        hi = min(OW, (W - 1 - x0) // sw + 1)
    return lo, hi


#: window reads (values x kernel taps) below which a layer's kernels run on the calling thread
#: alone: a parallel region waits for its slowest thread, which on a loaded machine can be
#: descheduled for milliseconds, far longer than a small layer takes on one thread
PARALLEL_MIN_READS = 8_000_000


class kernel_threads:
    """``with kernel_threads(reads):`` runs the numba kernels inside on one thread when the layer
    is small (``reads`` < :data:`PARALLEL_MIN_READS`), on numba's threads otherwise."""

    def __init__(self, reads: int):
        self.serial = reads < PARALLEL_MIN_READS

    def __enter__(self):
        self.saved = numba.get_num_threads()
        if self.serial:
            numba.set_num_threads(1)

    def __exit__(self, *exc):
        numba.set_num_threads(self.saved)


def per_layer(fn, count: int, work) -> list:
    """``[fn(i) for i in range(count)]``, the layers spread over numba's thread count of Python
    threads, each running its kernels (which release the GIL) on one numba thread, the largest
    ``work[i]`` first.  Whole layers in parallel need one join per batch, where kernels parallel
    inside a layer need one per layer and each waits for its slowest thread (on a loaded machine,
    the one the scheduler left waiting).  With one thread, or fewer layers than two per thread,
    the layers run in turn (their kernels parallel inside when large, :class:`kernel_threads`)."""
    threads = numba.get_num_threads()
    if threads <= 1 or count < 2 * threads:
        return [fn(i) for i in range(count)]

    def one(i):
        numba.set_num_threads(1)  # per Python thread
        return i, fn(i)

    out = [None] * count
    with ThreadPoolExecutor(threads) as pool:
        for i, r in pool.map(one, sorted(range(count), key=lambda i: -work[i])):
            out[i] = r
    return out


def window_multiplicity(size: int, k: int, s: int, p0: int, d: int, out: int) -> np.ndarray:
    """(size,) int64: for each input row (or column), how many (output position, kernel offset)
    pairs of a convolution read it (oy * s - p0 + ky * d == iy).  The windows' reads of a layer
    factor per axis, so the number of times pixel (iy, ix) is read is mult_y[iy] * mult_x[ix]."""
    m = np.zeros(size, dtype=np.int64)
    for kk in range(k):
        idx = np.arange(out) * s - p0 + kk * d
        idx = idx[(idx >= 0) & (idx < size)]
        np.add.at(m, idx, 1)
    return m


@numba.njit(cache=True, parallel=True, nogil=True)
def _weighted_counts(x, my, mx, threshold):
    """sum over n's values v of [|v| > threshold] * my[iy] * mx[ix], per input n; and whether
    some value is not finite (v - v is NaN)."""
    N, C, H, W = x.shape
    parts = np.zeros(N * C, dtype=np.int64)
    bad = np.zeros(N * C, dtype=np.int32)
    for task in numba.prange(N * C):
        n = task // C
        c = task - n * C
        s = 0
        nf = np.int32(0)
        for iy in range(H):
            r = np.int32(0)
            for ix in range(W):
                v = x[n, c, iy, ix]
                r += np.int32(abs(v) > threshold) * mx[ix]
                nf |= np.int32(v - v != 0)
            s += np.int64(r) * my[iy]
        parts[task] = s
        bad[task] = nf
    out = np.zeros(N, dtype=np.int64)
    for task in range(N * C):
        out[task // C] += parts[task]
    return out, bad.any()


def window_reads(x: np.ndarray, geom: "ConvGeom", threshold: float = 0.0,
                 layer: ComputeLayer | None = None) -> np.ndarray:
    """(N,) int64: over every window of the layer and every value it reads from the lowered
    activations ``x`` (N, C, H, W), how many are non-zero (|v| > threshold; padding reads
    nothing), computed once per pixel (counted as often as windows read it) instead of once per
    window read.  With ``layer``, a NaN or infinity in ``x`` is :func:`lower`'s error."""
    my = window_multiplicity(geom.H, geom.KH, geom.sh, geom.pt, geom.dh, geom.OH).astype(np.int32)
    mx = window_multiplicity(geom.W, geom.KW, geom.sw, geom.pl, geom.dw, geom.OW).astype(np.int32)
    out, bad = _weighted_counts(x, my, mx, np.float32(threshold))
    if bad and layer is not None:
        check_finite(layer, x)
    return out
