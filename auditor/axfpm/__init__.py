"""Bit-exact emulation of the Ax-FPM approximate float32 multiplier ("Defensive Approximation").

Guesmi et al., *Defensive Approximation* build a float32 multiplier whose 24x24 mantissa multiplier
is an array of approximate mirror adders AMA5 (``Sum = B, Cout = A``).  This package emulates it
bit for bit, and runs Conv / Gemm / MatMul layers with every product approximated.

Multipliers (:data:`MULTIPLIERS`)
---------------------------------
Operand ``a`` is always the **activation**, ``b`` the **weight**; the approximate products are not
commutative.  Let ``ea, eb`` be the biased exponent fields and ``ma, mb`` the 24-bit mantissas with
the hidden bit.

``"da-reference"`` -- the authors' implementation, bit-exact:

* sign = sign(a) XOR sign(b);
* if |a| < 1e-36 or |b| < 1e-36 (compared in double precision; covers zeros and all subnormals)
  the product is +0.0;
* S = (ma & 0x111111)*mb + 2*(ma & 0xEEEEEE)*(mb & 0x888888) (the 4x4 -> 8x8 -> 24x24 hierarchical
  AMA5 construction, see :mod:`auditor.axfpm.gatelevel`); S is in [2^47, 2^49);
* mantissa = the 23 bits below the leading one of S, truncated (no rounding); exponent field =
  ea + eb - 127 + 1 whether the leading one is bit 47 or bit 48 (the reference quirk: when
  S >= 2^48, about 4% of random pairs, the product comes out halved);  1.0 x 1.0 = 2.0.

``"flat-ama5"`` -- derived from first principles: a flat 24x24 row-ripple array multiplier with every
full adder replaced by AMA5 (port assignment A = partial-product bit, B = running-sum bit,
Cin = ripple carry).  Each AMA5 row passes the running sum through and emits its last partial
product bit as the carry, giving ``S = a0*mb + mb_23*(ma >> 1)*2^25``.  For normal operands
``2^47 <= S < 2^48`` always (``ma >> 1 >= 2^22``, and ``(ma>>1)*2^25 + mb < 2^48``), so faithful
normalisation (exponent + 1, 23 bits below bit 47, truncated) is the only case that occurs; the
result is ``|a|`` with its last mantissa bit cleared times ``2^(floor(log2|b|) + 1)``: the weight's
mantissa is ignored entirely.  Same sign/tiny/special-value rules as da-reference.

``"exact"`` -- the IEEE float32 product (round to nearest even), a control.

``"bfloat16"`` -- a bfloat16 multiplier (Defensive Approximation §7.2, a precision what-if): each
operand rounded to bfloat16 (round to nearest, ties to even: 8 significant bits, float32's
exponent range), the product of the rounded operands in float32 (exact: 8 x 8 significant bits;
IEEE rounding only on overflow/underflow).  Accumulation as for every variant below (float64, one
cast to float32).

Special cases (both approximate variants; documented choices where the reference is undefined):

* NaN or +-inf operand: the IEEE float32 product (NaN propagates, inf x 0 = NaN, inf x finite
  non-zero = +-inf, even when the finite operand is "tiny").
* Exponent overflow (ea + eb - 126 >= 255): +-inf.  (The reference clamps ea + eb - 127 at 255
  *before* the +1, which would carry into the sign bit; we emit the IEEE-style signed infinity.)
* Exponent underflow (ea + eb - 126 <= 0, possible only for products below ~2^-126 of operands
  >= 1e-36): +0.0 (flush to zero; no subnormal results).  Subnormal inputs are "tiny" -> +0.0.

Layers
------
As the authors did: every product of a Conv or Gemm/MatMul is approximated, the products are
accumulated in float64 in a fixed order (Conv: input channel, kernel row, kernel column; Gemm: k
ascending), the bias is added exactly (in float64) and the result cast to float32 once.  For Gemm
the float64 sum is scaled by ``alpha`` and ``beta * C`` is added in float64 before the cast.

Which Gemm/MatMul operand is the activation: in :func:`gemm` / :func:`matmul` the ``activation``
keyword says ("a" by default, i.e. ``A`` is the data and ``B`` the weight, as exported by
``nn.Linear``); :class:`auditor.axfpm.execute.ApproxModel` passes the graph-constant operand
(initializer or Constant) as the weight and the other one as the activation.
"""

from __future__ import annotations

import numpy as np

from ..errors import AuditorError
from .kernels import (
    ConvWeight,
    conv2d_prepared,
    matmul2d_f64,
    prepare_conv_weight,
)
from .kernels import conv2d as _conv2d
from .multiplier import multiply, multiply_bits, variant_code
from .variants import MULTIPLIERS

__all__ = [
    "MULTIPLIERS",
    "multiply",
    "multiply_bits",
    "conv2d",
    "gemm",
    "matmul",
    "prepare_conv_weight",
    "conv2d_prepared",
    "ConvWeight",
]


def conv2d(x, w, bias=None, strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1), group: int = 1,
           variant: str = "da-reference") -> np.ndarray:
    """Approximate ONNX-style 2-D convolution (cross-correlation), NCHW float32.

    ``x`` (N, C, H, W) is the activation (multiplier operand a), ``w`` (OC, C/group, KH, KW) the
    weight (operand b), ``bias`` (OC,) or None.  ``pads`` = (top, left, bottom, right).
    Returns float32 (N, OC, OH, OW).
    """
    return _conv2d(x, w, bias, strides, pads, dilations, group, variant)


def gemm(a, b, c=None, transA: int = 0, transB: int = 0, alpha: float = 1.0, beta: float = 1.0,
         variant: str = "da-reference", *, activation: str = "a") -> np.ndarray:
    """ONNX Gemm ``Y = alpha * op(A) op(B) + beta * C`` with approximate products.

    ``activation`` ("a" or "b") names the operand used as the multiplier's activation operand; the
    other is the weight.  ``C`` broadcasts unidirectionally to (M, N).  Returns float32 (M, N).
    """
    variant_code(variant)
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    if a.ndim != 2 or b.ndim != 2:
        raise AuditorError(f"Gemm inputs must be 2-D, got {a.shape} and {b.shape}")
    if transA:
        a = a.T
    if transB:
        b = b.T
    acc = matmul2d_f64(a, b, variant, activation)
    return finish_gemm(acc, c, alpha, beta)


def finish_gemm(acc: np.ndarray, c, alpha: float, beta: float) -> np.ndarray:
    """float32(alpha * acc + beta * C) computed in float64."""
    y = acc
    if float(alpha) != 1.0:
        y = y * float(alpha)
    if c is not None and float(beta) != 0.0:
        c64 = np.asarray(c, dtype=np.float32).astype(np.float64)
        try:
            np.broadcast_shapes(c64.shape, y.shape)
        except ValueError:
            raise AuditorError(f"Gemm C of shape {c64.shape} does not broadcast to {y.shape}") \
                from None
        y = y + float(beta) * c64 if float(beta) != 1.0 else y + c64
        if y.shape != acc.shape:
            raise AuditorError(f"Gemm C of shape {c64.shape} does not broadcast to {acc.shape}")
    return y.astype(np.float32)


def matmul(a, b, variant: str = "da-reference", *, activation: str = "a") -> np.ndarray:
    """ONNX/numpy MatMul (1-D promotion, batch broadcasting) with approximate products."""
    variant_code(variant)
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    if a.ndim == 0 or b.ndim == 0:
        raise AuditorError("MatMul operands must be at least 1-D")
    a_vec, b_vec = a.ndim == 1, b.ndim == 1
    if a_vec:
        a = a[None, :]
    if b_vec:
        b = b[:, None]
    if a.shape[-1] != b.shape[-2]:
        raise AuditorError(f"MatMul shapes do not match: {a.shape} x {b.shape}")
    M, K = a.shape[-2:]
    N = b.shape[-1]
    if b.ndim == 2:  # common case: fold all batch dimensions of a into M
        acc = matmul2d_f64(a.reshape(-1, K), b, variant, activation)
        out = acc.reshape(a.shape[:-2] + (M, N))
    elif a.ndim == 2 and activation == "b":  # fold b's batch into N: (K, batch*N)
        bb = np.moveaxis(b, -2, 0).reshape(K, -1)
        acc = matmul2d_f64(a, bb, variant, activation)
        out = np.moveaxis(acc.reshape((M,) + b.shape[:-2] + (N,)), 0, -2)
    else:
        try:
            batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
        except ValueError:
            raise AuditorError(f"MatMul batch dimensions do not broadcast: {a.shape} x {b.shape}") \
                from None
        ab = np.broadcast_to(a, batch + (M, K)).reshape(-1, M, K)
        bb = np.broadcast_to(b, batch + (K, N)).reshape(-1, K, N)
        out = np.empty((ab.shape[0], M, N), dtype=np.float64)
        for i in range(ab.shape[0]):
            out[i] = matmul2d_f64(ab[i], bb[i], variant, activation)
        out = out.reshape(batch + (M, N))
    if a_vec:
        out = out[..., 0, :]
    if b_vec:
        out = out[..., 0]
    return np.ascontiguousarray(out).astype(np.float32)
