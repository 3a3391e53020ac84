"""The one verifier: one pixel-range tolerance and one ε-ball tolerance for every check."""

from __future__ import annotations

import numpy as np

from auditor.runtime import verify
from auditor.runtime.classifier import Classifier
from auditor.runtime.verify import EPS_ATOL, EPS_RTOL, PIXEL_TOL, verified_success, within_bounds, within_eps


class Sign(Classifier):
    """Class 1 when the first pixel exceeds 0.5 (an analytic model for the verifier)."""

    input_shape, num_classes = (4,), 2

    def __init__(self, bounds=(0.0, 1.0)):
        super().__init__()
        self.bounds = bounds

    def _logits(self, x):
        return np.stack([0.5 - x[:, 0], x[:, 0] - 0.5], axis=1)

    def _value_and_grad(self, x, objective, knobs):
        raise NotImplementedError


def test_pixel_range_tolerance_scales_with_a_wide_range():
    x = np.full((3, 4), 0.5, np.float32)
    x[1, 0], x[2, 0] = 1 + 0.5 * PIXEL_TOL, 1 + 2 * PIXEL_TOL
    np.testing.assert_array_equal(within_bounds(x, (0.0, 1.0)), [True, True, False])
    y = np.full((2, 4), 100.0)
    y[0, 0], y[1, 0] = 255 + 200 * PIXEL_TOL, 255 + 300 * PIXEL_TOL  # x 255 on a 0..255 range
    np.testing.assert_array_equal(within_bounds(y, (0.0, 255.0)), [True, False])


def test_eps_ball_tolerance_for_every_norm():
    x = np.zeros((2, 4))
    eps = 0.3
    inside, outside = eps * (1 + EPS_RTOL) + 0.5 * EPS_ATOL, eps * (1 + EPS_RTOL) + 2 * EPS_ATOL
    for norm in ("linf", "l2"):
        d = np.zeros((2, 4))
        d[0, 0], d[1, 0] = inside, outside
        np.testing.assert_array_equal(within_eps(x + d, x, norm, eps), [True, False])


def test_verified_success_applies_both_tolerances_and_the_independent_forward():
    clf = Sign()
    x = np.full((4, 4), 0.2, np.float32)
    adv = x.copy()
    adv[:, 0] = [0.2 + 0.3, 0.9, 0.9, 0.9]  # not adversarial (0.5 is class 0), then adversarial
    adv[2, 1] = 1 + 2 * PIXEL_TOL  # outside the pixel range
    ok, logits = verified_success(clf, x, adv, np.zeros(4, np.int64), None, "linf", 0.7)
    np.testing.assert_array_equal(ok, [False, True, False, True])
    ok, _ = verified_success(clf, x, adv, np.zeros(4, np.int64), None, "linf", 0.6)
    np.testing.assert_array_equal(ok, [False, False, False, False])  # 0.7 > 0.6 * (1 + 1e-5) + 1e-6
    assert logits.shape == (4, 2)


def test_the_attacks_and_the_pipeline_use_the_verifier_tolerances():
    """No module of the attacks or the pipeline spells its own ε-ball or pixel-range slack."""
    import inspect

    from auditor.attacks import base as attacks_base
    from auditor.attacks.energy import base as energy_base
    from auditor.attacks.evasion import base as evasion_base
    from auditor.pipeline import approx, energy, robustness

    for mod in (attacks_base, energy_base, evasion_base, approx, energy, robustness):
        src = inspect.getsource(mod)
        for slack in ("(1 + 1e-4)", "(1 + 1e-5)", "(1 + 1e-6)", "hi + 1e-", "hi + tol", "lo - tol"):
            assert slack not in src, (mod.__name__, slack)
    assert evasion_base.within_eps is verify.within_eps and attacks_base.within_bounds is verify.within_bounds
