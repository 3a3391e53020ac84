"""The CLI people live in: each exit code, outputs inferred from -o, several outputs from one audit,
`list`, `init --from-model`, saved adversarial examples, and the CI example run end to end."""

from __future__ import annotations

import copy
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parents[1] / "data"
CLI = [sys.executable, "-m", "auditor.cli"]


def run(*args, cwd=ROOT, env=None):
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True, cwd=cwd,
                          env=None if env is None else {**os.environ, **env})


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """The saved real report as FAIL, PASS and INCOMPLETE variants."""
    tmp = tmp_path_factory.mktemp("reports")
    d = json.loads((DATA / "every_section_report.json").read_text())
    out = {"FAIL": tmp / "fail.json"}
    out["FAIL"].write_text(json.dumps(d))
    p = copy.deepcopy(d)
    for c in p["checks"]:
        c["passed"] = True
    p["verdict"] = "PASS"
    out["PASS"] = tmp / "pass.json"
    out["PASS"].write_text(json.dumps(p))
    i = copy.deepcopy(p)
    i["checks"][0].update(passed=False, decided=False, measured=None, detail="cut short by --max-seconds: whitebox")
    i["verdict"] = "INCOMPLETE"
    out["INCOMPLETE"] = tmp / "incomplete.json"
    out["INCOMPLETE"].write_text(json.dumps(i))
    return tmp, out


def test_render_exit_codes_and_outputs_from_suffixes(reports):
    tmp, files = reports
    for verdict, code in (("PASS", 0), ("FAIL", 1), ("INCOMPLETE", 4)):
        r = run("render", files[verdict], "--format", "text")
        assert r.returncode == code, (verdict, r.stderr)
        assert f"verdict: {verdict}" in r.stdout
    outs = [tmp / n for n in ("r.json", "r.html", "r.xml", "r.md", "r.txt")]
    r = run("render", files["FAIL"], *[x for o in outs for x in ("-o", o)])
    assert r.returncode == 1, r.stderr
    assert json.loads(outs[0].read_text())["verdict"] == "FAIL"
    assert outs[1].read_text().startswith("<!DOCTYPE html>")
    assert outs[2].read_text().startswith('<?xml version="1.0"') and "<testsuites" in outs[2].read_text()
    assert outs[3].read_text().startswith("### ❌ auditor verdict")
    assert outs[4].read_text().startswith("auditor ") and "\033[" not in outs[4].read_text()
    # one -o with --format: the format wins; an unknown suffix needs --format; never overwrite
    r = run("render", files["PASS"], "-o", tmp / "summary.out", "--format", "markdown")
    assert r.returncode == 0 and (tmp / "summary.out").read_text().startswith("### ✅")
    r = run("render", files["PASS"], "-o", tmp / "a.out", "-o", tmp / "b.html")
    assert r.returncode == 2 and "suffix" in r.stderr and not (tmp / "b.html").exists()
    r = run("render", files["PASS"], "-o", outs[0])
    assert r.returncode == 2 and "exists" in r.stderr
    r = run("render", tmp / "missing.json")
    assert r.returncode == 2 and r.stderr.startswith("error: ")


def test_colour_only_on_a_terminal_and_never_with_no_color(reports):
    from auditor.cli import _color

    class Tty:
        def isatty(self):
            return True

    env = dict(os.environ)
    try:
        os.environ.pop("NO_COLOR", None)
        os.environ["TERM"] = "xterm"
        assert _color(Tty())
        os.environ["NO_COLOR"] = "1"
        assert not _color(Tty())
    finally:
        os.environ.clear()
        os.environ.update(env)
    r = run("render", reports[1]["FAIL"])  # a pipe: no colour
    assert "\033[" not in r.stdout


def test_internal_error_is_exit_3_and_one_line(reports):
    code = ("import sys; import auditor.report.core as r\n"
            "def boom(*a, **k): raise RuntimeError('kaput')\n"
            "r.Report.load = classmethod(boom)\n"
            "import auditor.cli as c; sys.argv = ['auditor', 'render', sys.argv[1]]; c.main()")
    r = subprocess.run([sys.executable, "-c", code, str(reports[1]["PASS"])], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 3
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("internal error: RuntimeError: kaput")


def test_ctrl_c_is_exit_130(tmp_path):
    sc = tmp_path / "long.yaml"
    sc.write_text("name: long\ndata: {count: 16}\nenergy_attacks:\n  - {search: whitebox, count: 16, params: {iterations: 5000}}\n")
    # the child starts with SIGINT's default action even when this test runs in a background job
    # (which a shell starts with SIGINT ignored, a disposition Python then keeps)
    p = subprocess.Popen(CLI + ["audit", "models/plain_cnn.onnx", "--hw", "hwprofiles/cnvlutin.yaml", "--scenario", str(sc),
                                "-v"], cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        for line in p.stderr:  # -v: the clean evaluation is done, the long search is running
            if "cnvlutin/clean/0:" in line:
                break
        time.sleep(1.0)
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err


def test_budget_cut_short_is_exit_4_and_junit_error(tmp_path):
    sc = tmp_path / "b.yaml"
    sc.write_text("name: b\ndata: {count: 8}\nenergy_attacks:\n  - {search: whitebox, count: 4, params: {iterations: 50}}\n"
                  "checks:\n  max_latency_increase: 100.0\n  min_clean_accuracy: 0.5\n")
    r = run("audit", "models/plain_cnn.onnx", "--hw", "hwprofiles/dense.yaml", "--scenario", sc, "--max-seconds", "0",
            "-o", tmp_path / "r.xml", "-o", tmp_path / "r.json", "-q")
    assert r.returncode == 4, r.stderr
    assert r.stderr == ""  # -q
    xml = (tmp_path / "r.xml").read_text()
    assert re.search(r'<testcase [^>]*name="max_latency_increase"[^>]*>\s*<error message="not decided', xml)
    d = json.loads((tmp_path / "r.json").read_text())
    assert d["verdict"] == "INCOMPLETE"
    env = d["environment"]
    assert env["python"] and env["packages"]["onnxruntime"] and env["packages"]["numba"] and env["cpu_count"]
    assert list(d)[:4] == ["schema_version", "tool", "seed", "environment"]


def test_list_commands():
    r = run("list", "attacks")
    assert r.returncode == 0
    assert "pgd:" in r.stdout and "Madry et al., 2018" in r.stdout and "steps (int, default 40)" in r.stdout
    r = run("list", "searches", "whitebox")
    assert r.returncode == 0 and "Krithivasan" in r.stdout and "default" in r.stdout
    for what in ("defences", "cost-models"):
        r = run("list", what, "--format", "json")
        assert r.returncode == 0 and all(it["params"] for it in json.loads(r.stdout))
    r = run("list", "attacks", "nosuch")
    assert r.returncode == 2 and "unknown attack 'nosuch'" in r.stderr
    # the same parameters typed in the JSON Schema (editor completion)
    s = json.loads(run("schema", "scenario").stdout)
    rules = s["properties"]["robustness"]["anyOf"][0]["properties"]["attacks"]["items"]["allOf"]
    pgd = next(r["then"]["properties"]["params"] for r in rules if r["if"]["properties"]["attack"]["const"] == "pgd")
    assert pgd["properties"]["steps"] == {"type": "integer", "description": pgd["properties"]["steps"]["description"],
                                          "default": 40, "minimum": 1, "maximum": 1_000_000}  # the bounds validate checks
    assert pgd["additionalProperties"] is False


def test_init_from_model_measures_thresholds(tmp_path):
    out = tmp_path / "starter.yaml"
    r = run("init", out, "--from-model", "models/plain_cnn.onnx", "--hw", "hwprofiles/cnvlutin.yaml", "--count", "16")
    assert r.returncode == 0, r.stderr
    text = out.read_text()
    measured = float(re.search(r"worst-case latency ([0-9.e+-]+) ms", text).group(1))
    thr = float(re.search(r"worst_case_latency_ms: ([0-9.e+-]+)", text).group(1))
    assert 1.2 * measured <= thr <= 1.2 * measured * 1.01
    assert run("validate", out).returncode == 0
    r = run("audit", "models/plain_cnn.onnx", "--hw", "hwprofiles/cnvlutin.yaml", "--scenario", out, "-q")
    assert r.returncode == 0, r.stdout[-2000:]
    assert run("init", out, "--hw", "hwprofiles/cnvlutin.yaml").returncode == 2


def test_saved_adversarial_examples_verified_independently(tmp_path):
    import onnxruntime as ort

    sc = tmp_path / "rob.yaml"
    sc.write_text("name: rob\ndata: {count: 8}\nrobustness:\n  count: 6\n  attacks:\n"
                  "    - {attack: fgsm, norm: linf, epsilons: [0.3]}\n")
    import auditor

    rep = auditor.audit("models/plain_cnn.onnx", "hwprofiles/dense.yaml", str(sc), save_dir=str(tmp_path / "ev"))
    res = rep.data["profiles"][0]["robustness"]["attacks"][0]["results"][0]
    exs = res["examples"]
    assert 1 <= len(exs) <= 3 and res["n_success"] >= len(exs)
    sess = ort.InferenceSession(str(ROOT / "models/plain_cnn.onnx"), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    for ex in exs:
        clean = np.load(ex["files"]["clean"][0])
        adv = np.load(ex["files"]["adversarial"][0])
        diff = np.load(ex["files"]["difference"][0])
        assert np.array_equal(diff, adv - clean) and np.abs(diff).max() <= 0.3 + 1e-6
        pred = int(sess.run(None, {name: adv[None]})[0].argmax())
        assert pred == ex["prediction"] != ex["label"]
        assert int(sess.run(None, {name: clean[None]})[0].argmax()) == ex["label"]
        for kind in ("clean", "adversarial", "difference"):
            assert Path(ex["files"][kind][1]).read_bytes()[:4] == b"\x89PNG"
    assert [e["l2"] for e in exs] == sorted(e["l2"] for e in exs)  # the most convincing first


def _step_script(workflow: Path, step: str) -> str:
    import yaml

    wf = yaml.safe_load(workflow.read_text())
    steps = next(iter(wf["jobs"].values()))["steps"]
    return next(s["run"] for s in steps if s.get("name") == step)


def test_ci_example_end_to_end(tmp_path):
    """The Audit step of examples/github-actions-audit.yml, verbatim: on main (no baseline) it
    makes report.json, kept as the baseline; on a pull request it compares against it."""
    wf = ROOT / "examples/github-actions-audit.yml"
    script = _step_script(wf, "Audit")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    shim = bindir / "auditor"
    shim.write_text(f'#!/bin/sh\nPYTHONPATH="{ROOT}" exec "{sys.executable}" -m auditor.cli "$@"\n')
    shim.chmod(0o755)
    sc = tmp_path / "ci.yaml"
    sc.write_text("name: ci\ndata: {count: 12}\nenergy_attacks:\n  - {search: uniform, count: 4}\n"
                  "checks:\n  max_latency_increase: 2.0\n  min_clean_accuracy: 0.8\n"
                  "regression: {max_latency_growth: 0.1, max_accuracy_drop: 0.01}\n")
    for d in ("models", "hwprofiles"):
        (tmp_path / d).symlink_to(ROOT / d)

    def step(workdir: Path):
        out = workdir / "gh_output"
        env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", "GITHUB_OUTPUT": str(out),
               "MODEL": "models/plain_cnn.onnx", "HW": "hwprofiles/cnvlutin.yaml", "SCENARIO": str(sc)}
        r = subprocess.run(["bash", "-e", "-c", script], cwd=workdir, env=env, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        return int(out.read_text().split("rc=")[1])

    main = tmp_path / "main"
    main.mkdir()
    for d in ("models", "hwprofiles"):
        (main / d).symlink_to(ROOT / d)
    assert step(main) == 0
    for f in ("report.json", "audit.xml", "audit.md", "audit.html"):
        assert (main / f).is_file(), f
    base = json.loads((main / "report.json").read_text())
    assert "baseline" not in base
    pr = tmp_path / "pr"
    (pr / "baseline").mkdir(parents=True)
    for d in ("models", "hwprofiles"):
        (pr / d).symlink_to(ROOT / d)
    (pr / "baseline/report.json").write_text((main / "report.json").read_text())  # the artifact of main
    assert step(pr) == 0
    rep = json.loads((pr / "report.json").read_text())
    assert rep["baseline"]["path"] == "baseline/report.json"
    names = {c["name"] for c in rep["checks"]}
    assert {"regression.max_latency_growth", "regression.max_accuracy_drop"} <= names
    md = (pr / "audit.md").read_text()
    assert md.startswith("### ✅ auditor verdict: **PASS**") and "### auditor diff: PASS → PASS" in md


def test_validate_imports_no_heavy_library():
    """`auditor validate` checks a scenario with lazy imports: no onnx, onnxruntime, numba, scipy or
    matplotlib (measured with python -X importtime; their import alone took seconds).  (A hardware
    profile still imports its cost model, whose numba kernels are defined at import.)"""
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "auditor.cli", "validate", "scenarios/default.yaml",
                        "scenarios/robustness.yaml"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    mods = {ln.rsplit("|", 1)[1].strip() for ln in r.stderr.splitlines() if ln.startswith("import time:")}
    heavy = {m for m in mods if m.split(".")[0] in ("onnx", "onnxruntime", "numba", "scipy", "matplotlib", "torch")}
    assert not heavy, sorted(heavy)[:10]


def test_near_chance_warning_on_a_real_audit(tmp_path):
    """bn_resnet expects (x-0.1)/0.25; run without it, it is near chance: the report says so."""
    sc = tmp_path / "raw.yaml"
    sc.write_text("name: raw\ndata: {count: 32}\n")
    r = run("audit", "models/bn_resnet.onnx", "--hw", "hwprofiles/dense.yaml", "--scenario", sc, "-o", tmp_path / "r.json")
    assert r.returncode == 0, r.stderr
    d = json.loads((tmp_path / "r.json").read_text())
    acc = d["profiles"][0]["clean"]["accuracy"]
    codes = [w["code"] for w in d["warnings"]]
    assert acc < 0.2 and "clean_accuracy_near_chance" in codes, (acc, codes)  # 3.1% on these 32 inputs
    assert "warning: dense: clean accuracy" in r.stderr
