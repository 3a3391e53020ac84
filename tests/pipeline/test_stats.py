"""The one home of the report's sample statistics (pipeline/stats.py) and of density (norms.density)."""

import numpy as np
import pytest

from auditor.errors import AuditorError
from auditor.norms import density
from auditor.pipeline.stats import perturbation_summary, sample_stats, summary


def test_sample_stats_short_and_with_spread():
    v = np.arange(1.0, 101.0)
    assert sample_stats(v) == {"mean": 50.5, "worst": 100.0}
    assert sample_stats(v, spread=True) == {"mean": 50.5, "worst": 100.0, "min": 1.0, "p50": 50.5, "p95": 95.05}
    assert list(sample_stats(v, spread=True)) == ["mean", "worst", "min", "p50", "p95"]
    assert sample_stats([]) == {"mean": None, "worst": None}
    assert sample_stats([], spread=True) == dict.fromkeys(("mean", "worst", "min", "p50", "p95"))


def test_summary_counts_infinite_values_apart():
    s = summary([1.0, 3.0, np.inf])
    assert s["count"] == 3 and s["n_infinite"] == 1 and s["mean"] == 2.0
    assert s["quantiles"]["0"] == 1.0 and s["quantiles"]["1"] == 3.0
    assert summary([np.inf])["mean"] is None


def test_perturbation_summary_over_the_mask():
    x = np.zeros((3, 1, 2, 2), np.float32)
    adv = x.copy()
    adv[0, 0, 0, 0] = 0.5
    adv[2] = 0.25
    st = perturbation_summary(adv, x, np.array([True, False, False]), 1.0)
    assert st["l0"]["mean"] == 1.0 and st["linf"]["mean"] == 0.5 and st["l2"]["count"] == 1
    none = perturbation_summary(adv, x, np.zeros(3, bool), 1.0)
    assert all(none[k]["count"] == 0 and none[k]["mean"] is None for k in ("l0", "l2", "linf", "mse", "psnr"))


def test_density_of_a_tensor_and_of_a_mapping_agree():
    a = np.array([[0, 1, 2, 0], [0, 0, 0, 3]], np.float32)
    b = np.array([[1, 1], [0, 0]], np.float32)
    np.testing.assert_array_equal(density(a), [0.5, 0.25])
    np.testing.assert_array_equal(density({"a": a}), density(a))
    np.testing.assert_array_equal(density({"a": a, "b": b}), [4 / 6, 1 / 6])
    np.testing.assert_array_equal(density({"a": a, "b": b}, [0, 1]), density(b))
    np.testing.assert_array_equal(density(np.zeros((2, 0))), [0.0, 0.0])
    with pytest.raises(AuditorError, match="no activations"):
        density({})
