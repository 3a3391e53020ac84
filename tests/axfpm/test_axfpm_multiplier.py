"""Ax-FPM multiplier: gate-level model, closed forms, float32 wrapper (auditor.axfpm)."""

from __future__ import annotations

import numpy as np
import pytest

from auditor.axfpm import MULTIPLIERS, multiply, multiply_bits
from auditor.axfpm import gatelevel as gl
from auditor.axfpm.multiplier import (
    TINY_ABS_BITS,
    mantissa_da,
    mantissa_flat,
    mul_f32,
    VARIANT_CODES,
)
from auditor.errors import AuditorError

N_RANDOM = 100_000


def _all_pairs(width):
    a, b = np.meshgrid(np.arange(1 << width), np.arange(1 << width), indexing="ij")
    return a.ravel(), b.ravel()


def _random_pairs(width, n=N_RANDOM, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 1 << width, n), rng.integers(0, 1 << width, n)


def _numba_vec(fn, a, b):
    # the numba scalar mantissa functions are also callable on int64 arrays via numpy semantics
    return np.array([fn(int(x), int(y)) for x, y in zip(a[:2000], b[:2000])], dtype=np.int64)


# ----------------------------------------------------------------------------------------------
# Gate level
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("width", [4, 8])
def test_exact_full_adders_give_exact_product_exhaustive(width):
    a, b = _all_pairs(width)
    assert np.array_equal(gl.array_multiply(a, b, width, gl.fa_exact), a * b)
    assert np.array_equal(gl.hierarchical_multiply(a, b, width, gl.fa_exact), a * b)


def test_exact_full_adders_give_exact_product_24bit():
    a, b = _random_pairs(24, 20_000, seed=1)
    a[:4] = [0, (1 << 24) - 1, (1 << 24) - 1, 1 << 23]
    b[:4] = [(1 << 24) - 1, (1 << 24) - 1, 0, 1 << 23]
    assert np.array_equal(gl.array_multiply(a, b, 24, gl.fa_exact), a * b)
    assert np.array_equal(gl.hierarchical_multiply(a, b, 24, gl.fa_exact), a * b)


def test_full_adder_truth_tables():
    bits = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], dtype=np.int64)
    a, b, c = bits.T
    s, co = gl.fa_exact(a, b, c)
    assert np.array_equal(s + 2 * co, a + b + c)
    s, co = gl.fa_ama5(a, b, c)
    assert np.array_equal(s, b) and np.array_equal(co, a)


def test_ama5_array_hand_example():
    # 4x4, a = 0b0110, b = 0b1011: row 0 is a0*b = 0; rows 1, 2 (a1 = a2 = 1) each pass the sum
    # through and carry out a_i & b3 = 1 into bits 5 and 6; row 3 (a3 = 0) adds nothing.
    assert int(gl.array_multiply(0b0110, 0b1011, 4, gl.fa_ama5)) == (1 << 5) + (1 << 6)
    # a = 0b0011: row 0 = b = 11, row 1 carries a1 & b3 = 1 into bit 5 -> 11 + 32
    assert int(gl.array_multiply(0b0011, 0b1011, 4, gl.fa_ama5)) == 11 + 32


@pytest.mark.parametrize("width", [4, 8])
def test_flat_closed_form_matches_gate_level_exhaustive(width):
    a, b = _all_pairs(width)
    assert np.array_equal(gl.array_multiply(a, b, width, gl.fa_ama5),
                          gl.closed_form_flat(a, b, width))


@pytest.mark.parametrize("width", [4, 8])
def test_hierarchical_closed_form_matches_gate_level_exhaustive(width):
    a, b = _all_pairs(width)
    assert np.array_equal(gl.hierarchical_multiply(a, b, width, gl.fa_ama5),
                          gl.closed_form_hierarchical(a, b, width))


def test_hierarchical_4bit_block_is_the_flat_array():
    a, b = _all_pairs(4)
    assert np.array_equal(gl.hierarchical_multiply(a, b, 4, gl.fa_ama5),
                          gl.array_multiply(a, b, 4, gl.fa_ama5))


def test_flat_closed_form_matches_gate_level_24bit_random():
    a, b = _random_pairs(24, seed=2)
    gate = gl.array_multiply(a, b, 24, gl.fa_ama5)
    assert np.array_equal(gate, gl.closed_form_flat(a, b, 24))
    assert np.array_equal(gate[:2000], _numba_vec(mantissa_flat, a, b))


def test_hierarchical_closed_form_matches_gate_level_24bit_random():
    a, b = _random_pairs(24, seed=3)
    gate = gl.hierarchical_multiply(a, b, 24, gl.fa_ama5)
    assert np.array_equal(gate, gl.closed_form_hierarchical(a, b, 24))
    assert np.array_equal(gate[:2000], _numba_vec(mantissa_da, a, b))
    # explicit masks of the 24-bit form
    assert np.array_equal(gate, (a & 0x111111) * b + 2 * (a & 0xEEEEEE) * (b & 0x888888))


def test_mantissa_ranges_for_normal_operands():
    rng = np.random.default_rng(4)
    a = rng.integers(1 << 23, 1 << 24, N_RANDOM)
    b = rng.integers(1 << 23, 1 << 24, N_RANDOM)
    s_da = gl.closed_form_hierarchical(a, b, 24)
    s_flat = gl.closed_form_flat(a, b, 24)
    assert s_da.min() >= 1 << 47 and s_da.max() < 1 << 49
    assert s_flat.min() >= 1 << 47 and s_flat.max() < 1 << 48  # flat never needs the quirk
    frac = np.mean(s_da >= 1 << 48)
    assert 0.02 < frac < 0.06  # "about 4% of random pairs"


# ----------------------------------------------------------------------------------------------
# Float32 multiplier
# ----------------------------------------------------------------------------------------------

def _same_bits(x, y):
    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y, dtype=np.float32)
    nan = np.isnan(x)
    return np.array_equal(nan, np.isnan(y)) and np.array_equal(
        x[~nan].view(np.uint32), y[~nan].view(np.uint32)
    )


def _random_floats(n, seed):
    rng = np.random.default_rng(seed)
    bits = rng.integers(0, 1 << 32, n, dtype=np.uint64).astype(np.uint32)
    special = np.array([0.0, -0.0, 1e-37, -1e-36, 1e-36, 1e-40, 1.0, -1.0, 2.0, 3e38, -3e38,
                        1e-30, np.inf, -np.inf, np.nan], dtype=np.float32)
    out = bits.view(np.float32)
    out[: special.size] = special
    return out


@pytest.mark.parametrize("variant", MULTIPLIERS)
def test_multiply_matches_gate_level_float(variant):
    a = _random_floats(N_RANDOM, 5)
    b = _random_floats(N_RANDOM, 6)
    rng = np.random.default_rng(7)
    # plenty of pairs in the CNN range too
    a[N_RANDOM // 2:] = rng.uniform(-1, 1, N_RANDOM - N_RANDOM // 2).astype(np.float32)
    b[N_RANDOM // 2:] = rng.uniform(-1, 1, N_RANDOM - N_RANDOM // 2).astype(np.float32)
    with np.errstate(all="ignore"):
        assert _same_bits(multiply(a, b, variant), gl.fp_multiply_gatelevel(a, b, variant))
    # special values against every other special value (both operand orders)
    s = a[:15]
    x, y = np.meshgrid(s, s)
    with np.errstate(all="ignore"):
        assert _same_bits(multiply(x, y, variant), gl.fp_multiply_gatelevel(x, y, variant))


def test_one_times_one():
    one = np.float32(1.0)
    assert multiply(one, one, "da-reference") == 2.0
    assert multiply(one, one, "flat-ama5") == 2.0
    assert multiply(one, one, "exact") == 1.0
    assert mul_f32(VARIANT_CODES["da-reference"], one, one) == 2.0


def test_fraction_larger_than_exact_da_reference():
    rng = np.random.default_rng(2024)
    a = rng.uniform(-1, 1, 1_000_000).astype(np.float32)
    b = rng.uniform(-1, 1, 1_000_000).astype(np.float32)
    exact = a.astype(np.float64) * b.astype(np.float64)
    p = np.mean(np.abs(multiply(a, b, "da-reference")) > np.abs(exact)) * 100
    assert abs(p - 95.8) < 0.5, p
    p_flat = np.mean(np.abs(multiply(a, b, "flat-ama5")) > np.abs(exact)) * 100
    assert p_flat > 99.9


def test_reference_quirk_halves_when_product_reaches_2_48():
    rng = np.random.default_rng(8)
    a = rng.uniform(0.5, 1, 50_000).astype(np.float32)
    b = rng.uniform(0.5, 1, 50_000).astype(np.float32)
    ma = (a.view(np.uint32).astype(np.int64) & 0x7FFFFF) | 0x800000
    mb = (b.view(np.uint32).astype(np.int64) & 0x7FFFFF) | 0x800000
    s = gl.closed_form_hierarchical(ma, mb, 24)
    hi = s >= 1 << 48
    assert hi.any()
    ea = (a.view(np.uint32) >> 23).astype(np.int64)
    eb = (b.view(np.uint32) >> 23).astype(np.int64)
    # value = (S >> (24 + lead)) * 2^(ea + eb - 276): the +1 does not follow the leading one
    lead = (s >> 48).astype(np.int64)
    expect = (s >> (24 + lead)).astype(np.float64) * np.exp2((ea + eb - 276).astype(np.float64))
    got = multiply(a, b, "da-reference").astype(np.float64)
    assert np.array_equal(got, expect)
    faithful = (s.astype(np.float64) / 2.0**46) * np.exp2((ea + eb - 254).astype(np.float64))
    assert np.all(got[hi] < 0.5 * faithful[hi] * (1 + 2.0**-22))


def test_flat_ama5_is_a_times_power_of_two_of_b():
    rng = np.random.default_rng(9)
    a = (rng.uniform(-1, 1, 20_000) * np.exp2(rng.integers(-20, 20, 20_000))).astype(np.float32)
    b = (rng.uniform(-1, 1, 20_000) * np.exp2(rng.integers(-20, 20, 20_000))).astype(np.float32)
    a_even = (a.view(np.uint32) & np.uint32(0xFFFFFFFE)).view(np.float32).astype(np.float64)
    _, eb = np.frexp(b.astype(np.float64))  # |b| = f * 2^eb with f in [0.5, 1)
    expect = a_even * np.exp2(eb.astype(np.float64)) * np.sign(b)
    assert np.array_equal(multiply(a, b, "flat-ama5").astype(np.float64), expect)


@pytest.mark.parametrize("variant", ["da-reference", "flat-ama5"])
def test_zero_and_tiny_rule(variant):
    tiny_bits = np.arange(TINY_ABS_BITS - 5000, TINY_ABS_BITS, 7, dtype=np.uint32)
    tiny = np.concatenate([tiny_bits.view(np.float32), np.float32([0.0, -0.0, 1e-45, 1e-38,
                                                                    -9.99e-37])])
    tiny = np.concatenate([tiny, -tiny])
    assert np.all(np.abs(tiny.astype(np.float64)) < 1e-36)
    for other in np.float32([1.0, -3.0, 1e30, -1e-30, 1e-36]):
        for r in (multiply(tiny, other, variant), multiply(other, tiny, variant)):
            assert np.all(r.view(np.uint32) == 0)  # +0.0
    smallest = np.uint32(TINY_ABS_BITS).view(np.float32)
    assert float(smallest) >= 1e-36
    assert multiply(smallest, np.float32(1e30), variant) != 0


@pytest.mark.parametrize("variant", MULTIPLIERS)
def test_sign_rule(variant):
    rng = np.random.default_rng(10)
    a = rng.uniform(-1, 1, 100_000).astype(np.float32)
    b = rng.uniform(-1, 1, 100_000).astype(np.float32)
    r = multiply(a, b, variant)
    nz = r != 0
    assert np.array_equal(np.signbit(r[nz]), np.signbit(a[nz]) ^ np.signbit(b[nz]))
    assert np.array_equal(np.abs(multiply(np.abs(a), np.abs(b), variant)), np.abs(r))


@pytest.mark.parametrize("variant", ["da-reference", "flat-ama5"])
def test_special_values(variant):
    f = np.float32
    with np.errstate(all="ignore"):
        assert multiply(f(np.inf), f(2.0), variant) == np.inf
        assert multiply(f(-2.0), f(np.inf), variant) == -np.inf
        assert np.isnan(multiply(f(np.inf), f(0.0), variant))
        assert np.isnan(multiply(f(np.nan), f(1.0), variant))
        assert np.isnan(multiply(f(1.0), f(np.nan), variant))
    # exponent overflow -> signed infinity, underflow -> +0
    assert multiply(f(1e30), f(1e30), variant) == np.inf
    assert multiply(f(-1e30), f(1e30), variant) == -np.inf
    assert multiply(f(1e-30), f(-1e-30), variant).view(np.uint32) == 0
    # largest finite results stay finite
    assert np.isfinite(multiply(f(1e19), f(1e19), variant))


def test_multiply_broadcasting_and_bits_api():
    a = np.float32([[0.5], [-0.25]])
    b = np.float32([1.0, 0.75, -2.0])
    r = multiply(a, b, "da-reference")
    assert r.shape == (2, 3) and r.dtype == np.float32
    rb = multiply_bits(a.view(np.uint32), b.view(np.uint32), "da-reference")
    assert np.array_equal(rb, r.view(np.uint32))


def test_unknown_variant():
    with pytest.raises(AuditorError, match="unknown Ax-FPM multiplier"):
        multiply(np.float32(1), np.float32(1), "ama6")


def test_operand_order_matters():
    rng = np.random.default_rng(11)
    a = rng.uniform(-1, 1, 1000).astype(np.float32)
    b = rng.uniform(-1, 1, 1000).astype(np.float32)
    assert not np.array_equal(multiply(a, b, "da-reference"), multiply(b, a, "da-reference"))
