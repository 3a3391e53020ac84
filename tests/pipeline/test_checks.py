"""The check registry's contract: every check declared in auditor.pipeline.checks has a threshold
field in the scenario schema, evaluates on a synthetic report section, and is "not decided"
(never a pass) exactly when a stage it reads was cut short by --max-seconds."""

from __future__ import annotations

import dataclasses
import typing
from types import SimpleNamespace

import pytest

from auditor.errors import AuditorError
from auditor.pipeline.baseline import Regression, regression_checks
from auditor.pipeline.checks import CHECKS, STAGES, cut_stages, declare, evaluate
from auditor.scenario import Checks, RobustAccuracyCheck

SECTIONS = {"checks": Checks, "regression": Regression}


def _value(tp):
    """A threshold every check of that type accepts (inside every declared bound)."""
    if typing.get_origin(tp) is typing.Union:  # Optional[float]
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    if tp is bool:
        return True
    if typing.get_origin(tp) is list:
        return [RobustAccuracyCheck(attack="pgd", epsilon=0.1, threshold=0.5)]
    return 0.5


def scenario():
    """Every threshold of `checks:` and `regression:` set."""
    out = {}
    for key, cls in SECTIONS.items():
        hints = typing.get_type_hints(cls)
        out[key] = cls(**{f.name: _value(hints[f.name]) for f in dataclasses.fields(cls)})
    return SimpleNamespace(**out)


def section(**extra) -> dict:
    """A profile's report section with every stage's results (a baseline's too: same numbers)."""
    pr = {"name": "p", "summary": {"worst_latency_s": 2e-4, "clean_mean_latency_s": 1e-4, "worst_energy_j": 2e-7,
                                   "clean_mean_energy_j": 1e-7, "worst_edp": 4e-11, "worst_density": 0.4,
                                   "latency_increase": 1.2, "energy_increase": 1.3, "clean_accuracy": 0.9},
          "robustness": {"attacks": [{"attack": "pgd", "norm": "linf", "minimal_perturbation": {"median_l2": 1.5},
                                      "results": [{"epsilon": 0.1, "robust_accuracy": 0.6, "attack_success_rate": 0.3}]}]},
          "masking": {"fired": []}}
    pr.update(extra)
    return pr


def _rows(name: str, cut=None, **extra):
    d = CHECKS.get(name)
    pr = section(**extra) if cut is None else section(cut_short=cut, **extra)
    return [c for c in evaluate(scenario(), d.section, "p", pr, section())
            if c.name == name or c.name.startswith(name + "[")]


def test_every_check_has_a_threshold_field_and_every_field_a_check():
    declared = {(d.section, d.field) for d in CHECKS.values()}
    fields = {(key, f.name) for key, cls in SECTIONS.items() for f in dataclasses.fields(cls)}
    assert declared == fields
    for d in CHECKS.values():
        assert d.op in ("<=", ">=") and "clean" in d.needs and d.needs <= set(STAGES)


@pytest.mark.parametrize("name", list(CHECKS))
def test_check_evaluates_on_a_synthetic_section(name):
    rows = _rows(name)
    assert rows, f"{name} gave no row"
    for c in rows:
        assert c.decided and c.measured is not None and c.passed is not None and c.profile == "p"


@pytest.mark.parametrize("name", list(CHECKS))
def test_check_is_not_decided_when_what_it_reads_is_cut_short(name):
    d = CHECKS.get(name)
    for stage in STAGES:
        cut = ["whitebox"] if stage == "energy" else [stage]  # an energy search is cut by its name
        rows = _rows(name, cut)
        assert rows, (name, stage)
        if stage in d.needs:
            assert all(not c.decided and not c.passed and "cut short by --max-seconds" in c.detail for c in rows), (name, stage)
        else:
            assert all(c.decided for c in rows), (name, stage)  # what it does not read leaves it decided


def test_cut_stages():
    assert cut_stages(["clean"]) == set(STAGES)
    assert cut_stages(["sponge_ga", "robustness"]) == {"energy", "robustness"}
    assert cut_stages([]) == set()


def test_a_check_that_would_pass_is_never_a_pass_when_cut():
    [ok] = _rows("max_density")
    [cut] = _rows("max_density", ["uniform"])
    assert ok.passed and ok.decided and not cut.passed and not cut.decided and cut.measured == ok.measured


def test_gradient_masking_check_only_where_the_diagnosis_ran():
    pr = section()
    del pr["masking"]
    assert not [c for c in evaluate(scenario(), "checks", "p", pr) if c.name == "no_gradient_masking"]
    [c] = [c for c in evaluate(scenario(), "checks", "p", dict(pr, cut_short=["masking"]))
           if c.name == "no_gradient_masking"]
    assert not c.decided


def test_regression_checks_only_on_profiles_the_baseline_has():
    new = {"schema_version": 1, "profiles": [section(), dict(section(), name="q")]}
    old = {"schema_version": 1, "profiles": [section()]}
    checks = regression_checks(scenario().regression, old, new)
    assert {c.profile for c in checks} == {"p"} and len(checks) == 5 and all(c.passed for c in checks)
    with pytest.raises(AuditorError, match="schema version"):
        regression_checks(scenario().regression, {"schema_version": 0}, new)


def test_declaring_a_check_twice_or_on_an_unknown_stage_is_a_bug():
    with pytest.raises(ValueError, match="registered twice"):
        declare("max_density", "<=", ("energy",))(lambda t, pr, old: [])
    with pytest.raises(ValueError, match="unknown stages"):
        declare("x", "<=", ("searches",))
