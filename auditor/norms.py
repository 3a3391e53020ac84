"""Per-sample norms, densities, projections and perturbation statistics shared by every search, and
the two constraints every reported input is checked against: the pixel range and the ε-ball.

Each has one tolerance, used by the verification of the robustness, approximate-model and
energy sections (:mod:`auditor.runtime.verify`) and by the attacks' own checks:

* :data:`PIXEL_TOL` (1e-5) — a pixel may lie this far outside the valid range (x the range's width
  when it is wider than 1): float32 rounding of data scaled into the range (about 1e-7), never a
  real excursion;
* :data:`EPS_RTOL`, :data:`EPS_ATOL` — ``||x_adv - x|| <= eps * (1 + EPS_RTOL) + EPS_ATOL`` (the
  absolute term x the range's width when it is wider than 1): the norm of a float32 perturbation
  projected onto the ball exceeds ε by the rounding of its elements (about 1e-7 relative each,
  summed over up to 150k elements of an ImageNet input), well below 1e-5 relative.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from .errors import AuditorError


def _flat(x: np.ndarray) -> np.ndarray:
    return x.reshape(len(x), -1)


def norm(d: np.ndarray, kind: str) -> np.ndarray:
    """Per-sample norm of a batch of perturbations: "l0", "l2" or "linf"."""
    f = _flat(d).astype(np.float64)
    if kind == "l2":
        return np.sqrt((f * f).sum(axis=1))
    if kind == "linf":
        return np.abs(f).max(axis=1) if f.shape[1] else np.zeros(len(f))
    if kind == "l0":
        return (f != 0).sum(axis=1).astype(np.float64)
    raise ValueError(f"unknown norm {kind!r}")


def density(acts: np.ndarray | Mapping[str, np.ndarray], layer_weights=None) -> np.ndarray:
    """Per-sample share of non-zero entries (N,): of one batch tensor (N, ...) (0 for a tensor of
    no entries), or over all the tensors of a mapping name -> (N, ...), each tensor's counts
    weighted by ``layer_weights`` (one per tensor, in mapping order): sum_l W_l nz_l / sum_l W_l n_l.
    Sparsity is 1 - density."""
    if not isinstance(acts, Mapping):
        f = _flat(np.asarray(acts))
        return np.count_nonzero(f, axis=1) / max(f.shape[1], 1)
    names = list(acts)
    if not names:
        raise AuditorError("no activations to measure density on")
    w = np.ones(len(names)) if layer_weights is None else np.asarray(layer_weights, np.float64).reshape(-1)
    if len(w) != len(names):
        raise AuditorError(f"{len(w)} layer weights for {len(names)} layers")
    nz, tot = 0.0, 0.0
    for wl, k in zip(w, names):
        f = _flat(np.asarray(acts[k]))
        nz = nz + wl * (f != 0).sum(axis=1)
        tot = tot + wl * f.shape[1]
    return np.asarray(nz / tot, dtype=np.float64)


def project(x: np.ndarray, x0: np.ndarray, eps: float | np.ndarray | None, kind: str,
            bounds: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
    """Project x onto {|x - x0|_kind <= eps} and then clip to the pixel range.

    eps None (or inf) means unconstrained: only the pixel range applies.  Clipping after the L2
    projection keeps the perturbation inside the ball (clipping towards x0's box only shrinks it).
    """
    x = np.asarray(x, dtype=np.float32)
    if eps is not None and np.all(np.isfinite(eps)):
        d = (x - x0).astype(np.float32)
        e = np.broadcast_to(np.asarray(eps, dtype=np.float64), (len(x),))
        if kind == "linf":
            e = e.reshape((-1,) + (1,) * (x.ndim - 1)).astype(np.float32)
            d = np.clip(d, -e, e)
        elif kind == "l2":
            n = norm(d, "l2")
            scale = np.where(n > e, e / np.maximum(n, 1e-12), 1.0).astype(np.float32)
            d = d * scale.reshape((-1,) + (1,) * (x.ndim - 1))
        else:
            raise ValueError(f"unknown norm {kind!r}")
        x = x0 + d
    return np.clip(x, bounds[0], bounds[1]).astype(np.float32)


def normalize(g: np.ndarray, kind: str) -> np.ndarray:
    """Steepest-ascent direction of unit norm: g/|g|_2 for L2, sign(g) for Linf."""
    if kind == "linf":
        return np.sign(g).astype(np.float32)
    n = norm(g, "l2").reshape((-1,) + (1,) * (g.ndim - 1))
    return (g / np.maximum(n, 1e-12)).astype(np.float32)


def perturbation_stats(x_adv: np.ndarray, x0: np.ndarray, data_range: float = 1.0) -> dict[str, np.ndarray]:
    """Per-sample L0, L2, Linf, MSE and PSNR (dB) of x_adv - x0."""
    d = (np.asarray(x_adv, np.float64) - np.asarray(x0, np.float64))
    mse = (_flat(d) ** 2).mean(axis=1)
    with np.errstate(divide="ignore"):
        psnr = np.where(mse > 0, 10.0 * np.log10(data_range ** 2 / np.maximum(mse, 1e-300)), np.inf)
    return {"l0": norm(d, "l0"), "l2": norm(d, "l2"), "linf": norm(d, "linf"), "mse": mse, "psnr": psnr}


#: how far outside the pixel range a value may lie (x the range's width when wider than 1)
PIXEL_TOL = 1e-5
#: the ε-ball's relative and absolute slack (the absolute one x the range's width when wider than 1)
EPS_RTOL, EPS_ATOL = 1e-5, 1e-6


def _scale(bounds) -> float:
    return max(1.0, float(bounds[1]) - float(bounds[0]))


def within_bounds(x: np.ndarray, bounds) -> np.ndarray:
    """(N,) whether every pixel of each input lies in ``bounds`` (within :data:`PIXEL_TOL`)."""
    lo, hi = float(bounds[0]), float(bounds[1])
    tol = PIXEL_TOL * _scale(bounds)
    flat = np.asarray(x).reshape(len(x), -1)
    if not flat.shape[1]:
        return np.ones(len(x), bool)
    return (flat.min(axis=1) >= lo - tol) & (flat.max(axis=1) <= hi + tol)


def within_eps(x_adv: np.ndarray, x: np.ndarray, kind: str, eps: float, bounds=(0.0, 1.0)) -> np.ndarray:
    """(N,) whether each ``x_adv`` lies in the ``kind`` norm ball of radius ``eps`` around ``x``
    (within :data:`EPS_RTOL` / :data:`EPS_ATOL`)."""
    return norm(np.asarray(x_adv) - np.asarray(x), kind) <= float(eps) * (1 + EPS_RTOL) + EPS_ATOL * _scale(bounds)


def is_adversarial(logits: np.ndarray, labels: np.ndarray, targets: np.ndarray | None) -> np.ndarray:
    """The success criterion: argmax == target (targeted) or argmax != label (untargeted)."""
    pred = np.asarray(logits).argmax(axis=1)
    return pred == targets if targets is not None else pred != labels
