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
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml

from .errors import AuditorError

MISSING = dataclasses.MISSING


def field(default=MISSING, *, doc: str, unit: str | None = None, source: str | None = None,
          default_factory=MISSING):
    """A documented dataclass field."""
    meta = {"doc": doc}
    if unit:
        meta["unit"] = unit
    if source:
        meta["source"] = source
    if default_factory is not MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


class _Loc:
    def __init__(self, file: str, node: yaml.Node | None):
        self.file = file
        self.line = node.start_mark.line + 1 if node is not None else 1
        self.col = node.start_mark.column + 1 if node is not None else 1

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


def load_yaml(path: str | Path) -> tuple[yaml.Node | None, str]:
    """Parse a YAML file into a node tree (with line numbers); errors name the file and line."""
    p = Path(path)
    if not p.exists():
        raise AuditorError("file not found", where=str(path))
    if p.is_dir():
        raise AuditorError("is a directory, expected a YAML file", where=str(path))
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise AuditorError(f"cannot read file ({e.__class__.__name__})", where=str(path)) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise AuditorError(f"invalid YAML: {problem}", where=where) from None
    return node, str(path)


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
        values, seen = {}, {}
        for knode, vnode in node.value:
            k = _construct(knode)
            sub = f"{path}.{k}" if path else str(k)
            if not isinstance(k, str) or k not in fields:
                close = _closest(str(k), fields)
                hint = f" (did you mean '{close}'?)" if close else f" (known keys: {', '.join(fields)})"
                raise AuditorError(f"{sub}: unknown key{hint}", where=str(_Loc(file, knode)))
            if k in seen:
                raise AuditorError(f"{sub}: duplicate key", where=str(_Loc(file, knode)))
            seen[k] = True
            values[k] = build(_hint(tp, k), vnode, file, sub)
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
            out[str(k)] = build(vt, vnode, file, f"{path}.{k}" if path else str(k))
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
            fail(f"expected one of {_type_name(tp)}, got {v!r}")
        return v
    if tp is bool:
        if not isinstance(v, bool):
            fail(f"expected a boolean (true/false), got {v!r}")
        return v
    if tp is int:
        if isinstance(v, bool) or not isinstance(v, int):
            fail(f"expected an integer, got {v!r}")
        return v
    if tp is float:
        if isinstance(v, str):
            try:  # YAML 1.1 reads 1e9 as a string; accept plain numeric spellings
                v = float(v)
            except ValueError:
                fail(f"expected a number, got {v!r}")
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            fail(f"expected a number, got {v!r}")
        if not math.isfinite(float(v)):
            fail(f"expected a finite number, got {v!r}")
        return float(v)
    if tp is str:
        if not isinstance(v, str):
            fail(f"expected a string, got {v!r}")
        return v
    return v


def _hint(tp, name: str):
    return typing.get_type_hints(tp)[name]


def _kind(node) -> str:
    if node is None:
        return "nothing"
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return repr(_construct(node))


def _closest(word: str, options) -> str | None:
    import difflib

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
                s = sch(hints[f.name])
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
            out = {"type": "object", "properties": props, "additionalProperties": False}
            if required:
                out["required"] = required
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
