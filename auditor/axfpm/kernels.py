"""Fast approximate Conv / Gemm kernels (numba, parallel, cached).

Semantics (identical for every path below): each output element is
``float32(sum_k prod_k (+) bias)`` where ``prod_k`` is the float32 Ax-FPM product of an activation
and a weight (:mod:`auditor.axfpm.multiplier`), widened to float64 exactly, the sum is taken in
float64 in a fixed order (Conv: input channel, then kernel row, then kernel column; Gemm: the
reduction index ``k`` ascending), starting from +0.0, and the bias is added once in float64 at the
end.  The slow references in the tests reproduce that order, so results are compared bit for bit.

How the fast path gets the bit-exact product without integer multiplies
---------------------------------------------------------------------
Both approximate mantissa products have the shape ``S = A1*B1 + A2*B2`` with ``A*`` taken from the
activation mantissa and ``B*`` from the weight mantissa:

* da-reference: ``A1 = a & 0x111111, A2 = 2 (a & 0xEEEEEE), B1 = b, B2 = b & 0x888888``
* flat-ama5:    ``A1 = a & 1,        A2 = (a >> 1) 2^25,     B1 = b, B2 = b_23``

Every term and ``S`` itself (< 2^49) are integers below 2^53, so ``S`` computed in float64 is
exact (with or without FMA contraction).  The Ax-FPM normalisation keeps the 23 bits below the
leading one of ``S`` and, in the reference, adds the same +1 to the exponent whether the leading
one is bit 47 or bit 48.  In float64 that is: keep the top 23 fraction bits of ``S`` and force the
exponent to 47, ``T = bits((bits(S) & 0x000FFFFFE0000000) | bits(2^47))``.  The product is then
``T * Pa * Pw`` with ``Pa = +-2^(ea-150)`` per activation element and ``Pw = +-2^(eb-150)`` per
weight (0 for tiny operands), all exact power-of-two scalings.

The fast path is valid when every operand is finite and every product's float32 exponent field
``ea + eb - 126`` of non-tiny operands lies in [1, 254]; this is checked per call from the min/max
exponents.  Otherwise a "checked" path calls the scalar bit-level multiplier for each MAC (same
loop order, so the same result where both apply).  The "exact" control multiplies in float32
(IEEE, rounded) and accumulates the same way.

Conv layout trick
-----------------
The input is zero padded once into planes of width ``Wp`` (a multiple making ``sh*Wp/sw`` an
integer ``Wq``), and the output of one (image, out-channel) pair is computed as a flat run of
``OH*Wq`` positions ``q`` whose input index is ``base + sw*q``; columns ``ow >= OW`` are computed
and discarded.  This gives long unit-stride inner loops (for stride 1) that LLVM vectorises.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numba
import numpy as np
from numba import prange

from ..errors import AuditorError
from .multiplier import (
    TINY_ABS_BITS,
    VARIANT_BF16,
    VARIANT_DA,
    VARIANT_EXACT,
    f64_as_i64,
    i64_as_f64,
    mul_bits,
    bits_as_f32,
    round_bfloat16,
    variant_code,
)

MODE_FAST = 0
MODE_EXACT = 1
MODE_CHECKED = 2

_FRAC_TOP23 = 0x000FFFFFE0000000  # top 23 fraction bits of a float64
_EXP47 = (1023 + 47) << 52  # float64 exponent field of 2^47
_P_BIAS = 1023 - 150  # Pa = 2^(e - 150): float64 exponent field e + 873


#: below this many multiply-accumulates a kernel runs on the calling thread only: waking the
#: worker threads costs more than it saves, and far more when the cores are shared.
SERIAL_WORK = 200_000


@contextmanager
def _threads_for(work: int):
    if work >= SERIAL_WORK or numba.get_num_threads() == 1:
        yield
        return
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(before)


# ----------------------------------------------------------------------------------------------
# Operand decomposition
# ----------------------------------------------------------------------------------------------

@numba.njit(cache=True)
def _fields(bits, variant, is_weight, f1, f2, p):
    """Per-element fields of the closed form (see module docstring); tiny/non-finite -> 0."""
    for i in range(bits.size):
        u = np.int64(bits[i])
        e = (u >> 23) & 0xFF
        if (u & 0x7FFFFFFF) < TINY_ABS_BITS or e == 255:
            f1[i] = 0.0
            f2[i] = 0.0
            p[i] = 0.0
            continue
        m = (u & 0x7FFFFF) | 0x800000
        if is_weight:
            f1[i] = np.float64(m)
            if variant == VARIANT_DA:
                f2[i] = np.float64(m & 0x888888)
            else:
                f2[i] = np.float64((m >> 23) & 1)
        else:
            if variant == VARIANT_DA:
                f1[i] = np.float64(m & 0x111111)
                f2[i] = np.float64(2 * (m & 0xEEEEEE))
            else:
                f1[i] = np.float64(m & 1)
                f2[i] = np.float64((m >> 1) << 25)
        mag = i64_as_f64((e + _P_BIAS) << 52)
        p[i] = -mag if (u >> 31) & 1 else mag


@numba.njit(cache=True)
def _exponent_stats(bits):
    """(any non-finite, min exponent, max exponent) over non-tiny finite elements."""
    nonfinite = False
    emin = 255
    emax = 0
    for i in range(bits.size):
        u = np.int64(bits[i])
        e = (u >> 23) & 0xFF
        if e == 255:
            nonfinite = True
        elif (u & 0x7FFFFFFF) >= TINY_ABS_BITS:
            if e < emin:
                emin = e
            if e > emax:
                emax = e
    return nonfinite, emin, emax


@dataclass
class OperandFields:
    """One operand (activation or weight) prepared for the kernels (flat 1-D arrays)."""

    bits: np.ndarray  # uint32 bit patterns
    f1: np.ndarray  # float64
    f2: np.ndarray  # float64
    p: np.ndarray  # float64 sign/scale (fast path) or the float32 values widened (exact)
    nonfinite: bool
    emin: int  # 255 when no non-tiny element
    emax: int  # 0 when no non-tiny element


_EMPTY_F64 = np.zeros(1, dtype=np.float64)


def prepare_operand(values: np.ndarray, code: int, is_weight: bool) -> OperandFields:
    """Decompose a float32 array (any shape, flattened C-order) for the kernels."""
    v = np.ascontiguousarray(values, dtype=np.float32).ravel()
    bits = v.view(np.uint32)
    if code == VARIANT_BF16:  # bfloat16: the operands rounded, then the exact product
        v = round_bfloat16(v).ravel()
        bits = v.view(np.uint32)
    if code in (VARIANT_EXACT, VARIANT_BF16):
        return OperandFields(bits, _EMPTY_F64, _EMPTY_F64, v.astype(np.float64), False, 255, 0)
    nonfinite, emin, emax = _exponent_stats(bits)
    f1 = np.empty(v.size, dtype=np.float64)
    f2 = np.empty(v.size, dtype=np.float64)
    p = np.empty(v.size, dtype=np.float64)
    _fields(bits, code, is_weight, f1, f2, p)
    return OperandFields(bits, f1, f2, p, bool(nonfinite), int(emin), int(emax))


def choose_mode(code: int, act: OperandFields, wt: OperandFields) -> int:
    """MODE_FAST when every product's exponent is in range and all inputs finite."""
    if code in (VARIANT_EXACT, VARIANT_BF16):
        return MODE_EXACT
    if act.nonfinite or wt.nonfinite:
        return MODE_CHECKED
    if act.emax == 0 or wt.emax == 0:  # one side entirely tiny: every product is +0
        return MODE_FAST
    if act.emin + wt.emin - 126 >= 1 and act.emax + wt.emax - 126 <= 254:
        return MODE_FAST
    return MODE_CHECKED


# ----------------------------------------------------------------------------------------------
# Inner loops (acc[j] += prod(activation[j], weight) for a run of activations)
# ----------------------------------------------------------------------------------------------

@numba.njit(cache=True, inline="always")
def _run_fast(acc, a1, a2, ap, w1, w2, wp):
    for j in range(acc.size):
        s = a1[j] * w1 + a2[j] * w2
        t = i64_as_f64((f64_as_i64(s) & _FRAC_TOP23) | _EXP47)
        acc[j] += (t * ap[j]) * wp


@numba.njit(cache=True, inline="always")
def _run_exact(acc, av, wv):
    for j in range(acc.size):
        acc[j] += np.float64(np.float32(av[j] * wv))


@numba.njit(cache=True, inline="always")
def _run_checked(acc, ab, wb, variant, act_first):
    for j in range(acc.size):
        if act_first:
            r = mul_bits(variant, ab[j], wb)
        else:
            r = mul_bits(variant, wb, ab[j])
        acc[j] += np.float64(bits_as_f32(r))


# ----------------------------------------------------------------------------------------------
# Conv2d
# ----------------------------------------------------------------------------------------------

@numba.njit(cache=True, parallel=True)
def _conv_kernel(
    mode, variant,
    xb, x1, x2, xp,  # padded activation planes, flat: (N*C) planes of PL elements
    wb, w1, w2, wp,  # weights, flat (OC, Cg, KH, KW)
    bias, out,  # bias float64 (OC,), out float32 (N, OC, OH, OW)
    C, PL, Wp, Wq, KH, KW, sw, dh, dw, group,
):
    N, OC, OH, OW = out.shape
    Cg = C // group
    OCg = OC // group
    L = OH * Wq
    for t in prange(N * OC):
        n = t // OC
        oc = t - n * OC
        g = oc // OCg
        acc = np.zeros(L, dtype=np.float64)
        for icg in range(Cg):
            pbase = (n * C + g * Cg + icg) * PL
            for kh in range(KH):
                for kw in range(KW):
                    widx = ((oc * Cg + icg) * KH + kh) * KW + kw
                    base = pbase + kh * dh * Wp + kw * dw
                    stop = base + sw * (L - 1) + 1
                    if mode == MODE_FAST:
                        wpv = wp[widx]
                        if wpv == 0.0:
                            continue  # tiny weight: every product is +0, acc unchanged
                        if sw == 1:
                            _run_fast(acc, x1[base:stop], x2[base:stop], xp[base:stop],
                                      w1[widx], w2[widx], wpv)
                        else:
                            _run_fast(acc, x1[base:stop:sw], x2[base:stop:sw], xp[base:stop:sw],
                                      w1[widx], w2[widx], wpv)
                    elif mode == MODE_EXACT:
                        _run_exact(acc, xp[base:stop:sw], wp[widx])
                    else:
                        _run_checked(acc, xb[base:stop:sw], wb[widx], variant, True)
        b = bias[oc]
        for oh in range(OH):
            for ow in range(OW):
                out[n, oc, oh, ow] = np.float32(acc[oh * Wq + ow] + b)


@dataclass
class ConvWeight:
    """A Conv weight prepared once for repeated calls (see :func:`prepare_conv_weight`)."""

    shape: tuple[int, int, int, int]
    code: int
    fields: OperandFields
    bias: np.ndarray  # float64 (OC,)


def prepare_conv_weight(w: np.ndarray, bias: np.ndarray | None, variant: str) -> ConvWeight:
    """Check and decompose a Conv weight (OC, C/group, KH, KW) and optional bias (OC,)."""
    code = variant_code(variant)
    w = np.asarray(w)
    if w.ndim != 4:
        raise AuditorError(f"conv2d weight must be 4-D (OC, C/group, KH, KW), got shape {w.shape}")
    oc = w.shape[0]
    if bias is None:
        b = np.zeros(oc, dtype=np.float64)
    else:
        b = np.asarray(bias, dtype=np.float32).astype(np.float64).ravel()
        if b.shape != (oc,):
            raise AuditorError(f"conv2d bias must have shape ({oc},), got {np.shape(bias)}")
    return ConvWeight(tuple(int(s) for s in w.shape), code, prepare_operand(w, code, True), b)


def _int_tuple(v, n: int, name: str) -> tuple[int, ...]:
    try:
        t = tuple(int(x) for x in v)
    except TypeError:
        raise AuditorError(f"conv2d {name} must be a sequence of {n} integers, got {v!r}") from None
    if len(t) != n:
        raise AuditorError(f"conv2d {name} must have {n} values, got {len(t)}")
    return t


def conv2d_prepared(x, weight: ConvWeight, strides=(1, 1), pads=(0, 0, 0, 0),
                    dilations=(1, 1), group: int = 1) -> np.ndarray:
    """:func:`auditor.axfpm.conv2d` with a weight from :func:`prepare_conv_weight`."""
    x = np.asarray(x)
    if x.ndim != 4:
        raise AuditorError(f"conv2d input must be 4-D NCHW, got shape {x.shape}")
    x = x.astype(np.float32, copy=False)
    sh, sw = _int_tuple(strides, 2, "strides")
    pt, pl, pb, pr = _int_tuple(pads, 4, "pads")
    dh, dw = _int_tuple(dilations, 2, "dilations")
    group = int(group)
    N, C, H, W = x.shape
    OC, Cg, KH, KW = weight.shape
    if min(sh, sw, dh, dw) < 1 or min(pt, pl, pb, pr) < 0:
        raise AuditorError("conv2d strides/dilations must be >= 1 and pads >= 0")
    if group < 1 or C % group or OC % group or C // group != Cg:
        raise AuditorError(
            f"conv2d shapes do not match: input has {C} channels, weight {weight.shape}, "
            f"group={group}"
        )
    Hp0, Wp0 = H + pt + pb, W + pl + pr
    OH = (Hp0 - dh * (KH - 1) - 1) // sh + 1
    OW = (Wp0 - dw * (KW - 1) - 1) // sw + 1
    out = np.empty((N, OC, max(OH, 0), max(OW, 0)), dtype=np.float32)
    if OH <= 0 or OW <= 0:
        raise AuditorError(
            f"conv2d kernel {KH}x{KW} (dilation {dh}x{dw}) larger than padded input {Hp0}x{Wp0}"
        )
    if N == 0 or OC == 0:
        return out
    # plane width Wp >= Wp0 with sh*Wp divisible by sw, so input index = base + sw*q
    Wp = Wp0
    while (sh * Wp) % sw:
        Wp += 1
    Wq = sh * Wp // sw
    L = OH * Wq
    PL = max(Hp0 * Wp, sw * (L - 1) + dh * (KH - 1) * Wp + dw * (KW - 1) + 1)
    planes = np.zeros((N * C, PL), dtype=np.float32)
    planes[:, : Hp0 * Wp].reshape(N * C, Hp0, Wp)[:, pt:pt + H, pl:pl + W] = x.reshape(N * C, H, W)
    act = prepare_operand(planes, weight.code, False)
    mode = choose_mode(weight.code, act, weight.fields)
    wf = weight.fields
    if mode == MODE_EXACT:
        x1 = x2 = _EMPTY_F64
    else:
        x1, x2 = act.f1, act.f2
    with _threads_for(N * OC * L * Cg * KH * KW):
        _conv_kernel(
            mode, weight.code,
            act.bits, x1, x2, act.p,
            wf.bits, wf.f1, wf.f2, wf.p,
            weight.bias, out,
            C, PL, Wp, Wq, KH, KW, sw, dh, dw, group,
        )
    return out


def conv2d(x, w, bias=None, strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1), group: int = 1,
           variant: str = "da-reference") -> np.ndarray:
    """Approximate 2-D convolution; see :func:`auditor.axfpm.conv2d`."""
    return conv2d_prepared(x, prepare_conv_weight(w, bias, variant), strides, pads, dilations,
                           group)


# ----------------------------------------------------------------------------------------------
# Gemm: out[m, n] = sum_k prod(L[m, k], R[k, n]) in float64
# ----------------------------------------------------------------------------------------------

_GEMM_TILE = 512


@numba.njit(cache=True, parallel=True)
def _gemm_kernel(mode, variant, left_is_act,
                 lb, l1, l2, lp,  # left operand (M, K) flat
                 rb, r1, r2, rp,  # right operand (K, N) flat
                 out):  # float64 (M, N)
    M, N = out.shape
    K = lp.size // M if M > 0 else 0
    ntiles = (N + _GEMM_TILE - 1) // _GEMM_TILE
    for t in prange(M * ntiles):
        m = t // ntiles
        n0 = (t - m * ntiles) * _GEMM_TILE
        n1 = min(N, n0 + _GEMM_TILE)
        acc = np.zeros(n1 - n0, dtype=np.float64)
        for k in range(K):
            li = m * K + k
            r0 = k * N + n0
            r_end = k * N + n1
            if mode == MODE_FAST:
                lpv = lp[li]
                if lpv == 0.0:
                    continue
                _run_fast(acc, r1[r0:r_end], r2[r0:r_end], rp[r0:r_end], l1[li], l2[li], lpv)
            elif mode == MODE_EXACT:
                _run_exact(acc, rp[r0:r_end], lp[li])
            else:
                _run_checked(acc, rb[r0:r_end], lb[li], variant, not left_is_act)
        for j in range(n1 - n0):
            out[m, n0 + j] = acc[j]


def matmul2d_f64(a, b, variant: str, activation: str = "a",
                 weight_fields: OperandFields | None = None) -> np.ndarray:
    """``sum_k prod(a[m, k], b[k, n])`` accumulated in float64 (M, N), the raw Gemm core.

    ``activation`` names which operand is the activation (multiplier operand a): "a" or "b".  A
    pre-decomposed weight (``prepare_operand(weight, code, True)`` of the contiguous weight in the
    orientation used here) may be passed to skip its decomposition.
    """
    code = variant_code(variant)
    if activation not in ("a", "b"):
        raise AuditorError(f"activation must be 'a' or 'b', got {activation!r}")
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise AuditorError(f"matrix shapes do not match: {a.shape} x {b.shape}")
    M, K = a.shape
    N = b.shape[1]
    out = np.zeros((M, N), dtype=np.float64)
    if M == 0 or N == 0 or K == 0:
        return out
    left_is_act = activation == "a"
    if left_is_act:
        lf = prepare_operand(a, code, False)
        rf = weight_fields if weight_fields is not None else prepare_operand(b, code, True)
        mode = choose_mode(code, lf, rf)
    else:
        lf = weight_fields if weight_fields is not None else prepare_operand(a, code, True)
        rf = prepare_operand(b, code, False)
        mode = choose_mode(code, rf, lf)
    with _threads_for(M * N * K):
        _gemm_kernel(mode, code, left_is_act, lf.bits, lf.f1, lf.f2, lf.p, rf.bits, rf.f1,
                     rf.f2, rf.p, out)
    return out
