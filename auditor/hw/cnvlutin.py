"""Cnvlutin (CNV): a DaDianNao-style accelerator that skips zero-valued input activations.

Albericio et al., "Cnvlutin: Ineffectual-Neuron-Free Deep Neural Network Computing", ISCA 2016.
The sparsity-attack paper (Krithivasan, Sen, Raghunathan; shared/papers/000, Sec. V, Fig. 10a)
evaluates on a cycle-accurate Cnvlutin simulator at 1 GHz, 65 nm, 70 mm^2, 16 PEs; those are the
defaults here.

Organisation (all sizes are parameters)
---------------------------------------
``units`` (16) units each with ``neuron_lanes`` (16) neuron lanes, and every neuron lane feeds
``filter_lanes`` (16) filter lanes (one multiplier per filter).  All units and lanes see the same
input activations (broadcast) and work on different filters: one *pass* over the input computes
``units x filter_lanes`` (256) filters of a group, so a layer needs
``passes = ceil(M_g / (units x filter_lanes))`` passes per group, each re-reading the input.

Zero-free neuron array format (ZFNAf)
-------------------------------------
Activations are split into *bricks* of ``brick_size`` (16) consecutive channels at one (y, x)
position (the last brick of a group may be shorter: its *occupancy*).  A brick stores only its
non-zero values with their in-brick offsets.  A neuron lane consumes one (value, offset) entry
per cycle, multiplying it by the matching weights of its filter lanes.

*Narrow layers* (``pack_narrow_layers``, default on): when a group has fewer channels than a brick
(the grey-scale image of the first layer has one), one-channel bricks would make every brick cost
one cycle whether it is zero or not, so nothing could be skipped.  Such a window (K_w = KH x KW x C_g
values in (ky, kx, c) order, c fastest) is instead cut into bricks of
``b = min(brick_size, ceil(K_w / neuron_lanes))`` consecutive values, spreading it evenly over the
lanes (a 5x5 grey-scale window: 13 bricks of 2 values, one step of 1 or 2 cycles).  Assumption: the
input is laid out window-packed; Cnvlutin's own networks are wide except the RGB input layer.

Schedule of one window (the choices this model makes)
-----------------------------------------------------
* **Lane assignment.**  The bricks of an output position's window are listed channel-brick
  fastest, then kernel column, then kernel row: (ky, kx, cb).  Consecutive runs of
  ``neuron_lanes`` bricks form a *step*; brick i of a step goes to lane i.  When a group has a
  multiple of ``neuron_lanes`` channel bricks (C_g >= 256 by default) every step is one kernel
  position with the channel dimension partitioned across the lanes, as in Cnvlutin; for narrower
  layers a step also takes the bricks of the next kernel positions, so the lanes are not left
  idle (assumption: the dispatcher fills lanes along the window).
* **Lock-step.**  The lanes of the units advance together from step to step (the dispatcher
  broadcasts the next bricks to all units), so a step costs the largest per-lane cost of its
  bricks; idle lanes (last step of a window) cost nothing.
* **Minimum slot.**  A brick costs ``max(nnz, min_slot_cycles)`` cycles: with the default 1, an
  all-zero brick still occupies its lane for one cycle (the lane has to receive and retire the
  empty brick before the dispatcher moves on), so a step costs at least one cycle.  The same
  number of (value, offset) entries is read from the neuron buffer.  Set 0 to make all-zero steps
  free.
* **Zero padding** is stored as explicit zeros (all-zero bricks): it costs the minimum slot per
  brick, like any other zero brick; the dense machine multiplies padding like data.
* **Strides / dilation** only select which positions form the window; **groups** are separate
  convolutions with C/group channels and M/group filters each (windows never mix groups);
  **ConvTranspose** is lowered to a stride-1 convolution over the zero-inserted input
  (:func:`auditor.hw.base.lower`), whose inserted zeros are skipped.
* **Fully connected** (Gemm/MatMul) layers are a single 1x1 window over a (K, 1, 1) input (a
  MatMul over (rows, K) has one window per row); they run dense (each brick costs its occupancy)
  unless ``skip_fc`` is true.  Convolutions always skip,
  including the first layer when its input has zeros (e.g. MNIST background pixels).

The dense machine (``dense_cycles`` and :mod:`auditor.hw.dense`) is the same organisation with
every brick costing its occupancy.

Energy (dynamic, per event) + static power x time
-------------------------------------------------
* ``mac``: one MAC per effectual (non-zero) activation and filter: nnz visits x M_g;
* ``synapse_buffer``: the weights of those MACs are read from the synapse buffer (skipped zeros read
  no weights);
* ``neuron_buffer``: per pass, every brick's entries (values + offsets, at least ``min_slot``) are
  read, and the layer's output is written once (values + offsets);
* ``offchip``: the network input is read from DRAM and the network output written back; weights
  come from DRAM on every inference only if ``weights_on_chip`` is false (DaDianNao keeps all
  synapses in on-chip eDRAM);
* ``static``: ``static_power_w`` x latency.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from ..model.layers import ComputeLayer
from ..schema import field
from .base import ConvGeom, CostModel, CostResult, check_finite, cost_model, nonzero_mask, window_reads
from .dadiannao import SRC_CNV, DaDianNaoParams, simulate


@dataclass
class CnvlutinParams(DaDianNaoParams):
    """Cnvlutin accelerator (Albericio et al., ISCA 2016) as simulated in the sparsity-attack paper."""

    min_slot_cycles: int = field(1, doc="cycles (and neuron-buffer entries) an all-zero brick still costs its lane; "
                                        "a brick costs max(nnz, min_slot_cycles)", unit="cycles",
                                 source="assumption (the lane must receive and retire an empty brick; " + SRC_CNV + ")")
    skip_fc: bool = field(False, doc="skip zeros in fully connected (Gemm/MatMul) layers too; otherwise they run dense",
                          unit="bool", source="assumption (Cnvlutin targets convolutional layers)")
    zero_threshold: float = field(0.0, doc="activations with |a| <= threshold are ineffectual and skipped "
                                           "(0: exact zeros only)", unit="activation value",
                                  source=SRC_CNV + " (loosened ineffectual-neuron criterion)")
    offset_bits: int = field(4, doc="bits of the in-brick offset stored with each ZFNAf entry", unit="bits",
                             source=SRC_CNV + " (log2 of the brick size)")

    def validate(self) -> None:
        super().validate()
        if not 0 <= self.min_slot_cycles <= self.brick_size:
            raise ValueError(f"min_slot_cycles must be in [0, brick_size], got {self.min_slot_cycles}")
        if self.offset_bits < 0:
            raise ValueError(f"offset_bits must be >= 0, got {self.offset_bits}")
        if self.zero_threshold < 0:
            raise ValueError(f"zero_threshold must be >= 0, got {self.zero_threshold}")


# ----------------------------------------------------------------------------------------------
# numba kernels
# ----------------------------------------------------------------------------------------------


def brick_counts(nz: np.ndarray, group: int, brick: int) -> np.ndarray:
    """Non-zeros per channel brick: nz (N, C, H, W) uint8 -> (N, group * nb, H, W), nb = ceil(C_g / brick)
    (uint8 when a brick holds at most 255 values)."""
    N, C, H, W = nz.shape
    cg = C // group
    nb = -(-cg // brick)
    z = nz.reshape(N, group, cg, H, W)
    if nb * brick != cg:  # pad each group's channels with zeros up to whole bricks
        z = np.concatenate([z, np.zeros((N, group, nb * brick - cg, H, W), dtype=nz.dtype)], axis=2)
    out = z.reshape(N, group * nb, brick, H, W).sum(axis=2, dtype=np.int32)
    return out.astype(np.uint8) if brick <= 255 else out


@numba.njit(cache=True, parallel=True, nogil=True)
def _brick_counts(x, group, brick, threshold):
    N, C, H, W = x.shape
    cg = C // group
    nb = (cg + brick - 1) // brick
    out = np.zeros((N, group * nb, H, W), dtype=np.uint8)
    bad = np.zeros(N * group * nb, dtype=np.int32)
    for task in numba.prange(N * group * nb):
        n = task // (group * nb)
        gb = task - n * (group * nb)
        g = gb // nb
        b = gb - g * nb
        c0 = g * cg + b * brick
        c1 = min(c0 + brick, (g + 1) * cg)
        nf = np.int32(0)
        for iy in range(H):
            for c in range(c0, c1):
                for ix in range(W):
                    v = x[n, c, iy, ix]
                    out[n, gb, iy, ix] += np.uint8(abs(v) > threshold)
                    nf |= np.int32(v - v != 0)
        bad[task] = nf
    return out, bad.any()


def brick_counts_of(x: np.ndarray, group: int, brick: int, threshold: float = 0.0,
                    layer: ComputeLayer | None = None) -> np.ndarray:
    """:func:`brick_counts` of the mask |x| > threshold, counted from the activations ``x``
    (N, C, H, W) float32 in one pass; with ``layer``, a NaN or infinity in ``x`` is
    :func:`~auditor.hw.base.lower`'s error."""
    if brick > 255:
        if layer is not None:
            check_finite(layer, x)
        return brick_counts(nonzero_mask(x, threshold), group, brick)
    out, bad = _brick_counts(x, group, brick, np.float32(threshold))
    if bad and layer is not None:
        check_finite(layer, x)
    return out


@numba.njit(cache=True, parallel=True, nogil=True)
def cnv_schedule(src, group, KH, KW, sh, sw, pt, pl, dh, dw, OH, OW, per_brick, lanes, min_slot):
    """Zero-skipping schedule of every window of a layer, for every input.

    ``src`` (N, group * S, H, W) holds non-zero counts of S *sources* per group and position: the
    channels themselves (a 0/1 mask, window-packed bricks) or whole channel bricks (their counts).
    A window is the sequence (ky, kx, s), s fastest; every ``per_brick`` consecutive sources form a
    brick (the last one of the window may be short), every ``lanes`` consecutive bricks a step.
    A brick costs max(nnz, min_slot), a step the max over its bricks (at least min_slot: a step
    has at least one brick).

    Returns (N, 3) int64: cycles of one pass over all windows, non-zero activation visits, and
    neuron-buffer entries read in one pass (sum over bricks of max(nnz, min_slot)).

    How: the structure of a window does not depend on its output position, so the kernel works
    on a band of output rows at once.  A band's sources are copied, zero-padded, into planes split
    by stride phase (row phase a = input row mod sh, column phase b likewise), where output
    position (oy, ox) of the band reads tap (ky, kx, s) at one fixed offset from index
    oy * Wq + ox: every tap is one contiguous, vectorised pass over the band (the columns
    ox >= OW of the full-width rows are computed and left out of the sums).  Non-zero visits, and
    with one source per brick the entries, are counted once per source pixel, weighted by how
    many windows of the band read it.  One task per (input, group, band), in parallel.
    """
    N, GS, H, W = src.shape
    S = GS // group
    Wq = OW + ((KW - 1) * dw) // sw      # phase columns the windows read
    rext = ((KH - 1) * dh) // sh
    band = max(1, min(OH, 4096 // Wq))   # output rows per task: its buffers stay in cache
    PL = (band + rext + 1) * Wq          # one phase plane of one source (+1 row: the full-width reads)
    nbands = (OH + band - 1) // band
    ntap = KH * KW * S
    toff = np.empty(ntap, dtype=np.uint64)  # offset of each tap, in window order
    need_a = np.zeros(sh, dtype=np.bool_)   # the phases some tap reads
    need_b = np.zeros(sw, dtype=np.bool_)
    t = 0
    for ky in range(KH):
        a = (ky * dh) % sh
        need_a[a] = True
        for kx in range(KW):
            b = (kx * dw) % sw
            need_b[b] = True
            for s in range(S):
                toff[t] = ((s * sh + a) * sw + b) * PL + ((ky * dh) // sh) * Wq + (kx * dw) // sw
                t += 1
    # per column phase b: the phase columns [lo, hi) inside the input, and how many windows
    # (ox, kx) read each of them (mxp) and all of them (msum)
    mxp = np.zeros((sw, Wq), dtype=np.int32)
    for kx in range(KW):
        for ox in range(OW):
            px = ox * sw + kx * dw  # padded column
            if pl <= px < pl + W and px // sw < Wq:
                mxp[px % sw, px // sw] += 1
    lo_b = np.empty(sw, dtype=np.int64)
    hi_b = np.empty(sw, dtype=np.int64)
    msum = np.zeros(sw, dtype=np.int64)
    for b in range(sw):
        lo_b[b] = max(0, (pl - b + sw - 1) // sw)
        hi_b[b] = min(Wq, (W - 1 + pl - b) // sw + 1)
        for col in range(lo_b[b], hi_b[b]):
            msum[b] += mxp[b, col]
    ntask = N * group * nbands
    nchunk = min(ntask, 64)
    parts = np.zeros((ntask, 3), dtype=np.int64)
    Q = band * Wq
    for chunk in numba.prange(nchunk):
        planes = np.empty(S * sh * sw * PL, dtype=np.int32)
        myrow = np.empty((band + rext + 1) * sh, dtype=np.int64)
        cnt = np.empty(Q, dtype=np.int32)    # non-zeros of the current brick
        smax = np.empty(Q, dtype=np.int32)   # largest brick of the current step
        entp = np.empty(Q, dtype=np.int32)   # entries read, per position
        cycp = np.empty(Q, dtype=np.int32)   # cycles, per position
        for task in range(chunk * ntask // nchunk, (chunk + 1) * ntask // nchunk):
            n = task // (group * nbands)
            rest = task - n * (group * nbands)
            g = rest // nbands
            r0 = (rest - g * nbands) * band
            R = min(band, OH - r0)
            QR = R * Wq
            planes[:] = 0
            myrow[:] = 0  # by padded row - r0 * sh: how many windows (oy in the band, ky) read it
            for oy in range(R):
                for ky in range(KH):
                    myrow[oy * sh + ky * dh] += 1
            nnz = 0
            ent = 0
            reads = 0
            # phase row j of row phase a is padded input row (r0 + j) * sh + a; unsigned
            # indices: no negative-index handling in the loops
            for s in range(S):
                sp = src[n, g * S + s]
                for a in range(sh):
                    if not need_a[a]:
                        continue
                    for j in range(R + rext):
                        iy = (r0 + j) * sh + a - pt
                        my = myrow[j * sh + a]  # windows (oy in the band, ky) reading this row
                        if iy < 0 or iy >= H or my == 0:
                            continue
                        uy = np.uint64(iy)
                        for b in range(sw):
                            lo = lo_b[b]
                            hi = hi_b[b]
                            if not need_b[b] or hi <= lo:
                                continue
                            reads += my * msum[b]
                            base = np.uint64(((s * sh + a) * sw + b) * PL + j * Wq + lo)
                            ub = np.uint64(b)
                            ulo = np.uint64(lo)
                            x0 = np.uint64(lo * sw + b - pl)  # input column of phase column lo
                            usw = np.uint64(sw)
                            dv = 0
                            de = 0
                            for k in range(np.uint64(hi - lo)):
                                v = np.int32(sp[uy, x0 + k * usw])
                                planes[base + k] = v
                                mk = mxp[ub, ulo + k]
                                dv += v * mk
                                if per_brick == 1:
                                    de += max(v, min_slot) * mk
                            nnz += my * dv
                            ent += my * de
            uq = np.uint64(QR)
            ms = np.int32(min_slot)
            sm = smax
            cy = cycp
            en = entp
            ct = cnt
            for q in range(uq):
                sm[q] = 0
                cy[q] = 0
                en[q] = 0
            in_step = 0
            t = 0
            while t < ntap:
                o = toff[t]
                if per_brick == 1:
                    for q in range(uq):
                        sm[q] = max(sm[q], planes[o + q])
                    t += 1
                elif per_brick == 2 and t + 1 < ntap:
                    o1 = toff[t + 1]
                    for q in range(uq):
                        v = np.int32(planes[o + q] + planes[o1 + q])
                        en[q] = np.int32(en[q] + max(v, ms))
                        sm[q] = max(sm[q], v)
                    t += 2
                else:
                    t1 = min(t + per_brick, ntap)
                    for q in range(uq):
                        ct[q] = planes[o + q]
                    for u in range(t + 1, t1):
                        o = toff[u]
                        for q in range(uq):
                            ct[q] = np.int32(ct[q] + planes[o + q])
                    for q in range(uq):
                        v = ct[q]
                        en[q] = np.int32(en[q] + max(v, ms))
                        sm[q] = max(sm[q], v)
                    t = t1
                in_step += 1
                if in_step == lanes or t >= ntap:  # close the step
                    for q in range(uq):
                        cy[q] = np.int32(cy[q] + max(sm[q], ms))
                        sm[q] = 0
                    in_step = 0
            cyc = 0
            ent2 = 0
            for r in range(R):
                o = np.uint64(r * Wq)
                for ox in range(np.uint64(OW)):
                    cyc += cy[o + ox]
                    ent2 += en[o + ox]
            if per_brick == 1:
                # one source per brick: its entries were counted per pixel; every (window, tap)
                # that reads padding costs min_slot
                ent += min_slot * (R * OW * ntap - reads)
            else:
                ent = ent2
            parts[task, 0] = cyc
            parts[task, 1] = nnz
            parts[task, 2] = ent
    out = np.zeros((N, 3), dtype=np.int64)
    for task in range(ntask):
        n = task // (group * nbands)
        for k in range(3):
            out[n, k] += parts[task, k]
    return out


def cnv_windows(cnt, group, KH, KW, sh, sw, pt, pl, dh, dw, OH, OW, lanes, min_slot):
    """Schedule with channel bricks: ``cnt`` from :func:`brick_counts` (see :func:`cnv_schedule`)."""
    return cnv_schedule(cnt, group, KH, KW, sh, sw, pt, pl, dh, dw, OH, OW, 1, lanes, min_slot)


def cnv_windows_packed(nz, group, KH, KW, sh, sw, pt, pl, dh, dw, OH, OW, brick, lanes, min_slot):
    """Schedule with window-packed bricks of ``brick`` values: ``nz`` the (N, C, H, W) uint8 mask."""
    return cnv_schedule(nz, group, KH, KW, sh, sw, pt, pl, dh, dw, OH, OW, brick, lanes, min_slot)


def cnv_windows_single(x, geom: ConvGeom, lanes: int, min_slot: int, threshold: float = 0.0,
                       layer: ComputeLayer | None = None) -> np.ndarray:
    """The schedule of window-packed bricks of one value (a depthwise 3x3 layer: 9 values over 16
    lanes) when ``min_slot >= 1``: every brick then costs min_slot whatever its value (0 or 1), so
    cycles and entries do not depend on the data, and the non-zero visits are the mask's window
    reads (:func:`~auditor.hw.base.window_reads` of the activations ``x``).  Same (N, 3) result as
    :func:`cnv_schedule`."""
    total = geom.KH * geom.KW * geom.Cg  # bricks per window
    windows = geom.group * geom.OH * geom.OW
    out = np.empty((len(x), 3), dtype=np.int64)
    out[:, 0] = windows * -(-total // lanes) * min_slot
    out[:, 1] = window_reads(x, geom, threshold, layer)
    out[:, 2] = windows * total * min_slot
    return out


def window_bricks_reference(x, geom: ConvGeom, brick: int, packed: bool, threshold: float = 0.0):
    """Pure-Python list, per (n, group, oy, ox) window, of its bricks as lists of values that count as
    non-zero (|v| > threshold) or not, in lane order (for tests and documentation)."""
    cg = geom.C // geom.group
    wins = []
    for n in range(x.shape[0]):
        for g in range(geom.group):
            for oy in range(geom.OH):
                for ox in range(geom.OW):
                    flags_per_pos = []
                    for ky in range(geom.KH):
                        for kx in range(geom.KW):
                            iy = oy * geom.sh - geom.pt + ky * geom.dh
                            ix = ox * geom.sw - geom.pl + kx * geom.dw
                            ok = 0 <= iy < geom.H and 0 <= ix < geom.W
                            flags_per_pos.append([ok and abs(float(x[n, g * cg + c, iy, ix])) > threshold for c in range(cg)])
                    if packed:
                        flat = [f for pos in flags_per_pos for f in pos]
                        bricks = [flat[i:i + brick] for i in range(0, len(flat), brick)]
                    else:
                        bricks = [pos[i:i + brick] for pos in flags_per_pos for i in range(0, cg, brick)]
                    wins.append((n, bricks))
    return wins


def cnv_windows_reference(x, geom: ConvGeom, lanes: int, brick: int, min_slot: int, threshold: float = 0.0,
                          packed: bool = False):
    """Slow pure-Python version of the Cnvlutin window kernels on the raw activations (N, C, H, W),
    written from the definition: returns (N, 3) [cycles of one pass, non-zero visits, entries read]."""
    out = np.zeros((x.shape[0], 3), dtype=np.int64)
    for n, bricks in window_bricks_reference(x, geom, brick, packed, threshold):
        costs = [max(sum(b), min_slot) for b in bricks]
        out[n, 0] += sum(max(costs[s:s + lanes]) for s in range(0, len(costs), lanes))
        out[n, 1] += sum(sum(b) for b in bricks)
        out[n, 2] += sum(costs)
    return out


def skip_schedule(x4, geom: ConvGeom, packed: bool, brick: int, neuron_lanes: int, min_slot: int,
                  threshold: float, layer: ComputeLayer) -> np.ndarray:
    """(N, 3) schedule of one pass of a zero-skipping layer (the kernel that fits its bricks): the
    :data:`~auditor.hw.dadiannao.Schedule` of the Cnvlutin machine (its kernels check that the
    activations are finite as they count them)."""
    if packed and brick == 1 and min_slot >= 1:
        r = cnv_windows_single(x4, geom, neuron_lanes, min_slot, threshold, layer)
    elif packed:
        check_finite(layer, x4)
        r = cnv_windows_packed(nonzero_mask(x4, threshold), geom.group, geom.KH, geom.KW, geom.sh, geom.sw,
                               geom.pt, geom.pl, geom.dh, geom.dw, geom.OH, geom.OW, brick, neuron_lanes, min_slot)
    else:
        cnt = brick_counts_of(x4, geom.group, brick, threshold, layer)
        r = cnv_windows(cnt, geom.group, geom.KH, geom.KW, geom.sh, geom.sw, geom.pt, geom.pl, geom.dh,
                        geom.dw, geom.OH, geom.OW, neuron_lanes, min_slot)
    return r


@cost_model("cnvlutin")
class CnvlutinModel(CostModel):
    """Cnvlutin: zero-skipping DaDianNao (see the module docstring for the model)."""

    Params = CnvlutinParams

    def simulate(self, layers: list[ComputeLayer], acts: dict[str, np.ndarray]) -> CostResult:
        p = self.params
        return simulate(layers, acts, p, conv_schedule=skip_schedule, fc_schedule=skip_schedule if p.skip_fc else None,
                        min_slot=p.min_slot_cycles, offset_bits=p.offset_bits, threshold=p.zero_threshold)
