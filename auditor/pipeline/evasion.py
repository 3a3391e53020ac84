"""The robustness stage of the audit: the scenario's evasion attacks on each profile as units
(chunks of their inputs, all the attack's budgets in each) and the profile's ``robustness``
section from their merged parts (:func:`auditor.pipeline.robustness.robustness_report`)."""

from __future__ import annotations

import numpy as np

from ..scenario import attack_entries, attack_entry
from ..validate import parse_attack
from .deployed import budget, deployed
from .robustness import attack_part, check_labelled, choose_targets, parse_attacks, robustness_report
from .units import AuditContext, Unit, cached, chunk_bounds, unit_seed


def runs_evasion(sc) -> bool:
    return sc.robustness is not None and bool(sc.robustness.attacks)


def _evasion_spec(ctx: AuditContext, k: int) -> dict:
    return cached(ctx, ("evasion", k), lambda: parse_attack(attack_entry(ctx.scenario.robustness.attacks[k])))


def evasion_unit(ctx: AuditContext, u: Unit, deadline) -> dict:
    """An evasion attack, all its ε, on a chunk of its inputs (``u.args``: random targets or None)."""
    st = deployed(ctx, u.profile)
    x, y = check_labelled(ctx.data.x[u.start:u.stop], ctx.data.y[u.start:u.stop])
    with budget(st.clf, deadline), budget(st.verifier, deadline):
        return attack_part(st.clf, st.verifier, x, y, _evasion_spec(ctx, u.index), targets=u.args, seed=u.seed)


def evasion_units(ctx: AuditContext, p: int, clean_logits: np.ndarray) -> list[Unit]:
    """The scenario's evasion attacks on profile ``p`` by chunk of their inputs; random targets
    are drawn over all the inputs, as in one piece."""
    sc, data, name = ctx.scenario, ctx.data, ctx.profiles[p].name
    if not runs_evasion(sc):
        return []
    n = min(sc.robustness.count, len(data.x))
    units = []
    for k, att in enumerate(sc.robustness.attacks):
        targets = None
        if att.targeted in (True, "random"):
            targets = choose_targets("random", data.y[:n].astype(np.int64), np.zeros((n, clean_logits.shape[1])),
                                     ctx.seed + k)
        for i, (a, b) in enumerate(chunk_bounds(n, sc.chunk_size)):
            units.append(Unit(f"{name}/evasion[{k}]:{att.attack}/{i}", evasion_unit, p, k, i, a, b,
                              unit_seed(ctx.seed + k, i), True, None if targets is None else targets[a:b]))
    return units


def robustness_section(ctx: AuditContext, parts: list | None) -> dict:
    """The `robustness` section of a profile from its merged attack parts."""
    sc = ctx.scenario
    n = min(sc.robustness.count, len(ctx.data.x))
    rep = robustness_report(parse_attacks(attack_entries(sc.robustness.attacks)), parts, ctx.data.y[:n])
    rep["count"] = n
    return rep
