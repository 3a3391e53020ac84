"""The JUnit XML rendering for CI: one testsuite per profile, one testcase per check."""

from __future__ import annotations

import socket
import xml.etree.ElementTree as ET

from .numbers import fmt_num
from .records import AuditReport, Check, Profile, ProfileTiming, Timing

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


def _check_message(ch: Check) -> str:
    msg = f"measured {fmt_num(ch.measured)}, threshold {ch.op} {fmt_num(ch.threshold)}"
    if ch.detail:
        msg += f" ({ch.detail})"
    return msg


def _failure_type(ch: Check) -> str:
    if ch.measured is None:
        return "NotMeasured"
    return "AboveMaximum" if ch.op == "<=" else "BelowMinimum"


def _case_times(p: Profile | None, cks: list[Check]) -> list[float]:
    """Each check's share of the measured time of the stage that produced its value (a stage that
    did not run, or a report without stage times: 0)."""
    stages = ProfileTiming.of(p.timing if p is not None else None).stages or {}
    count: dict[str, int] = {}
    for c in cks:
        count[_stage(c.name)] = count.get(_stage(c.name), 0) + 1
    out = []
    for c in cks:
        t = stages.get(_stage(c.name))
        out.append(float(t) / count[_stage(c.name)] if isinstance(t, (int, float)) else 0.0)
    return out


def render_junit(d: AuditReport, **_options) -> str:
    """JUnit XML: one testsuite per profile, one testcase per check (time: its share of its stage);
    ``d``: the report's records (or its dict)."""
    if isinstance(d, dict):
        d = AuditReport.parse(d)
    checks = Check.list_of(d.checks)
    timing = Timing.of(d.timing)
    started = timing.started or ""
    profiles = {p.name: p for p in d.profiles}
    extra = sorted({c.profile for c in checks} - set(profiles))
    suites = []
    for name in list(profiles) + extra:
        cks = [c for c in checks if c.profile == name]
        p = profiles.get(name)
        secs = ProfileTiming.of(p.timing if p is not None else None).seconds
        suites.append((name, cks, p, float(secs) if isinstance(secs, (int, float)) else 0.0))
    total = sum(s[3] for s in suites)
    st = [c.status for c in checks]
    root = ET.Element("testsuites", name="auditor", tests=str(len(checks)), failures=str(st.count("FAIL")),
                      errors=str(st.count("NOT DECIDED")), skipped="0", time=f"{total:.3f}")
    if started:
        root.set("timestamp", started[:19])
    host = socket.gethostname()
    env = d.environment or {}
    for name, cks, p, secs in suites:
        sst = [c.status for c in cks]
        suite = ET.SubElement(root, "testsuite", name=f"auditor.{name}", tests=str(len(cks)),
                              failures=str(sst.count("FAIL")), errors=str(sst.count("NOT DECIDED")), skipped="0",
                              time=f"{secs:.3f}", hostname=host)
        if started:
            suite.set("timestamp", started[:19])
        props = ET.SubElement(suite, "properties")
        for k, v in (("model", d.model.path), ("model_sha256", d.model.sha256), ("scenario", d.scenario.name),
                     ("seed", d.seed), ("verdict", d.verdict), ("tool_version", d.tool.version),
                     ("python", env.get("python")), ("audit_seconds", timing.seconds)):
            if v is not None:
                ET.SubElement(props, "property", name=k, value=str(v))
        for c, t in zip(cks, _case_times(p, cks)):
            tc = ET.SubElement(suite, "testcase", classname=f"auditor.{name}", name=c.name, time=f"{t:.3f}")
            s = c.status
            if s == "PASS":
                ET.SubElement(tc, "system-out").text = _check_message(c)
            elif s == "NOT DECIDED":
                e = ET.SubElement(tc, "error", message=f"not decided: {c.detail or 'the audit was cut short'}",
                                  type="NotDecided")
                e.text = _check_message(c)
            else:
                f = ET.SubElement(tc, "failure", message=_check_message(c), type=_failure_type(c))
                f.text = _check_message(c)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
