"""Comparison with a previous report: regression checks (``--baseline``) and ``auditor diff``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from . import schema
from .checks import Check, make
from .errors import AuditorError


@dataclass
class Regression:
    """How much worse than the baseline report a new report may be (checked with --baseline)."""

    max_latency_growth: Optional[float] = schema.field(None, doc="worst-case latency may grow at most this fraction (0.1 = 10%)",
                                                       minimum=0)
    max_energy_growth: Optional[float] = schema.field(None, doc="worst-case energy may grow at most this fraction", minimum=0)
    max_density_growth: Optional[float] = schema.field(None, doc="worst-case density may grow at most this much (absolute)",
                                                       minimum=0, maximum=1)
    max_accuracy_drop: Optional[float] = schema.field(None, doc="clean accuracy may drop at most this much (0.01 = 1 point)",
                                                      minimum=0, maximum=1)
    max_robust_accuracy_drop: Optional[float] = schema.field(None, doc="robust accuracy (any attack and epsilon) may drop at most this much",
                                                             minimum=0, maximum=1)


def _profile_map(d: dict) -> dict:
    return {p["name"]: p for p in d.get("profiles", [])}


def _robust(p: dict) -> dict:
    out = {}
    for a in (p.get("robustness") or {}).get("attacks", []):
        for r in a.get("results", []):
            out[(a.get("attack"), a.get("norm"), r.get("epsilon"))] = r.get("robust_accuracy")
    return out


def regression_checks(reg: Regression, old: dict, new: dict) -> list[Check]:
    if old.get("schema_version") != new.get("schema_version"):
        raise AuditorError(f"baseline report has schema version {old.get('schema_version')}, expected {new.get('schema_version')}")
    out: list[Check] = []
    olds = _profile_map(old)
    for name, p in _profile_map(new).items():
        o = olds.get(name)
        if o is None:
            continue
        s, os_ = p["summary"], o["summary"]
        for key, field_, rel in (("max_latency_growth", "worst_latency_s", True), ("max_energy_growth", "worst_energy_j", True),
                                 ("max_density_growth", "worst_density", False)):
            thr = getattr(reg, key)
            if thr is None:
                continue
            a, b = os_.get(field_), s.get(field_)
            growth = None if a is None or b is None else ((b - a) / a if rel and a else b - a)
            out.append(make(f"regression.{key}", name, growth, thr, "<=", f"baseline {a:.4g}, now {b:.4g}" if growth is not None else ""))
        if reg.max_accuracy_drop is not None:
            a, b = os_.get("clean_accuracy"), s.get("clean_accuracy")
            out.append(make("regression.max_accuracy_drop", name, None if a is None or b is None else a - b,
                            reg.max_accuracy_drop, "<="))
        if reg.max_robust_accuracy_drop is not None:
            ro, rn = _robust(o), _robust(p)
            common = set(ro) & set(rn)
            drop = max((ro[k] - rn[k] for k in common), default=None)
            out.append(make("regression.max_robust_accuracy_drop", name, drop, reg.max_robust_accuracy_drop, "<=",
                            "" if common else "no common attack results"))
    return out


def diff(old: dict, new: dict) -> list[str]:
    """Human-readable lines describing what changed between two reports."""
    L = []
    if old.get("verdict") != new.get("verdict"):
        L.append(f"verdict: {old.get('verdict')} -> {new.get('verdict')}")
    if old.get("model", {}).get("sha256") != new.get("model", {}).get("sha256"):
        L.append(f"model: {old['model']['sha256'][:12]} -> {new['model']['sha256'][:12]}")
    olds, news = _profile_map(old), _profile_map(new)
    for name in sorted(set(olds) | set(news)):
        if name not in news:
            L.append(f"[{name}] profile removed")
            continue
        if name not in olds:
            L.append(f"[{name}] profile added")
            continue
        so, sn = olds[name]["summary"], news[name]["summary"]
        for k in sorted(set(so) | set(sn)):
            a, b = so.get(k), sn.get(k)
            if a == b:
                continue
            if isinstance(a, (int, float)) and isinstance(b, (int, float)) and a:
                L.append(f"[{name}] {k}: {a:.4g} -> {b:.4g} ({100 * (b - a) / abs(a):+.1f}%)")
            else:
                L.append(f"[{name}] {k}: {a} -> {b}")
        ro, rn = _robust(olds[name]), _robust(news[name])
        for k in sorted(set(ro) | set(rn), key=str):
            if ro.get(k) != rn.get(k):
                L.append(f"[{name}] robust accuracy {k[0]} {k[1]} eps={k[2]}: {ro.get(k)} -> {rn.get(k)}")
    oc = {(c["profile"], c["name"]): c["passed"] for c in old.get("checks", [])}
    for c in new.get("checks", []):
        k = (c["profile"], c["name"])
        if k in oc and oc[k] != c["passed"]:
            L.append(f"[{c['profile']}] check {c['name']}: {'PASS' if oc[k] else 'FAIL'} -> {'PASS' if c['passed'] else 'FAIL'}")
        elif k not in oc:
            L.append(f"[{c['profile']}] new check {c['name']}: {'PASS' if c['passed'] else 'FAIL'}")
    return L
