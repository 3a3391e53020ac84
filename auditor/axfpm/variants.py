"""The multiplier variants, listed once: their names (as profiles and scenarios spell them), the
integer codes the numba kernels switch on, and their energy and delay relative to the exact
float32 multiplier (the defaults of the ``axfpm`` cost model, :mod:`auditor.hw.fpu`).

The arithmetic of each variant is documented in :mod:`auditor.axfpm` and implemented in
:mod:`auditor.axfpm.multiplier` (reference: :mod:`auditor.axfpm.gatelevel`).
"""

from __future__ import annotations

from dataclasses import dataclass

_SRC_DA = ("Guesmi et al., Defensive Approximation: Securing CNNs using Approximate Computing, Table 7 "
           "(45 nm PTM, Keysight ADS)")


@dataclass(frozen=True)
class Multiplier:
    """A multiplier variant and its cost relative to the exact float32 multiplier."""

    name: str
    doc: str
    energy_factor: float
    delay_factor: float
    source: str


VARIANTS: tuple[Multiplier, ...] = (
    Multiplier("da-reference", "Ax-FPM as built by the authors", 0.487, 0.29,
               _SRC_DA + ": average energy 0.487, average delay 0.29"),
    # the paper reports no figure for the flat layout: the same cell count and cell type as the
    # hierarchical array are assumed, hence the same factors
    Multiplier("flat-ama5", "flat AMA5 array; same factors assumed", 0.487, 0.29,
               "assumption (same AMA5 cells as da-reference)"),
    Multiplier("exact", "IEEE float32 product", 1.0, 1.0, "by definition"),
    Multiplier("bfloat16", "operands rounded to bfloat16, product in float32", 0.4, 0.4,
               _SRC_DA + ": Bfloat16 average energy 0.4, average delay 0.4"),
)

#: the variant names, in the order of their integer codes
MULTIPLIERS: tuple[str, ...] = tuple(v.name for v in VARIANTS)
#: name -> integer code used inside the numba kernels
VARIANT_CODES: dict[str, int] = {name: code for code, name in enumerate(MULTIPLIERS)}
BY_NAME: dict[str, Multiplier] = {v.name: v for v in VARIANTS}
SOURCE = _SRC_DA

__all__ = ["Multiplier", "VARIANTS", "MULTIPLIERS", "VARIANT_CODES", "BY_NAME", "SOURCE"]
