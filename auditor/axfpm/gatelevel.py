"""Slow, gate-level reference models of the Ax-FPM mantissa multipliers.

Everything here works on numpy integer arrays of operand *pairs* (vectorised over the pairs, bit by
bit over the circuit), so it can check the closed forms of :mod:`auditor.axfpm.multiplier` on
10^5 random 24-bit pairs in well under a second.  It is a specification, not a fast path.

Full adders
-----------
A full adder is a function ``fa(A, B, Cin) -> (Sum, Cout)`` on arrays of bits (0/1 int64).

* :func:`fa_exact`: ``Sum = A ^ B ^ Cin``, ``Cout = maj(A, B, Cin)``.
* :func:`fa_ama5`: approximate mirror adder 5 (Gupta et al.), ``Sum = B``, ``Cout = A`` -- two
  buffers, the carry-in is ignored.

Row-ripple array multiplier (:func:`array_multiply`)
---------------------------------------------------
``n x n`` unsigned multiplier.  ``a`` is the multiplier (its bit ``i`` selects row ``i``), ``b`` the
multiplicand.  Row 0 is the partial product ``a_0 . b`` (AND gates only).  Row ``i >= 1`` adds the
partial product ``(a_i . b) << i`` to the running sum with ``n`` full adders rippling from bit ``i``
to bit ``i + n - 1``; the adder at column ``j`` gets

    A   = a_i & b_j                 (the new partial-product bit)
    B   = running-sum bit i + j     (0 above the running sum's top bit)
    Cin = carry out of column j - 1 (0 for j = 0)

and writes its Sum back to bit ``i + j``; the carry out of the last column becomes bit ``i + n``.
With exact adders this is exactly ``a * b``.

With AMA5 every adder passes B through as Sum and A as Cout, so the running sum is never changed
below the new top bit, and the carry out of row ``i`` is ``a_i & b_{n-1}``.  Hence (derivation of
the "flat-ama5" closed form):

    P_flat(a, b) = a_0 * b + b_{n-1} * sum_{i>=1} a_i 2^(i+n) = a_0*b + b_{n-1} * (a >> 1) * 2^(n+1)

Hierarchical construction (:func:`hierarchical_multiply`)
-------------------------------------------------------
The Defensive-Approximation implementation builds the 24x24 mantissa product from 4x4 blocks (each
the array above with AMA5 adders), four 4x4 blocks making an 8x8 and nine 8x8 blocks making the
24x24, the blocks combined with exact shifts and adds.  For ``n = 4`` the block is
``a_0 b + b_3 (a >> 1) 2^5 = (a & 1) b + 2 (a & 0xE)(b & 0x8)``; since the combination is bilinear
and exact, the masks tile across nibbles and the 24x24 product is

    P_da(a, b) = (a & 0x111111) * b + 2 * (a & 0xEEEEEE) * (b & 0x888888)

(and ``(a & 0x11) b + 2 (a & 0xEE)(b & 0x88)`` at 8 bits).  Supported widths are 4, 8, 16 (2x2 of
8x8) and 24 (3x3 of 8x8).

Floating point (:func:`fp_multiply_gatelevel`)
---------------------------------------------
A numpy re-statement of the float32 wrapper around the gate-level mantissa product, written
independently of the numba code in :mod:`auditor.axfpm.multiplier` so the tests can compare the
two.  The rules are documented in :mod:`auditor.axfpm` (package docstring).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

FullAdder = Callable[[np.ndarray, np.ndarray, np.ndarray], "tuple[np.ndarray, np.ndarray]"]

#: sub-block width used by the hierarchical construction at each supported width
HIERARCHY = {4: None, 8: 4, 16: 8, 24: 8}


def fa_exact(a: np.ndarray, b: np.ndarray, cin: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact full adder on bit arrays: (Sum, Cout)."""
    s = a ^ b ^ cin
    cout = (a & b) | (cin & (a ^ b))
    return s, cout


def fa_ama5(a: np.ndarray, b: np.ndarray, cin: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Approximate mirror adder AMA5: Sum = B, Cout = A (carry-in ignored)."""
    return b, a


FULL_ADDERS: dict[str, FullAdder] = {"exact": fa_exact, "ama5": fa_ama5}


def _as_operands(a, b, width: int) -> tuple[np.ndarray, np.ndarray]:
    if not 1 <= width <= 26:
        raise ValueError(f"width {width} out of range 1..26 (product must fit in int64)")
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    a, b = np.broadcast_arrays(a, b)
    lim = 1 << width
    if a.size and (a.min() < 0 or a.max() >= lim or b.min() < 0 or b.max() >= lim):
        raise ValueError(f"operands must be unsigned {width}-bit integers")
    return a, b


def array_multiply(a, b, width: int, fa: FullAdder = fa_exact) -> np.ndarray:
    """Row-ripple ``width x width`` array multiplier built from the full adder ``fa``.

    ``a`` selects the rows (multiplier), ``b`` is the multiplicand; both are arrays of unsigned
    ``width``-bit integers (broadcast together).  Returns the int64 array of ``2*width``-bit
    products.  See the module docstring for the port assignment.
    """
    a, b = _as_operands(a, b, width)
    b_bits = [(b >> j) & 1 for j in range(width)]
    s = (a & 1) * b  # row 0: a_0 AND b_j, no adders
    zero = np.zeros_like(a)
    for i in range(1, width):
        a_i = (a >> i) & 1
        carry = zero
        for j in range(width):
            pos = i + j
            pp = a_i & b_bits[j]
            s_bit = (s >> pos) & 1
            new_bit, carry = fa(pp, s_bit, carry)
            s = (s & ~np.int64(1 << pos)) | (new_bit << pos)
        s = s | (carry << (i + width))
    return s


def hierarchical_multiply(a, b, width: int = 24, fa: FullAdder = fa_ama5) -> np.ndarray:
    """The Defensive-Approximation construction: 4x4 array blocks -> 8x8 -> 24x24.

    A ``width``-bit product (width in 4, 8, 16, 24) is split into ``(width/sub)^2`` sub-products of
    ``sub``-bit slices (``sub`` from :data:`HIERARCHY`), each computed recursively, and combined
    with exact shifts and adds; 4x4 blocks are :func:`array_multiply` with the adder ``fa``.
    """
    if width not in HIERARCHY:
        raise ValueError(f"hierarchical construction is defined for widths {sorted(HIERARCHY)}")
    a, b = _as_operands(a, b, width)
    sub = HIERARCHY[width]
    if sub is None:
        return array_multiply(a, b, width, fa)
    k = width // sub
    mask = (1 << sub) - 1
    total = np.zeros_like(a)
    for i in range(k):
        a_i = (a >> (sub * i)) & mask
        for j in range(k):
            b_j = (b >> (sub * j)) & mask
            total = total + (hierarchical_multiply(a_i, b_j, sub, fa) << (sub * (i + j)))
    return total


# ----------------------------------------------------------------------------------------------
# Closed forms (numpy, for the tests; the numba versions live in multiplier.py)
# ----------------------------------------------------------------------------------------------

def nibble_mask(nibble: int, width: int) -> int:
    """``nibble`` repeated over ``width`` bits (width a multiple of 4), e.g. (0x1, 8) -> 0x11."""
    return sum(nibble << (4 * k) for k in range(width // 4))


def closed_form_hierarchical(a, b, width: int = 24) -> np.ndarray:
    """(a & 0x1..1) b + 2 (a & 0xE..E)(b & 0x8..8) -- the hierarchical AMA5 product."""
    a, b = _as_operands(a, b, width)
    return (a & nibble_mask(0x1, width)) * b + 2 * (a & nibble_mask(0xE, width)) * (
        b & nibble_mask(0x8, width)
    )


def closed_form_flat(a, b, width: int = 24) -> np.ndarray:
    """a_0 b + b_{n-1} (a >> 1) 2^(n+1) -- the flat row-ripple AMA5 product."""
    a, b = _as_operands(a, b, width)
    return (a & 1) * b + ((b >> (width - 1)) & 1) * ((a >> 1) << (width + 1))


# ----------------------------------------------------------------------------------------------
# Float32 wrapper around the gate-level mantissa product
# ----------------------------------------------------------------------------------------------

def bfloat16_reference(x) -> np.ndarray:
    """float32 rounded to bfloat16 in float64 arithmetic (no bit tricks): 8 significant bits with
    numpy's round-half-to-even, bfloat16's subnormal spacing 2^-133 below 2^-126, overflow to
    +-inf; NaN, infinities and zeros unchanged."""
    x64 = np.asarray(x, np.float32).astype(np.float64)
    out = x64.copy()
    fin = np.isfinite(x64) & (x64 != 0)
    _, e = np.frexp(x64[fin])  # x = m 2^e, 0.5 <= |m| < 1
    scale = np.ldexp(1.0, np.maximum(e - 8, -133))
    out[fin] = np.round(x64[fin] / scale) * scale
    with np.errstate(over="ignore"):
        return out.astype(np.float32)


def fp_multiply_gatelevel(a, b, variant: str) -> np.ndarray:
    """Float32 Ax-FPM product computed with the gate-level mantissa multiplier (slow).

    ``variant`` is "da-reference" (hierarchical AMA5, reference normalisation), "flat-ama5" (flat
    24x24 AMA5 array, faithful normalisation), "exact" (IEEE float32 product) or "bfloat16" (the
    IEEE product of :func:`bfloat16_reference` of each operand).
    """
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    a, b = np.broadcast_arrays(a, b)
    shape = a.shape
    a = a.ravel()
    b = b.ravel()
    if variant == "bfloat16":  # the float32 product of the operands rounded to bfloat16
        with np.errstate(all="ignore"):
            return (bfloat16_reference(a) * bfloat16_reference(b)).astype(np.float32).reshape(shape)
    with np.errstate(all="ignore"):
        ieee = (a * b).astype(np.float32)
    if variant == "exact":
        return ieee.reshape(shape)
    ua = a.view(np.uint32).astype(np.int64)
    ub = b.view(np.uint32).astype(np.int64)
    ea = (ua >> 23) & 0xFF
    eb = (ub >> 23) & 0xFF
    ma = (ua & 0x7FFFFF) | 0x800000
    mb = (ub & 0x7FFFFF) | 0x800000
    if variant == "da-reference":
        s = hierarchical_multiply(ma, mb, 24, fa_ama5)
        lead = s >> 48  # 0 or 1; the reference adds the same +1 to the exponent either way
        mant = (s >> (24 + lead)) & 0x7FFFFF
        e = ea + eb - 126
    elif variant == "flat-ama5":
        s = array_multiply(ma, mb, 24, fa_ama5)
        lead = s >> 48  # always 0 for normal operands; faithful normalisation regardless
        mant = (s >> (24 + lead)) & 0x7FFFFF
        e = ea + eb - 126 + lead
    else:
        raise ValueError(f"unknown variant {variant!r}")
    sign = (ua ^ ub) & 0x80000000
    bits = sign | (np.clip(e, 0, 255) << 23) | mant
    bits = np.where(e >= 255, sign | 0x7F800000, bits)  # exponent overflow -> signed infinity
    bits = np.where(e <= 0, 0, bits)  # exponent underflow -> +0
    # |x| < 1e-36, compared in double precision as the reference does (zeros, subnormals too)
    tiny = (np.abs(a.astype(np.float64)) < 1e-36) | (np.abs(b.astype(np.float64)) < 1e-36)
    bits = np.where(tiny, 0, bits)
    out = bits.astype(np.uint32).view(np.float32)
    nonfinite = (ea == 255) | (eb == 255)
    out = np.where(nonfinite, ieee, out).astype(np.float32)
    return out.reshape(shape)
