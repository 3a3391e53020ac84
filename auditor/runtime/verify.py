"""The independent check of every reported adversarial or energy-latency input.

An input an attack or a search reports is counted only when an independent forward pass (a
logits-only classifier over a plain session of the deployed model, :func:`ort_classifier`, or a
separate approximate execution, :class:`auditor.runtime.approx.ApproxLogits`) gives the adversarial
class and the input respects the pixel range and the ε-ball.  Both constraints are checked
with the one pixel-range and the one ε-ball tolerance of :mod:`auditor.norms`
(:func:`~auditor.norms.within_bounds`, :func:`~auditor.norms.within_eps`), which the attacks'
own checks use too.
"""

from __future__ import annotations

import numpy as np

from ..errors import AuditorError
from ..model.load import as_model
from ..model.rewrite.preprocess import to_model_input
from ..norms import (EPS_ATOL, EPS_RTOL, PIXEL_TOL, is_adversarial, within_bounds,  # noqa: F401 (re-exported)
                     within_eps)
from .classifier import Classifier
from .engine import Runner


def verified_success(verify: Classifier, x: np.ndarray, x_adv: np.ndarray, labels: np.ndarray,
                     targets: np.ndarray | None, norm: str | None = None, eps: float | None = None,
                     batch_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """(adversarial per the independent classifier ``verify`` and within the pixel range and, when
    ``norm`` and ``eps`` are given, the ε-ball; its logits)."""
    logits = np.concatenate([np.asarray(verify.logits(x_adv[i:i + batch_size]))
                             for i in range(0, len(x_adv), batch_size)])
    ok = is_adversarial(logits, labels, targets) & within_bounds(x_adv, verify.bounds)
    if norm is not None and eps is not None:
        ok &= within_eps(x_adv, x, norm, eps, verify.bounds)
    return ok, logits


class OrtLogits(Classifier):
    """Logits only, from a plain onnxruntime session over the deployed model (no instrumentation,
    no gradient graph) with the preprocessing done in numpy: an independent forward pass."""

    def __init__(self, model, preprocessing=None, bounds=None, batch_size: int = 256):
        super().__init__()
        proto = as_model(model, copy=True)
        self.runner = Runner(proto, 1, batch_size)
        self.logits_name = proto.graph.output[0].name
        self.input_shape = tuple(int(d) for d in self.runner.input_shapes[self.runner.input_name][1:])
        self.num_classes = int(self.runner.session.get_outputs()[0].shape[-1])
        self.pre = preprocessing
        if bounds is None:
            bounds = getattr(preprocessing, "bounds", (0.0, 1.0))
        self.bounds = (float(bounds[0]), float(bounds[1]))
        self.batch_size = batch_size
        if getattr(preprocessing, "layout", "NCHW") == "NHWC":  # the raw domain is NCHW
            h, w, c = self.input_shape
            self.input_shape = (c, h, w)

    def _logits(self, x):
        return self.runner.run(to_model_input(x, self.pre), [self.logits_name])[self.logits_name]

    def _value_and_grad(self, x, objective, knobs):
        raise AuditorError("the verification classifier has no gradients", where="robustness")


def ort_classifier(model, preprocessing=None, bounds=None) -> Classifier:
    """A logits-only Classifier over a plain onnxruntime session of ``model`` (path or proto), for
    re-verifying adversarial examples independently of the attacked (instrumented, gradient)
    sessions.  ``preprocessing``: None, ``(mean, std)``, a callable, or an object with ``apply``
    and ``bounds`` (:class:`auditor.model.rewrite.preprocess.Preprocessing`)."""
    return OrtLogits(model, preprocessing, bounds)
