"""The audit report: a JSON-able dict with a verdict, and its renderings (text, JSON)."""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path

#: keys that vary between identical runs: timestamps and durations (excluded when comparing)
VOLATILE_KEYS = ("timing", "seconds", "seconds_per_input", "seconds_per_example", "started", "environment")


def stable(d):
    """The report without its timestamps and durations: equal for equal model, profiles, scenario
    and seed (what the determinism guarantee covers)."""
    if isinstance(d, dict):
        return {k: stable(v) for k, v in d.items() if k not in VOLATILE_KEYS}
    if isinstance(d, list):
        return [stable(v) for v in d]
    return d


#: verdict -> exit code of ``auditor audit`` / ``render`` / ``diff``
EXIT_CODES = {"PASS": 0, "FAIL": 1, "INCOMPLETE": 4}

#: output file suffix -> report format (``-o report.html``)
SUFFIX_FORMATS = {".html": "html", ".htm": "html", ".json": "json", ".xml": "junit", ".md": "markdown",
                  ".markdown": "markdown", ".txt": "text"}


class Report:
    def __init__(self, data: dict, files_dir=None):
        self.data = data
        #: the folder the audit saved its inputs in (the only files an HTML rendering embeds
        #: when render() is given no base_dir); None for a loaded report
        self.files_dir = files_dir

    @property
    def verdict(self) -> str:
        return self.data["verdict"]

    @property
    def passed(self) -> bool:
        return self.verdict == "PASS"

    @property
    def checks(self) -> list[dict]:
        return self.data["checks"]

    @property
    def exit_code(self) -> int:
        """What ``auditor audit`` exits with: 0 PASS, 1 FAIL, 4 INCOMPLETE (cut short by the budget)."""
        return EXIT_CODES.get(self.verdict, 1)

    def __repr__(self) -> str:
        d = self.data
        checks = d.get("checks") or []
        n_fail = sum(check_status(c) == "FAIL" for c in checks)
        n_nd = sum(check_status(c) == "NOT DECIDED" for c in checks)
        parts = [f"verdict={d.get('verdict')!r}", f"model={str((d.get('model') or {}).get('path'))!r}",
                 f"profiles={[p.get('name') for p in d.get('profiles') or []]!r}",
                 f"checks={len(checks)} ({n_fail} failed" + (f", {n_nd} not decided" if n_nd else "") + ")"]
        if d.get("warnings"):
            parts.append(f"warnings={len(d['warnings'])}")
        return f"<auditor Report {' '.join(parts)}>"

    def _repr_html_(self) -> str:
        """Jupyter: the verdict, warnings and checks table (``render('html')`` is the full report)."""
        from .html import render_summary_html

        return render_summary_html(self.data)

    def to_json(self) -> str:
        return json.dumps(_clean(self.data), indent=2, sort_keys=False, allow_nan=False) + "\n"

    def render(self, fmt: str, base_dir=None, *, color: bool = False) -> str:
        """The report as text, json, junit, markdown or html (``base_dir``: where relative paths of
        saved worst inputs are looked up for html; ``color``: ANSI PASS/FAIL in text)."""
        if fmt == "json":
            return self.to_json()
        if fmt == "text":
            return render_text(self.data, color=color)
        if fmt == "html":
            from .html import render_html

            return render_html(self.data, base_dir=base_dir if base_dir is not None else self.files_dir)
        if fmt in ("junit", "markdown"):
            from .formats import render_junit, render_markdown

            return (render_junit if fmt == "junit" else render_markdown)(self.data)
        raise ValueError(f"unknown format {fmt!r}")

    @classmethod
    def load(cls, path: str | Path) -> "Report":
        """Read a JSON report written by ``auditor audit --format json``; anything else (not
        JSON, nested absurdly deep, another schema version, keys missing or of the wrong type)
        is one AuditorError naming the file and what is wrong."""
        from ..errors import AuditorError
        from ..files import read_bytes

        raw = read_bytes(path, "report file", MAX_REPORT_BYTES)
        try:
            data = json.loads(raw.decode("utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise AuditorError(f"not a JSON report ({e.__class__.__name__}: {str(e)[:120]})", where=str(path)) from None
        except RecursionError:
            raise AuditorError("not an auditor report: JSON nested too deeply", where=str(path)) from None
        return cls.checked(data, str(path))

    @classmethod
    def checked(cls, data, where: str = "report") -> "Report":
        """A report from loaded JSON data, after :func:`check_report` (AuditorError naming
        ``where`` and what is wrong)."""
        from ..errors import AuditorError

        problem = check_report(data)
        if problem:
            raise AuditorError(f"not an auditor report: {problem}", where=where)
        return cls(data)


#: the schema version this tool writes and reads
SCHEMA_VERSION = 1
#: the largest report file read
MAX_REPORT_BYTES = 64 << 20
#: the deepest nesting a report may have (real ones stay under 10)
MAX_REPORT_DEPTH = 40


class _Opt:
    """A report field that may be null."""

    def __init__(self, spec):
        self.spec = spec


class _Maybe:
    """A key that may be absent (its value, when present, must match)."""

    def __init__(self, key: str):
        self.key = key

    def __hash__(self):
        return hash(self.key)

    def __eq__(self, other):
        return isinstance(other, _Maybe) and other.key == self.key


_NUM = "number"
_STATS = {"mean": _NUM, "worst": _NUM, "p95": _NUM}
_CHECK = {"name": str, "profile": str, "measured": _Opt(_NUM), "threshold": _Opt(_NUM), "op": str, "passed": bool,
          _Maybe("detail"): _Opt(str)}
_LAYER = {"layer": str, "op": str, "input_density": _NUM, "cycles": int, "dense_cycles": int, "energy_j": _NUM}
_ROBUST = {_Maybe("clean_accuracy"): _Opt(_NUM), _Maybe("count"): int,
           _Maybe("attacks"): [{"attack": str, "norm": str,
                                _Maybe("results"): [{"epsilon": _NUM, "robust_accuracy": _NUM,
                                                     "attack_success_rate": _NUM}]}]}
_PROFILE = {
    "name": str, "cost_model": str, _Maybe("profile"): dict, _Maybe("timing"): {_Maybe("stages"): dict},
    "clean": {"accuracy": _Opt(_NUM), "density": {"counted": str, "mean": _NUM, "worst": _NUM},
              "latency_s": _STATS, "energy_j": _STATS, "edp": _STATS, "speedup_over_dense": {"mean": _NUM},
              "worst_input": {"index": int, "layers": [_LAYER]}},
    "summary": {"worst_latency_s": _NUM, "worst_energy_j": _NUM, "worst_density": _NUM,
                _Maybe("clean_accuracy"): _Opt(_NUM)},
    _Maybe("attacks"): [{"search": str}],
    _Maybe("robustness"): _ROBUST,
    _Maybe("checks"): [_CHECK],
}
#: the fields every renderer (text, JSON, JUnit, Markdown, HTML), ``diff`` and ``--baseline``
#: rely on; a report is checked against it when loaded
REPORT_SPEC = {
    "schema_version": int, "verdict": ("PASS", "FAIL", "INCOMPLETE"), "tool": {"version": str}, "seed": int,
    "model": {"path": str, "sha256": str, "opset": int}, "scenario": {"name": str},
    "data": {"description": str, "count": int}, "profiles": [_PROFILE], "checks": [_CHECK],
    _Maybe("timing"): dict, _Maybe("environment"): dict, _Maybe("budget"): dict, _Maybe("baseline"): dict,
}


def _type_word(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    return {dict: "a mapping", list: "a list", str: "a string", int: "an integer", float: "a number"}.get(type(v), "a value")


def check_report(data) -> str | None:
    """What makes ``data`` not a report this tool can render (None when it is one)."""
    if _depth_exceeds(data, MAX_REPORT_DEPTH):
        return f"nested deeper than {MAX_REPORT_DEPTH} levels"
    if not isinstance(data, dict):
        return f"the file holds {_type_word(data)}, not a mapping"
    missing = [k for k in ("schema_version", "profiles") if k not in data]
    if missing:
        return f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing"
    v = data["schema_version"]
    if v != SCHEMA_VERSION or isinstance(v, bool):
        return (f"schema_version {str(v)[:20]} is not the version this tool reads ({SCHEMA_VERSION}); "
                "render it with the auditor version that wrote it")
    return _check(data, REPORT_SPEC, "")


def _depth_exceeds(v, limit: int) -> bool:
    stack = [(v, 0)]
    while stack:
        x, d = stack.pop()
        if d > limit:
            return True
        if isinstance(x, dict):
            stack.extend((y, d + 1) for y in x.values())
        elif isinstance(x, list):
            stack.extend((y, d + 1) for y in x)
    return False


def _check(v, spec, path: str) -> str | None:
    where = path or "the top level"
    if isinstance(spec, _Opt):
        return None if v is None else _check(v, spec.spec, path)
    if spec is _NUM:
        ok = (isinstance(v, (int, float)) and not isinstance(v, bool)) or v in ("inf", "-inf")
        return None if ok else f"{where} is {_type_word(v)}, expected a number"
    if isinstance(spec, tuple):
        return None if v in spec else f"{where} is {str(v)[:20]!r}, expected {' or '.join(spec)}"
    if isinstance(spec, type):
        ok = isinstance(v, spec) and not (spec is int and isinstance(v, bool))
        return None if ok else f"{where} is {_type_word(v)}, expected {_type_word(spec())}"
    if isinstance(spec, list):
        if not isinstance(v, list):
            return f"{where} is {_type_word(v)}, expected a list"
        for i, x in enumerate(v):
            bad = _check(x, spec[0], f"{path}[{i}]")
            if bad:
                return bad
        return None
    if not isinstance(v, dict):
        return f"{where} is {_type_word(v)}, expected a mapping"
    for k, sub in spec.items():
        key = k.key if isinstance(k, _Maybe) else k
        if key not in v:
            if isinstance(k, _Maybe):
                continue
            return f"{(path + '.' if path else '') + key} is missing"
        bad = _check(v[key], sub, f"{path}.{key}" if path else key)
        if bad:
            return bad
    return None


def _clean(v):
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else ("inf" if v > 0 else "-inf")
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):
        try:
            return _clean(v.item())
        except (ValueError, AttributeError):
            pass
    return v


def _si(v: float | None, unit: str) -> str:
    if v is None:
        return "n/a"
    if v == 0:
        return f"0 {unit}"
    for f, p in ((1e-12, "p"), (1e-9, "n"), (1e-6, "u"), (1e-3, "m"), (1.0, ""), (1e3, "k")):
        if abs(v) < f * 1000:
            return f"{v / f:.3g} {p}{unit}"
    return f"{v:.3g} {unit}"


def _short(name: str, width: int) -> str:
    return name if len(name) <= width else "…" + name[-(width - 1):]


def _fmt_num(v) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e6):
            return f"{v:.3e}"
        return f"{v:.4g}"
    return str(v)


def check_status(c: dict) -> str:
    """PASS, FAIL or NOT DECIDED (cut short by the time budget before it could be measured)."""
    if not c.get("decided", True):
        return "NOT DECIDED"
    return "PASS" if c.get("passed") else "FAIL"


def verdict_of(checks: list[dict], cut_short: bool = False) -> str:
    """FAIL when a decided check failed; INCOMPLETE when the time budget cut the audit short
    (or a check could not be decided) and nothing failed; PASS otherwise."""
    if any(check_status(c) == "FAIL" for c in checks):
        return "FAIL"
    if cut_short or any(check_status(c) == "NOT DECIDED" for c in checks):
        return "INCOMPLETE"
    return "PASS"


def sorted_checks(checks: list[dict]) -> list[dict]:
    """Failing checks first, then not decided, then passing (stable within each group)."""
    order = {"FAIL": 0, "NOT DECIDED": 1, "PASS": 2}
    return sorted((c for c in checks if isinstance(c, dict)), key=lambda c: order[check_status(c)])


_ANSI = {"PASS": "\033[32m", "FAIL": "\033[1;31m", "NOT DECIDED": "\033[33m", "N/D ": "\033[33m", "INCOMPLETE": "\033[33m"}


def _paint(word: str, color: bool) -> str:
    return f"{_ANSI[word]}{word}\033[0m" if color and word in _ANSI else word


def _wrap(text: str, width: int = 80, indent: str = "         ") -> list[str]:
    import textwrap

    return textwrap.wrap(text, width, subsequent_indent=indent, break_on_hyphens=False, break_long_words=True) or [""]


def render_text(d: dict, color: bool = False) -> str:
    """A readable report for an 80-column terminal, verdict first (``color``: ANSI PASS/FAIL)."""
    from .sections import (approx_blocks, energy_blocks, generic_blocks, robustness_blocks, text_blocks,
                           warning_blocks)

    L = []
    L.append(f"auditor {d['tool']['version']} — verdict: {_paint(d['verdict'], color)}")
    L += _wrap(f"model    {d['model']['path']}  (sha256 {d['model']['sha256'][:12]}, opset {d['model']['opset']})")
    for note in d["model"].get("load_notes") or []:  # what loading changed (float16 -> float32, QDQ)
        L += _wrap(f"         note: {note}")
    sc = d["scenario"]
    L += _wrap(f"scenario {sc['name']}  seed {d['seed']}  data: {d['data']['description']}, {d['data']['count']} inputs")
    L += text_blocks(warning_blocks(d))
    for p in d["profiles"]:
        L.append("")
        head = _short(f"== {p['name']} ({p['cost_model']}) ", 79)
        L.append(head + "=" * max(0, 80 - len(head)))
        if "clean" not in p:
            L.append("cut short by --max-seconds before the clean evaluation ended (no result)")
            continue
        c = p["clean"]
        acc = c["accuracy"]
        L.append(f"clean accuracy {'n/a' if acc is None else f'{100 * acc:.2f}%'}   "
                 f"density ({c['density']['counted']}) mean {c['density']['mean']:.3f} worst {c['density']['worst']:.3f}")
        L.append(f"{'':14s}{'mean':>14s}{'worst':>14s}{'p95':>14s}")
        for key, unit, label in (("latency_s", "s", "latency"), ("energy_j", "J", "energy"), ("edp", "Js", "EDP")):
            s = c[key]
            L.append(f"{label:14s}{_si(s['mean'], unit):>14s}{_si(s['worst'], unit):>14s}{_si(s['p95'], unit):>14s}")
        L.append(f"{'speed-up vs dense':18s}{c['speedup_over_dense']['mean']:>10.3f}x (mean)")
        rs = (p.get("profile") or {}).get("reshape") or {}
        if rs.get("quantize_bits"):
            L.append(f"precision what-if: {rs['quantize_bits']}-bit weights "
                     f"({'per channel' if rs.get('quantize_per_channel', True) else 'per tensor'})"
                     + (" and activations (per tensor, calibrated on the clean data)" if rs.get("quantize_activations")
                        else ", float activations") + ", post-training, no retraining")
        for note in p.get("notes", []):
            L.extend(textwrap.wrap(f"note: {note}", 80, subsequent_indent="  "))
        known = {"name", "path", "cost_model", "description", "profile", "clean", "attacks", "summary", "checks",
                 "robustness", "approx", "zero_thresholds", "cut_short", "timing", "notes", "masking"}
        if p.get("attacks"):
            L += text_blocks(energy_blocks(p["attacks"]))
        if p.get("robustness"):
            L.append("robustness:")
            L += text_blocks(robustness_blocks(p["robustness"]))
        if p.get("masking"):
            from ..pipeline.masking import masking_lines

            for m in masking_lines(p["masking"]):
                if len(m) > 80 and ": " in m and not m.startswith(" "):  # the verdict on its own line
                    head, rest = m.split(": ", 1)
                    L += _wrap(head + ":", 80, "    ") + _wrap("  " + rest, 80, "    ")
                else:
                    L += _wrap(m, 80, "    ")
        if p.get("approx"):
            L.append("exact vs approximate hardware:")
            L += text_blocks(approx_blocks(p["approx"]))
        for k, v in p.items():
            if k not in known and v is not None:
                L += text_blocks(generic_blocks(k, v))
        if p.get("cut_short"):
            L += _wrap(f"cut short by --max-seconds: {', '.join(map(str, p['cut_short']))}")
        w = c["worst_input"]
        L.append(f"worst clean input #{w['index']}, per layer:")
        L.append(f"  {'layer':30s}{'op':>6s}{'density':>9s}{'cycles':>11s}{'dense':>11s}{'energy':>11s}")
        for r in w["layers"]:
            L.append(f"  {_short(r['layer'], 30):30s}{r['op'][:6]:>6s}{r['input_density']:>9.3f}"
                     f"{r['cycles']:>11d}{r['dense_cycles']:>11d}{_si(r['energy_j'], 'J'):>11s}")
    L.append("")
    from ..pipeline.masking import comparison_lines

    cmp_lines = comparison_lines(d)
    if cmp_lines:
        L.extend(cmp_lines + [""])
    if not d["checks"]:
        L.append("checks: (none declared in the scenario)")
    for prof in dict.fromkeys(ch["profile"] for ch in d["checks"]):
        L.append(f"checks on {_short(str(prof), 60)}:")
        for ch in sorted_checks([c for c in d["checks"] if c["profile"] == prof]):
            st = check_status(ch)
            mark = {"NOT DECIDED": "N/D "}.get(st, st)
            L.append(f"  {_paint(mark, color)}"
                     f" {_short(ch['name'], 40):40s} {_fmt_num(ch['measured']):>11s} {ch['op']} "
                     f"{_fmt_num(ch['threshold'])}")
            if ch.get("detail"):
                L += _wrap(f"       ({ch['detail']})", 80, "        ")
    if any(check_status(c) == "NOT DECIDED" for c in d["checks"]):
        L.append("  (N/D: not decided, the time budget cut the audit short)")
    L.append(f"verdict: {_paint(d['verdict'], color)}")
    return "\n".join(L) + "\n"
