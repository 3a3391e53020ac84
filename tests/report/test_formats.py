"""The contract of the format registry: every registered report format renders every section of
a real report and a minimal one, the same bytes twice, and has an ``-o`` suffix the CLI maps to it;
the report modules import each other without a cycle (function-level imports counted)."""

from __future__ import annotations

import ast
import copy
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from auditor.cli import FORMATS as CLI_FORMATS
from auditor.cli import _plan_outputs
from auditor.report.core import SUFFIX_FORMATS, Report, check_report
from auditor.report.formats import FORMATS, format_of, suffix_formats

DATA = Path(__file__).resolve().parents[1] / "data"
PACKAGE = Path(__file__).resolve().parents[2] / "auditor" / "report"

_STATS = {"mean": 0.002, "worst": 0.003, "p95": 0.003}
MINIMAL_PROFILE = {
    "name": "p", "cost_model": "dense",
    "clean": {"accuracy": None, "density": {"counted": "layer_inputs", "mean": 1.0, "worst": 1.0},
              "latency_s": _STATS, "energy_j": _STATS, "edp": _STATS, "speedup_over_dense": {"mean": 1.0},
              "worst_input": {"index": 0, "layers": [{"layer": "fc", "op": "Gemm", "input_density": 1.0,
                                                      "cycles": 10, "dense_cycles": 10, "energy_j": 1e-9}]}},
    "summary": {"worst_latency_s": 0.003, "worst_energy_j": 0.003, "worst_density": 1.0}}
MINIMAL = {"schema_version": 1, "verdict": "PASS", "tool": {"version": "0"}, "seed": 0,
           "model": {"path": "m.onnx", "sha256": "0" * 64, "opset": 13}, "scenario": {"name": "s"},
           "data": {"description": "d", "count": 1}, "profiles": [MINIMAL_PROFILE], "checks": []}
NO_PROFILES = dict(MINIMAL, profiles=[])


@pytest.fixture(scope="module")
def every_section():
    return json.loads((DATA / "every_section_report.json").read_text())


def test_the_minimal_reports_are_reports():
    assert check_report(MINIMAL) is None and check_report(NO_PROFILES) is None


@pytest.mark.parametrize("name", FORMATS.names())
@pytest.mark.parametrize("which", ["every_section", "minimal", "no_profiles"])
def test_every_format_renders_every_report_deterministically(name, which, every_section):
    d = {"every_section": every_section, "minimal": MINIMAL, "no_profiles": NO_PROFILES}[which]
    before = copy.deepcopy(d)
    rep = Report.checked(copy.deepcopy(d), which)
    one, two = rep.render(name, base_dir=DATA), rep.render(name, base_dir=DATA)
    assert isinstance(one, str) and one.endswith("\n") and one.strip()
    assert one == two, f"{name} is not deterministic"
    assert rep.data == before, f"{name} changed the report it rendered"
    if name == "junit":  # no verdict line: one testcase per check
        assert ET.fromstring(one).get("tests") == str(len(d["checks"]))
    else:
        assert d["verdict"] in one


@pytest.mark.parametrize("name", FORMATS.names())
def test_every_format_has_an_output_suffix_and_a_cli_choice(name, tmp_path):
    f = FORMATS.get(name)
    assert f.name == name and f.suffixes and f.description
    assert name in CLI_FORMATS
    for s in f.suffixes:
        assert s.startswith(".") and SUFFIX_FORMATS[s] == name and format_of(f"r{s.upper()}") == name
        assert _plan_outputs((str(tmp_path / f"r{s}"),), None, False) == [(str(tmp_path / f"r{s}"), name)]


def test_the_suffix_table_is_the_registry():
    assert set(suffix_formats().values()) == set(FORMATS.names()) == set(CLI_FORMATS)
    assert len(suffix_formats()) == sum(len(f.suffixes) for f in FORMATS.values())  # no suffix claimed twice
    assert CLI_FORMATS == FORMATS.names()


def test_json_format_round_trips(every_section):
    assert json.loads(Report(every_section).render("json")) == every_section


def _imports(path: Path) -> set[str]:
    """The auditor.report modules ``path`` imports, at any level of the file."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            out.add(node.module.split(".")[0] if node.module else "")
            out.update(a.name for a in node.names if not node.module)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("auditor.report."):
            out.add(node.module.split(".")[2])
    return out - {""}


def test_no_import_cycle_in_the_report_package():
    graph = {p.stem: _imports(p) for p in PACKAGE.glob("*.py")}
    state: dict[str, int] = {}

    def visit(m, path):
        if state.get(m) == 1:
            raise AssertionError("import cycle: " + " -> ".join(path + [m]))
        if state.get(m) == 2 or m not in graph:
            return
        state[m] = 1
        for n in sorted(graph[m]):
            visit(n, path + [m])
        state[m] = 2

    for m in sorted(graph):
        visit(m, [])
    assert {"numbers", "records", "formats", "core", "html", "text"} <= set(graph)
