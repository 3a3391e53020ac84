"""White-box adversarial sparsity attack (Krithivasan, Sen, Raghunathan, Algorithm 1).

Minimises  L(x) = L_sparsity(x) + c * L_ce(x)  with momentum gradient descent:

    g_i     = mu * g_{i-1} + grad_x L(x_i)                       (mu = 0.9)
    x_{i+1} = Clip_[pixel range, eps-ball around x_clean]( x_i - eps_iter * g_i / |g_i|_2 )

where L_sparsity = -(1/k) sum_l W_l sum_n tanh(beta * a_{l,n}) over the compute layers' input
activations (the "sparsity" objective of the Classifier) and L_ce is the cross-entropy towards the
label the model gives the clean input.  O_max outer rounds bisect c per sample between c_min and
c_max: a round that ends with a changed label raises c, one that keeps it lowers c.

Defaults are the paper's MNIST settings (Fig. 9a and Section V): eps_iter 0.02, eps 0.9 (L2),
I_max 75, beta 15 (tanh), O_max 1, c_in 0.5, c_min 0, c_max 1.  ``eps=None`` is the paper's
*unconstrained* scenario (only the pixel range applies).  ``norm="linf"`` replaces the L2 step and
ball by a sign step and an Linf box (give ``eps`` in Linf units then).

Input-scale-aware defaults: the paper's L2 numbers are for 28x28x1 pixels in [0, 1]; an L2 budget
of 0.9 moves a 224x224x3 input by almost nothing per pixel.  The automatic ``eps`` ("auto", the
default) keeps the paper's *per-pixel RMS* budget, 0.9 / 28 of the pixel range:

    eps = 0.9 * sqrt(D / 784) * (hi - lo)        (D = elements per input; exactly 0.9 on MNIST)

and the automatic L2 steps scale by the same factor (0.02 and 0.5 on MNIST).  With
``norm="linf"`` the automatic eps is that RMS budget itself, 0.9 / 28 of the pixel range per pixel
(an Linf box with the same per-pixel RMS bound).  Numbers given explicitly are used as they are.

One departure, for the unconstrained case only: unless ``eps_iter`` is given, the step is 0.5
instead of 0.02.  With 0.02 the 75 steps add up to an L2 path of at most 1.5, so the
"unconstrained" attack stays inside a small ball; on the bundled plain CNN it reached a post-ReLU
sparsity ratio (clean/attacked) of only 1.26x, against 1.55x with a step of 0.5 (0.3: 1.54x,
1.0: 1.58x; benchmarks/bench_sponge.py part b).  With an Linf bound the automatic step is eps/10.

Which input is returned: every iterate x_i that still has the clean label is a candidate, and the
best one is kept — by default the one with the highest ``cost_fn`` (the simulated latency/energy
the audit cares about, measured on the candidates of every iteration, or of every
``select_every``-th); with ``select="surrogate"``
the one with the lowest L_sparsity (free: it is computed from the objective value and the logits
the gradient pass returns), and ``cost_fn`` is evaluated once at the end.  The clean input itself
is the fallback candidate, so the returned input always keeps the label; ``info["improved"]``
tells which samples the attack actually changed.
"""

from __future__ import annotations

import numpy as np

from ...errors import AuditorError
from ...norms import normalize, perturbation_stats, project
from ..base import Param, bounds_of, plumbing
from ..primitives import cross_entropy, next_const
from .base import register_search, Search, SearchResult, chunks, resolve_layer_weights

#: the input the paper's defaults were set for: 28x28x1 pixels in [0, 1] (MNIST)
REFERENCE_ELEMENTS = 28 * 28
#: the paper's L2 budget on that input
REFERENCE_EPS = 0.9

COMMON = {
    "eps": Param("float?", "auto", "perturbation bound around the clean input (None = unconstrained; auto = the "
                 "paper's L2 0.9 on 28x28x1 in [0, 1] as a per-pixel RMS budget: 0.9 sqrt(D/784) (hi - lo); "
                 "Linf: 0.9/28 (hi - lo))", low=0.0, low_open=True),
    "norm": Param("choice", "l2", "norm of the bound and of the step", choices=("l2", "linf")),
    "eps_iter": Param("float?", None, "step length per iteration (L2 norm, or Linf for norm=linf); None = automatic "
                      "(L2: 0.02 with a bound, 0.5 unconstrained; Linf: eps/10, 0.05 unconstrained)", low=0.0, low_open=True),
    "iterations": Param("int", 75, "inner iterations I_max", low=1),
    "beta": Param("float", 15.0, "steepness of the tanh step approximation", low=0.0, low_open=True),
    "momentum": Param("float", 0.9, "momentum mu", low=0.0, high=1.0),
    "batch_size": Param("int", 64, "inputs attacked together", low=1),
    **plumbing(),
}


def input_scale(shape, bounds) -> float:
    """sqrt(D / 784) * (hi - lo): the factor that keeps an L2 quantity's per-pixel RMS as on a
    28x28x1 input in [0, 1] (1.0 exactly there)."""
    d = int(np.prod(shape))
    lo, hi = bounds
    return float(np.sqrt(d / REFERENCE_ELEMENTS)) * float(hi - lo)


def step_size(eps_iter, eps, norm: str, scale: float = 1.0, span: float = 1.0) -> float:
    """The step length: ``eps_iter`` if given, else the automatic choice documented above
    (``scale``: :func:`input_scale` of the input, for the L2 steps; ``span``: the pixel range,
    for the unconstrained Linf step)."""
    if eps_iter is not None:
        return float(eps_iter)
    if norm == "linf":
        return eps / 10.0 if eps is not None else 0.05 * span
    return (0.02 if eps is not None else 0.5) * scale


def budget(params: dict, model, x: np.ndarray) -> dict:
    """The bound and step a search uses on inputs like ``x`` (resolving ``eps: auto``), and how."""
    lo, hi = bounds_of(model)
    d = int(np.prod(x.shape[1:]))
    scale = input_scale(x.shape[1:], (lo, hi))
    norm, eps = params["norm"], params["eps"]
    auto = isinstance(eps, str)
    if auto:
        rms = REFERENCE_EPS / np.sqrt(REFERENCE_ELEMENTS) * (hi - lo)  # per-pixel RMS of the paper's ball
        eps = REFERENCE_EPS * scale if norm == "l2" else float(rms)
    step = step_size(params["eps_iter"], eps, norm, scale, hi - lo)
    out = {"eps": None if eps is None else float(eps), "norm": norm, "eps_iter": float(step), "auto": auto,
           "elements": d, "per_pixel_rms": None if eps is None else
           float(eps / (hi - lo) / (np.sqrt(d) if norm == "l2" else 1.0))}
    if auto:
        out["rule"] = (f"eps auto: the paper's L2 0.9 on 28x28x1 inputs in [0, 1] kept as a per-pixel RMS budget of "
                       f"{out['per_pixel_rms']:.4g} of the pixel range"
                       + (f" (L2 {eps:.4g} = 0.9 sqrt({d}/784) x {hi - lo:g})" if norm == "l2" else
                          f" (Linf {eps:.4g} per pixel)"))
    return out


def sparsity_descent(model, x0: np.ndarray, target: np.ndarray, weights: np.ndarray, c: np.ndarray, *,
                     beta: float, eps, norm: str, eps_iter: float, iterations: int, momentum: float,
                     keep_label: bool, score_cost=None, score0=None, every: int = 1, on_step=None):
    """One inner loop of Algorithm 1 on a batch.

    Returns ``(x_last, kept_last, best_x, best_score, best_kept, best_iter, history)``.  The score
    of a candidate is its cost (higher is better; ``score_cost`` given) or minus its L_sparsity.
    With ``keep_label`` only iterates classified as ``target`` are candidates (the clean input is
    the initial candidate); without it every iterate is.  ``score0`` is the known score of x0 (its
    clean cost), which saves measuring it again.  With ``score_cost``, candidates are measured
    every ``every`` iterations and at the last one.
    """
    bounds = bounds_of(model)
    n = len(x0)
    x = x0.copy()
    g = np.zeros_like(x0)
    best_x = x0.copy()
    best_score = np.full(n, -np.inf)
    best_kept = np.zeros(n, dtype=bool)
    best_iter = np.full(n, -1)
    groups = [(cv, np.flatnonzero(c == cv)) for cv in np.unique(c)]
    hist_lsp, hist_kept = [], []
    kept = np.zeros(n, dtype=bool)
    # the cost of an iterate from the activations its own gradient pass computed (no forward pass of
    # its own) when the cost model and the model allow it
    tensors = getattr(score_cost, "tensors", lambda: None)() if score_cost is not None else None
    for i in range(iterations + 1):
        val = np.empty(n, np.float64)
        grad = np.empty_like(x)
        logits = None
        scoring = (score_cost is not None and (i % every == 0 or i == iterations)
                   and not (i == 0 and score0 is not None))
        measured = np.full(n, -np.inf) if scoring and tensors is not None else None
        for cv, idx in groups:
            knobs = dict(weights=weights, beta=np.float32(beta), c=np.float32(cv), target=target[idx])
            if measured is None:
                v, gr, lg = model.value_and_grad(x[idx], "sparsity", **knobs)
            else:
                v, gr, lg, measured[idx] = model.value_grad_measure(
                    x[idx], "sparsity", (tensors, _candidate_cost(score_cost, target[idx], keep_label and i > 0)),
                    **knobs)
            if logits is None:
                logits = np.empty((n, lg.shape[1]), np.float64)
            val[idx] = np.asarray(v, np.float64).reshape(-1)
            grad[idx] = gr
            logits[idx] = lg
        kept = logits.argmax(axis=1) == target
        lsp = val - c * cross_entropy(logits, target)
        hist_lsp.append(float(lsp.mean()))
        hist_kept.append(float(kept.mean()))
        cand = kept if keep_label else np.ones(n, dtype=bool)
        if i == 0:
            cand = cand | keep_label  # the clean input is always a candidate when keeping labels
            if score0 is not None:
                best_score = np.where(cand, score0, -np.inf)
                best_kept, best_iter = kept.copy(), np.where(cand, 0, -1)
                cand = np.zeros(n, dtype=bool)
        if score_cost is not None and i % every and i != iterations:
            cand = np.zeros(n, dtype=bool)
        if cand.any():
            if measured is not None:  # the same candidates, measured in the gradient pass
                score = np.where(cand, measured, -np.inf)
            elif score_cost is not None:
                score = np.full(n, -np.inf)
                score[cand] = score_cost(x[cand])
            else:
                score = np.where(cand, -lsp, -np.inf)
            better = score > best_score
            best_x[better] = x[better]
            best_score[better] = score[better]
            best_kept[better] = kept[better]
            best_iter[better] = i
        if on_step is not None:
            on_step()
        if i == iterations:
            break
        g = (momentum * g + grad).astype(np.float32)
        x = x - np.float32(step_size(eps_iter, eps, norm)) * normalize(g, norm)
        x = project(x, x0, eps, norm, bounds)
    return x, kept, best_x, best_score, best_kept, best_iter, {"l_sparsity": hist_lsp, "label_kept": hist_kept}


def _candidate_cost(score_cost, target: np.ndarray, keep_label: bool):
    """The measurement of :func:`sparsity_descent`'s candidates in a gradient pass: the cost of
    each input of a chunk that is a candidate (classified as ``target`` when ``keep_label``, else
    every input), -inf for the others."""
    def fn(tensors, logits, rows):
        cand = logits.argmax(axis=1) == target[rows] if keep_label else np.ones(len(logits), dtype=bool)
        cost = np.full(len(logits), -np.inf)
        if cand.all():  # (no copy of the activations)
            cost[:] = score_cost.of_outputs(tensors, len(cand))
        elif cand.any():
            cost[cand] = score_cost.of_outputs({t: a[cand] for t, a in tensors.items()}, int(cand.sum()))
        return cost
    return fn


@register_search("whitebox", aliases=('white_box', 'white-box', 'sparsity', 'whiteboxsparsity'))
class WhiteBoxSparsity(Search):
    """Algorithm 1 of the adversarial-sparsity-attack paper (white-box, label-preserving)."""

    PARAMS = {
        **COMMON,
        "outer": Param("int", 1, "outer rounds O_max of the binary search on c", low=1),
        "c_in": Param("float", 0.5, "initial trade-off constant c", low=0.0),
        "c_min": Param("float", 0.0, "lower end of the binary search on c", low=0.0),
        "c_max": Param("float", 1.0, "upper end of the binary search on c", low=0.0),
        "select": Param("choice", "cost", "how the best label-keeping iterate is chosen", choices=("cost", "surrogate")),
        "select_every": Param("int", 1, "select=cost: measure the candidates every this many iterations (and the last)", low=1),
    }

    def _configure(self):
        where = self.where
        p = self.params
        if not p["c_min"] <= p["c_in"] <= p["c_max"]:
            raise AuditorError(f"need c_min <= c_in <= c_max, got {p['c_min']}, {p['c_in']}, {p['c_max']}", where)

    def _run(self, model, x_clean, cost_fn, layer_weights, labels, seed) -> SearchResult:
        p = self.params
        where = self.where
        n = len(x_clean)
        weights = resolve_layer_weights(model, layer_weights, x_clean, where)
        target = labels if labels is not None else model.predict(x_clean).astype(np.int64)
        cost_clean = cost_fn(x_clean)
        bud = budget(p, model, x_clean)  # eps: auto scaled to the input size
        out_x = x_clean.copy()
        out_cost = cost_clean.copy()
        out_kept = np.ones(n, dtype=bool)
        best_iter = np.full(n, -1)
        best_round = np.full(n, -1)
        c_final = np.full(n, p["c_in"])
        history = []
        steps = (p["iterations"] + 1) * p["outer"]
        with self._bar("white-box sparsity attack", steps * len(range(0, n, p["batch_size"]))) as bar:
            for sl in chunks(n, p["batch_size"]):
                x0, t = x_clean[sl], target[sl]
                m = len(x0)
                c = np.full(m, p["c_in"])
                lo, hi = np.full(m, p["c_min"]), np.full(m, p["c_max"])
                best_x, best_cost = x0.copy(), cost_clean[sl].copy()
                best_kept = (model.predict(x0) == t) if labels is not None else np.ones(m, dtype=bool)
                b_iter, b_round = np.full(m, -1), np.full(m, -1)
                b_surr = np.full(m, -np.inf)
                for o in range(p["outer"]):
                    score_cost = cost_fn if p["select"] == "cost" else None
                    x_last, kept_last, bx, bs, bk, bi, hist = sparsity_descent(
                        model, x0, t, weights, c, beta=p["beta"], eps=bud["eps"], norm=p["norm"],
                        eps_iter=bud["eps_iter"], iterations=p["iterations"], momentum=p["momentum"],
                        keep_label=True, score_cost=score_cost,
                        score0=best_cost if score_cost is not None else None, every=p["select_every"],
                        on_step=bar.update)
                    history.append(hist)
                    if p["select"] == "cost":
                        better = (bs > best_cost) & (bi > 0)
                        best_cost[better] = bs[better]
                    else:
                        better = (bs > b_surr) & (bi >= 0)
                        b_surr[better] = bs[better]
                    best_x[better] = bx[better]
                    best_kept[better] = bk[better]
                    b_iter[better], b_round[better] = bi[better], o
                    # binary search on c (per sample): label lost -> more weight on L_ce
                    c_final[sl] = c
                    if o + 1 < p["outer"]:  # the label kept: c was large enough
                        c, lo, hi = next_const(c, lo, hi, kept_last)
                if p["select"] == "surrogate":
                    changed = b_iter > 0
                    if changed.any():
                        best_cost[changed] = cost_fn(best_x[changed])
                out_x[sl], out_cost[sl], out_kept[sl] = best_x, best_cost, best_kept
                best_iter[sl], best_round[sl] = b_iter, b_round
        improved = best_iter > 0
        info = {
            "cost_clean": cost_clean,
            "target": target,
            "improved": improved,
            "best_iteration": best_iter,
            "best_round": best_round,
            "c": c_final,
            "eps_iter": bud["eps_iter"],
            "eps": bud["eps"],
            "budget": bud,
            "layer_weights": weights,
            "perturbation": perturbation_stats(out_x, x_clean, bounds_of(model)[1] - bounds_of(model)[0]),
            "history": history,
        }
        return SearchResult(self.name, out_x, out_cost, 0, steps, 0.0, out_kept, info)
