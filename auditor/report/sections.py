"""The report's sections as format-neutral blocks (paragraphs and tables), rendered by the text,
Markdown and HTML writers alike, so every section of the JSON report has one designed layout and
the three formats show the same figures.

A builder takes one section of the report dict and returns a list of :class:`Table` and
:class:`Para`.  Sections the builders do not know (new keys of a newer report) go through
:func:`generic_blocks`, which lays out any JSON value as tables: a list of records as one table
with a column per scalar key, a mapping of scalars as a key/value table, nested values as
sub-tables under their key path; quantile summaries ``{count, mean, quantiles}`` as
``mean (median)``.  Builders never raise on malformed data: a value of the wrong type shows as
"n/a" or is skipped.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field

from .numbers import fmt, num, pct
from .records import (Approx, ApproxClean, AuditReport, BothModelsAttack, BothModelsResult, Clean, DefenceWhatIf,
                      EnergySearch, EvasionAttack, EvasionResult, Example, Masking, MaskingCheck, MinimalComparison,
                      MinimalPerturbation, MinimalSide, ModelQueries, PairedMinimal, Perturbation, Profile, Quantiles,
                      Record, Robustness, SideResult, Strongest, Summary, TransferAttack, TransferResult, Warning_,
                      WorstCase)


@dataclass
class Para:
    text: str
    kind: str = ""  # "" | "warning" | "note"


@dataclass
class Table:
    title: str
    head: list[str]
    rows: list[list[str]]
    num: set[int] = field(default_factory=set)  # right-aligned (numeric) columns
    note: str = ""
    key: str = ""  # a stable id (html anchors, tests)


# ----------------------------------------------------------------------------------------------
# value formatting
# ----------------------------------------------------------------------------------------------


def get(v, *keys, default=None):
    for k in keys:
        if not isinstance(v, dict) or k not in v:
            return default
        v = v[k]
    return v


def is_summary(v) -> bool:
    if isinstance(v, Quantiles):
        return isinstance(v.quantiles, dict)
    return isinstance(v, dict) and isinstance(v.get("quantiles"), dict)


def median(s):
    q = s.quantiles if isinstance(s, Quantiles) else get(s, "quantiles")
    if not isinstance(q, dict):
        return None
    for k in ("0.5", "0.50", 0.5):
        if k in q:
            return q[k]
    return None


def summ(s, key: str = "mean") -> str:
    """A quantile summary as ``mean`` (or its median with key='median')."""
    if not is_summary(s):
        return fmt(s) if not isinstance(s, (dict, Record)) else "n/a"
    if key == "median":
        return fmt(median(s))
    return fmt(s.mean if isinstance(s, Quantiles) else s.get("mean"))


def _records(v) -> list[dict]:
    return [x for x in v if isinstance(x, dict)] if isinstance(v, list) else []


def eps_label(e) -> str:
    return "minimal" if e is None else fmt(e)


# ----------------------------------------------------------------------------------------------
# approximate hardware (Defensive Approximation)
# ----------------------------------------------------------------------------------------------


def approx_blocks(ax) -> list:
    if not isinstance(ax, Approx):
        return generic_blocks("approx", ax)
    out: list = []
    cl = ApproxClean.of(ax.clean)
    layers = ax.approx_layers
    out.append(Para(f"multiplier {ax.multiplier if ax.has('multiplier') else 'n/a'} on "
                    f"{len(layers) if isinstance(layers, list) else 'n/a'} layers, {fmt(ax.n)} inputs: "
                    f"clean accuracy exact {pct(cl.exact_accuracy)}, approximate {pct(cl.approx_accuracy)}, "
                    f"top-1 agreement {pct(cl.agreement)}, largest logit difference {fmt(cl.max_abs_logit_difference)}"))
    mg = ax.margins if isinstance(ax.margins, dict) else {}
    sides = [(s, mg[s]) for s in ("exact", "approx") if isinstance(mg.get(s), dict)]
    if sides:
        out.append(Table("Top-1 confidence (softmax probability, 0-1)", ["model", "mean", "median", "min", "> 0.8"],
                         [[s, summ(m.get("confidence")), summ(m.get("confidence"), "median"),
                           fmt(get(m, "confidence", "quantiles", "0")), pct(m.get("confidence_above_0.8"))]
                          for s, m in sides], {1, 2, 3, 4}, key="approx-confidence"))
        out.append(Table("Logit margins (logit units)", ["model", "top-1 − runner-up mean", "median",
                                                          "label − best other mean", "median"],
                         [[s, summ(m.get("top_margin")), summ(m.get("top_margin"), "median"),
                           summ(m.get("label_margin")), summ(m.get("label_margin"), "median")] for s, m in sides],
                         {1, 2, 3, 4}, key="approx-margins",
                         note=(f"the approximate model has the larger top-1 margin on "
                               f"{pct(mg.get('approx_more_confident'))} of the inputs"
                               if mg.get("approx_more_confident") is not None else "")))
    for key, entries, title, src in (
            ("transfer", ax.transfer, "Transfer from the exact model (crafted on exact, run on approximate)", "exact"),
            ("substitute", ax.substitute, "Black-box substitute (crafted on the surrogate)", "surrogate")):
        rows = []
        for a in TransferAttack.list_of(entries):
            for r in TransferResult.list_of(a.results):
                p = Perturbation.of(r.perturbation)
                rows.append([str(a.attack), str(a.norm), eps_label(r.epsilon), fmt(r.n_attacked)]
                            + ([pct(r.source_success_rate)] if src != "exact" else [])
                            + [pct(r.exact_success_rate), pct(r.approx_success_rate), pct(r.transfer_rate_approx),
                               summ(p.l2), summ(p.mse), summ(p.psnr)])
        if rows:
            head = (["attack", "norm", "ε", "n"] + (["fools surrogate"] if src != "exact" else [])
                    + ["fools exact", "fools approx", "transfer to approx", "L2 mean", "MSE mean", "PSNR dB"])
            out.append(Table(title, head, rows, set(range(3, len(head))), key=f"approx-{key}",
                             note=f"rates over the inputs both models classify correctly; transfer = share of the "
                                  f"{src} model's successes that also fool the approximate model; L2/MSE/PSNR: means "
                                  "over those"))
    for key, entries, title in (
            ("whitebox_bpda", ax.whitebox_bpda, "White-box attacks with BPDA gradients (approximate vs exact model)"),
            ("query", ax.query, "Query attacks on each model")):
        rows = []
        for a in BothModelsAttack.list_of(entries):
            qpi = a.queries_per_input if isinstance(a.queries_per_input, dict) else {}
            for r in BothModelsResult.list_of(a.results):
                ra, re_ = SideResult.of(r.approx), SideResult.of(r.exact)
                pa, pe = Perturbation.of(ra.perturbation), Perturbation.of(re_.perturbation)
                rows.append([str(a.attack), str(a.norm), eps_label(r.epsilon), pct(ra.success_rate),
                             pct(re_.success_rate), summ(pa.l2), summ(pe.l2), summ(pa.mse), summ(pe.mse),
                             summ(pa.psnr), summ(pe.psnr), fmt(qpi.get("approx")), fmt(qpi.get("exact"))])
        if rows:
            out.append(Table(title, ["attack", "norm", "ε", "success approx", "success exact", "L2 approx", "L2 exact",
                                     "MSE approx", "MSE exact", "PSNR approx", "PSNR exact", "queries/input approx",
                                     "queries/input exact"], rows, set(range(3, 13)), key=f"approx-{key}",
                             note="success over each model's clean-correct inputs; L2/MSE/PSNR: means over the "
                                  "successful examples"))
    rows = []
    minimal = MinimalComparison.list_of(ax.perturbation)
    for a in minimal:
        for side, m in (("exact", MinimalSide.of(a.exact)), ("approx", MinimalSide.of(a.approx))):
            rows.append([str(a.attack), str(a.norm), side, f"{fmt(m.n_success)}/{fmt(m.n_attacked)}", fmt(m.median_l2),
                         fmt(m.mean_l2), fmt(m.median_mse), fmt(m.mean_mse), fmt(m.median_psnr), fmt(m.mean_psnr)])
    if rows:
        note = "; ".join(f"{a.attack}: over the {fmt(p.n)} inputs found on both, median L2 ratio "
                         f"approx/exact {fmt(p.l2_ratio_median)}, MSE ratio {fmt(p.mse_ratio)}, PSNR drop "
                         f"{fmt(p.psnr_drop_db)} dB"
                         for a in minimal for p in [a.paired] if isinstance(p, PairedMinimal))
        out.append(Table("Minimal perturbation each model needs", ["attack", "norm", "model", "found", "median L2",
                                                                    "mean L2", "median MSE", "mean MSE",
                                                                    "median PSNR dB", "mean PSNR dB"],
                         rows, set(range(3, 10)), key="approx-perturbation", note=note))
    wc = ax.worst_case
    if isinstance(wc, dict) and wc:
        out.append(Table("Worst case on the approximate model (union of all attacks per budget)",
                         ["norm", "ε", "success rate", "robust accuracy"],
                         [[str(v.norm if v.has("norm") else k), fmt(v.epsilon), pct(v.success_rate),
                           pct(v.robust_accuracy)] for k, v in wc.items() if isinstance(v, WorstCase)],
                         {1, 2, 3}, key="approx-worst-case"))
    st = ax.strongest
    if isinstance(st, Strongest):
        out.append(Para(f"strongest attack on the approximate model: {st.source} {st.attack} "
                        f"({st.norm}, ε {fmt(st.epsilon)}), success {pct(st.success_rate)} "
                        f"({fmt(st.n_success)}/{fmt(st.n_attacked)})"))
    q = ax.queries
    if isinstance(q, ModelQueries):
        out.append(Para(f"model queries: exact {fmt(q.exact)}, approximate {fmt(q.approx)}", "note"))
    return out + extra_blocks("approx.", ax)


# ----------------------------------------------------------------------------------------------
# robustness, energy-latency searches, warnings
# ----------------------------------------------------------------------------------------------


def robustness_blocks(rob) -> list:
    if not isinstance(rob, Robustness):
        return generic_blocks("robustness", rob)
    out: list = [Para(f"clean accuracy {pct(rob.clean_accuracy)} on {fmt(rob.count if rob.has('count') else rob.n)} "
                      "inputs")]
    attacks = EvasionAttack.list_of(rob.attacks)
    rows, mrows = [], []
    for a in attacks:
        for r in EvasionResult.list_of(a.results):
            rows.append([str(a.attack), str(a.norm), fmt(r.epsilon), pct(r.robust_accuracy),
                         pct(r.attack_success_rate), f"{fmt(r.n_success)}/{fmt(r.n_attacked)}",
                         fmt(r.n_unverified), summ(get(r.queries, "per_input", default=get(a.queries, "per_input")))])
        mp = a.minimal_perturbation
        if isinstance(mp, MinimalPerturbation):
            mrows.append([str(a.attack), str(a.norm), f"{fmt(mp.n_success)}/{fmt(mp.n_attacked)}", fmt(mp.median_l2),
                          summ(mp.l2, "median"), summ(mp.linf, "median"), summ(mp.mse, "median"),
                          summ(mp.psnr, "median")])
    if rows:
        out.append(Table("Robust accuracy per ε", ["attack", "norm", "ε", "robust acc.", "success", "fooled",
                                                   "unverified", "queries/input"], rows, {2, 3, 4, 5, 6, 7},
                         key="robust-accuracy"))
    if mrows:
        out.append(Table("Minimal perturbations", ["attack", "norm", "found", "median L2 (failures ∞)", "L2 median",
                                                    "Linf median", "MSE median", "PSNR median"], mrows,
                         {2, 3, 4, 5, 6, 7}, key="minimal-perturbation"))
    en_rows = []
    for a in attacks:
        for row in _records(a.ensemble):
            en_rows.append([str(a.attack), fmt(row.get("epsilon")),
                            ", ".join(f"{m.get('attack')} {fmt(m.get('n_broken'))}/{fmt(m.get('n_attacked'))}"
                                      for m in _records(row.get("members")))])
    if en_rows:
        out.append(Table("Ensemble members: inputs broken / attacked (each after the earlier ones)",
                         ["attack", "ε", "members"], en_rows, {1}, key="ensemble"))
    ex_rows = []
    for a in attacks:
        found = [(r.epsilon, ex) for r in EvasionResult.list_of(a.results) for ex in Example.list_of(r.examples)]
        found += [(None, ex) for ex in Example.list_of(MinimalPerturbation.of(a.minimal_perturbation).examples)]
        for eps, ex in found:
            png = get(ex.files, "adversarial")
            ex_rows.append([str(a.attack), eps_label(eps), fmt(ex.index), f"{fmt(ex.label)} → {fmt(ex.prediction)}",
                            fmt(ex.l2), str(png[-1]) if isinstance(png, list) and png else "n/a"])
    if ex_rows:
        out.append(Table("Saved adversarial examples (--save-inputs)", ["attack", "ε", "input", "label → pred.", "L2",
                                                                      "adversarial image"], ex_rows, {1, 2, 4},
                         key="adversarial-examples"))
    return out + extra_blocks("robustness.", rob)


def extra_blocks(prefix: str, rec: Record) -> list:
    """The keys of a section that its record does not declare (a newer report's), as tables."""
    out: list = []
    for k, v in rec.extra().items():
        if v is not None:
            out += generic_blocks(f"{prefix}{k}", v)
    return out


def energy_blocks(attacks) -> list:
    rows, drows, notes = [], [], []
    for a in EnergySearch.list_of(attacks):
        if a.cut_short:
            rows.append([str(a.search), "cut short", "", "", "", "", ""])
            continue
        if a.skipped:
            rows.append([str(a.search), f"not run ({a.skipped})", "1", "1", "", "", ""])
            continue
        if a.note:
            notes.append(Para(f"{a.search}: {a.note}", "note"))
        rows.append([str(a.search), f"{fmt(a.verified)}/{fmt(a.count)}",
                     fmt(a.latency_increase), fmt(a.energy_increase),
                     f"{fmt(a.density_clean)} → {fmt(a.density_attacked)}",
                     pct(a.label_kept_rate, 0), fmt(get(a.perturbation, "l2", "worst"))])
        for df in DefenceWhatIf.list_of(a.defences):
            drows.append([str(a.search), str(df.defence), fmt(df.recovery), pct(df.clean_label_agreement, 0),
                          pct(df.clean_accuracy_loss) if df.clean_accuracy_loss is not None else "n/a"])
    out: list = []
    if rows:
        out.append(Table("Energy-latency searches", ["search", "verified", "latency x", "energy x",
                                                     "density clean→att.", "kept", "L2 worst"],
                         rows, {1, 2, 3, 6}, key="energy",
                         note="x: worst verified attacked input over the mean clean input"))
    out += notes
    if drows:
        out.append(Table("Defences (what-ifs)", ["search", "defence", "recovers", "clean labels kept",
                                                 "clean accuracy loss"], drows, {2, 3, 4}, key="defences"))
    return out


def masking_blocks(m) -> list:
    """The gradient-masking diagnosis (auditor.pipeline.masking): verdict, each check and its evidence."""
    if not isinstance(m, Masking):
        return generic_blocks("masking", m)
    fired = m.fired or []
    out: list = [Para(f"gradient-masking diagnosis (ε {fmt(m.epsilon)} {m.norm}, "
                      f"{fmt(m.n_attacked if m.has('n_attacked') else m.n)} inputs): {m.verdict}"
                      + (f" ({', '.join(map(str, fired))})" if fired else ""), "warning" if fired else "")]
    rows = [[str(c.check), "FIRED" if c.fired else "ok", str(c.evidence if c.has("evidence") else "")]
            for c in MaskingCheck.list_of(m.checks)]
    if rows:
        out.append(Table("Gradient-masking checks", ["check", "result", "evidence"], rows, key="masking-checks"))
    mins = m.minimal
    if isinstance(mins, dict) and mins:
        out.append(Table("Minimal perturbation (DeepFool)", ["model", "found", "median L2", "MSE", "PSNR dB"],
                         [[str(k), f"{fmt(get(v, 'n_success'))}/{fmt(get(v, 'n_attacked'))}", fmt(get(v, "l2")),
                           fmt(get(v, "mse")), fmt(get(v, "psnr"))] for k, v in mins.items() if isinstance(v, dict)],
                         {1, 2, 3, 4}, key="masking-minimal"))
    return out


def masking_lines(m: Masking) -> list[str]:
    """The text-report lines of a diagnosis."""
    fired = m.fired or []
    head = f"gradient masking diagnosis (eps {m.epsilon if m.has('epsilon') else 0:g} {m.norm}, {m.n_attacked} inputs): "
    out = [head + (f"GRADIENT MASKING ({', '.join(fired)})" if fired else "no sign of gradient masking")]
    for c in MaskingCheck.list_of(m.checks):
        out.append(f"  {'FIRED' if c.fired else 'ok   '} {c.check}: {c.evidence}")
    def g(v):
        return "n/a" if v is None else f"{v:.3g}"

    for k, v in (m.minimal or {}).items():
        out.append(f"  minimal perturbation (DeepFool) on {k}: median L2 {g(v.get('l2'))}, MSE {g(v.get('mse'))}, "
                   f"PSNR {g(v.get('psnr'))} dB ({v.get('n_success')}/{v.get('n_attacked')} found)")
    return out


def comparison_rows(d: AuditReport) -> list[dict]:
    """One row per diagnosed profile of a report: the precision / defence comparison (clean
    accuracy, transfer from the exact model, white-box and Square success at the diagnosis ε,
    mean clean energy and latency, the verdict)."""
    rows = []
    for p in Profile.list_of(d.profiles):
        m = p.masking
        if not m:
            continue
        m = Masking.of(m)
        s = m.success if m.has("success") else {}
        wb = [v for v in (s.get("pgd_ce"), s.get("pgd_margin")) if v is not None]
        summary = Summary.of(p.summary)
        rows.append({"profile": p.name, "clean_accuracy": Clean.of(p.clean).accuracy,
                     "epsilon": m.epsilon, "transfer_from_exact": s.get("transfer_from_exact"),
                     "whitebox": max(wb) if wb else None, "square": s.get("square"),
                     "energy_j": summary.clean_mean_energy_j, "latency_s": summary.clean_mean_latency_s,
                     "verdict": m.verdict})
    return rows


def comparison_lines(d: AuditReport) -> list[str]:
    """The text table of :func:`comparison_rows` (empty when no profile was diagnosed)."""
    rows = comparison_rows(d)
    if not rows:
        return []

    def pct(v):
        return "  n/a" if v is None else f"{100 * v:4.0f}%"

    out = ["precision / defence comparison (attack success at the diagnosis eps; white-box = BPDA or",
           "straight-through where the arithmetic is not differentiable):",
           f"  {'profile':16s}{'clean':>7s}{'transfer':>9s}{'white-box':>10s}{'Square':>8s}{'energy':>11s}  verdict"]
    for r in rows:
        e = r["energy_j"]
        out.append(f"  {str(r['profile'])[:16]:16s}{pct(r['clean_accuracy']):>7s}{pct(r['transfer_from_exact']):>9s}"
                   f"{pct(r['whitebox']):>10s}{pct(r['square']):>8s}"
                   f"{'n/a' if e is None else f'{e * 1e6:.3g} uJ':>11s}  {r['verdict']}")
    return out


def warning_blocks(d: AuditReport) -> list:
    return [Para(str(w.message if isinstance(w, Warning_) else w), "warning") for w in d.warnings or []]


# ----------------------------------------------------------------------------------------------
# anything else
# ----------------------------------------------------------------------------------------------

MAX_ROWS = 60


def _scalar(v) -> bool:
    return v is None or isinstance(v, (str, int, float, bool))


def _cell(v) -> str:
    if is_summary(v):
        return f"{fmt(v.get('mean'))} ({fmt(median(v))})"
    if isinstance(v, list) and all(_scalar(x) for x in v):
        s = ", ".join(fmt(x) for x in v[:6])
        return f"[{s}{', …' if len(v) > 6 else ''}]"
    if isinstance(v, dict) and all(_scalar(x) for x in v.values()) and len(v) <= 4:
        return ", ".join(f"{k} {fmt(x)}" for k, x in v.items())
    return fmt(v)


def _cellable(v) -> bool:
    return (_scalar(v) or is_summary(v) or (isinstance(v, list) and all(_scalar(x) for x in v))
            or (isinstance(v, dict) and all(_scalar(x) for x in v.values()) and len(v) <= 4))


def generic_blocks(title: str, v, depth: int = 0) -> list:
    """Any JSON value laid out as tables (see the module doc)."""
    if depth > 4:
        return [Para(f"{title}: (nested too deep to show)", "note")]
    if _cellable(v):
        return [Table(title, ["value"], [[_cell(v)]], key=title)] if depth == 0 else []
    out: list = []
    if isinstance(v, list):
        recs = _records(v)
        if recs and len(recs) == len(v):
            cols: list[str] = []
            for r in recs:
                for k, x in r.items():
                    if _cellable(x) and k not in cols:
                        cols.append(k)
            if cols:
                rows = [[_cell(r.get(c)) for c in cols] for r in recs[:MAX_ROWS]]
                numeric = {i for i, c in enumerate(cols) if all(num(r.get(c)) is not None or r.get(c) is None
                                                              or is_summary(r.get(c)) for r in recs)}
                out.append(Table(title, cols, rows, numeric, key=title,
                                 note=f"first {MAX_ROWS} of {len(recs)} rows" if len(recs) > MAX_ROWS else
                                 ("summaries: mean (median)" if any(is_summary(r.get(c)) for r in recs for c in cols)
                                  else "")))
            for i, r in enumerate(recs[:12]):
                label = r.get("name") or r.get("attack") or r.get("search") or i
                for k, x in r.items():
                    if not _cellable(x):
                        out += generic_blocks(f"{title}[{label}].{k}", x, depth + 1)
        else:
            out.append(Table(title, ["#", "value"], [[str(i), _cell(x)] for i, x in enumerate(v[:MAX_ROWS])], {0},
                             key=title))
        return out
    if isinstance(v, dict):
        flat = [(k, x) for k, x in v.items() if _cellable(x)]
        if flat:
            out.append(Table(title, ["key", "value"], [[str(k), _cell(x)] for k, x in flat[:MAX_ROWS]], {1}, key=title))
        for k, x in v.items():
            if not _cellable(x):
                out += generic_blocks(f"{title}.{k}", x, depth + 1)
        return out
    return [Para(f"{title}: {fmt(v)}")]


# ----------------------------------------------------------------------------------------------
# block writers: text (80 columns) and Markdown (the HTML writer lives in auditor/report/html.py)
# ----------------------------------------------------------------------------------------------


def _clip(s: str, w: int) -> str:
    return s if len(s) <= w else s[:max(0, w - 1)] + "…"


def text_table(t: Table, width: int = 80, indent: int = 2) -> list[str]:
    out = [_clip(t.title, width)] if t.title else []
    pad = " " * indent
    cols = len(t.head)
    widths = [max([len(t.head[j])] + [len(r[j]) for r in t.rows if j < len(r)]) for j in range(cols)]
    total = indent + sum(widths) + 2 * (cols - 1)
    if total <= width:
        def line(cells):
            return pad + "  ".join((c.rjust(widths[j]) if j in t.num else c.ljust(widths[j]))
                                   for j, c in enumerate(cells)).rstrip()
        out.append(line(t.head))
        for r in t.rows:
            out.append(line([r[j] if j < len(r) else "" for j in range(cols)]))
    else:  # too wide for the terminal: one wrapped record per row, the first column as its label
        for r in t.rows:
            rest = "; ".join(f"{t.head[j]} {r[j]}" for j in range(1, min(cols, len(r))) if r[j] != "")
            out += textwrap.wrap(f"{r[0]}: {rest}" if r else "", width, initial_indent=pad,
                                 subsequent_indent=pad + "    ", break_on_hyphens=False)
    if t.note:
        out += textwrap.wrap(f"({t.note})", width, initial_indent=pad, subsequent_indent=pad + " ")
    return out


def text_blocks(blocks: list, width: int = 80) -> list[str]:
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Table):
            out += text_table(b, width)
        else:
            prefix = "warning: " if b.kind == "warning" else ""
            out += textwrap.wrap(prefix + b.text, width, subsequent_indent="  ", break_on_hyphens=False) or [""]
    return out


def _md_cell(s: str) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def md_table(t: Table, details_after: int = 10) -> list[str]:
    head = "| " + " | ".join(_md_cell(h) for h in t.head) + " |"
    sep = "|" + "|".join("---:" if j in t.num else "---" for j in range(len(t.head))) + "|"
    body = ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in t.rows]
    note = [f"_{_md_cell(t.note)}_", ""] if t.note else []
    if len(t.rows) > details_after:
        return [f"<details><summary>{_md_cell(t.title)} ({len(t.rows)} rows)</summary>", "", head, sep, *body, "",
                *note, "</details>", ""]
    return ([f"**{t.title}**", ""] if t.title else []) + [head, sep, *body, ""] + note


def md_blocks(blocks: list, details_after: int = 10) -> list[str]:
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Table):
            out += md_table(b, details_after)
        else:
            out += [f"> ⚠️ **warning:** {b.text}" if b.kind == "warning" else
                    f"_{b.text}_" if b.kind == "note" else b.text, ""]
    return out
