"""The report formats: one :class:`~auditor.registry.Registry` of renderers, read by
``Report.render``, by the CLI for ``--format`` and for the format of each ``-o`` suffix.

A renderer is ``render(report, *, base_dir=None, color=False) -> str`` over the report's typed
records (:class:`~auditor.report.records.AuditReport`; the options a format has no use for it
ignores).  Adding a format: its module next to this one, one
``FORMATS.add`` line below, and the contract test (``tests/report/test_formats.py``) runs it over
every section of the report.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..registry import Registry
from .html import render_html
from .junit import render_junit
from .markdown import render_markdown
from .records import render_json
from .text import render_text


@dataclass(frozen=True)
class Format:
    name: str
    #: ``render(report: AuditReport, *, base_dir=None, color=False) -> str``
    render: Callable[..., str]
    #: output file suffixes (``-o report.html``) that mean this format; the first is its usual one
    suffixes: tuple[str, ...]
    description: str


FORMATS: Registry[Format] = Registry("format")


def _add(name: str, render: Callable[..., str], suffixes: tuple[str, ...], description: str) -> None:
    FORMATS.add(name, Format(name, render, suffixes, description))


_add("text", render_text, (".txt",), "readable report for an 80-column terminal (ANSI colour on a terminal)")
_add("json", render_json, (".json",), "the full report, the input of render, diff and --baseline")
_add("junit", render_junit, (".xml",), "JUnit XML for CI: a testsuite per profile, a testcase per check")
_add("markdown", render_markdown, (".md", ".markdown"), "summary for a pull-request comment")
_add("html", render_html, (".html", ".htm"), "self-contained page with plots (inline CSS, base64 PNG)")


def suffix_formats() -> dict[str, str]:
    """Output file suffix -> format name, over every registered format."""
    return {s: f.name for f in FORMATS.values() for s in f.suffixes}


def format_of(path: str | Path) -> str | None:
    """The format an output file's suffix names (None when none does)."""
    return suffix_formats().get(Path(path).suffix.lower())


def usual_suffixes() -> list[str]:
    """Each format's usual suffix, for messages (``.txt .json .xml .md .html``)."""
    return [f.suffixes[0] for f in FORMATS.values()]
