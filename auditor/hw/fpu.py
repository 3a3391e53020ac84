"""An in-order FPU core running the Conv / Gemm MAC loops, with an exact or Ax-FPM multiplier.

Guesmi et al., "Defensive Approximation" (Table 7, 45 nm PTM, Keysight ADS): the Ax-FPM float32
multiplier costs 0.487x the energy and 0.29x the delay of a conventional (exact) float32
multiplier (its 24x24 AMA5 mantissa array alone: 0.395x / 0.235x, Table 9).  The paper gives
only these multiplier-level factors; the core around it is this module's model.

Loop model (dense: every product is computed, zeros and padding taps included)
-------------------------------------------------------------------------------
Direct convolution (Gemm/MatMul = one output position, K = input features).  For every output
value an inner-product loop over its K = C/group x KH x KW products, unrolled ``unroll`` times::

    for each output:                                # output_overhead_cycles / _instructions
        acc = 0                                     #   (acc init, bias add, store, outer loop)
        for j in range(ceil(K / unroll)):           # loop_cycles / loop_instructions per iteration
            repeat unroll times:
                ld    a, [act + i]                  # load_cycles
                ld    w, [wgt + i]                  # load_cycles
                fmul  t, a, w                       # multiplier: see below
                fadd  acc, acc, t                   # fadd_cycles (accumulator dependence)

Multiplier latency: the exact multiplier takes ``fmul_cycles``.  The Ax-FPM's combinational
delay is ``delay factor`` x that of the exact one, so at the same clock it needs
``max(1, ceil(fmul_cycles x factor))`` cycles (pipeline stages).  That saves cycles only when the
multiplier is on the loop's critical path (``multiplier_on_critical_path``: the in-order core
waits for the product before the dependent fadd, no software pipelining); otherwise the
multiply is overlapped and costs one issue cycle whatever its latency.

Energy: each multiply costs ``e_fmul_pj`` x the energy factor of the multiplier; each product is
accumulated by the FP adder (``e_fadd_pj``); each load / store an L1 access (``e_load_pj``); every
executed instruction ``e_instruction_pj`` (fetch, decode, register file, control); loop-control /
pointer instructions also ``e_alu_pj``; plus ``static_power_w`` x time.  Energy breakdown keys:
``multiply``, ``add``, ``memory``, ``instruction``, ``alu`` and ``static``.

Which layers use the approximate multiplier: by default every Conv and Gemm layer (the Ax-FPM
default of :class:`auditor.axfpm.execute.ApproxModel`; MatMul and ConvTranspose stay exact);
:meth:`FpuModel.from_profile` (or setting ``approx_layers``) restricts it to the profile's
``approx.layers``.

The cost does not depend on the input values: ``cycles == dense_cycles``, the same for every
input (the CostResult interface is kept so reports and searches treat it like any other machine).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..axfpm.variants import BY_NAME, MULTIPLIERS, SOURCE as _SRC_DA, VARIANTS
from ..errors import AuditorError
from ..model.layers import ComputeLayer
from ..schema import field
from .base import CostModel, CostResult, check_acts, cost_model, lower
from .energies import energy_field

#: (energy factor, delay factor) of each multiplier variant relative to the exact float32
#: multiplier (:data:`auditor.axfpm.variants.VARIANTS`); the model reads them from its Params
#: (energy_factor_da, delay_factor_da, ...), whose defaults they are
FACTORS = {v.name: (v.energy_factor, v.delay_factor) for v in VARIANTS}
#: ops the Ax-FPM executes by default (as ApproxModel)
DEFAULT_APPROX_OPS = ("Conv", "Gemm")


def _factor(variant: str, which: str, doc: str):
    """A Params field defaulting to the ``which`` ("energy" or "delay") factor of ``variant``."""
    v = BY_NAME[variant]
    note = "; flat-ama5: " + BY_NAME["flat-ama5"].source if variant == "da-reference" else ""
    return field(getattr(v, f"{which}_factor"), doc=doc, unit="ratio", source=v.source + note)


@dataclass
class FpuParams:
    """In-order core with a scalar float32 FPU whose multiplier is exact or Ax-FPM."""

    multiplier: str = field("da-reference", doc="multiplier of the FPU: " + ", ".join(
        f"{v.name} ({v.doc})" for v in VARIANTS) + "; selects the energy and delay factors",
                            unit="variant", source=_SRC_DA)
    energy_factor_da: float = _factor("da-reference", "energy", "energy of one Ax-FPM multiply relative to the exact "
                                                                "multiplier (used for da-reference and flat-ama5)")
    delay_factor_da: float = _factor("da-reference", "delay", "delay of the Ax-FPM relative to the exact multiplier "
                                                              "(used for da-reference and flat-ama5)")
    energy_factor_bf16: float = _factor("bfloat16", "energy", "energy of one bfloat16 multiply relative to the exact "
                                                              "float32 multiplier (used for bfloat16)")
    delay_factor_bf16: float = _factor("bfloat16", "delay", "delay of the bfloat16 multiplier relative to the exact "
                                                            "float32 multiplier (used for bfloat16)")
    clock_hz: float = field(1.0e+9, doc="core clock frequency (not changed by the multiplier: other paths set it)",
                            unit="Hz", source="assumption (the paper evaluates the multiplier alone)")
    fmul_cycles: int = field(4, doc="latency of the exact float32 multiplier", unit="cycles",
                             source="assumption (3-5 cycles on in-order cores with a pipelined FPU)")
    multiplier_on_critical_path: bool = field(True, doc="the loop waits for each product (in-order, no software "
                                                        "pipelining): the multiplier latency is paid per MAC; "
                                                        "false: one issue cycle per multiply whatever its latency",
                                              unit="bool", source="assumption")
    fadd_cycles: int = field(3, doc="latency of the FP add accumulating each product (accumulator dependence)",
                             unit="cycles", source="assumption (3-4 cycles on in-order cores)")
    load_cycles: int = field(1, doc="cycles of an L1-hit load (activation or weight) or store", unit="cycles",
                             source="assumption (pipelined L1 hit)")
    unroll: int = field(4, doc="products per inner-loop iteration (loop control paid once per iteration)",
                        unit="MACs", source="assumption")
    loop_instructions: int = field(3, doc="loop-control / pointer instructions per inner-loop iteration "
                                          "(index update, counter, conditional branch)",
                                   unit="instructions", source="assumption")
    loop_cycles: int = field(3, doc="cycles of those loop-control instructions per iteration (predicted branch)",
                             unit="cycles", source="assumption")
    output_instructions: int = field(8, doc="instructions per output value outside the inner loop (accumulator "
                                            "init, bias load and add, store, outer-loop control)",
                                     unit="instructions", source="assumption")
    output_overhead_cycles: int = field(10, doc="cycles of those per-output instructions (incl. the bias fadd latency)",
                                        unit="cycles", source="assumption")
    e_fmul_pj: float = energy_field("core45.fp32_mul")
    e_fadd_pj: float = energy_field("core45.fp32_add", "energy of one FP add (each product accumulated, and the bias)",
                                    " (the emulation accumulates in float64: assumption that the hardware adder is "
                                    "float32)")
    e_load_pj: float = energy_field("core45.l1_access")
    e_instruction_pj: float = energy_field("core45.instruction")
    e_alu_pj: float = energy_field("core45.int_alu", "integer ALU / branch operation (loop control)")
    static_power_w: float = energy_field("core45.static")

    def validate(self) -> None:
        if self.multiplier not in MULTIPLIERS:
            raise ValueError(f"multiplier must be one of {', '.join(MULTIPLIERS)}, got {self.multiplier!r}")
        if self.clock_hz <= 0:
            raise ValueError(f"clock_hz must be > 0, got {self.clock_hz}")
        for name in ("fmul_cycles", "unroll"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("fadd_cycles", "load_cycles", "loop_instructions", "loop_cycles", "output_instructions",
                     "output_overhead_cycles"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("energy_factor_da", "delay_factor_da", "energy_factor_bf16", "delay_factor_bf16"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in (0, 1], got {getattr(self, name)}")
        for name in ("e_fmul_pj", "e_fadd_pj", "e_load_pj", "e_instruction_pj", "e_alu_pj", "static_power_w"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    def factors(self) -> tuple[float, float]:
        """(energy factor, delay factor) of the configured multiplier relative to the exact one."""
        if self.multiplier == "exact":
            return 1.0, 1.0
        if self.multiplier == "bfloat16":
            return float(self.energy_factor_bf16), float(self.delay_factor_bf16)
        return float(self.energy_factor_da), float(self.delay_factor_da)

    def mul_cycles(self, approximate: bool) -> int:
        """Cycles one multiply adds to a MAC (its latency on the critical path, else one issue cycle)."""
        if not self.multiplier_on_critical_path:
            return 1
        delay = self.factors()[1] if approximate else 1.0
        return max(1, math.ceil(self.fmul_cycles * delay - 1e-9))

    def mac_cycles(self, approximate: bool) -> int:
        """Cycles of one product inside the inner loop, loop control excluded."""
        return 2 * self.load_cycles + self.mul_cycles(approximate) + self.fadd_cycles


@cost_model("axfpm")
class FpuModel(CostModel):
    """In-order FPU core with an exact or Ax-FPM multiplier: the cost is the same for every input."""

    Params = FpuParams

    @property
    def input_independent(self) -> bool:
        return True  # every product is computed: cycles == dense_cycles for every input

    def __init__(self, params=None, approx_layers=None):
        super().__init__(params)
        #: names of the layers computed on the configured multiplier; None = every Conv and Gemm
        self.approx_layers = None if approx_layers is None else set(approx_layers)

    @classmethod
    def from_profile(cls, profile) -> "FpuModel":
        """The model of a hardware profile, restricted to its ``approx.layers``; the profile's
        ``approx.multiplier`` must agree with ``params.multiplier``."""
        params = profile.params
        approx = getattr(profile, "approx", None)
        layers = None
        if approx is not None:
            if approx.multiplier != params.multiplier:
                raise AuditorError(f"approx.multiplier {approx.multiplier!r} differs from params.multiplier "
                                   f"{params.multiplier!r}", where=getattr(profile, "path", "") or "profile")
            layers = approx.layers
        return cls(params, layers)

    def is_approximate(self, layer: ComputeLayer) -> bool:
        if self.params.multiplier == "exact":
            return False
        if self.approx_layers is None:
            return layer.op_type in DEFAULT_APPROX_OPS
        return layer.name in self.approx_layers

    def layer_cost(self, layer: ComputeLayer) -> dict:
        """Cycles and energies [pJ] of one inference of ``layer`` (plain numbers)."""
        p = self.params
        outputs = int(np.prod(layer.output_shape))
        macs = int(layer.macs)
        k = -(-macs // outputs) if outputs else 0  # products per output
        iters = outputs * (-(-k // p.unroll))
        approx = self.is_approximate(layer)
        e_factor = p.factors()[0] if approx else 1.0
        cycles = macs * p.mac_cycles(approx) + iters * p.loop_cycles + outputs * p.output_overhead_cycles
        instructions = 4 * macs + iters * p.loop_instructions + outputs * p.output_instructions
        return {
            "cycles": int(cycles),
            "approximate": approx,
            "multiply": macs * p.e_fmul_pj * e_factor,
            "add": (macs + outputs) * p.e_fadd_pj,
            "memory": (2 * macs + 2 * outputs) * p.e_load_pj,  # two loads per MAC; bias load + store
            "instruction": instructions * p.e_instruction_pj,
            "alu": (iters * p.loop_instructions) * p.e_alu_pj,
        }

    def simulate(self, layers: list[ComputeLayer], acts: dict[str, np.ndarray]) -> CostResult:
        n = check_acts(layers, acts)
        for layer in layers:  # the shapes must fit even though the values do not matter
            lower(layer, acts[layer.input][:1])
        costs = [self.layer_cost(layer) for layer in layers]
        cycles = np.tile(np.array([c["cycles"] for c in costs], np.int64), (n, 1))
        parts = {}
        for key in ("multiply", "add", "memory", "instruction", "alu"):
            row = np.array([c[key] for c in costs], np.float64) * 1e-12
            parts[key] = np.tile(row, (n, 1))
        return CostResult.build([layer.name for layer in layers], cycles, cycles.copy(), parts,
                                self.params.clock_hz, self.params.static_power_w)


__all__ = ["FpuModel", "FpuParams", "FACTORS"]
