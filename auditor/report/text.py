"""The text rendering: a readable report for an 80-column terminal, verdict first."""

from __future__ import annotations

import textwrap

from .numbers import fmt_num, short, si
from .records import AuditReport, Masking, sorted_checks
from .sections import (approx_blocks, comparison_lines, energy_blocks, extra_blocks, masking_lines, robustness_blocks,
                       text_blocks, warning_blocks)

_ANSI = {"PASS": "\033[32m", "FAIL": "\033[1;31m", "NOT DECIDED": "\033[33m", "N/D ": "\033[33m", "INCOMPLETE": "\033[33m"}


def _paint(word: str, color: bool) -> str:
    return f"{_ANSI[word]}{word}\033[0m" if color and word in _ANSI else word


def _wrap(text: str, width: int = 80, indent: str = "         ") -> list[str]:
    return textwrap.wrap(text, width, subsequent_indent=indent, break_on_hyphens=False, break_long_words=True) or [""]


def render_text(d: AuditReport, *, color: bool = False, base_dir=None) -> str:
    """A readable report for an 80-column terminal, verdict first (``color``: ANSI PASS/FAIL);
    ``d``: the report's records (or its dict)."""
    if isinstance(d, dict):
        d = AuditReport.parse(d)
    L = []
    m = d.model
    L.append(f"auditor {d.tool.version} — verdict: {_paint(d.verdict, color)}")
    L += _wrap(f"model    {m.path}  (sha256 {m.sha256[:12]}, opset {m.opset})")
    for note in m.load_notes or []:  # what loading changed (float16 -> float32, QDQ)
        L += _wrap(f"         note: {note}")
    L += _wrap(f"scenario {d.scenario.name}  seed {d.seed}  data: {d.data.description}, {d.data.count} inputs")
    L += text_blocks(warning_blocks(d))
    for p in d.profiles:
        L.append("")
        head = short(f"== {p.name} ({p.cost_model}) ", 79)
        L.append(head + "=" * max(0, 80 - len(head)))
        if not p.has("clean"):
            L.append("cut short by --max-seconds before the clean evaluation ended (no result)")
            continue
        c = p.clean
        acc = c.accuracy
        L.append(f"clean accuracy {'n/a' if acc is None else f'{100 * acc:.2f}%'}   "
                 f"density ({c.density.counted}) mean {c.density.mean:.3f} worst {c.density.worst:.3f}")
        L.append(f"{'':14s}{'mean':>14s}{'worst':>14s}{'p95':>14s}")
        for s, unit, label in ((c.latency_s, "s", "latency"), (c.energy_j, "J", "energy"), (c.edp, "Js", "EDP")):
            L.append(f"{label:14s}{si(s.mean, unit):>14s}{si(s.worst, unit):>14s}{si(s.p95, unit):>14s}")
        L.append(f"{'speed-up vs dense':18s}{c.speedup_over_dense.mean:>10.3f}x (mean)")
        rs = (p.profile or {}).get("reshape") or {}
        if rs.get("quantize_bits"):
            L.append(f"precision what-if: {rs['quantize_bits']}-bit weights "
                     f"({'per channel' if rs.get('quantize_per_channel', True) else 'per tensor'})"
                     + (" and activations (per tensor, calibrated on the clean data)" if rs.get("quantize_activations")
                        else ", float activations") + ", post-training, no retraining")
        for note in p.notes or []:
            L.extend(textwrap.wrap(f"note: {note}", 80, subsequent_indent="  "))
        if p.attacks:
            L += text_blocks(energy_blocks(p.attacks))
        if p.robustness:
            L.append("robustness:")
            L += text_blocks(robustness_blocks(p.robustness))
        if p.masking:
            for line in masking_lines(Masking.of(p.masking)):
                if len(line) > 80 and ": " in line and not line.startswith(" "):  # the verdict on its own line
                    head, rest = line.split(": ", 1)
                    L += _wrap(head + ":", 80, "    ") + _wrap("  " + rest, 80, "    ")
                else:
                    L += _wrap(line, 80, "    ")
        if p.approx:
            L.append("exact vs approximate hardware:")
            L += text_blocks(approx_blocks(p.approx))
        L += text_blocks(extra_blocks("", p))
        if p.cut_short:
            L += _wrap(f"cut short by --max-seconds: {', '.join(map(str, p.cut_short))}")
        w = c.worst_input
        L.append(f"worst clean input #{w.index}, per layer:")
        L.append(f"  {'layer':30s}{'op':>6s}{'density':>9s}{'cycles':>11s}{'dense':>11s}{'energy':>11s}")
        for r in w.layers:
            L.append(f"  {short(r.layer, 30):30s}{r.op[:6]:>6s}{r.input_density:>9.3f}"
                     f"{r.cycles:>11d}{r.dense_cycles:>11d}{si(r.energy_j, 'J'):>11s}")
    L.append("")
    cmp_lines = comparison_lines(d)
    if cmp_lines:
        L.extend(cmp_lines + [""])
    checks = d.checks
    if not checks:
        L.append("checks: (none declared in the scenario)")
    for prof in dict.fromkeys(ch.profile for ch in checks):
        L.append(f"checks on {short(str(prof), 60)}:")
        for ch in sorted_checks([c for c in checks if c.profile == prof]):
            st = ch.status
            mark = {"NOT DECIDED": "N/D "}.get(st, st)
            L.append(f"  {_paint(mark, color)}"
                     f" {short(ch.name, 40):40s} {fmt_num(ch.measured):>11s} {ch.op} "
                     f"{fmt_num(ch.threshold)}")
            if ch.detail:
                L += _wrap(f"       ({ch.detail})", 80, "        ")
    if any(c.status == "NOT DECIDED" for c in checks):
        L.append("  (N/D: not decided, the time budget cut the audit short)")
    L.append(f"verdict: {_paint(d.verdict, color)}")
    return "\n".join(L) + "\n"
