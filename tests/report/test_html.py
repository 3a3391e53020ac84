"""The self-contained HTML report: structure, embedded plots, escaping, missing sections."""

from __future__ import annotations

import copy
import re
from html.parser import HTMLParser

import numpy as np
import pytest

import auditor
from auditor.report.html import render_html

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
LAYERS = ["/features/features.0/Conv", "/features/features.3/Conv", "/classifier/classifier.1/Gemm"]


class Doc(HTMLParser):
    """Checks tag nesting and collects what the tests look at."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.imgs: list[dict] = []
        self.urls: list[tuple[str, str, str]] = []  # (tag, attr, value)
        self.events: list[tuple[str, str]] = []  # ("text", data) / ("img", data-plot) in document order
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self.doctype = False

    def handle_decl(self, decl):
        self.doctype = decl.lower().startswith("doctype")

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        for k in ("src", "href", "action", "data", "poster", "srcset"):
            if k in a:
                self.urls.append((tag, k, a[k] or ""))
        if "url(" in (a.get("style") or ""):
            self.errors.append(f"url() in a style attribute of <{tag}>")
        if tag == "img":
            self.imgs.append(a)
            self.events.append(("img", a.get("data-plot") or a.get("class", "")))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.stack.pop()

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}>")
            if tag in self.stack:
                while self.stack.pop() != tag:
                    pass
            return
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)
        self.events.append(("text", data))

    @property
    def plots(self) -> list[str]:
        return [i.get("data-plot") for i in self.imgs if i.get("class") == "plot"]


def parse(html: str) -> Doc:
    d = Doc()
    d.feed(html)
    d.close()
    assert d.doctype, "no <!DOCTYPE html>"
    assert not d.errors, d.errors[:5]
    assert not d.stack, f"unclosed tags: {d.stack}"
    # self-contained: every resource inline, every link an in-page anchor
    for tag, attr, value in d.urls:
        if attr == "href":
            assert value.startswith("#"), (tag, attr, value[:80])
        else:
            assert value.startswith("data:image/png;base64,"), (tag, attr, value[:80])
    assert not re.search(r"<(script|link|iframe|object|embed)\b", html, re.I)
    for css in re.findall(r"<style>(.*?)</style>", html, re.S):
        assert "@import" not in css and "url(" not in css and "//" not in css.replace("://", "")
    # every embedded PNG decodes
    import base64

    for i in d.imgs:
        png = base64.b64decode(i["src"].split(",", 1)[1], validate=True)
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return d


def _stats(mean, worst):
    return {"mean": mean, "worst": worst, "min": mean * 0.9, "p50": mean, "p95": worst * 0.99}


def _summary(values):
    v = np.asarray(values, float)
    return {"count": len(v), "n_infinite": 0, "mean": float(v.mean()),
            "quantiles": {f"{q:g}": float(np.quantile(v, q)) for q in (0, 0.05, 0.25, 0.5, 0.75, 0.95, 1)}}


def _per_input(rng, n, lat, en, dens):
    return {"latency_s": list(lat + rng.random(n) * lat * 0.1), "energy_j": list(en + rng.random(n) * en * 0.1),
            "density": list(dens + rng.random(n) * 0.05),
            "layer_density": {name: list(np.clip(dens + rng.normal(0, 0.05, n), 0, 1)) for name in LAYERS}}


def _energy_attack(rng, search):
    return {
        "search": search, "params": {"eps": 0.9}, "cost": "latency", "count": 6, "queries": 120, "seconds": 0.4,
        "seconds_per_input": 0.07, "label_kept_rate": 1.0,
        "perturbation": {"l2": {"mean": 0.5, "worst": 0.9}, "linf": {"mean": 0.1, "worst": 0.2}, "eps": 0.9,
                         "norm": "l2"},
        "changed": 6, "verified": 6, "rejected": 0, "density_clean": 0.6, "density_attacked": 0.85,
        "density_attacked_worst": 0.9, "latency_s": {"mean": 7.3e-6, "worst": 7.4e-6},
        "energy_j": {"mean": 3.4e-5, "worst": 3.5e-5}, "edp": {"mean": 2.5e-10, "worst": 2.6e-10},
        "clean_latency_s": {"mean": 6.9e-6, "worst": 7e-6}, "clean_energy_j": {"mean": 3e-5, "worst": 3.1e-5},
        "latency_increase": 1.07, "energy_increase": 1.11, "mean_latency_ratio": 1.06, "mean_energy_ratio": 1.1,
        "sparsity_ratio": 2.3,
        "layers": [{"layer": n, "density_clean": 0.6, "density_attacked": 0.9, "cycles_clean": 10.0,
                    "cycles_attacked": 12.0} for n in LAYERS],
        "per_input": _per_input(rng, 6, 7.3e-6, 3.4e-5, 0.85),
        "worst_input": {"index": 2, "latency_s": 7.4e-6, "energy_j": 3.5e-5, "density": 0.9},
    }


def _rob_attack(rng, name, norm, eps, minimal=False):
    a = {"attack": name, "norm": norm, "params": {}, "targeted": False, "minimal": minimal, "query_based": False,
         "seconds": 0.2, "queries": {"total": 40, "per_input": _summary(rng.integers(2, 9, 8))}, "results": []}
    for k, e in enumerate(eps):
        a["results"].append({
            "epsilon": e, "robust_accuracy": 0.8 - 0.3 * k, "attack_success_rate": 0.2 + 0.3 * k,
            "n_success": 2 + k, "n_attacked": 8, "n_unverified": 0,
            "margin": _summary(rng.random(8) * (2 - k)), "label_margin": _summary(rng.normal(0, 1, 8)),
            "queries": {"per_input": _summary([2] * 8), "to_success": _summary([2] * (2 + k))}})
    if minimal:
        a["minimal_perturbation"] = {"n_attacked": 8, "n_success": 7, "n_unverified": 0, "median_distance": 1.2,
                                     "median_l2": 1.2, **{k: _summary(rng.random(7) + 0.5)
                                                          for k in ("l0", "l2", "linf", "mse", "psnr")}}
    return a


def _profile(rng, name, attacks=True, robustness=True):
    p = {
        "name": name, "path": f"hwprofiles/{name}.yaml", "cost_model": "cnvlutin", "description": f"the {name} profile",
        "profile": {"name": name, "cost_model": "cnvlutin", "params": {"units": 16}, "reshape": None, "approx": None},
        "clean": {
            "accuracy": 0.9,
            "density": dict(_stats(0.6, 0.7), counted="activations", tensors=["a"]),
            "tensor_density": {"a": 0.6},
            "latency_s": _stats(6.9e-6, 7.2e-6), "energy_j": _stats(3e-5, 3.2e-5), "edp": _stats(2e-10, 2.3e-10),
            "cycles": _stats(6900.0, 7200.0), "dense_cycles": _stats(7968.0, 7968.0),
            "speedup_over_dense": _stats(1.15, 1.3),
            "energy_breakdown_j": {"mac": 3e-6, "static": 1.7e-5},
            "layer_shares": {n: {"runtime": 1 / 3, "energy": 1 / 3} for n in LAYERS},
            "worst_input": {"index": 3, "layers": [{"layer": n, "op": "Conv", "macs": 1000, "input_density": 0.7,
                                                    "cycles": 100, "dense_cycles": 120, "energy_j": 1e-6}
                                                   for n in LAYERS]},
            "per_input": _per_input(rng, 12, 6.9e-6, 3e-5, 0.6),
        },
        "attacks": [_energy_attack(rng, "whitebox"), _energy_attack(rng, "uniform")] if attacks else [],
        "summary": {"clean_mean_latency_s": 6.9e-6, "clean_mean_energy_j": 3e-5, "worst_latency_s": 7.4e-6,
                    "worst_energy_j": 3.5e-5, "worst_edp": 2.6e-10, "worst_density": 0.9, "clean_accuracy": 0.9},
        "checks": [],
    }
    if robustness:
        p["robustness"] = {"n": 8, "count": 8, "clean_accuracy": 1.0, "clean_margin": _summary(rng.random(8) * 5 + 1),
                           "clean_label_margin": _summary(rng.random(8) * 5 + 1),
                           "attacks": [_rob_attack(rng, "fgsm", "linf", [0.1, 0.3]),
                                       _rob_attack(rng, "deepfool", "l2", [2.0], minimal=True)]}
    return p


def _report(profiles, checks=None):
    checks = checks if checks is not None else [
        {"name": "worst_case_latency_ms", "profile": profiles[0]["name"], "measured": 0.0074, "threshold": 1.0,
         "op": "<=", "passed": True, "detail": ""},
        {"name": "min_robust_accuracy[fgsm@0.3]", "profile": profiles[0]["name"], "measured": 0.2,
         "threshold": 0.5, "op": ">=", "passed": False, "detail": ""}]
    return {
        "schema_version": 1, "tool": {"name": "auditor", "version": "0.1.0"}, "seed": 7,
        "model": {"path": "models/plain_cnn.onnx", "sha256": "ba91e0b63efcc2a41fbcd4b342c8438d5e4f", "opset": 13},
        "scenario": {"name": "synthetic-scn", "description": "a test", "seed": 7},
        "data": {"description": "bundled digits (test split, 28x28)", "count": 12, "labels": True, "shape": [1, 28, 28]},
        "profiles": profiles, "checks": checks,
        "verdict": "PASS" if all(c["passed"] for c in checks) else "FAIL",
        "timing": {"started": "2026-01-01T00:00:00+00:00", "seconds": 1.0},
    }


@pytest.fixture(scope="module")
def full_report():
    rng = np.random.default_rng(0)
    return _report([_profile(rng, "cnvlutin"), _profile(rng, "sparce")])


@pytest.fixture(scope="module")
def full_html(full_report):
    return render_html(full_report)


def _small_report(**kw):
    """One profile, no per-input data: renders without plots unless a test adds data (fast)."""
    rng = np.random.default_rng(1)
    p = _profile(rng, "dense", attacks=kw.pop("attacks", False), robustness=kw.pop("robustness", False))
    del p["clean"]["per_input"]
    for a in p["attacks"]:
        del a["per_input"]
    return _report([p], **kw)


def _first(doc: Doc, pred) -> int:
    return next(i for i, ev in enumerate(doc.events) if pred(ev))


def test_full_report_structure_and_plots(full_html):
    html = full_html
    doc = parse(html)
    # per profile: cost distributions, per-layer density, robust accuracy vs eps, margin CDF
    assert doc.plots == ["cost", "layer-density", "robust-accuracy", "margin-cdf"] * 2
    assert all(i["src"].startswith("data:image/png;base64,") for i in doc.imgs)
    # verdict banner first, before any plot, with model, sha prefix, scenario, seed, data, version
    verdict = _first(doc, lambda ev: ev == ("text", "FAIL"))
    assert verdict < _first(doc, lambda ev: ev[0] == "img")
    text = "".join(doc.text)
    for s in ("models/plain_cnn.onnx", "ba91e0b63efc", "synthetic-scn", "bundled digits (test split, 28x28)",
              "auditor 0.1.0", "Checks", "Energy-latency attacks", "Evasion attacks", "Minimal perturbations",
              "worst clean input #3", "whitebox", "deepfool"):
        assert s in text, s
    assert text.index("seed") < text.index("Checks") < text.index("Profile: cnvlutin") \
        < text.index("Profile: sparce") < text.index("Energy-latency attacks") < text.index("Evasion attacks")
    # the failing check is highlighted, the passing one is not
    rows = [a for t, a in doc.tags if t == "tr" and a.get("class") == "fail"]
    assert len(rows) == 1
    assert 'class="error"' not in html
    assert len(html) < 600_000


def test_passing_report_banner():
    d = _small_report()
    for c in d["checks"]:
        c["passed"] = True
    d["verdict"] = "PASS"
    html = render_html(d)
    parse(html)
    assert 'class="banner pass"' in html and 'class="fail"' not in html and "FAIL" not in html


def test_report_without_attacks_robustness_or_labels_renders():
    d = _small_report(checks=[])
    d["profiles"][0]["clean"]["accuracy"] = None
    d["data"]["labels"] = False
    html = render_html(d)
    doc = parse(html)
    assert doc.plots == []
    text = "".join(doc.text)
    assert "no checks declared" in text and "n/a" in text and "Energy-latency attacks" not in text
    assert 'class="error"' not in html
    # the bare minimum a report can be
    doc = parse(render_html({"verdict": "PASS", "profiles": [], "checks": []}))
    assert doc.plots == []


def test_attacks_without_per_input_fall_back_to_layer_means():
    doc = parse(render_html(_small_report(attacks=True)))
    assert doc.plots == ["layer-density"]
    assert "Energy-latency attacks" in "".join(doc.text)


def test_text_is_escaped():
    d = _small_report()
    d["model"]["path"] = 'models/<script>alert("x")</script>.onnx'
    d["scenario"]["name"] = "a & b <i>"
    d["profiles"][0]["name"] = '"><img src=http://evil>'
    d["checks"][0]["detail"] = "<b>bold</b>"
    html = render_html(d)
    doc = parse(html)
    assert "<script" not in html and "<i>" not in html and "<b>bold" not in html and "<img src=http" not in html
    text = "".join(doc.text)
    assert 'models/<script>alert("x")</script>.onnx' in text and "a & b <i>" in text and "<b>bold</b>" in text


def test_worst_input_png_embedded_when_present_and_skipped_when_not(tmp_path):
    from PIL import Image

    png = tmp_path / "w.png"
    Image.fromarray((np.arange(28 * 28).reshape(28, 28) % 255).astype(np.uint8)).save(png)
    (tmp_path / "fake.png").write_text("not a png")
    d = _small_report(attacks=True)
    wb, uni = d["profiles"][0]["attacks"]
    wb["worst_input"]["files"] = [str(tmp_path / "w.npy"), str(png)]
    uni["worst_input"]["files"] = [str(tmp_path / "gone.npy"), str(tmp_path / "gone.png"), "fake.png"]
    html = render_html(d, base_dir=tmp_path)
    doc = parse(html)
    assert len([i for i in doc.imgs if i.get("class") == "input"]) == 1
    assert doc.plots == ["layer-density"]
    assert 'class="error"' not in html
    # a relative path resolves against base_dir
    wb["worst_input"]["files"] = ["w.png"]
    doc = parse(render_html(d, base_dir=tmp_path))
    assert len([i for i in doc.imgs if i.get("class") == "input"]) == 1


def test_approx_and_unknown_keys_render_as_tables():
    rng = np.random.default_rng(3)
    d = _small_report()
    d["profiles"][0]["approx"] = {
        "multiplier": "da-reference", "n": 8, "clean": {"exact_accuracy": 0.9, "approx_accuracy": 0.88},
        "margins": {"exact": {"top_margin": _summary(rng.random(8) * 4), "confidence": _summary(rng.random(8))},
                    "approx": {"top_margin": _summary(rng.random(8) * 2), "confidence": _summary(rng.random(8))}},
        "transfer": [{"attack": "pgd", "norm": "linf", "results": [
            {"epsilon": 0.1, "n_attacked": 8, "exact_success_rate": 0.9, "approx_success_rate": 0.4}]}],
        "future_part": {"k": 2.5}}
    d["profiles"][0]["something_new"] = {"x": [1, 2, 3], "y": "<text>"}
    d["future_top_level"] = {"k": 1.5}
    html = render_html(d)
    doc = parse(html)
    assert doc.plots == ["approx-distributions", "approx-success"]
    text = "".join(doc.text)
    for s in ("Exact vs approximate hardware", "Transfer from the exact model", "40.0%", "approx.future_part", "2.5",
              "something_new", "<text>", "future_top_level", "Other report fields"):
        assert s in text, s
    assert 'class="error"' not in html
    # approx data without any distribution: a table, no plot
    d["profiles"][0]["approx"] = {"note": "exact only"}
    doc = parse(render_html(d))
    assert doc.plots == [] and "exact only" in "".join(doc.text)


MUTATIONS = [
    lambda d: d["profiles"][0].__setitem__("approx", [1, "a", None, {"margin": [0.1, "inf", 0.3]}]),
    lambda d: d["profiles"][1].__setitem__("approx", "not a dict"),
    lambda d: d["profiles"][0]["robustness"]["attacks"][0]["results"].append({"epsilon": None}),
    lambda d: d["profiles"][0]["robustness"]["attacks"][1]["results"][0].__setitem__("margin", {"quantiles": 5}),
    lambda d: d["profiles"][0]["robustness"]["attacks"][1]["minimal_perturbation"].__setitem__("median_l2", "inf"),
    lambda d: d["profiles"][0]["clean"]["per_input"].__setitem__("latency_s", []),
    lambda d: d["profiles"][0]["attacks"][0].__setitem__("per_input", {"layer_density": {"weird": [None, "x"]}}),
    lambda d: d["profiles"][1].__setitem__("robustness", {"attacks": "oops"}),
    lambda d: d["profiles"][1].__setitem__("clean", {}),
    lambda d: d["profiles"][1].__setitem__("attacks", [None, {"search": 3}]),
    lambda d: d.__setitem__("checks", [{"name": "x"}, "junk"]),
    lambda d: d.__setitem__("model", None),
]


def test_malformed_or_partial_data_never_crashes(full_report):
    # all at once: one render (matplotlib is slow on 2 cores), every section sees its own damage
    d = copy.deepcopy(full_report)
    for mutate in MUTATIONS:
        mutate(d)
    html = render_html(d)
    doc = parse(html)
    assert doc.plots[:4] == ["cost", "layer-density", "robust-accuracy", "margin-cdf"]


def test_render_real_audit(tmp_path):
    sc = tmp_path / "sc.yaml"
    sc.write_text("name: html\ndata:\n  count: 8\nenergy_attacks:\n  - {search: uniform, count: 4}\n"
                  "robustness:\n  count: 4\n  attacks:\n    - {attack: fgsm, norm: linf, epsilons: [0.1, 0.3]}\n"
                  "checks:\n  max_latency_increase: 10.0\n  min_robust_accuracy:\n"
                  "    - {attack: fgsm, epsilon: 0.3, threshold: 0.9}\n")
    # cnvlutin: on the dense machine no energy search runs (its cost does not depend on the input)
    rep = auditor.audit("models/plain_cnn.onnx", "hwprofiles/cnvlutin.yaml", str(sc), save_dir=str(tmp_path / "worst"))
    html = rep.render("html")  # the report of an audit embeds the inputs it saved
    assert html == render_html(rep.data, base_dir=tmp_path / "worst")
    assert 'class="input"' not in render_html(rep.data)  # no folder given: nothing embedded
    doc = parse(html)
    assert doc.plots == ["cost", "layer-density", "robust-accuracy", "margin-cdf"]
    # the saved worst uniform input and the FGSM adversarial examples (clean, adversarial, difference)
    assert len([i for i in doc.imgs if i.get("class") == "input"]) >= 4
    text = "".join(doc.text)
    assert rep.verdict in text and rep.data["model"]["sha256"][:12] in text and "uniform" in text
    assert 'class="error"' not in html
    assert render_html(rep) == html  # a Report is accepted too
