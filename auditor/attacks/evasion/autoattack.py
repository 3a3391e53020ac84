"""AutoAttack (Croce & Hein, ICML 2020): the standard ensemble, run as RobustBench runs it."""

from __future__ import annotations

import numpy as np

from ...norms import project
from .apgd import APGD, APGDT
from .base import register_attack, Attack, AttackResult, Context, check_choice, check_int
from .fab import FAB
from .square import SquareAttack

#: the members of the standard version, in the order they run
STANDARD = ("apgd_ce", "apgd_t", "fab_t", "square")


@register_attack("autoattack")
class AutoAttack(Attack):
    """APGD-CE, then APGD-T, then FAB-T, then Square, each run only on the inputs that every
    earlier member left unbroken; an input counts as robust at ε only when no member fooled it.

    ``AttackResult.details["members"]`` (and the ``ensemble`` rows of the robustness report)
    gives per ε how many inputs each member was run on and how many it broke, its queries, and
    the members skipped (the DLR members need at least 3 classes).

    Parameters and defaults (``autoattack`` ``version="standard"``, as RobustBench evaluates):

    * ``norm`` — ``"linf"`` or ``"l2"``.
    * ``steps=100`` — APGD-CE, APGD-T and FAB-T iterations.
    * ``n_target_classes=9`` — target classes of APGD-T and FAB-T (capped at classes - 1).
    * ``n_queries=5000`` — Square's query budget.
    * ``members`` — a subset of ``apgd_ce, apgd_t, fab_t, square`` (default: all four).
    """


    def __init__(self, norm: str = "linf", steps: int = 100, n_target_classes: int = 9, n_queries: int = 5000,
                 members: list | None = None, batch_size: int = 256, progress: bool | None = None):
        super().__init__(batch_size, progress)
        self.norm = check_choice("norm", norm, ("linf", "l2"))
        self.steps = check_int("steps", steps, 1)
        self.n_target_classes = check_int("n_target_classes", n_target_classes, 1)
        self.n_queries = check_int("n_queries", n_queries, 1)
        chosen = list(STANDARD) if members is None else list(members)
        for m in chosen:
            check_choice("members", m, STANDARD)
        if not chosen:
            check_choice("members", None, STANDARD)
        self.members = [m for m in STANDARD if m in chosen]
        big = 1 << 30
        self._attacks: dict[str, Attack] = {
            "apgd_ce": APGD(self.norm, self.steps, loss="ce", batch_size=big),
            "apgd_t": APGDT(self.norm, self.steps, n_target_classes=self.n_target_classes, batch_size=big),
            "fab_t": FAB(self.norm, self.steps, n_target_classes=self.n_target_classes, batch_size=big),
            "square": SquareAttack(self.norm, self.n_queries, batch_size=big),
        }
        self._log: dict = {}

    def _iterations(self) -> int:
        return sum(self._attacks[m]._iterations() for m in self.members)

    def __call__(self, model, x, labels, epsilons=None, *, targets=None, seed: int = 0) -> AttackResult:
        self._log = {}
        res = super().__call__(model, x, labels, epsilons, targets=targets, seed=seed)
        rows = []
        for e in res.epsilons:
            log = self._log.get(float(e), {})
            rows.append({"epsilon": float(e), "n_run": int(log.get("n_run", 0)),
                         "members": [dict(attack=m, **log.get(m, {"n_attacked": 0, "n_broken": 0, "queries": 0}))
                                     for m in self.members],
                         "skipped": sorted(log.get("skipped", set()))})
        res.details = {"members": rows}
        return res

    def _attack_eps(self, ctx: Context, eps: float) -> np.ndarray:
        log = self._log.setdefault(float(eps), {"n_run": 0, "skipped": set()})
        log["n_run"] += len(ctx.x)
        out = ctx.x.copy()
        robust = np.ones(len(ctx.x), bool)
        for name in self.members:
            att = self._attacks[name]
            rec = log.setdefault(name, {"n_attacked": 0, "n_broken": 0, "queries": 0})
            if name in ("apgd_t",) and ctx.num_classes < 3:
                log["skipped"].add(name)
                continue
            idx = np.flatnonzero(robust)
            if len(idx) == 0:
                break
            sub = ctx.sub(idx)
            before = ctx.oracle.counts.copy()
            if att.minimal:
                att.stop_distance = eps  # an example within ε is all the ensemble needs
                try:
                    xa = project(att._minimize(sub), sub.x, eps, self.norm, ctx.bounds)
                finally:
                    att.stop_distance = None
            else:
                xa = project(att._attack_eps(sub, eps), sub.x, eps, self.norm, ctx.bounds)
            adv = sub.is_adv(sub.oracle.logits(xa))  # a fresh forward pass decides
            out[idx[adv]] = xa[adv]
            robust[idx[adv]] = False
            rec["n_attacked"] += len(idx)
            rec["n_broken"] += int(adv.sum())
            rec["queries"] += int((ctx.oracle.counts - before).sum())
        return out
