"""Bit-exact scalar Ax-FPM multipliers (numba) on float32 bit patterns, plus vectorised wrappers.

Scalar functions take the two operands as float32 bit patterns (any integer type; only the low 32
bits are used) -- ``a`` is the activation, ``b`` the weight; the order matters -- and return the
float32 bit pattern of the product as ``np.uint32``.  They are ``@njit(cache=True)`` and small, so
LLVM inlines them into the kernels.  The rules they implement are documented in the package
docstring (:mod:`auditor.axfpm`); :mod:`auditor.axfpm.gatelevel` is the slow reference they are
tested against.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import types
from numba.extending import intrinsic

from ..errors import AuditorError
from .variants import VARIANT_CODES

VARIANT_DA = VARIANT_CODES["da-reference"]
VARIANT_FLAT = VARIANT_CODES["flat-ama5"]
VARIANT_EXACT = VARIANT_CODES["exact"]
VARIANT_BF16 = VARIANT_CODES["bfloat16"]


def _compute_tiny_abs_bits() -> int:
    # |x| < 1e-36 (compared in double precision, as the reference does) <=> abs bits < this value
    u = int(np.float32(1e-36).view(np.uint32))
    while float(np.uint32(u).view(np.float32)) < 1e-36:
        u += 1
    while float(np.uint32(u - 1).view(np.float32)) >= 1e-36:
        u -= 1
    return u


#: float32 magnitude bit patterns below this are "tiny" (|x| < 1e-36, zeros and subnormals too)
TINY_ABS_BITS = _compute_tiny_abs_bits()  # 0x03AA2425
SIGN_BIT = 0x80000000
INF_BITS = 0x7F800000


def variant_code(variant: str) -> int:
    """Map a multiplier name to its integer code, raising AuditorError for unknown names."""
    try:
        return VARIANT_CODES[variant]
    except (KeyError, TypeError):
        raise AuditorError(
            f"unknown Ax-FPM multiplier {variant!r}; choose one of {', '.join(VARIANT_CODES)}"
        ) from None


# ----------------------------------------------------------------------------------------------
# Bit casts (LLVM bitcast; no memory round trip, vectorisable)
# ----------------------------------------------------------------------------------------------

@intrinsic
def f64_as_i64(typingctx, x):
    """Reinterpret a float64 as int64."""
    if isinstance(x, types.Float) and x.bitwidth == 64:
        def codegen(context, builder, sig, args):
            return builder.bitcast(args[0], context.get_value_type(types.int64))
        return types.int64(x), codegen
    return None


@intrinsic
def i64_as_f64(typingctx, x):
    """Reinterpret an int64 as float64."""
    if isinstance(x, types.Integer) and x.bitwidth == 64:
        def codegen(context, builder, sig, args):
            return builder.bitcast(args[0], context.get_value_type(types.float64))
        return types.float64(x), codegen
    return None


@intrinsic
def bits_as_f32(typingctx, x):
    """Reinterpret the low 32 bits of an integer as float32."""
    if isinstance(x, types.Integer):
        def codegen(context, builder, sig, args):
            v = args[0]
            i32 = context.get_value_type(types.uint32)
            if sig.args[0].bitwidth > 32:
                v = builder.trunc(v, i32)
            elif sig.args[0].bitwidth < 32:
                v = builder.zext(v, i32)
            return builder.bitcast(v, context.get_value_type(types.float32))
        return types.float32(x), codegen
    return None


@intrinsic
def f32_as_bits(typingctx, x):
    """Reinterpret a float32 as its bit pattern (returned zero-extended as int64)."""
    if isinstance(x, types.Float) and x.bitwidth == 32:
        def codegen(context, builder, sig, args):
            v = builder.bitcast(args[0], context.get_value_type(types.uint32))
            return builder.zext(v, context.get_value_type(types.int64))
        return types.int64(x), codegen
    return None


# ----------------------------------------------------------------------------------------------
# Mantissa products (24-bit operands with the hidden bit, int64 result)
# ----------------------------------------------------------------------------------------------

@numba.njit(cache=True)
def mantissa_da(ma, mb):
    """Hierarchical AMA5 24x24 product: (a & 0x111111) b + 2 (a & 0xEEEEEE)(b & 0x888888)."""
    return (ma & 0x111111) * mb + 2 * (ma & 0xEEEEEE) * (mb & 0x888888)


@numba.njit(cache=True)
def mantissa_flat(ma, mb):
    """Flat 24x24 row-ripple AMA5 array: a_0 b + b_23 (a >> 1) 2^25."""
    return (ma & 1) * mb + ((mb >> 23) & 1) * ((ma >> 1) << 25)


# ----------------------------------------------------------------------------------------------
# Scalar multipliers on bit patterns
# ----------------------------------------------------------------------------------------------

@numba.njit(cache=True)
def mul_exact_bits(ua, ub):
    """IEEE float32 product (round to nearest even) of two bit patterns."""
    return np.uint32(f32_as_bits(bits_as_f32(ua) * bits_as_f32(ub)))


@numba.njit(cache=True)
def bf16_round_bits(u):
    """The float32 bit pattern of ``u`` rounded to bfloat16 (round to nearest, ties to even; the
    low 16 bits cleared).  Infinities stay, NaN stays a (quiet) NaN, overflow rounds to +-inf,
    subnormals round like any other value (bfloat16 has float32's exponent range)."""
    v = np.int64(u) & 0xFFFFFFFF
    if (v & 0x7FFFFFFF) > INF_BITS:  # NaN: keep it a NaN whatever its payload
        return np.uint32((v | 0x00400000) & 0xFFFF0000)
    return np.uint32(((v + 0x7FFF + ((v >> 16) & 1)) & 0xFFFF0000) & 0xFFFFFFFF)


@numba.njit(cache=True)
def mul_bf16_bits(ua, ub):
    """bfloat16 multiplier: both operands rounded to bfloat16 (RNE), their product in float32
    (exact: two 8-bit significands give at most 16 bits; IEEE rounding only on overflow or
    underflow)."""
    return mul_exact_bits(bf16_round_bits(ua), bf16_round_bits(ub))


@numba.njit(cache=True)
def _bf16_loop(u, out):
    for i in range(u.size):
        out[i] = bf16_round_bits(u[i])


def round_bfloat16(x) -> np.ndarray:
    """float32 array rounded elementwise to bfloat16 (RNE), returned as float32."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    out = np.empty(x.size, dtype=np.uint32)
    _bf16_loop(x.ravel().view(np.uint32), out)
    return out.view(np.float32).reshape(x.shape)


@numba.njit(cache=True)
def _pack(sign, e, mant):
    if e >= 255:
        return np.uint32(sign | INF_BITS)  # exponent overflow -> signed infinity
    if e <= 0:
        return np.uint32(0)  # exponent underflow -> +0
    return np.uint32(sign | (e << 23) | mant)


@numba.njit(cache=True)
def mul_da_reference_bits(ua, ub):
    """Ax-FPM as in the Defensive-Approximation implementation (bit-exact), a = activation."""
    a = np.int64(ua) & 0xFFFFFFFF
    b = np.int64(ub) & 0xFFFFFFFF
    ea = (a >> 23) & 0xFF
    eb = (b >> 23) & 0xFF
    if ea == 255 or eb == 255:
        return mul_exact_bits(a, b)  # NaN / inf operands: IEEE semantics
    if (a & 0x7FFFFFFF) < TINY_ABS_BITS or (b & 0x7FFFFFFF) < TINY_ABS_BITS:
        return np.uint32(0)
    s = mantissa_da((a & 0x7FFFFF) | 0x800000, (b & 0x7FFFFF) | 0x800000)
    lead = s >> 48  # S in [2^47, 2^49): 0 or 1
    mant = (s >> (24 + lead)) & 0x7FFFFF  # 23 bits below the leading one, truncated
    return _pack((a ^ b) & SIGN_BIT, ea + eb - 126, mant)  # always +1, even when lead == 1


@numba.njit(cache=True)
def mul_flat_ama5_bits(ua, ub):
    """Ax-FPM with a flat 24x24 AMA5 row-ripple array and faithful normalisation, a = activation."""
    a = np.int64(ua) & 0xFFFFFFFF
    b = np.int64(ub) & 0xFFFFFFFF
    ea = (a >> 23) & 0xFF
    eb = (b >> 23) & 0xFF
    if ea == 255 or eb == 255:
        return mul_exact_bits(a, b)
    if (a & 0x7FFFFFFF) < TINY_ABS_BITS or (b & 0x7FFFFFFF) < TINY_ABS_BITS:
        return np.uint32(0)
    s = mantissa_flat((a & 0x7FFFFF) | 0x800000, (b & 0x7FFFFF) | 0x800000)
    lead = s >> 48  # provably 0 for normal operands (S < 2^48); kept for faithfulness
    mant = (s >> (24 + lead)) & 0x7FFFFF
    return _pack((a ^ b) & SIGN_BIT, ea + eb - 126 + lead, mant)


@numba.njit(cache=True)
def mul_bits(variant, ua, ub):
    """Dispatch on the variant code (VARIANT_DA / VARIANT_FLAT / VARIANT_EXACT / VARIANT_BF16)."""
    if variant == VARIANT_DA:
        return mul_da_reference_bits(ua, ub)
    if variant == VARIANT_FLAT:
        return mul_flat_ama5_bits(ua, ub)
    if variant == VARIANT_BF16:
        return mul_bf16_bits(ua, ub)
    return mul_exact_bits(ua, ub)


@numba.njit(cache=True)
def mul_f32(variant, a, b):
    """Scalar float32 x float32 -> float32 Ax-FPM product (a = activation, b = weight)."""
    return bits_as_f32(mul_bits(variant, f32_as_bits(a), f32_as_bits(b)))


@numba.njit(cache=True)
def _multiply_loop(variant, ua, ub, out):
    for i in range(ua.size):
        out[i] = mul_bits(variant, ua[i], ub[i])


def multiply_bits(ua, ub, variant: str) -> np.ndarray:
    """Vectorised product on float32 bit patterns (uint32 arrays, broadcast) -> uint32 array."""
    code = variant_code(variant)
    ua, ub = np.broadcast_arrays(np.asarray(ua, dtype=np.uint32), np.asarray(ub, dtype=np.uint32))
    shape = ua.shape
    out = np.empty(ua.size, dtype=np.uint32)
    _multiply_loop(code, np.ascontiguousarray(ua).ravel(), np.ascontiguousarray(ub).ravel(), out)
    return out.reshape(shape)


def multiply(a, b, variant: str) -> np.ndarray:
    """Elementwise Ax-FPM product of float32 arrays (broadcast); ``a`` activation, ``b`` weight."""
    code = variant_code(variant)
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    a, b = np.broadcast_arrays(a, b)
    shape = a.shape
    out = np.empty(a.size, dtype=np.uint32)
    _multiply_loop(
        code,
        np.ascontiguousarray(a).ravel().view(np.uint32),
        np.ascontiguousarray(b).ravel().view(np.uint32),
        out,
    )
    return out.view(np.float32).reshape(shape)
