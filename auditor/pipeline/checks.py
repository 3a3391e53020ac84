"""Checks: a measured value against a threshold, per hardware profile.  The verdict is their AND.

Every check is declared once, here, in :data:`CHECKS`: the scenario field holding its threshold
(``checks.<name>`` or ``regression.<name>``), its direction, the stages of the audit whose
results it reads, and how it measures them on a profile's report section.  What the time budget
(``--max-seconds``) does to a check is derived from those stages: a check that reads a stage the
budget cut short is "not decided" (``decided: false``, never a pass), so a new check cannot
forget it.  A new check is one declaration here and its threshold field in
:class:`auditor.scenario.Checks` (or :class:`auditor.pipeline.baseline.Regression`)::

    @declare("max_queries", "<=", needs=("robustness",))
    def _max_queries(threshold, section, old):
        return [("max_queries", measured, threshold, "")]
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable

from ..errors import AuditorError
from ..registry import Registry

#: the stages of an audit a check may read (the report's ``profiles[].cut_short`` names them, an
#: energy search by its name)
STAGES = ("clean", "energy", "robustness", "approx", "masking")


@dataclass
class Check:
    name: str
    profile: str
    measured: float | None  # None: could not be measured (counts as a failure)
    threshold: float
    op: str  # "<=" or ">="
    passed: bool
    detail: str = ""
    #: False when the time budget (--max-seconds) cut short what the check needs: "not decided",
    #: never a pass (passed is False too)
    decided: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


def make(name: str, profile: str, measured, threshold: float, op: str, detail: str = "") -> Check:
    if measured is None or (isinstance(measured, float) and math.isnan(measured)):
        return Check(name, profile, None, float(threshold), op, False, detail or "not measured")
    m = float(measured)
    passed = m <= threshold if op == "<=" else m >= threshold
    return Check(name, profile, m, float(threshold), op, bool(passed), detail)


def not_decided(ch: Check, why: str) -> Check:
    """Mark a check that the time budget left undecided: never a pass (``decided: false``)."""
    ch.passed, ch.decided, ch.detail = False, False, why
    return ch


#: what a check's measure returns, one per row of the report: (name, measured or None,
#: threshold, detail)
Row = tuple[str, "float | None", float, str]


@dataclass(frozen=True)
class CheckDef:
    """One check: ``section.field`` of the scenario holds its threshold (absent: None, false or
    an empty list); ``measure(threshold, profile_section, old_profile_section)`` its rows."""

    field: str
    section: str  # "checks" or "regression"
    op: str
    needs: frozenset
    measure: Callable[..., list]
    #: evaluated only on the profiles where its last stage ran (the gradient-masking diagnosis
    #: runs on some profiles only)
    only_where_run: bool = False

    def threshold(self, sc):
        return getattr(getattr(sc, self.section), self.field)

    def present(self, sc) -> bool:
        t = self.threshold(sc)
        return t is not None and t is not False and t != []


CHECKS: Registry[CheckDef] = Registry("check")


def declare(name: str, op: str, needs: tuple[str, ...], section: str = "checks", only_where_run: bool = False):
    """Register the decorated ``measure`` as the check ``name`` (see :class:`CheckDef`); a
    regression check is registered as ``regression.<name>``."""
    bad = set(needs) - set(STAGES)
    if bad:
        raise ValueError(f"check {name!r}: unknown stages {sorted(bad)}")

    def deco(fn):
        key = name if section == "checks" else f"{section}.{name}"
        CHECKS.add(key, CheckDef(name, section, op, frozenset(("clean", *needs)), fn, only_where_run))
        return fn
    return deco


def cut_stages(cut_short: list[str]) -> set[str]:
    """The stages a profile's ``cut_short`` list names ("clean" cuts every stage after it; any
    other name than robustness, approx and masking is an energy search)."""
    out = set()
    for name in cut_short:
        out |= set(STAGES) if name == "clean" else {name} if name in STAGES else {"energy"}
    return out


def _why(cut_short: list[str]) -> str:
    if "clean" in cut_short:
        return "cut short by --max-seconds before the clean evaluation ended"
    return f"cut short by --max-seconds: {', '.join(cut_short)}"


def evaluate(sc, section: str, profile: str, pr: dict, old: dict | None = None) -> list[Check]:
    """The ``section`` ("checks" or "regression") checks of scenario ``sc`` on one profile's
    report section ``pr`` (``old``: the baseline report's section of the same profile), in
    declaration order; those reading a stage ``pr["cut_short"]`` names are not decided."""
    cut_short = list(pr.get("cut_short", []))
    cut = cut_stages(cut_short)
    out = []
    for d in CHECKS.values():
        if d.section != section or not d.present(sc):
            continue
        if d.only_where_run and not any(s in pr or s in cut for s in d.needs - {"clean"}):
            continue
        rows = [make(name, profile, m, t, d.op, detail) for name, m, t, detail in d.measure(d.threshold(sc), pr, old)]
        if d.needs & cut:
            rows = [not_decided(ch, _why(cut_short)) for ch in rows]
        out += rows
    return out


# --------------------------------------------------------------------------------------------
# the checks of `checks:`, in report order
# --------------------------------------------------------------------------------------------


def _summary_check(name: str, key: str, factor: float, needs: tuple[str, ...], op: str = "<=",
                   missing: str = "") -> None:
    """A check on one number of the profile's summary (SI units, times ``factor``)."""
    def measure(threshold, pr, old):
        v = (pr.get("summary") or {}).get(key)
        return [(name, None if v is None else v * factor, threshold, "" if v is not None else missing)]

    declare(name, op, needs)(measure)


_ENERGY = ("energy",)
_NO_SEARCH = "no energy-latency attack ran"
_summary_check("worst_case_latency_ms", "worst_latency_s", 1e3, _ENERGY)
_summary_check("mean_latency_ms", "clean_mean_latency_s", 1e3, ())
_summary_check("worst_case_energy_uj", "worst_energy_j", 1e6, _ENERGY)
_summary_check("mean_energy_uj", "clean_mean_energy_j", 1e6, ())
_summary_check("worst_case_edp", "worst_edp", 1.0, _ENERGY)
_summary_check("max_density", "worst_density", 1.0, _ENERGY)
_summary_check("max_latency_increase", "latency_increase", 1.0, _ENERGY, missing=_NO_SEARCH)
_summary_check("max_energy_increase", "energy_increase", 1.0, _ENERGY, missing=_NO_SEARCH)
_summary_check("min_clean_accuracy", "clean_accuracy", 1.0, (), ">=", missing="the data has no labels")


def _robustness_entry(report: dict, attack: str, norm: str | None, what: str) -> dict:
    hits = [a for a in report.get("attacks", []) if a["attack"] == str(attack).lower()
            and (norm is None or a["norm"] == str(norm).lower())]
    if not hits:
        raise AuditorError(f"no {attack}{'/' + norm if norm else ''} attack in the robustness report", where=what)
    return hits[0]


def check_min_robust_accuracy(report: dict, attack: str, norm: str | None, epsilon: float, threshold: float) -> dict:
    """Robust accuracy under ``attack`` (and ``norm``) at ``epsilon`` in a robustness report
    against ``threshold``: ``{check, attack, norm, epsilon, measured, threshold, passed}``."""
    e = _robustness_entry(report, attack, norm, "min_robust_accuracy")
    for r in e["results"]:
        if math.isclose(r["epsilon"], float(epsilon), rel_tol=1e-6, abs_tol=1e-9):
            m = r["robust_accuracy"]
            return {"check": "min_robust_accuracy", "attack": e["attack"], "norm": e["norm"], "epsilon": float(epsilon),
                    "measured": m, "threshold": float(threshold), "passed": bool(m >= threshold)}
    have = ", ".join(f"{r['epsilon']:g}" for r in e["results"]) or "none"
    raise AuditorError(f"{e['attack']} was not run at epsilon {epsilon:g} (have: {have})", where="min_robust_accuracy")


@declare("min_robust_accuracy", ">=", needs=("robustness",))
def _min_robust_accuracy(checks, pr, old):
    rep = pr.get("robustness")
    return [(f"min_robust_accuracy[{c.attack}@{c.epsilon:g}]",
             None if rep is None else check_min_robust_accuracy(rep, c.attack, c.norm, c.epsilon, c.threshold)["measured"],
             c.threshold, "") for c in checks]


@declare("max_attack_success_rate", "<=", needs=("robustness",))
def _max_attack_success_rate(threshold, pr, old):
    rates = [r["attack_success_rate"] for a in (pr.get("robustness") or {}).get("attacks", []) for r in a["results"]]
    return [("max_attack_success_rate", max(rates) if rates else None, threshold, "" if rates else "no evasion attack ran")]


@declare("min_median_l2", ">=", needs=("robustness",))
def _min_median_l2(threshold, pr, old):
    meds = [a["minimal_perturbation"]["median_l2"] for a in (pr.get("robustness") or {}).get("attacks", [])
            if "minimal_perturbation" in a]
    meds = [float("inf") if m is None else m for m in meds]  # no minimal example found: infinitely far
    return [("min_median_l2", min(meds) if meds else None, threshold, "" if meds else "no minimal-norm attack ran")]


@declare("no_gradient_masking", "<=", needs=("masking",), only_where_run=True)
def _no_gradient_masking(enabled, pr, old):
    fired = (pr.get("masking") or {}).get("fired")
    return [("no_gradient_masking", None if fired is None else float(len(fired)), 0.0, ", ".join(fired or []))]


# --------------------------------------------------------------------------------------------
# the checks of `regression:` (against the baseline report's section of the same profile)
# --------------------------------------------------------------------------------------------


def _growth_check(name: str, key: str, relative: bool, needs: tuple[str, ...]) -> None:
    def measure(threshold, pr, old):
        a, b = (old.get("summary") or {}).get(key), (pr.get("summary") or {}).get(key)
        growth = None if a is None or b is None else ((b - a) / a if relative and a else b - a)
        return [(f"regression.{name}", growth, threshold, f"baseline {a:.4g}, now {b:.4g}" if growth is not None else "")]

    declare(name, "<=", needs, section="regression")(measure)


_growth_check("max_latency_growth", "worst_latency_s", True, _ENERGY)
_growth_check("max_energy_growth", "worst_energy_j", True, _ENERGY)
_growth_check("max_density_growth", "worst_density", False, _ENERGY)


@declare("max_accuracy_drop", "<=", needs=(), section="regression")
def _max_accuracy_drop(threshold, pr, old):
    a, b = (old.get("summary") or {}).get("clean_accuracy"), (pr.get("summary") or {}).get("clean_accuracy")
    return [("regression.max_accuracy_drop", None if a is None or b is None else a - b, threshold, "")]


def robust_accuracies(p: dict) -> dict:
    """{(attack, norm, epsilon): robust accuracy} of a profile's report section."""
    out = {}
    for a in (p.get("robustness") or {}).get("attacks", []):
        for r in a.get("results", []):
            out[(a.get("attack"), a.get("norm"), r.get("epsilon"))] = r.get("robust_accuracy")
    return out


@declare("max_robust_accuracy_drop", "<=", needs=("robustness",), section="regression")
def _max_robust_accuracy_drop(threshold, pr, old):
    ro, rn = robust_accuracies(old), robust_accuracies(pr)
    common = set(ro) & set(rn)
    drop = max((ro[k] - rn[k] for k in common), default=None)
    return [("regression.max_robust_accuracy_drop", drop, threshold, "" if common else "no common attack results")]
