"""The audit pipeline: model -> rewrite -> session -> search -> cost -> verdict.

``run_audit`` is what ``auditor audit`` and the Python API call.  It loads and validates every
input first (so bad input fails before any work), evaluates the clean data on every hardware
profile, runs the scenario's searches, re-verifies every reported input with an independent
forward pass and cost simulation, evaluates the checks and returns a :class:`Report`.
"""

from __future__ import annotations

import datetime as _dt
import os
import time
from pathlib import Path

import numpy as np

from .. import progress, schema
from ..attacks.energy.analysis import bn_zero_thresholds, zero_threshold_summary
from ..data import check_label_range, load_data
from ..environment import environment
from ..errors import AuditorError
from ..files import check_output, output_folder, safe_name
from ..hw.profile import HardwareProfile, load_profile
from ..model.interface import num_classes
from ..model.load import default_opset, load_model, load_notes, model_hash, prepare
from ..report.core import SCHEMA_VERSION, Report, verdict_of
from ..report.evidence import attach_examples
from ..runtime.engine import huge_model, return_freed_memory
from ..runtime.evaluate import Evaluation
from ..runtime.session import OnnxClassifier
from ..scenario import Scenario, attack_entries, load_scenario
from ..validate import check_references, check_scenario
from ..version import __version__
from .approx import approx_audit
from .baseline import regression_checks
from .checks import Check, evaluate as evaluate_checks
from .clean import clean_section, clean_units
from .deployed import budget, deployed
from .energy import energy_sections, energy_unit, energy_units, save_input
from .executors import make_executor
from .masking import masking_unit, runs_masking
from .evasion import evasion_unit, evasion_units, robustness_section, runs_evasion
from .sanity import sanity_warnings
from .units import AuditContext, Unit, merge, stage_of


def _load(model, profiles, scenario):
    if isinstance(scenario, Scenario):
        sc = scenario
    else:
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
        bn_zero_thresholds(proto)  # its preconditions (constant BN parameters) fail before any search
    return model_path, proto, profs, sc


def run_approx_audit(clf, data, sc: Scenario, seed: int, threads: int) -> dict:
    """Exact vs approximate deployment of the same (reshaped) model (Defensive Approximation)."""
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


def approx_unit(ctx: AuditContext, u: Unit, deadline) -> dict:
    """The exact-vs-approximate comparison of a profile."""
    st = deployed(ctx, u.profile)
    with budget(st.clf, deadline):
        return run_approx_audit(st.clf, ctx.data, ctx.scenario, ctx.seed, ctx.threads)


def finish_unit(ctx: AuditContext, u: Unit, deadline):
    """A profile's report section and checks from its merged results (``u.args``: the clean
    evaluation, per energy search and for the evasion attacks the merged parts or None when cut
    short, the approx report, None or "cut", and optionally the masking diagnosis, None or "cut"):
    each stage's module builds its section.  Returns (section, checks, worst input per search)."""
    st, sc = deployed(ctx, u.profile), ctx.scenario
    ev, energy, evasion, approx = u.args[:4]
    masking = u.args[4] if len(u.args) > 4 else None
    pr, summary = clean_section(st, ev, ctx.data, sc)
    pr["attacks"], worst_inputs, cut_short = energy_sections(ctx, st, ev, energy, summary)
    if any(not a.get("cut_short") for a in pr["attacks"]):
        # Müller & Quiring eq. 3: per BN->ReLU channel, the pre-BN value below which the ReLU
        # outputs zero; many negative thresholds = a layer that is easy to make dense
        pr["zero_thresholds"] = zero_threshold_summary(st.clf.base_model)
    pr["summary"] = summary
    if runs_evasion(sc):
        if evasion is None:
            cut_short.append("robustness")
        else:
            pr["robustness"] = robustness_section(ctx, evasion)
    for name, result in (("approx", approx), ("masking", masking)):
        if result == "cut":
            cut_short.append(name)
        elif result is not None:
            pr[name] = result
    if cut_short:
        # a search stopped by the budget never turns a failure into a pass: every check that
        # reads a stage cut short is not decided (auditor.pipeline.checks)
        pr["cut_short"] = cut_short
    pr_checks = evaluate_checks(sc, "checks", st.prof.name, pr)
    pr["checks"] = [ch.to_dict() for ch in pr_checks]
    return pr, pr_checks, worst_inputs


def _runs_approx(sc: Scenario, prof: HardwareProfile) -> bool:
    return sc.approx is not None and prof.approx is not None and prof.approx.multiplier != "exact"


def _check_plan(sc: Scenario, data, profs) -> None:
    """What the scenario asks that cannot work, before any work."""
    if runs_evasion(sc) and data.y is None:
        raise AuditorError("robustness attacks need labelled data", where="scenario robustness")
    if not runs_evasion(sc) and (sc.checks.min_robust_accuracy or sc.checks.max_attack_success_rate is not None
                                  or sc.checks.min_median_l2 is not None):
        raise AuditorError("robustness checks are declared but the scenario runs no evasion attack (robustness.attacks)")
    if sc.checks.no_gradient_masking and sc.robustness is None:
        raise AuditorError("checks.no_gradient_masking needs a robustness section (the diagnosis's inputs)")
    if data.y is None and any(runs_masking(sc, p) for p in profs):
        raise AuditorError("the gradient-masking diagnosis needs labelled data", where="scenario robustness.masking")
    if data.y is None and any(_runs_approx(sc, p) for p in profs):
        raise AuditorError("the approximate-hardware audit needs labelled data", where="scenario approx")


def search_units(ctx: AuditContext, clean: list[Evaluation]) -> list[Unit]:
    """The searches of every profile whose clean evaluation ended, as units: energy searches and
    evasion attacks by chunk (their layer weights and targets from the clean evaluation), the
    approx audit and the masking diagnosis whole.  Ordered search by search, each on every
    profile in turn (a search's gradient sessions serve the profiles that deploy the same model,
    and are released when the next search starts: :func:`~auditor.pipeline.units.run_unit`)."""
    per_profile = []
    for p, prof in enumerate(ctx.profiles):
        if clean[p] is None:  # the budget ended before its clean evaluation did
            continue
        units = energy_units(ctx, p, clean[p]) + evasion_units(ctx, p, clean[p].logits)
        if _runs_approx(ctx.scenario, prof):
            units.append(Unit(f"{prof.name}/approx", approx_unit, p, timed=True))
        if runs_masking(ctx.scenario, prof):
            units.append(Unit(f"{prof.name}/masking", masking_unit, p, timed=True))
        per_profile.append(units)
    order = {}  # each search (its stage) in the order the first profile that runs it has it
    for units in per_profile:
        for u in units:
            order.setdefault(stage_of(ctx, u), len(order))
    return sorted((u for units in per_profile for u in units), key=lambda u: order[stage_of(ctx, u)])


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
    return f"{safe_name(profile)}-{k}-{safe_name(search)}-worst"


def _check_save_dir(save_dir, profs, sc: Scenario, force: bool) -> None:
    """Fail before any work when --save-inputs would overwrite files (without --force)."""
    output_folder(save_dir, "saved inputs")
    for prof in profs:
        for k, spec in enumerate(sc.energy_attacks):
            for suffix in (".npy", ".png"):
                check_output(Path(save_dir) / (saved_input_stem(prof.name, k, spec.search) + suffix), force, "saved input")


def _check_fit(proto, sc: Scenario, scenario, data) -> None:
    """The scenario against the data and the model (mean/std channels, budgets, labels), before
    any work; errors are located in the scenario file when there is one."""
    if not isinstance(scenario, Scenario):
        check_scenario(sc, *schema.load_yaml(scenario), tuple(data.x.shape[1:]), proto)
    check_label_range(data.y, num_classes(proto), data.description)


def _merge_clean(ctx: AuditContext, cu: list[Unit], cout: list) -> list:
    """Per profile the merged clean evaluation, None when the budget cut it short (such a profile
    decides nothing: cut_profile)."""
    clean = [None if any(o[0] == "cut" for u, o in zip(cu, cout) if u.profile == p)
             else merge([o[1] for u, o in zip(cu, cout) if u.profile == p]) for p in range(len(ctx.profiles))]
    for ev in clean:
        if ev is not None and not np.all(np.isfinite(ev.logits)):
            raise AuditorError("the model produced NaN or infinite logits on the audit data")
    return clean


def finish_units(ctx: AuditContext, clean: list, su: list[Unit], sout: list) -> list[Unit]:
    """One finish_unit per profile whose clean evaluation ended, with its merged search results."""
    sc = ctx.scenario
    energy, evasion = _by_unit(su, sout, energy_unit), _by_unit(su, sout, evasion_unit)
    approx, masking = _by_unit(su, sout, approx_unit), _by_unit(su, sout, masking_unit)
    fu = []
    for p, prof in enumerate(ctx.profiles):
        if clean[p] is None:
            continue
        ev_parts = [evasion[(p, k)] for k in range(len(sc.robustness.attacks))] if runs_evasion(sc) else []
        fu.append(Unit(f"{prof.name}/finish", finish_unit, p, args=(
            clean[p], [energy.get((p, k)) for k in range(len(sc.energy_attacks))],
            None if any(e is None for e in ev_parts) or not ev_parts else ev_parts,
            ("cut" if approx[(p, 0)] is None else approx[(p, 0)]) if (p, 0) in approx else None,
            ("cut" if masking[(p, 0)] is None else masking[(p, 0)]) if (p, 0) in masking else None)))
    return fu


def _save_evidence(pr: dict, p: int, worst_inputs: dict, evasion: dict, ctx: AuditContext, save_dir, force: bool) -> None:
    """--save-inputs: the evasion examples and the worst input of each energy search, on disk."""
    sc, data = ctx.scenario, ctx.data
    if runs_evasion(sc) and pr.get("robustness"):
        attach_examples(pr["robustness"], [evasion[(p, k)] for k in range(len(sc.robustness.attacks))],
                        data.x, data.y, save_dir, pr["name"], sc.preprocessing.bounds, force=force)
    for k, x in worst_inputs.items():
        stem = Path(save_dir) / saved_input_stem(pr["name"], k, pr["attacks"][k]["search"])
        pr["attacks"][k]["worst_input"]["files"] = save_input(x, stem, sc.preprocessing.bounds, force)


def _baseline_section(old: dict, baseline) -> dict:
    return {"path": None if isinstance(baseline, dict) else str(baseline),
            "model_sha256": old.get("model", {}).get("sha256"),
            "model_path": old.get("model", {}).get("path"),
            "scenario": (old.get("scenario") or {}).get("name"),
            "verdict": old.get("verdict"),
            "profiles": {p.get("name"): p.get("summary") for p in old.get("profiles", [])}}


def run_audit(model, profiles, scenario, *, seed: int | None = None, threads: int = 0,
              save_dir: str | Path | None = None, baseline: str | Path | dict | None = None,
              max_seconds: float | None = None, jobs: int = 1, ray: str | None = None,
              force: bool = False, started_at: float | None = None, return_memory: bool = False) -> Report:
    """Audit ``model`` (path or ModelProto) on ``profiles`` (paths or HardwareProfile) under
    ``scenario`` (path or Scenario).  ``save_dir``: where the worst inputs are written (.npy, .png);
    ``max_seconds``: budget of the whole audit; ``jobs``: units of work run on this many local
    processes; ``ray``: run them on a Ray cluster instead ("local" starts one on this machine, else
    its address; Ray is imported only then); ``force``: overwrite saved inputs that exist.  Same
    inputs and seed give the same report either way.  ``started_at``: the ``time.monotonic()`` the budget
    counts from (the CLI: when the command started, so imports count); default now.
    ``return_memory``: this process and its workers give freed tensors back to the system when the
    model is huge (:func:`~auditor.runtime.engine.return_freed_memory`; the command line's choice,
    as it changes the process's allocator)."""
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
    ctx = AuditContext(proto, profs, sc, data, seed, _threads(threads, jobs, ray),
                       return_memory=bool(return_memory) and huge_model(proto))
    if ctx.return_memory:
        return_freed_memory()
    with make_executor(ctx, jobs, ray) as ex:
        # 1. clean evaluation and cost simulation, chunk by chunk
        cu = clean_units(ctx)
        cout = ex.run(cu, deadline, "clean evaluation" + progress.first_compile_note())
        clean = _merge_clean(ctx, cu, cout)
        # 2. the searches, chunk by chunk (their layer weights and targets come from step 1)
        su = search_units(ctx, clean)
        sout = ex.run(su, deadline, "searches")
        # 3. statistics and checks of each profile, from the merged per-input results
        fu = finish_units(ctx, clean, su, sout)
        fout = ex.run(fu, None, "statistics")
    times = _stage_times(profs, [(cu, cout), (su, sout), (fu, fout)])
    checks: list[Check] = []
    finished = iter(fout)
    evasion = _by_unit(su, sout, evasion_unit)
    for p, prof in enumerate(profs):
        _, (pr, pr_checks, worst_inputs), *_ = next(finished) if clean[p] is not None else (None, (*cut_profile(prof, sc), {}))
        pr["timing"] = {"seconds": round(sum(times[p].values()), 3), "stages": times[p]}
        if save_dir is not None:
            _save_evidence(pr, p, worst_inputs, evasion, ctx, save_dir, force)
        checks += pr_checks
        report["profiles"].append(pr)
    cut = [f"{pr['name']}:{name}" for pr in report["profiles"] for name in pr.get("cut_short", [])]
    if cut or max_seconds is not None:
        report["budget"] = {"max_seconds": max_seconds, "cut_short": cut,
                            "cut_short_units": [u.uid for u, o in zip(cu + su, cout + sout) if o[0] == "cut"]}
    if old is not None:
        checks += regression_checks(sc.regression, old, report)
        report["baseline"] = _baseline_section(old, baseline)
    report["warnings"] = sanity_warnings(report, sc, old)
    for w in report["warnings"]:
        progress.log(f"warning: {w['message']}")
    report["checks"] = [ch.to_dict() for ch in checks]
    report["verdict"] = verdict_of(report["checks"], cut_short=bool(cut))
    report["timing"] = {"started": started, "seconds": round(time.monotonic() - t0, 3)}
    return Report(report, files_dir=Path(save_dir).resolve() if save_dir is not None else None)
