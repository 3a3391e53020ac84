"""What a hardware profile deploys, as the units of an audit share it in a worker: the model
reshaped as the profile declares, run on its approximate multiplier when it has one, a fresh
session over the same deployed model (the independent forward pass of every check) and the cost
model; the deadline a unit puts on them."""

from __future__ import annotations

import dataclasses

from ..hw.profile import HardwareProfile
from ..model.rewrite.quantize import quantize_model
from ..model.rewrite.reshape import apply_reshaping
from ..runtime.approx import ApproxClassifier
from ..runtime.session import OnnxClassifier
from .units import AuditContext, cached


def reshape_model(proto, r, calibration=None, preprocessing=None):
    """Apply a profile's `reshape:` section (HashNet first, then gradient inhibition, then k-bit
    quantisation, its activation scales calibrated on ``calibration``: the scenario's clean data)."""
    spec = {}
    if r.hashnet_ratio is not None:
        spec["hashnet"] = {"ratio": r.hashnet_ratio, "layers": r.hashnet_layers, "seed": r.seed}
    if r.gradient_inhibition_tau is not None:
        spec["gradient_inhibition"] = {"tau": r.gradient_inhibition_tau, "layers": r.gradient_inhibition_layers}
    m = apply_reshaping(proto, spec)
    if r.quantize_bits is not None:
        m = quantize_model(m, r.quantize_bits, activations=r.quantize_activations, per_channel=r.quantize_per_channel,
                           calibration=calibration, preprocessing=preprocessing)
    return m


def profile_classifier(proto, profile: HardwareProfile, sc, threads: int = 0, calibration=None, role: str = "search"):
    """The classifier a profile deploys: the model, reshaped as the profile declares, run on the
    profile's approximate multiplier when it has one (BPDA gradients).  ``role``: "verify" for a
    verifier (sessions of its own, see :class:`~auditor.runtime.session.OnnxClassifier`; an
    approximate classifier's sessions are always its own)."""
    m = reshape_model(proto, profile.reshape, calibration, sc.preprocessing) if profile.reshape is not None else proto
    if profile.approx is not None:
        return ApproxClassifier(m, sc.preprocessing, profile.approx, threads=threads, batch_size=sc.batch_size)
    return OnnxClassifier(m, sc.preprocessing, threads=threads, batch_size=sc.batch_size, role=role)


class Deployed:
    """One profile's deployed classifier, its verifier (built on first use) and cost model."""

    def __init__(self, ctx: AuditContext, p: int):
        self.ctx, self.prof = ctx, ctx.profiles[p]
        self.clf = profile_classifier(ctx.proto, self.prof, ctx.scenario, ctx.threads, calibration=ctx.data.x)
        self.cm = self.prof.build_cost_model()
        self._verifier = None

    @property
    def verifier(self):
        if self._verifier is None:
            self._verifier = profile_classifier(self.clf.base_model, dataclasses.replace(self.prof, reshape=None),
                                                self.ctx.scenario, self.ctx.threads, role="verify")
        return self._verifier


def deployed(ctx: AuditContext, p: int) -> Deployed:
    """Profile ``p`` as deployed in this worker (built once per worker and audit)."""
    return cached(ctx, ("profile", p), lambda: Deployed(ctx, p))


class budget:
    """The deadline on a classifier for the duration of a unit."""

    def __init__(self, clf, deadline):
        self.clf, self.deadline = clf, deadline

    def __enter__(self):
        self.clf.deadline = self.deadline

    def __exit__(self, *exc):
        self.clf.deadline = None
