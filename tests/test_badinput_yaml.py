"""Hostile and malformed YAML (scenarios and hardware profiles) through `validate` and `audit`:
exit 2 with one line naming file:line:col and the key, in bounded time and memory."""

import os

import pytest

from badinput_harness import DENSE, MODEL, assert_usage_error, base_files, check, run_cli, sparse_file

# (id, scenario text, what the error line must contain besides the file name)
SCENARIOS = [
    # YAML itself
    ("syntax", "name: t\ndata: {count: 8\n", "invalid YAML"),
    ("tab-indent", "name: t\ndata:\n\tcount: 8\n", "invalid YAML"),
    ("unknown-tag", "name: !foo t\n", "tag '!foo' is not supported"),
    ("python-tag", "name: !!python/object/apply:os.system ['true']\n", "python/object/apply"),
    ("python-name", "name: !!python/name:os.system\n", "not supported"),
    ("binary-tag", "name: !!binary aGVsbG8=\n", "binary"),
    ("set-tag", "name: t\ndata: !!set {a, b}\n", "set"),
    ("omap-tag", "name: t\ndata: !!omap [{count: 3}]\n", "omap"),
    ("tagged-key", "name: t\n!foo data: {count: 3}\n", "not supported"),
    ("recursive-seq", "name: t\nenergy_attacks: &a [*a]\n", "alias"),
    ("recursive-map", "name: t\ndata: &a {count: 3, x: *a}\n", "alias"),
    ("unhashable-list-key", "name: t\n? [a, b]\n: 1\n", "mapping key must be a plain value"),
    ("unhashable-map-key", "name: t\n{a: 1}: 2\n", "mapping key must be a plain value"),
    ("deep-lists", "name: t\ndata: " + "[" * 2000 + "]" * 2000 + "\n", "nested deeper"),
    ("deep-maps", "name: t\ndescription:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 90)) + "  " * 90 + "v: 1\n",
     "nested deeper"),
    ("deep-flow-maps", "name: t\ndata: " + "{a: " * 500 + "1" + "}" * 500 + "\n", "nested deeper"),
    ("billion-laughs", "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
     + "".join(f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))
     + "name: *i\n", "expands to more than"),
    ("wide-aliases", "x: &x {" + ", ".join(f"k{i}: {i}" for i in range(400)) + "}\nname: t\nlist: [" + ", ".join(["*x"] * 400) + "]\n",
     "expands to more than"),
    ("duplicate-top", "name: t\nname: u\n", "duplicate key 'name' (first at line 1)"),
    ("duplicate-nested", "name: t\ndata:\n  count: 3\n  count: 5\n", "duplicate key 'count'"),
    ("duplicate-in-params", "name: t\nenergy_attacks:\n  - search: uniform\n    params: {sigma: 0.1, sigma: 0.2}\n",
     "duplicate key 'sigma'"),
    ("duplicate-in-list-item", "name: t\nrobustness:\n  attacks:\n    - {attack: fgsm, attack: pgd}\n", "duplicate key 'attack'"),
    ("duplicate-int-keys", "name: t\ndata:\n  1: a\n  1: b\n", "duplicate key"),
    ("merge-key", "base: &b {count: 3}\nname: t\ndata:\n  <<: *b\n", "merge keys (<<) are not supported"),
    ("empty", "", "missing required key 'name'"),
    ("comments-only", "# nothing\n", "missing required key 'name'"),
    ("top-list", "- name: t\n", "expected a mapping"),
    ("top-scalar", "just a string\n", "expected a mapping"),
    ("nul-byte", "name: t\x00\n", "invalid YAML"),
    ("long-key", "name: t\n" + "k" * 20000 + ": 1\n", "invalid YAML"),
    ("long-value", "name: t\nseed: " + "9" * 5000 + "\n", "invalid YAML value"),
    ("long-string-int", "name: t\nseed: '" + "x" * 100000 + "'\n", "expected an integer"),
    ("timestamp-name", "name: 2020-01-01\n", "expected a string"),
    ("null-name", "name:\n", "name"),
    # types and unknown keys
    ("unknown-top", "name: t\nchecks_typo: {}\n", "did you mean 'checks'"),
    ("unknown-data", "name: t\ndata: {cout: 3}\n", "data.cout: unknown key"),
    ("count-string", "name: t\ndata: {count: lots}\n", "data.count: expected an integer"),
    ("count-float", "name: t\ndata: {count: 3.5}\n", "data.count"),
    ("count-bool", "name: t\ndata: {count: true}\n", "data.count"),
    ("data-list", "name: t\ndata: [1, 2]\n", "data: expected a mapping"),
    ("attacks-mapping", "name: t\nenergy_attacks: {search: uniform}\n", "energy_attacks: expected a list"),
    ("source-unknown", "name: t\ndata: {source: mnist}\n", "data.source"),
    ("nan-threshold", "name: t\nchecks: {max_density: .nan}\n", "finite"),
    ("inf-latency", "name: t\nchecks: {worst_case_latency_ms: .inf}\n", "finite"),
    # bounds
    ("count-negative", "name: t\ndata: {count: -3}\n", "data.count: must be >= 1"),
    ("count-zero", "name: t\ndata: {count: 0}\n", "data.count: must be >= 1"),
    ("attack-count-negative", "name: t\nenergy_attacks:\n  - {search: uniform, count: -3}\n", "energy_attacks[0].count: must be >= 1"),
    ("attack-count-huge", "name: t\nenergy_attacks:\n  - {search: uniform, count: 1000000000}\n", "energy_attacks[0].count: must be <="),
    ("robust-count-zero", "name: t\nrobustness: {count: 0}\n", "robustness.count: must be >= 1"),
    ("approx-count-negative", "name: t\napprox: {count: -1}\n", "approx.count: must be >= 1"),
    ("clean-accuracy-95", "name: t\nchecks: {min_clean_accuracy: 95}\n", "checks.min_clean_accuracy: must be <= 1"),
    ("clean-accuracy-negative", "name: t\nchecks: {min_clean_accuracy: -0.1}\n", "checks.min_clean_accuracy: must be >= 0"),
    ("density-above-1", "name: t\nchecks: {max_density: 1.5}\n", "checks.max_density: must be <= 1"),
    ("success-rate-3", "name: t\nchecks: {max_attack_success_rate: 3}\n", "checks.max_attack_success_rate: must be <= 1"),
    ("latency-negative", "name: t\nchecks: {worst_case_latency_ms: -1}\n", "checks.worst_case_latency_ms: must be > 0"),
    ("latency-zero", "name: t\nchecks: {mean_latency_ms: 0}\n", "checks.mean_latency_ms: must be > 0"),
    ("energy-negative", "name: t\nchecks: {mean_energy_uj: -5}\n", "checks.mean_energy_uj: must be > 0"),
    ("edp-negative", "name: t\nchecks: {worst_case_edp: -1.0e-9}\n", "checks.worst_case_edp: must be > 0"),
    ("increase-negative", "name: t\nchecks: {max_latency_increase: -1}\n", "checks.max_latency_increase: must be > 0"),
    ("energy-increase-zero", "name: t\nchecks: {max_energy_increase: 0}\n", "checks.max_energy_increase: must be > 0"),
    ("median-l2-negative", "name: t\nchecks: {min_median_l2: -1}\n", "checks.min_median_l2: must be >= 0"),
    ("robust-threshold-2", "name: t\nchecks:\n  min_robust_accuracy: [{attack: fgsm, epsilon: 0.1, threshold: 2}]\n",
     "checks.min_robust_accuracy[0].threshold: must be <= 1"),
    ("robust-epsilon-negative", "name: t\nchecks:\n  min_robust_accuracy: [{attack: fgsm, epsilon: -0.1, threshold: 0.5}]\n",
     "checks.min_robust_accuracy[0].epsilon: must be >= 0"),
    ("growth-negative", "name: t\nregression: {max_latency_growth: -0.1}\n", "regression.max_latency_growth: must be >= 0"),
    ("energy-growth-negative", "name: t\nregression: {max_energy_growth: -1}\n", "regression.max_energy_growth: must be >= 0"),
    ("accuracy-drop-2", "name: t\nregression: {max_accuracy_drop: 2}\n", "regression.max_accuracy_drop: must be <= 1"),
    ("robust-drop-negative", "name: t\nregression: {max_robust_accuracy_drop: -0.5}\n", "regression.max_robust_accuracy_drop"),
    ("density-growth-2", "name: t\nregression: {max_density_growth: 2}\n", "regression.max_density_growth: must be <= 1"),
    ("seed-negative", "name: t\nseed: -1\n", "seed: must be >= 0"),
    ("seed-huge", "name: t\nseed: 100000000000000000000000\n", "seed: must be <="),
    ("batch-zero", "name: t\nbatch_size: 0\n", "batch_size: must be >= 1"),
    ("batch-huge", "name: t\nbatch_size: 1000000000\n", "batch_size: must be <= 4096"),
    ("epsilon-negative", "name: t\nrobustness:\n  attacks: [{attack: fgsm, epsilons: [-0.1]}]\n",
     "robustness.attacks[0].epsilons[0]: must be >= 0"),
    ("size-huge", "name: t\ndata: {source: images, path: imgs, size: [100000, 100000]}\n", "data.size[0]: must be <= 4096"),
    ("size-zero", "name: t\ndata: {source: images, path: imgs, size: [0, 5]}\n", "data.size[0]: must be >= 1"),
    ("size-one-value", "name: t\ndata: {source: images, path: imgs, size: [28]}\n", "size must be [height, width]"),
    ("mean-empty", "name: t\npreprocessing: {mean: []}\n", "mean must have one value"),
    ("std-empty", "name: t\npreprocessing: {std: []}\n", "std must have one value"),
    ("std-zero", "name: t\npreprocessing: {std: [0]}\n", "std must be non-zero"),
    ("scale-zero", "name: t\npreprocessing: {scale: 0}\n", "scale must be non-zero"),
    ("range-reversed", "name: t\npreprocessing: {range: [1, 0]}\n", "range must be [low, high]"),
    ("range-one-value", "name: t\npreprocessing: {range: [1]}\n", "range must be [low, high]"),
    ("range-huge-list", "name: t\npreprocessing: {range: [" + ", ".join(["1"] * 20000) + "]}\n", "range must be"),
    ("layout-unknown", "name: t\npreprocessing: {layout: CHW}\n", "preprocessing.layout"),
    ("path-missing", "name: t\ndata: {source: npy}\n", "needs a 'path'"),
    # what only `validate`'s reference checks see
    ("mean-3-on-gray", "name: t\npreprocessing: {mean: [0.1, 0.2, 0.3]}\n", "preprocessing.mean: has 3 values but the data has 1 channel"),
    ("std-2-on-gray", "name: t\npreprocessing: {std: [0.5, 0.5]}\n", "preprocessing.std: has 2 values"),
    ("epsilons-8-16", "name: t\nrobustness:\n  attacks: [{attack: fgsm, norm: linf, epsilons: [8, 16]}]\n",
     "robustness.attacks[0].epsilons[0]: 8 exceeds the largest linf distance"),
    ("epsilon-l2-huge", "name: t\nrobustness:\n  attacks: [{attack: pgd, norm: l2, epsilons: [1000]}]\n",
     "robustness.attacks[0].epsilons[0]: 1000 exceeds the largest l2 distance"),
    ("epsilon-over-range-255", "name: t\npreprocessing: {range: [0, 255]}\nrobustness:\n  attacks: [{attack: fgsm, epsilons: [300]}]\n",
     "epsilons[0]: 300 exceeds"),
    ("robust-check-no-section", "name: t\nchecks:\n  min_robust_accuracy: [{attack: fgsm, epsilon: 0.1, threshold: 0.5}]\n",
     "checks.min_robust_accuracy: this check needs evasion attacks"),
    ("success-check-no-section", "name: t\nchecks: {max_attack_success_rate: 0.5}\n", "checks.max_attack_success_rate: this check needs"),
    ("median-check-no-section", "name: t\nchecks: {min_median_l2: 0.5}\n", "checks.min_median_l2: this check needs"),
    ("robust-check-eps-not-run", "name: t\nrobustness:\n  attacks: [{attack: fgsm, epsilons: [0.1, 0.2]}]\nchecks:\n"
     "  min_robust_accuracy: [{attack: fgsm, epsilon: 0.3, threshold: 0.5}]\n",
     "checks.min_robust_accuracy[0].epsilon: fgsm is not run at epsilon 0.3 (it runs at 0.1, 0.2)"),
    ("robust-check-default-eps", "name: t\nrobustness:\n  attacks: [{attack: fgsm}]\nchecks:\n"
     "  min_robust_accuracy: [{attack: fgsm, epsilon: 0.1, threshold: 0.5}]\n", "not run at epsilon 0.1 (it runs at 0.3)"),
    ("robust-check-other-attack", "name: t\nrobustness:\n  attacks: [{attack: fgsm, epsilons: [0.1]}]\nchecks:\n"
     "  min_robust_accuracy: [{attack: pgd, epsilon: 0.1, threshold: 0.5}]\n",
     "checks.min_robust_accuracy[0].attack: no attack pgd under robustness.attacks"),
    ("robust-check-other-norm", "name: t\nrobustness:\n  attacks: [{attack: pgd, norm: linf, epsilons: [0.1]}]\nchecks:\n"
     "  min_robust_accuracy: [{attack: pgd, norm: l2, epsilon: 0.1, threshold: 0.5}]\n", "no attack pgd/l2"),
    ("unknown-search", "name: t\nenergy_attacks:\n  - {search: sponge_magic}\n", "energy_attacks[0]: unknown search"),
    ("unknown-search-param", "name: t\nenergy_attacks:\n  - {search: uniform, params: {sgima: 0.1}}\n", "energy_attacks[0]"),
    ("population-huge", "name: t\nenergy_attacks:\n  - {search: sponge_ga, params: {population: 1000000000}}\n",
     "parameter 'population' must be <= 10000"),
    ("grid-samples-huge", "name: t\nenergy_attacks:\n  - {search: uniform, params: {grid_samples: 1000000000}}\n",
     "parameter 'grid_samples' must be <= 10000"),
    ("iterations-huge", "name: t\nenergy_attacks:\n  - {search: whitebox, params: {iterations: 10000000000}}\n",
     "parameter 'iterations' must be <="),
    ("search-param-list", "name: t\nenergy_attacks:\n  - {search: uniform, params: {sigma: [1, 2]}}\n", "sigma"),
    ("surrogate-missing", "name: t\nenergy_attacks:\n  - {search: blackbox, surrogate: nothere.onnx}\n",
     "energy_attacks[0].surrogate: "),
    ("unknown-attack", "name: t\nrobustness:\n  attacks: [{attack: laser}]\n", "robustness.attacks[0]: unknown attack"),
    ("attack-wrong-norm", "name: t\nrobustness:\n  attacks: [{attack: deepfool, norm: linf}]\n", "robustness.attacks[0]"),
    ("approx-surrogate-missing", "name: t\napprox: {surrogate: nothere.onnx}\n", "approx.surrogate: "),
    ("defence-unknown", "name: t\nenergy_attacks:\n  - {search: uniform, defences: [{name: magic}]}\n", "energy_attacks[0].defences[0]"),
    # every evasion list is checked through the attack registry, whatever its section
    ("approx-transfer-unknown", "name: t\napprox:\n  transfer: [{name: fgsmm, params: {stepz: 3}}]\n",
     "approx.transfer[0]: unknown attack 'fgsmm'"),
    ("approx-transfer-bad-param", "name: t\napprox:\n  transfer: [{attack: fgsm, params: {stepz: 3}}]\n",
     "approx.transfer[0]: "),
    ("approx-whitebox-bad-param", "name: t\napprox:\n  whitebox: [{name: pgd, params: {stepz: 3}}]\n",
     "approx.whitebox[0]: "),
    ("approx-query-unknown", "name: t\napprox:\n  query: [{attack: squar}]\n", "approx.query[0]: unknown attack"),
    ("approx-minimal-wrong-norm", "name: t\napprox:\n  minimal: [{attack: deepfool, norm: linf}]\n", "approx.minimal[0]: "),
    ("approx-unknown-key", "name: t\napprox:\n  transfer: [{attack: fgsm, epsilon: [0.1]}]\n",
     "approx.transfer[0].epsilon: unknown key (did you mean 'epsilons'?)"),
    ("approx-epsilon-over-range", "name: t\napprox:\n  transfer: [{attack: fgsm, epsilons: [8]}]\n",
     "approx.transfer[0].epsilons[0]: 8 exceeds the largest linf distance"),
    ("approx-no-attack", "name: t\napprox:\n  transfer: [{params: {steps: 3}}]\n", "missing required key 'attack'"),
    ("attack-two-spellings", "name: t\nrobustness:\n  attacks: [{attack: fgsm, name: pgd}]\n",
     "robustness.attacks[0].name: duplicate key ('attack' and 'name' both spell 'attack')"),
    ("defence-jpg", "name: t\nenergy_attacks:\n  - {search: uniform, defences: [{name: jpg}]}\n",
     "energy_attacks[0].defences[0]: unknown defence 'jpg'"),
    ("defence-bad-param", "name: t\nenergy_attacks:\n  - {search: uniform, defences: [{name: quantize, bitz: 3}]}\n",
     "energy_attacks[0].defences[0]: defence 'quantize': unknown parameter(s) bitz; valid: bits"),
    ("defence-threshold-budget", "name: t\nenergy_attacks:\n  - {search: uniform, defences: [{name: threshold, budget: 2}]}\n",
     "energy_attacks[0].defences[0]: defence 'threshold': parameter 'budget' must be <= 1.0, got 2"),
    ("blackbox-no-surrogate", "name: t\nenergy_attacks:\n  - {search: BlackBox}\n",
     "energy_attacks[0]: the search 'blackbox' needs 'surrogate:'"),
    ("data-file-missing", "name: t\ndata: {source: npy, path: nothere.npy}\n", "data file not found"),
]


@pytest.mark.parametrize("text,where", [c[1:] for c in SCENARIOS], ids=[c[0] for c in SCENARIOS])
def test_bad_scenario_validate(tmp_path, text, where):
    sc = tmp_path / "bad.yaml"
    sc.write_bytes(text.encode("utf-8"))
    line = check(["validate", "--kind", "scenario", sc], tmp_path, where)
    assert str(sc) in line or "data file" in line  # the scenario, or the data file it names


# the same through `audit` (a subset: the audit reads the scenario with the same loader)
AUDIT_IDS = ["python-tag", "billion-laughs", "duplicate-nested", "count-negative", "clean-accuracy-95", "seed-negative",
             "mean-3-on-gray", "epsilons-8-16", "robust-check-no-section", "robust-check-eps-not-run", "deep-lists",
             "recursive-map", "unhashable-list-key", "population-huge", "size-huge", "growth-negative",
             "approx-surrogate-missing", "defence-unknown", "latency-negative", "batch-huge",
             "approx-transfer-unknown", "approx-whitebox-bad-param", "defence-jpg", "blackbox-no-surrogate"]


@pytest.mark.parametrize("cid", AUDIT_IDS)
def test_bad_scenario_audit(tmp_path, cid):
    text, where = {c[0]: c[1:] for c in SCENARIOS}[cid]
    prof, _ = base_files(tmp_path)
    sc = tmp_path / "bad.yaml"
    sc.write_text(text)
    check(["audit", MODEL, "--hw", prof, "--scenario", sc], tmp_path, where)


PROFILES = [
    ("units-2-70", DENSE.replace("{}", "{units: 1180591620717411303424}"), "params.units: must be <= 2147483647"),
    ("units-negative", DENSE.replace("{}", "{units: -1}"), "units must be >= 1"),
    ("units-zero", DENSE.replace("{}", "{units: 0}"), "units must be >= 1"),
    ("clock-nan", DENSE.replace("{}", "{clock_hz: .nan}"), "params.clock_hz: expected a finite number"),
    ("clock-negative", DENSE.replace("{}", "{clock_hz: -1.0e9}"), "clock_hz must be > 0"),
    ("unknown-cost-model", "name: x\ncost_model: quantum\n", "cost_model: unknown cost model 'quantum'"),
    ("params-list", "name: x\ncost_model: dense\nparams: [1, 2]\n", "params: expected a mapping"),
    ("params-typo", DENSE.replace("{}", "{unitz: 4}"), "params.unitz: unknown key"),
    ("params-duplicate", DENSE.replace("{}", "{units: 4, units: 8}"), "duplicate key 'units'"),
    ("missing-name", "cost_model: dense\n", "missing required key 'name'"),
    ("python-tag", "name: x\ncost_model: !!python/object:os.system dense\n", "not supported"),
    ("hashnet-ratio-0", "name: x\ncost_model: dense\nreshape: {hashnet_ratio: 0}\n", "hashnet_ratio"),
    ("tau-negative", "name: x\ncost_model: dense\nreshape: {gradient_inhibition_tau: -1}\n", "gradient_inhibition_tau"),
    ("approx-unknown", "name: x\ncost_model: dense\napprox: {multiplier: magic}\n", "approx.multiplier"),
    ("brick-huge", DENSE.replace("{}", "{brick_size: 99999999999}"), "params.brick_size"),
    ("reshape-seed-huge", "name: x\ncost_model: dense\nreshape: {seed: 99999999999999}\n", "reshape.seed: must be <="),
]


@pytest.mark.parametrize("text,where", [c[1:] for c in PROFILES], ids=[c[0] for c in PROFILES])
def test_bad_profile(tmp_path, text, where):
    hw = tmp_path / "hw.yaml"
    hw.write_text(text)
    _, sc = base_files(tmp_path)
    assert str(hw) in check(["validate", "--kind", "hwprofile", hw], tmp_path, where)
    check(["audit", MODEL, "--hw", hw, "--scenario", sc], tmp_path, where)


# files that are not YAML documents at all
def _not_utf8(p):
    p.write_bytes(b"name: \xff\xfe\n")


def _binary(p):
    p.write_bytes(bytes(range(256)) * 4)


def _too_big(p):
    p.write_text("name: t\n" + "".join(f"k{i}: {{a: 1}}\n" for i in range(120_000)))


def _sparse_big(p):
    sparse_file(p, 50 << 20, b"name: t\n")


def _dir(p):
    p.mkdir()


def _fifo(p):
    os.mkfifo(p)


def _dev_zero(p):
    p.symlink_to("/dev/zero")


def _dangling(p):
    p.symlink_to(p.parent / "gone.yaml")


FILES = [("not-utf8", _not_utf8, "not UTF-8"), ("binary", _binary, "not UTF-8"),
         ("million-mappings", _too_big, "larger than the 256 KiB"), ("sparse-50MB", _sparse_big, "larger than the 256 KiB"),
         ("folder", _dir, "is a folder"), ("fifo", _fifo, "not a regular file"), ("dev-zero", _dev_zero, "not a regular file"),
         ("dangling-link", _dangling, "not found"), ("missing", lambda p: None, "not found")]


@pytest.mark.parametrize("make,where", [c[1:] for c in FILES], ids=[c[0] for c in FILES])
def test_not_a_yaml_file(tmp_path, make, where):
    p = tmp_path / "bad.yaml"
    make(p)
    if make is _dir:  # a folder where a file is expected: click's usage error
        assert_usage_error(run_cli(["validate", p], tmp_path), "is a directory")
        return
    check(["validate", p], tmp_path, where)
    prof, sc = base_files(tmp_path)
    check(["audit", MODEL, "--hw", prof, "--scenario", p], tmp_path, where)
    check(["audit", MODEL, "--hw", p, "--scenario", sc], tmp_path, where)


def test_error_messages_never_repr_unbounded_values(tmp_path):
    sc = tmp_path / "bad.yaml"
    sc.write_text("name: t\ndata:\n  count: [" + ", ".join(["123456789"] * 20000) + "]\n")
    line = check(["validate", sc], tmp_path, "data.count: expected integer, got a list")
    assert len(line) < 300, line
