"""A self-contained HTML rendering of the audit report (one file: inline CSS, plots as base64 PNG).

:func:`render_html` takes the JSON report dict (``auditor audit --format json``, or
``Report.data``) and returns one HTML document with no external resource: no stylesheet, script,
font or image is fetched; every plot is an embedded ``data:image/png;base64`` image drawn with
matplotlib's Agg canvas (no pyplot, no global backend change).

Content, in order: the verdict banner and the checks table; per hardware profile its clean
figures and plots (latency/energy distributions clean vs attacked, per-layer density box plots,
robust accuracy vs epsilon, confidence-margin CDFs from the quantile summaries, the worst inputs);
then the energy-latency and evasion attack tables.  Sections whose data is absent are left out;
keys the renderer does not know are shown as compact key/value tables.  A section that cannot be
rendered (malformed data) is replaced by a short note instead of failing the whole report.
"""

from __future__ import annotations

import base64
import io
import math
from html import escape
from pathlib import Path

from .numbers import fmt_num as _fmt_num
from .numbers import num as _num
from .numbers import pct as _pct
from .numbers import si as _si
from .records import (Approx, AuditReport, Baseline, BothModelsAttack, BothModelsResult, Check, Clean, DataInfo, Density,
                      EnergySearch, EvasionAttack, EvasionResult, Example, LayerCost, Masking, MinimalPerturbation,
                      Model, Profile, Quantiles, Robustness, ScenarioEcho, SearchLayer, SearchWorstInput, SideResult,
                      Stats, Summary, Timing, Tool, TransferAttack, TransferResult, WorstInput, sorted_checks)
from .sections import Table, approx_blocks, generic_blocks, masking_blocks, warning_blocks
from .sections import get as _d

#: layout resolution (CSS pixels per inch of a figure); plots are stored at 2x for sharp text
DPI = 100
SCALE = 2
#: largest saved worst-input PNG embedded as-is (bytes)
MAX_EMBED_BYTES = 2_000_000
#: most rows of a key/value table of unknown data
MAX_KV_ROWS = 120

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0 auto;max-width:1100px;
padding:0 16px 40px;color:#222;line-height:1.4;font-size:15px}
h1{margin:0;font-size:2.6em;letter-spacing:.05em}
h2{border-bottom:2px solid #ccc;padding-bottom:3px;margin-top:1.8em}
h3{margin-top:1.4em;margin-bottom:.4em}
table{border-collapse:collapse;margin:.5em 0 1em;font-size:.9em}
th,td{border:1px solid #bbb;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#eee}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.fail td{background:#fde2e2}
tr.fail td.mark,.mark.fail{color:#b00020;font-weight:bold}
.mark.pass{color:#1b7f2a;font-weight:bold}
.banner{margin:16px 0;padding:14px 20px;border-radius:6px;color:#fff}
.banner.pass{background:#1b7f2a}
.banner.fail{background:#b00020}
.banner p{margin:.3em 0 0}
.meta td:first-child{font-weight:bold;background:#f6f6f6}
code{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.92em}
img.plot{display:block;max-width:100%;height:auto;margin:.4em 0 1em;border:1px solid #ddd}
img.input{width:112px;height:auto;image-rendering:pixelated;border:1px solid #999}
.note{color:#666;font-size:.9em}
.error{color:#b00020;font-size:.9em}
.warning{background:#fff4ce;border-left:4px solid #d9a400;padding:6px 10px;margin:.4em 0}
.mark.nd{color:#8a6d00;font-weight:bold}
nav a{margin-right:1em}
section.profile{margin-top:1em}
details{margin:.4em 0}
footer{margin-top:3em;color:#777;font-size:.85em}
"""


# ----------------------------------------------------------------------------------------------
# small helpers
# ----------------------------------------------------------------------------------------------


def _e(v) -> str:
    return escape("" if v is None else str(v), quote=True)


def _finite(vals) -> list[float]:
    out = []
    for v in vals or []:
        f = _num(v)
        if f is not None and math.isfinite(f):
            out.append(f)
    return out


def _n(v) -> str:
    return _e(_fmt_num(v))


def _s(v, unit) -> str:
    f = _num(v)
    if f is None or not math.isfinite(f):
        return _e("n/a" if v is None else v)
    return _e(_si(f, unit))


def _table(head: list[str], rows: list[list[str]], cls: str = "", row_classes: list[str] | None = None,
           num_cols: set[int] | None = None) -> str:
    """``head`` is plain text (escaped here); the cells of ``rows`` are HTML already escaped."""
    if not rows:
        return ""  # an empty table is left out
    num_cols = num_cols or set()
    h = "".join(f"<th>{_e(c)}</th>" for c in head)
    body = []
    for i, r in enumerate(rows):
        rc = (row_classes or [""] * len(rows))[i]
        cells = "".join(f'<td class="num">{c}</td>' if j in num_cols else f"<td>{c}</td>" for j, c in enumerate(r))
        body.append(f'<tr class="{rc}">{cells}</tr>' if rc else f"<tr>{cells}</tr>")
    c = f' class="{cls}"' if cls else ""
    return f"<table{c}><thead><tr>{h}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _short_layer(name: str, width: int = 22) -> str:
    parts = [p for p in str(name).split("/") if p]
    s = "/".join(parts[-2:]) if len(parts) > 1 else str(name)
    return s if len(s) <= width else "…" + s[-(width - 1):]


def _unique_labels(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
    count: dict[str, int] = {}
    for n in names:
        if seen[n] > 1:
            count[n] = count.get(n, 0) + 1
            out.append(f"{n} #{count[n]}")
        else:
            out.append(n)
    return out


def _flatten(v, prefix: str = "", rows: list | None = None) -> list[tuple[str, str]]:
    rows = [] if rows is None else rows
    if len(rows) >= MAX_KV_ROWS:
        return rows
    if isinstance(v, dict):
        if not v:
            rows.append((prefix or "(value)", "{}"))
        for k, x in v.items():
            _flatten(x, f"{prefix}.{k}" if prefix else str(k), rows)
    elif isinstance(v, (list, tuple)):
        if all(not isinstance(x, (dict, list, tuple)) for x in v):
            shown = ", ".join(_fmt_num(x) for x in v[:8])
            more = f", … ({len(v)} items)" if len(v) > 8 else ""
            rows.append((prefix or "(value)", f"[{shown}{more}]"))
        else:
            for i, x in enumerate(v[:20]):
                _flatten(x, f"{prefix}[{i}]", rows)
            if len(v) > 20:
                rows.append((prefix, f"… ({len(v)} items)"))
    else:
        rows.append((prefix or "(value)", _fmt_num(v)))
    return rows


def _kv_table(v) -> str:
    rows = _flatten(v)
    out = _table(["key", "value"], [[f"<code>{_e(k)}</code>", _e(x)] for k, x in rows[:MAX_KV_ROWS]], cls="kv")
    if len(rows) >= MAX_KV_ROWS:
        out += f'<p class="note">(first {MAX_KV_ROWS} values shown)</p>'
    return out


def _safe(fn, *args) -> str:
    """Render one section; a malformed report section becomes a note, not an exception."""
    try:
        return fn(*args)
    except Exception as err:  # noqa: BLE001 - a report must render even with unexpected data
        return f'<p class="error">(could not render this part: {_e(type(err).__name__)}: {_e(str(err)[:200])})</p>'


# ----------------------------------------------------------------------------------------------
# plotting
# ----------------------------------------------------------------------------------------------


def _figure(w: float = 6.0, h: float = 3.0):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> str:
    """The figure at 2x as a 256-colour PNG (plots have few colours: a third of the RGBA size)."""
    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI * SCALE, metadata={"Software": None})
    buf.seek(0)
    img = Image.open(buf).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    out = io.BytesIO()
    img.save(out, format="PNG", optimize=True)
    return base64.b64encode(out.getvalue()).decode("ascii")


def _img(b64: str, alt: str, kind: str, width: int | None = None) -> str:
    w = f' width="{width}"' if width else ""
    return f'<img class="plot" data-plot="{_e(kind)}" alt="{_e(alt)}"{w} src="data:image/png;base64,{b64}">'


def _plot(kind: str, alt: str, draw, *args) -> str:
    """Draw one figure with ``draw(*args) -> fig | None``; '' when there is nothing to draw."""
    try:
        fig = draw(*args)
    except Exception as err:  # noqa: BLE001
        return f'<p class="error">(plot unavailable: {_e(type(err).__name__)}: {_e(str(err)[:200])})</p>'
    if fig is None:
        return ""
    return _img(_png(fig), alt, kind, int(round(fig.get_figwidth() * DPI)))


def _scale(values: list[float], unit: str) -> tuple[float, str]:
    """A factor and unit label so that the largest value reads in [1, 1000)."""
    m = max((abs(v) for v in values), default=0.0)
    for f, p in ((1e-12, "p"), (1e-9, "n"), (1e-6, "µ"), (1e-3, "m"), (1.0, "")):
        if m < f * 1000:
            return 1.0 / f, p + unit
    return 1.0, unit


_COLORS = ["#444444", "#d62728", "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2",
           "#17becf", "#bcbd22", "#7f7f7f"]


def _series_cost(p: Profile) -> list[tuple[str, dict]]:
    """[(label, per_input)] for clean and each attack with per-input data."""
    out = []
    pi = Clean.of(p.clean).per_input
    if isinstance(pi, dict):
        out.append(("clean", pi))
    atts = EnergySearch.list_of(p.attacks)
    labels = _unique_labels([str(a.search if a.has("search") else f"attack {i}") for i, a in enumerate(atts)])
    for lab, a in zip(labels, atts):
        if isinstance(a.per_input, dict):
            out.append((lab, a.per_input))
    return out


def _draw_cost(p: Profile):
    series = _series_cost(p)
    if len(series) < 2 or series[0][0] != "clean":
        return None  # nothing attacked: the figures table says it all
    def flat(key):
        vals = [v for _, pi in series for v in _finite(pi.get(key))]
        return not vals or max(vals) - min(vals) <= 1e-9 * max(abs(v) for v in vals)

    if flat("latency_s") and flat("energy_j"):
        return None  # the cost does not depend on the input (a dense machine): nothing to compare
    panels = []
    for key, unit, title in (("latency_s", "s", "latency"), ("energy_j", "J", "energy")):
        data = [(lab, _finite(pi.get(key))) for lab, pi in series]
        data = [(lab, v) for lab, v in data if v]
        if data:
            panels.append((title, unit, data))
    if not panels:
        return None
    fig = _figure(6.0, 3.0)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, unit, data) in zip(axes, panels):
        f, lab_unit = _scale([x for _, v in data for x in v], unit)
        bp = ax.boxplot([[x * f for x in v] for _, v in data], patch_artist=True, widths=0.6)
        for k, box in enumerate(bp["boxes"]):
            box.set_facecolor(_COLORS[k % len(_COLORS)] if k else "#cccccc")
            box.set_alpha(0.6)
        ax.set_xticks(range(1, len(data) + 1))
        ax.set_xticklabels([f"{lab}\n(n={len(v)})" for lab, v in data], fontsize=8,
                           rotation=25 if len(data) > 3 else 0)
        ax.set_ylabel(f"{title} [{lab_unit}]", fontsize=9)
        ax.set_title(f"{title}: clean vs attacked", fontsize=10)
        ax.tick_params(axis="y", labelsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def _layer_series(p: Profile) -> tuple[list[str], list[tuple[str, dict]]]:
    series = [(lab, pi["layer_density"]) for lab, pi in _series_cost(p) if isinstance(pi.get("layer_density"), dict)]
    layers: list[str] = []
    for _, ld in series:
        for name in ld:
            if name not in layers:
                layers.append(name)
    return layers, series


def _draw_layer_density(p: Profile):
    from matplotlib.patches import Patch

    layers, series = _layer_series(p)
    if layers and series:
        k = len(series)
        width = 0.8 / k
        fig = _figure(min(11.0, max(6.0, 0.35 * k * len(layers) + 1.5)), 3.2)
        ax = fig.subplots()
        for s, (lab, ld) in enumerate(series):
            pos, vals = [], []
            for i, name in enumerate(layers):
                v = _finite(ld.get(name))
                if v:
                    pos.append(i + (s - (k - 1) / 2) * width)
                    vals.append(v)
            if not vals:
                continue
            bp = ax.boxplot(vals, positions=pos, widths=width * 0.85, patch_artist=True, manage_ticks=False,
                            flierprops={"markersize": 2})
            for box in bp["boxes"]:
                box.set_facecolor(_COLORS[s % len(_COLORS)] if s else "#cccccc")
                box.set_alpha(0.7)
        ax.set_xticks(range(len(layers)))
        ax.set_xticklabels([_short_layer(n) for n in layers], fontsize=8, rotation=25, ha="right")
        ax.set_xlim(-0.6, len(layers) - 0.4)
        ax.set_ylim(-0.02, 1.05)
        ax.set_ylabel("input density (non-zero fraction)", fontsize=9)
        ax.set_title("per-layer density, clean vs attacked" if k > 1 else "per-layer density (clean inputs)",
                     fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(handles=[Patch(facecolor=_COLORS[s % len(_COLORS)] if s else "#cccccc", alpha=0.7, label=lab)
                           for s, (lab, _) in enumerate(series)], fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
        fig.tight_layout()
        return fig
    # no per-input data (an older report): the per-layer mean densities of the attack sections
    atts = [a for a in EnergySearch.list_of(p.attacks) if isinstance(a.layers, list) and a.layers]
    if not atts:
        return None
    first = SearchLayer.list_of(atts[0].layers)
    names = [str(r.layer) for r in first]
    labels = ["clean"] + _unique_labels([str(a.search if a.has("search") else "attack") for a in atts])
    cols = [[_num(r.density_clean) for r in first]]
    for a in atts:
        by = {str(r.layer): _num(r.density_attacked) for r in SearchLayer.list_of(a.layers)}
        cols.append([by.get(n) for n in names])
    k = len(cols)
    width = 0.8 / k
    fig = _figure(6.0, 3.0)
    ax = fig.subplots()
    for s, col in enumerate(cols):
        xs = [i + (s - (k - 1) / 2) * width for i, v in enumerate(col) if v is not None]
        ys = [v for v in col if v is not None]
        ax.bar(xs, ys, width=width * 0.9, color=_COLORS[s % len(_COLORS)] if s else "#aaaaaa", label=labels[s])
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels([_short_layer(n) for n in names], fontsize=8, rotation=25, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("mean input density", fontsize=9)
    ax.set_title("per-layer mean density, clean vs attacked", fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    return fig


def _rob_attacks(p: Profile) -> list[EvasionAttack]:
    return EvasionAttack.list_of(Robustness.of(p.robustness).attacks)


def _draw_robust_curve(p: Profile):
    atts = [a for a in _rob_attacks(p) if any(_num(r.epsilon) is not None for r in EvasionResult.list_of(a.results))]
    if not atts:
        return None
    norms: list[str] = []
    for a in atts:
        if str(a.norm) not in norms:
            norms.append(str(a.norm))
    norms = norms[:4]
    clean = _num(Robustness.of(p.robustness).clean_accuracy)
    fig = _figure(6.0 if len(norms) < 3 else 8.0, 3.0)
    axes = fig.subplots(1, len(norms), squeeze=False, sharey=True)[0]
    labels = _unique_labels([f"{a.attack}" + (" (targeted)" if a.targeted else "") for a in atts])
    for ax, norm in zip(axes, norms):
        for i, (lab, a) in enumerate(zip(labels, atts)):
            if str(a.norm) != norm:
                continue
            pts = sorted((_num(r.epsilon), _num(r.robust_accuracy)) for r in EvasionResult.list_of(a.results)
                         if _num(r.epsilon) is not None and _num(r.robust_accuracy) is not None)
            color = _COLORS[(i + 1) % len(_COLORS)]
            if clean is not None and pts and pts[0][0] > 0:  # from the clean accuracy at ε = 0 (not measured)
                ax.plot([0.0, pts[0][0]], [100 * clean, 100 * pts[0][1]], ls=":", color=color)
            ax.plot([x for x, _ in pts], [100 * y for _, y in pts], marker="o", markersize=4, color=color, label=lab)
        if clean is not None:
            ax.plot([0.0], [100 * clean], marker="*", markersize=9, color="#222222", ls="none", label="clean")
        ax.set_xlabel(f"ε ({norm})", fontsize=9)
        ax.set_ylim(-3, 103)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("robust accuracy [%]", fontsize=9)
    fig.suptitle("robust accuracy vs ε", fontsize=10)
    fig.tight_layout()
    return fig


def _cdf_points(summary) -> tuple[list[float], list[float]] | None:
    """(values, probabilities) from a quantile summary {count, n_infinite, quantiles: {q: value}}
    (a :class:`Quantiles` record or its dict)."""
    if isinstance(summary, Quantiles):
        count, n_inf, quantiles = summary.count, summary.n_infinite, summary.quantiles
    elif isinstance(summary, dict):
        count, n_inf, quantiles = summary.get("count"), summary.get("n_infinite"), summary.get("quantiles")
    else:
        return None
    if not isinstance(quantiles, dict):
        return None
    count = _num(count)
    n_inf = _num(n_inf) or 0.0
    frac = (count - n_inf) / count if count and count > 0 else 1.0
    pts = []
    for q, v in quantiles.items():
        qf, vf = _num(q), _num(v)
        if qf is None:
            try:
                qf = float(q)
            except (TypeError, ValueError):
                continue
        if vf is None or not math.isfinite(vf) or not 0 <= qf <= 1:
            continue
        pts.append((vf, qf * frac))
    if len(pts) < 2:
        return None
    pts.sort(key=lambda t: (t[1], t[0]))
    return [v for v, _ in pts], [q for _, q in pts]


def _cdf_axes(ax, curves: list[tuple[str, tuple[list[float], list[float]]]], xlabel: str) -> None:
    allv = [v for _, (xs, _) in curves for v in xs]
    for i, (lab, (xs, qs)) in enumerate(curves):
        ax.plot(xs, qs, marker=".", markersize=4, lw=2.0 if i == 0 else 1.2,
                color=_COLORS[i % len(_COLORS)], label=lab)
    pos = [v for v in allv if v > 0]
    if allv and len(pos) == len(allv) and max(pos) / min(pos) > 100:
        from matplotlib.ticker import NullLocator

        ax.set_xscale("log")
        ax.xaxis.set_minor_locator(NullLocator())  # minor log ticks are slow to lay out and add little
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel("fraction ≤ x", fontsize=8)
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def _draw_margin_cdf(p: Profile):
    clean = _cdf_points(Robustness.of(p.robustness).clean_margin)
    panels = []
    atts = _rob_attacks(p)
    for lab, a in zip(_unique_labels([f"{a.attack} ({a.norm})" for a in atts]), atts):
        curves = [("clean", clean)] if clean else []
        for r in EvasionResult.list_of(a.results):
            pts = _cdf_points(r.margin)
            if pts:
                curves.append((f"ε={_fmt_num(r.epsilon)}", pts))
        if len(curves) > (1 if clean else 0):
            panels.append((lab, curves))
    if not panels:
        if not clean:
            return None
        panels = [("clean", [("clean", clean)])]
    ncols = 1 if len(panels) == 1 else 2
    nrows = math.ceil(len(panels) / ncols)
    fig = _figure(6.0, 2.6 * nrows + 0.3)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for k, (lab, curves) in enumerate(panels):
        ax = axes[k // ncols][k % ncols]
        _cdf_axes(ax, curves, "confidence margin (top-1 − runner-up logit)")
        ax.set_title(lab, fontsize=9)
    for k in range(len(panels), nrows * ncols):
        axes[k // ncols][k % ncols].set_visible(False)
    fig.suptitle("confidence-margin CDF (from quantile summaries), clean vs attacked", fontsize=10)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------
# sections
# ----------------------------------------------------------------------------------------------


def _header(d: AuditReport) -> str:
    verdict = str(d.verdict if d.has("verdict") else "n/a")
    cls = "pass" if verdict == "PASS" else "fail"
    checks = Check.list_of(d.checks)
    n_fail = sum(c.status == "FAIL" for c in checks)
    model, data, tool, sc = Model.of(d.model), DataInfo.of(d.data), Tool.of(d.tool), ScenarioEcho.of(d.scenario)
    sha = str(model.sha256 or "")
    summary = (f"{n_fail} of {len(checks)} checks failed" if n_fail else
               f"all {len(checks)} checks passed" if checks else "no checks declared")
    out = [f'<header class="banner {cls}" id="verdict"><h1>{_e(verdict)}</h1>'
           f"<p>{_e(summary)} — model <code>{_e(model.path)}</code></p></header>"]
    rows = [
        ("model", f"<code>{_e(model.path)}</code> (sha256 <code>{_e(sha[:12])}</code>"
                  + (f", opset {_e(model.opset)}" if model.opset is not None else "") + ")"),
        ("scenario", _e(sc.name) + (f" — {_e(sc.description)}" if sc.description else "")),
        ("seed", _e(d.seed)),
        ("data", f"{_e(data.description)}, {_e(data.count)} inputs"
                 + ("" if (data.labels if data.has("labels") else True) else " (no labels)")
                 + (f", shape {_e(data.shape)}" if data.shape else "")),
        ("tool", f"{_e(tool.name if tool.has('name') else 'auditor')} {_e(tool.version)}"),
    ]
    if isinstance(d.baseline, Baseline):
        b = d.baseline
        rows.append(("baseline", f"<code>{_e(b.path)}</code> (model sha256 "
                                 f"<code>{_e(str(b.model_sha256 or '')[:12])}</code>)"))
    env = d.environment
    if isinstance(env, dict):
        pk = env.get("packages") if isinstance(env.get("packages"), dict) else {}
        rows.append(("environment", _e(f"Python {env.get('python')}, " + ", ".join(f"{k} {v}" for k, v in pk.items())
                                       + f"; {env.get('cpu')}, {env.get('cpus_usable')} CPUs usable, threads "
                                       + f"{env.get('threads') or 'all'}")))
    if isinstance(d.timing, Timing):
        t = d.timing
        rows.append(("run", f"started {_e(t.started)}, {_e(_fmt_num(t.seconds))} s"))
    out.append('<table class="meta"><tbody>' + "".join(f"<tr><td>{_e(k)}</td><td>{v}</td></tr>" for k, v in rows)
               + "</tbody></table>")
    return "".join(out)


def _warnings(d: AuditReport) -> str:
    blocks = warning_blocks(d)
    return '<section id="warnings" class="warnings">' + _blocks_html(blocks) + "</section>" if blocks else ""


def _checks(d: AuditReport) -> str:
    checks = sorted_checks(Check.list_of(d.checks))
    out = ['<section id="checks"><h2>Checks</h2>']
    if not checks:
        out.append('<p class="note">(no checks declared in the scenario)</p>')
    else:
        rows, cls = [], []
        for c in checks:
            st = c.status
            name = _e(c.name)
            if c.detail:
                name += f' <span class="note">({_e(c.detail)})</span>'
            mark = {"PASS": "pass", "FAIL": "fail"}.get(st, "nd")
            rows.append([_e(c.profile), name, _n(c.measured), _e(c.op), _n(c.threshold),
                         f'<span class="mark {mark}">{_e(st)}</span>'])
            cls.append("fail" if st == "FAIL" else "")
        out.append(_table(["profile", "check", "measured", "op", "threshold", "result"], rows, row_classes=cls,
                          num_cols={2, 4}))
    out.append("</section>")
    return "".join(out)


def render_summary_html(d) -> str:
    """A short HTML fragment (no document): verdict, warnings and the checks table (notebooks);
    ``d``: the report's records or its dict."""
    if isinstance(d, dict):
        d = AuditReport.parse(d)
    verdict = str(d.verdict if d.has("verdict") else "n/a")
    cls = {"PASS": "pass"}.get(verdict, "fail")
    return (f"<div><style>{_CSS}</style><div class=\"banner {cls}\"><b>{_e(verdict)}</b> — "
            f"<code>{_e(Model.of(d.model).path)}</code> on "
            f"{_e(', '.join(str(p.name) for p in Profile.list_of(d.profiles)))}</div>"
            + _safe(_warnings, d) + _safe(_checks, d) + "</div>")


def _profile_figures(p: Profile) -> str:
    c, s = Clean.of(p.clean), Summary.of(p.summary)
    dens = Density.of(c.density)
    out = [f"<p>clean accuracy <b>{_e(_pct(c.accuracy) if c.accuracy is not None else 'n/a')}</b>; "
           f"density ({_e(dens.counted if dens.has('counted') else 'activations')}) mean <b>{_n(dens.mean)}</b>, "
           f"worst {_n(dens.worst)}</p>"]
    rows = []
    for st, unit, label, worst in ((c.latency_s, "s", "latency", s.worst_latency_s),
                                   (c.energy_j, "J", "energy", s.worst_energy_j),
                                   (c.edp, "Js", "EDP", s.worst_edp)):
        st = Stats.of(st)
        rows.append([_e(label), _s(st.mean, unit), _s(st.p95, unit), _s(st.worst, unit), _s(worst, unit)])
    rows.append(["density", _n(dens.mean), _n(dens.p95), _n(dens.worst), _n(s.worst_density)])
    sp = c.speedup_over_dense
    if isinstance(sp, Stats):
        # the worst speed-up is the smallest
        rows.append(["speed-up vs dense", _n(sp.mean), _n(sp.p50), _n(sp.min), "—"])
    out.append(_table(["", "clean mean", "clean p95", "clean worst", "worst incl. attacks"], rows,
                      num_cols={1, 2, 3, 4}))
    br = c.energy_breakdown_j
    if isinstance(br, dict) and br:
        out.append("<details><summary>mean energy breakdown (clean)</summary>"
                   + _table(["component", "energy"], [[_e(k), _s(v, "J")] for k, v in br.items()], num_cols={1})
                   + "</details>")
    if isinstance(p.profile, dict):
        out.append("<details><summary>hardware profile parameters</summary>" + _kv_table(p.profile) + "</details>")
    return "".join(out)


def _embeddable(name: str, base_dir: Path | None) -> Path | None:
    """The file a report names, if it may be embedded: a regular file whose resolved path lies
    inside ``base_dir`` (the report's folder), looked up relative to that folder or as written.
    A crafted report naming ``../`` or absolute paths elsewhere gets nothing embedded."""
    if base_dir is None or "\0" in name:
        return None
    try:
        base = Path(base_dir).resolve()
        cands = [Path(name)] if Path(name).is_absolute() else [base / name, Path(name)]
        for c in cands:
            r = c.resolve()
            if (r == base or base in r.parents) and r.is_file():
                return r
    except (OSError, RuntimeError, ValueError):
        return None
    return None


def _embed_png(files, base_dir: Path | None, alt: str) -> str:
    """An <img> of the first saved .png among ``files`` that may be embedded (inside ``base_dir``,
    see _embeddable) and is a PNG, else ''."""
    for f in files or []:
        if not isinstance(f, str) or not f.lower().endswith(".png"):
            continue
        path = _embeddable(f, base_dir)
        if path is None:
            continue
        try:
            if path.stat().st_size <= MAX_EMBED_BYTES:
                data = path.read_bytes()
                if data[:8] == b"\x89PNG\r\n\x1a\n":
                    return (f'<img class="input" alt="{_e(alt)}" '
                            f'src="data:image/png;base64,{base64.b64encode(data).decode("ascii")}">')
        except OSError:
            continue
    return ""


#: adversarial examples shown per profile (the most convincing: smallest L2 first)
MAX_EXAMPLES_SHOWN = 8


def _adversarial_examples(p: Profile, base_dir: Path | None) -> str:
    found = []
    for a in _rob_attacks(p):
        for r in EvasionResult.list_of(a.results):
            found += [(a, r.epsilon, ex) for ex in Example.list_of(r.examples)]
        found += [(a, None, ex) for ex in Example.list_of(MinimalPerturbation.of(a.minimal_perturbation).examples)]
    if not found:
        return ""
    found.sort(key=lambda f: (_num(f[2].l2) if _num(f[2].l2) is not None else math.inf))
    rows = []
    for a, eps, ex in found[:MAX_EXAMPLES_SHOWN]:
        files = ex.files if isinstance(ex.files, dict) else {}
        imgs = [_embed_png(files.get(k), base_dir, f"{k} input #{ex.index}") for k in ("clean", "adversarial", "difference")]
        rows.append([_e(a.attack), _e(a.norm), "minimal" if eps is None else _n(eps), _e(ex.index),
                     f"{_e(ex.label)} → <b>{_e(ex.prediction)}</b>", _n(ex.l2), _n(ex.linf), *imgs])
    return ("<h4>adversarial examples (verified by an independent forward pass; smallest L2 first)</h4>"
            + _table(["attack", "norm", "ε", "input", "label → prediction", "L2", "Linf", "clean", "adversarial",
                      "difference"], rows, num_cols={2, 3, 5, 6})
            + f'<p class="note">{len(found)} saved examples, {min(len(found), MAX_EXAMPLES_SHOWN)} shown; difference: '
              "mid-grey = unchanged, scaled to the largest change.</p>")


def _worst_inputs(p: Profile, base_dir: Path | None) -> str:
    out = []
    atts = [a for a in EnergySearch.list_of(p.attacks) if isinstance(a.worst_input, SearchWorstInput)]
    rows = []
    for lab, a in zip(_unique_labels([str(a.search if a.has("search") else "attack") for a in atts]), atts):
        w = a.worst_input
        img = _embed_png(w.files, base_dir, "worst input of " + lab)
        rows.append([_e(lab), _e(w.index), _s(w.latency_s, "s"), _s(w.energy_j, "J"), _n(w.density), img])
    adv = _adversarial_examples(p, base_dir)
    if adv:
        out.append(adv)
    if rows:
        out.append("<h4>worst attacked inputs (verified)</h4>")
        out.append(_table(["search", "index", "latency", "energy", "density", "image"], rows, num_cols={1, 2, 3, 4}))
    w = Clean.of(p.clean).worst_input
    if isinstance(w, WorstInput) and isinstance(w.layers, list):
        out.append(f"<h4>worst clean input #{_e(w.index)}, per layer</h4>")
        rows = [[f"<code>{_e(r.layer)}</code>", _e(r.op), _n(r.macs), _n(r.input_density), _n(r.cycles),
                 _n(r.dense_cycles), _s(r.energy_j, "J")] for r in LayerCost.list_of(w.layers)]
        out.append(_table(["layer", "op", "MACs", "input density", "cycles", "dense cycles", "energy"], rows,
                          num_cols={2, 3, 4, 5, 6}))
    return "<h3>Evidence: worst inputs and adversarial examples</h3>" + "".join(out) if out else ""


def _blocks_html(blocks: list, level: str = "h4") -> str:
    """Format-neutral section blocks (auditor.report.sections) as HTML."""
    out = []
    for b in blocks:
        if isinstance(b, Table):
            t = _table(b.head, [[_e(c) for c in r] for r in b.rows], num_cols=b.num)
            if not t:
                continue
            out.append((f'<{level} id="{_e(b.key)}">{_e(b.title)}</{level}>' if b.key else f"<{level}>{_e(b.title)}</{level}>")
                       if b.title else "")
            out.append(t)
            if b.note:
                out.append(f'<p class="note">{_e(b.note)}</p>')
        elif b.kind == "warning":
            out.append(f'<p class="warning">⚠ {_e(b.text)}</p>')
        else:
            out.append(f'<p class="{_e(b.kind)}">{_e(b.text)}</p>' if b.kind else f"<p>{_e(b.text)}</p>")
    return "".join(out)


def _draw_approx_dists(approx):
    """Two panels on their own axes: top-1 confidence (a probability, 0-1) and the logit margins
    (``approx``: the section's record or its dict)."""
    if isinstance(approx, dict):
        approx = Approx.parse(approx)
    mg = approx.margins if isinstance(approx, Approx) else None
    if not isinstance(mg, dict):
        return None
    conf, marg = [], []
    for side in ("exact", "approx"):
        m = mg.get(side)
        if not isinstance(m, dict):
            continue
        pts = _cdf_points(m.get("confidence"))
        if pts:
            conf.append((side, pts))
        pts = _cdf_points(m.get("top_margin"))
        if pts:
            marg.append((side, pts))
    panels = [p for p in (("top-1 confidence (softmax probability)", conf),
                          ("logit margin, top-1 − runner-up (logit units)", marg)) if p[1]]
    if not panels:
        return None
    fig = _figure(9.0 if len(panels) == 2 else 5.0, 3.2)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (xlabel, curves) in zip(axes, panels):
        _cdf_axes(ax, curves, xlabel)
        if xlabel.startswith("top-1"):
            ax.set_xscale("linear")
            lo = min(min(xs) for _, (xs, _) in curves)
            ax.set_xlim(max(0.0, min(lo, 0.9) - 0.02), 1.005)
    fig.suptitle("exact vs approximate model, clean inputs (CDF)", fontsize=10)
    fig.tight_layout()
    return fig


def _approx_success_rows(approx) -> list[tuple[str, float | None, float | None]]:
    rows = []
    if not isinstance(approx, Approx):
        return rows
    for entries, tag in ((approx.transfer, "transfer"), (approx.substitute, "substitute")):
        for a in TransferAttack.list_of(entries):
            for r in TransferResult.list_of(a.results):
                lab = f"{tag} {a.attack}" + ("" if r.epsilon is None else f" {_fmt_num(r.epsilon)}")
                rows.append((lab, _num(r.exact_success_rate), _num(r.approx_success_rate)))
    for entries, tag in ((approx.whitebox_bpda, "BPDA"), (approx.query, "query")):
        for a in BothModelsAttack.list_of(entries):
            for r in BothModelsResult.list_of(a.results):
                lab = f"{tag} {a.attack}" + ("" if r.epsilon is None else f" {_fmt_num(r.epsilon)}")
                rows.append((lab, _num(SideResult.of(r.exact).success_rate), _num(SideResult.of(r.approx).success_rate)))
    return [r for r in rows if r[1] is not None or r[2] is not None]


def _draw_approx_success(approx):
    rows = _approx_success_rows(approx)
    if not rows:
        return None
    fig = _figure(9.0, 0.28 * len(rows) + 1.2)
    ax = fig.subplots()
    ys = list(range(len(rows)))
    h = 0.38
    ax.barh([y - h / 2 for y in ys], [100 * (r[1] or 0) for r in rows], height=h, color=_COLORS[0], label="exact model")
    ax.barh([y + h / 2 for y in ys], [100 * (r[2] or 0) for r in rows], height=h, color=_COLORS[1],
            label="approximate model")
    ax.set_yticks(ys)
    ax.set_yticklabels([r[0] for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("attack success rate [%] (verified)", fontsize=9)
    ax.tick_params(axis="x", labelsize=8)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title("attack success, exact vs approximate model", fontsize=10)
    fig.tight_layout()
    return fig


def _approx_section(approx) -> str:
    out = ['<h3 id="approx">Exact vs approximate hardware</h3>']
    if isinstance(approx, Approx):
        out.append(_plot("approx-distributions", "confidence and logit-margin CDFs, exact vs approximate model",
                         _draw_approx_dists, approx))
        out.append(_plot("approx-success", "attack success rate, exact vs approximate model", _draw_approx_success,
                         approx))
    out.append(_blocks_html(approx_blocks(approx)))
    cands = approx.candidates if isinstance(approx, Approx) else None
    if isinstance(cands, list) and cands:
        out.append("<details><summary>every attack candidate on the approximate model</summary>"
                   + _blocks_html(generic_blocks("candidates", cands)) + "</details>")
    return "".join(out)


def _generic(title: str, v) -> str:
    return f"<h3>{_e(title)}</h3>" + _blocks_html(generic_blocks(title, v))


def _profile(p: Profile, i: int, base_dir: Path | None) -> str:
    name = p.name if p.has("name") else f"profile {i}"
    out = [f'<section class="profile" id="profile-{i}"><h2>Profile: {_e(name)}'
           + (f" <small>({_e(p.cost_model)})</small>" if p.cost_model else "") + "</h2>"]
    if p.description:
        out.append(f'<p class="note">{_e(p.description)}' + (f" — <code>{_e(p.path)}</code>" if p.path else "") + "</p>")
    for note in p.notes or []:
        out.append(f'<p class="note">note: {_e(note)}</p>')
    out.append(_safe(_profile_figures, p))
    plots = []
    cost = _plot("cost", f"{name}: latency and energy distributions, clean vs attacked", _draw_cost, p)
    if cost:
        plots.append("<h3>Latency and energy, clean vs attacked</h3>" + cost)
    dens = _plot("layer-density", f"{name}: per-layer density", _draw_layer_density, p)
    if dens:
        attacked = any(not a.cut_short for a in EnergySearch.list_of(p.attacks))
        plots.append(f"<h3>Per-layer density{', clean vs attacked' if attacked else ''}</h3>" + dens)
    rob = p.robustness
    if isinstance(rob, Robustness):
        plots.append(f"<h3>Robustness</h3><p>clean accuracy on the {_e(rob.count if rob.has('count') else rob.n)} "
                     f"robustness inputs: <b>{_e(_pct(rob.clean_accuracy))}</b></p>")
        plots.append(_plot("robust-accuracy", f"{name}: robust accuracy vs epsilon", _draw_robust_curve, p))
        m = _plot("margin-cdf", f"{name}: confidence-margin CDF", _draw_margin_cdf, p)
        if m:
            plots.append(m)
    out.extend(plots)
    if isinstance(p.masking, Masking):  # the gradient-masking diagnosis: verdict and each check's evidence
        out.append("<h3>Gradient-masking diagnosis</h3>" + _safe(_blocks_html, masking_blocks(p.masking)))
    if p.approx is not None:
        out.append(_safe(_approx_section, p.approx))
    out.append(_safe(_worst_inputs, p, base_dir))
    for k, v in p.extra().items():
        if v is not None:
            out.append(_safe(_generic, k, v))
    out.append("</section>")
    return "".join(out)


def _energy_table(d: AuditReport) -> str:
    rows = []
    for p in Profile.list_of(d.profiles):
        for a in EnergySearch.list_of(p.attacks):
            kept = a.label_kept_rate
            l2 = _d(a.perturbation, "l2") or {}
            pert = "—" if not l2 else f"{_n(l2.get('mean'))} / {_n(l2.get('worst'))}"
            rows.append([_e(p.name), _e(a.search), _e(a.cost), f"{_e(a.verified)}/{_e(a.count)}",
                         _n(a.latency_increase), _n(a.energy_increase), _n(a.mean_latency_ratio),
                         _n(a.mean_energy_ratio), f"{_n(a.density_clean)} → {_n(a.density_attacked)}",
                         "n/a" if kept is None else _e(_pct(kept)), pert, _n(a.queries), _n(a.seconds)])
    if not rows:
        return ""
    return ("<h3>Energy-latency attacks</h3>"
            + _table(["profile", "search", "cost", "verified", "latency x (worst)", "energy x (worst)",
                      "latency x (mean)", "energy x (mean)", "density clean → attacked", "label kept",
                      "perturbation L2 mean / worst", "queries", "seconds"], rows,
                     num_cols={4, 5, 6, 7, 10, 11, 12})
            + '<p class="note">latency/energy x (worst): the largest ratio of a verified attacked input to the same '
              "input clean (searches from clean inputs; 1 for an input left unchanged), or the worst found input "
              "over the mean clean input (searches that make their own inputs); "
              "(mean): mean attacked over mean clean of the same inputs.</p>")


def _q(summary, key="0.5"):
    """A quantile of a summary (a :class:`Quantiles` record), None when it has none."""
    return _d(Quantiles.of(summary).quantiles, key)


def _robust_tables(d: AuditReport) -> str:
    rows, mrows = [], []
    for p in Profile.list_of(d.profiles):
        for a in _rob_attacks(p):
            aq = _d(a.queries, "per_input", "mean")
            for r in EvasionResult.list_of(a.results):
                q = _d(r.queries, "per_input", "mean", default=aq)
                qs = _d(r.queries, "to_success", "mean")
                rows.append([_e(p.name), _e(a.attack), _e(a.norm), _e(a.targeted or "no"), _n(r.epsilon),
                             _e(_pct(r.robust_accuracy)),
                             f"{_e(_pct(r.attack_success_rate))} ({_e(r.n_success)}/{_e(r.n_attacked)})",
                             _n(r.n_unverified), _n(q), _n(qs)])
            mp = a.minimal_perturbation
            if isinstance(mp, MinimalPerturbation):
                mrows.append([_e(p.name), _e(a.attack), _e(a.norm), f"{_e(mp.n_success)}/{_e(mp.n_attacked)}",
                              _n(mp.median_distance), _n(mp.median_l2), _n(Quantiles.of(mp.l2).mean), _n(_q(mp.l2)),
                              _n(_q(mp.linf)), _n(_q(mp.l0)), _n(_q(mp.psnr))])
    out = []
    if rows:
        out.append("<h3>Evasion attacks</h3>")
        out.append(_table(["profile", "attack", "norm", "targeted", "ε", "robust accuracy", "success rate",
                           "unverified", "queries / input (mean)", "queries to success (mean)"], rows,
                          num_cols={4, 5, 6, 7, 8, 9}))
    if mrows:
        out.append("<h3>Minimal perturbations</h3>")
        out.append(_table(["profile", "attack", "norm", "found", "median distance", "median L2 (failures = ∞)",
                           "L2 mean", "L2 median", "Linf median", "L0 median", "PSNR median"], mrows,
                          num_cols={4, 5, 6, 7, 8, 9, 10}))
        out.append('<p class="note">medians of the found perturbations are over the successful inputs; '
                   "median distance / median L2 count failures as infinitely far (n/a or inf).</p>")
    return "".join(out)


def render_html(report, *, base_dir: str | Path | None = None, **_options) -> str:
    """The audit report as one self-contained HTML document (inline CSS, plots as base64 PNG).

    ``report``: the report's records (:class:`~auditor.report.records.AuditReport`), its JSON
    dict or a :class:`~auditor.report.core.Report`.  ``base_dir``: the folder whose files may be
    embedded (the saved worst inputs, named relative to it or to the current directory); files
    resolving elsewhere, and every file when ``base_dir`` is None, are not embedded.
    """
    d = report if isinstance(report, AuditReport) else getattr(report, "data", report)
    if base_dir is None:  # a Report of an audit: the folder it saved its inputs in
        base_dir = getattr(report, "files_dir", None)
    if isinstance(d, dict):
        d = AuditReport.parse(d)
    if not isinstance(d, AuditReport):
        raise TypeError(f"render_html needs a report dict, got {type(d).__name__}")
    bd = Path(base_dir) if base_dir is not None else None
    profiles = Profile.list_of(d.profiles)
    title = f"auditor report — {d.verdict if d.has('verdict') else 'n/a'} — {Model.of(d.model).path or ''}"
    out = ['<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
           '<meta name="viewport" content="width=device-width, initial-scale=1">'
           f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"]
    out.append(_safe(_header, d))
    out.append(_safe(_warnings, d))
    out.append(_safe(_checks, d))
    tables = _safe(_energy_table, d) + _safe(_robust_tables, d)
    if len(profiles) > 1:
        out.append("<nav>profiles: " + "".join(f'<a href="#profile-{i}">{_e(p.name if p.has("name") else i)}</a>'
                                               for i, p in enumerate(profiles))
                   + ('<a href="#attacks">attack tables</a>' if tables else "") + "</nav>")
    for i, p in enumerate(profiles):
        out.append(_safe(_profile, p, i, bd))
    if tables:
        out.append(f'<section id="attacks"><h2>Attack details</h2>{tables}</section>')
    extra = {k: v for k, v in d.extra().items() if v is not None}
    if extra:
        out.append('<section id="other"><h2>Other report fields</h2>'
                   + "".join(_safe(_generic, k, v) for k, v in extra.items()) + "</section>")
    if isinstance(d.scenario, ScenarioEcho):
        out.append("<details><summary>scenario (as run)</summary>" + _safe(_kv_table, d.scenario.to_dict()) + "</details>")
    tool = Tool.of(d.tool)
    out.append(f"<footer>generated by {_e(tool.name if tool.has('name') else 'auditor')} "
               f"{_e(tool.version if tool.has('version') else '')}; report schema {_e(d.schema_version)}</footer>")
    out.append("</body></html>\n")
    return "".join(out)
