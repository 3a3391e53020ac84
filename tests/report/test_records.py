"""The report's typed records: a report read into records and written back is byte-identical,
the check they derive is the one the renderers were written against, and docs/report-format.md
is generated from them (the committed copy must be current)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from auditor.errors import AuditorError
from auditor.report.core import Report
from auditor.report.records import (REPORT_SPEC, AuditReport, Check, EnergySearch, Profile, Record, _Maybe, _Opt,
                                    check_status)
from auditor.report.reference import _sections, report_format_markdown

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"

# the check as it was written by hand before the records declared it (schema_version 1)
_NUM = "number"
_STATS = {"mean": _NUM, "worst": _NUM, "p95": _NUM}
_CHECK = {"name": str, "profile": str, "measured": _Opt(_NUM), "threshold": _Opt(_NUM), "op": str, "passed": bool,
          _Maybe("detail"): _Opt(str)}
_LAYER = {"layer": str, "op": str, "input_density": _NUM, "cycles": int, "dense_cycles": int, "energy_j": _NUM}
_ROBUST = {_Maybe("clean_accuracy"): _Opt(_NUM), _Maybe("count"): int,
           _Maybe("attacks"): [{"attack": str, "norm": str,
                                _Maybe("results"): [{"epsilon": _NUM, "robust_accuracy": _NUM,
                                                     "attack_success_rate": _NUM}]}]}
_PROFILE = {
    "name": str, "cost_model": str, _Maybe("profile"): dict, _Maybe("timing"): {_Maybe("stages"): dict},
    "clean": {"accuracy": _Opt(_NUM), "density": {"counted": str, "mean": _NUM, "worst": _NUM},
              "latency_s": _STATS, "energy_j": _STATS, "edp": _STATS, "speedup_over_dense": {"mean": _NUM},
              "worst_input": {"index": int, "layers": [_LAYER]}},
    "summary": {"worst_latency_s": _NUM, "worst_energy_j": _NUM, "worst_density": _NUM,
                _Maybe("clean_accuracy"): _Opt(_NUM)},
    _Maybe("attacks"): [{"search": str}],
    _Maybe("robustness"): _ROBUST,
    _Maybe("checks"): [_CHECK],
}
HAND_WRITTEN_SPEC = {
    "schema_version": int, "verdict": ("PASS", "FAIL", "INCOMPLETE"), "tool": {"version": str}, "seed": int,
    "model": {"path": str, "sha256": str, "opset": int}, "scenario": {"name": str},
    "data": {"description": str, "count": int}, "profiles": [_PROFILE], "checks": [_CHECK],
    _Maybe("timing"): dict, _Maybe("environment"): dict, _Maybe("budget"): dict, _Maybe("baseline"): dict,
}


@pytest.fixture(scope="module")
def every_section():
    return json.loads((DATA / "every_section_report.json").read_text())


def test_the_derived_check_is_the_hand_written_one():
    assert REPORT_SPEC == HAND_WRITTEN_SPEC


def _round_trip(d):
    text = json.dumps(d, indent=2)
    rep = Report.from_dict(json.loads(text), "r")
    assert json.dumps(rep.to_dict(), indent=2) == text
    assert rep.render("json") == Report(json.loads(text)).render("json")


def test_every_section_report_round_trips_byte_identically(every_section):
    _round_trip(every_section)
    raw = (DATA / "every_section_report.json").read_text()
    assert json.dumps(AuditReport.parse(json.loads(raw)).to_dict(), indent=2) == json.dumps(json.loads(raw), indent=2)


def test_undeclared_keys_nulls_and_wrong_types_are_kept_in_place(every_section):
    d = copy.deepcopy(every_section)
    p = d["profiles"][1]
    p["autoattack"] = {"epsilon": 0.3, "attacks": [{"name": "apgd-ce"}]}  # a newer report's section
    p["attacks"][0]["density_clean"] = "n/a"  # a value of another type
    p["attacks"][0]["uniformity"] = None
    p["attacks"].append({"search": "whitebox", "cut_short": True})
    d["profiles"].insert(0, {k: v for k, v in p.items() if k not in ("robustness",)})
    d = dict(reversed(list(d.items())))  # another key order
    _round_trip(d)
    rec = AuditReport.parse(d)
    assert list(rec.to_dict()) == list(d)
    assert rec.profiles[0].to_dict()["autoattack"] == p["autoattack"] and "autoattack" in rec.profiles[0]._extra
    assert rec.profiles[0].attacks[0].density_clean == "n/a" and rec.profiles[0].attacks[-1].cut_short is True


def test_records_are_typed(every_section):
    rec = Report.from_dict(every_section).records
    p = rec.profiles[1]
    assert isinstance(p, Profile) and isinstance(p.attacks[0], EnergySearch) and isinstance(rec.checks[0], Check)
    assert p.clean.latency_s.mean == every_section["profiles"][1]["clean"]["latency_s"]["mean"]
    assert p.clean.worst_input.layers[0].cycles == every_section["profiles"][1]["clean"]["worst_input"]["layers"][0]["cycles"]
    a = p.attacks[0]
    assert a.defences[0].defence == "quantize" and a.uniformity.clean == every_section["profiles"][1]["attacks"][0]["uniformity"]["clean"]
    layer, shift = next(iter(a.preactivation_shift.items()))
    assert shift.std_ratio == every_section["profiles"][1]["attacks"][0]["preactivation_shift"][layer]["std_ratio"]
    r0 = every_section["profiles"][0]["robustness"]["attacks"][0]["results"][0]
    assert rec.profiles[0].robustness.attacks[0].results[0].robust_accuracy == r0["robust_accuracy"]
    assert [c.status for c in rec.checks] == [check_status(c) for c in every_section["checks"]]
    assert not rec.has("budget") and rec.budget is None and rec.has("warnings") and rec.warnings == []


def test_from_dict_refuses_what_is_not_a_report(every_section):
    with pytest.raises(AuditorError, match="not an auditor report: profiles\\[0\\].summary is missing"):
        Report.from_dict({**every_section, "profiles": [{k: v for k, v in every_section["profiles"][0].items()
                                                          if k != "summary"}]}, "x")
    with pytest.raises(AuditorError, match="schema_version 2 is not the version this tool reads"):
        Report.from_dict({**every_section, "schema_version": 2}, "x")


def test_report_format_doc_is_up_to_date():
    committed = (ROOT / "docs" / "report-format.md").read_text()
    assert committed == report_format_markdown(), \
        "regenerate with: python -m auditor.report.reference > docs/report-format.md"


def test_every_field_of_every_section_is_documented():
    text = report_format_markdown()
    sections = _sections(AuditReport)
    assert len(sections) > 30
    for cls in sections:
        assert issubclass(cls, Record) and cls.ABOUT, cls
        for f in cls.declared():
            assert f.metadata["doc"].strip(), f"{cls.__name__}.{f.name}"
            assert f"| `{f.name}` |" in text
    for name in ("zero_thresholds", "uniformity", "defences", "preactivation_shift", "masking", "approx",
                 "warnings", "budget", "baseline"):
        assert f"| `{name}` |" in text, name
