"""Command-line interface.  Exit codes: 0 all checks pass, 1 a check fails, 2 bad input or usage,
3 an internal error (a bug: please report it, with ``--debug`` for the traceback)."""

from __future__ import annotations

import functools
import os
import sys
import time

#: when the command started (set for every invocation): --max-seconds counts from here, so the
#: imports of onnx/onnxruntime/numba, model loading and the report are part of the budget
_STARTED = time.monotonic()
from pathlib import Path

import click

from . import __version__
from .errors import AuditorError

EXIT_PASS, EXIT_FAIL, EXIT_BAD_INPUT, EXIT_INTERNAL = 0, 1, 2, 3


def _guard(fn):
    """Turn AuditorError into `error: ...` + exit 2, and crashes into one line + exit 3.

    Python warnings raised while the command runs (PIL, numpy) are held back: on an error only
    the error line reaches stderr; on success each is printed as one `warning:` line."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import warnings

        from .errors import one_line

        with warnings.catch_warnings(record=True) as caught:
            try:
                out = fn(*args, **kwargs)
            except AuditorError as e:
                click.echo(f"error: {e}", err=True)
                sys.exit(EXIT_BAD_INPUT)
            except (click.exceptions.Exit, click.ClickException, SystemExit, KeyboardInterrupt):
                _echo_warnings(caught)
                raise
            except Exception as e:  # a bug, not bad input
                if os.environ.get("AUDITOR_DEBUG"):
                    raise
                click.echo(one_line(f"internal error: {e.__class__.__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                                    " (set AUDITOR_DEBUG=1 for the traceback)"), err=True)
                sys.exit(EXIT_INTERNAL)
        _echo_warnings(caught)
        return out
    return wrapper


def _echo_warnings(caught) -> None:
    from .errors import one_line

    seen = set()
    for w in caught:
        msg = one_line(f"warning: {w.message}", 300)
        if msg not in seen:
            seen.add(msg)
            click.echo(msg, err=True)


def _write_output(text: str, output: str | None, force: bool) -> None:
    if output is None:
        click.echo(text, nl=False)
        return
    from .files import write_text

    write_text(output, text, force)


def _finite_or_none(ctx, param, value):
    import math

    if value is not None and math.isnan(value):
        raise click.BadParameter("must be a number of seconds, not nan")
    return value


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="auditor")
def main():
    """Audit an ONNX image classifier on a hardware model before it ships: worst-case latency,
    energy and adversarial robustness, with a pass/fail verdict."""
    global _STARTED
    _STARTED = time.monotonic()


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--input-size", nargs=2, type=click.IntRange(min=1), default=None, metavar="H W",
              help="fix the input's height and width (a model exported with dynamic spatial dimensions)")
@click.option("--layout", type=click.Choice(["NCHW", "NHWC"]), default="NCHW", show_default=True,
              help="layout of the model's input (where --input-size puts H and W)")
@_guard
def inspect(model, fmt, input_size, layout):
    """Show the layers of MODEL: op, shapes, MACs, which activation feeds which compute layer,
    op support and differentiability."""
    import json

    from .inspect import inspect_model, render_inspect

    info = inspect_model(model, input_size=list(input_size) if input_size else None, layout=layout)
    click.echo(json.dumps(info, indent=2) if fmt == "json" else render_inspect(info), nl=fmt == "json")


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--hw", "profiles", multiple=True, required=True, type=click.Path(dir_okay=False),
              help="hardware profile YAML (repeat for several)")
@click.option("--scenario", required=True, type=click.Path(dir_okay=False), help="scenario YAML")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "junit", "markdown", "html"]), default="text",
              show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="write the report here instead of stdout")
@click.option("--force", is_flag=True, help="overwrite --output (and saved inputs) if they exist")
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=None, help="override the scenario's seed")
@click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True,
              help="onnxruntime threads (0 = all cores; more than the cores are capped at the cores)")
@click.option("--save-inputs", type=click.Path(file_okay=False), default=None,
              help="folder to save the worst input of each search (.npy and .png)")
@click.option("--baseline", type=click.Path(dir_okay=False), default=None,
              help="previous JSON report: add the scenario's regression checks against it")
@click.option("--max-seconds", type=click.FloatRange(min=0), default=None, callback=_finite_or_none,
              help="time budget of the whole audit; searches still running are stopped and reported as cut short")
@click.option("--jobs", "-j", type=click.IntRange(min=1), default=1, show_default=True,
              help="run the audit's units of work (chunks of inputs per profile and search) on this many local processes")
@click.option("--ray", "ray_address", is_flag=False, flag_value="local", default=None, envvar="AUDITOR_RAY_ADDRESS",
              metavar="[ADDRESS]", help="run the units as tasks on a Ray cluster: ADDRESS (HOST:PORT, ray://HOST:PORT, "
              "auto) or, without one, a local cluster (with --jobs CPUs); also AUDITOR_RAY_ADDRESS")
@_guard
def audit(model, profiles, scenario, fmt, output, force, seed, threads, save_inputs, baseline, max_seconds, jobs,
          ray_address):
    """Audit MODEL on each hardware profile under SCENARIO and print the verdict.

    Exit code 0 when every check passes, 1 when one fails, 2 on bad input."""
    from .pipeline import run_audit

    if output:
        from .files import check_output

        check_output(output, force)
    threads = min(threads, os.cpu_count() or 1)
    report = run_audit(model, list(profiles), scenario, seed=seed, threads=threads, save_dir=save_inputs, force=force,
                       baseline=baseline, max_seconds=max_seconds, jobs=jobs, ray=ray_address or None,
                       started_at=_STARTED)
    _write_output(report.render(fmt), output, force)
    if output:
        click.echo(f"verdict: {report.verdict} (report written to {output})", err=True)
    sys.exit(EXIT_PASS if report.passed else EXIT_FAIL)


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--kind", type=click.Choice(["auto", "scenario", "hwprofile"]), default="auto", show_default=True)
@_guard
def validate(files, kind):
    """Check hardware profile or scenario YAML FILES against their schema."""
    from .validate import validate_file

    for f in files:
        what = validate_file(f, kind)
        click.echo(f"{f}: valid {what}")


@main.command()
@click.argument("report_file", type=click.Path(dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["text", "json", "junit", "markdown", "html"]), default="text",
              show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="write here instead of stdout")
@click.option("--force", is_flag=True, help="overwrite --output if it exists")
@_guard
def render(report_file, fmt, output, force):
    """Render a saved JSON report in another format (audit once, publish many ways).
    Exit code 0 if its verdict is PASS, 1 if FAIL."""
    from .report import Report

    rep = Report.load(report_file)
    _write_output(rep.render(fmt, base_dir=Path(report_file).resolve().parent), output, force)
    sys.exit(EXIT_PASS if rep.passed else EXIT_FAIL)


@main.command()
@click.argument("old", type=click.Path(dir_okay=False))
@click.argument("new", type=click.Path(dir_okay=False))
@_guard
def diff(old, new):
    """Print what changed between two JSON reports (exit 0; 1 if NEW's verdict is FAIL)."""
    from .baseline import diff as diff_reports
    from .report import Report

    a, b = Report.load(old), Report.load(new)
    lines = diff_reports(a.data, b.data)
    click.echo("\n".join(lines) if lines else "no differences (apart from timing)")
    sys.exit(EXIT_PASS if b.passed else EXIT_FAIL)


@main.command()
@click.argument("kind", type=click.Choice(["scenario", "hwprofile"]))
@click.option("--cost-model", default=None, help="hwprofile: include the params of this cost model")
@_guard
def schema(kind, cost_model):
    """Print the JSON Schema of a scenario or hardware profile (for editor completion)."""
    import json

    from .docs import schema_for

    click.echo(json.dumps(schema_for(kind, cost_model), indent=2))


@main.command()
@click.argument("path", type=click.Path(dir_okay=False), default="scenario.yaml")
@click.option("--profile", default=None, help="name of a hardware profile the scenario is meant for (adds a comment)")
@click.option("--force", is_flag=True, help="overwrite PATH if it exists")
@_guard
def init(path, profile, force):
    """Write a commented starter scenario to PATH (default scenario.yaml)."""
    from .docs import starter_scenario

    _write_output(starter_scenario(profile), path, force)
    click.echo(f"wrote {path}; check it with: auditor validate {path}", err=True)


if __name__ == "__main__":
    main()
