"""The statistics the report records of per-input samples (costs, densities, margins, perturbations).

* :func:`sample_stats` — ``mean`` and ``worst`` (the maximum), with ``spread`` also ``min``,
  ``p50`` and ``p95``; None for an empty sample.
* :func:`summary` — ``count``, ``mean`` and :data:`QUANTILES` of the finite values, with
  ``n_infinite`` counting the rest (margins, distances, queries).
* :func:`perturbation_summary` — :func:`summary` of each of L0, L2, Linf, MSE and PSNR of the
  inputs selected by a mask.
"""

from __future__ import annotations

import math

import numpy as np

from ..norms import perturbation_stats

QUANTILES = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)
PERTURBATION_MEASURES = ("l0", "l2", "linf", "mse", "psnr")


def finite_or_none(v) -> float | None:
    """``v`` as a float, None when it is not finite (JSON has no inf or nan)."""
    v = float(v)
    return v if math.isfinite(v) else None


def sample_stats(v, spread: bool = False) -> dict:
    """``mean`` and ``worst`` of a sample (with ``spread``: then ``min``, ``p50``, ``p95``)."""
    v = np.asarray(v, dtype=np.float64)
    keys = ("mean", "worst", "min", "p50", "p95") if spread else ("mean", "worst")
    if v.size == 0:
        return dict.fromkeys(keys)
    out = {"mean": float(v.mean()), "worst": float(v.max())}
    if spread:
        out.update(min=float(v.min()), p50=float(np.percentile(v, 50)), p95=float(np.percentile(v, 95)))
    return out


def summary(values) -> dict:
    """count, mean and quantiles of a sample (finite values only; ``n_infinite`` counts the rest)."""
    v = np.asarray(values, np.float64).ravel()
    fin = v[np.isfinite(v)]
    out = {"count": int(len(v)), "n_infinite": int(len(v) - len(fin))}
    if len(fin):
        out["mean"] = finite_or_none(fin.mean())
        out["quantiles"] = {f"{q:g}": finite_or_none(np.quantile(fin, q)) for q in QUANTILES}
    else:
        out["mean"] = None
        out["quantiles"] = {f"{q:g}": None for q in QUANTILES}
    return out


def perturbation_summary(x_adv: np.ndarray, x: np.ndarray, mask: np.ndarray, data_range: float) -> dict:
    """:func:`summary` of each perturbation measure of ``x_adv - x`` over the inputs in ``mask``."""
    st = perturbation_stats(x_adv[mask], x[mask], data_range) if mask.any() else \
        {k: np.zeros(0) for k in PERTURBATION_MEASURES}
    return {k: summary(st[k]) for k in PERTURBATION_MEASURES}


__all__ = ["QUANTILES", "PERTURBATION_MEASURES", "finite_or_none", "sample_stats", "summary", "perturbation_summary"]
