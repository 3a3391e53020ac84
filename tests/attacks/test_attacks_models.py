"""The analytic classifiers of tests/analytic.py: their gradients against finite differences."""

from __future__ import annotations

import numpy as np
import pytest

from analytic import LinearSoftmax, MLP, make_linear_binary, make_linear_multiclass, make_mlp, objective_and_dz  # noqa: F401

# ---------------------------------------------------------------------------------------------


def _fd_check(model, x, objective, knobs, h=1e-5):
    v, g, _ = model.value_and_grad(x, objective, **knobs)
    xf = x.astype(np.float64).reshape(len(x), -1)
    num = np.zeros_like(xf)
    for i in range(xf.shape[1]):
        e = np.zeros_like(xf)
        e[:, i] = h
        vp = model._value_and_grad((xf + e).reshape(x.shape), objective, knobs)[0]
        vm = model._value_and_grad((xf - e).reshape(x.shape), objective, knobs)[0]
        num[:, i] = (vp - vm) / (2 * h)
    np.testing.assert_allclose(g.reshape(len(x), -1), num, atol=2e-3, rtol=2e-3)


@pytest.mark.parametrize("kind", ["linear", "mlp"])
@pytest.mark.parametrize("objective", ["ce", "margin", "logit"])
def test_analytic_models_have_exact_gradients(kind, objective):
    if kind == "linear":
        model, x, y = make_linear_multiclass()
    else:
        model, x, y = make_mlp()
    x = x[:5].astype(np.float64)
    knobs = {"ce": {"target": y[:5]}, "margin": {"label": y[:5], "kappa": 1e30},
             "logit": {"index": (y[:5] + 1) % model.num_classes}}[objective]
    # the float64 path of the analytic models (the protocol casts inputs to float32)
    _fd_check(model, x, objective, knobs)
