"""The audit report: a JSON-able dict with a verdict, and its renderings (text, JSON)."""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path

#: keys that vary between identical runs: timestamps and durations (excluded when comparing)
VOLATILE_KEYS = ("timing", "seconds", "seconds_per_input", "seconds_per_example", "started")


def stable(d):
    """The report without its timestamps and durations: equal for equal model, profiles, scenario
    and seed (what the determinism guarantee covers)."""
    if isinstance(d, dict):
        return {k: stable(v) for k, v in d.items() if k not in VOLATILE_KEYS}
    if isinstance(d, list):
        return [stable(v) for v in d]
    return d


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

    def to_json(self) -> str:
        return json.dumps(_clean(self.data), indent=2, sort_keys=False, allow_nan=False) + "\n"

    def render(self, fmt: str, base_dir=None) -> str:
        """The report as text, json, junit, markdown or html (``base_dir``: where relative paths of
        saved worst inputs are looked up for html)."""
        if fmt == "json":
            return self.to_json()
        if fmt == "text":
            return render_text(self.data)
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
        from .errors import AuditorError
        from .files import read_bytes

        raw = read_bytes(path, "report file", MAX_REPORT_BYTES)
        try:
            data = json.loads(raw.decode("utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise AuditorError(f"not a JSON report ({e.__class__.__name__}: {str(e)[:120]})", where=str(path)) from None
        except RecursionError:
            raise AuditorError("not an auditor report: JSON nested too deeply", where=str(path)) from None
        problem = check_report(data)
        if problem:
            raise AuditorError(f"not an auditor report: {problem}", where=str(path))
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
    "name": str, "cost_model": str,
    "clean": {"accuracy": _Opt(_NUM), "density": {"counted": str, "mean": _NUM, "worst": _NUM},
              "latency_s": _STATS, "energy_j": _STATS, "edp": _STATS, "speedup_over_dense": {"mean": _NUM},
              _Maybe("worst_input"): {"index": int, "layers": [_LAYER]}},
    "summary": {"worst_latency_s": _NUM, "worst_energy_j": _NUM, "worst_density": _NUM,
                _Maybe("clean_accuracy"): _Opt(_NUM)},
    _Maybe("attacks"): [{"search": str}],
    _Maybe("robustness"): _ROBUST,
    _Maybe("checks"): [_CHECK],
}
#: the fields every renderer (text, JSON, JUnit, Markdown, HTML), ``diff`` and ``--baseline``
#: rely on; a report is checked against it when loaded
REPORT_SPEC = {
    "schema_version": int, "verdict": ("PASS", "FAIL"), "tool": {"version": str}, "seed": int,
    "model": {"path": str, "sha256": str, "opset": int}, "scenario": {"name": str},
    "data": {"description": str, "count": int}, "profiles": [_PROFILE], "checks": [_CHECK],
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
        return f"no {' or '.join(missing)}"
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


def render_text(d: dict) -> str:
    """A readable report for an 80-column terminal, verdict first."""
    L = []
    L.append(f"auditor {d['tool']['version']} — verdict: {d['verdict']}")
    L.append(f"model    {d['model']['path']}  (sha256 {d['model']['sha256'][:12]}, opset {d['model']['opset']})")
    sc = d["scenario"]
    L.append(f"scenario {sc['name']}  seed {d['seed']}  data: {d['data']['description']}, {d['data']['count']} inputs")
    for p in d["profiles"]:
        L.append("")
        head = f"== {p['name']} ({p['cost_model']}) "
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
        for a in p.get("attacks", []):
            L.append(_attack_line(a))
            if a.get("note"):
                L.extend(textwrap.wrap(f"note: {a['note']}", 80, initial_indent="  ", subsequent_indent="    "))
            for df in a.get("defences", []):
                L.append(f"  defence {df['defence'][:10]:10s} recovers {_fmt_num(df.get('recovery'))} of the increase, "
                         f"clean labels kept {100 * df['clean_label_agreement']:.0f}%"[:80])
        rob = p.get("robustness")
        if rob:
            L.extend(_robustness_lines(rob))
        if p.get("masking"):
            from .masking import masking_lines

            L.extend(masking_lines(p["masking"]))
        ax = p.get("approx")
        if ax:
            L.extend(_approx_lines(ax))
        w = c["worst_input"]
        L.append(f"worst clean input #{w['index']}, per layer:")
        L.append(f"  {'layer':30s}{'op':>6s}{'density':>9s}{'cycles':>11s}{'dense':>11s}{'energy':>11s}")
        for r in w["layers"]:
            L.append(f"  {_short(r['layer'], 30):30s}{r['op'][:6]:>6s}{r['input_density']:>9.3f}"
                     f"{r['cycles']:>11d}{r['dense_cycles']:>11d}{_si(r['energy_j'], 'J'):>11s}")
    L.append("")
    from .masking import comparison_lines

    cmp_lines = comparison_lines(d)
    if cmp_lines:
        L.extend(cmp_lines + [""])
    if not d["checks"]:
        L.append("checks: (none declared in the scenario)")
    for prof in dict.fromkeys(ch["profile"] for ch in d["checks"]):
        L.append(f"checks on {prof}:")
        for ch in (c for c in d["checks"] if c["profile"] == prof):
            mark = "PASS" if ch["passed"] else "FAIL"
            L.append(f"  {mark} {_short(ch['name'], 40):40s} {_fmt_num(ch['measured']):>11s} {ch['op']} "
                     f"{_fmt_num(ch['threshold'])}")
            if ch.get("detail"):
                L.append(f"       ({ch['detail']})"[:80])
    L.append(f"verdict: {d['verdict']}")
    return "\n".join(L) + "\n"


def _attack_line(a: dict) -> str:
    if a.get("cut_short"):
        return f"attack {a['search'][:12]:12s} cut short by --max-seconds (no result)"
    if a.get("skipped"):
        return f"attack {a['search'][:12]:12s} not run ({a['skipped']}): latency x1, energy x1"
    kept = a.get("label_kept_rate")
    return (f"attack {a['search'][:12]:12s} latency x{_fmt_num(a.get('latency_increase'))} "
            f"energy x{_fmt_num(a.get('energy_increase'))} density {_fmt_num(a.get('density_clean'))}->"
            f"{_fmt_num(a.get('density_attacked'))} kept {'n/a' if kept is None else f'{100 * kept:.0f}%'}")


def _approx_lines(ax: dict) -> list[str]:
    cl, st = ax.get("clean", {}), ax.get("strongest") or {}
    out = [f"approximate multiplier {ax.get('multiplier')}: clean accuracy exact "
           f"{100 * cl.get('exact_accuracy', 0):.1f}% / approx {100 * cl.get('approx_accuracy', 0):.1f}% "
           f"on {ax.get('n', 0)}"]
    for t in ax.get("transfer", []):
        for r in t.get("results", []):
            eps = r.get("epsilon")
            out.append(f"  transfer {t['attack'][:8]:8s} eps {_fmt_num(eps):>6s}: exact "
                       f"{100 * (r.get('exact_success_rate') or 0):5.1f}% -> approx "
                       f"{100 * (r.get('transfer_rate_approx') or 0):5.1f}% of those")
    if st:
        out.append(f"  strongest on approx: {st.get('source')} {st.get('attack')} eps "
                   f"{_fmt_num(st.get('epsilon'))} success {100 * (st.get('success_rate') or 0):.1f}%")
    return out


def _robustness_lines(rob: dict) -> list[str]:
    out = [f"robustness: clean accuracy {100 * rob.get('clean_accuracy', 0):.1f}% on {rob.get('count', 0)} inputs"]
    for a in rob.get("attacks", []):
        for r in a.get("results", []):
            out.append(f"  {a['attack'][:9]:9s} {a['norm']:4s} eps {_fmt_num(r['epsilon']):>7s}  robust acc "
                       f"{100 * r['robust_accuracy']:5.1f}%  success {100 * r['attack_success_rate']:5.1f}%")
        for row in a.get("ensemble") or []:
            parts = ", ".join(f"{m['attack']} {m['n_broken']}/{m['n_attacked']}" for m in row.get("members", []))
            out.append(f"    eps {_fmt_num(row.get('epsilon'))} broken by member: {parts}"[:100])
        mp = a.get("minimal_perturbation")
        if mp:
            out.append(f"  {a['attack'][:9]:9s} minimal perturbation: median L2 {_fmt_num(mp.get('median_l2'))}, "
                       f"found for {mp['n_success']}/{mp['n_attacked']}")
    return out
