"""Report renderings for CI: JUnit XML (one testsuite per profile, one testcase per check) and a
compact Markdown summary for a pull-request comment."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from .report import _fmt_num, _si


def _check_message(ch: dict) -> str:
    m = _fmt_num(ch["measured"])
    msg = f"measured {m}, threshold {ch['op']} {_fmt_num(ch['threshold'])}"
    if ch.get("detail"):
        msg += f" ({ch['detail']})"
    return msg


def render_junit(d: dict) -> str:
    root = ET.Element("testsuites", name="auditor", tests=str(len(d["checks"])),
                      failures=str(sum(not c["passed"] for c in d["checks"])))
    profiles = [p["name"] for p in d["profiles"]]
    extra = sorted({c["profile"] for c in d["checks"]} - set(profiles))
    for name in profiles + extra:
        cks = [c for c in d["checks"] if c["profile"] == name]
        suite = ET.SubElement(root, "testsuite", name=f"auditor.{name}", tests=str(len(cks)),
                              failures=str(sum(not c["passed"] for c in cks)), errors="0", skipped="0",
                              time=f"{d.get('timing', {}).get('seconds', 0)}")
        props = ET.SubElement(suite, "properties")
        for k, v in (("model", d["model"]["path"]), ("model_sha256", d["model"]["sha256"]),
                     ("scenario", d["scenario"]["name"]), ("seed", d["seed"]), ("verdict", d["verdict"])):
            ET.SubElement(props, "property", name=k, value=str(v))
        for c in cks:
            tc = ET.SubElement(suite, "testcase", classname=f"auditor.{name}", name=c["name"])
            if c["passed"]:
                ET.SubElement(tc, "system-out").text = _check_message(c)
            else:
                f = ET.SubElement(tc, "failure", message=_check_message(c), type="ThresholdExceeded")
                f.text = _check_message(c)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def render_markdown(d: dict) -> str:
    icon = "✅" if d["verdict"] == "PASS" else "❌"
    L = [f"### {icon} auditor verdict: **{d['verdict']}**", "",
         f"`{d['model']['path']}` (sha256 `{d['model']['sha256'][:12]}`), scenario **{d['scenario']['name']}**, "
         f"seed {d['seed']}, {d['data']['count']} inputs", ""]
    L += ["| profile | clean acc. | mean latency | worst latency | worst energy | density (mean/worst) |",
          "|---|---|---|---|---|---|"]
    for p in d["profiles"]:
        if "clean" not in p:  # the time budget ended before its clean evaluation did
            L.append(f"| {p['name']} | cut short | | | | |")
            continue
        c, s = p["clean"], p["summary"]
        acc = "n/a" if c["accuracy"] is None else f"{100 * c['accuracy']:.1f}%"
        L.append(f"| {p['name']} | {acc} | {_si(c['latency_s']['mean'], 's')} | {_si(s['worst_latency_s'], 's')} | "
                 f"{_si(s['worst_energy_j'], 'J')} | {c['density']['mean']:.3f} / {s['worst_density']:.3f} |")
    attacks = [(p["name"], a) for p in d["profiles"] for a in p.get("attacks", [])]
    if attacks:
        L += ["", "| profile | search | latency x | energy x | density clean → attacked | label kept |", "|---|---|---|---|---|---|"]
        for name, a in attacks:
            kept = a.get("label_kept_rate")
            L.append(f"| {name} | {a['search']} | {_fmt_num(a.get('latency_increase'))} | {_fmt_num(a.get('energy_increase'))} | "
                     f"{_fmt_num(a.get('density_clean'))} → {_fmt_num(a.get('density_attacked'))} | "
                     f"{'n/a' if kept is None else f'{100 * kept:.0f}%'} |")
    masks = [(p["name"], p["masking"]) for p in d["profiles"] if p.get("masking")]
    if masks:
        from .masking import comparison_rows

        def pct(v):
            return "n/a" if v is None else f"{100 * v:.0f}%"

        L += ["", "| profile | clean acc. | transfer from exact | white-box | Square | gradient-masking diagnosis | "
              "evidence of the fired checks |", "|---|---|---|---|---|---|---|"]
        for (name, m), r in zip(masks, comparison_rows(d)):
            ev = "; ".join(c["evidence"] for c in m.get("checks", []) if c.get("fired")) or "—"
            L.append(f"| {name} | {pct(r['clean_accuracy'])} | {pct(r['transfer_from_exact'])} | {pct(r['whitebox'])} | "
                     f"{pct(r['square'])} | {m.get('verdict')} | {ev.replace('|', '/')} |")
    L += ["", "| | check | profile | measured | threshold |", "|---|---|---|---|---|"]
    for c in d["checks"]:
        L.append(f"| {'✅' if c['passed'] else '❌'} | `{c['name']}` | {c['profile']} | {_fmt_num(c['measured'])} | "
                 f"{c['op']} {_fmt_num(c['threshold'])} |")
    if not d["checks"]:
        L.append("| | (no checks declared) | | | |")
    return "\n".join(L) + "\n"
