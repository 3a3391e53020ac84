"""AutoAttack (Croce & Hein, ICML 2020): the standard ensemble, run as RobustBench runs it."""

from __future__ import annotations

import numpy as np

from ...norms import project
from ..base import Param, plumbing
from .apgd import APGD, APGDT
from .base import Attack, AttackResult, Context, register_attack
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

    Defaults: ``autoattack`` ``version="standard"``, as RobustBench evaluates.
    """

    PARAMS = {
        "norm": Param("choice", "linf", "the threat model: `linf` or `l2`", choices=("linf", "l2")),
        "steps": Param("int", 100, "APGD-CE, APGD-T and FAB-T iterations", low=1),
        "n_target_classes": Param("int", 9, "target classes of APGD-T and FAB-T (capped at classes - 1)", low=1),
        "n_queries": Param("int", 5000, "Square's query budget", low=1),
        "members": Param("choices", None, "a subset of the members to run, in the standard order (default: all four)",
                         choices=STANDARD),
        **plumbing(batch_size=256),
    }

    def _configure(self) -> None:
        self.members = [m for m in STANDARD if self.members is None or m in self.members]
        self._attacks: dict[str, Attack] = {
            "apgd_ce": APGD(norm=self.norm, steps=self.steps, loss="ce"),
            "apgd_t": APGDT(norm=self.norm, steps=self.steps, n_target_classes=self.n_target_classes),
            "fab_t": FAB(norm=self.norm, steps=self.steps, n_target_classes=self.n_target_classes),
            "square": SquareAttack(norm=self.norm, n_queries=self.n_queries),
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
