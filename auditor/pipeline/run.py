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

from .. import progress, schema
from ..version import __version__
from .checks import Check, evaluate as evaluate_checks
from ..data import load_data
from ..errors import AuditorError
from ..runtime.evaluate import Evaluation, batch_note, evaluate, per_input
from ..hw.profile import HardwareProfile, load_profile
from ..model.load import default_opset, load_model, load_notes, model_hash, prepare
from ..environment import environment
from ..report.core import SCHEMA_VERSION, Report, verdict_of
from .sanity import sanity_warnings
from ..scenario import Scenario, attack_entries, load_scenario
from .robustness import robustness_audit
from ..model.rewrite.instrument import density_rule
from ..runtime.session import OnnxClassifier, probability_warning
from .stats import sample_stats
from .units import AuditContext, Unit, cached, chunk_bounds, merge, unit_seed


def _load(model, profiles, scenario):
    if isinstance(scenario, Scenario):
        sc = scenario
    else:
        from ..validate import check_references

        sc = load_scenario(scenario)
        check_references(sc, *schema.load_yaml(scenario))  # bad names fail before any work
    model_path = str(model) if isinstance(model, (str, Path)) else "<in-memory model>"
    pre = sc.preprocessing
    if isinstance(model, (str, Path)):
        proto = load_model(model, input_size=pre.input_size, layout=pre.layout)
    else:
        proto = model if pre.input_size is None else prepare(model, model_path, input_size=pre.input_size,
                                                             layout=pre.layout)
    profs = [p if isinstance(p, HardwareProfile) else load_profile(p) for p in profiles]
    if not profs:
        raise AuditorError("no hardware profile given (use --hw PROFILE.yaml)")
    names = [p.name for p in profs]
    if len(set(names)) != len(names):
        raise AuditorError(f"two hardware profiles share the name '{[n for n in names if names.count(n) > 1][0]}'")
    if sc.energy_attacks:
        from ..attacks.energy.analysis import bn_zero_thresholds

        bn_zero_thresholds(proto)  # its preconditions (constant BN parameters) fail before any search
    return model_path, proto, profs, sc


def _layer_breakdown(clf: OnnxClassifier, ev: Evaluation, i: int) -> list[dict]:
    c = ev.cost
    rows = []
    for j, layer in enumerate(clf.probes.layers):
        rows.append({"layer": layer.name, "op": layer.op_type, "macs": layer.macs,
                     "input_density": float(ev.densities[layer.input][i]),
                     "cycles": int(c.cycles[i, j]), "dense_cycles": int(c.dense_cycles[i, j]),
                     "energy_j": float(c.energy_j[i, j])})
    return rows


def reshape_model(proto, r, calibration=None, preprocessing=None):
    """Apply a profile's `reshape:` section (HashNet first, then gradient inhibition, then k-bit
    quantisation, its activation scales calibrated on ``calibration``: the scenario's clean data)."""
    from ..model.rewrite.reshape import apply_reshaping

    spec = {}
    if r.hashnet_ratio is not None:
        spec["hashnet"] = {"ratio": r.hashnet_ratio, "layers": r.hashnet_layers, "seed": r.seed}
    if r.gradient_inhibition_tau is not None:
        spec["gradient_inhibition"] = {"tau": r.gradient_inhibition_tau, "layers": r.gradient_inhibition_layers}
    m = apply_reshaping(proto, spec)
    if r.quantize_bits is not None:
        from ..model.rewrite.quantize import quantize_model

        m = quantize_model(m, r.quantize_bits, activations=r.quantize_activations, per_channel=r.quantize_per_channel,
                           calibration=calibration, preprocessing=preprocessing)
    return m


def _evasion_entries(sc: Scenario) -> list[dict]:
    return attack_entries(sc.robustness.attacks)


def profile_classifier(proto, profile: HardwareProfile, sc: Scenario, threads: int = 0, calibration=None):
    """The classifier a profile deploys: the model, reshaped as the profile declares, run on the
    profile's approximate multiplier when it has one (BPDA gradients)."""
    m = reshape_model(proto, profile.reshape, calibration, sc.preprocessing) if profile.reshape is not None else proto
    if profile.approx is not None:
        from ..runtime.approx import ApproxClassifier

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
    rep = approx_audit(exact, clf, data.x[:n], data.y[:n], attack_entries(a.transfer), seed, sur,
                       whitebox_attacks=attack_entries(a.whitebox), query_attacks=attack_entries(a.query),
                       minimal_attacks=attack_entries(a.minimal),
                       substitute_attacks=None if sur is not None else [])
    rep["count"] = n
    return rep


class Deadline:
    """The --max-seconds budget of the whole audit, a hard bound: imports, model loading, session
    and gradient-graph building, the clean evaluation, the searches and the report all count.
    Work is checked against it before every unit, every onnxruntime batch and every gradient build,
    with an estimate of how long that takes (neither can be interrupted), and ``reserve`` seconds
    are kept for the report.  Wall-clock time, so that it means the same in every worker process."""

    def __init__(self, max_seconds: float | None, t0: float | None = None, reserve: float | None = None):
        t0 = time.time() if t0 is None else t0
        self.at = None if max_seconds is None else t0 + float(max_seconds)
        if reserve is None:  # assembling and rendering the report
            reserve = 0.0 if max_seconds is None else min(5.0, max(0.5, 0.02 * float(max_seconds)))
        self.reserve = float(reserve)

    def expired(self, need: float = 0.0) -> bool:
        """Whether the budget is spent, or would be by work of ``need`` seconds started now."""
        return self.at is not None and time.time() + max(float(need), 0.0) >= self.at - self.reserve

    def remaining(self) -> float:
        return float("inf") if self.at is None else self.at - self.reserve - time.time()


def cut_profile(prof: HardwareProfile, sc: Scenario) -> tuple[dict, list[Check]]:
    """The report of a profile whose clean evaluation the budget cut short: every check undecided."""
    pr = {"name": prof.name, "path": prof.path, "cost_model": prof.cost_model, "description": prof.description,
          "profile": prof.to_dict(), "cut_short": ["clean"], "summary": {}, "attacks": []}
    checks = evaluate_checks(sc, "checks", prof.name, pr)
    pr["checks"] = [ch.to_dict() for ch in checks]
    return pr, checks


# --------------------------------------------------------------------------------------------
# the units of an audit (see auditor.pipeline.units): what each runs in a worker
# --------------------------------------------------------------------------------------------


class _Profile:
    """What the units of one profile share in a worker: the deployed classifier, a fresh session
    over the same deployed model (the independent forward pass of every check) and the cost model."""

    def __init__(self, ctx: AuditContext, p: int):
        self.ctx, self.prof = ctx, ctx.profiles[p]
        self.clf = profile_classifier(ctx.proto, self.prof, ctx.scenario, ctx.threads, calibration=ctx.data.x)
        self.cm = self.prof.build_cost_model()
        self._verifier = None

    @property
    def verifier(self):
        if self._verifier is None:
            self._verifier = profile_classifier(self.clf.base_model, dataclasses.replace(self.prof, reshape=None),
                                                self.ctx.scenario, self.ctx.threads)
        return self._verifier


def _state(ctx: AuditContext, p: int) -> _Profile:
    return cached(ctx, ("profile", p), lambda: _Profile(ctx, p))


def _search(ctx: AuditContext, k: int):
    from .energy import make_energy_search

    sc = ctx.scenario
    return cached(ctx, ("search", k), lambda: make_energy_search(sc.energy_attacks[k], sc.base_dir, sc.preprocessing))


def _evasion_spec(ctx: AuditContext, k: int) -> dict:
    from .robustness import parse_attacks

    return cached(ctx, ("evasion", k), lambda: parse_attacks([_evasion_entries(ctx.scenario)[k]])[0])


class _budget:
    """The deadline on a classifier for the duration of a unit."""

    def __init__(self, clf, deadline):
        self.clf, self.deadline = clf, deadline

    def __enter__(self):
        self.clf.deadline = self.deadline

    def __exit__(self, *exc):
        self.clf.deadline = None


def clean_unit(ctx: AuditContext, u: Unit, deadline) -> Evaluation:
    """Forward pass and cost simulation of a chunk of the data on a profile."""
    st = _state(ctx, u.profile)
    x = ctx.data.x[u.start:u.stop]
    if tuple(x.shape[1:]) != tuple(st.clf.input_shape):
        raise AuditorError(f"the data has per-input shape {tuple(x.shape[1:])} (NCHW) but the model expects "
                           f"{tuple(st.clf.input_shape)} after preprocessing", where=ctx.data.description)
    with _budget(st.clf, deadline):  # the clean evaluation counts too, batch by batch
        return evaluate(st.clf, x, st.cm, ctx.scenario.density_tensors)


def energy_unit(ctx: AuditContext, u: Unit, deadline) -> dict:
    """An energy-latency search on a chunk of its inputs (``u.args``: the layer weights W_l)."""
    from .energy import search_part

    st, sc = _state(ctx, u.profile), ctx.scenario
    search, _ = _search(ctx, u.index)
    # the verification forward passes count too: a search not verified in time does not count
    with _budget(st.clf, deadline), _budget(st.verifier, deadline):
        return search_part(st.clf, st.verifier, st.cm, ctx.data.x[u.start:u.stop], search, sc.energy_attacks[u.index],
                           u.args, seed=u.seed, density_tensors=sc.density_tensors)


def evasion_unit(ctx: AuditContext, u: Unit, deadline) -> dict:
    """An evasion attack, all its ε, on a chunk of its inputs (``u.args``: random targets or None)."""
    from .robustness import attack_part, check_labelled

    st = _state(ctx, u.profile)
    x, y = check_labelled(ctx.data.x[u.start:u.stop], ctx.data.y[u.start:u.stop])
    with _budget(st.clf, deadline), _budget(st.verifier, deadline):
        return attack_part(st.clf, st.verifier, x, y, _evasion_spec(ctx, u.index), targets=u.args, seed=u.seed)


def approx_unit(ctx: AuditContext, u: Unit, deadline) -> dict:
    """The exact-vs-approximate comparison of a profile."""
    st = _state(ctx, u.profile)
    with _budget(st.clf, deadline):
        return run_approx_audit(st.clf, ctx.data, ctx.scenario, ctx.seed, ctx.threads)


def masking_unit(ctx: AuditContext, u: Unit, deadline) -> dict:
    """The gradient-masking diagnosis of a profile (:mod:`auditor.pipeline.masking`)."""
    from .masking import run_masking

    st = _state(ctx, u.profile)
    with _budget(st.clf, deadline):
        return run_masking(st.clf, st.verifier, ctx.proto, st.prof, ctx.data, ctx.scenario, ctx.seed, ctx.threads)


def finish_unit(ctx: AuditContext, u: Unit, deadline):
    """A profile's report section and checks from its merged results (``u.args``: the clean
    evaluation, per energy search and for the evasion attacks the merged parts or None when cut
    short, the approx report, None or "cut", and optionally the masking diagnosis, None or "cut").
    Returns (section, checks, worst input per search)."""
    from .energy import energy_section, input_independent, skipped_section
    from .robustness import robustness_report

    st, sc, data = _state(ctx, u.profile), ctx.scenario, ctx.data
    prof, clf = st.prof, st.clf
    ev, energy, evasion, approx = u.args[:4]
    masking = u.args[4] if len(u.args) > 4 else None
    c = ev.cost
    worst = int(np.argmax(c.latency_s))
    acc = float((ev.pred == data.y).mean()) if data.y is not None else None
    pr = {
        "name": prof.name, "path": prof.path, "cost_model": prof.cost_model, "description": prof.description,
        "profile": prof.to_dict(),
        "clean": {
            "accuracy": acc,
            "batch": batch_note(clf),
            "classes": getattr(clf, "num_classes", None),
            "density": dict(sample_stats(ev.model_density, spread=True), counted=sc.density_tensors,
                            tensors=list(ev.counted), rule=density_rule(clf.probes, sc.density_tensors)),
            "tensor_density": {t: float(v.mean()) for t, v in ev.densities.items()},
            **{k: sample_stats(v, spread=True) for k, v in (
                ("latency_s", c.latency_s), ("energy_j", c.energy_total_j), ("edp", c.edp), ("cycles", c.total_cycles),
                ("dense_cycles", c.dense_cycles.sum(axis=1)), ("speedup_over_dense", c.speedup))},
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
    attacks, worst_inputs = [], {}
    for k, spec in enumerate(sc.energy_attacks):
        fixed = input_independent(st.cm, ev.cost, min(spec.count, len(data.x)))
        if fixed is not None:  # a machine that cannot be slowed: the search was not run (search_units)
            attacks.append(skipped_section(_search(ctx, k)[0], spec, ev, min(spec.count, len(data.x)), fixed))
            summary["latency_increase"] = max(summary.get("latency_increase", 0.0), 1.0)
            summary["energy_increase"] = max(summary.get("energy_increase", 0.0), 1.0)
            continue
        if energy[k] is None:
            cut_short.append(spec.search)
            attacks.append({"search": spec.search, "cut_short": True})
            continue
        search, params = _search(ctx, k)
        section, worst_x = energy_section(st.verifier, st.cm, data.x, ev, spec, search, params, energy[k],
                                          density_tensors=sc.density_tensors, labels=data.y)
        if worst_x is not None:
            worst_inputs[k] = worst_x
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
    if any(not a.get("cut_short") for a in attacks):
        from ..attacks.energy.analysis import zero_threshold_summary

        # Müller & Quiring eq. 3: per BN->ReLU channel, the pre-BN value below which the ReLU
        # outputs zero; many negative thresholds = a layer that is easy to make dense
        pr["zero_thresholds"] = zero_threshold_summary(clf.base_model)
    pr["summary"] = summary
    if _runs_evasion(sc):
        if evasion is None:
            cut_short.append("robustness")
        else:
            from .robustness import parse_attacks

            n = min(sc.robustness.count, len(data.x))
            rep = robustness_report(parse_attacks(_evasion_entries(sc)), evasion, data.y[:n])
            rep["count"] = n
            pr["robustness"] = rep
    if approx == "cut":
        cut_short.append("approx")
    elif approx is not None:
        pr["approx"] = approx
    if masking == "cut":
        cut_short.append("masking")
    elif masking is not None:
        pr["masking"] = masking
    if cut_short:
        # a search stopped by the budget never turns a failure into a pass: every check that
        # reads a stage cut short is not decided (auditor.pipeline.checks)
        pr["cut_short"] = cut_short
    pr_checks = evaluate_checks(sc, "checks", prof.name, pr)
    pr["checks"] = [ch.to_dict() for ch in pr_checks]
    return pr, pr_checks, worst_inputs


def _runs_evasion(sc: Scenario) -> bool:
    return sc.robustness is not None and bool(sc.robustness.attacks)


def _runs_approx(sc: Scenario, prof: HardwareProfile) -> bool:
    return sc.approx is not None and prof.approx is not None and prof.approx.multiplier != "exact"


def _check_plan(sc: Scenario, data, profs) -> None:
    """What the scenario asks that cannot work, before any work."""
    if _runs_evasion(sc) and data.y is None:
        raise AuditorError("robustness attacks need labelled data", where="scenario robustness")
    if not _runs_evasion(sc) and (sc.checks.min_robust_accuracy or sc.checks.max_attack_success_rate is not None
                                  or sc.checks.min_median_l2 is not None):
        raise AuditorError("robustness checks are declared but the scenario runs no evasion attack (robustness.attacks)")
    from .masking import runs_masking

    if sc.checks.no_gradient_masking and sc.robustness is None:
        raise AuditorError("checks.no_gradient_masking needs a robustness section (the diagnosis's inputs)")
    if data.y is None and any(runs_masking(sc, p) for p in profs):
        raise AuditorError("the gradient-masking diagnosis needs labelled data", where="scenario robustness.masking")
    if data.y is None and any(_runs_approx(sc, p) for p in profs):
        raise AuditorError("the approximate-hardware audit needs labelled data", where="scenario approx")


def search_units(ctx: AuditContext, clean: list[Evaluation]) -> list[Unit]:
    """The searches of every profile as units: energy searches by chunk of their inputs (whole
    when the search looks at its inputs together), evasion attacks by chunk, the approx audit."""
    from .energy import input_independent, layer_weights
    from .robustness import choose_targets
    from ..attacks.energy import search_class

    sc, data, seed, size = ctx.scenario, ctx.data, ctx.seed, ctx.scenario.chunk_size
    units = []
    for p, prof in enumerate(ctx.profiles):
        if clean[p] is None:  # the budget ended before its clean evaluation did
            continue
        cm = prof.build_cost_model()
        for k, spec in enumerate(sc.energy_attacks):
            n = min(spec.count, len(data.x))
            if input_independent(cm, clean[p].cost, n) is not None:
                continue  # every input costs the same: nothing to search for (finish_unit says so)
            w = layer_weights(clean[p], spec, n)
            for i, (a, b) in enumerate(chunk_bounds(n, size, search_class(spec.search).per_input)):
                units.append(Unit(f"{prof.name}/energy[{k}]:{spec.search}/{i}", energy_unit, p, k, i, a, b,
                                  unit_seed(seed + k, i), True, w))
        if _runs_evasion(sc):
            n = min(sc.robustness.count, len(data.x))
            for k, att in enumerate(sc.robustness.attacks):
                targets = None
                if att.targeted in (True, "random"):  # drawn over all the inputs, as in one piece
                    targets = choose_targets("random", data.y[:n].astype(np.int64),
                                             np.zeros((n, clean[p].logits.shape[1])), seed + k)
                for i, (a, b) in enumerate(chunk_bounds(n, size)):
                    units.append(Unit(f"{prof.name}/evasion[{k}]:{att.attack}/{i}", evasion_unit, p, k, i, a, b,
                                      unit_seed(seed + k, i), True, None if targets is None else targets[a:b]))
        if _runs_approx(sc, prof):
            units.append(Unit(f"{prof.name}/approx", approx_unit, p, timed=True))
        from .masking import runs_masking

        if runs_masking(sc, prof):
            units.append(Unit(f"{prof.name}/masking", masking_unit, p, timed=True))
    return units


def _by_unit(units: list[Unit], outcomes: list, kind) -> dict:
    """{(profile, index): [results in chunk order]} of the units running ``kind``, a result None
    when any chunk was cut short."""
    out: dict = {}
    for u, o in zip(units, outcomes):
        if u.fn is kind:
            out.setdefault((u.profile, u.index), []).append(None if o[0] == "cut" else o[1])
    return {key: None if any(v is None for v in vals) else merge(vals) for key, vals in out.items()}


#: stage of the audit each kind of unit belongs to (the report's profiles[].timing.stages)
_STAGES = {"clean_unit": "clean", "energy_unit": "energy_attacks", "evasion_unit": "robustness",
           "approx_unit": "approx", "masking_unit": "masking", "finish_unit": "statistics"}


def _stage_times(profs, runs) -> list[dict]:
    """Per profile, the seconds its units ran, summed by stage (work time: with --jobs the
    stages of different profiles overlap in wall time)."""
    out = [dict() for _ in profs]
    for units, outcomes in runs:
        for u, o in zip(units, outcomes):
            secs = o[2] if len(o) > 2 else None
            if secs is None:
                continue
            st = _STAGES.get(u.fn.__name__, u.fn.__name__)
            out[u.profile][st] = round(out[u.profile].get(st, 0.0) + float(secs), 3)
    return out


def _threads(threads: int, jobs: int, ray: str | None) -> int:
    if threads:
        return threads
    if ray is not None:
        return 1  # a Ray task has one CPU
    return 0 if jobs == 1 else max(1, (os.cpu_count() or 2) // jobs)


def saved_input_stem(profile: str, k: int, search: str) -> str:
    """File name (without suffix) of the worst input of search ``k`` on a profile (--save-inputs);
    the profile's name is the user's, so it is made a harmless file-name component."""
    from ..files import safe_name

    return f"{safe_name(profile)}-{k}-{safe_name(search)}-worst"


def _check_save_dir(save_dir, profs, sc: Scenario, force: bool) -> None:
    """Fail before any work when --save-inputs would overwrite files (without --force)."""
    from ..files import check_output, output_folder

    output_folder(save_dir, "saved inputs")
    for prof in profs:
        for k, spec in enumerate(sc.energy_attacks):
            for suffix in (".npy", ".png"):
                check_output(Path(save_dir) / (saved_input_stem(prof.name, k, spec.search) + suffix), force, "saved input")


def _check_fit(proto, sc: Scenario, scenario, data) -> None:
    """The scenario against the data and the model (mean/std channels, budgets, labels), before
    any work; errors are located in the scenario file when there is one."""
    from ..data import check_label_range
    from ..model.interface import num_classes

    if not isinstance(scenario, Scenario):
        from ..validate import check_scenario

        check_scenario(sc, *schema.load_yaml(scenario), tuple(data.x.shape[1:]), proto)
    check_label_range(data.y, num_classes(proto), data.description)


def run_audit(model, profiles, scenario, *, seed: int | None = None, threads: int = 0,
              save_dir: str | Path | None = None, baseline: str | Path | dict | None = None,
              max_seconds: float | None = None, jobs: int = 1, ray: str | None = None,
              force: bool = False, started_at: float | None = None) -> Report:
    """Audit ``model`` (path or ModelProto) on ``profiles`` (paths or HardwareProfile) under
    ``scenario`` (path or Scenario).  ``save_dir``: where the worst inputs are written (.npy, .png);
    ``max_seconds``: budget of the whole audit; ``jobs``: units of work run on this many local
    processes; ``ray``: run them on a Ray cluster instead ("local" starts one on this machine, else
    its address; Ray is imported only then); ``force``: overwrite saved inputs that exist.  Same
    inputs and seed give the same report either way.  ``started_at``: the ``time.monotonic()`` the budget
    counts from (the CLI: when the command started, so imports count); default now."""
    from .executors import make_executor

    t0 = time.monotonic() if started_at is None else float(started_at)
    wall0 = time.time() - (time.monotonic() - t0)
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    model_path, proto, profs, sc = _load(model, profiles, scenario)
    old = None if baseline is None else baseline if isinstance(baseline, dict) else Report.load(baseline).data
    if save_dir is not None:
        _check_save_dir(save_dir, profs, sc, force)
    seed = sc.seed if seed is None else int(seed)
    data = load_data(sc.data, sc.base_dir, sc.preprocessing.bounds, seed)
    _check_fit(proto, sc, scenario, data)
    _check_plan(sc, data, profs)
    report: dict = {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "auditor", "version": __version__},
        "seed": seed,
        "environment": environment(threads, jobs),
        "model": {"path": model_path, "sha256": model_hash(proto), "opset": default_opset(proto),
                  "load_notes": load_notes(proto)},
        "scenario": dict(schema.to_dict(sc), path=str(getattr(sc, "base_dir", ""))),
        "data": {"description": data.description, "count": int(len(data.x)), "labels": data.y is not None,
                 "shape": list(data.x.shape[1:])},
        "profiles": [],
    }
    deadline = Deadline(max_seconds, wall0)
    jobs = max(1, int(jobs))
    ctx = AuditContext(proto, profs, sc, data, seed, _threads(threads, jobs, ray))
    with make_executor(ctx, jobs, ray) as ex:
        # 1. clean evaluation and cost simulation, chunk by chunk
        cu = [Unit(f"{prof.name}/clean/{i}", clean_unit, p, 0, i, a, b, timed=True)
              for p, prof in enumerate(profs) for i, (a, b) in enumerate(chunk_bounds(len(data.x), sc.chunk_size))]
        cout = ex.run(cu, deadline, "clean evaluation" + progress.first_compile_note())
        # a profile whose clean evaluation the budget cut short decides nothing (cut_profile)
        clean = [None if any(o[0] == "cut" for u, o in zip(cu, cout) if u.profile == p)
                 else merge([o[1] for u, o in zip(cu, cout) if u.profile == p]) for p in range(len(profs))]
        for ev in clean:
            if ev is not None and not np.all(np.isfinite(ev.logits)):
                raise AuditorError("the model produced NaN or infinite logits on the audit data")
        # 2. the searches, chunk by chunk (their layer weights and targets come from step 1)
        su = search_units(ctx, clean)
        sout = ex.run(su, deadline, "searches")
        cut_units = [u.uid for u, o in zip(cu + su, cout + sout) if o[0] == "cut"]
        energy, evasion, approx = _by_unit(su, sout, energy_unit), _by_unit(su, sout, evasion_unit), _by_unit(su, sout, approx_unit)
        masking = _by_unit(su, sout, masking_unit)
        # 3. statistics and checks of each profile, from the merged per-input results
        fu = []
        for p, prof in enumerate(profs):
            if clean[p] is None:
                continue
            ev_parts = [evasion[(p, k)] for k in range(len(sc.robustness.attacks))] if _runs_evasion(sc) else []
            fu.append(Unit(f"{prof.name}/finish", finish_unit, p, args=(
                clean[p], [energy.get((p, k)) for k in range(len(sc.energy_attacks))],
                None if any(e is None for e in ev_parts) or not ev_parts else ev_parts,
                ("cut" if approx[(p, 0)] is None else approx[(p, 0)]) if (p, 0) in approx else None,
                ("cut" if masking[(p, 0)] is None else masking[(p, 0)]) if (p, 0) in masking else None)))
        fout = ex.run(fu, None, "statistics")
    times = _stage_times(profs, [(cu, cout), (su, sout), (fu, fout)])
    checks: list[Check] = []
    finished = iter(fout)
    for p, prof in enumerate(profs):
        _, (pr, pr_checks, worst_inputs), *_ = next(finished) if clean[p] is not None else (None, (*cut_profile(prof, sc), {}))
        pr["timing"] = {"seconds": round(sum(times[p].values()), 3), "stages": times[p]}
        if save_dir is not None and _runs_evasion(sc) and pr.get("robustness"):
            from ..report.evidence import attach_examples

            attach_examples(pr["robustness"], [evasion[(p, k)] for k in range(len(sc.robustness.attacks))],
                            data.x, data.y, save_dir, prof.name, sc.preprocessing.bounds, force=force)
        for k, x in worst_inputs.items():
            if save_dir is not None:
                from .energy import save_input

                stem = Path(save_dir) / saved_input_stem(prof.name, k, pr["attacks"][k]["search"])
                pr["attacks"][k]["worst_input"]["files"] = save_input(x, stem, sc.preprocessing.bounds, force)
        checks += pr_checks
        report["profiles"].append(pr)
    cut = [f"{pr['name']}:{name}" for pr in report["profiles"] for name in pr.get("cut_short", [])]
    if cut or max_seconds is not None:
        report["budget"] = {"max_seconds": max_seconds, "cut_short": cut, "cut_short_units": cut_units}
    if old is not None:
        from .baseline import regression_checks

        checks += regression_checks(sc.regression, old, report)
        report["baseline"] = {"path": None if isinstance(baseline, dict) else str(baseline),
                              "model_sha256": old.get("model", {}).get("sha256"),
                              "model_path": old.get("model", {}).get("path"),
                              "scenario": (old.get("scenario") or {}).get("name"),
                              "verdict": old.get("verdict"),
                              "profiles": {p.get("name"): p.get("summary") for p in old.get("profiles", [])}}
    report["warnings"] = sanity_warnings(report, sc, old)
    for w in report["warnings"]:
        progress.log(f"warning: {w['message']}")
    report["checks"] = [ch.to_dict() for ch in checks]
    report["verdict"] = verdict_of(report["checks"], cut_short=bool(cut))
    report["timing"] = {"started": started, "seconds": round(time.monotonic() - t0, 3)}
    return Report(report, files_dir=Path(save_dir).resolve() if save_dir is not None else None)
