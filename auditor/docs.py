"""Documentation generated from the schemas, so it cannot drift from what the loaders accept:
JSON Schemas (``auditor schema``), the starter scenario (``auditor init``) and the field
reference (``python -m auditor.docs > docs/reference.md``)."""

from __future__ import annotations

import dataclasses
import typing

from . import schema


def schema_for(kind: str, cost_model: str | None = None) -> dict:
    if kind == "scenario":
        from .scenario import Scenario

        from .catalog import type_scenario_params

        return type_scenario_params(schema.json_schema(Scenario, "auditor scenario"))
    from .hw import COST_MODELS
    from .hw.profile import HardwareProfile

    out = schema.json_schema(HardwareProfile, "auditor hardware profile")
    models = [COST_MODELS.canonical(cost_model)] if cost_model is not None else list(COST_MODELS)
    out["properties"]["cost_model"] = {"enum": models, "description": "cost model"}
    variants = []
    for name in models:
        ps = schema.json_schema(COST_MODELS.get(name).Params)
        ps.pop("$schema", None)
        variants.append({"if": {"properties": {"cost_model": {"const": name}}},
                         "then": {"properties": {"params": ps}}})
    out["properties"]["params"] = {"type": "object", "description": "parameters of the cost model"}
    out["allOf"] = variants
    return out


def _yaml_value(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_yaml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{}" if not v else "{" + ", ".join(f"{k}: {_yaml_value(x)}" for k, x in v.items()) + "}"
    return str(v)


def starter_scenario(profile: str | None = None) -> str:
    L = ["# auditor scenario — every field is optional except `name`; defaults are shown.",
         "# Reference: docs/reference.md   Check it: auditor validate THIS_FILE"]
    if profile:
        L.append(f"# Meant for the hardware profile: {profile}")
    L += ["name: my-audit", "description: what this audit is for", "seed: 0", "",
          "data:                      # where the inputs come from",
          "  source: digits           # digits (bundled) | npy | npz | images | idx",
          "  # path: data/x.npy       # file or folder, relative to this file",
          "  # labels: data/y.npy",
          "  count: 64                # how many inputs", "",
          "preprocessing:             # raw pixels (NCHW, in range) -> model input, prepended to the graph",
          "  range: [0.0, 1.0]        # valid pixel range; attacks clip here",
          "  scale: 1.0               # x * scale",
          "  mean: [0.0]              # then (x - mean[c]) / std[c]",
          "  std: [1.0]",
          "  layout: NCHW             # layout of the model's input", "",
          "energy_attacks:            # energy-latency searches, maximising cost on each profile",
          "  - search: whitebox       # Krithivasan et al. Algorithm 1 (white-box sparsity attack)",
          "    count: 8",
          "    cost: latency",
          "    params: {eps: 0.9, norm: l2, iterations: 75, beta: 15.0}",
          "  - search: uniform        # Mueller & Quiring uniform sampling",
          "    count: 8", "",
          "# robustness:              # evasion attacks",
          "#   count: 32",
          "#   attacks:",
          "#     - {attack: fgsm, norm: linf, epsilons: [0.1, 0.2, 0.3]}",
          "#     - {attack: pgd, norm: linf, epsilons: [0.1, 0.3], params: {steps: 40}}", "",
          "checks:                    # thresholds of the verdict (omit a check to skip it)",
          "  min_clean_accuracy: 0.95",
          "  worst_case_latency_ms: 1.0",
          "  max_latency_increase: 1.5",
          "  # min_robust_accuracy:",
          "  #   - {attack: pgd, epsilon: 0.3, threshold: 0.5}", "",
          "regression:                # limits against --baseline OLD.json",
          "  max_latency_growth: 0.10",
          "  max_accuracy_drop: 0.01"]
    return "\n".join(L) + "\n"


def _rows(tp, prefix: str = "") -> list[str]:
    rows = []
    hints = typing.get_type_hints(tp)
    for f in dataclasses.fields(tp):
        if not f.init:
            continue
        t = hints[f.name]
        md = f.metadata
        default = (f.default if f.default is not dataclasses.MISSING else
                   f.default_factory() if f.default_factory is not dataclasses.MISSING else "(required)")
        inner = [a for a in typing.get_args(t) if dataclasses.is_dataclass(a)] or ([t] if dataclasses.is_dataclass(t) else [])
        if inner and (dataclasses.is_dataclass(default) or default is None or isinstance(default, list)):
            default = "(section)"
        doc = md.get("doc", "")
        if md.get("unit"):
            doc += f" [{md['unit']}]"
        if "minimum" in md or "maximum" in md:
            lo = f"{'>' if md.get('exclusive_minimum') else '>='} {schema.num_text(md['minimum'])}" if "minimum" in md else ""
            hi = f"<= {schema.num_text(md['maximum'])}" if "maximum" in md else ""
            doc += f" ({', '.join(b for b in (lo, hi) if b)})"
        if md.get("aliases"):
            doc += f" (also spelt {', '.join(f'`{a}`' for a in md['aliases'])})"
        src = md.get("source", "")
        rows.append(f"| `{prefix}{f.name}` | {schema._type_name(t).replace('|', 'or')} | `{_yaml_value(schema.to_dict(default)) if default not in ('(required)', '(section)') else default}` | {doc} | {src} |")
        for sub in inner:
            rows += _rows(sub, f"{prefix}{f.name}{'[]' if typing.get_origin(t) is list else ''}.")
    return rows


def reference_markdown() -> str:
    from .catalog import catalog_markdown
    from .hw import COST_MODELS
    from .hw.profile import HardwareProfile
    from .scenario import Scenario

    head = "| field | type | default | meaning | source |\n|---|---|---|---|---|"
    L = ["# Reference: scenario and hardware-profile fields", "",
         "Generated from the schemas by `python -m auditor.docs`; `auditor schema scenario|hwprofile` prints the JSON Schema.", "",
         "## Scenario", "", head, *_rows(Scenario), "", "## Hardware profile", "", head, *_rows(HardwareProfile)]
    for name, cls in COST_MODELS.items():
        L += ["", f"### `params` of cost model `{name}`", "", head, *_rows(cls.Params, "params.")]
    return "\n".join(L) + "\n" + catalog_markdown()


if __name__ == "__main__":
    print(reference_markdown(), end="")
