"""Model reshaping declared in a hardware profile, applied as ONNX rewrites.

Both rewrites take an ONNX ``ModelProto`` (or a path) and return a new one with some weight
initializers replaced, so the attacks, the cost models and onnxruntime all see the reshaped model.

* :func:`hashnet` — HashNet weight sharing (Chen et al., 2015, "Compressing neural networks with
  the hashing trick"; used as a defence by Liu et al.): every virtual weight ``V_i`` of a layer is
  ``ξ(i)·w_{h(i)}`` for a bucket hash ``h`` onto ``K = ceil(ratio·n)`` buckets and an independent
  sign hash ``ξ(i) ∈ {-1, +1}``.  Applied post hoc to a trained layer, each bucket value is the
  least-squares fit ``w_b = argmin Σ_{h(i)=b} (ξ(i)·w_b - V_i)² = mean_{h(i)=b} ξ(i)·V_i``.
* :func:`gradient_inhibition` — Liu et al.'s gradient inhibition: ``w ← w + τ·sign(w)`` on the
  chosen layers (default: the last fully connected layer).

Layers are named by their node name, or ``<op_type>_<index>`` (index in ``graph.node``) for
unnamed nodes, as in :func:`auditor.model.names.node_names`; the weight initializer's name is accepted too.
Each rewrite appends a JSON record to the model's ``metadata_props`` key ``auditor.model.rewrite.reshape``.
"""

from __future__ import annotations

import json
import zlib
from fractions import Fraction

import numpy as np
import onnx
from onnx import numpy_helper

from ...errors import AuditorError
from ...runtime.engine import Runner
from ..graph import weight_initializers
from ..load import as_model
from ..names import node_names
from .preprocess import to_model_input

FC_OPS = ("Gemm", "MatMul")
META_KEY = "auditor.model.rewrite.reshape"


# --------------------------------------------------------------------------------------------
# layer lookup
# --------------------------------------------------------------------------------------------


def weight_layers(model: onnx.ModelProto) -> list[tuple[str, str, str]]:
    """(layer name, op_type, weight initializer name) of every compute node with a constant weight."""
    names = node_names(model.graph)
    return [(names[w.index], w.node.op_type, w.initializer.name) for w in weight_initializers(model)]


def _select(model: onnx.ModelProto, layers, default: str, what: str) -> list[tuple[str, str, str]]:
    avail = weight_layers(model)
    if not avail:
        raise AuditorError("the model has no Conv/Gemm/MatMul layer with a constant weight", where=what)
    if layers is None:
        if default == "all":
            return avail
        fc = [a for a in avail if a[1] in FC_OPS]
        if not fc:
            raise AuditorError("the model has no fully connected (Gemm/MatMul) layer with a constant weight; "
                               "name the layers explicitly", where=what)
        return [fc[-1]]
    if isinstance(layers, str):
        layers = [layers]
    chosen = []
    for name in layers:
        hit = [a for a in avail if name in (a[0], a[2])]
        if not hit:
            raise AuditorError(f"unknown layer {name!r}; layers with weights: {', '.join(a[0] for a in avail)}",
                               where=what)
        for h in hit:
            if h not in chosen:
                chosen.append(h)
    return chosen


def _weights(model: onnx.ModelProto, layers, default: str, what: str):
    """(layer name, weight initializer name, weight values) of each distinct weight of the chosen layers."""
    done: set[str] = set()
    for layer, _, wname in _select(model, layers, default, what):
        if wname not in done:
            done.add(wname)
            yield layer, wname, numpy_helper.to_array(_initializer(model, wname))


def _initializer(model: onnx.ModelProto, name: str) -> onnx.TensorProto:
    return next(t for t in model.graph.initializer if t.name == name)


def _replace(model: onnx.ModelProto, name: str, values: np.ndarray) -> None:
    t = _initializer(model, name)
    t.CopyFrom(numpy_helper.from_array(values.astype(numpy_helper.to_array(t).dtype), name))


def _record(model: onnx.ModelProto, entry: dict) -> None:
    for p in model.metadata_props:
        if p.key == META_KEY:
            hist = json.loads(p.value)
            hist.append(entry)
            p.value = json.dumps(hist)
            return
    model.metadata_props.add(key=META_KEY, value=json.dumps([entry]))


# --------------------------------------------------------------------------------------------
# HashNet
# --------------------------------------------------------------------------------------------


def num_buckets(n: int, ratio: float) -> int:
    """Buckets for a layer of n weights at a compression ratio: ceil(ratio·n), at least 1."""
    return max(1, int(np.ceil(n * ratio - 1e-9)))


def hashnet_hashes(layer: str, n: int, buckets: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The bucket hash h (n,) and sign hash ξ (n,) of a layer's flattened weight positions.

    h is a *balanced* hash: a seeded random permutation of the positions taken modulo the number
    of buckets, so every bucket holds floor(n/K) or ceil(n/K) weights; at K = n (ratio 1) it is a
    bijection and the rewrite reproduces the layer exactly.  ξ is an independent seeded ±1 hash.
    Both depend only on (seed, layer name, n, K), so they are deterministic across runs.
    """
    key = zlib.crc32(layer.encode("utf-8"))
    h = np.random.default_rng([int(seed), key, 0]).permutation(n) % buckets
    xi = np.where(np.random.default_rng([int(seed), key, 1]).random(n) < 0.5, -1.0, 1.0)
    return h.astype(np.int64), xi


def hashnet(model, ratio: float, layers=None, seed: int = 0) -> onnx.ModelProto:
    """HashNet weight sharing at ``ratio`` (buckets / weights, e.g. 1/16 or the string "1/16") on
    ``layers`` (default: every Conv, ConvTranspose, Gemm and MatMul weight).  Biases are left as
    they are."""
    m = as_model(model, copy=True, where="reshape")
    if isinstance(ratio, str):  # "1/16" as written in a profile
        try:
            ratio = float(Fraction(ratio.strip()))
        except (ValueError, ZeroDivisionError):
            pass
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float, np.floating)) or not (0 < ratio <= 1):
        raise AuditorError(f"hashnet ratio must be in (0, 1], got {ratio!r}", where="hashnet")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise AuditorError(f"hashnet seed must be a non-negative integer, got {seed!r}", where="hashnet")
    report = []
    for layer, wname, V in _weights(m, layers, "all", "hashnet"):
        V = V.astype(np.float64)
        n = V.size
        k = num_buckets(n, float(ratio))
        h, xi = hashnet_hashes(layer, n, k, seed)
        flat = V.ravel()
        counts = np.bincount(h, minlength=k)
        w = np.bincount(h, weights=xi * flat, minlength=k) / np.maximum(counts, 1)
        _replace(m, wname, (xi * w[h]).reshape(V.shape))
        report.append({"layer": layer, "weights": int(n), "buckets": int(k)})
    _record(m, {"rewrite": "hashnet", "ratio": float(ratio), "seed": int(seed), "layers": report})
    return m


# --------------------------------------------------------------------------------------------
# gradient inhibition
# --------------------------------------------------------------------------------------------


def gradient_inhibition(model, tau: float, layers=None) -> onnx.ModelProto:
    """w ← w + τ·sign(w) on ``layers`` (default: the last Gemm/MatMul layer)."""
    m = as_model(model, copy=True, where="reshape")
    if isinstance(tau, bool) or not isinstance(tau, (int, float, np.floating)) or not np.isfinite(tau) or tau < 0:
        raise AuditorError(f"gradient inhibition tau must be a finite number >= 0, got {tau!r}",
                           where="gradient_inhibition")
    names = []
    for layer, wname, W in _weights(m, layers, "last_fc", "gradient_inhibition"):
        _replace(m, wname, W.astype(np.float64) + float(tau) * np.sign(W.astype(np.float64)))
        names.append(layer)
    _record(m, {"rewrite": "gradient_inhibition", "tau": float(tau), "layers": names})
    return m


# --------------------------------------------------------------------------------------------
# from a hardware profile
# --------------------------------------------------------------------------------------------


def apply_reshaping(model, spec: dict | None) -> onnx.ModelProto:
    """Apply the reshaping section of a hardware profile::

        reshaping:
          hashnet: {ratio: 0.0625, layers: [...], seed: 0}   # optional
          gradient_inhibition: {tau: 0.1, layers: [...]}     # optional

    HashNet is applied first.  ``spec`` None or empty returns the model unchanged (a copy).
    """
    m = as_model(model, copy=True, where="reshape")
    if not spec:
        return m
    if not isinstance(spec, dict):
        raise AuditorError("reshaping must be a mapping", where="reshaping")
    unknown = set(spec) - {"hashnet", "gradient_inhibition"}
    if unknown:
        raise AuditorError(f"unknown reshaping {', '.join(sorted(unknown))}; known: hashnet, gradient_inhibition",
                           where="reshaping")
    if spec.get("hashnet") is not None:
        hs = spec["hashnet"]
        if not isinstance(hs, dict) or "ratio" not in hs or set(hs) - {"ratio", "layers", "seed"}:
            raise AuditorError("hashnet needs {ratio, [layers], [seed]}", where="reshaping.hashnet")
        m = hashnet(m, hs["ratio"], hs.get("layers"), hs.get("seed", 0))
    if spec.get("gradient_inhibition") is not None:
        gs = spec["gradient_inhibition"]
        if not isinstance(gs, dict) or "tau" not in gs or set(gs) - {"tau", "layers"}:
            raise AuditorError("gradient_inhibition needs {tau, [layers]}", where="reshaping.gradient_inhibition")
        m = gradient_inhibition(m, gs["tau"], gs.get("layers"))
    return m


def clean_accuracy(model, x: np.ndarray, y: np.ndarray, preprocessing=None, batch_size: int = 512) -> float:
    """Top-1 accuracy of an ONNX model under onnxruntime (to report what a rewrite costs).

    ``preprocessing``: None, a ``(mean, std)`` pair applied as ``(x - mean) / std``, a callable or a
    :class:`~auditor.model.rewrite.preprocess.Preprocessing` (:func:`~auditor.model.rewrite.preprocess.to_model_input`).
    """
    m = as_model(model, copy=True, where="reshape")
    runner = Runner(m, 1, batch_size)
    x = to_model_input(x, preprocessing)
    pred = runner.run(x, [m.graph.output[0].name])[m.graph.output[0].name].argmax(axis=1)
    return float(np.mean(pred == np.asarray(y)))
