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
    from .data import load_data
    from .scenario import load_scenario

    sc = load_scenario(path)
    node, file = schema.load_yaml(path)
    load_data(sc.data, sc.base_dir, sc.preprocessing.bounds, sc.seed)  # references: data files exist and parse
    check_references(sc, node, file)
    return "scenario"


def check_references(sc, node, file: str) -> None:
    """Search and attack names and parameters, surrogate models: errors located in the file."""
    from .modelio import load_model
    from .robustness import _parse_spec
    from .sponge import make_search

    def fail(e: AuditorError, *path):
        raise AuditorError(f"{'.'.join(str(p) if isinstance(p, str) else f'[{p}]' for p in path).replace('.[', '[')}: {e}",
                           where=schema.where(file, schema.locate(node, *path))) from None

    for i, spec in enumerate(sc.energy_attacks):
        try:
            make_search(spec.search, **{k: v for k, v in spec.params.items() if k != "surrogate"})
        except AuditorError as e:
            fail(e, "energy_attacks", i)
        if spec.surrogate:
            try:
                load_model(sc.base_dir / spec.surrogate, input_size=sc.preprocessing.input_size,
                           layout=sc.preprocessing.layout)
            except AuditorError as e:
                fail(e, "energy_attacks", i, "surrogate")
    if sc.robustness is not None:
        for i, a in enumerate(sc.robustness.attacks):
            try:
                _parse_spec({"name": a.attack, "params": a.params, "norm": a.norm, "epsilons": a.epsilons,
                             "targeted": a.targeted})
            except AuditorError as e:
                fail(e, "robustness", "attacks", i)
