"""Why sponge examples work, and whether they transfer: the analyses of Müller & Quiring.

* :func:`density` / :func:`layer_density` — share of non-zero compute-layer inputs per sample.
* :func:`bn_zero_thresholds` — per BatchNormalization->ReLU channel, the zero threshold
  theta = mu - beta * sqrt(sigma^2 + eps) / gamma  (eq. 3): a BN input x becomes a non-zero ReLU
  output iff x > theta (for gamma > 0; the inequality flips for gamma < 0).  Negative thresholds
  are what let narrow, near-zero distributions (uniform inputs) light up a whole channel.
  :func:`zero_threshold_summary` condenses them per layer.
* :func:`uniformity` — mean standard deviation over sliding windows (lower = more uniform).
* :func:`preactivation_shift` — channel-wise mean/std/positive share of pre-activation values,
  clean versus attacked inputs (Müller & Quiring Fig. 7).
* :func:`kendall_tau` / :func:`pairwise_kendall` — do two models rank inputs by density alike?
* :func:`replay` — measure found inputs on other models / cost functions (transferability).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np
import onnx

from ...errors import AuditorError
from ...model.load import as_model, constant_value
from ...norms import density

# --------------------------------------------------------------------------------------------
# Density
# --------------------------------------------------------------------------------------------


def layer_density(acts: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per layer, the share of non-zero entries of each sample's activation: name -> (N,)."""
    return {k: density(a) for k, a in acts.items()}


def sparsity(acts: Mapping[str, np.ndarray], layer_weights=None) -> np.ndarray:
    return 1.0 - density(acts, layer_weights)


# --------------------------------------------------------------------------------------------
# BatchNormalization zero thresholds
# --------------------------------------------------------------------------------------------


@dataclass
class ZeroThresholds:
    """Zero thresholds of one BatchNormalization node that feeds a ReLU."""

    bn: str  # BatchNormalization node name
    relu: str  # the Relu node it feeds
    via: str  # "direct" or "add" (BN -> Add(skip) -> Relu, as in residual blocks)
    theta: np.ndarray  # (C,) the BN input above which (gamma > 0) the ReLU output is non-zero
    gamma_positive: np.ndarray  # (C,) bool; where False the ReLU fires *below* theta

    def summary(self) -> dict:
        t = self.theta[np.isfinite(self.theta)]
        stat = (lambda f: float(f(t)) if len(t) else float("nan"))
        return {
            "bn": self.bn, "relu": self.relu, "via": self.via, "channels": int(len(self.theta)),
            "mean": stat(np.mean), "median": stat(np.median), "min": stat(np.min), "max": stat(np.max),
            "negative_share": float(np.mean(self.theta < 0)),
            "flipped_channels": int((~self.gamma_positive).sum()),
        }


def bn_zero_thresholds(model, include_add: bool = True) -> list[ZeroThresholds]:
    """theta = mean - bias * sqrt(var + eps) / scale for every BN channel that feeds a Relu.

    Reads the parameters from the ModelProto (:func:`auditor.model.load.constant_value`: initializers,
    Constant nodes, through Identity).  ``include_add``
    also follows BN -> Add -> Relu (residual blocks).  gamma = 0 gives a constant BN output: theta
    is -inf when the bias is positive (always on) and +inf otherwise (always off).
    """
    m = as_model(model)
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in m.graph.node:
        for t in node.input:
            consumers.setdefault(t, []).append(node)
    out = []
    for i, node in enumerate(m.graph.node):
        if node.op_type != "BatchNormalization":
            continue
        name = node.name or f"BatchNormalization_{i}"
        relu, via = None, None
        for c in consumers.get(node.output[0], []):
            if c.op_type == "Relu":
                relu, via = c, "direct"
                break
        if relu is None and include_add:
            for c in consumers.get(node.output[0], []):
                if c.op_type == "Add":
                    nxt = [d for d in consumers.get(c.output[0], []) if d.op_type == "Relu"]
                    if nxt:
                        relu, via = nxt[0], "add"
                        break
        if relu is None:
            continue
        params = [constant_value(m, t) for t in node.input[1:5]]
        missing = [t for t, v in zip(node.input[1:5], params) if v is None]
        if missing:
            raise AuditorError(f"BatchNormalization parameter {missing[0]} is not a constant", name)
        gamma, beta, mu, var = (np.asarray(v, np.float64).reshape(-1) for v in params)
        eps = 1e-5
        for a in node.attribute:
            if a.name == "epsilon":
                eps = float(a.f)
        sd = np.sqrt(var + eps)
        with np.errstate(divide="ignore", invalid="ignore"):
            theta = mu - beta * sd / gamma
        zero = gamma == 0
        theta = np.where(zero, np.where(beta > 0, -np.inf, np.inf), theta)
        out.append(ZeroThresholds(name, relu.name or "Relu", via, theta, gamma >= 0))
    return out


def zero_threshold_summary(model, include_add: bool = True) -> list[dict]:
    """Per BN->ReLU layer: channels, mean/median/min/max theta, share of negative thresholds."""
    return [z.summary() for z in bn_zero_thresholds(model, include_add)]


# --------------------------------------------------------------------------------------------
# Uniformity
# --------------------------------------------------------------------------------------------


def uniformity(x: np.ndarray, window: int = 3) -> np.ndarray:
    """Mean over channels and window positions of the pixel std in a ``window`` x ``window``
    sliding window (stride 1), per sample (N,).  0 for a constant image; lower = more uniform."""
    x = np.asarray(x, np.float64)
    if x.ndim != 4:
        raise AuditorError(f"uniformity needs images (N, C, H, W), got shape {x.shape}")
    w = int(window)
    if w < 1 or w > min(x.shape[2:]):
        raise AuditorError(f"window {window} does not fit images of size {x.shape[2:]}")
    win = np.lib.stride_tricks.sliding_window_view(x, (w, w), axis=(2, 3))  # N,C,H',W',w,w
    return win.std(axis=(-1, -2)).mean(axis=(1, 2, 3))


# --------------------------------------------------------------------------------------------
# Pre-activation distribution shift
# --------------------------------------------------------------------------------------------


def _channel_stats(a: np.ndarray) -> dict[str, np.ndarray]:
    a = np.asarray(a, np.float64)
    if a.ndim == 2:  # (N, K): every unit is its own "channel" with one value per sample
        a = a[:, :, None]
    f = a.reshape(a.shape[0], a.shape[1], -1)  # N, C, positions
    return {
        "mean": f.mean(axis=2),  # per sample and channel
        "std": f.std(axis=2),
        "positive": (f > 0).mean(axis=2),
    }


def preactivation_shift(clean: Mapping[str, np.ndarray], attacked: Mapping[str, np.ndarray],
                        thresholds: Mapping[str, np.ndarray] | None = None) -> dict[str, dict]:
    """Compare pre-activation (e.g. BN input or BN output) distributions of clean vs attacked inputs.

    ``clean`` / ``attacked``: name -> array (N, C, H, W) or (N, K) of the same tensors.  Per name,
    averages over samples of the channel-wise statistics (Müller & Quiring Fig. 7):
    ``std_*`` (median over channels of the channel-wise std — tighter for sponge examples),
    ``abs_mean_*`` (median |channel mean| — closer to zero for sponge examples), ``positive_*``
    (share of positive values) and their changes.  With ``thresholds`` (name -> theta (C,)) also
    the share of values above the channel's zero threshold.
    """
    out = {}
    for k in clean:
        if k not in attacked:
            raise AuditorError(f"tensor '{k}' missing from the attacked activations")
        sc, sa = _channel_stats(clean[k]), _channel_stats(attacked[k])
        r = {
            "std_clean": float(np.median(sc["std"].mean(0))), "std_attacked": float(np.median(sa["std"].mean(0))),
            "abs_mean_clean": float(np.median(np.abs(sc["mean"]).mean(0))),
            "abs_mean_attacked": float(np.median(np.abs(sa["mean"]).mean(0))),
            "positive_clean": float(sc["positive"].mean()), "positive_attacked": float(sa["positive"].mean()),
        }
        r["std_ratio"] = r["std_attacked"] / r["std_clean"] if r["std_clean"] > 0 else float("nan")
        r["positive_gain"] = r["positive_attacked"] - r["positive_clean"]
        if thresholds is not None and k in thresholds:
            th = np.asarray(thresholds[k], np.float64).reshape((1, -1) + (1,) * (np.asarray(clean[k]).ndim - 2))
            r["above_theta_clean"] = float((np.asarray(clean[k]) > th).mean())
            r["above_theta_attacked"] = float((np.asarray(attacked[k]) > th).mean())
        out[k] = r
    return out


# --------------------------------------------------------------------------------------------
# Rankings and replay
# --------------------------------------------------------------------------------------------


def kendall_tau(a, b) -> tuple[float, float]:
    """Kendall's tau-b between two per-sample measurements (e.g. densities on two models), and
    its two-sided p-value."""
    a, b = np.asarray(a, np.float64).reshape(-1), np.asarray(b, np.float64).reshape(-1)
    if a.shape != b.shape or len(a) < 2:
        raise AuditorError(f"need two equally long rankings of >= 2 samples, got {a.shape} and {b.shape}")
    from scipy.stats import kendalltau  # scipy.stats takes seconds to import: only when needed

    res = kendalltau(a, b)
    return float(res.statistic), float(res.pvalue)


def pairwise_kendall(measures: Mapping[str, np.ndarray]) -> dict:
    """Kendall's tau for every pair of models: {"pairs": {(a, b): tau}, "mean": mean over pairs}."""
    names = list(measures)
    pairs = {}
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            pairs[(a, b)] = kendall_tau(measures[a], measures[b])[0]
    vals = [v for v in pairs.values() if np.isfinite(v)]
    return {"pairs": pairs, "mean": float(np.mean(vals)) if vals else float("nan")}


def replay(x: np.ndarray, cost_fns: Mapping[str, Callable[[np.ndarray], np.ndarray]],
           x_reference: np.ndarray | None = None) -> dict[str, dict]:
    """Measure inputs found on one model on other models/cost functions.

    Returns name -> {"cost": (N,), "mean": float} plus, with ``x_reference`` (e.g. clean data),
    "reference_mean" and "increase" (mean cost / mean reference cost; the transfer factor).
    """
    out = {}
    for name, fn in cost_fns.items():
        c = np.asarray(fn(x), np.float64).reshape(-1)
        r = {"cost": c, "mean": float(c.mean())}
        if x_reference is not None:
            ref = float(np.asarray(fn(x_reference), np.float64).mean())
            r["reference_mean"] = ref
            r["increase"] = r["mean"] / ref if ref > 0 else float("nan")
        out[name] = r
    return out
