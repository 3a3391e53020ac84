"""The energy-latency part of the audit: run a scenario's searches on a profile and verify them.

Each search maximises the simulated cost (latency or energy) on one hardware profile, with the
sparsity objective's layer weights W_l set to the layers' share of that cost on clean inputs.
Every input a search returns is then re-verified with an independent forward pass (a fresh
onnxruntime session, not the gradient graphs the search used) and a fresh cost simulation:
its label (where the search must keep it), its distance to the clean input (where the search
is bounded) and its pixel range.  Only verified inputs count.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from ..attacks.energy import search_class
from ..attacks.energy.analysis import kendall_tau, preactivation_shift, uniformity
from ..attacks.energy.defences import make_defence, recovery
from ..errors import AuditorError
from ..files import output_folder, write_bytes
from ..model.rewrite.instrument import add_outputs
from ..runtime.evaluate import Evaluation, cost_fn, evaluate, per_input
from ..norms import perturbation_stats
from ..scenario import EnergyAttack
from ..runtime.session import OnnxClassifier, Runner
from ..runtime.verify import within_bounds, within_eps
from .deployed import Deployed, budget, deployed
from .stats import sample_stats
from .units import AuditContext, Unit, cached, chunk_bounds, unit_seed


def make_energy_search(spec: EnergyAttack, base_dir: Path, preprocessing):
    """The configured search of a scenario entry and its parameters (a black-box search's
    surrogate loaded as a classifier)."""
    cls = search_class(spec.search)
    params = dict(spec.params)
    if "surrogate" in cls.needs:
        if not spec.surrogate:
            raise AuditorError(f"the search '{cls.name}' needs 'surrogate:' (an ONNX model)",
                               where=f"energy_attacks[{spec.search}]")
        params["surrogate"] = OnnxClassifier(base_dir / spec.surrogate, preprocessing)
    return cls(**params), params


def layer_weights(clean: Evaluation, spec: EnergyAttack, n: int):
    """W_l of a search on the first ``n`` inputs: the layers' share of the clean latency or energy."""
    clean_cost = clean.cost.select(np.arange(n))
    return clean_cost.runtime_shares() if spec.cost == "latency" else clean_cost.energy_shares()


def search_part(clf: OnnxClassifier, verifier: OnnxClassifier, cost_model, x: np.ndarray, search, spec: EnergyAttack,
                weights, *, seed: int, density_tensors: str) -> dict:
    """One search on inputs ``x`` (all of its inputs or a chunk of them) and the independent
    re-evaluation of what it found: the per-input part that :func:`energy_section` reads."""
    res = search(clf, x, cost_fn=cost_fn(clf, cost_model, spec.cost), layer_weights=weights, seed=seed)
    return {"x": res.x, "ev": evaluate(verifier, res.x, cost_model, density_tensors),
            "queries": int(res.queries), "seconds": float(res.seconds),
            "params": dict(res.info.get("params", {})), "budget": res.info.get("budget")}


def energy_section(verifier: OnnxClassifier, cost_model, x_all: np.ndarray, clean: Evaluation, spec: EnergyAttack,
                   search, params: dict, part: dict, *, density_tensors: str,
                   labels: np.ndarray | None = None) -> tuple[dict, np.ndarray | None]:
    """The report section of a search from its (merged) part: verification of every input found,
    cost statistics, per-layer attribution, explanations; and the worst verified input."""
    n = min(spec.count, len(x_all))
    x = x_all[:n]
    res_x, ev = part["x"], part["ev"]
    # --- independent re-verification (ev: a fresh session and cost simulation) ---------------
    ok = within_bounds(res_x, verifier.bounds)
    paired = search.needs_clean and len(res_x) == n
    section: dict = {"search": search.name, "params": dict(part["params"]),
                     "cost": spec.cost, "count": int(len(res_x)), "queries": int(part["queries"]),
                     "seconds": round(float(part["seconds"]), 3),
                     "seconds_per_input": round(float(part["seconds"]) / max(len(res_x), 1), 4)}
    if paired:
        kept = ev.pred == clean.pred[:n]
        pert = perturbation_stats(res_x, x)
        bud = part.get("budget") or {}  # the bound the search resolved for these inputs (eps: auto)
        eps, norm = bud.get("eps", search.params.get("eps")), search.params.get("norm", "l2")
        if isinstance(eps, (int, float)) and np.isfinite(eps):
            ok &= within_eps(res_x, x, norm if norm in pert else "l2", eps, verifier.bounds)
        ok &= kept
        changed = np.any(res_x != x, axis=tuple(range(1, x.ndim)))
        section.update({
            "label_kept_rate": float(kept.mean()),
            "perturbation": {"l2": sample_stats(pert["l2"]), "linf": sample_stats(pert["linf"]), "eps": eps, "norm": norm},
            "changed": int(changed.sum()),
        })
        if bud.get("rule"):
            section["perturbation"]["rule"] = bud["rule"]
            section["perturbation"]["per_pixel_rms"] = bud.get("per_pixel_rms")
        if not changed.any():
            section["note"] = ("the search ended without changing any input: every input it returns is its clean "
                               "input (nothing it tried kept the label and cost more)")
    section["verified"] = int(ok.sum())
    section["rejected"] = int((~ok).sum())
    c = ev.cost
    lat, en, edp = c.latency_s[ok], c.energy_total_j[ok], c.edp[ok]
    clean_lat, clean_en = float(clean.cost.latency_s.mean()), float(clean.cost.energy_total_j.mean())
    section.update({
        "density_clean": float(clean.model_density[:n].mean()),
        "density_attacked": float(ev.model_density[ok].mean()) if ok.any() else None,
        "density_attacked_worst": float(ev.model_density[ok].max()) if ok.any() else None,
        "latency_s": sample_stats(lat), "energy_j": sample_stats(en), "edp": sample_stats(edp),
        "clean_latency_s": sample_stats(clean.cost.latency_s[:n]), "clean_energy_j": sample_stats(clean.cost.energy_total_j[:n]),
        # what the checks gate: a search from clean inputs, the largest attacked / clean ratio of one
        # input (1.0 for an input it did not change); a search that makes its own inputs, the worst
        # found over the mean clean input of the whole data set
        "latency_increase": _increase(lat, clean.cost.latency_s, ok, paired, clean_lat),
        "energy_increase": _increase(en, clean.cost.energy_total_j, ok, paired, clean_en),
        "increase_of": "input" if paired else "mean_clean",
        # mean attacked over mean clean of the same inputs
        "mean_latency_ratio": float(lat.mean() / clean.cost.latency_s[:n].mean()) if ok.any() else None,
        "mean_energy_ratio": float(en.mean() / clean.cost.energy_total_j[:n].mean()) if ok.any() else None,
        "sparsity_ratio": (float((1 - clean.model_density[:n].mean()) / max(1 - ev.model_density[ok].mean(), 1e-12))
                           if ok.any() else None),
    })
    # per-layer attribution: which compute layers lost their zeros, and what it cost
    rows = []
    for j, layer in enumerate(verifier.probes.layers):
        d0 = float(clean.densities[layer.input][:n].mean())
        d1 = float(ev.densities[layer.input][ok].mean()) if ok.any() else None
        cyc0 = float(clean.cost.cycles[:n, j].mean())
        cyc1 = float(c.cycles[ok, j].mean()) if ok.any() else None
        rows.append({"layer": layer.name, "density_clean": d0, "density_attacked": d1,
                     "cycles_clean": cyc0, "cycles_attacked": cyc1})
    section["layers"] = rows
    section["per_input"] = per_input(verifier, ev, ok)
    section.update(_explain(verifier, cost_model, x_all, clean, ev, res_x, ok, spec, n, density_tensors, params, labels))
    worst = None
    if ok.any():
        key = c.latency_s if spec.cost == "latency" else c.energy_total_j
        i = int(np.flatnonzero(ok)[np.argmax(key[ok])])
        worst = res_x[i]
        section["worst_input"] = {"index": i, "latency_s": float(c.latency_s[i]), "energy_j": float(c.energy_total_j[i]),
                                  "density": float(ev.model_density[i])}
    return section, worst


def _increase(attacked_ok: np.ndarray, clean_all: np.ndarray, ok: np.ndarray, paired: bool, clean_mean: float):
    """latency/energy increase of a search (see energy_section)."""
    if not ok.any():
        return None
    if paired:
        return float(np.max(attacked_ok / clean_all[:len(ok)][ok]))
    return float(attacked_ok.max() / clean_mean)


def input_independent(cost_model, clean_cost, n: int):
    """For a machine whose cost does not depend on the input values (declared by the cost model,
    ``input_independent``), the measured evidence that it does not: ``{latency_s, energy_j}`` equal
    for every clean input; None when the cost model does not declare it or the costs differ."""
    if not getattr(cost_model, "input_independent", False):
        return None
    lat, en = clean_cost.latency_s, clean_cost.energy_total_j
    if len(lat) == 0 or np.ptp(lat) != 0 or np.ptp(en) != 0:
        return None
    return {"latency_s": float(lat[0]), "energy_j": float(en[0]), "inputs_measured": int(len(lat))}


def skipped_section(search, spec: EnergyAttack, clean: Evaluation, n: int, fixed: dict) -> dict:
    """The section of a search not run because the machine's cost does not depend on its input."""
    c = clean.cost
    lat, en = c.latency_s[:n], c.energy_total_j[:n]
    return {
        "search": search.name, "params": search.settings(),
        "cost": spec.cost, "count": 0, "queries": 0, "seconds": 0.0, "seconds_per_input": 0.0,
        "skipped": "input-independent cost",
        "note": (f"not run: the cost model does not depend on the input values (every one of the "
                 f"{fixed['inputs_measured']} clean inputs costs {fixed['latency_s']:.6g} s and {fixed['energy_j']:.6g} J), "
                 "so no input can be slower or costlier than a clean one"),
        "verified": 0, "rejected": 0,
        "density_clean": float(clean.model_density[:n].mean()), "density_attacked": None,
        "density_attacked_worst": None,
        "latency_s": sample_stats(lat), "energy_j": sample_stats(en), "edp": sample_stats(c.edp[:n]),
        "clean_latency_s": sample_stats(lat), "clean_energy_j": sample_stats(en),
        # measured: the same cost for every input
        "latency_increase": 1.0, "energy_increase": 1.0, "increase_of": "input",
        "mean_latency_ratio": 1.0, "mean_energy_ratio": 1.0,
    }


def _explain(verifier, cost_model, x_all, clean: Evaluation, ev: Evaluation, x_adv, ok, spec: EnergyAttack, n: int,
             density_tensors: str, params: dict, labels=None) -> dict:
    """Why the attack worked and what would stop it: input uniformity (Müller & Quiring), the
    surrogate's transferability (Kendall's tau of per-input densities, clean data), and the
    scenario's input defences as what-ifs (share of the cost increase they recover, and the
    clean accuracy / label agreement they cost)."""
    x = x_all[:n]  # the attacked clean inputs; defences are tuned and scored on all the clean data
    out: dict = {"uniformity": {"clean": float(uniformity(x).mean()),
                                "attacked": float(uniformity(x_adv[ok]).mean()) if ok.any() else None}}
    sur = params.get("surrogate")
    if sur is not None and n >= 2:
        sd = evaluate(sur, x, None, density_tensors).model_density
        tau, p = kendall_tau(clean.model_density[:n], sd)
        out["transfer"] = {"kendall_tau_density": tau, "p_value": p}
    defs = []
    what = "latency" if spec.cost == "latency" else "energy"
    pick = (lambda c: c.latency_s) if what == "latency" else (lambda c: c.energy_total_j)  # noqa: E731
    for d in spec.defences:
        d = dict(d)
        defence = make_defence(str(d.pop("name", "")), **d)
        name = defence.name
        if defence.on_input:
            f, run_on = (lambda v, defence=defence: defence(v, verifier.bounds)), verifier
        else:  # e.g. per-layer ReLU thresholds tuned to a clean-accuracy loss budget: a defended model
            defended = defence.defend(verifier.base_model, x_all, clean.pred, verifier.preprocessing)
            f, run_on = (lambda v: v), OnnxClassifier(defended, verifier.preprocessing)  # noqa: E731
        clean_def = evaluate(run_on, f(x_all), cost_model, density_tensors)
        entry = {"defence": name, **d,
                 "clean_label_agreement": float((clean_def.pred == clean.pred).mean()),
                 f"clean_{what}_change": float(pick(clean_def.cost).mean() / pick(clean.cost).mean())}
        if labels is not None:
            entry["clean_accuracy"] = float((clean.pred == labels).mean())
            entry["defended_clean_accuracy"] = float((clean_def.pred == labels).mean())
        if ok.any():
            adv_def = evaluate(run_on, f(x_adv[ok]), cost_model, density_tensors)
            entry["recovery"] = recovery(pick(clean.cost)[:n], pick(ev.cost)[ok], pick(adv_def.cost))
        defs.append(entry)
    if defs:
        out["defences"] = defs
    if ok.any():
        out["preactivation_shift"] = _preactivation_shift(verifier, x, x_adv[ok])
    return out


def _preactivation_shift(verifier, x_clean: np.ndarray, x_adv: np.ndarray) -> dict:
    """Distribution of the activation ops' inputs, clean vs attacked (Müller & Quiring Fig. 7)."""
    model = verifier.model
    pre = list(dict.fromkeys(n.input[0] for n in model.graph.node if n.op_type in ("Relu", "Clip", "LeakyRelu")))
    if not pre:
        return {}
    # the verifier's weights given from their proto, the model rewritten without their data: a
    # session of the model itself serialized them all, and its rewrite copied them (vgg11_bn: +0.5 GB)
    shared = getattr(verifier, "weights", None)
    r = Runner(add_outputs(shared.light(model) if shared is not None else model, pre), verifier.threads,
               verifier.batch_size, shared=shared)
    return preactivation_shift(r.run(x_clean, pre), r.run(x_adv, pre))


def save_input(x: np.ndarray, stem: Path, bounds: tuple[float, float], force: bool = False) -> list[str]:
    """Save one raw input as .npy and .png (grayscale or RGB); returns the paths written.  An
    existing file is never overwritten unless ``force``."""
    from PIL import Image  # only with --save-inputs

    output_folder(stem.parent, "saved inputs")
    buf = io.BytesIO()
    np.save(buf, x)
    npy, png = stem.parent / (stem.name + ".npy"), stem.parent / (stem.name + ".png")  # names may hold dots
    write_bytes(npy, buf.getvalue(), force, "saved input")
    lo, hi = bounds
    img = np.clip((x - lo) / (hi - lo), 0, 1)
    img = (img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)) * 255
    buf = io.BytesIO()
    Image.fromarray(np.round(img).astype(np.uint8)).save(buf, format="PNG")
    write_bytes(png, buf.getvalue(), force, "saved input")
    return [str(npy), str(png)]


# --------------------------------------------------------------------------------------------
# the energy stage of the audit: its units and the profile's `attacks` sections
# --------------------------------------------------------------------------------------------


def _search(ctx: AuditContext, k: int):
    sc = ctx.scenario
    return cached(ctx, ("search", k), lambda: make_energy_search(sc.energy_attacks[k], sc.base_dir, sc.preprocessing))


def energy_unit(ctx: AuditContext, u: Unit, deadline) -> dict:
    """An energy-latency search on a chunk of its inputs (``u.args``: the layer weights W_l)."""
    st, sc = deployed(ctx, u.profile), ctx.scenario
    search, _ = _search(ctx, u.index)
    # the verification forward passes count too: a search not verified in time does not count
    with budget(st.clf, deadline), budget(st.verifier, deadline):
        return search_part(st.clf, st.verifier, st.cm, ctx.data.x[u.start:u.stop], search, sc.energy_attacks[u.index],
                           u.args, seed=u.seed, density_tensors=sc.density_tensors)


def energy_units(ctx: AuditContext, p: int, clean: Evaluation) -> list[Unit]:
    """The energy searches of profile ``p`` by chunk of their inputs (whole when the search looks
    at its inputs together); none on a machine whose cost does not depend on the input."""
    sc, data, prof = ctx.scenario, ctx.data, ctx.profiles[p]
    cm = prof.build_cost_model()
    units = []
    for k, spec in enumerate(sc.energy_attacks):
        n = min(spec.count, len(data.x))
        if input_independent(cm, clean.cost, n) is not None:
            continue  # every input costs the same: nothing to search for (energy_sections says so)
        w = layer_weights(clean, spec, n)
        for i, (a, b) in enumerate(chunk_bounds(n, sc.chunk_size, search_class(spec.search).per_input)):
            units.append(Unit(f"{prof.name}/energy[{k}]:{spec.search}/{i}", energy_unit, p, k, i, a, b,
                              unit_seed(ctx.seed + k, i), True, w))
    return units


def energy_sections(ctx: AuditContext, st: Deployed, ev: Evaluation, parts: list, summary: dict
                    ) -> tuple[list[dict], dict, list[str]]:
    """The `attacks` sections of a profile from its merged search parts (None: cut short), the
    summary's worst numbers and increases raised in place; returns (sections, worst verified
    input per search, names of the searches cut short)."""
    sc, data = ctx.scenario, ctx.data
    attacks, worst_inputs, cut = [], {}, []
    for k, spec in enumerate(sc.energy_attacks):
        fixed = input_independent(st.cm, ev.cost, min(spec.count, len(data.x)))
        if fixed is not None:  # a machine that cannot be slowed: the search was not run (energy_units)
            attacks.append(skipped_section(_search(ctx, k)[0], spec, ev, min(spec.count, len(data.x)), fixed))
            summary["latency_increase"] = max(summary.get("latency_increase", 0.0), 1.0)
            summary["energy_increase"] = max(summary.get("energy_increase", 0.0), 1.0)
            continue
        if parts[k] is None:
            cut.append(spec.search)
            attacks.append({"search": spec.search, "cut_short": True})
            continue
        search, params = _search(ctx, k)
        section, worst_x = energy_section(st.verifier, st.cm, data.x, ev, spec, search, params, parts[k],
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
    return attacks, worst_inputs, cut
