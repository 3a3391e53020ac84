"""The text rendering: a readable report for an 80-column terminal, verdict first."""

from __future__ import annotations

import textwrap

from .numbers import fmt_num, short, si
from .records import check_status, sorted_checks
from .sections import (approx_blocks, comparison_lines, energy_blocks, generic_blocks, masking_lines,
                       robustness_blocks, text_blocks, warning_blocks)

_ANSI = {"PASS": "\033[32m", "FAIL": "\033[1;31m", "NOT DECIDED": "\033[33m", "N/D ": "\033[33m", "INCOMPLETE": "\033[33m"}


def _paint(word: str, color: bool) -> str:
    return f"{_ANSI[word]}{word}\033[0m" if color and word in _ANSI else word


def _wrap(text: str, width: int = 80, indent: str = "         ") -> list[str]:
    return textwrap.wrap(text, width, subsequent_indent=indent, break_on_hyphens=False, break_long_words=True) or [""]


def render_text(d: dict, *, color: bool = False, base_dir=None) -> str:
    """A readable report for an 80-column terminal, verdict first (``color``: ANSI PASS/FAIL)."""
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
        head = short(f"== {p['name']} ({p['cost_model']}) ", 79)
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
            L.append(f"{label:14s}{si(s['mean'], unit):>14s}{si(s['worst'], unit):>14s}{si(s['p95'], unit):>14s}")
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
            L.append(f"  {short(r['layer'], 30):30s}{r['op'][:6]:>6s}{r['input_density']:>9.3f}"
                     f"{r['cycles']:>11d}{r['dense_cycles']:>11d}{si(r['energy_j'], 'J'):>11s}")
    L.append("")
    cmp_lines = comparison_lines(d)
    if cmp_lines:
        L.extend(cmp_lines + [""])
    if not d["checks"]:
        L.append("checks: (none declared in the scenario)")
    for prof in dict.fromkeys(ch["profile"] for ch in d["checks"]):
        L.append(f"checks on {short(str(prof), 60)}:")
        for ch in sorted_checks([c for c in d["checks"] if c["profile"] == prof]):
            st = check_status(ch)
            mark = {"NOT DECIDED": "N/D "}.get(st, st)
            L.append(f"  {_paint(mark, color)}"
                     f" {short(ch['name'], 40):40s} {fmt_num(ch['measured']):>11s} {ch['op']} "
                     f"{fmt_num(ch['threshold'])}")
            if ch.get("detail"):
                L += _wrap(f"       ({ch['detail']})", 80, "        ")
    if any(check_status(c) == "NOT DECIDED" for c in d["checks"]):
        L.append("  (N/D: not decided, the time budget cut the audit short)")
    L.append(f"verdict: {_paint(d['verdict'], color)}")
    return "\n".join(L) + "\n"
