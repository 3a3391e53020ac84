"""The gradient-masking diagnosis: fires on gradient inhibition, not on the plain model."""

from __future__ import annotations

from pathlib import Path

import pytest

from auditor.errors import AuditorError
from auditor.pipeline.run import run_audit

ROOT = Path(__file__).resolve().parents[2]

SCENARIO = """
name: masking
seed: 0
data: {source: digits, count: 32}
robustness:
  count: 32
  masking: {run: always, steps: 5, n_queries: 50}
checks:
  no_gradient_masking: true
"""


def test_diagnosis_fires_on_gradient_inhibition_and_not_on_the_plain_model(tmp_path):
    sc = tmp_path / "s.yaml"
    sc.write_text(SCENARIO)
    rep = run_audit(ROOT / "models/plain_cnn.onnx", [ROOT / "hwprofiles/dense.yaml", ROOT / "hwprofiles/dense_gi.yaml"],
                    sc).data
    plain, gi = rep["profiles"]
    assert plain["masking"]["fired"] == [] and plain["masking"]["verdict"] == "no sign of gradient masking"
    m = gi["masking"]
    assert "naive_weaker_than_adaptive" in m["fired"] and m["verdict"] == "gradient masking"
    s = m["success"]
    # the naive FGSM (plain cross-entropy gradient) is weaker than FGSM with the margin loss ...
    assert s["fgsm_margin"] > s["fgsm_ce"] + m["tolerance"]
    # ... while on the plain model both agree within the tolerance
    assert abs(plain["masking"]["success"]["fgsm_margin"] - plain["masking"]["success"]["fgsm_ce"]) <= m["tolerance"]
    assert "transfer_from_exact" in s and "transfer_from_exact" not in plain["masking"]["success"]
    gate = {c["profile"]: c for c in rep["checks"] if c["name"] == "no_gradient_masking"}
    assert gate["dense"]["passed"] and not gate["dense_gi"]["passed"]
    assert "naive_weaker_than_adaptive" in gate["dense_gi"]["detail"]
    assert rep["verdict"] == "FAIL"
    from auditor.report.core import render_text

    text = render_text(rep)
    assert "GRADIENT MASKING (naive_weaker_than_adaptive" in text and "no sign of gradient masking" in text


def test_auto_skips_the_plain_profile_and_the_check_needs_a_robustness_section(tmp_path):
    sc = tmp_path / "s.yaml"
    sc.write_text(SCENARIO.replace("run: always, steps: 5, n_queries: 50", "steps: 2, n_queries: 5").replace(
        "count: 32", "count: 4"))
    rep = run_audit(ROOT / "models/plain_cnn.onnx", [ROOT / "hwprofiles/dense.yaml"], sc).data
    assert "masking" not in rep["profiles"][0] and not [c for c in rep["checks"] if c["name"] == "no_gradient_masking"]
    bad = tmp_path / "b.yaml"
    bad.write_text("name: b\ndata: {source: digits, count: 4}\nchecks: {no_gradient_masking: true}\n")
    with pytest.raises(AuditorError, match="no_gradient_masking needs a robustness section"):
        run_audit(ROOT / "models/plain_cnn.onnx", [ROOT / "hwprofiles/dense.yaml"], bad)
