"""Sanity warnings added to a report: results that are measured correctly but probably do not mean
what the user thinks (a model at chance, a baseline that is not comparable, a --baseline that
adds no check).  Each warning is ``{code, profile, message}``; they never change the verdict."""

from __future__ import annotations


def near_chance(acc: float | None, classes: int | None) -> bool:
    """Clean accuracy within 10 points of chance (1/classes), or below twice chance."""
    if acc is None or not classes or classes < 2:
        return False
    chance = 1.0 / classes
    return acc < min(chance + 0.10, 2 * chance)


def _w(code: str, message: str, profile: str | None = None) -> dict:
    return {"code": code, "profile": profile, "message": message}


def sanity_warnings(report: dict, scenario=None, baseline: dict | None = None) -> list[dict]:
    out = []
    for p in report.get("profiles", []):
        name = p.get("name")
        clean = p.get("clean") or {}
        acc, classes = clean.get("accuracy"), clean.get("classes")
        if near_chance(acc, classes):
            out.append(_w("clean_accuracy_near_chance",
                          f"{name}: clean accuracy {100 * acc:.1f}% is near chance ({classes} classes: "
                          f"{100 / classes:.1f}%); the preprocessing (range, scale, mean, std, layout) probably does "
                          "not match the model, and the searches' label-kept rates and robustness mean little", name))
        rob = p.get("robustness") or {}
        racc = rob.get("clean_accuracy")
        if rob and near_chance(racc, classes) and not near_chance(acc, classes):
            out.append(_w("robustness_at_chance",
                          f"{name}: robustness measured on {rob.get('count')} inputs where the model is at chance "
                          f"(clean accuracy {100 * racc:.1f}%): robust accuracy cannot exceed it, success rates are "
                          "over a handful of inputs", name))
        elif rob and near_chance(acc, classes):
            out.append(_w("robustness_at_chance",
                          f"{name}: robust accuracy of a model at chance: it is 'robust' only where it is wrong anyway",
                          name))
    if baseline is not None:
        reg = getattr(scenario, "regression", None)
        if reg is None or all(getattr(reg, f) is None for f in getattr(reg, "__dataclass_fields__", {})):
            out.append(_w("baseline_without_regression",
                          "--baseline was given but the scenario has no regression: section, so no regression check "
                          "was added (add e.g. regression: {max_latency_growth: 0.1})"))
        old_sc, new_sc = (baseline.get("scenario") or {}), (report.get("scenario") or {})
        if old_sc.get("name") != new_sc.get("name"):
            out.append(_w("baseline_other_scenario",
                          f"the baseline comes from scenario '{old_sc.get('name')}', this audit ran "
                          f"'{new_sc.get('name')}': the regression checks compare different audits"))
        elif _scenario_core(old_sc) != _scenario_core(new_sc):
            changed = sorted(k for k in set(_scenario_core(old_sc)) | set(_scenario_core(new_sc))
                             if _scenario_core(old_sc).get(k) != _scenario_core(new_sc).get(k))
            out.append(_w("baseline_scenario_changed",
                          f"scenario '{new_sc.get('name')}' changed since the baseline ({', '.join(changed)}): "
                          "differences may come from the scenario, not the model"))
        old_m, new_m = (baseline.get("model") or {}), (report.get("model") or {})
        if old_m.get("path") != new_m.get("path"):
            out.append(_w("baseline_other_model",
                          f"the baseline is a report of model '{old_m.get('path')}', this audit is of "
                          f"'{new_m.get('path')}'"))
        olds = {p.get("name") for p in baseline.get("profiles", [])}
        news = {p.get("name") for p in report.get("profiles", [])}
        if news and not olds & news:
            out.append(_w("baseline_other_profiles",
                          f"the baseline has no profile in common with this audit (baseline: {', '.join(sorted(map(str, olds)))}): "
                          "no regression check could compare anything"))
        if baseline.get("seed") != report.get("seed"):
            out.append(_w("baseline_other_seed", f"the baseline used seed {baseline.get('seed')}, this audit "
                                                 f"{report.get('seed')}: random searches are not comparable input by input"))
    return out


def _scenario_core(sc: dict) -> dict:
    """The parts of a scenario that change what is measured (not its name, description or folder)."""
    return {k: v for k, v in sc.items() if k not in ("name", "description", "path", "regression", "checks")}
