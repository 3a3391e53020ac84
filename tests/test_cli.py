"""The CLI end to end: exit codes 0/1/2, one-line errors, --output safety, JSON report contents."""

import json
import subprocess
import sys

import onnx
import pytest

from builders import tiny_cnn

AUDIT = [sys.executable, "-m", "auditor.cli"]


def run(*args, cwd=None):
    return subprocess.run(AUDIT + [str(a) for a in args], capture_output=True, text=True, cwd=cwd)


@pytest.fixture()
def files(tmp_path):
    prof = tmp_path / "dense.yaml"
    prof.write_text("name: dense\ncost_model: dense\nparams: {}\n")
    sc = tmp_path / "sc.yaml"
    sc.write_text("name: t\ndata:\n  count: 16\nchecks:\n  min_clean_accuracy: 0.9\n  max_density: 0.95\n")
    return tmp_path, prof, sc


def one_line_error(r, pattern):
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "Traceback" not in r.stderr
    assert pattern in lines[0], lines[0]


def test_audit_pass_and_fail_exit_codes(files):
    tmp, prof, sc = files
    r = run("audit", "models/plain_cnn.onnx", "--hw", prof, "--scenario", sc)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "verdict: PASS" in r.stdout
    strict = tmp / "strict.yaml"
    strict.write_text("name: t\ndata:\n  count: 16\nchecks:\n  max_density: 0.01\n")
    r = run("audit", "models/plain_cnn.onnx", "--hw", prof, "--scenario", strict)
    assert r.returncode == 1 and "FAIL" in r.stdout and "verdict: FAIL" in r.stdout


def test_text_report_fits_80_columns(files):
    tmp, prof, sc = files
    r = run("audit", "models/plain_cnn.onnx", "--hw", prof, "--scenario", sc)
    too_long = [ln for ln in r.stdout.splitlines() if len(ln) > 80]
    assert not too_long, too_long


def test_json_report_and_output_safety(files):
    tmp, prof, sc = files
    out = tmp / "report.json"
    r = run("audit", "models/plain_cnn.onnx", "--hw", prof, "--scenario", sc, "--format", "json", "-o", out, "--seed", 7)
    assert r.returncode == 0, r.stderr
    rep = json.loads(out.read_text())
    assert rep["seed"] == 7 and rep["verdict"] == "PASS" and rep["tool"]["version"]
    assert len(rep["model"]["sha256"]) == 64 and rep["scenario"]["name"] == "t"
    assert rep["profiles"][0]["profile"]["cost_model"] == "dense"
    assert {c["name"] for c in rep["checks"]} == {"min_clean_accuracy", "max_density"}
    for c in rep["checks"]:
        assert {"measured", "threshold", "passed"} <= set(c)
    before = out.read_text()
    r = run("audit", "models/plain_cnn.onnx", "--hw", prof, "--scenario", sc, "-o", out)
    one_line_error(r, "output file exists")
    assert out.read_text() == before  # the user's file is untouched
    r = run("audit", "models/plain_cnn.onnx", "--hw", prof, "--scenario", sc, "-o", out, "--force")
    assert r.returncode == 0 and out.read_text() != before


def test_bad_inputs_exit_2(files, tmp_path):
    tmp, prof, sc = files
    garbage = tmp / "garbage.onnx"
    garbage.write_bytes(b"\x08\x01garbage" * 50)
    one_line_error(run("audit", garbage, "--hw", prof, "--scenario", sc), "garbage.onnx: not a valid ONNX model")
    m, _ = tiny_cnn()
    m.graph.node[1].op_type = "Swish2"
    onnx.save(m, tmp / "unknown.onnx")
    one_line_error(run("inspect", tmp / "unknown.onnx"), "unknown op 'Swish2'")
    typo = tmp / "typo.yaml"
    typo.write_text("name: dense\ncost_model: dense\nparams:\n  clock_hzz: 1.0e9\n")
    one_line_error(run("audit", "models/plain_cnn.onnx", "--hw", typo, "--scenario", sc), "typo.yaml:4:3: params.clock_hzz: unknown key")
    wrong = tmp / "wrong.yaml"
    wrong.write_text("name: x\ndata:\n  count: lots\n")
    one_line_error(run("validate", wrong), "wrong.yaml:3:10: data.count: expected an integer")
    one_line_error(run("audit", tmp / "missing.onnx", "--hw", prof, "--scenario", sc), "model file not found")
    r = run("audit", "models/plain_cnn.onnx", "--scenario", sc)  # usage error: click's exit 2
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_wrong_data_shape_for_model(files):
    import numpy as np

    tmp, prof, _ = files
    np.save(tmp / "x.npy", np.zeros((4, 1, 20, 20), np.float32))
    sc = tmp / "bad.yaml"
    sc.write_text("name: t\ndata:\n  source: npy\n  path: x.npy\n")
    r = run("audit", "models/plain_cnn.onnx", "--hw", prof, "--scenario", sc)
    one_line_error(r, "shape")


def test_inspect_and_validate_bundled(tmp_path):
    r = run("inspect", "models/bn_resnet.onnx")
    assert r.returncode == 0 and "BatchNormalization" in r.stdout and "compute" in r.stdout
    r = run("inspect", "models/lenet5.onnx", "--format", "json")
    info = json.loads(r.stdout)
    assert sum(l["role"] == "compute" for l in info["layers"]) == 5
    for f in ("scenarios/default.yaml", "scenarios/digits_bn_resnet.yaml"):
        r = run("validate", f)
        assert r.returncode == 0 and "valid scenario" in r.stdout, r.stderr
    for cmd in ([], ["audit"], ["inspect"], ["validate"]):
        assert run(*cmd, "--help").returncode == 0


def test_inspect_awkward_exported_graph(tmp_path):
    from builders import zoo_model

    onnx.save(zoo_model(), tmp_path / "zoo.onnx")
    r = run("inspect", tmp_path / "zoo.onnx", "--format", "json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    comp = [l for l in info["layers"] if l["role"] == "compute"]
    assert [l["op"] for l in comp] == ["Conv", "Conv", "Gemm"] and comp[2]["feeds_from"] == "a2"
    assert info["differentiable"] is True
