"""Command-line interface.  Exit codes: 0 all checks pass, 1 a check fails, 2 bad input or usage,
3 an internal error (a bug: please report it, with AUDITOR_DEBUG=1 for the traceback), 4 the audit
was cut short by its time budget (--max-seconds) before every check could be decided, 130
interrupted (Ctrl-C)."""

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

from .version import __version__
from .errors import AuditorError
from .report.formats import FORMATS as _FORMATS
from .report.formats import format_of, usual_suffixes

EXIT_PASS, EXIT_FAIL, EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_INCOMPLETE, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130
#: the --format choices: every registered report format
FORMATS = _FORMATS.names()


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
            except KeyboardInterrupt:
                click.echo("\ninterrupted", err=True)
                sys.exit(EXIT_INTERRUPTED)
            except (click.exceptions.Exit, click.ClickException, SystemExit):
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


def _plan_outputs(outputs: tuple[str, ...], fmt: str | None, force: bool) -> list[tuple[str | None, str]]:
    """[(path or None for stdout, format)]: each -o's format from its suffix (.html .json .xml .md
    .txt: the format registry's), else --format; no -o: stdout in --format (default text).
    Checked before any work."""
    from .files import check_output

    if not outputs:
        return [(None, fmt or "text")]
    plan = []
    for o in outputs:
        by_suffix = format_of(o)
        if fmt and len(outputs) == 1:
            f = fmt
        elif by_suffix:
            f = by_suffix
        elif fmt:
            f = fmt
        else:
            raise AuditorError(f"cannot tell the format of '{o}' from its suffix (use {' '.join(usual_suffixes())}, "
                               "or --format)", where=o)
        check_output(o, force)
        plan.append((o, f))
    if len({Path(o).resolve() for o, _ in plan}) != len(plan):
        raise AuditorError("the same output file is given twice", where=", ".join(outputs))
    return plan


def _color(stream=None) -> bool:
    """ANSI colour on a terminal, unless NO_COLOR is set (https://no-color.org) or TERM=dumb."""
    stream = stream or sys.stdout
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _publish(rep, plan, force: bool, base_dir=None) -> None:
    for path, f in plan:
        text = rep.render(f, base_dir=base_dir, color=path is None and f == "text" and _color())
        _write_output(text, path, force)


def _verbosity(quiet: bool, verbose: bool) -> None:
    from . import progress

    if quiet and verbose:
        raise click.UsageError("-q/--quiet and -v/--verbose exclude each other")
    progress.configure(quiet=quiet, verbose=verbose)


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

    from .model.inspect import inspect_model, render_inspect
    from .runtime.engine import return_freed_memory

    return_freed_memory()

    info = inspect_model(model, input_size=list(input_size) if input_size else None, layout=layout)
    click.echo(json.dumps(info, indent=2) if fmt == "json" else render_inspect(info), nl=fmt == "json")


_quiet = click.option("--quiet", "-q", is_flag=True, help="no progress bars and no summary line on stderr")
_verbose = click.option("--verbose", "-v", is_flag=True, help="log each unit of work and its duration on stderr")


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--hw", "profiles", multiple=True, required=True, type=click.Path(dir_okay=False),
              help="hardware profile YAML (repeat for several)")
@click.option("--scenario", required=True, type=click.Path(dir_okay=False), help="scenario YAML")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=None,
              help="report format on stdout (default text), or of a single --output whatever its suffix")
@click.option("--output", "-o", "outputs", multiple=True, type=click.Path(dir_okay=False),
              help="write the report here instead of stdout, in the format of its suffix (.html .json .xml .md "
                   ".txt); repeat for several formats from one audit")
@click.option("--force", is_flag=True, help="overwrite --output (and saved inputs) if they exist")
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=None, help="override the scenario's seed")
@click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True,
              help="onnxruntime threads (0 = all cores; more than the cores are capped at the cores)")
@click.option("--save-inputs", type=click.Path(file_okay=False), default=None,
              help="folder for the evidence: the worst input of each search and the adversarial examples of each "
                   "evasion attack (.npy and .png)")
@click.option("--baseline", type=click.Path(dir_okay=False), default=None,
              help="previous JSON report: add the scenario's regression checks against it")
@click.option("--max-seconds", type=click.FloatRange(min=0), default=None, callback=_finite_or_none,
              help="time budget of the whole audit; searches still running are stopped, checks they decide are "
                   "'not decided' (exit 4)")
@click.option("--jobs", "-j", type=click.IntRange(min=1), default=1, show_default=True,
              help="run the audit's units of work (chunks of inputs per profile and search) on this many local processes")
@click.option("--ray", "ray_address", is_flag=False, flag_value="local", default=None, envvar="AUDITOR_RAY_ADDRESS",
              metavar="[ADDRESS]", help="run the units as tasks on a Ray cluster: ADDRESS (HOST:PORT, ray://HOST:PORT, "
              "auto) or, without one, a local cluster (with --jobs CPUs); also AUDITOR_RAY_ADDRESS")
@_quiet
@_verbose
@_guard
def audit(model, profiles, scenario, fmt, outputs, force, seed, threads, save_inputs, baseline, max_seconds, jobs,
          ray_address, quiet, verbose):
    """Audit MODEL on each hardware profile under SCENARIO and print the verdict.

    Exit code 0 when every check passes, 1 when one fails, 2 on bad input, 3 on an internal error,
    4 when --max-seconds cut the audit short before every check was decided, 130 on Ctrl-C."""
    _verbosity(quiet, verbose)
    plan = _plan_outputs(outputs, fmt, force)
    from .pipeline.run import run_audit

    threads = min(threads, os.cpu_count() or 1)
    report = run_audit(model, list(profiles), scenario, seed=seed, threads=threads, save_dir=save_inputs, force=force,
                       baseline=baseline, max_seconds=max_seconds, jobs=jobs, ray=ray_address or None,
                       started_at=_STARTED, return_memory=True)
    _publish(report, plan, force)
    if outputs and not quiet:
        for w in report.data.get("warnings") or []:
            click.echo(f"warning: {w['message']}", err=True)
        click.echo(f"verdict: {report.verdict} (report written to {', '.join(outputs)})", err=True)
    sys.exit(report.exit_code)


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--kind", type=click.Choice(["auto", "scenario", "hwprofile"]), default="auto", show_default=True)
@_guard
def validate(files, kind):
    """Check hardware profile or scenario YAML FILES against their schema."""
    from .validate import validate_file

    for f in files:
        what = validate_file(f, kind, warn=lambda w: click.echo(w, err=True))
        click.echo(f"{f}: valid {what}")


@main.command()
@click.argument("report_file", type=click.Path(dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=None,
              help="format on stdout (default text), or of a single --output whatever its suffix")
@click.option("--output", "-o", "outputs", multiple=True, type=click.Path(dir_okay=False),
              help="write here instead of stdout, in the format of its suffix; repeat for several")
@click.option("--force", is_flag=True, help="overwrite --output if it exists")
@_guard
def render(report_file, fmt, outputs, force):
    """Render a saved JSON report in other formats (audit once, publish many ways).
    Exit code: the report's verdict (0 PASS, 1 FAIL, 4 INCOMPLETE)."""
    from .report.core import Report

    plan = _plan_outputs(outputs, fmt, force)
    rep = Report.load(report_file)
    _publish(rep, plan, force, base_dir=Path(report_file).resolve().parent)
    sys.exit(rep.exit_code)


@main.command()
@click.argument("old", type=click.Path(dir_okay=False))
@click.argument("new", type=click.Path(dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["text", "markdown"]), default="text", show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="write here instead of stdout")
@click.option("--force", is_flag=True, help="overwrite --output if it exists")
@_guard
def diff(old, new, fmt, output, force):
    """What changed between two JSON reports, with units (exit code: NEW's verdict, 0/1/4)."""
    from .pipeline.baseline import diff_markdown, diff_text
    from .report.core import Report

    a, b = Report.load(old), Report.load(new)
    text = diff_markdown(a.data, b.data) if fmt == "markdown" else diff_text(a.data, b.data)
    _write_output(text, output, force)
    sys.exit(b.exit_code)


@main.command("list")
@click.argument("what", type=click.Choice(["attacks", "searches", "defences", "cost-models"]))
@click.argument("name", required=False)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@_guard
def list_(what, name, fmt):
    """List the evasion attacks, energy-latency searches, defences or cost models, each with its
    parameters (default, meaning) and source paper; NAME shows one."""
    import json

    from .catalog import catalog, render_catalog

    items = catalog(what, name)
    click.echo(json.dumps(items, indent=2) if fmt == "json" else render_catalog(what, items), nl=fmt == "json")


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
@click.option("--from-model", "from_model", type=click.Path(dir_okay=False), default=None,
              help="measure MODEL on --hw with a clean run and set the thresholds from it")
@click.option("--hw", "hw", multiple=True, type=click.Path(dir_okay=False),
              help="with --from-model: hardware profile(s) to measure on")
@click.option("--count", type=click.IntRange(min=1), default=64, show_default=True,
              help="with --from-model: bundled digits inputs of the clean run")
@click.option("--margin", type=click.FloatRange(min=1.0), default=1.2, show_default=True,
              help="with --from-model: latency/energy thresholds = margin x the measured worst case")
@click.option("--force", is_flag=True, help="overwrite PATH if it exists")
@_quiet
@_guard
def init(path, profile, from_model, hw, count, margin, force, quiet):
    """Write a commented starter scenario to PATH (default scenario.yaml); with --from-model and
    --hw, thresholds come from a real clean run of the model on the profiles."""
    if from_model is None:
        if hw:
            raise click.UsageError("--hw needs --from-model")
        from .docs import starter_scenario

        _write_output(starter_scenario(profile), path, force)
    else:
        if not hw:
            raise click.UsageError("--from-model needs --hw PROFILE.yaml")
        from .files import check_output

        check_output(path, force)
        from .pipeline.starter import measured_scenario

        text = measured_scenario(from_model, list(hw), count=count, margin=margin, path=path)
        _write_output(text, path, force)
    if not quiet:
        click.echo(f"wrote {path}; check it with: auditor validate {path}", err=True)


if __name__ == "__main__":
    main()
