"""The audit pipeline: model -> rewrite -> session -> search -> cost -> verdict.

``run_audit`` is what ``auditor audit`` and the Python API call.  It loads and validates every
input first (so bad input fails before any work), evaluates the clean data on every hardware
profile, runs the scenario's searches, re-verifies every reported input with an independent
forward pass and cost simulation, evaluates the checks and returns a :class:`Report`.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import os
import time
from pathlib import Path

import numpy as np

from . import __version__, schema
from .checks import Check, hardware_checks
from .data import load_data
from .errors import AuditorError
from .evaluate import Evaluation, evaluate, per_input
from .hw.profile import HardwareProfile, load_profile
from .modelio import default_opset, load_model, model_hash
from .report import Report
from .scenario import Scenario, load_scenario
from .robustness import robustness_audit
from .rewrite import density_rule
from .session import OnnxClassifier, probability_warning


def _load(model, profiles, scenario):
    model_path = str(model) if isinstance(model, (str, Path)) else "<in-memory model>"
    proto = load_model(model) if isinstance(model, (str, Path)) else model
    profs = [p if isinstance(p, HardwareProfile) else load_profile(p) for p in profiles]
    if not profs:
        raise AuditorError("no hardware profile given (use --hw PROFILE.yaml)")
    names = [p.name for p in profs]
    if len(set(names)) != len(names):
        raise AuditorError(f"two hardware profiles share the name '{[n for n in names if names.count(n) > 1][0]}'")
    if isinstance(scenario, Scenario):
        sc = scenario
    else:
        from .validate import check_references

        sc = load_scenario(scenario)
        check_references(sc, *schema.load_yaml(scenario))  # bad names fail before any work
    return model_path, proto, profs, sc


def _stats(v: np.ndarray) -> dict:
    v = np.asarray(v, dtype=np.float64)
    return {"mean": float(v.mean()), "worst": float(v.max()), "min": float(v.min()),
            "p50": float(np.percentile(v, 50)), "p95": float(np.percentile(v, 95))}


def _layer_breakdown(clf: OnnxClassifier, ev: Evaluation, i: int) -> list[dict]:
    c = ev.cost
    rows = []
    for j, layer in enumerate(clf.probes.layers):
        rows.append({"layer": layer.name, "op": layer.op_type, "macs": layer.macs,
                     "input_density": float(ev.densities[layer.input][i]),
                     "cycles": int(c.cycles[i, j]), "dense_cycles": int(c.dense_cycles[i, j]),
                     "energy_j": float(c.energy_j[i, j])})
    return rows


def reshape_model(proto, r):
    """Apply a profile's `reshape:` section (HashNet first, then gradient inhibition)."""
    from .reshape import apply_reshaping

    spec = {}
    if r.hashnet_ratio is not None:
        spec["hashnet"] = {"ratio": r.hashnet_ratio, "layers": r.hashnet_layers, "seed": r.seed}
    if r.gradient_inhibition_tau is not None:
        spec["gradient_inhibition"] = {"tau": r.gradient_inhibition_tau, "layers": r.gradient_inhibition_layers}
    return apply_reshaping(proto, spec)


def run_robustness(clf: OnnxClassifier, verifier: OnnxClassifier, data, sc: Scenario, seed: int, profile: str) -> tuple[dict, list[Check]]:
    """The scenario's evasion attacks on one deployed model, and the robustness checks."""
    from .checks import make
    from .robustness import check_min_robust_accuracy

    rb = sc.robustness
    if data.y is None:
        raise AuditorError("robustness attacks need labelled data", where="scenario robustness")
    n = min(rb.count, len(data.x))
    attacks = [{"name": a.attack, "params": a.params, "norm": a.norm, "epsilons": a.epsilons, "targeted": a.targeted}
               for a in rb.attacks]
    rep = robustness_audit(clf, data.x[:n], data.y[:n], attacks, verify=verifier, seed=seed)
    rep["count"] = n
    checks: list[Check] = []
    for c in sc.checks.min_robust_accuracy:
        row = check_min_robust_accuracy(rep, c.attack, c.norm, c.epsilon, c.threshold)
        checks.append(make(f"min_robust_accuracy[{c.attack}@{c.epsilon:g}]", profile, row["measured"], c.threshold, ">="))
    if sc.checks.max_attack_success_rate is not None:
        rates = [r["attack_success_rate"] for a in rep["attacks"] for r in a["results"]]
        checks.append(make("max_attack_success_rate", profile, max(rates) if rates else None,
                           sc.checks.max_attack_success_rate, "<=", "" if rates else "no evasion attack ran"))
    if sc.checks.min_median_l2 is not None:
        meds = [a["minimal_perturbation"]["median_l2"] for a in rep["attacks"] if "minimal_perturbation" in a]
        meds = [float("inf") if m is None else m for m in meds]
        checks.append(make("min_median_l2", profile, min(meds) if meds else None, sc.checks.min_median_l2, ">=",
                           "" if meds else "no minimal-norm attack ran"))
    return rep, checks


def profile_classifier(proto, profile: HardwareProfile, sc: Scenario, threads: int = 0):
    """The classifier a profile deploys: the model, reshaped as the profile declares, run on the
    profile's approximate multiplier when it has one (BPDA gradients)."""
    m = reshape_model(proto, profile.reshape) if profile.reshape is not None else proto
    if profile.approx is not None:
        from .approx import ApproxClassifier

        return ApproxClassifier(m, sc.preprocessing, profile.approx, threads=threads, batch_size=sc.batch_size)
    return OnnxClassifier(m, sc.preprocessing, threads=threads, batch_size=sc.batch_size)


def run_approx_audit(clf, data, sc: Scenario, seed: int, threads: int) -> dict:
    """Exact vs approximate deployment of the same (reshaped) model (Defensive Approximation)."""
    from .approx import approx_audit

    if data.y is None:
        raise AuditorError("the approximate-hardware audit needs labelled data", where="scenario approx")
    a = sc.approx
    n = min(a.count, len(data.x))
    exact = OnnxClassifier(clf.base_model, sc.preprocessing, threads=threads, batch_size=sc.batch_size)
    sur = OnnxClassifier(sc.base_dir / a.surrogate, sc.preprocessing, threads=threads) if a.surrogate else None
    rep = approx_audit(exact, clf, data.x[:n], data.y[:n], a.transfer, seed, sur,
                       whitebox_attacks=a.whitebox, query_attacks=a.query, minimal_attacks=a.minimal,
                       substitute_attacks=None if sur is not None else [])
    rep["count"] = n
    return rep


class Deadline:
    """The --max-seconds budget: searches started after it expires are skipped, and a search
    running when it expires is stopped by its classifier (see OnnxClassifier.deadline)."""

    def __init__(self, max_seconds: float | None, t0: float):
        self.at = None if max_seconds is None else t0 + float(max_seconds)

    def expired(self) -> bool:
        return self.at is not None and time.monotonic() >= self.at


def audit_profile(proto, prof: HardwareProfile, sc: Scenario, data, seed: int, threads: int,
                  save_dir, deadline: Deadline) -> tuple[dict, list[Check]]:
    """Everything the audit does on one hardware profile (runs in a worker process with --jobs)."""
    from .session import BudgetExceeded

    clf = profile_classifier(proto, prof, sc, threads)
    if tuple(data.x.shape[1:]) != tuple(clf.input_shape):
        raise AuditorError(f"the data has per-input shape {tuple(data.x.shape[1:])} (NCHW) but the model expects "
                           f"{tuple(clf.input_shape)} after preprocessing", where=data.description)
    cm = prof.build_cost_model()
    ev = evaluate(clf, data.x, cm, sc.density_tensors)
    if not np.all(np.isfinite(ev.logits)):
        raise AuditorError("the model produced NaN or infinite logits on the audit data")
    c = ev.cost
    worst = int(np.argmax(c.latency_s))
    acc = float((ev.pred == data.y).mean()) if data.y is not None else None
    pr = {
        "name": prof.name, "path": prof.path, "cost_model": prof.cost_model, "description": prof.description,
        "profile": prof.to_dict(),
        "clean": {
            "accuracy": acc,
            "density": dict(_stats(ev.model_density), counted=sc.density_tensors, tensors=list(ev.counted),
                            rule=density_rule(clf.probes, sc.density_tensors)),
            "tensor_density": {t: float(v.mean()) for t, v in ev.densities.items()},
            "latency_s": _stats(c.latency_s), "energy_j": _stats(c.energy_total_j), "edp": _stats(c.edp),
            "cycles": _stats(c.total_cycles), "dense_cycles": _stats(c.dense_cycles.sum(axis=1)),
            "speedup_over_dense": _stats(c.speedup),
            "energy_breakdown_j": {k: float(v.mean()) for k, v in c.breakdown.items()},
            "layer_shares": c.shares(),
            "worst_input": {"index": worst, "layers": _layer_breakdown(clf, ev, worst)},
            "per_input": per_input(clf, ev),
        },
    }
    # how the logits were read (a final Softmax skipped, (N, C, 1, 1) flattened), and outputs that
    # look like probabilities although no Softmax was found
    notes = list(clf.head.notes)
    warning = probability_warning(ev.logits, clf.head)
    if warning:
        notes.append("warning: " + warning)
    if notes:
        pr["notes"] = notes
    summary = {
        "clean_mean_latency_s": float(c.latency_s.mean()), "clean_mean_energy_j": float(c.energy_total_j.mean()),
        "worst_latency_s": float(c.latency_s.max()), "worst_energy_j": float(c.energy_total_j.max()),
        "worst_edp": float(c.edp.max()), "worst_density": float(ev.model_density.max()),
        "clean_accuracy": acc,
    }
    cut_short: list[str] = []
    # a fresh session over the same deployed model: the independent forward pass of every check
    verifier = profile_classifier(clf.base_model, dataclasses.replace(prof, reshape=None), sc, threads)
    clf.deadline = deadline
    attacks = []
    for k, spec in enumerate(sc.energy_attacks):
        from .energy import run_energy_attack, save_input

        try:
            if deadline.expired():
                raise BudgetExceeded
            section, worst_x = run_energy_attack(clf, verifier, cm, data.x, ev, spec, seed=seed + k,
                                                 base_dir=sc.base_dir, density_tensors=sc.density_tensors,
                                                 preprocessing=sc.preprocessing, labels=data.y)
        except BudgetExceeded:
            cut_short.append(spec.search)
            attacks.append({"search": spec.search, "cut_short": True})
            continue
        if worst_x is not None and save_dir is not None:
            stem = Path(save_dir) / f"{prof.name}-{k}-{section['search']}-worst"
            section["worst_input"]["files"] = save_input(worst_x, stem, sc.preprocessing.bounds)
        attacks.append(section)
        for key_sum, key_sec in (("worst_latency_s", "latency_s"), ("worst_energy_j", "energy_j"), ("worst_edp", "edp")):
            w = section[key_sec]["worst"]
            if w is not None:
                summary[key_sum] = max(summary[key_sum], w)
        if section["density_attacked_worst"] is not None:
            summary["worst_density"] = max(summary["worst_density"], section["density_attacked_worst"])
        for key in ("latency_increase", "energy_increase"):
            if section[key] is not None:
                summary[key] = max(summary.get(key, 0.0), section[key])
    pr["attacks"] = attacks
    if attacks:
        from .sponge.analysis import zero_threshold_summary

        # Müller & Quiring eq. 3: per BN->ReLU channel, the pre-BN value below which the ReLU
        # outputs zero; many negative thresholds = a layer that is easy to make dense
        pr["zero_thresholds"] = zero_threshold_summary(clf.base_model)
    pr["summary"] = summary
    pr_checks = hardware_checks(sc.checks, prof.name, summary)
    if sc.robustness is not None and sc.robustness.attacks:
        try:
            if deadline.expired():
                raise BudgetExceeded
            pr["robustness"], rchecks = run_robustness(clf, verifier, data, sc, seed, prof.name)
            pr_checks += rchecks
        except BudgetExceeded:
            cut_short.append("robustness")
    elif sc.checks.min_robust_accuracy or sc.checks.max_attack_success_rate is not None or sc.checks.min_median_l2 is not None:
        raise AuditorError("robustness checks are declared but the scenario runs no evasion attack (robustness.attacks)")
    if sc.approx is not None and prof.approx is not None and prof.approx.multiplier != "exact":
        try:
            if deadline.expired():
                raise BudgetExceeded
            pr["approx"] = run_approx_audit(clf, data, sc, seed, threads)
        except BudgetExceeded:
            cut_short.append("approx")
    clf.deadline = None
    if cut_short:
        # a search stopped by the budget never turns a failure into a pass: every check that
        # depends on the searches fails, saying why
        pr["cut_short"] = cut_short
        why = f"cut short by --max-seconds: {', '.join(cut_short)}"
        attack_checks = {"max_latency_increase", "max_energy_increase", "worst_case_latency_ms", "worst_case_energy_uj",
                         "worst_case_edp", "max_density", "max_attack_success_rate", "min_median_l2"}
        for ch in pr_checks:
            if ch.name in attack_checks or ch.name.startswith("min_robust_accuracy"):
                ch.passed, ch.detail = False, why
        if "robustness" in cut_short:
            for r in sc.checks.min_robust_accuracy:
                pr_checks.append(Check(f"min_robust_accuracy[{r.attack}@{r.epsilon:g}]", prof.name, None, r.threshold,
                                       ">=", False, why))
    pr["checks"] = [ch.to_dict() for ch in pr_checks]
    return pr, pr_checks


def run_audit(model, profiles, scenario, *, seed: int | None = None, threads: int = 0,
              save_dir: str | Path | None = None, baseline: str | Path | dict | None = None,
              max_seconds: float | None = None, jobs: int = 1) -> Report:
    """Audit ``model`` (path or ModelProto) on ``profiles`` (paths or HardwareProfile) under
    ``scenario`` (path or Scenario).  ``save_dir``: where the worst inputs are written (.npy, .png);
    ``max_seconds``: budget of the whole audit; ``jobs``: profiles audited in parallel processes."""
    t0 = time.monotonic()
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    model_path, proto, profs, sc = _load(model, profiles, scenario)
    old = None if baseline is None else baseline if isinstance(baseline, dict) else Report.load(baseline).data
    seed = sc.seed if seed is None else int(seed)
    data = load_data(sc.data, sc.base_dir, sc.preprocessing.bounds, seed)
    report: dict = {
        "schema_version": 1,
        "tool": {"name": "auditor", "version": __version__},
        "seed": seed,
        "model": {"path": model_path, "sha256": model_hash(proto), "opset": default_opset(proto)},
        "scenario": dict(schema.to_dict(sc), path=str(getattr(sc, "base_dir", ""))),
        "data": {"description": data.description, "count": int(len(data.x)), "labels": data.y is not None,
                 "shape": list(data.x.shape[1:])},
        "profiles": [],
    }
    deadline = Deadline(max_seconds, t0)
    jobs = max(1, min(int(jobs), len(profs)))
    args = [(proto, prof, sc, data, seed, threads if threads or jobs == 1 else max(1, (os.cpu_count() or 2) // jobs),
             save_dir, deadline) for prof in profs]
    if jobs == 1:
        results = [audit_profile(*a) for a in args]
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn")) as pool:
            results = list(pool.map(audit_profile, *zip(*args)))
    checks: list[Check] = []
    for pr, pr_checks in results:
        checks += pr_checks
        report["profiles"].append(pr)
    cut = [f"{pr['name']}:{name}" for pr in report["profiles"] for name in pr.get("cut_short", [])]
    if cut or max_seconds is not None:
        report["budget"] = {"max_seconds": max_seconds, "cut_short": cut}
    if old is not None:
        from .baseline import regression_checks

        checks += regression_checks(sc.regression, old, report)
        report["baseline"] = {"path": None if isinstance(baseline, dict) else str(baseline),
                              "model_sha256": old.get("model", {}).get("sha256")}
    report["checks"] = [ch.to_dict() for ch in checks]
    report["verdict"] = "PASS" if all(ch.passed for ch in checks) else "FAIL"
    report["timing"] = {"started": started, "seconds": round(time.monotonic() - t0, 3)}
    return Report(report)
