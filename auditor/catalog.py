"""What the scenarios and profiles can name: evasion attacks, energy-latency searches, defences and
cost models, each with its parameters (type, default, meaning) and source paper.

One description serves ``auditor list``, the JSON Schema (``params`` of each attack and search
entry, and each defence entry, typed so editors complete them) and docs/reference.md.  Attacks,
searches and defences are read from their registries and their one ``PARAMS`` declaration
(:class:`auditor.attacks.base.Param`); cost models from their ``Params`` dataclasses; the source
paper from the first line of the module docstring.
"""

from __future__ import annotations

import re
import sys
import typing

from .registry import Registry


def _paper(obj) -> str:
    doc = (sys.modules[obj.__module__].__doc__ or "").strip().splitlines()
    first = doc[0].strip() if doc else ""
    m = re.search(r"\(([^()]*(?:et al\.|&|19\d\d|20\d\d)[^()]*)\)", first)
    return m.group(1) if m else first


def _summary(doc: str | None) -> str:
    """The first paragraph of a docstring, on one line."""
    para = (doc or "").strip().split("\n\n")[0]
    return " ".join(ln.strip() for ln in para.splitlines()).replace("``", "`")


def _type_of(annotation, default) -> str:
    t = str(annotation).replace("typing.", "") if annotation is not None else ""
    if not t or t == "None":
        t = type(default).__name__ if default is not None else "any"
    return t.replace("<class '", "").replace("'>", "")


def registries() -> dict[str, Registry]:
    """The registries of what a scenario names, by the word ``auditor list`` takes."""
    from .attacks.energy import SEARCHES
    from .attacks.energy.defences import DEFENCES
    from .attacks.evasion import ATTACKS

    return {"attacks": ATTACKS, "searches": SEARCHES, "defences": DEFENCES}


def registry_catalog(registry: Registry) -> dict[str, dict]:
    """Name -> description of every class in ``registry`` (summary, source, aliases, parameters)."""
    out = {}
    for name, cls in registry.items():
        e = {"name": name, "summary": _summary(cls.__doc__), "paper": _paper(cls)}
        if registry.kind == "attack":
            e["norm"] = None if "norm" in cls.PARAMS else cls.norm
        aliases = registry.aliases_of(name)
        if aliases:
            e["aliases"] = aliases
        e["params"] = {k: p.describe() for k, p in cls.PARAMS.items()}
        out[name] = e
    return out


def cost_model_catalog() -> dict[str, dict]:
    import dataclasses

    from .hw import COST_MODELS

    out = {}
    for name, cls in COST_MODELS.items():
        hints = typing.get_type_hints(cls.Params)
        params = {}
        for f in dataclasses.fields(cls.Params):
            default = (f.default if f.default is not dataclasses.MISSING else
                       f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
            doc = f.metadata.get("doc", "")
            if f.metadata.get("unit"):
                doc += f" [{f.metadata['unit']}]"
            params[f.name] = {"type": _type_of(hints.get(f.name), default), "default": default, "doc": doc,
                              "source": f.metadata.get("source", "")}
        out[name] = {"name": name, "summary": _summary(cls.__doc__), "paper": _paper(cls), "params": params}
    return out


def catalog(what: str, name: str | None = None) -> list[dict]:
    """The descriptions of ``what`` (attacks, searches, defences, cost-models), or of the one
    called ``name`` (any of its spellings)."""
    from .errors import AuditorError

    if what == "cost-models":
        items = cost_model_catalog()
        if name is None:
            return list(items.values())
        if name not in items:
            raise AuditorError(f"unknown cost model '{name}' (known: {', '.join(items)})")
        return [items[name]]
    reg = registries()[what]
    items = registry_catalog(reg)
    return list(items.values()) if name is None else [items[reg.canonical(name)]]


def _show(v) -> str:
    if isinstance(v, str):
        return repr(v)
    return "null" if v is None else str(v)


def _range(p: dict) -> str:
    """``[1, inf]``, ``(0.0, 1.0]``, ``one of a, b`` (empty when a parameter has neither)."""
    out = ""
    if "minimum" in p or "exclusiveMinimum" in p or "maximum" in p:
        lo = p.get("minimum", p.get("exclusiveMinimum"))
        hi = p.get("maximum")
        out = f"{'(' if 'exclusiveMinimum' in p else '['}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]"
    if p.get("choices"):
        out += f" one of {', '.join(map(str, p['choices']))}"
    return out.strip()


def render_catalog(what: str, items: list[dict], width: int = 80) -> str:
    import textwrap

    L = []
    for it in items:
        L.append(f"{it['name']}: {it['summary']}".rstrip())
        if it.get("paper"):
            L += textwrap.wrap(f"source: {it['paper']}", width, initial_indent="  ", subsequent_indent="    ")
        if it.get("aliases"):
            L += textwrap.wrap(f"also: {', '.join(it['aliases'])}", width, initial_indent="  ", subsequent_indent="    ")
        for k, p in it["params"].items():
            default = "required" if p.get("required") else f"default {_show(p['default'])}"
            extra = _range(p)
            text = f"{k} ({p['type']}, {default}){' ' + extra if extra else ''}: {p['doc']}" + \
                (f" Source: {p['source']}." if p.get("source") else "")
            L += textwrap.wrap(text, width, initial_indent="    ", subsequent_indent="        ")
        L.append("")
    return "\n".join(L).rstrip() + "\n"


def catalog_markdown() -> str:
    """The attacks, searches and defences with their parameters, as docs/reference.md shows them."""
    titles = {"attacks": "Evasion attacks (`robustness.attacks[].attack`, `approx.*[].name`)",
              "searches": "Energy-latency searches (`energy_attacks[].search`)",
              "defences": "Defences (`energy_attacks[].defences[].name`)"}
    head = "| parameter | type | default | meaning | range |\n|---|---|---|---|---|"
    L = []
    for what, reg in registries().items():
        L += ["", f"## {titles[what]}", "", "`auditor list " + what + "` prints the same; `params:` of an entry "
              "takes these parameters (`batch_size` and `progress` are plumbing)." if what != "defences" else
              "`auditor list defences` prints the same; an entry gives its parameters next to `name`."]
        for name, e in registry_catalog(reg).items():
            L += ["", f"### `{name}`", "", e["summary"] + (f" Source: {e['paper']}." if e["paper"] else "")]
            if e.get("aliases"):
                L += ["", "Also spelled: " + ", ".join(f"`{a}`" for a in e["aliases"]) + "."]
            L += ["", head]
            for k, p in e["params"].items():
                d = p["default"]
                default = "(required)" if p.get("required") else f"`{d if isinstance(d, str) else _show(d)}`"
                L.append(f"| `{k}` | {p['type']} | {default} | {p['doc'].replace('|', '/')} | {_range(p)} |")
    return "\n".join(L) + "\n"


# ----------------------------------------------------------------------------------------------
# JSON Schema of `params` (per attack / search name) and of defence entries
# ----------------------------------------------------------------------------------------------


def params_schema(cls) -> dict:
    """The JSON Schema of the ``params:`` of a scenario entry naming ``cls``."""
    props = {k: p.json_schema() for k, p in cls.PARAMS.items() if k != "progress" and p.kind != "object"}
    return {"type": "object", "properties": props, "additionalProperties": False}


def typed_entries(key: str, registry: Registry, also: tuple[str, ...] = ()) -> list[dict]:
    """``if {key: name} then params: {...}`` rules for a list entry schema; ``also``: other
    spellings of ``key`` (the entry's schema requires exactly one of them)."""
    def cond(n: str) -> dict:
        c = {"properties": {k: {"const": n} for k in (key, *also)}}
        return c if also else dict(c, required=[key])
    return [{"if": cond(n), "then": {"properties": {"params": params_schema(cls)}}} for n, cls in registry.items()]


def defence_entries(registry: Registry) -> list[dict]:
    """``if {name: n} then {n's parameters}`` rules for a ``defences:`` entry (parameters inline)."""
    out = []
    for n, cls in registry.items():
        ps = params_schema(cls)
        ps["properties"] = {"name": {"type": "string"}, **ps["properties"]}
        required = [k for k, p in cls.PARAMS.items() if p.required]
        if required:
            ps["required"] = required
        out.append({"if": {"properties": {"name": {"enum": [n, *registry.aliases_of(n)]}}, "required": ["name"]},
                    "then": ps})
    return out


def type_scenario_params(out: dict) -> dict:
    """Add the typed ``params`` of every attack and search, and the typed defence entries, to a
    scenario JSON Schema (in place)."""
    props = out.get("properties", {})

    def _obj(node):
        if isinstance(node, dict) and "anyOf" in node:
            return next((o for o in node["anyOf"] if o.get("type") in ("object", "array")), node)
        return node

    reg = registries()
    attacks = reg["attacks"]
    ea = _obj(props.get("energy_attacks", {})).get("items")
    if isinstance(ea, dict):
        ea["allOf"] = ea.get("allOf", []) + typed_entries("search", reg["searches"])
        de = _obj((ea.get("properties") or {}).get("defences", {})).get("items")
        if isinstance(de, dict):
            de.setdefault("properties", {})["name"] = {
                "enum": [a for n in reg["defences"] for a in (n, *reg["defences"].aliases_of(n))],
                "description": "defence name"}
            de["required"] = ["name"]
            de["allOf"] = defence_entries(reg["defences"])
    rob = _obj(props.get("robustness", {}))
    lists = [_obj(rob.get("properties", {}).get("attacks", {}))] if isinstance(rob, dict) else []
    ax = _obj(props.get("approx", {}))
    if isinstance(ax, dict):
        lists += [_obj((ax.get("properties") or {}).get(key, {})) for key in ("transfer", "whitebox", "query", "minimal")]
    for lst in lists:  # every evasion entry: `attack:` (or its other spelling `name:`) types `params`
        it = lst.get("items")
        if isinstance(it, dict):
            for key in ("attack", "name"):
                it.setdefault("properties", {})[key] = dict(it["properties"].get(key, {}), enum=list(attacks))
            it["allOf"] = it.get("allOf", []) + typed_entries("attack", attacks, also=("name",))
    return out
