"""Number and unit formatting shared by every rendering of the report (text, Markdown, JUnit,
HTML) and by ``auditor diff``: one place, so the formats print the same figure the same way."""

from __future__ import annotations

import math


def si(v: float | None, unit: str) -> str:
    """``v`` with an SI prefix and 3 significant digits (``4.14 ms``); None is ``n/a``."""
    if v is None:
        return "n/a"
    if v == 0:
        return f"0 {unit}"
    for f, p in ((1e-12, "p"), (1e-9, "n"), (1e-6, "u"), (1e-3, "m"), (1.0, ""), (1e3, "k")):
        if abs(v) < f * 1000:
            return f"{v / f:.3g} {p}{unit}"
    return f"{v:.3g} {unit}"


def fmt_num(v) -> str:
    """A number as the reports print it: 4 significant digits, scientific below 1e-3 and from 1e6."""
    if v is None:
        return "n/a"
    if isinstance(v, float):
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e6):
            return f"{v:.3e}"
        return f"{v:.4g}"
    return str(v)


def short(name: str, width: int) -> str:
    """``name`` cut from the left to ``width`` characters (``…`` marks the cut)."""
    return name if len(name) <= width else "…" + name[-(width - 1):]


def num(v) -> float | None:
    """A report value as a float (the JSON spellings ``"inf"``/``"-inf"`` included); None when it is none."""
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str) and v.strip().lower() in ("inf", "-inf", "+inf", "nan"):
        return float(v.strip().lower())
    return None


def pct(v, digits: int = 1) -> str:
    """A fraction as a percentage (``n/a`` for anything that is not a finite number)."""
    f = num(v)
    return "n/a" if f is None or not math.isfinite(f) else f"{100 * f:.{digits}f}%"


def fmt(v) -> str:
    """Any report value as text: numbers as :func:`fmt_num`, infinities spelt out, containers ``n/a``."""
    f = num(v)
    if f is None:
        return "n/a" if v is None or isinstance(v, (dict, list)) else str(v)
    if not math.isfinite(f):
        return "inf" if f > 0 else "-inf" if f < 0 else "n/a"
    return fmt_num(v)


def si_or_na(v, unit: str) -> str:
    """:func:`si` of any report value (``n/a`` for one that is not a finite number)."""
    f = num(v)
    return "n/a" if f is None or not math.isfinite(f) else si(f, unit)
