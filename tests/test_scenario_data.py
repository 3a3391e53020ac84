"""Scenario YAML validation and data sources: every bad input is one line naming file and place."""

import gzip
import struct

import numpy as np
import pytest

from auditor.data import DataSpec, load_data
from auditor.errors import AuditorError
from auditor.model.rewrite.preprocess import Preprocessing, prepend
from auditor.scenario import load_scenario


def write(tmp_path, text, name="s.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_default_scenario_loads():
    sc = load_scenario("scenarios/default.yaml")
    assert sc.data.source == "digits" and sc.checks.min_clean_accuracy is not None


def test_evasion_entries_one_spelling_everywhere(tmp_path):
    """`attack:` is the evasion entry's key under robustness and approx alike; `name:` still loads."""
    from auditor import schema
    from auditor.scenario import attack_entries

    text = ("name: x\nrobustness:\n  attacks: [{attack: pgd, epsilons: [0.1]}, {name: fgsm}]\n"
            "approx:\n  transfer: [{name: pgd, params: {steps: 3}}, {attack: deepfool}]\n  query: [{attack: square}]\n")
    sc = load_scenario(write(tmp_path, text))
    assert [a.attack for a in sc.robustness.attacks] == ["pgd", "fgsm"]
    assert [a.attack for a in sc.approx.transfer] == ["pgd", "deepfool"] and sc.approx.whitebox is None
    assert attack_entries(sc.approx.transfer)[0] == {"name": "pgd", "params": {"steps": 3}, "norm": None,
                                                      "epsilons": None, "targeted": False}
    assert attack_entries(None) is None
    assert schema.aliases_of(type(sc.approx.query[0])) == {"name": "attack"}
    sc = load_scenario("scenarios/approx.yaml")
    assert [a.attack for a in sc.approx.transfer] == ["fgsm", "pgd", "deepfool"]


def test_json_schema_takes_either_spelling_once():
    jsonschema = pytest.importorskip("jsonschema")
    import yaml

    from auditor.docs import schema_for

    s = schema_for("scenario")
    d = yaml.safe_load(open("scenarios/approx.yaml"))
    jsonschema.validate(d, s)
    d["approx"]["transfer"] = [{"name": "pgd", "params": {"steps": 3}}]
    jsonschema.validate(d, s)
    for bad in ({"name": "fgsm", "params": {"stepz": 1}}, {"name": "fgsm", "attack": "fgsm"}, {"params": {}}):
        d["approx"]["transfer"] = [bad]
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(d, s)


@pytest.mark.parametrize("text,pattern", [
    ("name: x\ndata:\n  sorce: digits\n", r"s\.yaml:3:3: data\.sorce: unknown key \(did you mean 'source'\?\)"),
    ("name: x\nbatch_size: many\n", r"s\.yaml:2:13: batch_size: expected an integer, got 'many'"),
    ("name: x\nchecks:\n  max_density: high\n", r"s\.yaml:3:16: checks\.max_density: expected a number"),
    ("description: no name\n", r"missing required key 'name'"),
    ("name: x\npreprocessing:\n  layout: NWHC\n", r"preprocessing\.layout: expected one of 'NCHW' \| 'NHWC'"),
    ("name: x\npreprocessing:\n  range: [1, 0]\n", r"s\.yaml:3:3: preprocessing: range must be"),
    ("name: [unclosed\n", r"s\.yaml:2:1: invalid YAML"),
    ("name: x\ndata:\n  source: npy\n", r"data: data source 'npy' needs a 'path'"),
])
def test_bad_scenarios(tmp_path, text, pattern):
    with pytest.raises(AuditorError, match=pattern) as e:
        load_scenario(write(tmp_path, text))
    assert "\n" not in str(e.value)


def test_npy_npz_and_bad_data(tmp_path):
    x = np.random.default_rng(0).random((5, 8, 8, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np.arange(5))
    d = load_data(DataSpec(source="npy", path="x.npy", labels="y.npy", layout="NHWC"), tmp_path)
    assert d.x.shape == (5, 3, 8, 8) and list(d.y) == [0, 1, 2, 3, 4]
    np.savez(tmp_path / "d.npz", images=(x * 255).astype(np.uint8).transpose(0, 3, 1, 2), y=np.arange(5))
    d = load_data(DataSpec(source="npz", path="d.npz", x_key="images"), tmp_path)
    assert d.x.dtype == np.float32 and d.x.max() <= 1.0
    # wrong shape
    np.save(tmp_path / "flat.npy", np.zeros((5, 64), np.float32))
    with pytest.raises(AuditorError, match=r"flat\.npy: inputs have shape \(5, 64\), expected a 4-D array"):
        load_data(DataSpec(source="npy", path="flat.npy"), tmp_path)
    # NaNs
    bad = np.zeros((4, 1, 8, 8), np.float32)
    bad[2, 0, 3, 3] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(AuditorError, match=r"nan\.npy: inputs contain NaN or infinite values \(first at input 2\)"):
        load_data(DataSpec(source="npy", path="nan.npy"), tmp_path)
    # out of range floats, labels of the wrong length, missing file
    np.save(tmp_path / "big.npy", np.full((2, 1, 4, 4), 3.0, np.float32))
    with pytest.raises(AuditorError, match="must lie in the range"):
        load_data(DataSpec(source="npy", path="big.npy"), tmp_path)
    np.save(tmp_path / "y3.npy", np.arange(3))
    with pytest.raises(AuditorError, match=r"labels have shape \(3,\), expected \(5,\)"):
        load_data(DataSpec(source="npy", path="x.npy", labels="y3.npy", layout="NHWC"), tmp_path)
    with pytest.raises(AuditorError, match="data file not found"):
        load_data(DataSpec(source="npy", path="nope.npy"), tmp_path)


def test_idx_and_images(tmp_path):
    imgs = np.random.default_rng(0).integers(0, 256, (3, 6, 6), dtype=np.uint8)
    head = b"\x00\x00\x08\x03" + struct.pack(">III", 3, 6, 6)
    (tmp_path / "img.idx.gz").write_bytes(gzip.compress(head + imgs.tobytes()))
    (tmp_path / "lab.idx").write_bytes(b"\x00\x00\x08\x01" + struct.pack(">I", 3) + bytes([4, 5, 6]))
    d = load_data(DataSpec(source="idx", path="img.idx.gz", labels="lab.idx"), tmp_path)
    np.testing.assert_allclose(d.x[:, 0], imgs / 255.0, rtol=1e-6)
    assert list(d.y) == [4, 5, 6]
    (tmp_path / "short.idx").write_bytes(head + imgs.tobytes()[:-5])
    with pytest.raises(AuditorError, match="truncated"):
        load_data(DataSpec(source="idx", path="short.idx"), tmp_path)
    from PIL import Image

    for lab in (0, 1):
        (tmp_path / "imgs" / str(lab)).mkdir(parents=True)
        Image.fromarray(imgs[lab]).save(tmp_path / "imgs" / str(lab) / "a.png")
    d = load_data(DataSpec(source="images", path="imgs"), tmp_path)
    assert d.x.shape == (2, 1, 6, 6) and list(d.y) == [0, 1]
    np.testing.assert_allclose(d.x[1, 0], imgs[1] / 255.0, rtol=1e-6)


def test_count_and_shuffle_are_seeded():
    a = load_data(DataSpec(count=10, shuffle=True), ".", seed=3)
    b = load_data(DataSpec(count=10, shuffle=True), ".", seed=3)
    c = load_data(DataSpec(count=10, shuffle=True), ".", seed=4)
    np.testing.assert_array_equal(a.x, b.x)
    assert not np.array_equal(a.y, c.y) or not np.array_equal(a.x, c.x)


def test_preprocessing_prepended_matches_numpy():
    import onnxruntime as ort
    from builders import make_model
    from onnx import helper

    pre = Preprocessing(scale=255.0, mean=[10.0, 20.0, 30.0], std=[2.0, 4.0, 8.0], layout="NHWC")
    m = make_model([helper.make_node("Identity", ["x"], ["y"])], {}, in_shape=("N", 5, 5, 3))
    p = prepend(m, pre)
    x = np.random.default_rng(0).random((2, 3, 5, 5)).astype(np.float32)
    got = ort.InferenceSession(p.SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, pre.apply(x), rtol=1e-6)
    assert got.shape == (2, 5, 5, 3)


def test_validate_warns_of_a_range_much_wider_than_the_data(tmp_path):
    """`range: [0, 255]` over float data in [0, 1]: valid (exit 0), with one located warning."""
    from click.testing import CliRunner

    from auditor.cli import main
    from auditor.validate import validate_file

    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((4, 1, 8, 8)).astype(np.float32))
    sc = write(tmp_path, "name: t\ndata: {source: npy, path: x.npy}\npreprocessing:\n  range: [0, 255]\n")
    warnings = []
    assert validate_file(sc, warn=warnings.append) == "scenario"
    assert len(warnings) == 1 and warnings[0].startswith(f"{sc}:4:10: warning: preprocessing.range is [0, 255]")
    assert "(is the range [0, 1]?)" in warnings[0]
    r = CliRunner().invoke(main, ["validate", str(sc)])
    assert r.exit_code == 0 and "valid scenario" in r.output and "warning: preprocessing.range" in r.output
    # the same data under its own range, and integer pixels (scaled to any range): no warning
    for text in ("name: t\ndata: {source: npy, path: x.npy}\n",
                 "name: t\ndata: {source: digits, count: 8}\npreprocessing: {range: [0, 255]}\n"):
        warnings = []
        validate_file(write(tmp_path, text), warn=warnings.append)
        assert warnings == []
