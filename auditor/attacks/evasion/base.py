"""The attack interface shared by every evasion attack.

One uniform call, in the style of foolbox 3::

    result = attack(model, x, labels, epsilons, targets=None, seed=0)

``model`` is any :class:`auditor.runtime.classifier.Classifier` (the exact ONNX model, a reshaped one, or an
analytic test model); ``x`` is a batch of raw inputs inside ``model.bounds``; ``labels`` are the true
classes.  With ``targets`` the attack is *targeted* (success = classified as the target), otherwise
*untargeted* (success = classified as anything but the label).

Two kinds of attacks:

* **fixed-budget** attacks (FGSM, PGD, Square) are run once per ε.  ε values are processed in
  increasing order and an input already fooled at a smaller ε keeps that adversarial example
  (the balls are nested), so the success rate never decreases with ε.  ``epsilons=None`` uses the
  RobustBench convention for the input shape (see :func:`default_epsilon`).
* **minimal-norm** attacks (C&W L2, DeepFool, JSMA, ZOO, HopSkipJump) search for the smallest
  perturbation once.  With ``epsilons=None`` the result holds that single minimal example; with
  ε values, the example is projected onto each ε-ball (a no-op when its norm is already ≤ ε) and
  counted as a success only when it is still adversarial.

Whatever the attack reports internally, success is always decided at the end by a fresh forward
pass of the final examples through ``model``.  Queries are counted per input sample (one query =
one sample evaluated, forward or forward+backward).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ...errors import AuditorError
from ...norms import norm as _norm
from ...norms import project
from ..base import Configurable, check_inputs, plumbing, registrar
from ..primitives import _bshape, bisect_segment, margins, on_segment
from ...registry import Registry
from ...runtime.classifier import Classifier
from ...norms import is_adversarial, within_eps  # noqa: F401 (is_adversarial re-exported)

#: every evasion attack, registered by its module under the name scenario files use
ATTACKS: Registry[type["Attack"]] = Registry("attack")
register_attack = registrar(ATTACKS)

#: the margin value passed as ``kappa`` when an attack wants the *unclamped* C&W margin
NO_CLAMP = np.float32(1e30)


# --------------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------------


@dataclass
class AttackResult:
    """What an attack returns.

    ``x_adv[k]`` and ``success[k]`` belong to ``epsilons[k]``; for a minimal-norm attack called with
    ``epsilons=None`` there is one entry and ``epsilons == [None]``.  ``success`` flags come from a
    fresh forward pass.  ``distances`` (minimal-norm attacks only) is the per-sample ``norm`` of the
    minimal perturbation found, ``inf`` where the attack failed (0 for inputs that were already
    adversarial), and ``x_min`` the minimal examples themselves (the input where it failed).
    ``queries`` counts the samples evaluated per input over the whole call, and
    ``queries_per_eps[k]`` those spent on ``epsilons[k]`` (fixed-budget attacks).  ``details``:
    what an attack reports beyond that (AutoAttack: its per-member breakdown).
    """

    x_adv: list[np.ndarray]
    success: list[np.ndarray]
    queries: np.ndarray
    norm: str
    epsilons: list[float | None]
    targeted: bool = False
    distances: np.ndarray | None = None
    queries_per_eps: list[np.ndarray] | None = None
    x_min: np.ndarray | None = None
    attack: str = ""
    params: dict = field(default_factory=dict)
    details: dict | None = None


# --------------------------------------------------------------------------------------------
# conventions
# --------------------------------------------------------------------------------------------


def default_epsilon(norm: str, input_shape: tuple[int, ...], bounds: tuple[float, float] = (0.0, 1.0)) -> float:
    """The RobustBench budget for an input shape, scaled to the pixel range.

    * 1 channel (MNIST-like): Linf 0.3 (RobustBench/Madry et al.); L2 2.0 (RobustBench has no MNIST
      L2 track; 2.0 is the usual MNIST L2 budget in the literature, e.g. Croce & Hein 2020).
    * 3 channels up to 64x64 (CIFAR-like): Linf 8/255, L2 0.5 (RobustBench CIFAR-10).
    * larger (ImageNet-like): Linf 4/255 (RobustBench ImageNet), L2 3.0 (Madry lab `robustness`).
    """
    scale = float(bounds[1] - bounds[0])
    shape = tuple(int(s) for s in input_shape)
    channels = shape[0] if len(shape) == 3 else 1
    pixels = int(np.prod(shape[1:])) if len(shape) == 3 else int(np.prod(shape))
    if norm == "linf":
        eps = 0.3 if channels == 1 else (8 / 255 if pixels <= 64 * 64 else 4 / 255)
    elif norm == "l2":
        eps = 2.0 if channels == 1 else (0.5 if pixels <= 64 * 64 else 3.0)
    else:
        raise AuditorError(f"no default budget for the {norm} norm; give epsilons explicitly", where="attack")
    return eps * scale




def adv_loss(logits: np.ndarray, labels: np.ndarray, targets: np.ndarray | None) -> np.ndarray:
    """A score to *minimise*: the C&W margin, > 0 while the input is not adversarial."""
    if targets is None:
        return margins(logits, labels)
    return -margins(logits, targets)


# --------------------------------------------------------------------------------------------
# query accounting
# --------------------------------------------------------------------------------------------


class Oracle:
    """The model as one batch of an attack sees it, counting queries per original input.

    ``index[i]`` is the position (in the user's batch) of local sample ``i``; evaluating rows that
    belong to samples ``rows`` adds one query to each of them (rows may repeat, e.g. the perturbed
    copies of ZOO, Square or HopSkipJump).
    """

    def __init__(self, model: Classifier, counts: np.ndarray, index: np.ndarray, chunk: int = 4096):
        self.model, self.counts, self.index, self.chunk = model, counts, np.asarray(index), chunk

    def view(self, sel) -> "Oracle":
        return Oracle(self.model, self.counts, self.index[sel], self.chunk)

    def _count(self, rows) -> None:
        np.add.at(self.counts, self.index[rows], 1)

    def logits(self, x: np.ndarray, rows=None) -> np.ndarray:
        """Logits of ``x``; ``rows[i]`` is the local sample that row ``i`` belongs to (default: i)."""
        rows = np.arange(len(x)) if rows is None else np.asarray(rows)
        if len(x) == 0:
            return np.zeros((0, self.model.num_classes or 0), np.float32)
        self._count(rows)
        if len(x) <= self.chunk:
            return np.asarray(self.model.logits(x))
        return np.concatenate([np.asarray(self.model.logits(x[i:i + self.chunk]))
                               for i in range(0, len(x), self.chunk)])

    def value_and_grad(self, x: np.ndarray, objective: str, rows=None, **knobs):
        rows = np.arange(len(x)) if rows is None else np.asarray(rows)
        self._count(rows)
        v, g, z = self.model.value_and_grad(x, objective, **knobs)
        return np.asarray(v, np.float64), np.asarray(g, np.float32), np.asarray(z)


@dataclass
class Context:
    """Everything an attack needs about the batch it is working on."""

    oracle: Oracle
    x: np.ndarray  # (n, *shape) float32 originals
    labels: np.ndarray  # (n,) int64
    targets: np.ndarray | None  # (n,) int64 or None
    rng: np.random.Generator
    bounds: tuple[float, float]
    num_classes: int
    tick: Callable[[int], None] = lambda n=1: None
    clean_logits: np.ndarray | None = None  # (n, C) logits of x

    @property
    def targeted(self) -> bool:
        return self.targets is not None

    def sub(self, sel) -> "Context":
        return Context(self.oracle.view(sel), self.x[sel], self.labels[sel],
                       None if self.targets is None else self.targets[sel], self.rng, self.bounds,
                       self.num_classes, self.tick,
                       None if self.clean_logits is None else self.clean_logits[sel])

    def is_adv(self, logits: np.ndarray, sel=None) -> np.ndarray:
        labels = self.labels if sel is None else self.labels[sel]
        targets = None if self.targets is None else (self.targets if sel is None else self.targets[sel])
        return is_adversarial(logits, labels, targets)

    def loss(self, logits: np.ndarray, sel=None) -> np.ndarray:
        labels = self.labels if sel is None else self.labels[sel]
        targets = None if self.targets is None else (self.targets if sel is None else self.targets[sel])
        return adv_loss(logits, labels, targets)

    def goal(self, sel=None) -> np.ndarray:
        """The class whose margin the attack works on: the target, or the true label."""
        g = self.targets if self.targets is not None else self.labels
        return g if sel is None else g[sel]

    def clip(self, x: np.ndarray) -> np.ndarray:
        return np.clip(x, self.bounds[0], self.bounds[1]).astype(np.float32)


def shrink_to_boundary(ctx: Context, x_adv: np.ndarray, found: np.ndarray, steps: int = 12) -> np.ndarray:
    """Bisect on the segment x -> x_adv for the smallest t with x + t(x_adv - x) still adversarial.

    Only samples flagged ``found`` are touched; costs ``steps`` queries each.  Convex combinations of
    two in-range inputs stay in range.
    """
    x_adv = x_adv.copy()
    idx = np.flatnonzero(found)
    if len(idx) == 0 or steps <= 0:
        return x_adv
    x0 = ctx.x[idx]
    _, hi = bisect_segment(x0, x_adv[idx], lambda xm: ctx.is_adv(ctx.oracle.logits(xm, idx), idx), steps)
    x_adv[idx] = on_segment(x0, x_adv[idx] - x0, hi)
    return x_adv


# --------------------------------------------------------------------------------------------
# the base class
# --------------------------------------------------------------------------------------------


class Attack(Configurable):
    """Base class: batching, ε handling, query counting and the final verification.

    Subclasses are registered with ``@register_attack("name")``, declare ``PARAMS`` (their
    tunables, :class:`auditor.attacks.base.Param`) and ``norm``, ``minimal``, ``query_based``, and
    implement :meth:`_attack_eps` (fixed-budget) or :meth:`_minimize` (minimal-norm), plus
    :meth:`_iterations` for the progress bar.
    """

    kind = "attack"
    norm = "linf"
    minimal = False
    query_based = False
    #: minimal examples must clear the decision boundary by this fraction of the largest |logit|
    #: (else they are lengthened by 0.01 %, 0.1 % or 1 %, the first that does), so that examples
    #: found right at the boundary survive an independent re-evaluation (float32 noise)
    boundary_tol = 1e-5
    PARAMS = plumbing(batch_size=256)

    # --- to implement --------------------------------------------------------------------

    def _iterations(self) -> int:
        return 1

    def _attack_eps(self, ctx: Context, eps: float) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _minimize(self, ctx: Context) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _check_targets(self, targets) -> None:
        """Hook: attacks that cannot do targeted (or untargeted) runs raise here."""

    # --- the uniform call ------------------------------------------------------------------

    def __call__(self, model: Classifier, x, labels, epsilons=None, *, targets=None, seed: int = 0) -> AttackResult:
        x, labels, targets, epsilons = self._validate(model, x, labels, epsilons, targets, seed)
        self._check_targets(targets)
        n = len(x)
        bounds = (float(model.bounds[0]), float(model.bounds[1]))
        counts = np.zeros(n, np.int64)
        oracle = Oracle(model, counts, np.arange(n))
        rng = np.random.default_rng(seed)
        nb = max(1, -(-n // self.batch_size))
        runs = 1 if self.minimal else len(epsilons)
        total = runs * nb * max(self._iterations(), 1)
        with self._bar(f"{self.name} attack", total) as bar:
            def tick(k: int = 1) -> None:
                bar.update(k)

            clean = oracle.logits(x)
            ctx = Context(oracle, x, labels, targets, rng, bounds, int(clean.shape[1]), tick, clean)
            if self.minimal:
                return self._run_minimal(ctx, epsilons, counts, bar)
            return self._run_fixed(ctx, epsilons, counts, bar)

    def _batches(self, idx: np.ndarray):
        for i in range(0, len(idx), self.batch_size):
            yield idx[i:i + self.batch_size]

    def _run_fixed(self, ctx: Context, epsilons, counts, bar) -> AttackResult:
        n = len(ctx.x)
        done = ctx.is_adv(ctx.clean_logits)  # already adversarial: nothing to do at any ε
        current = ctx.x.copy()
        order = np.argsort(epsilons, kind="stable")
        x_out: list = [None] * len(epsilons)
        s_out: list = [None] * len(epsilons)
        q_out: list = [None] * len(epsilons)
        per_iter = max(self._iterations(), 1)
        for k in order:
            eps = float(epsilons[k])
            before = counts.copy()
            x_eps = current.copy()
            todo = np.flatnonzero(~done)
            for b in self._batches(todo):
                mark = bar.done
                if eps > 0:
                    sub = ctx.sub(b)
                    x_eps[b] = project(self._attack_eps(sub, eps), sub.x, eps, self.norm, ctx.bounds)
                bar.update(max(per_iter - (bar.done - mark), 0))
            adv = ctx.is_adv(ctx.oracle.logits(x_eps))  # fresh forward pass decides success
            x_out[k], s_out[k], q_out[k] = x_eps, adv, counts - before
            # nested balls: keep what already works for the larger budgets
            current = np.where(_bshape(adv, x_eps.ndim), x_eps, ctx.x)
            done = adv
        return AttackResult(x_out, s_out, counts.copy(), self.norm, [float(e) for e in epsilons],
                            targeted=ctx.targeted, queries_per_eps=q_out, attack=self.name, params=self.params)

    def _run_minimal(self, ctx: Context, epsilons, counts, bar) -> AttackResult:
        n = len(ctx.x)
        already = ctx.is_adv(ctx.clean_logits)
        x_min = ctx.x.copy()
        todo = np.flatnonzero(~already)
        per_iter = max(self._iterations(), 1)
        for b in self._batches(todo):
            mark = bar.done
            x_min[b] = ctx.clip(self._minimize(ctx.sub(b)))
            bar.update(max(per_iter - (bar.done - mark), 0))
        z = ctx.oracle.logits(x_min)
        adv = ctx.is_adv(z)
        if self.boundary_tol > 0 and self.norm != "l0":
            idx = np.flatnonzero(adv & ~already)

            def clear(zz, rows):  # adversarial with a margin above float32 noise
                scale = np.maximum(np.abs(np.asarray(zz, np.float64)).max(axis=1), 1.0)
                return ctx.is_adv(zz, rows) & (-ctx.loss(zz, rows) >= self.boundary_tol * scale)

            weak = idx[~clear(z[idx], idx)]
            for f in (1e-4, 1e-3, 1e-2):
                if len(weak) == 0:
                    break
                x_try = ctx.clip(ctx.x[weak] + np.float32(1.0 + f) * (x_min[weak] - ctx.x[weak]))
                ok = clear(ctx.oracle.logits(x_try, weak), weak)
                x_min[weak[ok]] = x_try[ok]
                weak = weak[~ok]
            adv = ctx.is_adv(ctx.oracle.logits(x_min))  # fresh forward pass decides success
        x_min = np.where(_bshape(adv, x_min.ndim), x_min, ctx.x)
        dist = np.where(adv, _norm(x_min - ctx.x, self.norm), np.inf)
        if epsilons is None:
            return AttackResult([x_min], [adv], counts.copy(), self.norm, [None], targeted=ctx.targeted,
                                distances=dist, x_min=x_min, attack=self.name, params=self.params)
        x_out, s_out = [], []
        for eps in epsilons:
            eps = float(eps)
            if self.norm == "l0":
                x_eps = np.where(_bshape(dist <= eps, x_min.ndim), x_min, ctx.x)
            else:
                x_eps = project(x_min, ctx.x, eps, self.norm, ctx.bounds)
            s = ctx.is_adv(ctx.oracle.logits(x_eps)) & within_eps(x_eps, ctx.x, self.norm, eps, ctx.bounds)
            x_out.append(np.where(_bshape(s, x_eps.ndim), x_eps, ctx.x) if self.norm == "l0" else x_eps)
            s_out.append(s)
        return AttackResult(x_out, s_out, counts.copy(), self.norm, [float(e) for e in epsilons],
                            targeted=ctx.targeted, distances=dist, x_min=x_min, attack=self.name,
                            params=self.params)

    # --- input checking ------------------------------------------------------------------

    def _validate(self, model, x, labels, epsilons, targets, seed):
        where = self.where
        if not isinstance(model, Classifier):
            raise AuditorError(f"the model must be a Classifier, got {type(model).__name__}", where=where)
        x = check_inputs(model, x, where)
        shape, (lo, hi) = tuple(x.shape[1:]), model.bounds
        num_classes = getattr(model, "num_classes", None)
        if not num_classes:  # a model with a symbolic class dimension: ask it once
            num_classes = int(np.asarray(model.logits(x[:1])).shape[1])
        labels = self._classes(labels, len(x), num_classes, "labels", where)
        if targets is not None:
            targets = self._classes(targets, len(x), num_classes, "targets", where)
            if np.any(targets == labels):
                raise AuditorError("a target class equals the true label", where=where)
        if epsilons is not None:
            if np.isscalar(epsilons):
                epsilons = [epsilons]
            try:
                epsilons = [float(e) for e in epsilons]
            except (TypeError, ValueError):
                raise AuditorError(f"epsilons must be numbers, got {epsilons!r}", where=where) from None
            if not epsilons or any(not np.isfinite(e) or e < 0 for e in epsilons):
                raise AuditorError(f"epsilons must be a non-empty list of finite numbers >= 0, got {epsilons}",
                                   where=where)
        elif not self.minimal:
            epsilons = [default_epsilon(self.norm, shape, (float(lo), float(hi)))]
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise AuditorError(f"seed must be an integer, got {seed!r}", where=where)
        return x, labels, targets, epsilons

    @staticmethod
    def _classes(v, n, num_classes, what, where) -> np.ndarray:
        a = np.asarray(v)
        if a.ndim == 0:
            a = np.full(n, a)
        if a.shape != (n,) or not (np.issubdtype(a.dtype, np.integer) or
                                   (np.issubdtype(a.dtype, np.floating) and np.all(a == np.round(a)))):
            raise AuditorError(f"{what} must be {n} integer class indices, got shape {a.shape} dtype {a.dtype}",
                               where=where)
        a = a.astype(np.int64)
        if a.min() < 0 or a.max() >= num_classes:
            raise AuditorError(f"{what} must lie in [0, {num_classes - 1}]", where=where)
        return a
