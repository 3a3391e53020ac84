"""Ax-FPM Conv / Gemm / MatMul kernels against slow references, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from auditor.axfpm import MULTIPLIERS, conv2d, gemm, matmul, multiply
from auditor.axfpm.kernels import MODE_CHECKED, MODE_FAST, choose_mode, prepare_operand
from auditor.errors import AuditorError


# ----------------------------------------------------------------------------------------------
# Slow references: python loops over `multiply`, same float64 accumulation order as the kernels
# ----------------------------------------------------------------------------------------------

def conv_reference(x, w, bias, strides, pads, dilations, group, variant):
    N, C, H, W = x.shape
    OC, Cg, KH, KW = w.shape
    sh, sw = strides
    pt, pl, pb, pr = pads
    dh, dw = dilations
    xp = np.zeros((N, C, H + pt + pb, W + pl + pr), dtype=np.float32)
    xp[:, :, pt:pt + H, pl:pl + W] = x
    OH = (H + pt + pb - dh * (KH - 1) - 1) // sh + 1
    OW = (W + pl + pr - dw * (KW - 1) - 1) // sw + 1
    OCg = OC // group
    out = np.zeros((N, OC, OH, OW), dtype=np.float32)
    for oc in range(OC):
        g = oc // OCg
        acc = np.zeros((N, OH, OW), dtype=np.float64)
        for icg in range(Cg):
            for kh in range(KH):
                for kw in range(KW):
                    patch = xp[:, g * Cg + icg,
                               kh * dh: kh * dh + sh * (OH - 1) + 1: sh,
                               kw * dw: kw * dw + sw * (OW - 1) + 1: sw]
                    acc += multiply(patch, w[oc, icg, kh, kw], variant).astype(np.float64)
        b = 0.0 if bias is None else np.float64(bias[oc])
        out[:, oc] = (acc + b).astype(np.float32)
    return out


def gemm_reference(a, b, c, alpha, beta, variant, activation="a"):
    M, K = a.shape
    acc = np.zeros((M, b.shape[1]), dtype=np.float64)
    for k in range(K):
        col, row = a[:, k:k + 1], b[k:k + 1, :]
        prod = multiply(col, row, variant) if activation == "a" else multiply(row, col, variant)
        acc += prod.astype(np.float64)
    y = acc * alpha if alpha != 1.0 else acc
    if c is not None:
        y = y + beta * c.astype(np.float64) if beta != 1.0 else y + c.astype(np.float64)
    return y.astype(np.float32)


def _same(x, y):
    return x.shape == y.shape and np.array_equal(x, y, equal_nan=True)


CONV_CASES = [
    # x shape, w shape, strides, pads (t, l, b, r), dilations, group
    ((2, 3, 8, 8), (4, 3, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
    ((2, 4, 9, 11), (6, 2, 3, 2), (2, 1), (1, 0, 2, 1), (1, 2), 2),
    ((1, 6, 7, 7), (6, 1, 3, 3), (3, 2), (0, 2, 1, 0), (2, 1), 6),  # depthwise, strided, dilated
    ((3, 2, 10, 6), (5, 2, 1, 4), (1, 3), (0, 3, 0, 2), (1, 1), 1),
    ((1, 1, 5, 5), (2, 1, 5, 5), (1, 1), (0, 0, 0, 0), (1, 1), 1),  # 1x1 output
]


@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("variant", MULTIPLIERS)
def test_conv2d_matches_reference(case, variant):
    xs, ws, strides, pads, dil, group = case
    rng = np.random.default_rng(hash((xs, ws)) % 2**32)
    x = np.maximum(rng.standard_normal(xs), 0).astype(np.float32)  # ReLU-like: many zeros
    w = (rng.standard_normal(ws) * 0.3).astype(np.float32)
    w.ravel()[::7] = 0.0
    b = rng.standard_normal(ws[0]).astype(np.float32)
    got = conv2d(x, w, b, strides, pads, dil, group, variant)
    assert got.dtype == np.float32
    assert _same(got, conv_reference(x, w, b, strides, pads, dil, group, variant))
    got_nb = conv2d(x, w, None, strides, pads, dil, group, variant)
    assert _same(got_nb, conv_reference(x, w, None, strides, pads, dil, group, variant))


@pytest.mark.parametrize("variant", MULTIPLIERS)
def test_conv2d_checked_path(variant):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    x[0, 0, 0, 0] = np.inf
    x[1, 1, 2, 2] = 1e30  # overflow with the large weight below
    w[0, 0, 0, 0] = 1e20
    x[1, 2, 3, 3] = 1e-30  # underflow with the small weight below
    w[1, 1, 1, 1] = 1e-20
    if variant != "exact":
        act = prepare_operand(x, 0, False)
        assert act.nonfinite
    args = ((1, 1), (1, 1, 1, 1), (1, 1), 1, variant)
    with np.errstate(all="ignore"):
        got = conv2d(x, w, None, *args)
        ref = conv_reference(x, w, None, *args)
    assert _same(got, ref)
    assert np.isinf(got).any()


def test_mode_selection():
    f = np.float32
    small = prepare_operand(f([1e-30, 0.5]), 0, False)
    w = prepare_operand(f([1e-20, 0.3]), 0, True)
    assert choose_mode(0, small, w) == MODE_CHECKED  # 1e-30 * 1e-20 underflows
    ok = prepare_operand(f([1e-3, 0.5, 0.0, 1e-38]), 0, False)
    assert choose_mode(0, ok, w) == MODE_FAST
    big = prepare_operand(f([1e30]), 0, False)
    assert choose_mode(0, big, prepare_operand(f([1e20]), 0, True)) == MODE_CHECKED


def test_conv2d_exact_variant_close_to_float64_conv():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 9, 9)).astype(np.float32)
    w = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
    got = conv2d(x, w, None, (1, 1), (1, 1, 1, 1), (1, 1), 1, "exact")
    ref = conv_reference(x.astype(np.float64).astype(np.float32), w, None, (1, 1), (1, 1, 1, 1),
                         (1, 1), 1, "exact")
    assert _same(got, ref)
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    direct = np.zeros(got.shape)
    for kh in range(3):
        for kw in range(3):
            direct += np.einsum("nchw,oc->nohw", xp[:, :, kh:kh + 9, kw:kw + 9], w[:, :, kh, kw])
    np.testing.assert_allclose(got, direct, rtol=1e-5, atol=1e-5)


def test_conv2d_bad_input():
    x = np.zeros((1, 3, 5, 5), np.float32)
    with pytest.raises(AuditorError):
        conv2d(x, np.zeros((2, 2, 3, 3), np.float32))  # channel mismatch
    with pytest.raises(AuditorError):
        conv2d(x, np.zeros((2, 3, 7, 7), np.float32))  # kernel larger than input
    with pytest.raises(AuditorError):
        conv2d(x[0], np.zeros((2, 3, 3, 3), np.float32))
    with pytest.raises(AuditorError):
        conv2d(x, np.zeros((2, 3, 3, 3), np.float32), variant="nope")


@pytest.mark.parametrize("variant", MULTIPLIERS)
@pytest.mark.parametrize("activation", ["a", "b"])
def test_gemm_matches_reference(variant, activation):
    rng = np.random.default_rng(5)
    a = rng.standard_normal((6, 37)).astype(np.float32)
    b = rng.standard_normal((37, 1100)).astype(np.float32)  # > one 512-wide tile
    c = rng.standard_normal(1100).astype(np.float32)
    a[a < -0.5] = 0
    got = gemm(a, b, c, variant=variant, activation=activation)
    assert _same(got, gemm_reference(a, b, c, 1.0, 1.0, variant, activation))
    got_t = gemm(a.T.copy(), b.T.copy(), c[None, :], 1, 1, 0.5, 2.0, variant,
                 activation=activation)
    assert _same(got_t, gemm_reference(a, b, c[None, :], 0.5, 2.0, variant, activation))
    assert _same(gemm(a, b, None, variant=variant, activation=activation),
                 gemm_reference(a, b, None, 1.0, 1.0, variant, activation))


@pytest.mark.parametrize("variant", ["da-reference", "flat-ama5"])
def test_gemm_checked_path(variant):
    rng = np.random.default_rng(6)
    a = rng.standard_normal((3, 9)).astype(np.float32)
    b = rng.standard_normal((9, 5)).astype(np.float32)
    a[0, 0] = np.nan
    b[3, 1] = 1e30
    a[1, 3] = 1e20
    with np.errstate(all="ignore"):
        for act in "ab":
            assert _same(gemm(a, b, None, variant=variant, activation=act),
                         gemm_reference(a, b, None, 1.0, 1.0, variant, act))


def test_matmul_semantics():
    rng = np.random.default_rng(7)
    b = rng.standard_normal((7, 5)).astype(np.float32)
    for a_shape in [(3, 7), (2, 3, 7), (7,)]:
        a = rng.standard_normal(a_shape).astype(np.float32)
        np.testing.assert_allclose(matmul(a, b, "exact"), a @ b, rtol=1e-5, atol=1e-5)
    a = rng.standard_normal((2, 1, 3, 7)).astype(np.float32)
    b3 = rng.standard_normal((4, 7, 5)).astype(np.float32)
    np.testing.assert_allclose(matmul(a, b3, "exact"), a @ b3, rtol=1e-5, atol=1e-5)
    w = rng.standard_normal((3, 7)).astype(np.float32)
    np.testing.assert_allclose(matmul(w, b3, "exact", activation="b"), w @ b3, rtol=1e-5,
                               atol=1e-5)
    v = rng.standard_normal(7).astype(np.float32)
    np.testing.assert_allclose(matmul(w, v, "exact"), w @ v, rtol=1e-5, atol=1e-5)
    # approximate MatMul = Gemm without C, per batch
    a2 = rng.standard_normal((2, 3, 7)).astype(np.float32)
    got = matmul(a2, b, "da-reference")
    for i in range(2):
        assert _same(got[i], gemm_reference(a2[i], b, None, 1.0, 1.0, "da-reference"))
    got = matmul(w, b3, "da-reference", activation="b")
    for i in range(4):
        assert _same(got[i], gemm_reference(w, b3[i], None, 1.0, 1.0, "da-reference", "b"))
    with pytest.raises(AuditorError):
        matmul(a2, w, "exact")


def test_gemm_bad_input():
    with pytest.raises(AuditorError):
        gemm(np.zeros((2, 3), np.float32), np.zeros((4, 2), np.float32))
    with pytest.raises(AuditorError):
        gemm(np.zeros((2, 3), np.float32), np.zeros((3, 2), np.float32), np.zeros(5, np.float32))
    with pytest.raises(AuditorError):
        gemm(np.zeros((2, 3), np.float32), np.zeros((3, 2), np.float32), activation="c")
