"""auditor: pre-deployment audit of embedded CNN inference (latency, energy, robustness)."""

from .version import __version__  # noqa: F401  (the public version attribute)


def _user_cache_dir() -> str:
    """The platform's per-user cache folder for auditor (XDG on Linux, Caches on macOS, LOCALAPPDATA)."""
    import os
    import sys

    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or os.path.expanduser("~\\AppData\\Local")
    elif sys.platform == "darwin":
        base = os.path.expanduser("~/Library/Caches")
    else:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(base, "auditor")


def _numba_cache() -> None:
    """Compiled numba kernels go to a user cache folder (reused by every checkout and CI run)
    unless NUMBA_CACHE_DIR is set; must run before numba is imported."""
    import os

    if os.environ.get("NUMBA_CACHE_DIR"):
        return
    d = os.path.join(_user_cache_dir(), "numba")
    try:
        os.makedirs(d, exist_ok=True)
    except OSError:
        return  # not writable: numba's default (next to the sources)
    os.environ["NUMBA_CACHE_DIR"] = d


_numba_cache()


def audit(model, profile, scenario, **options):
    """Python API mirroring ``auditor audit``: returns a :class:`auditor.report.core.Report`.

    ``model``: path or onnx.ModelProto; ``profile``: a path, a HardwareProfile, or a list of them;
    ``scenario``: a path or a Scenario.  Options: seed, threads, save_dir, baseline, max_seconds,
    jobs (local processes), ray ("local" or a cluster address).
    """
    import difflib
    import inspect

    from .pipeline.run import run_audit

    accepted = [k for k in inspect.signature(run_audit).parameters if k not in ("model", "profiles", "scenario")]
    for k in options:
        if k not in accepted:
            close = difflib.get_close_matches(k, accepted, n=1)
            raise TypeError(f"auditor.audit() got an unexpected keyword argument {k!r}"
                            + (f"; did you mean {close[0]!r}?" if close else "") + f" (accepted: {', '.join(accepted)})")
    profiles = list(profile) if isinstance(profile, (list, tuple)) else [profile]
    return run_audit(model, profiles, scenario, **options)
