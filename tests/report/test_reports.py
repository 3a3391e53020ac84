"""Every section of the JSON report in every format, from a saved real report (fast: no audit).

``tests/data/every_section_report.json`` is a real audit of models/lenet5.onnx on
hwprofiles/fpu_exact.yaml + hwprofiles/axfpm.yaml (clean, a uniform energy search with a quantize
defence, FGSM + DeepFool evasion attacks, the exact-vs-approximate section with transfer,
substitute, BPDA white-box, query and minimal-perturbation attacks, a baseline, --save-inputs
evidence), made with a 16-input variant of scenarios/approx.yaml (examples trimmed to one per
result, paths made relative, the approximate profile's PNGs kept under tests/data/evidence).
The tests add the sections a real run makes only in other situations (warnings, a search cut
short by the budget, a section of a newer report) and check the key figures of each section in
text, Markdown, HTML and JUnit.
"""

from __future__ import annotations

import copy
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from auditor.report.core import Report, verdict_of

DATA = Path(__file__).resolve().parents[1] / "data"


def pct(v):
    return f"{100 * v:.1f}%"


def g(v):
    """Numbers as the reports print them: 4 significant digits, scientific below 1e-3."""
    return f"{v:.3e}" if v != 0 and abs(v) < 1e-3 else f"{v:.4g}"


@pytest.fixture(scope="module")
def real():
    return json.loads((DATA / "every_section_report.json").read_text())


@pytest.fixture(scope="module")
def full(real):
    d = copy.deepcopy(real)
    d["warnings"] = [{"code": "clean_accuracy_near_chance", "profile": "axfpm",
                      "message": "axfpm: clean accuracy 12.5% is near chance (10 classes: 10.0%)"}]
    p0 = d["profiles"][0]
    p0["attacks"].append({"search": "whitebox", "cut_short": True})
    p0["cut_short"] = ["whitebox"]
    d["budget"] = {"max_seconds": 5.0, "cut_short": ["fpu_exact:whitebox"]}
    d["checks"].append({"name": "worst_case_latency_ms", "profile": "fpu_exact", "measured": None, "threshold": 5.0,
                        "op": "<=", "passed": False, "detail": "cut short by --max-seconds: whitebox",
                        "decided": False})
    # a section of a newer report that no renderer knows yet
    d["profiles"][1]["autoattack"] = {"epsilon": 0.3, "robust_accuracy": 0.125,
                                      "attacks": [{"name": "apgd-ce", "robust_accuracy": 0.25, "seconds": 1.5},
                                                  {"name": "square", "robust_accuracy": 0.125, "seconds": 9.0}]}
    d["verdict"] = verdict_of(d["checks"], cut_short=True)
    return d


def key_figures(d: dict) -> dict[str, list[str]]:
    """Per section, strings each rendering must show (formatted here, independently of the renderers)."""
    ax = d["profiles"][1]["approx"]
    figs = {"approx clean": [ax["multiplier"], pct(ax["clean"]["exact_accuracy"]), pct(ax["clean"]["approx_accuracy"])],
            "approx margins": [f"{ax['margins']['exact']['top_margin']['mean']:.4g}",
                               f"{ax['margins']['approx']['top_margin']['mean']:.4g}",
                               f"{ax['margins']['exact']['confidence']['mean']:.4g}"]}
    for key in ("transfer", "substitute", "whitebox_bpda", "query"):
        rows = []
        for a in ax[key]:
            rows.append(a["attack"])
            for r in a["results"]:
                rate = r["approx_success_rate"] if "approx_success_rate" in r else r["approx"]["success_rate"]
                rows.append(pct(rate))
        figs[f"approx {key}"] = rows
    m = ax["perturbation"][0]
    figs["approx L2/MSE/PSNR"] = [f"{m['approx']['median_l2']:.4g}", f"{m['exact']['median_l2']:.4g}",
                                  g(m['approx']['median_mse']), f"{m['approx']['mean_psnr']:.4g}"]
    figs["approx worst case"] = [pct(v["robust_accuracy"]) for v in ax["worst_case"].values()]
    rob = d["profiles"][1]["robustness"]
    figs["robustness"] = [pct(r["robust_accuracy"]) for a in rob["attacks"] for r in a["results"]]
    figs["minimal perturbation"] = [f"{rob['attacks'][1]['minimal_perturbation']['median_l2']:.4g}"]
    e = d["profiles"][1]["attacks"][0]
    figs["energy searches"] = [e["search"], f"{e['latency_increase']:.4g}", "quantize"]
    figs["warnings"] = ["near chance"]
    figs["cut short"] = ["cut short"]
    figs["newer section"] = ["autoattack", "apgd-ce", "0.25", "square"]
    ex = rob["attacks"][0]["results"][0]["examples"][0]
    figs["adversarial examples"] = [f"{ex['label']} → {ex['prediction']}", f"{ex['l2']:.4g}"]
    return figs


def _text_of_html(html: str) -> str:
    from html import unescape

    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", html)))


@pytest.fixture(scope="module")
def rendered(full):
    r = Report(full)
    return {"text": r.render("text"), "markdown": r.render("markdown"),
            "html": r.render("html", base_dir=DATA), "junit": r.render("junit")}


@pytest.mark.parametrize("fmt", ["text", "markdown", "html"])
def test_every_section_key_figures_in_every_format(full, rendered, fmt):
    out = rendered[fmt] if fmt != "html" else _text_of_html(rendered["html"])
    missing = [(sec, s) for sec, strings in key_figures(full).items() for s in strings if s not in out]
    assert not missing, missing[:10]


def test_text_fits_80_columns_and_colour(full, rendered):
    assert max(len(ln) for ln in rendered["text"].splitlines()) <= 80
    assert "\033[" not in rendered["text"]
    coloured = Report(full).render("text", color=True)
    assert "\033[1;31mFAIL\033[0m" in coloured and "\033[32mPASS\033[0m" in coloured
    assert "N/D" in rendered["text"] and "not decided" in rendered["text"]


def test_html_approx_plots_on_separate_axes(full, rendered):
    from auditor.report.html import _draw_approx_dists

    html = rendered["html"]
    for kind in ("approx-distributions", "approx-success"):
        assert f'data-plot="{kind}"' in html
    fig = _draw_approx_dists(full["profiles"][1]["approx"])
    conf, marg = fig.axes[:2]
    assert conf.get_xlim()[1] <= 1.01 and marg.get_xlim()[1] > 5  # probabilities vs logits, not one axis
    # plots at 2x: the stored PNG is twice the displayed width
    import base64
    import io

    from PIL import Image

    m = re.search(r'<img class="plot" data-plot="approx-success" alt="[^"]*" width="(\d+)" src="data:image/png;base64,([^"]+)"', html)
    assert m and Image.open(io.BytesIO(base64.b64decode(m.group(2)))).width == 2 * int(m.group(1))
    # adversarial examples shown beside the searches' worst inputs: clean, adversarial, difference
    assert html.count('class="input"') >= 4
    assert "label → prediction" in _text_of_html(html)
    assert "<tbody></tbody>" not in html  # empty tables are left out
    assert 'class="error"' not in html
    # nothing attacked and a dense machine: no "clean vs attacked" plot
    d = copy.deepcopy(full)
    for p in d["profiles"]:
        p["attacks"] = []
    html = Report(d).render("html")
    assert 'data-plot="cost"' not in html and "clean vs attacked" not in html


def test_junit_times_errors_and_failure_types(full, rendered):
    root = ET.fromstring(rendered["junit"])
    suites = root.findall("testsuite")
    assert abs(float(root.get("time")) - sum(float(s.get("time")) for s in suites)) < 1e-3 * len(suites)
    for s in suites:
        assert s.get("timestamp") and s.get("hostname")
        assert all(c.get("time") is not None for c in s.findall("testcase"))
        assert sum(float(c.get("time")) for c in s.findall("testcase")) <= float(s.get("time")) + 1e-3
    cases = {(s.get("name"), c.get("name")): c for s in suites for c in s.findall("testcase")}
    nd = cases[("auditor.fpu_exact", "worst_case_latency_ms")]
    assert nd.find("error") is not None and nd.find("failure") is None and nd.find("error").get("type") == "NotDecided"
    assert cases[("auditor.axfpm", "max_attack_success_rate")].find("failure").get("type") == "AboveMaximum"
    assert cases[("auditor.axfpm", "min_robust_accuracy[fgsm@0.1]")].find("failure").get("type") == "BelowMinimum"
    assert root.get("errors") == "1" and int(root.get("failures")) == 4
    assert float(cases[("auditor.axfpm", "max_attack_success_rate")].get("time")) > 0  # its share of the stage


def test_markdown_layout(full, rendered):
    md = rendered["markdown"]
    lines = md.splitlines()
    checks = [ln for ln in lines if ln.startswith("| ❌") or ln.startswith("| ✅") or ln.startswith("| ⏸️")]
    marks = [ln.split("|")[1].strip() for ln in checks]
    assert marks == sorted(marks, key=lambda m: {"❌": 0, "⏸️": 1, "✅": 2}[m])  # failing first
    assert "|---|---|---|---:|---:|" in md  # numbers right-aligned
    assert f"auditor {full['tool']['version']}" in md
    assert "Robust accuracy per ε" in md and "<details>" in md
    assert "(+0.0%)" in md  # deltas against the baseline
    assert md.startswith("### ❌ auditor verdict: **FAIL**")


def test_verdicts_and_repr(full, real):
    assert verdict_of([{"passed": True}], cut_short=True) == "INCOMPLETE"
    assert verdict_of([{"passed": False, "decided": False}]) == "INCOMPLETE"
    assert verdict_of([{"passed": False}, {"passed": False, "decided": False}]) == "FAIL"
    assert Report({"verdict": "INCOMPLETE"}).exit_code == 4
    r = Report(real)
    assert repr(r) == ("<auditor Report verdict='FAIL' model='models/lenet5.onnx' profiles=['fpu_exact', 'axfpm'] "
                       "checks=12 (4 failed)>")
    h = r._repr_html_()
    assert "FAIL" in h and "min_robust_accuracy[fgsm@0.1]" in h and "<html" not in h


def test_diff_names_units_and_changes(real):
    from auditor.pipeline.baseline import diff_markdown, diff_text

    new = copy.deepcopy(real)
    p = new["profiles"][1]
    p["summary"]["worst_latency_s"] *= 1.5
    p["summary"]["clean_accuracy"] -= 0.125
    p["profile"]["params"]["fmul_cycles"] = 5
    new["scenario"]["data"]["count"] = 32
    t = diff_text(real, new)
    old_ms = real["profiles"][1]["summary"]["worst_latency_s"] * 1e3
    assert f"[axfpm] worst_latency_s: {old_ms:.3g} ms -> {1.5 * old_ms:.3g} ms (+50.0%)" in t
    assert "clean_accuracy: 100.00% -> 87.50% (-12.50 pt)" in t
    assert "[axfpm] hardware profile changed: params.fmul_cycles" in t
    assert "scenario changed: data" in t
    md = diff_markdown(real, new)
    assert md.startswith("### auditor diff") and "| axfpm | worst_latency_s |" in md
    assert diff_text(real, real) == "no differences (apart from timing)\n"


def test_misspelt_keyword_names_the_public_function():
    import auditor

    with pytest.raises(TypeError, match=r"auditor\.audit\(\) got an unexpected keyword argument 'sead'; did you mean 'seed'\?"):
        auditor.audit("models/plain_cnn.onnx", "hwprofiles/dense.yaml", "scenarios/default.yaml", sead=1)


def test_a_profile_cut_before_its_clean_evaluation_renders(real):
    d = copy.deepcopy(real)
    p = d["profiles"][0]
    d["profiles"][0] = {"name": p["name"], "path": p["path"], "cost_model": p["cost_model"], "cut_short": ["clean"],
                        "checks": []}
    for c in d["checks"]:
        if c["profile"] == p["name"]:
            c.update(passed=False, decided=False, measured=None, detail="cut short by --max-seconds: clean")
    d["verdict"] = verdict_of(d["checks"], cut_short=True)
    r = Report(d)
    assert r.verdict == "FAIL"  # the other profile's failures are decided
    for fmt in ("text", "markdown", "junit"):
        out = r.render(fmt)
        assert p["name"] in out and "cut short" in out, fmt
    html = r.render("html")
    assert 'class="error"' not in html and p["name"] in html


def test_sanity_warnings_on_baselines(real):
    from auditor.pipeline.baseline import Regression
    from auditor.pipeline.sanity import near_chance, sanity_warnings

    class Sc:
        regression = Regression()

    assert near_chance(0.156, 10) and not near_chance(0.35, 10) and near_chance(0.55, 2) and not near_chance(None, 10)
    codes = [w["code"] for w in sanity_warnings(real, Sc(), copy.deepcopy(real))]
    assert codes == ["baseline_without_regression"]
    old = copy.deepcopy(real)
    old["scenario"]["name"] = "another"
    old["model"]["path"] = "models/other.onnx"
    old["seed"] = 5
    for p in old["profiles"]:
        p["name"] += "-old"
    codes = [w["code"] for w in sanity_warnings(real, None, old)]
    assert codes == ["baseline_without_regression", "baseline_other_scenario", "baseline_other_model",
                     "baseline_other_profiles", "baseline_other_seed"]
    same_name = copy.deepcopy(real)
    same_name["scenario"]["data"]["count"] = 99
    ws = sanity_warnings(real, None, same_name)
    assert [w["code"] for w in ws][1:] == ["baseline_scenario_changed"] and "data" in ws[1]["message"]
    # a robustness result on a model at chance
    d = copy.deepcopy(real)
    d["profiles"][1]["clean"]["accuracy"] = 0.125
    ws = sanity_warnings(d)
    assert [w["code"] for w in ws] == ["clean_accuracy_near_chance", "robustness_at_chance"]
    assert "12.5%" in ws[0]["message"] and "preprocessing" in ws[0]["message"]
