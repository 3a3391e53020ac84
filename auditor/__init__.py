"""auditor: pre-deployment audit of embedded CNN inference (latency, energy, robustness)."""

__version__ = "0.1.0"


def audit(model, profile, scenario, **options):
    """Python API mirroring ``auditor audit``: returns a :class:`auditor.report.Report`.

    ``model``: path or onnx.ModelProto; ``profile``: a path, a HardwareProfile, or a list of them;
    ``scenario``: a path or a Scenario.  Options: seed, threads, save_dir, baseline, max_seconds,
    jobs (local processes), ray ("local" or a cluster address).
    """
    from .pipeline import run_audit

    profiles = list(profile) if isinstance(profile, (list, tuple)) else [profile]
    return run_audit(model, profiles, scenario, **options)
