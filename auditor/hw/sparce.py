"""SparCE: a general-purpose in-order core that skips the instructions of zero activations.

Sen, Jain, Venkataramani, Raghunathan, "SparCE: Sparsity Aware General-Purpose Core Extensions to
Accelerate Deep Neural Networks", IEEE Trans. Computers 68(6), 2019.  An in-order ARMv8-A core
gets a *sparsity register file* (SpRF: one zero bit per register, set when a register is written
with zero) and a *sparsity-aware skip address* table (SASA, 20 entries in the sparsity-attack
paper's setup, Fig. 10b) describing pre-identified instruction sequences that are redundant when a
given register is zero.  When the fetch stage reaches such a sequence and the register is marked
zero it jumps over it, so skipped instructions cost nothing (not even a squash); the loop control
and pointer arithmetic around them still execute.

Loop model (what this module assumes the compiled layer looks like)
-------------------------------------------------------------------
Caffe-style convolution: ``im2col`` (skipped for 1x1 / stride 1 / no padding), then for every
group, filter m and output position p an inner-product loop over the reduction index
k = (c, ky, kx) (kernel column fastest, as in Caffe's im2col rows), ``simd_width`` elements per
iteration::

    for m, p:                                       # output_overhead_cycles per output
        for j in range(ceil(K_g / V)):              # V = simd_width
            ld   a, [act + i]                       # load_cycles (sets the SpRF bit: all lanes 0)
            ld   w, [wgt + i]                       # load_cycles   } skippable sequence: skipped
            fmadd/fmla acc, a, w                    # mac_cycles    } when every lane of a is 0
            add  i, i, V                            # pointer_instructions x alu_cycles
            cmp / b.ne                              # loop_instructions x branch_cycles

(both loads use register-offset addressing from one shared index, so skipping the weight load
does not skip any pointer update).  ``mac_cycles`` includes the in-order stalls of the multiply-
accumulate (load-use on the weight just loaded, FP pipeline dependence on the accumulator).

Calibration: with the scalar defaults one iteration takes 1+1+5+1+2 = 10 cycles of which 6 are
skippable; the SIMD profile (``hwprofiles/sparce_simd4.yaml``) uses mac_cycles 4 and 12 cycles of
per-output overhead (horizontal reduction).  These were chosen (within plausible in-order
latencies) so that the bundled plain_cnn and bn_resnet models save 19-31 % (scalar) and 8-15 %
(SIMD) of their compute-layer time on clean test digits, the ranges Sen et al. report for typical
DNNs; a model whose activations have fewer zeros saves less (lenet5: ~12 % / ~4 %).

SIMD lanes group V consecutive activations along this innermost (reduction) loop, in im2col order
(kernel column fastest, then kernel row, then channel); the last vector of a window is padded with
zero lanes; zero padding of the convolution is made of zeros in the im2col matrix.  Fully connected
layers are the same loop with one output position (skipped only if ``skip_fc``).

SASA capacity: each compiled kernel has ``unroll`` distinct copies of the skippable sequence
(distinct PCs), each needing one SASA entry.  Kernels are one shared convolution kernel and one
shared fully-connected kernel (Caffe calls the same GEMM for every layer), or one per layer with
``kernel_per_layer``.  Entries are handed out in layer order; when they run out, a kernel gets
only the remaining u < unroll entries, and iteration j can skip only if ``j mod unroll < u``
(the other unrolled copies always execute).  ``sasa_entries: 0`` turns skipping off.

Energy: every executed instruction costs ``e_instruction_pj`` (fetch, decode, register file,
control) plus its operation (load/store, multiply-accumulate, integer/branch); skipped
instructions are never fetched and cost nothing.  Plus ``static_power_w`` x time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np

from ..model.layers import ComputeLayer
from ..schema import field
from .base import (ConvGeom, CostModel, CostResult, check_acts, cost_model, inside_columns, kernel_threads, lower,
                   nonzero_mask, per_layer, window_reads)
from .energies import energy_field

_SRC_SPARCE = "Sen et al., SparCE, IEEE TC 2019"
_SRC_ATTACK = "Krithivasan et al., Adversarial Sparsity Attacks, Sec. V Fig. 10b"


@dataclass
class SparceParams:
    """In-order ARMv8-A core with SparCE extensions (Sen et al., IEEE TC 2019); its energies are the
    45 nm ones of :mod:`auditor.hw.energies` (the core's technology node is an assumption)."""

    clock_hz: float = field(1.0e9, doc="core clock frequency", unit="Hz",
                            source="assumption (the attack paper gives no SparCE clock; 1 GHz as its Cnvlutin)")
    simd_width: int = field(1, doc="activations per inner-loop iteration (1: scalar, 4: 128-bit NEON fp32); "
                                   "a skip needs all lanes zero", unit="lanes",
                            source=_SRC_SPARCE + " (scalar and 4-way SIMD ARMv8 evaluations)")
    sasa_entries: int = field(20, doc="SASA table entries (skippable sequences the core can track; 0 disables skipping)",
                              unit="entries", source=_SRC_ATTACK + " (20 SASA entries, 32 SpRF entries)")
    unroll: int = field(4, doc="inner-loop unroll factor; each unrolled copy of the skippable sequence needs its own "
                               "SASA entry", unit="copies", source="assumption")
    kernel_per_layer: bool = field(False, doc="each layer runs its own compiled kernel (needs its own SASA entries); "
                                              "otherwise one shared conv kernel and one shared FC kernel",
                                   unit="bool", source="assumption (Caffe uses one im2col+GEMM routine)")
    skip_fc: bool = field(True, doc="skip zero activations in fully connected layers too", unit="bool",
                          source=_SRC_SPARCE + " (skips any zero-operand sequence)")
    load_cycles: int = field(1, doc="cycles of a load that hits the L1 D-cache (activation or weight)", unit="cycles",
                             source="assumption (in-order ARMv8, pipelined L1 hit)")
    mac_cycles: int = field(5, doc="cycles of the multiply-accumulate (fmadd / fmla), incl. the in-order stalls "
                                   "(load-use on the weight, accumulator dependence)", unit="cycles",
                            source="assumption, calibrated to the savings range of " + _SRC_SPARCE)
    pointer_instructions: int = field(1, doc="pointer/index-update instructions per iteration (one shared index "
                                             "for activations and weights)", unit="instructions", source="assumption")
    alu_cycles: int = field(1, doc="cycles of an integer ALU instruction", unit="cycles", source="assumption")
    loop_instructions: int = field(2, doc="loop-control instructions per iteration (counter update, conditional branch)",
                                   unit="instructions", source="assumption")
    branch_cycles: int = field(1, doc="cycles of a loop-control instruction (predicted branch)", unit="cycles",
                               source="assumption")
    output_overhead_cycles: int = field(8, doc="cycles per output value outside the inner loop (accumulator init, "
                                               "SIMD reduction, bias, store, outer-loop control), one instruction "
                                               "per cycle", unit="cycles", source="assumption")
    im2col_cycles_per_element: int = field(3, doc="cycles per element written by im2col (load, store, index update), "
                                                  "one instruction per cycle", unit="cycles", source="assumption")
    e_instruction_pj: float = energy_field("core45.instruction")
    e_load_pj: float = energy_field("core45.l1_access")
    e_mac_pj: float = energy_field("core45.fp32_mac")
    e_alu_pj: float = energy_field("core45.int_alu")
    static_power_w: float = energy_field("core45.static")

    def validate(self) -> None:
        if self.simd_width < 1:
            raise ValueError(f"simd_width must be >= 1, got {self.simd_width}")
        if self.unroll < 1:
            raise ValueError(f"unroll must be >= 1, got {self.unroll}")
        if self.clock_hz <= 0:
            raise ValueError(f"clock_hz must be > 0, got {self.clock_hz}")
        for name in ("sasa_entries", "load_cycles", "mac_cycles", "pointer_instructions", "alu_cycles",
                     "loop_instructions", "branch_cycles", "output_overhead_cycles", "im2col_cycles_per_element"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("e_instruction_pj", "e_load_pj", "e_mac_pj", "e_alu_pj", "static_power_w"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


# ----------------------------------------------------------------------------------------------
# numba kernel
# ----------------------------------------------------------------------------------------------


@numba.njit(cache=True, parallel=True, nogil=True)
def sparce_skips(nz, group, KH, KW, sh, sw, pt, pl, dh, dw, OH, OW, V, unroll, covered):
    """Skippable inner-loop iterations of one filter, summed over groups and output positions.

    nz: (N, C, H, W) uint8 non-zero mask.  For every output position the reduction index
    t = (c, ky, kx) runs with kx fastest; iteration j covers t in [jV, jV + V) (the last one padded
    with zero lanes) and skips if all its lanes are zero and ``j % unroll < covered``.
    The iteration structure does not depend on the output position, so the kernel ORs the lanes of
    iteration j into a plane of all output positions at once.  Returns (N,) int64.
    """
    N, C, H, W = nz.shape
    cg = C // group
    kk = KH * KW
    K = cg * kk
    nvec = (K + V - 1) // V
    out = np.zeros(N, dtype=np.int64)
    for n in numba.prange(N):
        acc = np.empty((OH, OW), dtype=np.uint8)
        s = 0
        for g in range(group):
            for j in range(nvec):
                if j % unroll >= covered:
                    continue
                if V > 1:
                    acc[:, :] = 0
                z = 0  # V == 1: non-zeros seen; V > 1: vectors with a non-zero lane
                t1 = min(K, (j + 1) * V)
                for t in range(j * V, t1):
                    c = t // kk
                    r = t - c * kk
                    ky = r // KW
                    kx = r - ky * KW
                    x0 = kx * dw - pl
                    lo, hi = inside_columns(x0, W, OW, sw)
                    plane = nz[n, g * cg + c]
                    for oy in range(OH):
                        iy = oy * sh - pt + ky * dh
                        if iy < 0 or iy >= H:
                            continue
                        row = plane[iy]
                        if V == 1:
                            if sw == 1:
                                for ox in range(lo, hi):
                                    z += row[ox + x0]
                            else:
                                for ox in range(lo, hi):
                                    z += row[ox * sw + x0]
                        else:
                            arow = acc[oy]
                            if sw == 1:
                                for ox in range(lo, hi):
                                    arow[ox] |= row[ox + x0]
                            else:
                                for ox in range(lo, hi):
                                    arow[ox] |= row[ox * sw + x0]
                if V > 1:
                    for oy in range(OH):
                        for ox in range(OW):
                            z += acc[oy, ox]
                s += OH * OW - z
        out[n] = s
    return out


def sparce_skips_reference(x, geom: ConvGeom, V: int, unroll: int, covered: int):
    """Slow pure-Python version of :func:`sparce_skips`: builds the im2col matrix and counts (tests)."""
    N = x.shape[0]
    cg = geom.C // geom.group
    out = np.zeros(N, dtype=np.int64)
    for n in range(N):
        s = 0
        for g in range(geom.group):
            for oy in range(geom.OH):
                for ox in range(geom.OW):
                    col = []
                    for c in range(cg):
                        for ky in range(geom.KH):
                            for kx in range(geom.KW):
                                iy = oy * geom.sh - geom.pt + ky * geom.dh
                                ix = ox * geom.sw - geom.pl + kx * geom.dw
                                ok = 0 <= iy < geom.H and 0 <= ix < geom.W
                                col.append(float(x[n, g * cg + c, iy, ix]) if ok else 0.0)
                    col += [0.0] * ((-len(col)) % V)
                    for j in range(len(col) // V):
                        if all(v == 0.0 for v in col[j * V:(j + 1) * V]) and j % unroll < covered:
                            s += 1
        out[n] = s
    return out


def sasa_coverage(layers: list[ComputeLayer], p: SparceParams) -> list[int]:
    """Unrolled copies (0..unroll) of each layer's skippable sequence that got a SASA entry."""
    free = p.sasa_entries
    given: dict[str, int] = {}
    cov = []
    for layer in layers:
        if not layer.is_conv and not p.skip_fc:
            cov.append(0)
            continue
        kernel = layer.name if p.kernel_per_layer else ("conv" if layer.is_conv else "fc")
        if kernel not in given:
            given[kernel] = min(p.unroll, free)
            free -= given[kernel]
        cov.append(given[kernel])
    return cov


@cost_model("sparce")
class SparceModel(CostModel):
    """SparCE in-order core (see the module docstring for the loop and energy model)."""

    Params = SparceParams

    @property
    def input_independent(self) -> bool:
        return self.params.sasa_entries == 0  # no SASA entry: nothing is ever skipped

    def simulate(self, layers: list[ComputeLayer], acts: dict[str, np.ndarray]) -> CostResult:
        p = self.params
        n = check_acts(layers, acts)
        L = len(layers)
        cov = sasa_coverage(layers, p)
        V = p.simd_width
        cycles = np.zeros((n, L), dtype=np.int64)
        dense = np.zeros((n, L), dtype=np.int64)
        keys = ("fetch_decode", "load_store", "mac", "alu_branch")
        e = {k: np.zeros((n, L)) for k in keys}
        skip_cyc = p.load_cycles + p.mac_cycles
        iter_cyc = (2 * p.load_cycles + p.mac_cycles + p.pointer_instructions * p.alu_cycles
                    + p.loop_instructions * p.branch_cycles)
        iter_alu = p.pointer_instructions + p.loop_instructions
        def skips_of(li):  # skipped inner-loop iterations of layer li, all filters; its geometry
            reads = cov[li] >= p.unroll and V == 1
            x4, g = lower(layers[li], acts[layers[li].input], finite=not reads)
            if reads:
                # every iteration may skip, and one iteration reads one value: the skips are the
                # zero (or padding) reads of all windows (which also checks the values are finite)
                with kernel_threads(x4.size):
                    reads = window_reads(x4, g, 0.0, layers[li])
                return g, (g.group * g.Cg * g.KH * g.KW * g.OH * g.OW - reads) * g.Mg
            if cov[li] > 0:
                with kernel_threads(x4.size * g.KH * g.KW):
                    return g, sparce_skips(nonzero_mask(x4), g.group, g.KH, g.KW, g.sh, g.sw, g.pt, g.pl, g.dh, g.dw,
                                           g.OH, g.OW, V, p.unroll, cov[li]) * g.Mg
            return g, np.zeros(n, dtype=np.int64)

        per = per_layer(skips_of, L, [acts[lay.input].size * math.prod(lay.kernel) for lay in layers])
        for li, layer in enumerate(layers):
            g, skips = per[li]
            P = g.OH * g.OW
            kg = g.Cg * g.KH * g.KW
            iters = -(-kg // V)
            outputs = g.M * P  # (group, filter, position) triples
            im2col = 0
            if layer.is_conv and not (g.KH == g.KW == 1 and g.sh == g.sw == 1 and g.pt == g.pl == g.pb == g.pr == 0):
                im2col = g.group * kg * P
            d = outputs * (iters * iter_cyc + p.output_overhead_cycles) + im2col * p.im2col_cycles_per_element
            dense[:, li] = d
            cycles[:, li] = d - skips * skip_cyc
            # executed instructions
            it = float(outputs * iters)
            loads = 2 * it - skips + im2col * 2  # activation + weight loads; im2col load + store
            macs = it - skips
            alu = it * iter_alu + im2col * max(p.im2col_cycles_per_element - 2, 0) \
                + outputs * max(p.output_overhead_cycles - 1, 0)  # output overhead: one store + ALU/branch
            loads = loads + outputs  # the output store
            instr = loads + macs + alu
            pj = 1e-12
            e["fetch_decode"][:, li] = instr * p.e_instruction_pj * pj
            e["load_store"][:, li] = loads * p.e_load_pj * pj
            e["mac"][:, li] = macs * p.e_mac_pj * pj
            e["alu_branch"][:, li] = alu * p.e_alu_pj * pj
        return CostResult.build([lay.name for lay in layers], cycles, dense, e, p.clock_hz, p.static_power_w)
