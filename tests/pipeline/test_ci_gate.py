"""CI-gate features: JUnit/Markdown formats, baseline regression checks, diff, determinism, API."""

import json
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

import auditor
from auditor.report.core import stable

CLI = [sys.executable, "-m", "auditor.cli"]


@pytest.fixture()
def setup(tmp_path):
    prof = tmp_path / "dense.yaml"
    prof.write_text("name: dense\ncost_model: dense\nparams: {}\n")
    sc = tmp_path / "sc.yaml"
    sc.write_text("name: gate\ndata:\n  count: 24\nchecks:\n  min_clean_accuracy: 0.9\n  max_density: 0.5\n"
                  "regression:\n  max_latency_growth: 0.05\n  max_accuracy_drop: 0.0\n")
    return tmp_path, prof, sc


def strip(d):
    return stable(d)


def test_junit_is_valid_and_carries_failures(setup):
    tmp, prof, sc = setup
    r = subprocess.run(CLI + ["audit", "models/plain_cnn.onnx", "--hw", str(prof), "--scenario", str(sc),
                              "--format", "junit"], capture_output=True, text=True)
    assert r.returncode == 1  # max_density 0.5 fails
    root = ET.fromstring(r.stdout)
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == ["auditor.dense"]
    cases = {c.get("name"): c for c in suites[0].findall("testcase")}
    assert set(cases) == {"min_clean_accuracy", "max_density"}
    fail = cases["max_density"].find("failure")
    assert fail is not None and "measured" in fail.get("message") and "<= 0.5" in fail.get("message")
    assert cases["min_clean_accuracy"].find("failure") is None
    assert suites[0].get("failures") == "1"


def test_markdown_summary(setup):
    tmp, prof, sc = setup
    rep = auditor.audit("models/plain_cnn.onnx", str(prof), str(sc))
    md = rep.render("markdown")
    assert md.startswith("### ❌ auditor verdict: **FAIL**")
    assert "| ❌ | `max_density` | dense |" in md and "| ✅ | `min_clean_accuracy` | dense |" in md


def test_determinism_and_baseline(setup):
    tmp, prof, sc = setup
    a = auditor.audit("models/plain_cnn.onnx", str(prof), str(sc), seed=3, threads=1)
    b = auditor.audit("models/plain_cnn.onnx", str(prof), str(sc), seed=3, threads=2)
    assert json.dumps(strip(a.data), sort_keys=True) == json.dumps(strip(b.data), sort_keys=True)
    base = tmp / "base.json"
    base.write_text(a.to_json())
    # same model against its own baseline: no regression
    c = auditor.audit("models/plain_cnn.onnx", str(prof), str(sc), baseline=str(base))
    reg = {ch["name"]: ch for ch in c.checks if ch["name"].startswith("regression.")}
    assert reg["regression.max_latency_growth"]["passed"] and reg["regression.max_latency_growth"]["measured"] == 0
    assert reg["regression.max_accuracy_drop"]["passed"]
    # a baseline whose latency was much lower: the new report regresses
    old = json.loads(base.read_text())
    old["profiles"][0]["summary"]["worst_latency_s"] /= 2
    old["profiles"][0]["summary"]["clean_accuracy"] = 1.0
    slow = tmp / "slow.json"
    slow.write_text(json.dumps(old))
    d = auditor.audit("models/plain_cnn.onnx", str(prof), str(sc), baseline=str(slow))
    reg = {ch["name"]: ch for ch in d.checks if ch["name"].startswith("regression.")}
    assert not reg["regression.max_latency_growth"]["passed"]
    assert abs(reg["regression.max_latency_growth"]["measured"] - 1.0) < 1e-9  # latency doubled
    assert not reg["regression.max_accuracy_drop"]["passed"]
    new = tmp / "new.json"
    new.write_text(d.to_json())
    r = subprocess.run(CLI + ["diff", str(slow), str(new)], capture_output=True, text=True)
    assert "worst_latency_s" in r.stdout and "+100.0%" in r.stdout
    assert "check regression.max_latency_growth" not in r.stdout or "new check" in r.stdout


def test_bad_baseline_file(setup, tmp_path):
    tmp, prof, sc = setup
    bad = tmp / "bad.json"
    bad.write_text("{not json")
    r = subprocess.run(CLI + ["audit", "models/plain_cnn.onnx", "--hw", str(prof), "--scenario", str(sc),
                              "--baseline", str(bad)], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "not a JSON report" in r.stderr


def test_schema_and_init(tmp_path):
    r = subprocess.run(CLI + ["schema", "scenario"], capture_output=True, text=True)
    s = json.loads(r.stdout)
    assert s["properties"]["checks"]["properties"]["worst_case_latency_ms"]["description"].startswith("maximum latency")
    assert s["additionalProperties"] is False
    out = tmp_path / "starter.yaml"
    r = subprocess.run(CLI + ["init", str(out)], capture_output=True, text=True)
    assert r.returncode == 0
    r = subprocess.run(CLI + ["validate", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(CLI + ["init", str(out)], capture_output=True, text=True)
    assert r.returncode == 2 and "exists" in r.stderr


def test_jobs_give_identical_reports(tmp_path):
    sc = tmp_path / "j.yaml"
    sc.write_text("name: j\ndata:\n  count: 12\nenergy_attacks:\n  - {search: whitebox, count: 3, params: {iterations: 5}}\n"
                  "  - {search: uniform, count: 3}\n")
    profiles = ["hwprofiles/cnvlutin.yaml", "hwprofiles/dense.yaml"]
    a = auditor.audit("models/plain_cnn.onnx", profiles, str(sc), jobs=1)
    b = auditor.audit("models/plain_cnn.onnx", profiles, str(sc), jobs=2)
    assert json.dumps(strip(a.data), sort_keys=True) == json.dumps(strip(b.data), sort_keys=True)


def test_max_seconds_cuts_searches_short_and_never_passes_silently(tmp_path):
    sc = tmp_path / "b.yaml"
    # a budget the clean evaluation fits in (about a second) but not a search of 10^6 iterations
    sc.write_text("name: b\ndata:\n  count: 8\nenergy_attacks:\n  - {search: whitebox, count: 4, params: {iterations: 1000000}}\n"
                  "checks:\n  max_latency_increase: 100.0\n  min_clean_accuracy: 0.5\n")
    rep = auditor.audit("models/plain_cnn.onnx", "hwprofiles/cnvlutin.yaml", str(sc), max_seconds=4)
    assert rep.data["budget"]["cut_short"] == ["cnvlutin:whitebox"]
    assert rep.data["profiles"][0]["attacks"] == [{"search": "whitebox", "cut_short": True}]
    checks = {c["name"]: c for c in rep.checks}
    assert not checks["max_latency_increase"]["passed"] and "cut short" in checks["max_latency_increase"]["detail"]
    assert not checks["max_latency_increase"]["decided"] and checks["min_clean_accuracy"]["decided"]
    assert checks["min_clean_accuracy"]["passed"]  # clean checks are not affected
    assert checks["max_latency_increase"]["decided"] is False and checks["min_clean_accuracy"]["decided"]
    assert rep.verdict == "INCOMPLETE" and rep.exit_code == 4  # never PASS
