"""What the scenarios and profiles can name: evasion attacks, energy-latency searches, defences and
cost models, each with its parameters (type, default, meaning) and source paper.

One description serves ``auditor list`` and the JSON Schema (``params`` of each attack and search
entry typed, so editors complete them).  Attack parameters come from the constructor's signature
(types and defaults) and the ``* ``name=default`` — meaning`` bullets of the class docstring;
search parameters from their ``PARAMS`` declarations; the source paper from the first line of the
module docstring.
"""

from __future__ import annotations

import inspect
import re
import sys
import typing

#: parameters that are plumbing, not tuning (shown by `auditor list` but never needed in a scenario)
_PLUMBING = {"batch_size", "progress"}


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
    t = str(annotation).replace("typing.", "") if annotation is not inspect.Parameter.empty else ""
    if not t or t == "None":
        t = type(default).__name__ if default is not None else "any"
    return t.replace("<class '", "").replace("'>", "")


def _bullets(doc: str) -> dict[str, str]:
    """``* ``a=1``, ``b=2`` — meaning`` -> {a: meaning, b: meaning} (continuation lines joined)."""
    out: dict[str, str] = {}
    lines = (doc or "").splitlines()
    i = 0
    while i < len(lines):
        ln = lines[i].strip()
        if ln.startswith("* ``"):
            text = ln[2:]
            j = i + 1
            while j < len(lines) and lines[j].strip() and not lines[j].strip().startswith("*"):
                text += " " + lines[j].strip()
                j += 1
            names = re.findall(r"``([A-Za-z_][A-Za-z0-9_]*)(?:=[^`]*)?``", text.split("—")[0])
            meaning = (text.split("—", 1)[1] if "—" in text else text).strip().replace("``", "`")
            for n in names:
                out.setdefault(n, meaning)
            i = j
        else:
            i += 1
    return out


def _choices(annotation) -> list | None:
    if typing.get_origin(annotation) is typing.Literal:
        return list(typing.get_args(annotation))
    return None


def attack_catalog() -> dict[str, dict]:
    from .attacks.evasion import ATTACKS

    out = {}
    for name, cls in ATTACKS.items():
        sig = inspect.signature(cls.__init__)
        hints = {}
        try:
            hints = typing.get_type_hints(cls.__init__)
        except Exception:  # noqa: BLE001 - annotations that do not evaluate: fall back to strings
            pass
        docs = _bullets(cls.__doc__ or "")
        params = {}
        for k, p in sig.parameters.items():
            if k == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            ann = hints.get(k, p.annotation)
            params[k] = {"type": _type_of(ann, p.default), "default": None if p.default is p.empty else p.default,
                         "doc": docs.get(k, "plumbing: examples per batch" if k == "batch_size" else
                                         "show a progress bar (default: when stderr is a terminal)" if k == "progress"
                                         else "")}
        out[name] = {"name": name, "summary": _summary(cls.__doc__), "paper": _paper(cls),
                     "norm": getattr(cls, "norm", None) if isinstance(getattr(cls, "norm", None), str) else None,
                     "params": params}
    return out


def search_catalog() -> dict[str, dict]:
    from .attacks.energy import SEARCHES

    out = {}
    for name, cls in SEARCHES.items():
        params = {}
        for k, p in cls.PARAMS.items():
            e = {"type": p.kind, "default": p.default if p.kind != "object" else None, "doc": p.doc}
            if p.low is not None:
                e["minimum"] = p.low
            if p.high is not None:
                e["maximum"] = p.high
            if p.choices:
                e["choices"] = list(p.choices)
            params[k] = e
        out[name] = {"name": name, "summary": _summary(cls.__doc__), "paper": _paper(cls), "params": params}
    return out


def defence_catalog() -> dict[str, dict]:
    return {
        "quantize": {"name": "quantize", "summary": "input quantisation to k bits: x_q = round(2^k x) / 2^k",
                     "paper": "Krithivasan et al., Section IV",
                     "params": {"bits": {"type": "int", "default": None, "doc": "bits per pixel kept (required)"}}},
        "jpeg": {"name": "jpeg", "summary": "JPEG compression of the input at a quality",
                 "paper": "Krithivasan et al., Section IV",
                 "params": {"quality": {"type": "int", "default": None, "doc": "JPEG quality 1-100 (required)"}}},
        "threshold": {"name": "threshold", "summary": "per-layer ReLU thresholds tuned to a clean-accuracy loss budget",
                      "paper": "Krithivasan et al., Section IV",
                      "params": {"budget": {"type": "float", "default": None,
                                            "doc": "clean-accuracy loss allowed, e.g. 0.01 (required)"}}},
    }


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


_CATALOGS = {"attacks": attack_catalog, "searches": search_catalog, "defences": defence_catalog,
             "cost-models": cost_model_catalog}


def catalog(what: str, name: str | None = None) -> list[dict]:
    from .errors import AuditorError

    items = _CATALOGS[what]()
    if name is None:
        return list(items.values())
    if name not in items:
        raise AuditorError(f"unknown {what[:-1].replace('-', ' ')} '{name}' (known: {', '.join(items)})")
    return [items[name]]


def _show(v) -> str:
    if isinstance(v, str):
        return repr(v)
    return "null" if v is None else str(v)


def render_catalog(what: str, items: list[dict], width: int = 80) -> str:
    import textwrap

    L = []
    for it in items:
        L.append(f"{it['name']}: {it['summary']}".rstrip())
        if it.get("paper"):
            L += textwrap.wrap(f"source: {it['paper']}", width, initial_indent="  ", subsequent_indent="    ")
        for k, p in it["params"].items():
            head = f"{k} ({p['type']}, default {_show(p['default'])})"
            extra = ""
            if "minimum" in p or "maximum" in p:
                extra = f" [{_show(p.get('minimum', '-inf'))}, {_show(p.get('maximum', 'inf'))}]"
            if p.get("choices"):
                extra += f" one of {', '.join(map(str, p['choices']))}"
            text = f"{head}{extra}: {p['doc']}" + (f" Source: {p['source']}." if p.get("source") else "")
            L += textwrap.wrap(text, width, initial_indent="    ", subsequent_indent="        ")
        L.append("")
    return "\n".join(L).rstrip() + "\n"


# ----------------------------------------------------------------------------------------------
# JSON Schema of `params` (per attack / search name)
# ----------------------------------------------------------------------------------------------

_JSON_TYPES = {"int": {"type": "integer"}, "float": {"type": "number"}, "bool": {"type": "boolean"},
               "str": {"type": "string"}, "float?": {"type": ["number", "null"]},
               "floats": {"type": "array", "items": {"type": "number"}}}


def _json_type(t: str) -> dict:
    t = t.replace(" ", "")
    if t in _JSON_TYPES:
        return dict(_JSON_TYPES[t])
    opts = [x for x in t.split("|") if x]
    if len(opts) > 1:
        types = [_JSON_TYPES.get(x, {}).get("type") for x in opts if x != "None"]
        flat = [x for ty in types if ty for x in (ty if isinstance(ty, list) else [ty])]
        if "None" in opts:
            flat.append("null")
        if flat:
            return {"type": sorted(set(flat))}
    return {}


def params_schema(entry: dict) -> dict:
    props = {}
    for k, p in entry["params"].items():
        if k == "progress" or p["type"] == "object":
            continue
        s = _json_type(p["type"])
        if p.get("choices"):
            s = {"enum": list(p["choices"])}
        if "minimum" in p and s.get("type") in ("integer", "number"):
            s["minimum"] = p["minimum"]
        if "maximum" in p and s.get("type") in ("integer", "number"):
            s["maximum"] = p["maximum"]
        s["description"] = p["doc"] or k
        if p["default"] is not None and not callable(p["default"]):
            s["default"] = p["default"]
        props[k] = s
    return {"type": "object", "properties": props, "additionalProperties": False}


def typed_entries(key: str, names: dict, also: tuple[str, ...] = ()) -> list[dict]:
    """``if {key: name} then params: {...}`` rules for a list entry schema; ``also``: other
    spellings of ``key`` (the entry's schema requires exactly one of them)."""
    def cond(n: str) -> dict:
        c = {"properties": {k: {"const": n} for k in (key, *also)}}
        return c if also else dict(c, required=[key])
    return [{"if": cond(n), "then": {"properties": {"params": params_schema(e)}}} for n, e in names.items()]


def type_scenario_params(out: dict) -> dict:
    """Add the typed ``params`` of every attack and search to a scenario JSON Schema (in place)."""
    props = out.get("properties", {})

    def _obj(node):
        if isinstance(node, dict) and "anyOf" in node:
            return next((o for o in node["anyOf"] if o.get("type") in ("object", "array")), node)
        return node

    attacks = attack_catalog()
    ea = _obj(props.get("energy_attacks", {})).get("items")
    if isinstance(ea, dict):
        ea["allOf"] = ea.get("allOf", []) + typed_entries("search", search_catalog())
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
