"""The Markdown rendering: a summary for a pull-request comment."""

from __future__ import annotations

from .numbers import fmt_num, pct, si
from .records import AuditReport, Baseline, Masking, MaskingCheck, sorted_checks
from .sections import (Para, Table, approx_blocks, comparison_rows, energy_blocks, extra_blocks, masking_blocks,
                       md_blocks, robustness_blocks, warning_blocks)

_ICON = {"PASS": "✅", "FAIL": "❌", "NOT DECIDED": "⏸️", "INCOMPLETE": "⏸️"}


def _delta(new, old, rel: bool = True) -> str:
    if not isinstance(new, (int, float)) or not isinstance(old, (int, float)):
        return ""
    if rel:
        return f" ({100 * (new - old) / abs(old):+.1f}%)" if old else ""
    return f" ({100 * (new - old):+.1f} pt)"


def render_markdown(d: AuditReport, **_options) -> str:
    """A Markdown summary for a pull-request comment: verdict, checks (failing first), profiles,
    sections; ``d``: the report's records (or its dict)."""
    if isinstance(d, dict):
        d = AuditReport.parse(d)
    verdict = d.verdict
    checks = sorted_checks(d.checks)
    n_fail = sum(c.status == "FAIL" for c in checks)
    L = [f"### {_ICON.get(verdict, '❔')} auditor verdict: **{verdict}**", "",
         f"`{d.model.path}` (sha256 `{d.model.sha256[:12]}`), scenario **{d.scenario.name}**, "
         f"seed {d.seed}, {d.data.count} inputs — auditor {d.tool.version}", ""]
    L += md_blocks(warning_blocks(d))
    # checks first, failing ones on top
    L += [f"#### Checks ({n_fail} of {len(checks)} failed)" if checks else "#### Checks", "",
          "| | check | profile | measured | threshold |", "|---|---|---|---:|---:|"]
    for c in checks:
        st = c.status
        name = f"`{c.name}`" + (f" ({c.detail})" if c.detail and st != "PASS" else "")
        L.append(f"| {_ICON[st]} | {name} | {c.profile} | {fmt_num(c.measured)} | {c.op} {fmt_num(c.threshold)} |")
    if not checks:
        L.append("| | (no checks declared) | | | |")
    L.append("")
    base = Baseline.of(d.baseline).profiles or {}
    rows = []
    for p in d.profiles:
        if not p.has("clean"):  # the time budget ended before its clean evaluation did
            rows.append([p.name, "cut short", "", "", "", ""])
            continue
        c, s = p.clean, p.summary
        b = base.get(p.name) or {}
        acc = "n/a" if c.accuracy is None else f"{100 * c.accuracy:.1f}%"
        rows.append([p.name, acc + _delta(c.accuracy, b.get("clean_accuracy"), rel=False),
                     si(c.latency_s.mean, "s") + _delta(s.clean_mean_latency_s, b.get("clean_mean_latency_s")),
                     si(s.worst_latency_s, "s") + _delta(s.worst_latency_s, b.get("worst_latency_s")),
                     si(s.worst_energy_j, "J") + _delta(s.worst_energy_j, b.get("worst_energy_j")),
                     f"{c.density.mean:.3f} / {s.worst_density:.3f}"])
    L += md_blocks([Table("Profiles" + (" (Δ against the baseline)" if base else ""),
                          ["profile", "clean acc.", "mean latency", "worst latency", "worst energy",
                           "density (mean / worst)"], rows, {1, 2, 3, 4, 5})])
    masks = [(p.name, Masking.of(p.masking)) for p in d.profiles if p.masking]
    if masks:
        L += md_blocks([Table("Gradient masking across the profiles",
                              ["profile", "clean acc.", "transfer from exact", "white-box", "Square", "diagnosis",
                               "evidence of the fired checks"],
                              [[name, pct(r["clean_accuracy"], 0), pct(r["transfer_from_exact"], 0), pct(r["whitebox"], 0),
                                pct(r["square"], 0), str(m.verdict),
                                "; ".join(str(c.evidence) for c in MaskingCheck.list_of(m.checks) if c.fired) or "—"]
                               for (name, m), r in zip(masks, comparison_rows(d))], {1, 2, 3, 4})])
    for p in d.profiles:
        blocks: list = []
        if p.attacks:
            blocks += energy_blocks(p.attacks)
        if p.robustness:
            blocks += robustness_blocks(p.robustness)
        if p.masking:
            blocks += masking_blocks(p.masking)
        for note in p.notes or []:
            blocks.append(Para(f"note: {note}", "note"))
        blocks += extra_blocks("", p)
        if p.cut_short:
            blocks.append(Para(f"cut short by --max-seconds: {', '.join(map(str, p.cut_short))}", "note"))
        if blocks or p.approx:
            L += [f"#### {p.name}", ""]
            L += md_blocks(blocks, details_after=8)
        if p.approx:
            ab = approx_blocks(p.approx)
            L += ["<details><summary>exact vs approximate hardware: "
                  f"{sum(isinstance(b, Table) for b in ab)} tables</summary>", ""]
            L += md_blocks(ab, details_after=10**6) + ["</details>", ""]
    return "\n".join(L).rstrip("\n") + "\n"
