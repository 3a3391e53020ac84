"""The numerical pieces evasion attacks and energy-latency searches share, each written once.

* margins and losses on logits: :func:`margins`, :func:`top_margin`, :func:`log_softmax`,
  :func:`cross_entropy`;
* :func:`next_const` — one step of the per-input binary search on a trade-off constant c
  (C&W, ZOO, the white-box sparsity attack);
* :func:`bisect_segment` — bisection on the segment between two inputs for where a property
  starts to hold (back to the decision boundary: C&W, ZOO, DeepFool; the black-box search's
  label-keeping fallback);
* ZOO-ADAM (Chen et al. 2017): :func:`probe_logits` evaluates the centre and the symmetric
  finite-difference probes of random coordinates, :func:`adam_step` is the (coordinate-wise)
  Adam update (ZOO, the black-box search's label repair, and C&W's full Adam).
"""

from __future__ import annotations

from typing import Callable

import numpy as np


# --------------------------------------------------------------------------------------------
# margins and losses
# --------------------------------------------------------------------------------------------


def margins(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """z[label] - max_{j != label} z[j] per sample (float64)."""
    z = np.asarray(logits, np.float64)
    idx = np.arange(len(z))
    zl = z[idx, labels]
    other = z.copy()
    other[idx, labels] = -np.inf
    return zl - other.max(axis=1)


def top_margin(logits: np.ndarray) -> np.ndarray:
    """Confidence margin: top-1 logit minus runner-up, per sample (float64)."""
    z = np.sort(np.asarray(logits, np.float64), axis=1)
    return z[:, -1] - z[:, -2] if z.shape[1] > 1 else z[:, -1]


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """log softmax(z) per sample (float64, shifted by the largest logit)."""
    z = np.asarray(logits, np.float64)
    m = z.max(axis=1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=1, keepdims=True))


def cross_entropy(logits: np.ndarray, target: np.ndarray) -> np.ndarray:
    """-log softmax(z)[target] per sample, float64."""
    z = np.asarray(logits, np.float64)
    m = z.max(axis=1, keepdims=True)
    lse = (m + np.log(np.exp(z - m).sum(axis=1, keepdims=True)))[:, 0]
    return lse - z[np.arange(len(z)), target]


# --------------------------------------------------------------------------------------------
# searches on a constant and on a segment
# --------------------------------------------------------------------------------------------


def next_const(const: np.ndarray, lower: np.ndarray, upper: np.ndarray,
               round_ok: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One step of the per-input binary search on a trade-off constant c: a round that
    succeeded (c was large enough) lowers the upper bound, one that failed raises the lower
    bound; c goes to the middle once an upper bound is known, else grows tenfold.
    -> (c, lower, upper)"""
    upper = np.where(round_ok, np.minimum(upper, const), upper)
    lower = np.where(round_ok, lower, np.maximum(lower, const))
    return np.where(np.isfinite(upper), (lower + upper) / 2.0, const * 10.0), lower, upper


def _bshape(v: np.ndarray, ndim: int) -> np.ndarray:
    return np.asarray(v).reshape((-1,) + (1,) * (ndim - 1))


def on_segment(x0: np.ndarray, d: np.ndarray, t: np.ndarray) -> np.ndarray:
    """x0 + t·d per sample (float32; t cast to float32 first)."""
    return (x0 + _bshape(t, x0.ndim).astype(np.float32) * d).astype(np.float32)


def bisect_segment(x0: np.ndarray, x1: np.ndarray, crosses: Callable[[np.ndarray], np.ndarray],
                   steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Bisection on t in [0, 1] of x0 + t(x1 - x0), per sample, for where ``crosses`` starts to
    hold (it must not hold at t = 0 and must hold at t = 1): ``steps`` evaluations of
    ``crosses`` (a batch of points -> bool per sample).  -> (lo, hi): the last t known not to
    cross and the first known to cross.  Convex combinations of in-range inputs stay in range."""
    d = (x1 - x0).astype(np.float32)
    lo, hi = np.zeros(len(x0)), np.ones(len(x0))
    for _ in range(steps):
        mid = (lo + hi) / 2
        c = crosses(on_segment(x0, d, mid))
        hi, lo = np.where(c, mid, hi), np.where(c, lo, mid)
    return lo, hi


# --------------------------------------------------------------------------------------------
# ZOO-ADAM
# --------------------------------------------------------------------------------------------


#: the largest probe batch :func:`probe_logits` builds at once
PROBE_BYTES = 1 << 26


def probe_logits(logits_fn: Callable[[np.ndarray, np.ndarray], np.ndarray], x: np.ndarray, coords: np.ndarray,
                 up: np.ndarray, down: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The logits of ZOO's probes of flat inputs ``x`` (m, d): per sample the centre, then for
    each of its coordinates ``coords`` (m, B) the point with that coordinate set to ``up``, then
    to ``down`` (m, B) — 2B + 1 points, built ``PROBE_BYTES`` at a time.
    ``logits_fn(batch, rows)`` evaluates a batch (points of ``shape``; ``rows[i]``: the sample
    point i belongs to).  -> (m, 2B + 1, classes)"""
    m, d = x.shape
    B = coords.shape[1]
    per = 2 * B + 1
    group = max(1, PROBE_BYTES // max(x.itemsize * per * d, 1))
    out = []
    for s in range(0, m, group):
        e = min(s + group, m)
        k = e - s
        batch = np.repeat(x[s:e, None, :], per, axis=1)  # (k, 2B+1, d)
        r = np.arange(k)[:, None]
        batch[r, 1 + np.arange(B)[None, :], coords[s:e]] = up[s:e]
        batch[r, 1 + B + np.arange(B)[None, :], coords[s:e]] = down[s:e]
        z = logits_fn(batch.reshape((k * per,) + tuple(shape)).astype(np.float32), np.repeat(np.arange(s, e), per))
        out.append(np.asarray(z).reshape(k, per, -1))
    return np.concatenate(out)


def adam_step(m: np.ndarray, v: np.ndarray, t, g: np.ndarray, lr,
              beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8):
    """One Adam update of the moments ``m``, ``v`` with gradient ``g`` at step ``t`` (1-based;
    an array for coordinate-wise Adam, each coordinate counting its own updates) and step size
    ``lr``.  -> (m, v, step): the new moments and the step to subtract."""
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    mhat = m / (1 - beta1 ** t)
    vhat = v / (1 - beta2 ** t)
    return m, v, lr * mhat / (np.sqrt(vhat) + eps)
