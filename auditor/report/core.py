"""The audit report: a JSON-able dict with a verdict, loaded and checked, rendered through the
format registry (:mod:`auditor.report.formats`)."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import AuditorError
from ..files import read_bytes
from .formats import FORMATS, suffix_formats
from .html import render_summary_html
from .records import SCHEMA_VERSION, AuditReport, check_report, check_status, render_json, verdict_of  # noqa: F401 - SCHEMA_VERSION, verdict_of: for the pipeline
from .text import render_text  # noqa: F401 - part of this module's interface

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

#: output file suffix -> report format (``-o report.html``), from the format registry
SUFFIX_FORMATS = suffix_formats()


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
        return render_summary_html(self.data)

    def to_json(self) -> str:
        return render_json(self.data)

    def render(self, fmt: str, base_dir=None, *, color: bool = False) -> str:
        """The report in a registered format: text, json, junit, markdown or html (``base_dir``:
        where relative paths of saved worst inputs are looked up for html; ``color``: ANSI
        PASS/FAIL in text)."""
        return FORMATS.get(fmt).render(self.records, base_dir=base_dir if base_dir is not None else self.files_dir,
                                       color=color)

    @classmethod
    def load(cls, path: str | Path) -> "Report":
        """Read a JSON report written by ``auditor audit --format json``; anything else (not
        JSON, nested absurdly deep, another schema version, keys missing or of the wrong type)
        is one AuditorError naming the file and what is wrong."""
        raw = read_bytes(path, "report file", MAX_REPORT_BYTES)
        try:
            data = json.loads(raw.decode("utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise AuditorError(f"not a JSON report ({e.__class__.__name__}: {str(e)[:120]})", where=str(path)) from None
        except RecursionError:
            raise AuditorError("not an auditor report: JSON nested too deeply", where=str(path)) from None
        return cls.from_dict(data, str(path))

    @classmethod
    def from_dict(cls, data, where: str = "report") -> "Report":
        """A report from loaded JSON data, checked against the fields its records mark ``check``
        (:func:`~auditor.report.records.check_report`; AuditorError naming ``where`` and what
        is wrong); :attr:`records` are its sections parsed."""
        problem = check_report(data)
        if problem:
            raise AuditorError(f"not an auditor report: {problem}", where=where)
        return cls(data)

    #: the former name of :meth:`from_dict`
    checked = from_dict

    @property
    def records(self) -> AuditReport:
        """The report as typed section records (read from :attr:`data` at each access)."""
        return AuditReport.parse(self.data)

    def to_dict(self) -> dict:
        """The report dict written back from its records: equal to :attr:`data`, key order included."""
        return self.records.to_dict()


#: the largest report file read
MAX_REPORT_BYTES = 64 << 20
