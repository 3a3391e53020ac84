"""Comparison with a previous report: regression checks (``--baseline``) and ``auditor diff``."""

from __future__ import annotations

import json
from types import SimpleNamespace

from .checks import Check, evaluate, robust_accuracies
from ..errors import AuditorError
from ..report.numbers import fmt_num, si
from ..report.records import check_status
from .sanity import _scenario_core
from ..scenario import Regression  # the `regression:` section, declared with the scenario's other sections


def _profile_map(d: dict) -> dict:
    return {p["name"]: p for p in d.get("profiles", [])}


def regression_checks(reg: Regression, old: dict, new: dict) -> list[Check]:
    """The `regression:` checks (:data:`auditor.pipeline.checks.CHECKS`) of every profile of report
    ``new`` that the baseline report ``old`` has too."""
    if old.get("schema_version") != new.get("schema_version"):
        raise AuditorError(f"baseline report has schema version {old.get('schema_version')}, expected {new.get('schema_version')}")
    olds = _profile_map(old)
    holder = SimpleNamespace(regression=reg)
    return [ch for p in new.get("profiles", []) if p["name"] in olds
            for ch in evaluate(holder, "regression", p["name"], p, olds[p["name"]])]


def _unit(key: str) -> str:
    if key.endswith("_s"):
        return "s"
    if key.endswith("_j"):
        return "J"
    if "edp" in key:
        return "Js"
    return ""


def _value(key: str, v) -> str:
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return str(v)
    if "accuracy" in key:
        return f"{100 * v:.2f}%"
    u = _unit(key)
    return si(v, u) if u else fmt_num(v)


def _change(key: str, a, b) -> str:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        if "accuracy" in key:
            rel = f"{100 * (b - a):+.2f} pt"
        elif "density" in key:
            rel = f"{b - a:+.4f}" + (f", {100 * (b - a) / abs(a):+.1f}%" if a else "")
        else:
            rel = f"{100 * (b - a) / abs(a):+.1f}%" if a else "new"
        return f"{_value(key, a)} -> {_value(key, b)} ({rel})"
    return f"{_value(key, a)} -> {_value(key, b)}"


def _profile_fingerprint(p: dict):
    return json.dumps(p.get("profile"), sort_keys=True, default=str)


def diff_entries(old: dict, new: dict) -> list[tuple[str, str, str]]:
    """(scope, what, change) for everything that changed between two reports: verdict, model,
    scenario and profile contents, summary numbers (with units), robust accuracies, checks."""
    E = []
    if old.get("verdict") != new.get("verdict"):
        E.append(("", "verdict", f"{old.get('verdict')} -> {new.get('verdict')}"))
    om, nm = old.get("model") or {}, new.get("model") or {}
    if om.get("path") != nm.get("path"):
        E.append(("", "model path", f"{om.get('path')} -> {nm.get('path')}"))
    if om.get("sha256") != nm.get("sha256"):
        E.append(("", "model sha256", f"{str(om.get('sha256'))[:12]} -> {str(nm.get('sha256'))[:12]}"))
    osc, nsc = old.get("scenario") or {}, new.get("scenario") or {}
    if osc.get("name") != nsc.get("name"):
        E.append(("", "scenario", f"{osc.get('name')} -> {nsc.get('name')} (a different audit: numbers may not compare)"))
    else:
        co, cn = _scenario_core(osc), _scenario_core(nsc)
        changed = sorted(k for k in set(co) | set(cn) if co.get(k) != cn.get(k))
        for part in ("checks", "regression"):
            if osc.get(part) != nsc.get(part):
                changed.append(part)
        if changed:
            E.append(("", "scenario changed", ", ".join(changed)))
    if old.get("seed") != new.get("seed"):
        E.append(("", "seed", f"{old.get('seed')} -> {new.get('seed')}"))
    olds, news = _profile_map(old), _profile_map(new)
    for name in sorted(set(olds) | set(news), key=str):
        if name not in news:
            E.append((name, "profile", "removed"))
            continue
        if name not in olds:
            E.append((name, "profile", "added"))
            continue
        if _profile_fingerprint(olds[name]) != _profile_fingerprint(news[name]):
            op, np_ = olds[name].get("profile") or {}, news[name].get("profile") or {}
            keys = sorted(k for k in set(op.get("params") or {}) | set(np_.get("params") or {})
                          if (op.get("params") or {}).get(k) != (np_.get("params") or {}).get(k))
            other = sorted(k for k in set(op) | set(np_) if k != "params" and op.get(k) != np_.get(k))
            E.append((name, "hardware profile changed", ", ".join([f"params.{k}" for k in keys] + other) or "contents"))
        so, sn = olds[name].get("summary") or {}, news[name].get("summary") or {}
        for k in sorted(set(so) | set(sn)):
            a, b = so.get(k), sn.get(k)
            if a != b:
                E.append((name, k, _change(k, a, b)))
        ro, rn = robust_accuracies(olds[name]), robust_accuracies(news[name])
        for k in sorted(set(ro) | set(rn), key=str):
            if ro.get(k) != rn.get(k):
                E.append((name, f"robust accuracy {k[0]} {k[1]} ε={k[2]}", _change("accuracy", ro.get(k), rn.get(k))))
    oc = {(c["profile"], c["name"]): check_status(c) for c in old.get("checks", [])}
    for c in new.get("checks", []):
        k = (c["profile"], c["name"])
        if k in oc and oc[k] != check_status(c):
            E.append((c["profile"], f"check {c['name']}", f"{oc[k]} -> {check_status(c)}"))
        elif k not in oc:
            E.append((c["profile"], f"new check {c['name']}", check_status(c)))
    return E


def diff(old: dict, new: dict) -> list[str]:
    """Human-readable lines describing what changed between two reports."""
    return [f"[{s}] {w}: {c}" if s else f"{w}: {c}" for s, w, c in diff_entries(old, new)]


def diff_text(old: dict, new: dict) -> str:
    lines = diff(old, new)
    return ("\n".join(lines) if lines else "no differences (apart from timing)") + "\n"


def diff_markdown(old: dict, new: dict) -> str:
    E = diff_entries(old, new)
    L = [f"### auditor diff: {old.get('verdict')} → {new.get('verdict')}", ""]
    if not E:
        return "\n".join(L + ["no differences (apart from timing)"]) + "\n"
    L += ["| profile | what | change |", "|---|---|---|"]
    for s, w, c in E:
        L.append(f"| {s or '—'} | {w.replace('|', '/')} | {c.replace('|', '/')} |")
    return "\n".join(L) + "\n"
