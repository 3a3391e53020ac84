"""Report renderings for CI: JUnit XML (one testsuite per profile, one testcase per check) and a
Markdown summary for a pull-request comment."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from .core import _fmt_num, _si, check_status, sorted_checks
from .sections import (Para, Table, approx_blocks, energy_blocks, generic_blocks, masking_blocks, md_blocks, pct,
                       robustness_blocks, warning_blocks)

#: stage of a profile's audit that measures each check (a testcase's time is its share of it)
_CHECK_STAGE = {"min_clean_accuracy": "clean", "mean_latency_ms": "clean", "mean_energy_uj": "clean",
                "worst_case_latency_ms": "energy_attacks", "worst_case_energy_uj": "energy_attacks",
                "worst_case_edp": "energy_attacks", "max_density": "energy_attacks",
                "max_latency_increase": "energy_attacks", "max_energy_increase": "energy_attacks",
                "max_attack_success_rate": "robustness", "min_median_l2": "robustness"}


def _stage(name: str) -> str:
    if name.startswith("min_robust_accuracy"):
        return "robustness"
    if name.startswith("regression."):
        return "regression"
    return _CHECK_STAGE.get(name, "other")


def _check_message(ch: dict) -> str:
    m = _fmt_num(ch["measured"])
    msg = f"measured {m}, threshold {ch['op']} {_fmt_num(ch['threshold'])}"
    if ch.get("detail"):
        msg += f" ({ch['detail']})"
    return msg


def _failure_type(ch: dict) -> str:
    if ch.get("measured") is None:
        return "NotMeasured"
    return "AboveMaximum" if ch.get("op") == "<=" else "BelowMinimum"


def _case_times(p: dict | None, cks: list[dict]) -> list[float]:
    """Each check's share of the measured time of the stage that produced its value (a stage that
    did not run, or a report without stage times: 0)."""
    stages = ((p or {}).get("timing") or {}).get("stages") or {}
    count: dict[str, int] = {}
    for c in cks:
        count[_stage(c["name"])] = count.get(_stage(c["name"]), 0) + 1
    out = []
    for c in cks:
        t = stages.get(_stage(c["name"]))
        out.append(float(t) / count[_stage(c["name"])] if isinstance(t, (int, float)) else 0.0)
    return out


def render_junit(d: dict) -> str:
    import socket

    checks = [c for c in d["checks"] if isinstance(c, dict)]
    started = (d.get("timing") or {}).get("started") or ""
    profiles = {p["name"]: p for p in d["profiles"]}
    extra = sorted({c["profile"] for c in checks} - set(profiles))
    suites = []
    for name in list(profiles) + extra:
        cks = [c for c in checks if c["profile"] == name]
        p = profiles.get(name)
        secs = (p or {}).get("timing", {}).get("seconds") if isinstance((p or {}).get("timing"), dict) else None
        suites.append((name, cks, p, float(secs) if isinstance(secs, (int, float)) else 0.0))
    total = sum(s[3] for s in suites)
    st = [check_status(c) for c in checks]
    root = ET.Element("testsuites", name="auditor", tests=str(len(checks)), failures=str(st.count("FAIL")),
                      errors=str(st.count("NOT DECIDED")), skipped="0", time=f"{total:.3f}")
    if started:
        root.set("timestamp", started[:19])
    host = socket.gethostname()
    for name, cks, p, secs in suites:
        sst = [check_status(c) for c in cks]
        suite = ET.SubElement(root, "testsuite", name=f"auditor.{name}", tests=str(len(cks)),
                              failures=str(sst.count("FAIL")), errors=str(sst.count("NOT DECIDED")), skipped="0",
                              time=f"{secs:.3f}", hostname=host)
        if started:
            suite.set("timestamp", started[:19])
        props = ET.SubElement(suite, "properties")
        env = d.get("environment") or {}
        for k, v in (("model", d["model"]["path"]), ("model_sha256", d["model"]["sha256"]),
                     ("scenario", d["scenario"]["name"]), ("seed", d["seed"]), ("verdict", d["verdict"]),
                     ("tool_version", d["tool"]["version"]), ("python", env.get("python")),
                     ("audit_seconds", (d.get("timing") or {}).get("seconds"))):
            if v is not None:
                ET.SubElement(props, "property", name=k, value=str(v))
        for c, t in zip(cks, _case_times(p, cks)):
            tc = ET.SubElement(suite, "testcase", classname=f"auditor.{name}", name=c["name"], time=f"{t:.3f}")
            s = check_status(c)
            if s == "PASS":
                ET.SubElement(tc, "system-out").text = _check_message(c)
            elif s == "NOT DECIDED":
                e = ET.SubElement(tc, "error", message=f"not decided: {c.get('detail') or 'the audit was cut short'}",
                                  type="NotDecided")
                e.text = _check_message(c)
            else:
                f = ET.SubElement(tc, "failure", message=_check_message(c), type=_failure_type(c))
                f.text = _check_message(c)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


_ICON = {"PASS": "✅", "FAIL": "❌", "NOT DECIDED": "⏸️", "INCOMPLETE": "⏸️"}


def _delta(new, old, rel: bool = True) -> str:
    if not isinstance(new, (int, float)) or not isinstance(old, (int, float)):
        return ""
    if rel:
        return f" ({100 * (new - old) / abs(old):+.1f}%)" if old else ""
    return f" ({100 * (new - old):+.1f} pt)"


def render_markdown(d: dict) -> str:
    verdict = d["verdict"]
    checks = sorted_checks(d["checks"])
    n_fail = sum(check_status(c) == "FAIL" for c in checks)
    L = [f"### {_ICON.get(verdict, '❔')} auditor verdict: **{verdict}**", "",
         f"`{d['model']['path']}` (sha256 `{d['model']['sha256'][:12]}`), scenario **{d['scenario']['name']}**, "
         f"seed {d['seed']}, {d['data']['count']} inputs — auditor {d['tool']['version']}", ""]
    L += md_blocks(warning_blocks(d))
    # checks first, failing ones on top
    L += [f"#### Checks ({n_fail} of {len(checks)} failed)" if checks else "#### Checks", "",
          "| | check | profile | measured | threshold |", "|---|---|---|---:|---:|"]
    for c in checks:
        st = check_status(c)
        name = f"`{c['name']}`" + (f" ({c['detail']})" if c.get("detail") and st != "PASS" else "")
        L.append(f"| {_ICON[st]} | {name} | {c['profile']} | {_fmt_num(c['measured'])} | "
                 f"{c['op']} {_fmt_num(c['threshold'])} |")
    if not checks:
        L.append("| | (no checks declared) | | | |")
    L.append("")
    base = (d.get("baseline") or {}).get("profiles") or {}
    rows = []
    for p in d["profiles"]:
        if "clean" not in p:  # the time budget ended before its clean evaluation did
            rows.append([p["name"], "cut short", "", "", "", ""])
            continue
        c, s = p["clean"], p["summary"]
        b = base.get(p["name"]) or {}
        acc = "n/a" if c["accuracy"] is None else f"{100 * c['accuracy']:.1f}%"
        rows.append([p["name"], acc + _delta(c["accuracy"], b.get("clean_accuracy"), rel=False),
                     _si(c["latency_s"]["mean"], "s") + _delta(s.get("clean_mean_latency_s"), b.get("clean_mean_latency_s")),
                     _si(s["worst_latency_s"], "s") + _delta(s["worst_latency_s"], b.get("worst_latency_s")),
                     _si(s["worst_energy_j"], "J") + _delta(s["worst_energy_j"], b.get("worst_energy_j")),
                     f"{c['density']['mean']:.3f} / {s['worst_density']:.3f}"])
    L += md_blocks([Table("Profiles" + (" (Δ against the baseline)" if base else ""),
                          ["profile", "clean acc.", "mean latency", "worst latency", "worst energy",
                           "density (mean / worst)"], rows, {1, 2, 3, 4, 5})])
    masks = [(p["name"], p["masking"]) for p in d["profiles"] if p.get("masking")]
    if masks:
        from ..pipeline.masking import comparison_rows

        L += md_blocks([Table("Gradient masking across the profiles",
                              ["profile", "clean acc.", "transfer from exact", "white-box", "Square", "diagnosis",
                               "evidence of the fired checks"],
                              [[name, pct(r["clean_accuracy"], 0), pct(r["transfer_from_exact"], 0), pct(r["whitebox"], 0),
                                pct(r["square"], 0), str(m.get("verdict")),
                                "; ".join(c["evidence"] for c in m.get("checks", []) if c.get("fired")) or "—"]
                               for (name, m), r in zip(masks, comparison_rows(d))], {1, 2, 3, 4})])
    for p in d["profiles"]:
        blocks: list = []
        if p.get("attacks"):
            blocks += energy_blocks(p["attacks"])
        if p.get("robustness"):
            blocks += robustness_blocks(p["robustness"])
        if p.get("masking"):
            blocks += masking_blocks(p["masking"])
        for note in p.get("notes") or []:
            blocks.append(Para(f"note: {note}", "note"))
        known = {"name", "path", "cost_model", "description", "profile", "clean", "attacks", "summary", "checks",
                 "robustness", "approx", "zero_thresholds", "cut_short", "timing", "masking", "notes"}
        for k, v in p.items():
            if k not in known and v is not None:
                blocks += generic_blocks(k, v)
        if p.get("cut_short"):
            blocks.append(Para(f"cut short by --max-seconds: {', '.join(map(str, p['cut_short']))}", "note"))
        if blocks or p.get("approx"):
            L += [f"#### {p['name']}", ""]
            L += md_blocks(blocks, details_after=8)
        if p.get("approx"):
            ab = approx_blocks(p["approx"])
            L += ["<details><summary>exact vs approximate hardware: "
                  f"{sum(isinstance(b, Table) for b in ab)} tables</summary>", ""]
            L += md_blocks(ab, details_after=10**6) + ["</details>", ""]
    return "\n".join(L).rstrip("\n") + "\n"


__all__ = ["render_junit", "render_markdown"]
