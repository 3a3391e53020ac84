"""``auditor validate``: check a profile or scenario file against its schema and its references."""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import yaml

from . import schema
from .attacks.energy import search_class
from .attacks.evasion import ATTACKS, make_attack
from .attacks.evasion.base import default_epsilon
from .data import load_data
from .errors import AuditorError
from .scenario import attack_entry, load_scenario


def detect_kind(path) -> str:
    node, _ = schema.load_yaml(path)
    if isinstance(node, yaml.MappingNode):
        keys = {getattr(k, "value", None) for k, _ in node.value}
        if "cost_model" in keys:
            return "hwprofile"
    return "scenario"


def validate_file(path, kind: str = "auto", warn: Callable[[str], None] | None = None) -> str:
    """Check a profile or scenario file (AuditorError at the first error); ``warn`` receives each
    ``file:line:col: warning: ...`` line about what is valid but probably not meant."""
    kind = detect_kind(path) if kind == "auto" else kind
    if kind == "hwprofile":
        from .hw.profile import load_profile  # its cost models' numba kernels: only for a profile

        prof = load_profile(path)
        prof.build_cost_model()
        return "hardware profile"
    sc = load_scenario(path)
    node, file = schema.load_yaml(path)
    check_references(sc, node, file)
    data = load_data(sc.data, sc.base_dir, sc.preprocessing.bounds, sc.seed)  # references: data files exist and parse
    check_scenario(sc, node, file, tuple(data.x.shape[1:]))
    for w in scenario_warnings(sc, node, file, data.x):
        if warn is not None:
            warn(w)
    return "scenario"


#: a pixel range at least this many times wider than the span of the data it is given
RANGE_SLACK = 10.0


def scenario_warnings(sc, node, file: str, x: np.ndarray) -> list[str]:
    """What is valid but probably not meant, as ``file:line:col: warning: ...`` lines: a pixel
    range much wider than the data in it (float data in [0, 1] under ``range: [0, 255]`` makes
    every epsilon and the clipping 255 times looser than meant)."""
    out = []
    lo, hi = sc.preprocessing.bounds
    x_lo, x_hi = float(x.min()), float(x.max())
    if hi - lo >= RANGE_SLACK * max(x_hi - x_lo, 1.0):
        where = schema.where(file, schema.locate(node, "preprocessing", "range") or schema.locate(node, "preprocessing"))
        out.append(f"{where}: warning: preprocessing.range is [{lo:g}, {hi:g}] but every pixel of the data lies in "
                   f"[{x_lo:g}, {x_hi:g}]: epsilons and clipping are measured in the range's units "
                   f"(is the range [{math.floor(x_lo):g}, {math.ceil(x_hi):g}]?)")
    return out


def _fail(node, file: str, msg: str, *path):
    key = ".".join(str(p) if isinstance(p, str) else f"[{p}]" for p in path).replace(".[", "[")
    raise AuditorError(f"{key}: {msg}", where=schema.where(file, schema.locate(node, *path) or schema.locate(node, *path[:-1])))


def check_scenario(sc, node, file: str, data_shape: tuple | None = None, model=None) -> None:
    """What the schema alone cannot see: robustness checks that no attack can decide, budgets
    outside the pixel range, a per-channel mean/std that does not fit the data (``data_shape``,
    per input, NCHW) or the model's input channels.  Errors are located in the scenario file."""
    attacks = sc.robustness.attacks if sc.robustness is not None else []
    ch = sc.checks
    if not attacks:
        for key, present in (("min_robust_accuracy", bool(ch.min_robust_accuracy)),
                             ("max_attack_success_rate", ch.max_attack_success_rate is not None),
                             ("min_median_l2", ch.min_median_l2 is not None)):
            if present:
                _fail(node, file, "this check needs evasion attacks, but the scenario has no robustness.attacks",
                      "checks", key)
    lo, hi = sc.preprocessing.bounds
    span = hi - lo
    dims = int(math.prod(data_shape)) if data_shape else None
    for path, entries in evasion_lists(sc):
        for i, a in enumerate(entries):
            norm = parse_attack(dict(attack_entry(a), epsilons=None))["attack"].norm
            for j, e in enumerate(a.epsilons or []):
                top = span if norm == "linf" else (span * math.sqrt(dims) if norm == "l2" and dims else
                                                    dims if norm == "l0" and dims else None)
                if top is not None and e > top * (1 + 1e-9):
                    _fail(node, file, f"{e:g} exceeds the largest {norm} distance between two inputs in the pixel range "
                          f"[{lo:g}, {hi:g}] ({top:g}): every input would be allowed", *path, i, "epsilons", j)
    norms = [parse_attack(dict(attack_entry(a), epsilons=None))["attack"].norm for a in attacks]
    for i, c in enumerate(ch.min_robust_accuracy):
        hits = [(a, n) for a, n in zip(attacks, norms) if a.attack.lower() == c.attack.lower()
                and (c.norm is None or n == str(c.norm).lower())]
        if not hits:
            have = ", ".join(f"{a.attack}/{n}" for a, n in zip(attacks, norms))
            _fail(node, file, f"no attack {c.attack!s:.40}{'/' + c.norm if c.norm else ''} under robustness.attacks "
                  f"(have: {have})", "checks", "min_robust_accuracy", i, "attack")
        run = []
        for a, n in hits:
            if a.epsilons is not None:
                run += a.epsilons
            elif data_shape is not None and n in ("linf", "l2"):
                run.append(default_epsilon(n, data_shape, (lo, hi)))
            else:
                run = None  # the budget is decided at run time
                break
        if run is not None and not any(math.isclose(e, c.epsilon, rel_tol=1e-6, abs_tol=1e-9) for e in run):
            _fail(node, file, f"{c.attack} is not run at epsilon {c.epsilon:g} (it runs at "
                  f"{', '.join(f'{e:g}' for e in run) or 'none'})", "checks", "min_robust_accuracy", i, "epsilon")
    channels = []
    if data_shape is not None and len(data_shape) == 3:
        channels.append((data_shape[0], "the data"))
    if model is not None:
        from .model.interface import input_channels  # onnx (2 s to import) only with a model

        c = input_channels(model, sc.preprocessing.layout)
        if c is not None:
            channels.append((c, "the model's input"))
    for c, what in channels:
        bad = sc.preprocessing.channel_mismatch(c)
        if bad:
            key = "mean" if bad.startswith("preprocessing.mean") else "std"
            _fail(node, file, bad.split(": ", 1)[-1].replace("preprocessing." + key + " has", "has")
                  .replace("the input", what), "preprocessing", key)


def check_defence(d: dict) -> None:
    """An energy search's `defences:` entry: a known name and its parameters."""
    from .attacks.energy.defences import make_defence  # imports onnx: only with defences

    d = dict(d)
    make_defence(str(d.pop("name", "")), **d)


def check_references(sc, node, file: str) -> None:
    """Search and attack names and parameters, surrogate models: errors located in the file."""
    def fail(e: AuditorError, *path):
        msg = str(e)
        if e.where in ("attacks", "attack") and msg.startswith(e.where + ": "):  # the attack module's own prefix
            msg = msg[len(e.where) + 2:]
        raise AuditorError(f"{'.'.join(str(p) if isinstance(p, str) else f'[{p}]' for p in path).replace('.[', '[')}: {msg}",
                           where=schema.where(file, schema.locate(node, *path))) from None

    for i, spec in enumerate(sc.energy_attacks):
        try:
            cls = search_class(spec.search)
            cls(**{k: v for k, v in spec.params.items() if k != "surrogate"})
            for need in sorted(cls.needs):  # e.g. the black-box search's surrogate, whatever its spelling
                if not getattr(spec, need, None):
                    raise AuditorError(f"the search '{cls.name}' needs '{need}:' in its entry")
        except AuditorError as e:
            fail(e, "energy_attacks", i)
        if spec.surrogate:
            try:
                from .model.load import load_model  # only with a surrogate: checking names needs no onnx

                load_model(sc.base_dir / spec.surrogate, input_size=sc.preprocessing.input_size,
                           layout=sc.preprocessing.layout)
            except AuditorError as e:
                fail(e, "energy_attacks", i, "surrogate")
        for j, d in enumerate(spec.defences):
            try:
                check_defence(d)
            except AuditorError as e:
                fail(e, "energy_attacks", i, "defences", j)
    if sc.approx is not None and sc.approx.surrogate:
        from .model.load import load_model  # onnx only with a surrogate

        try:
            load_model(sc.base_dir / sc.approx.surrogate)
        except AuditorError as e:
            fail(e, "approx", "surrogate")
    for path, entries in evasion_lists(sc):
        for i, a in enumerate(entries):
            try:
                parse_attack(attack_entry(a))
            except AuditorError as e:
                fail(e, *path, i)


def parse_attack(spec) -> dict:
    """One evasion entry (a mapping ``{name, params, norm, epsilons, targeted}`` or a tuple in that
    order) checked and built: ``{name, attack, epsilons, targeted}``; AuditorError when the name,
    the parameters, the norm or the targeting are wrong."""
    if isinstance(spec, dict):
        unknown = set(spec) - {"name", "params", "norm", "epsilons", "targeted"}
        if unknown or "name" not in spec:
            raise AuditorError("an attack entry needs name and may have params, norm, epsilons, targeted"
                               + (f" (unknown: {', '.join(sorted(unknown))})" if unknown else ""), where="attacks")
        s = dict(spec)
    elif isinstance(spec, (list, tuple)) and 1 <= len(spec) <= 5:
        s = dict(zip(("name", "params", "norm", "epsilons", "targeted"), spec))
    else:
        raise AuditorError(f"an attack entry must be (name, params, norm, epsilons) or a mapping, got {spec!r}",
                           where="attacks")
    name = ATTACKS.canonical(s["name"])
    cls = ATTACKS.get(name)
    params = dict(s.get("params") or {})
    if not isinstance(s.get("params") or {}, dict):
        raise AuditorError(f"params of attack {name!r} must be a mapping", where="attacks")
    norm = s.get("norm")
    if norm is not None:
        norm = str(norm).lower()
        if "norm" in cls.PARAMS:
            if "norm" in params and params["norm"] != norm:
                raise AuditorError(f"attack {name!r}: norm {norm!r} contradicts params.norm {params['norm']!r}",
                                   where="attacks")
            params["norm"] = norm
    attack = make_attack(name, **params)
    if norm is not None and norm != attack.norm:
        raise AuditorError(f"attack {name!r} works in the {attack.norm} norm, not {norm}", where="attacks")
    targeted = s.get("targeted") or False
    if targeted not in (False, True, "random", "least_likely", "next"):
        raise AuditorError(f"targeted must be false, random, least_likely or next, got {targeted!r}",
                           where="attacks")
    if targeted is True:
        targeted = "random"
    eps = s.get("epsilons")
    if eps is not None and np.isscalar(eps):
        eps = [eps]
    return {"name": name, "attack": attack, "epsilons": eps, "targeted": targeted}


def evasion_lists(sc) -> list[tuple[tuple, list]]:
    """(key path, entries) of every list of evasion attacks a scenario runs: `robustness.attacks`
    and the `approx:` lists it gives (an absent one runs the defaults, which are valid)."""
    out = [(("robustness", "attacks"), sc.robustness.attacks)] if sc.robustness is not None else []
    if sc.approx is not None:
        out += [(("approx", key), entries) for key, entries in sc.approx.sections() if entries]
    return out
