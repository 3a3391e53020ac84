"""Black-box adversarial sparsity attack: transfer from a surrogate, then restore the label.

The two-stage framework of Krithivasan, Sen, Raghunathan (Section III-B, Fig. 7):

1. *Transfer.*  Algorithm 1 with c = 0 (pure sparsity objective) on a surrogate Classifier that
   the attacker owns (constructor argument ``surrogate``), inside the eps ball around the clean
   input.  Stage 1 keeps the iterate with the lowest surrogate L_sparsity.
2. *Restore.*  Wherever the target now gives a label other than its clean label, a targeted
   score-based attack moves the input back to that label using only the target's output scores:
   ZOO (Chen et al. 2017) — symmetric finite differences along ``coords`` random pixels per step
   (2*coords+1 queries: the centre point tells whether the label is back), ADAM per coordinate,
   on the loss  max_{j!=t} log p_j - log p_t  +  l2_weight * |x - x_stage1|^2,  stopping at the
   first step the label is back.  After every step the input is projected onto the pixel range
   and the eps ball around the *clean* input, so the total L2 distortion of both stages stays
   within eps (eps_1 + eps_2 <= eps in the paper's terms).  If the per-sample query budget runs
   out first, a bisection on the segment between the clean input and the ZOO iterate (a handful of
   queries; the clean end keeps the label) returns the farthest point that keeps the label, so
   every returned input satisfies the label criterion.

The paper's stage 2 ran ZOO for 10 000 iterations (lr 0.002, one binary-search step, c 0.5 —
Fig. 9b); on small models a budget of a few thousand queries with a larger step does the job.
The attacker never measures the target's cost; ``cost_fn`` is only used to report the costs.
"""

from __future__ import annotations

import numpy as np

from ...errors import AuditorError
from ...norms import perturbation_stats, project
from ..base import Param, bounds_of
from ..primitives import adam_step, bisect_segment, log_softmax, margins, on_segment, probe_logits
from .base import register_search, Search, SearchResult, chunks, resolve_layer_weights
from .whitebox import COMMON, budget, sparsity_descent


def _margin(logits: np.ndarray, target: np.ndarray) -> np.ndarray:
    """max_{j != t} log p_j - log p_t (negative while the label is t)."""
    return -margins(log_softmax(logits), target)


@register_search("blackbox", aliases=('black_box', 'black-box', 'blackboxsparsity'))
class BlackBoxSparsity(Search):
    """Two-stage black-box sparsity attack (surrogate transfer + ZOO label restoration)."""

    needs = frozenset({"surrogate"})

    PARAMS = {
        **COMMON,
        "surrogate": Param("object", None, "a Classifier the attacker owns (white-box access)"),
        "query_budget": Param("int", 20000, "target queries per input for stage 2", low=0),
        "coords": Param("int", 64, "pixels estimated per ZOO step", low=1),
        "zoo_lr": Param("float", 0.05, "ADAM step size of ZOO", low=0.0, low_open=True),
        "zoo_h": Param("float", 1e-3, "finite-difference step", low=0.0, low_open=True),
        "l2_weight": Param("float", 0.01, "pull towards the stage-1 input in the ZOO loss", low=0.0),
        "blend_steps": Param("int", 10, "bisection steps of the fallback", low=0),
    }

    def _run(self, model, x_clean, cost_fn, layer_weights, labels, seed) -> SearchResult:
        p = self.params
        where = self.where
        sur = p["surrogate"]
        if sur is None:
            raise AuditorError("needs a surrogate model (parameter 'surrogate')", where)
        if tuple(getattr(sur, "input_shape", x_clean.shape[1:])) != tuple(x_clean.shape[1:]):
            raise AuditorError(f"surrogate input shape {sur.input_shape} differs from the target's {x_clean.shape[1:]}", where)
        rng = np.random.default_rng(seed)
        n = len(x_clean)
        bounds = bounds_of(model)
        sq0 = sur.queries
        target = labels if labels is not None else model.predict(x_clean).astype(np.int64)
        cost_clean = cost_fn(x_clean)
        bud = budget(p, model, x_clean)  # eps: auto scaled to the input size

        # stage 1: Algorithm 1 with c = 0 on the surrogate (uniform layer weights: the caller's
        # weights describe the target's layers, which the attacker does not know)
        w_sur = resolve_layer_weights(sur, None, x_clean, where)
        x1 = np.empty_like(x_clean)
        n_chunks = len(range(0, n, p["batch_size"]))
        with self._bar("black-box stage 1 (surrogate)", n_chunks * (p["iterations"] + 1)) as bar:
            for sl in chunks(n, p["batch_size"]):
                t_sur = sur.predict(x_clean[sl]).astype(np.int64)
                _, _, bx, _, _, _, _ = sparsity_descent(
                    sur, x_clean[sl], t_sur, w_sur, np.zeros(len(t_sur)), beta=p["beta"], eps=bud["eps"],
                    norm=p["norm"], eps_iter=bud["eps_iter"], iterations=p["iterations"], momentum=p["momentum"],
                    keep_label=False, on_step=bar.update)
                x1[sl] = bx
        sur_queries = int(sur.queries - sq0)

        # stage 2: restore the target's label from its scores only
        tq0 = model.queries
        pred1 = model.predict(x1)
        transfer_kept = pred1 == target
        x_out = x1.copy()
        restored_by = np.where(transfer_kept, "transfer", "").astype(object)
        stage2_queries = np.zeros(n, dtype=np.int64)
        lost = np.flatnonzero(~transfer_kept)
        if len(lost):
            xz, ok, used = self._zoo(model, x1[lost], x_clean[lost], target[lost], rng, bounds, bud["eps"])
            stage2_queries[lost] = used
            x_out[lost] = xz
            restored_by[lost[ok]] = "zoo"
            fail = lost[~ok]
            if len(fail):
                xb, kept_b = self._blend(model, x_clean[fail], xz[~ok], target[fail])
                stage2_queries[fail] += p["blend_steps"] + 1
                x_out[fail] = xb
                restored_by[fail] = np.where(kept_b, "blend", "none")
        label_kept = model.predict(x_out) == target
        target_queries = int(model.queries - tq0)
        cost = cost_fn(x_out)
        cost_stage1 = cost_fn(x1)
        info = {
            "cost_clean": cost_clean,
            "cost_stage1": cost_stage1,
            "target": target,
            "transfer_label_kept": transfer_kept,
            "restored_by": restored_by,
            "stage2_queries": stage2_queries,
            "target_queries": target_queries,
            "surrogate_queries": sur_queries,
            "eps_iter": bud["eps_iter"],
            "eps": bud["eps"],
            "budget": bud,
            "perturbation": perturbation_stats(x_out, x_clean, bounds[1] - bounds[0]),
            "perturbation_stage1": perturbation_stats(x1, x_clean, bounds[1] - bounds[0]),
        }
        return SearchResult(self.name, x_out, cost, 0, p["iterations"] + 1, 0.0, label_kept, info)

    # -- stage 2 ------------------------------------------------------------------------------
    def _zoo(self, model, x_start, x_clean, target, rng, bounds, eps):
        """ZOO-ADAM towards ``target``; returns (x, restored (M,), queries used (M,))."""
        p = self.params
        m = len(x_start)
        shape = x_start.shape[1:]
        d = int(np.prod(shape))
        B = min(p["coords"], d)
        per_step = 2 * B + 1
        h = np.float32(p["zoo_h"])
        x = x_start.reshape(m, d).astype(np.float32).copy()
        anchor = x.copy()
        x0 = x_clean.reshape(m, d)
        M = np.zeros((m, d), np.float64)
        V = np.zeros((m, d), np.float64)
        T = np.zeros((m, d), np.int64)
        used = np.zeros(m, dtype=np.int64)
        done = np.zeros(m, dtype=bool)
        max_steps = p["query_budget"] // per_step
        with self._bar("black-box stage 2 (ZOO)", max(max_steps, 1)) as bar:
            for _ in range(max_steps):
                act = np.flatnonzero(~done)
                if not len(act):
                    break
                a = len(act)
                coords = np.stack([rng.choice(d, B, replace=False) for _ in range(a)])  # (a, B)
                cur = x[act[:, None], coords]
                logits = probe_logits(lambda batch, rows: model.logits(batch), x[act], coords, cur + h, cur - h,
                                      shape).astype(np.float32)
                used[act] += per_step
                t_rep = np.repeat(target[act], per_step)
                f = _margin(logits.reshape(a * per_step, -1), t_rep).reshape(a, per_step)
                back = logits[:, 0].argmax(axis=1) == target[act]
                done[act[back]] = True
                upd = ~back
                if not upd.any():
                    bar.update()
                    continue
                ia, cs = act[upd], coords[upd]
                r = np.arange(len(ia))[:, None]
                g = (f[upd, 1:B + 1] - f[upd, B + 1:]) / (2.0 * float(h))
                g = g + 2.0 * p["l2_weight"] * (x[ia[:, None], cs] - anchor[ia[:, None], cs])
                T[ia[:, None], cs] += 1
                M[ia[:, None], cs], V[ia[:, None], cs], step = adam_step(M[ia[:, None], cs], V[ia[:, None], cs],
                                                                         T[ia[:, None], cs], g, p["zoo_lr"])
                xi = x[ia].copy()
                xi[r, cs] -= step.astype(np.float32)
                x[ia] = project(xi.reshape((len(ia),) + shape), x0[ia].reshape((len(ia),) + shape),
                                eps, p["norm"], bounds).reshape(len(ia), d)
                bar.update()
        # the last update was never checked: one more look for those still running
        act = np.flatnonzero(~done)
        if len(act) and max_steps > 0:
            back = model.predict(x[act].reshape((len(act),) + shape)) == target[act]
            used[act] += 1
            done[act[back]] = True
        return x.reshape((m,) + shape), done, used

    def _blend(self, model, x_clean, x_far, target):
        """Farthest point on [x_clean, x_far] that keeps the label, by bisection."""
        lo, _ = bisect_segment(x_clean, x_far, lambda xm: model.predict(xm) != target, self.blend_steps)
        xb = on_segment(x_clean, (x_far - x_clean).astype(np.float32), lo)
        kept = model.predict(xb) == target
        return xb, kept
