"""``auditor validate``: check a profile or scenario file against its schema and its references."""

from __future__ import annotations

import yaml

from . import schema
from .errors import AuditorError


def detect_kind(path) -> str:
    node, _ = schema.load_yaml(path)
    if isinstance(node, yaml.MappingNode):
        keys = {getattr(k, "value", None) for k, _ in node.value}
        if "cost_model" in keys:
            return "hwprofile"
    return "scenario"


def validate_file(path, kind: str = "auto") -> str:
    kind = detect_kind(path) if kind == "auto" else kind
    if kind == "hwprofile":
        from .hw.profile import load_profile

        prof = load_profile(path)
        prof.build_cost_model()
        return "hardware profile"
    from .scenario import load_scenario
    from .data import load_data

    sc = load_scenario(path)
    load_data(sc.data, sc.base_dir, sc.preprocessing.bounds, sc.seed)  # references: data files exist and parse
    return "scenario"
