"""CLI misuse and the files the tool writes: no overwrite without --force (reports, saved inputs,
`init`), never through a symlink, never outside the folder given; usage mistakes are click's exit
2; a representative subset of every input class runs in real interpreters, where what native code
writes to the stderr descriptor counts."""

import os
import sys

import numpy as np
import pytest

from badinput_harness import (DENSE, MODEL, ROOT, assert_one_line_error, assert_usage_error, base_files, check,
                              run_batch, run_cli, run_subprocess)

REPORT = None


@pytest.fixture(scope="module")
def report_file(tmp_path_factory):
    """A real JSON report to render."""
    d = tmp_path_factory.mktemp("rep")
    prof, sc = base_files(d)
    out = d / "report.json"
    o = run_cli(["audit", MODEL, "--hw", prof, "--scenario", sc, "--format", "json", "-o", out], d, outputs=[out])
    assert o.code == 0, o.stderr
    return out


# --- outputs --------------------------------------------------------------------------------------
def test_output_exists(report_file, tmp_path):
    out = tmp_path / "r.txt"
    out.write_text("mine")
    check(["render", report_file, "-o", out], tmp_path, "output file exists; pass --force")
    assert out.read_text() == "mine"


def test_output_dangling_symlink(report_file, tmp_path):
    target = tmp_path / "elsewhere" / "target.txt"
    target.parent.mkdir()
    out = tmp_path / "r.txt"
    out.symlink_to(target)
    check(["render", report_file, "-o", out], tmp_path, "output file is a symlink; pass --force")
    assert not target.exists()
    o = run_cli(["render", report_file, "-o", out, "--force"], tmp_path, outputs=[out])
    assert o.code == 0, o.stderr
    assert not target.exists() and not out.is_symlink() and "verdict" in out.read_text()  # the link is replaced


def test_output_symlink_to_a_file(report_file, tmp_path):
    target = tmp_path / "precious.txt"
    target.write_text("keep")
    out = tmp_path / "r.txt"
    out.symlink_to(target)
    check(["render", report_file, "-o", out], tmp_path, "is a symlink")
    assert target.read_text() == "keep"


def test_output_parent_is_a_file(report_file, tmp_path):
    (tmp_path / "file.txt").write_text("x")
    check(["render", report_file, "-o", tmp_path / "file.txt" / "r.txt"], tmp_path, "is not a folder")


def test_output_folder_missing(report_file, tmp_path):
    check(["render", report_file, "-o", tmp_path / "nope" / "r.txt"], tmp_path, "folder of the output file does not exist")


def test_output_is_a_folder(report_file, tmp_path):
    (tmp_path / "d").mkdir()
    assert_usage_error(run_cli(["render", report_file, "-o", tmp_path / "d"], tmp_path), "is a directory")


def test_audit_output_checked_before_work(tmp_path):
    prof, sc = base_files(tmp_path)
    (tmp_path / "file.txt").write_text("x")
    check(["audit", MODEL, "--hw", prof, "--scenario", sc, "-o", tmp_path / "file.txt" / "r.json"], tmp_path,
          "is not a folder")
    out = tmp_path / "exists.json"
    out.write_text("{}")
    check(["audit", MODEL, "--hw", prof, "--scenario", sc, "-o", out], tmp_path, "output file exists")


def test_init_never_overwrites(tmp_path):
    p = tmp_path / "sc.yaml"
    p.write_text("mine")
    check(["init", p], tmp_path, "output file exists")
    link = tmp_path / "link.yaml"
    link.symlink_to(tmp_path / "gone.yaml")
    check(["init", link], tmp_path, "is a symlink")
    (tmp_path / "f").write_text("x")
    check(["init", tmp_path / "f" / "sc.yaml"], tmp_path, "is not a folder")
    assert p.read_text() == "mine"


def _uniform_scenario(tmp):
    sc = tmp / "sc.yaml"
    sc.write_text("name: t\ndata: {count: 4}\nenergy_attacks:\n  - {search: uniform, count: 2, params: {grid: [0.5], "
                  "grid_samples: 1}}\n")
    return sc


def test_save_inputs_never_overwrite(tmp_path):
    prof, _ = base_files(tmp_path)
    sc = _uniform_scenario(tmp_path)
    save = tmp_path / "worst"
    save.mkdir()
    (save / "dense-0-uniform-worst.png").write_bytes(b"mine")
    check(["audit", MODEL, "--hw", prof, "--scenario", sc, "--save-inputs", save], tmp_path,
          "dense-0-uniform-worst.png: saved input exists; pass --force")
    assert (save / "dense-0-uniform-worst.png").read_bytes() == b"mine"
    (tmp_path / "file").write_text("x")
    assert_usage_error(run_cli(["audit", MODEL, "--hw", prof, "--scenario", sc, "--save-inputs", tmp_path / "file"],
                               tmp_path), "is a file")


def test_save_inputs_stay_in_their_folder(tmp_path):
    """A profile named like a path writes its saved inputs inside --save-inputs, with --force over
    the old ones."""
    hw = tmp_path / "evil.yaml"
    hw.write_text("name: ../../../escaped\ncost_model: cnvlutin\n")
    sc = _uniform_scenario(tmp_path)
    save = tmp_path / "a" / "b" / "worst"
    o = run_cli(["audit", MODEL, "--hw", hw, "--scenario", sc, "--save-inputs", save], tmp_path, outputs=[save])
    assert o.code == 0, o.stderr
    names = sorted(p.name for p in save.iterdir())
    assert names == ["_.._.._escaped-0-uniform-worst.npy", "_.._.._escaped-0-uniform-worst.png"], names
    assert not list(tmp_path.rglob("escaped*"))[2:]  # nothing beside the two in the folder
    o = run_cli(["audit", MODEL, "--hw", hw, "--scenario", sc, "--save-inputs", save], tmp_path, outputs=[save])
    assert_one_line_error(o, "saved input exists")
    o = run_cli(["audit", MODEL, "--hw", hw, "--scenario", sc, "--save-inputs", save, "--force"], tmp_path, outputs=[save])
    assert o.code == 0, o.stderr


# --- usage mistakes ---------------------------------------------------------------------------------
USAGE = [
    (["--threads", "-1"], "--threads"), (["--seed", "-1"], "--seed"), (["--seed", str(2**64)], "--seed"),
    (["--max-seconds", "nan"], "--max-seconds"), (["--max-seconds", "-1"], "--max-seconds"),
    (["--jobs", "0"], "--jobs"), (["--format", "pdf"], "--format"), (["--threads", "many"], "--threads"),
    (["--bogus"], "--bogus"),
]


@pytest.mark.parametrize("extra,option", USAGE, ids=[" ".join(u[0]) for u in USAGE])
def test_usage_errors(tmp_path, extra, option):
    prof, sc = base_files(tmp_path)
    assert_usage_error(run_cli(["audit", MODEL, "--hw", prof, "--scenario", sc, *extra], tmp_path), option)


def test_threads_capped_at_the_cores(tmp_path, monkeypatch):
    import auditor.pipeline.run

    seen = {}

    def fake(*a, **k):
        seen.update(k)
        raise SystemExit(0)

    monkeypatch.setattr(auditor.pipeline.run, "run_audit", fake)
    prof, sc = base_files(tmp_path)
    run_cli(["audit", MODEL, "--hw", prof, "--scenario", sc, "--threads", "100000"], tmp_path)
    assert seen["threads"] == (os.cpu_count() or 1)


def test_schema_unknown_cost_model(tmp_path):
    check(["schema", "hwprofile", "--cost-model", "quantum"], tmp_path, "unknown cost model 'quantum'")


# --- a subset of every class in real interpreters ---------------------------------------------------
def _batch_cases(tmp):
    import test_badinput_data as data
    import test_badinput_model as model
    import test_badinput_yaml as yml

    prof, sc = base_files(tmp)
    cases = []
    for cid in ("python-tag", "billion-laughs", "deep-lists", "duplicate-nested", "clean-accuracy-95", "mean-3-on-gray",
                "epsilons-8-16"):
        text, where = {c[0]: c[1:] for c in yml.SCENARIOS}[cid]
        p = tmp / f"{cid}.yaml"
        p.write_text(text)
        cases.append((["audit", MODEL, "--hw", prof, "--scenario", p], where))
    for cid in ("input-int64", "output-argmax", "static-batch-2-40", "huge-intermediate", "conv-channels"):
        build, where = {c[0]: c[1:] for c in model.MODELS}[cid]
        d = tmp / cid
        d.mkdir()
        mprof, msc = model.model_files(d)
        p = d / "m.onnx"
        p.write_bytes(build().SerializeToString())
        cases.append((["audit", p, "--hw", mprof, "--scenario", msc], where))
    for cid in ("npz-bomb-header", "idx-gz-bomb", "images-bomb-pixels", "images-corrupt", "labels-negative"):
        files, section, where = {c[0]: c[1:] for c in data.CASES}[cid]
        d = tmp / cid
        d.mkdir()
        files(d)
        p = d / "sc.yaml"
        p.write_text(f"name: t\ndata: {section}\n")
        cases.append((["audit", MODEL, "--hw", prof, "--scenario", p], where))
    bad = tmp / "bad.json"
    bad.write_text('{"schema_version": 1, "profiles": [{"name": 3}]}')
    cases.append((["render", bad], "not an auditor report: verdict is missing"))
    cases.append((["render", bad, "--format", "html"], "not an auditor report"))
    (tmp / "file").write_text("x")
    cases.append((["init", tmp / "file" / "sc.yaml"], "is not a folder"))
    return cases


def test_representative_cases_in_a_fresh_interpreter(tmp_path):
    cases = _batch_cases(tmp_path)
    assert len(cases) >= 20
    (tmp_path / "batch").mkdir()
    outs = run_batch([c[0] for c in cases], tmp_path / "batch", tmp_path)
    for (args, where), o in zip(cases, outs):
        assert_one_line_error(o, where)


@pytest.mark.parametrize("kind", ["yaml", "usage"])
def test_real_subprocess(tmp_path, kind):
    prof, sc = base_files(tmp_path)
    if kind == "yaml":
        sc.write_text("name: !!python/object/apply:os.system ['touch pwned']\n")
        check(["audit", MODEL, "--hw", prof, "--scenario", sc], tmp_path, "not supported", subprocess_run=True)
        assert not (ROOT / "pwned").exists()
    elif kind == "model":
        p = tmp_path / "m.onnx"
        p.write_bytes(b"\x08\x01garbage" * 50)
        check(["audit", p, "--hw", prof, "--scenario", sc], tmp_path, "not a valid ONNX model", subprocess_run=True)
    else:
        assert_usage_error(run_subprocess(["audit", MODEL, "--hw", prof, "--scenario", sc, "--threads", "-1"], tmp_path),
                           "--threads")
