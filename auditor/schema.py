"""Declarative YAML schemas: dataclasses in, validated objects out, errors as ``file:line:col``.

Every YAML file the tool reads (hardware profiles, scenarios) is described by dataclasses whose
fields carry ``metadata={"doc": ..., "unit": ..., "source": ...}``.  :func:`load_yaml` parses a file
keeping line numbers, and :func:`build` turns the YAML tree into the dataclass, rejecting unknown
keys, wrong types and missing required fields with one line naming the file, the line, the key
path and the reason.  :func:`json_schema` derives a JSON Schema from the same dataclasses, so the
documentation cannot drift from what the loader accepts.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml

from .errors import AuditorError, short
from .files import read_text

MISSING = dataclasses.MISSING


def field(default=MISSING, *, doc: str, unit: str | None = None, source: str | None = None,
          default_factory=MISSING, minimum: float | None = None, maximum: float | None = None,
          exclusive_minimum: bool = False, aliases: tuple[str, ...] = ()):
    """A documented dataclass field.  ``minimum``/``maximum`` bound a number (or every number of
    a list); ``exclusive_minimum`` excludes the minimum itself.  Integer fields without a declared
    maximum are bounded by :data:`MAX_INT`.  ``aliases``: other keys the YAML may spell the field
    with (one of them at most per mapping)."""
    meta = {"doc": doc}
    if aliases:
        meta["aliases"] = tuple(aliases)
    if unit:
        meta["unit"] = unit
    if source:
        meta["source"] = source
    if minimum is not None:
        meta["minimum"] = minimum
        if exclusive_minimum:
            meta["exclusive_minimum"] = True
    if maximum is not None:
        meta["maximum"] = maximum
    if default_factory is not MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


#: the largest YAML file read (profiles and scenarios are a few KiB; parsing is ~10 us a value)
MAX_YAML_BYTES = 256 << 10
#: the most nodes a YAML document may expand to, aliases counted at every use ("billion laughs")
MAX_YAML_NODES = 100_000
#: the deepest nesting of YAML collections
MAX_YAML_DEPTH = 64
#: magnitude bound of integer fields that declare no maximum (counts and sizes beyond it only
#: exhaust memory or overflow the cost models' int64 arithmetic)
MAX_INT = 2**31 - 1
_PLAIN_TAGS = {f"tag:yaml.org,2002:{t}" for t in ("null", "bool", "int", "float", "str", "seq", "map", "timestamp")}


class _Loc:
    def __init__(self, file: str, node: yaml.Node | None):
        self.file = file
        self.line = node.start_mark.line + 1 if node is not None else 1
        self.col = node.start_mark.column + 1 if node is not None else 1

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


def load_yaml(path: str | Path) -> tuple[yaml.Node | None, str]:
    """Parse a YAML file into a node tree (with line numbers); errors name the file and line.

    Only a regular file of at most :data:`MAX_YAML_BYTES` is read; the tree is then checked
    (:func:`check_tree`): plain tags only, scalar and unique keys, bounded depth and expansion."""
    text = read_text(path, "YAML file", MAX_YAML_BYTES)
    _check_flow_depth(text, str(path))
    try:
        node = yaml.compose(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise AuditorError(f"invalid YAML: {problem}", where=where) from None
    except RecursionError:
        raise AuditorError(f"invalid YAML: nested deeper than {MAX_YAML_DEPTH} levels", where=str(path)) from None
    check_tree(node, str(path))
    return node, str(path)


def _check_flow_depth(text: str, file: str) -> None:
    """Refuse deeply nested flow collections (``[[[[...``) before PyYAML's scanner, whose time
    grows with the square of the nesting, sees them (brackets inside quotes and comments are
    skipped; a stray bracket in a plain scalar only counts towards the bound)."""
    depth, line, col0, quote = 0, 1, 0, None
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "\n":
            line, col0 = line + 1, i + 1
            if quote == "'":
                pass
        elif quote:
            if c == "\\" and quote == '"':
                i += 1
            elif c == quote:
                quote = None
        elif c in "'\"" and (i == 0 or text[i - 1] in " \t[{,:\n"):
            quote = c
        elif c == "#" and (i == 0 or text[i - 1] in " \t\n"):
            j = text.find("\n", i)
            i = n if j < 0 else j
            continue
        elif c in "[{":
            depth += 1
            if depth > MAX_YAML_DEPTH:
                raise AuditorError(f"invalid YAML: nested deeper than {MAX_YAML_DEPTH} levels",
                                   where=f"{file}:{line}:{i - col0 + 1}")
        elif c in "]}":
            depth = max(0, depth - 1)
        i += 1


def check_tree(root: yaml.Node | None, file: str) -> None:
    """Refuse what PyYAML would accept but the tool cannot mean: tags other than the plain ones
    (``!python/...``, ``!!binary``, custom ``!tags``), keys that are not scalars, duplicate keys
    (the later one would silently win), scalars that cannot be built, recursive aliases, nesting
    deeper than :data:`MAX_YAML_DEPTH` and documents expanding to more than
    :data:`MAX_YAML_NODES` values with every alias counted at each use ("billion laughs").

    Each distinct node is visited once (aliases share nodes); the expanded size and the depth
    are summed and maxed over the node graph, so a bomb costs no more than its text."""
    if root is None:
        return
    size: dict[int, int] = {}
    height: dict[int, int] = {}
    on_path: set[int] = set()
    loader = _loader()
    stack = [(root, False)]
    try:
        while stack:
            node, done = stack.pop()
            key = id(node)
            if done:
                on_path.discard(key)
                kids = _children(node)
                size[key] = 1 + sum(size[id(k)] for k in kids) + (len(node.value) if isinstance(node, yaml.MappingNode) else 0)
                height[key] = 1 + max((height[id(k)] for k in kids), default=0)
                if size[key] > MAX_YAML_NODES:
                    raise AuditorError(f"invalid YAML: the document expands to more than {MAX_YAML_NODES} values "
                                       "(aliases counted at every use)", where=where(file, node))
                if height[key] > MAX_YAML_DEPTH:
                    raise AuditorError(f"invalid YAML: nested deeper than {MAX_YAML_DEPTH} levels", where=where(file, node))
                continue
            if key in size:
                continue
            if key in on_path:
                raise AuditorError("invalid YAML: an alias refers to a collection that contains it", where=where(file, node))
            if node.tag not in _PLAIN_TAGS:
                raise AuditorError(f"invalid YAML: tag {short(node.tag)} is not supported (only plain values, "
                                   "lists and mappings)", where=where(file, node))
            if isinstance(node, yaml.ScalarNode):
                _scalar(node, file, loader)
                size[key], height[key] = 1, 0
                continue
            if isinstance(node, yaml.MappingNode):
                seen: dict[str, int] = {}
                for knode, _ in node.value:
                    if not isinstance(knode, yaml.ScalarNode):
                        raise AuditorError("invalid YAML: a mapping key must be a plain value, not a list or mapping",
                                           where=where(file, knode))
                    if knode.tag == "tag:yaml.org,2002:merge":
                        raise AuditorError("invalid YAML: merge keys (<<) are not supported; write the keys out",
                                           where=where(file, knode))
                    if knode.tag not in _PLAIN_TAGS:
                        raise AuditorError(f"invalid YAML: tag {short(knode.tag)} is not supported",
                                           where=where(file, knode))
                    k = str(_scalar(knode, file, loader))
                    if k in seen:
                        raise AuditorError(f"duplicate key {short(k)} (first at line {seen[k]})", where=where(file, knode))
                    seen[k] = knode.start_mark.line + 1
            on_path.add(key)
            stack.append((node, True))
            stack.extend((k, False) for k in reversed(_children(node)))
    finally:
        loader.dispose()


def _children(node) -> list:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [v for _, v in node.value]
    return []


def _loader():
    return yaml.SafeLoader("")


def _scalar(node: yaml.ScalarNode, file: str, loader=None):
    """A scalar's value; values PyYAML cannot build (an integer of 5000 digits, a date that does
    not exist) are one located error."""
    try:
        return loader.construct_object(node) if loader is not None else _construct(node)
    except (ValueError, OverflowError, yaml.YAMLError) as e:
        raise AuditorError(f"invalid YAML value {short(node.value)} ({e.__class__.__name__})",
                           where=where(file, node)) from None


def _construct(node: yaml.Node) -> Any:
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    finally:
        loader.dispose()


def _type_name(tp) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (list, tuple):
        args = get_args(tp)
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        return "mapping"
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp) if a is not type(None))
    if dataclasses.is_dataclass(tp):
        return "mapping"
    return {int: "integer", float: "number", bool: "boolean", str: "string"}.get(tp, getattr(tp, "__name__", str(tp)))


def build(tp, node: yaml.Node | None, file: str, path: str = ""):
    """Convert a YAML node to an instance of ``tp`` (a dataclass or a typing type)."""
    loc = _Loc(file, node)
    key = path or "(top level)"

    def fail(reason: str):
        raise AuditorError(f"{key}: {reason}", where=str(loc))

    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if node is None or (isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null")):
            if type(None) in get_args(tp):
                return None
            fail(f"expected {_type_name(tp)}, got null")
        errors = []
        for a in args:
            try:
                return build(a, node, file, path)
            except AuditorError as e:
                errors.append(e)
        if len(errors) == 1:
            raise errors[0]
        fail(f"expected {_type_name(tp)}")
    if dataclasses.is_dataclass(tp):
        if node is None:
            node = yaml.MappingNode("tag:yaml.org,2002:map", [])
        if not isinstance(node, yaml.MappingNode):
            fail(f"expected a mapping, got {_kind(node)}")
        fields = {f.name: f for f in dataclasses.fields(tp) if f.init}
        alias = aliases_of(tp)
        values, seen = {}, {}
        for knode, vnode in node.value:
            k = _construct(knode)
            kname = k if isinstance(k, str) and len(k) <= 40 else short(k, 40)
            sub = f"{path}.{kname}" if path else kname
            if isinstance(k, str) and k in alias:
                k = alias[k]
            if not isinstance(k, str) or k not in fields:
                close = _closest(str(k)[:100], list(fields) + list(alias))
                hint = f" (did you mean '{close}'?)" if close else f" (known keys: {', '.join(fields)})"
                raise AuditorError(f"{sub}: unknown key{hint}", where=str(_Loc(file, knode)))
            if k in seen:
                other = f" ('{seen[k]}' and '{kname}' both spell '{k}')" if kname != seen[k] else ""
                raise AuditorError(f"{sub}: duplicate key{other}", where=str(_Loc(file, knode)))
            seen[k] = kname
            values[k] = build(_hint(tp, k), vnode, file, sub)
            _check_bounds(fields[k], values[k], vnode, file, sub)
        for name, f in fields.items():
            if name not in values and f.default is MISSING and f.default_factory is MISSING:
                fail(f"missing required key '{name}'")
        try:
            obj = tp(**values)
        except (TypeError, ValueError) as e:
            fail(str(e))
        check = getattr(obj, "validate", None)
        if check is not None:
            try:
                check()
            except ValueError as e:
                fail(str(e))
        return obj
    if origin is dict:
        kt, vt = get_args(tp) or (str, Any)
        if not isinstance(node, yaml.MappingNode):
            fail(f"expected a mapping, got {_kind(node)}")
        out = {}
        for knode, vnode in node.value:
            k = _construct(knode)
            kname = str(k) if len(str(k)) <= 40 else short(str(k), 40)
            out[str(k)] = build(vt, vnode, file, f"{path}.{kname}" if path else kname)
        return out
    if origin in (list, tuple):
        (et, *_) = get_args(tp) or (Any,)
        if not isinstance(node, yaml.SequenceNode):
            fail(f"expected a list, got {_kind(node)}")
        return [build(et, v, file, f"{path}[{i}]") for i, v in enumerate(node.value)]
    if tp is Any:
        return _construct(node) if node is not None else None
    if node is None or not isinstance(node, yaml.ScalarNode):
        fail(f"expected {_type_name(tp)}, got {_kind(node)}")
    v = _construct(node)
    if origin is Literal:
        if v not in get_args(tp):
            fail(f"expected one of {_type_name(tp)}, got {short(v)}")
        return v
    if tp is bool:
        if not isinstance(v, bool):
            fail(f"expected a boolean (true/false), got {short(v)}")
        return v
    if tp is int:
        if isinstance(v, bool) or not isinstance(v, int):
            fail(f"expected an integer, got {short(v)}")
        return v
    if tp is float:
        if isinstance(v, str):
            try:  # YAML 1.1 reads 1e9 as a string; accept plain numeric spellings
                v = float(v)
            except ValueError:
                fail(f"expected a number, got {short(v)}")
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            fail(f"expected a number, got {short(v)}")
        if not math.isfinite(float(v)):
            fail(f"expected a finite number, got {short(v)}")
        return float(v)
    if tp is str:
        if not isinstance(v, str):
            fail(f"expected a string, got {short(v)}")
        return v
    return v


def num_text(v) -> str:
    """A bound as people write it (integers exactly, floats shortest)."""
    return str(v) if isinstance(v, int) else f"{v:g}"


def _check_bounds(f: dataclasses.Field, value, node, file: str, key: str) -> None:
    """The ``minimum``/``maximum`` of a field (see :func:`field`) on a number or on every number
    of a list; integers without a declared maximum are bounded by :data:`MAX_INT`."""
    md = f.metadata
    lo, hi, open_lo = md.get("minimum"), md.get("maximum"), md.get("exclusive_minimum", False)
    items = value if isinstance(value, list) else [value]
    for i, v in enumerate(items):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        vnode = node.value[i] if isinstance(value, list) and isinstance(node, yaml.SequenceNode) else node
        sub = f"{key}[{i}]" if isinstance(value, list) else key
        top = hi if hi is not None else (MAX_INT if isinstance(v, int) else None)
        bottom = lo if lo is not None else (-MAX_INT if isinstance(v, int) else None)
        if bottom is not None and (v < bottom or (open_lo and v == bottom)):
            raise AuditorError(f"{sub}: must be {'>' if open_lo else '>='} {num_text(bottom)}, got {short(v)}", where=where(file, vnode))
        if top is not None and v > top:
            raise AuditorError(f"{sub}: must be <= {num_text(top)}, got {short(v)}", where=where(file, vnode))


def aliases_of(tp) -> dict[str, str]:
    """{alias: field name} of a dataclass's fields (see the ``aliases`` of :func:`field`)."""
    return {a: f.name for f in dataclasses.fields(tp) if f.init for a in f.metadata.get("aliases", ())}


def _hint(tp, name: str):
    return typing.get_type_hints(tp)[name]


def _kind(node) -> str:
    if node is None:
        return "nothing"
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return short(_construct(node))


def _closest(word: str, options) -> str | None:
    m = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return m[0] if m else None


def load(tp, path: str | Path):
    """Load and validate a YAML file as dataclass ``tp``."""
    node, file = load_yaml(path)
    return build(tp, node, file)


def to_dict(obj) -> Any:
    """A dataclass tree as plain JSON-able data."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def json_schema(tp, title: str | None = None) -> dict:
    """JSON Schema (draft 2020-12) of a dataclass tree, with docs, units and sources."""
    def sch(t) -> dict:
        origin = get_origin(t)
        if origin in (Union, types.UnionType):
            opts = [sch(a) for a in get_args(t) if a is not type(None)]
            if type(None) in get_args(t):
                opts.append({"type": "null"})
            return opts[0] if len(opts) == 1 else {"anyOf": opts}
        if origin is Literal:
            return {"enum": list(get_args(t))}
        if origin in (list, tuple):
            args = get_args(t)
            return {"type": "array", "items": sch(args[0]) if args else {}}
        if origin is dict:
            args = get_args(t)
            return {"type": "object", "additionalProperties": sch(args[1]) if args else {}}
        if dataclasses.is_dataclass(t):
            props, required = {}, []
            hints = typing.get_type_hints(t)
            for f in dataclasses.fields(t):
                if not f.init:
                    continue
                s = _bounded(sch(hints[f.name]), f.metadata)
                md = f.metadata
                desc = md.get("doc", "")
                if md.get("unit"):
                    desc += f" [{md['unit']}]"
                if md.get("source"):
                    desc += f" (source: {md['source']})"
                if desc:
                    s = dict(s, description=desc.strip())
                if f.default is not MISSING:
                    s["default"] = to_dict(f.default)
                elif f.default_factory is not MISSING:
                    s["default"] = to_dict(f.default_factory())
                else:
                    required.append(f.name)
                props[f.name] = s
                for a in md.get("aliases", ()):
                    props[a] = dict(s, description=f"other spelling of `{f.name}`")
            out = {"type": "object", "properties": props, "additionalProperties": False}
            spelt = {f.name: (f.name, *f.metadata.get("aliases", ())) for f in dataclasses.fields(t) if f.init}
            plain = [r for r in required if len(spelt[r]) == 1]
            if plain:
                out["required"] = plain
            # a required field with other spellings: exactly one of them
            either = [[{"required": [k]} for k in spelt[r]] for r in required if len(spelt[r]) > 1]
            if len(either) == 1:
                out["oneOf"] = either[0]
            elif either:
                out["anyOf"] = [{"allOf": [{"oneOf": e} for e in either]}]
            if t.__doc__ and not t.__doc__.startswith(t.__name__ + "("):
                out["description"] = " ".join(t.__doc__.split())
            return out
        return {int: {"type": "integer"}, float: {"type": "number"}, bool: {"type": "boolean"},
                str: {"type": "string"}}.get(t, {})

    out = {"$schema": "https://json-schema.org/draft/2020-12/schema"}
    if title:
        out["title"] = title
    out.update(sch(tp))
    return out


def _bounded(s: dict, md) -> dict:
    """A field's JSON Schema with its ``minimum``/``maximum`` on the numbers it holds."""
    if "minimum" not in md and "maximum" not in md:
        return s
    if s.get("type") in ("number", "integer"):
        s = dict(s)
        if "minimum" in md:
            s["exclusiveMinimum" if md.get("exclusive_minimum") else "minimum"] = md["minimum"]
        if "maximum" in md:
            s["maximum"] = md["maximum"]
        return s
    if s.get("type") == "array":
        return dict(s, items=_bounded(s.get("items", {}), md))
    if "anyOf" in s:
        return dict(s, anyOf=[_bounded(o, md) for o in s["anyOf"]])
    return s


def locate(node, *path) -> yaml.Node | None:
    """The node at a key/index path of a YAML tree (None when absent), for error locations."""
    for p in path:
        if isinstance(p, int) and isinstance(node, yaml.SequenceNode) and p < len(node.value):
            node = node.value[p]
        elif isinstance(p, str) and isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if getattr(k, "value", None) == p), None)
        else:
            return None
    return node


def where(file: str, node) -> str:
    return str(_Loc(file, node))
