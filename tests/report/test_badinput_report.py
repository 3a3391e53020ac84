"""Malformed and hostile JSON reports given to `render`, `diff` and `audit --baseline`: exit 2 with
"not an auditor report: <what is wrong>" naming the file, never a KeyError/TypeError; HTML embeds
only files inside the report's folder."""

import copy
import json
import os

import pytest

from badinput_harness import MODEL, base_files, check, run_cli, sparse_file

import auditor
from auditor.errors import AuditorError
from auditor.report.core import Report
from auditor.report.records import REPORT_SPEC, _Maybe, _Opt


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """A real report (energy search, evasion attack, checks) and its folder of saved inputs."""
    d = tmp_path_factory.mktemp("real")
    sc = d / "sc.yaml"
    sc.write_text("name: real\ndata: {count: 4}\nenergy_attacks:\n  - {search: uniform, count: 2}\n"
                  "robustness:\n  count: 4\n  attacks: [{attack: fgsm, norm: linf, epsilons: [0.1]}]\n"
                  "checks:\n  min_clean_accuracy: 0.5\n  min_robust_accuracy: [{attack: fgsm, epsilon: 0.1, threshold: 0.0}]\n")
    rep = auditor.audit(str(MODEL), str(auditor_root() / "hwprofiles" / "cnvlutin.yaml"), str(sc), save_dir=str(d / "worst"))
    return json.loads(rep.to_json()), d


def auditor_root():
    from badinput_harness import ROOT

    return ROOT


def _write(tmp, data, name="r.json"):
    p = tmp / name
    p.write_text(data if isinstance(data, str) else json.dumps(data))
    return p


def _required_paths(spec, prefix=()):
    """Key paths the spec requires (one list element stands for all)."""
    if isinstance(spec, _Opt):
        spec = spec.spec
    if isinstance(spec, list):
        yield from _required_paths(spec[0], prefix + (0,))
        return
    if not isinstance(spec, dict):
        return
    for k, sub in spec.items():
        if isinstance(k, _Maybe):
            yield from _required_paths(sub, prefix + (k.key,))
            continue
        yield prefix + (k,)
        yield from _required_paths(sub, prefix + (k,))


def _get(d, path):
    for p in path:
        if isinstance(p, int):
            if not isinstance(d, list) or len(d) <= p:
                return None
        elif not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def _text(path):
    return "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else p) for i, p in enumerate(path))


# --- files that are not reports --------------------------------------------------------------------
NOT_REPORTS = [
    ("not-json", "this is not json", "not a JSON report"),
    ("empty", "", "not a JSON report"),
    ("truncated", '{"schema_version": 1, "profiles": [', "not a JSON report"),
    ("list", "[1, 2, 3]", "not an auditor report: the file holds a list, not a mapping"),
    ("string", '"PASS"', "not an auditor report: the file holds a string"),
    ("number", "42", "not an auditor report: the file holds an integer"),
    ("null", "null", "not an auditor report: the file holds null"),
    ("empty-object", "{}", "not an auditor report: schema_version and profiles are missing"),
    ("no-profiles", '{"schema_version": 1}', "not an auditor report: profiles is missing"),
    ("deep-1e5", "[" * 100000 + "]" * 100000, "not an auditor report"),
    ("deep-object", '{"a": ' * 5000 + "1" + "}" * 5000, "not an auditor report"),
    ("deep-50", '{"schema_version": 1, "profiles": ' + "[" * 50 + "]" * 50 + "}", "nested deeper than 40 levels"),
    ("version-2", '{"schema_version": 2, "profiles": []}', "schema_version 2 is not the version this tool reads (1)"),
    ("version-string", '{"schema_version": "1", "profiles": []}', "schema_version 1 is not the version"),
    ("version-true", '{"schema_version": true, "profiles": []}', "schema_version True is not the version"),
    ("nan-version", '{"schema_version": NaN, "profiles": []}', "schema_version nan"),
]


@pytest.mark.parametrize("text,where", [c[1:] for c in NOT_REPORTS], ids=[c[0] for c in NOT_REPORTS])
def test_not_a_report(tmp_path, text, where):
    p = _write(tmp_path, text)
    assert str(p) in check(["render", p], tmp_path, where)
    check(["diff", p, p], tmp_path, where)


def test_not_utf8(tmp_path):
    p = tmp_path / "r.json"
    p.write_bytes(b'{"schema_version": 1, "profiles": [], "\xff": 1}')
    check(["render", p], tmp_path, "not a JSON report (UnicodeDecodeError")


@pytest.mark.parametrize("make,where", [
    (lambda p: sparse_file(p, 100 << 20, b"{"), "larger than the 64 MiB"),
    (lambda p: p.symlink_to("/dev/zero"), "not a regular file"),
    (lambda p: os.mkfifo(p), "not a regular file"),
    (lambda p: None, "not found"),
], ids=["sparse-100MB", "dev-zero", "fifo", "missing"])
def test_not_a_report_file(tmp_path, make, where):
    p = tmp_path / "r.json"
    make(p)
    check(["render", p], tmp_path, where)
    check(["diff", p, p], tmp_path, where)


# --- reports with a key missing or of the wrong type -----------------------------------------------
def _mutations(report):
    out = []
    for path in _required_paths(REPORT_SPEC):
        parent = _get(report, path[:-1])
        if not isinstance(parent, dict) or path[-1] not in parent:
            continue
        out.append((f"del-{_text(path)}", path, "delete", f"{_text(path)} is missing"))
        v = parent[path[-1]]
        wrong = {str: 12345, int: "twelve", float: "x", bool: "yes", dict: [1], list: {"a": 1}}.get(type(v))
        if v is None:
            wrong = [1]
        if wrong is not None and path[-1] != "schema_version":
            out.append((f"type-{_text(path)}", path, wrong, f"{_text(path)} is "))
    return out


def _mutate(report, path, how):
    r = copy.deepcopy(report)
    parent = _get(r, path[:-1])
    if how == "delete":
        del parent[path[-1]]
    else:
        parent[path[-1]] = how
    return r


def test_every_required_key_missing_or_mistyped(real, tmp_path):
    """Every key the renderers rely on, deleted or of the wrong type: one located line (exit 2)
    for render in each format and for diff."""
    report, _ = real
    muts = _mutations(report)
    assert len(muts) > 60, len(muts)
    for name, path, how, where in muts:
        p = _write(tmp_path, _mutate(report, path, how), f"{name[:60]}.json".replace("/", "_"))
        for args in (["render", p], ["render", p, "--format", "markdown"], ["diff", p, p]):
            check(args, tmp_path, "not an auditor report: " + where)


def test_verdict_not_pass_or_fail(real, tmp_path):
    report, _ = real
    r = dict(report, verdict="MAYBE")
    p = _write(tmp_path, r)
    check(["render", p], tmp_path, "verdict is 'MAYBE', expected PASS or FAIL or INCOMPLETE")


FORMATS = ["text", "json", "junit", "markdown", "html"]


def _leaves(d, prefix=()):
    if isinstance(d, dict):
        for k, v in d.items():
            if k in ("per_input", "tensor_density", "layer_shares", "scenario", "profile", "energy_breakdown_j"):
                yield prefix + (k,)
                continue
            yield prefix + (k,)
            yield from _leaves(v, prefix + (k,))
    elif isinstance(d, list) and d:
        yield from _leaves(d[0], prefix + (0,))


def _small(d):
    """The report without its per-input distributions (kept for one of them): quick to copy."""
    if isinstance(d, dict):
        return {k: ([] if k == "per_input" and isinstance(v, list) else {} if k == "per_input" else _small(v))
                for k, v in d.items()}
    if isinstance(d, list):
        return [_small(v) for v in d[:3]]
    return d


def test_any_key_deleted_or_nulled_never_crashes_a_renderer(real):
    """Beyond the required keys: deleting or nulling any field of a real report either renders
    or is refused at load, in every format and for diff and --baseline — never a crash."""
    from auditor.pipeline.baseline import diff, regression_checks
    from auditor.pipeline.baseline import Regression

    report, _ = real
    report = _small(report)
    paths = list(_leaves(report))
    assert len(paths) > 100, len(paths)
    crashes = []
    for i, path in enumerate(paths):
        for how in ("delete", "text"):
            r = _mutate(report, path, how)
            try:
                rep = Report.checked(r, "mutated")
            except AuditorError:
                continue
            # HTML (matplotlib plots, every section guarded) on every 10th path only: it is slow
            for fmt in FORMATS if i % 40 == 0 and how == "delete" else ("text", "junit", "markdown"):
                try:
                    rep.render(fmt)
                except Exception as e:  # noqa: BLE001 - the point of the test
                    crashes.append((_text(path), how, fmt, repr(e)[:100]))
            try:
                diff(report, r)
                regression_checks(Regression(max_latency_growth=0.1, max_accuracy_drop=0.1,
                                             max_robust_accuracy_drop=0.1), r, report)
            except AuditorError:
                pass
            except Exception as e:  # noqa: BLE001
                crashes.append((_text(path), how, "diff/baseline", repr(e)[:100]))
    assert not crashes, "\n".join(map(str, crashes))


def test_bad_baseline(real, tmp_path):
    report, _ = real
    prof, sc = base_files(tmp_path)
    cases = [(_mutate(report, ("profiles", 0, "summary"), "delete"), "profiles[0].summary is missing"),
             (dict(report, schema_version=7), "schema_version 7"), ([1, 2], "holds a list")]
    for i, (data, where) in enumerate(cases):
        b = _write(tmp_path, data, f"b{i}.json")
        line = check(["audit", MODEL, "--hw", prof, "--scenario", sc, "--baseline", b], tmp_path, where)
        assert str(b) in line


# --- HTML embeds only files inside the report's folder ---------------------------------------------
def _png(path):
    from PIL import Image

    Image.new("L", (4, 4), 255).save(path)
    return path


@pytest.mark.parametrize("name,inside", [
    ("../secret.png", False), ("ABS", False), ("link.png", False), ("sub/../../secret.png", False),
    ("w.png", True), ("sub/w.png", True), ("nul\0.png", False)])
def test_html_embeds_only_files_in_the_report_folder(tmp_path, name, inside):
    from auditor.report.html import render_html

    folder = tmp_path / "report"
    (folder / "sub").mkdir(parents=True)
    secret = _png(tmp_path / "secret.png")
    _png(folder / "w.png")
    _png(folder / "sub" / "w.png")
    (folder / "link.png").symlink_to(secret)
    d = {"verdict": "PASS", "checks": [], "profiles": [{"name": "p", "attacks": [
        {"search": "uniform", "worst_input": {"index": 0, "files": [str(secret) if name == "ABS" else name]}}]}]}
    assert ('class="input"' in render_html(d, base_dir=folder)) == inside
    assert 'class="input"' not in render_html(d)  # no folder: nothing embedded


def test_render_html_of_a_crafted_report(real, tmp_path):
    report, _ = real
    secret = _png(tmp_path / "secret.png")
    r = _small(report)
    attack = next(a for a in r["profiles"][0]["attacks"] if "worst_input" in a)
    attack["worst_input"]["files"] = [str(secret), "../secret.png"]
    folder = tmp_path / "report"
    folder.mkdir()
    p = _write(folder, r)
    out = tmp_path / "r.html"
    o = run_cli(["render", p, "--format", "html", "-o", out], tmp_path, outputs=[out])
    assert o.code in (0, 1), o.stderr
    assert 'class="input"' not in out.read_text()


def test_a_real_report_round_trips_through_its_records(real):
    report, _ = real
    text = json.dumps(report, indent=2)
    assert json.dumps(Report.from_dict(json.loads(text)).to_dict(), indent=2) == text
