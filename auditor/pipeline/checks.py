"""Checks: a measured value against a threshold, per hardware profile.  The verdict is their AND."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import math


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


#: scenario check key -> (report key it reads, direction, unit factor from SI)
HARDWARE_CHECKS = {
    "worst_case_latency_ms": ("worst_latency_s", "<=", 1e3),
    "mean_latency_ms": ("clean_mean_latency_s", "<=", 1e3),
    "worst_case_energy_uj": ("worst_energy_j", "<=", 1e6),
    "mean_energy_uj": ("clean_mean_energy_j", "<=", 1e6),
    "worst_case_edp": ("worst_edp", "<=", 1.0),
    "max_density": ("worst_density", "<=", 1.0),
    "max_latency_increase": ("latency_increase", "<=", 1.0),
    "max_energy_increase": ("energy_increase", "<=", 1.0),
}


def hardware_checks(checks, profile: str, summary: dict) -> list[Check]:
    """Evaluate the hardware checks of a scenario against a profile's summary numbers."""
    out = []
    for key, (src, op, factor) in HARDWARE_CHECKS.items():
        thr = getattr(checks, key)
        if thr is None:
            continue
        v = summary.get(src)
        detail = "" if v is not None else "no energy-latency attack ran" if "increase" in key else ""
        out.append(make(key, profile, None if v is None else v * factor, thr, op, detail))
    if checks.min_clean_accuracy is not None:
        acc = summary.get("clean_accuracy")
        out.append(make("min_clean_accuracy", profile, acc, checks.min_clean_accuracy, ">=",
                        "" if acc is not None else "the data has no labels"))
    return out
