"""The clean stage of the audit: forward pass and cost simulation of the data on each profile,
chunk by chunk, and the profile's ``clean`` section (accuracy, density, latency, energy, the
worst input's layers) with the summary numbers the checks read."""

from __future__ import annotations

import numpy as np

from ..errors import AuditorError
from ..model.rewrite.instrument import density_rule
from ..runtime.evaluate import Evaluation, batch_note, evaluate, per_input
from ..runtime.session import OnnxClassifier, probability_warning
from .deployed import Deployed, budget, deployed
from .stats import sample_stats
from .units import AuditContext, Unit, chunk_bounds


def clean_unit(ctx: AuditContext, u: Unit, deadline) -> Evaluation:
    """Forward pass and cost simulation of a chunk of the data on a profile."""
    st = deployed(ctx, u.profile)
    x = ctx.data.x[u.start:u.stop]
    if tuple(x.shape[1:]) != tuple(st.clf.input_shape):
        raise AuditorError(f"the data has per-input shape {tuple(x.shape[1:])} (NCHW) but the model expects "
                           f"{tuple(st.clf.input_shape)} after preprocessing", where=ctx.data.description)
    with budget(st.clf, deadline):  # the clean evaluation counts too, batch by batch
        return evaluate(st.clf, x, st.cm, ctx.scenario.density_tensors)


def clean_units(ctx: AuditContext) -> list[Unit]:
    """The clean evaluation of every profile, by chunks of the scenario's chunk_size."""
    return [Unit(f"{prof.name}/clean/{i}", clean_unit, p, 0, i, a, b, timed=True)
            for p, prof in enumerate(ctx.profiles)
            for i, (a, b) in enumerate(chunk_bounds(len(ctx.data.x), ctx.scenario.chunk_size))]


def _layer_breakdown(clf: OnnxClassifier, ev: Evaluation, i: int) -> list[dict]:
    c = ev.cost
    rows = []
    for j, layer in enumerate(clf.probes.layers):
        rows.append({"layer": layer.name, "op": layer.op_type, "macs": layer.macs,
                     "input_density": float(ev.densities[layer.input][i]),
                     "cycles": int(c.cycles[i, j]), "dense_cycles": int(c.dense_cycles[i, j]),
                     "energy_j": float(c.energy_j[i, j])})
    return rows


def clean_section(st: Deployed, ev: Evaluation, data, sc) -> tuple[dict, dict]:
    """A profile's report section up to its ``clean`` part (and ``notes``), and its summary
    numbers from the clean inputs (the energy stage raises the worst ones)."""
    prof, clf, c = st.prof, st.clf, ev.cost
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
    return pr, summary
