"""The Markdown rendering: a summary for a pull-request comment."""

from __future__ import annotations

from .numbers import fmt_num, pct, si
from .records import check_status, sorted_checks
from .sections import (Para, Table, approx_blocks, comparison_rows, energy_blocks, generic_blocks, masking_blocks,
                       md_blocks, robustness_blocks, warning_blocks)

_ICON = {"PASS": "✅", "FAIL": "❌", "NOT DECIDED": "⏸️", "INCOMPLETE": "⏸️"}


def _delta(new, old, rel: bool = True) -> str:
    if not isinstance(new, (int, float)) or not isinstance(old, (int, float)):
        return ""
    if rel:
        return f" ({100 * (new - old) / abs(old):+.1f}%)" if old else ""
    return f" ({100 * (new - old):+.1f} pt)"


def render_markdown(d: dict, **_options) -> str:
    """A Markdown summary for a pull-request comment: verdict, checks (failing first), profiles, sections."""
    verdict = d["verdict"]
    checks = sorted_checks(d["checks"])
    n_fail = sum(check_status(c) == "FAIL" for c in checks)
    L = [f"### {_ICON.get(verdict, '❔')} auditor verdict: **{verdict}**", "",
         f"`{d['model']['path']}` (sha256 `{d['model']['sha256'][:12]}`), scenario **{d['scenario']['name']}**, "
         f"seed {d['seed']}, {d['data']['count']} inputs — auditor {d['tool']['version']}", ""]
    L += md_blocks(warning_blocks(d))
    # checks first, failing ones on top
    L += [f"#### Checks ({n_fail} of {len(checks)} failed)" if checks else "#### Checks", "",
          "| | check | profile | measured | threshold |", "|---|---|---|---:|---:|"]
    for c in checks:
        st = check_status(c)
        name = f"`{c['name']}`" + (f" ({c['detail']})" if c.get("detail") and st != "PASS" else "")
        L.append(f"| {_ICON[st]} | {name} | {c['profile']} | {fmt_num(c['measured'])} | "
                 f"{c['op']} {fmt_num(c['threshold'])} |")
    if not checks:
        L.append("| | (no checks declared) | | | |")
    L.append("")
    base = (d.get("baseline") or {}).get("profiles") or {}
    rows = []
    for p in d["profiles"]:
        if "clean" not in p:  # the time budget ended before its clean evaluation did
            rows.append([p["name"], "cut short", "", "", "", ""])
            continue
        c, s = p["clean"], p["summary"]
        b = base.get(p["name"]) or {}
        acc = "n/a" if c["accuracy"] is None else f"{100 * c['accuracy']:.1f}%"
        rows.append([p["name"], acc + _delta(c["accuracy"], b.get("clean_accuracy"), rel=False),
                     si(c["latency_s"]["mean"], "s") + _delta(s.get("clean_mean_latency_s"), b.get("clean_mean_latency_s")),
                     si(s["worst_latency_s"], "s") + _delta(s["worst_latency_s"], b.get("worst_latency_s")),
                     si(s["worst_energy_j"], "J") + _delta(s["worst_energy_j"], b.get("worst_energy_j")),
                     f"{c['density']['mean']:.3f} / {s['worst_density']:.3f}"])
    L += md_blocks([Table("Profiles" + (" (Δ against the baseline)" if base else ""),
                          ["profile", "clean acc.", "mean latency", "worst latency", "worst energy",
                           "density (mean / worst)"], rows, {1, 2, 3, 4, 5})])
    masks = [(p["name"], p["masking"]) for p in d["profiles"] if p.get("masking")]
    if masks:
        L += md_blocks([Table("Gradient masking across the profiles",
                              ["profile", "clean acc.", "transfer from exact", "white-box", "Square", "diagnosis",
                               "evidence of the fired checks"],
                              [[name, pct(r["clean_accuracy"], 0), pct(r["transfer_from_exact"], 0), pct(r["whitebox"], 0),
                                pct(r["square"], 0), str(m.get("verdict")),
                                "; ".join(c["evidence"] for c in m.get("checks", []) if c.get("fired")) or "—"]
                               for (name, m), r in zip(masks, comparison_rows(d))], {1, 2, 3, 4})])
    for p in d["profiles"]:
        blocks: list = []
        if p.get("attacks"):
            blocks += energy_blocks(p["attacks"])
        if p.get("robustness"):
            blocks += robustness_blocks(p["robustness"])
        if p.get("masking"):
            blocks += masking_blocks(p["masking"])
        for note in p.get("notes") or []:
            blocks.append(Para(f"note: {note}", "note"))
        known = {"name", "path", "cost_model", "description", "profile", "clean", "attacks", "summary", "checks",
                 "robustness", "approx", "zero_thresholds", "cut_short", "timing", "masking", "notes"}
        for k, v in p.items():
            if k not in known and v is not None:
                blocks += generic_blocks(k, v)
        if p.get("cut_short"):
            blocks.append(Para(f"cut short by --max-seconds: {', '.join(map(str, p['cut_short']))}", "note"))
        if blocks or p.get("approx"):
            L += [f"#### {p['name']}", ""]
            L += md_blocks(blocks, details_after=8)
        if p.get("approx"):
            ab = approx_blocks(p["approx"])
            L += ["<details><summary>exact vs approximate hardware: "
                  f"{sum(isinstance(b, Table) for b in ab)} tables</summary>", ""]
            L += md_blocks(ab, details_after=10**6) + ["</details>", ""]
    return "\n".join(L).rstrip("\n") + "\n"
