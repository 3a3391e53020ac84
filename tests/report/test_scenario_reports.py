"""Every bundled scenario's report, read into its typed records and written back, is
byte-identical (each run as its file's header comment says, on at most 4 inputs per count).
scenarios/approx.yaml (two minutes even so) is covered by tests/data/every_section_report.json,
a 16-input run of it that tests/report/test_records.py round-trips."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

import auditor
from auditor.report.core import Report

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = sorted(p for p in (ROOT / "scenarios").glob("*.yaml") if p.stem != "approx")


def _run_line(path: Path) -> tuple[str, list[str]]:
    """The model and profiles of the ``auditor audit MODEL --hw ... --scenario`` line in the header."""
    head = " ".join(ln.lstrip("#").strip().rstrip("\\") for ln in path.read_text().splitlines() if ln.startswith("#"))
    m = re.search(r"auditor audit (\S+)((?: --hw \S+)+)", head)
    assert m, f"{path.name}: no 'auditor audit MODEL --hw PROFILE' line in its header comment"
    return m.group(1), re.findall(r"--hw (\S+)", m.group(2))


def _small(v):
    if isinstance(v, dict):
        return {k: min(x, 4) if k == "count" and isinstance(x, int) else _small(x) for k, x in v.items()}
    return [_small(x) for x in v] if isinstance(v, list) else v


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_bundled_scenario_report_round_trips(path, tmp_path, monkeypatch):
    model, profiles = _run_line(path)
    sc = _small(yaml.safe_load(path.read_text()))
    if isinstance(sc.get("approx"), dict) and sc["approx"].get("surrogate"):  # relative to the scenario's folder
        sc["approx"]["surrogate"] = str((path.parent / sc["approx"]["surrogate"]).resolve())
    small = tmp_path / path.name
    small.write_text(yaml.safe_dump(sc))
    monkeypatch.chdir(ROOT)
    text = auditor.audit(model, profiles if len(profiles) > 1 else profiles[0], str(small)).to_json()
    rep = Report.from_dict(json.loads(text), path.name)
    assert rep.render("json") == text
    assert json.dumps(rep.records.to_dict(), indent=2) == json.dumps(json.loads(text), indent=2)
