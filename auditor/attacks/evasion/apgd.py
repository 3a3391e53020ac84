"""Auto-PGD (Croce & Hein, ICML 2020): APGD-CE, APGD-DLR and the targeted APGD-T, Linf and L2."""

from __future__ import annotations

import numpy as np

from ...errors import AuditorError
from ...norms import normalize, project
from ..base import Param, plumbing
from .base import Attack, _bshape, Context, NO_CLAMP, register_attack


def checkpoints(steps: int) -> list[int]:
    """The iterations after which APGD may halve its step: ``w_j = ceil(p_j * steps)`` with
    p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06) (Croce & Hein §3.2)."""
    p = [0.0, 0.22]
    while p[-1] < 1.0:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    w = sorted({int(np.ceil(q * steps - 1e-9)) for q in p if 0 < q < 1.0})
    return [c for c in w if 0 < c < steps]


def ball_start(x: np.ndarray, eps: float, norm: str, rng: np.random.Generator,
               bounds: tuple[float, float]) -> np.ndarray:
    """AutoAttack's starting point: x + ε·t/‖t‖ for t uniform in [-1, 1]^d (‖·‖ the attack's norm),
    clipped to the pixel range."""
    t = rng.uniform(-1.0, 1.0, size=x.shape)
    flat = t.reshape(len(x), -1)
    n = np.abs(flat).max(axis=1) if norm == "linf" else np.linalg.norm(flat, axis=1)
    d = t / _bshape(np.maximum(n, 1e-12), x.ndim)
    return np.clip(x + eps * d, bounds[0], bounds[1]).astype(np.float32)


def _margin(ctx: Context, x: np.ndarray, rows: np.ndarray, label: np.ndarray):
    """(z_label - max_{i != label} z_i, its input gradient (float64), logits) - the unclamped C&W margin."""
    v, g, z = ctx.oracle.value_and_grad(x, "margin", rows=rows, label=label, kappa=NO_CLAMP)
    return np.asarray(v, np.float64), np.nan_to_num(g.astype(np.float64)), np.asarray(z, np.float64)


def dlr_value_and_grad(ctx: Context, x: np.ndarray, act: np.ndarray, labels: np.ndarray,
                       targets: np.ndarray | None):
    """The DLR loss (to maximise) and its input gradient, from margin gradients of the Classifier
    protocol (no special objective needed):

    * untargeted: ``-(z_y - max_{i!=y} z_i) / (z_π1 - z_π3)``  (2 gradient queries per input);
    * targeted:   ``-(z_y - z_t) / (z_π1 - (z_π3 + z_π4)/2)``  (3, or 4 where π1 ∉ {y, t}),

    π_k the k-th largest logit (+1e-12 in the denominator as in the reference).  Each margin
    ``z_c - max_{i!=c} z_i`` of a class c that is not the top one equals ``z_c - z_π1``, which
    gives ``∇(z_π1 - z_πk) = -∇m(π_k)``.  With 3 classes π4 is π3.  -> (value, grad, logits)
    """
    c = ctx.num_classes
    if c < 3:
        raise AuditorError(f"the DLR loss needs at least 3 classes, the model has {c}", where="attack")
    if targets is None:
        m_y, g_y, z = _margin(ctx, x, act, labels)
        order = np.argsort(-z, axis=1, kind="stable")
        p3 = order[:, 2]
        m3, g3, _ = _margin(ctx, x, act, p3)
        r = np.arange(len(z))
        den = z[r, order[:, 0]] - z[r, p3] + 1e-12
        grad_den = -g3
        num, grad_num = m_y, g_y
    else:
        m_t, g_t, z = _margin(ctx, x, act, targets)
        order = np.argsort(-z, axis=1, kind="stable")
        p1, p3, p4 = order[:, 0], order[:, 2], order[:, min(3, c - 1)]
        n = len(z)
        mm, gg, _ = _margin(ctx, np.concatenate([x, x]), np.concatenate([act, act]), np.concatenate([p3, p4]))
        r = np.arange(n)
        den = z[r, p1] - 0.5 * (z[r, p3] + z[r, p4]) + 1e-12
        grad_den = -0.5 * (gg[:n] + gg[n:])
        num = z[r, labels] - z[r, targets]
        grad_num = -g_t
        other = np.flatnonzero((p1 != labels) & (p1 != targets))
        if len(other):  # z_y - z_t = (z_y - z_π1) - (z_t - z_π1)
            _, g_y, _ = _margin(ctx, x[other], act[other], labels[other])
            grad_num[other] = g_y - g_t[other]
    value = -num / den
    grad = -grad_num / _bshape(den, x.ndim) + _bshape(num / den ** 2, x.ndim) * grad_den
    return value, grad, z


@register_attack("apgd")
class APGD(Attack):
    """Auto-PGD: PGD with momentum 0.75 and a step size that halves at checkpoints when the loss
    stops improving (Croce & Hein 2020, Algorithm 1).

    Start: AutoAttack's random point of the ε-sphere; step η = 2ε.  After the checkpoints
    w_j of :func:`checkpoints` the step is halved, and the iterate reset to the best point so
    far, where fewer than ρ·(w_j - w_{j-1}) of the steps since the last checkpoint increased the
    loss, or where the step was not halved at the last checkpoint and the best loss has not
    improved since.  Inputs are frozen at their first adversarial iterate (every iterate is
    checked: the logits come with the gradient); the best-loss point is returned for the rest.

    Defaults: Croce & Hein, the ``autoattack`` standard version (a DLR step's gradient queries:
    :func:`dlr_value_and_grad`).
    """

    PARAMS = {
        "norm": Param("choice", "linf", "the threat model: `linf` or `l2`", choices=("linf", "l2")),
        "steps": Param("int", 100, "gradient iterations (plus one at the start)", low=1),
        "restarts": Param("int", 1, "runs per input (only inputs not yet fooled are restarted)", low=1),
        "loss": Param("choice", "ce", "cross-entropy `ce` (APGD-CE) or `dlr`, the Difference of Logits Ratio (APGD-DLR; "
                      "targeted runs use the targeted DLR).  A DLR step costs 2 gradient queries (targeted 3-4)",
                      choices=("ce", "dlr")),
        "rho": Param("float", 0.75, "the checkpoint condition: halve the step where fewer than rho·(w_j - w_{j-1}) "
                     "steps since the last checkpoint increased the loss", low=0.0, high=1.0),
        "momentum": Param("float", 0.75, "the weight α of the new step against the previous one", low=0.0, high=1.0),
        **plumbing(batch_size=256),
    }

    def _iterations(self) -> int:
        return self.steps * self.restarts

    def _objective(self, ctx: Context, x: np.ndarray, act: np.ndarray, targets: np.ndarray | None):
        """(loss to maximise, its gradient, logits) for the active rows."""
        labels = ctx.labels[act]
        if self.loss == "dlr":
            return dlr_value_and_grad(ctx, x, act, labels, targets)
        goal = labels if targets is None else targets
        v, g, z = ctx.oracle.value_and_grad(x, "ce", rows=act, target=goal)
        sign = 1.0 if targets is None else -1.0
        return sign * np.asarray(v, np.float64), sign * np.nan_to_num(g.astype(np.float64)), z

    def _attack_eps(self, ctx: Context, eps: float) -> np.ndarray:
        best, _ = self._search(ctx, eps, ctx.targets, np.zeros(len(ctx.x), bool), ctx.x.copy())
        return best

    def _search(self, ctx: Context, eps: float, targets: np.ndarray | None, found: np.ndarray,
                best: np.ndarray, ticks: bool = True):
        """Run the restarts on the rows not yet ``found`` (success = ``ctx.is_adv``); the loss is
        driven towards ``targets`` (None: away from the label). -> (best examples, found)."""
        n = len(ctx.x)
        best_loss = np.full(n, -np.inf)
        checks = set(checkpoints(self.steps))
        for _ in range(self.restarts):
            act = np.flatnonzero(~found)
            if len(act) == 0:
                break
            x0 = ctx.x[act]
            tg = None if targets is None else targets[act]
            xc = ball_start(x0, eps, self.norm, ctx.rng, ctx.bounds)
            f, g, z = self._objective(ctx, xc, act, tg)
            state = {"x0": x0, "x": xc, "x_prev": xc.copy(), "f": f, "g": g, "tg": tg,
                     "eta": np.full(len(act), 2.0 * eps), "x_max": xc.copy(), "f_max": f.copy(),
                     "g_max": g.copy(), "inc": np.zeros(len(act)), "f_max_check": f.copy(),
                     "reduced": np.ones(len(act), bool)}

            def record(st, act, z):
                adv = ctx.is_adv(z, act)
                better = (st["f"] > best_loss[act]) & ~found[act]
                best[act[better]] = st["x"][better]
                best_loss[act[better]] = st["f"][better]
                best[act[adv]] = st["x"][adv]
                found[act[adv]] = True
                keep = ~adv
                return act[keep], {k: (v if v is None else v[keep]) for k, v in st.items()}

            act, state = record(state, act, z)
            last = 0
            for t in range(self.steps):
                if len(act) == 0:
                    break
                st = state
                x, x0 = st["x"], st["x0"]
                a = np.float32(self.momentum if t > 0 else 1.0)
                eta = _bshape(st["eta"], x.ndim).astype(np.float32)
                z1 = project(x + eta * normalize(st["g"].astype(np.float32), self.norm), x0, eps, self.norm,
                             ctx.bounds)
                xn = project(x + a * (z1 - x) + (1 - a) * (x - st["x_prev"]), x0, eps, self.norm, ctx.bounds)
                fn, gn, zn = self._objective(ctx, xn, act, st["tg"])
                st["inc"] += fn > st["f"]
                st["x_prev"], st["x"], st["f"], st["g"] = x, xn, fn, gn
                up = fn > st["f_max"]
                st["x_max"][up], st["f_max"][up], st["g_max"][up] = xn[up], fn[up], gn[up]
                if ticks:
                    ctx.tick()
                act, state = record(st, act, zn)
                st = state
                if t + 1 in checks and len(act):
                    osc = st["inc"] <= self.rho * (t + 1 - last)
                    stale = ~st["reduced"] & (st["f_max_check"] >= st["f_max"])
                    halve = osc | stale
                    st["reduced"], st["f_max_check"] = halve, st["f_max"].copy()
                    st["eta"] = np.where(halve, st["eta"] / 2.0, st["eta"])
                    st["x"][halve], st["f"][halve], st["g"][halve] = st["x_max"][halve], st["f_max"][halve], \
                        st["g_max"][halve]
                    st["inc"][:] = 0
                    last = t + 1
        return best, found


@register_attack("apgd_t")
class APGDT(APGD):
    """APGD-T: targeted APGD with the targeted DLR loss, run against the runner-up classes in turn
    (the 2nd, 3rd, ... largest clean logit), each only on the inputs no earlier target fooled;
    success is any misclassification (AutoAttack's ``apgd-t``).  With ``targets`` given it is one
    plain targeted run.

    Defaults: the ``autoattack`` standard version.
    """

    PARAMS = {
        **{k: p for k, p in APGD.PARAMS.items() if k not in ("loss", "rho", "momentum", "batch_size", "progress")},
        "loss": Param("choice", "dlr", "the targeted DLR loss `dlr`, or `ce` for a targeted cross-entropy",
                      choices=("ce", "dlr")),
        "n_target_classes": Param("int", 9, "runner-up classes targeted in turn", low=1),
        "rho": Param("float", 0.75, "the checkpoint condition: halve the step where fewer than rho·(w_j - w_{j-1}) "
                     "steps since the last checkpoint increased the loss", low=0.0, high=1.0),
        "momentum": Param("float", 0.75, "the weight α of the new step against the previous one", low=0.0, high=1.0),
        **plumbing(batch_size=256),
    }

    def _iterations(self) -> int:
        return self.steps * self.restarts * self.n_target_classes

    def _attack_eps(self, ctx: Context, eps: float) -> np.ndarray:
        found = np.zeros(len(ctx.x), bool)
        best = ctx.x.copy()
        if ctx.targeted:
            return self._search(ctx, eps, ctx.targets, found, best)[0]
        order = np.argsort(-np.asarray(ctx.clean_logits, np.float64), axis=1, kind="stable")
        for k in range(1, min(self.n_target_classes, ctx.num_classes - 1) + 1):
            best, found = self._search(ctx, eps, order[:, k], found, best)
            if found.all():
                break
        return best
