"""The audit's units of work in one process, on a local process pool and on a Ray cluster.

The same model, profiles, scenario and seed give the same report (apart from timing fields)
whatever runs the units and however many workers there are; a task whose worker dies is retried;
bad input inside a task is exit 2 with its message; --max-seconds cuts units short.  The Ray
tests start one local cluster (2 CPUs) for the module.
"""

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import auditor
from auditor.cli import main
from auditor.report.core import stable
from auditor.pipeline.units import merge, unit_seed

ROOT = Path(__file__).resolve().parents[2]
MODEL = str(ROOT / "models" / "plain_cnn.onnx")
PROFILES = [str(ROOT / "hwprofiles" / "cnvlutin.yaml"), str(ROOT / "hwprofiles" / "dense.yaml")]
CNVLUTIN = PROFILES[:1]

# energy and evasion attacks, several chunks each (chunk_size 4), seeded random streams (uniform
# sampling, PGD's random start) in every chunk
SMALL = """name: units
seed: 1
chunk_size: 4
data: {source: digits, count: 12}
energy_attacks:
  - {search: whitebox, count: 8, params: {iterations: 3}}
  - {search: uniform, count: 4, params: {grid: [0.0, 0.5, 1.0], grid_samples: 2}}
robustness:
  count: 8
  attacks:
    - {attack: pgd, norm: linf, epsilons: [0.1, 0.3], params: {steps: 3}}
    - {attack: deepfool, params: {steps: 5}}
checks:
  min_clean_accuracy: 0.5
  max_latency_increase: 5.0
  min_robust_accuracy: [{attack: pgd, epsilon: 0.1, threshold: 0.0}]
"""


def dump(report) -> str:
    return json.dumps(stable(report.data), sort_keys=True)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    p = tmp_path_factory.mktemp("units") / "small.yaml"
    p.write_text(SMALL)
    return str(p)


@pytest.fixture(scope="module")
def reference(small):
    """The report of the small audit run in this process (--jobs 1)."""
    return auditor.audit(MODEL, CNVLUTIN, small, jobs=1)


def test_merge_and_unit_seeds():
    a = {"x": np.arange(3), "seconds": 1.5, "queries": 4, "eps": 0.1, "names": ["a"], "rows": [{"n_broken": 1}]}
    b = {"x": np.arange(3, 5), "seconds": 0.5, "queries": 6, "eps": 0.1, "names": ["b"], "rows": [{"n_broken": 2}]}
    m = merge([a, b])
    assert m["x"].tolist() == [0, 1, 2, 3, 4] and m["seconds"] == 2.0 and m["queries"] == 10
    assert m["eps"] == 0.1 and m["names"] == ["a", "b"] and m["rows"] == [{"n_broken": 3}]
    assert unit_seed(7, 0) == 7  # an audit in one chunk draws what it drew before chunking
    assert unit_seed(7, 1) == unit_seed(7, 1) != unit_seed(7, 2) and unit_seed(7, 1) != unit_seed(8, 1)


def test_unit_progress_shows_an_eta():
    import io

    from auditor.progress import Progress

    out = io.StringIO()
    with Progress("audit units", 4, enabled=True, stream=out, eta=True) as bar:
        bar.update()
    assert "1/4" in out.getvalue() and "ETA" in out.getvalue()


def test_chunk_size_does_not_change_the_numbers(tmp_path):
    """Statistics over all the inputs come from the merged per-input results: deterministic
    searches and attacks give the same profile section in chunks of 2 as in one chunk."""
    text = ("name: c\nchunk_size: {}\ndata: {{source: digits, count: 7}}\n"
            "energy_attacks:\n  - {{search: whitebox, count: 5, params: {{iterations: 2}}}}\n"
            "robustness:\n  count: 5\n  attacks:\n    - {{attack: fgsm, norm: linf, epsilons: [0.1, 0.3]}}\n"
            "    - {{attack: deepfool, params: {{steps: 3}}}}\n")
    reports = []
    for size in (2, 64):
        p = tmp_path / f"c{size}.yaml"
        p.write_text(text.format(size))
        reports.append(auditor.audit(MODEL, CNVLUTIN, str(p), jobs=1))
    # the white-box search reads the layer sizes (one forward pass) once per call: once per chunk
    q2, q64 = (r.data["profiles"][0]["attacks"][0].pop("queries") for r in reports)
    assert q2 == q64 + 2  # 5 inputs in chunks of 2: three calls instead of one
    a, b = (json.dumps(stable(r.data["profiles"]), sort_keys=True) for r in reports)
    assert a == b
    assert reports[0].data["profiles"][0]["robustness"]["attacks"][0]["results"][1]["n_success"] > 0


def test_local_pool_gives_the_same_report(small, reference):
    assert dump(auditor.audit(MODEL, CNVLUTIN, small, jobs=2)) == dump(reference)


def test_no_ray_import_without_the_option(tmp_path):
    (tmp_path / "sc.yaml").write_text("name: n\ndata: {source: digits, count: 4}\n")
    code = ("import sys, auditor; auditor.audit(sys.argv[1], sys.argv[2], sys.argv[3]); "
            "assert 'ray' not in sys.modules, 'ray was imported'")
    r = subprocess.run([sys.executable, "-c", code, MODEL, PROFILES[1], str(tmp_path / "sc.yaml")],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr


def test_unreachable_cluster_is_exit_2_naming_the_address(small):
    r = CliRunner().invoke(main, ["audit", MODEL, "--hw", PROFILES[1], "--scenario", small, "--ray", "127.0.0.1:1"])
    assert r.exit_code == 2
    assert "127.0.0.1:1" in r.output and "Traceback" not in r.output


# --------------------------------------------------------------------------------------------
# on a local Ray cluster
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install -e '.[ray]')")
    marker = tmp_path_factory.mktemp("kill") / "kill-once"
    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT), "AUDITOR_TEST_KILL_ONCE": str(marker)}})
    yield marker
    ray.shutdown()


def test_ray_gives_the_same_report_and_retries_a_killed_worker(ray_cluster, small, reference):
    ray_cluster.write_text("")  # the first unit to remove it exits its worker process mid-task
    rep = auditor.audit(MODEL, CNVLUTIN, small, ray="local")
    assert not ray_cluster.exists()  # a worker died, and its task was run again
    assert dump(rep) == dump(reference)


def test_bad_input_in_a_task_is_exit_2(ray_cluster, tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((4, 1, 8, 8), np.float32))
    (tmp_path / "sc.yaml").write_text("name: b\ndata: {source: npy, path: x.npy}\n")
    r = CliRunner().invoke(main, ["audit", MODEL, "--hw", PROFILES[1], "--scenario", str(tmp_path / "sc.yaml"),
                                  "--ray"])
    assert r.exit_code == 2, r.output
    assert "per-input shape (1, 8, 8)" in r.output and "expects (1, 28, 28)" in r.output
    assert "Traceback" not in r.output and "RayTaskError" not in r.output


def test_max_seconds_cuts_units_short_with_ray(ray_cluster, tmp_path):
    p = tmp_path / "slow.yaml"
    p.write_text("name: s\nchunk_size: 2\ndata: {source: digits, count: 8}\n"
                 "energy_attacks:\n  - {search: whitebox, count: 8, params: {iterations: 2000}}\n"
                 "checks:\n  max_latency_increase: 100.0\n")
    t0 = time.monotonic()
    rep = auditor.audit(MODEL, CNVLUTIN, str(p), ray="local", max_seconds=8)
    assert time.monotonic() - t0 < 60  # running tasks stopped, outstanding ones cancelled
    budget = rep.data["budget"]
    assert budget["cut_short_units"] and all(u.startswith("cnvlutin/") for u in budget["cut_short_units"])
    check = [c for c in rep.checks if c["name"] == "max_latency_increase"][0]
    assert not check["passed"] and "cut short" in check["detail"]
    if budget["cut_short"] != ["cnvlutin:clean"]:  # a loaded machine may not even end the clean evaluation
        assert budget["cut_short"] == ["cnvlutin:whitebox"]
        assert all(u.startswith("cnvlutin/energy[0]:whitebox/") for u in budget["cut_short_units"])
        assert rep.data["profiles"][0]["clean"]["accuracy"] is not None  # the clean evaluation is complete
