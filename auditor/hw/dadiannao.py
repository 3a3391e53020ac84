"""The DaDianNao machine shared by the Cnvlutin and dense cost models.

Chen et al., "DaDianNao: A Machine-Learning Supercomputer", MICRO 2014, as organised by Albericio
et al., Cnvlutin, ISCA 2016 (the organisation is described in :mod:`auditor.hw.cnvlutin`):
``units`` units of ``neuron_lanes`` neuron lanes, each feeding ``filter_lanes`` filter lanes;
activations in *bricks* of ``brick_size`` channels (or window-packed bricks for narrow groups);
``passes`` over the input per group; a step of ``neuron_lanes`` bricks costs its largest brick.

This module holds what both machines share: the parameters and their checks, the geometry of a
window (brick occupancies, packing, passes, the dense cost of a window), the per-layer event
counts and the energy of those events.  A machine differs only in how a layer that skips zeros
is scheduled: :func:`simulate` takes that schedule as a function (Cnvlutin's zero-skipping
kernels); without one every layer runs dense (the DaDianNao baseline).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from ..model.layers import ComputeLayer
from ..schema import field
from .base import ConvGeom, CostResult, check_acts, kernel_threads, lower, per_layer
from .energies import energy_field

SRC_ATTACK = "Krithivasan et al., Adversarial Sparsity Attacks, Sec. V Fig. 10a"
SRC_CNV = "Albericio et al., Cnvlutin, ISCA 2016"
SRC_DADN = "Chen et al., DaDianNao, MICRO 2014"


@dataclass
class DaDianNaoParams:
    """The DaDianNao organisation as simulated in the sparsity-attack paper (Cnvlutin's machine)."""

    clock_hz: float = field(1.0e9, doc="clock frequency", unit="Hz", source=SRC_ATTACK + " (1 GHz)")
    units: int = field(16, doc="units (PEs / DaDianNao tiles); they process different filters", unit="count",
                       source=SRC_ATTACK + " (16 PEs); " + SRC_CNV)
    neuron_lanes: int = field(16, doc="neuron lanes per unit; each consumes one activation (Cnvlutin: one non-zero "
                                      "activation) per cycle", unit="count", source=SRC_CNV)
    filter_lanes: int = field(16, doc="filter lanes per neuron lane (filters computed in parallel per unit)",
                              unit="count", source=SRC_CNV)
    brick_size: int = field(16, doc="activations per brick (consecutive channels at one position) in ZFNAf",
                            unit="activations", source=SRC_CNV)
    pack_narrow_layers: bool = field(True, doc="when a group has fewer channels than brick_size (e.g. a grey-scale "
                                               "or RGB image), its windows are cut into bricks of "
                                               "min(brick_size, ceil(window values / neuron_lanes)) consecutive "
                                               "values in (ky, kx, c) order instead of one short brick per position",
                                     unit="bool", source="assumption (narrow inputs laid out window-packed, so their "
                                                         "zeros can be skipped; " + SRC_CNV + " bricks are 16 channels)")
    value_bits: int = field(16, doc="bits per activation and per weight (fixed point)", unit="bits",
                            source=SRC_CNV + " (16-bit fixed point, as DaDianNao)")
    e_mac_pj: float = energy_field("dadn65.mac16")
    e_synapse_read_pj_per_byte: float = energy_field("dadn65.synapse_read")
    e_neuron_read_pj_per_byte: float = energy_field("dadn65.neuron_read")
    e_neuron_write_pj_per_byte: float = energy_field("dadn65.neuron_write")
    e_dram_pj_per_byte: float = energy_field("dram.access")
    weights_on_chip: bool = field(True, doc="all weights resident on chip (no per-inference DRAM weight traffic)",
                                  unit="bool", source=SRC_DADN + ": synapses in on-chip eDRAM")
    static_power_w: float = energy_field("dadn65.static")

    def validate(self) -> None:
        for name in ("units", "neuron_lanes", "filter_lanes", "brick_size", "value_bits"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.clock_hz <= 0:
            raise ValueError(f"clock_hz must be > 0, got {self.clock_hz}")
        for name in ("e_mac_pj", "e_synapse_read_pj_per_byte", "e_neuron_read_pj_per_byte",
                     "e_neuron_write_pj_per_byte", "e_dram_pj_per_byte", "static_power_w"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


# ----------------------------------------------------------------------------------------------
# Geometry of a window
# ----------------------------------------------------------------------------------------------


def window_occupancy(geom: ConvGeom, brick: int, packed: bool) -> np.ndarray:
    """Occupancy (values held) of each brick of one window, in lane order."""
    if packed:
        kw = geom.KH * geom.KW * geom.Cg
        occ = np.full(-(-kw // brick), brick, dtype=np.int64)
        occ[-1] = kw - brick * (len(occ) - 1)
        return occ
    nb = -(-geom.Cg // brick)
    occ = np.full(nb, brick, dtype=np.int64)
    occ[-1] = geom.Cg - brick * (nb - 1)
    return np.tile(occ, geom.KH * geom.KW)


def is_packed(geom: ConvGeom, brick: int, pack_narrow: bool) -> bool:
    """Whether the layer uses window-packed bricks (narrow groups with pack_narrow_layers)."""
    return bool(pack_narrow) and geom.Cg < brick and geom.KH * geom.KW > 1


def packed_brick_size(geom: ConvGeom, brick: int, lanes: int) -> int:
    """Brick length of a window-packed layer: the window spread evenly over the lanes, at most ``brick``."""
    return max(1, min(brick, -(-(geom.KH * geom.KW * geom.Cg) // lanes)))


def dense_window_cycles(geom: ConvGeom, lanes: int, brick: int, packed: bool = False) -> int:
    """Cycles of one window when every brick costs its occupancy (no skipping)."""
    seq = window_occupancy(geom, brick, packed)
    pad = (-len(seq)) % lanes
    if pad:
        seq = np.concatenate([seq, np.zeros(pad, dtype=np.int64)])
    return int(seq.reshape(-1, lanes).max(axis=1).sum())


def passes(geom: ConvGeom, units: int, filter_lanes: int) -> int:
    """Passes over the input per group: ceil(M_g / (units * filter_lanes))."""
    return -(-geom.Mg // (units * filter_lanes))


# ----------------------------------------------------------------------------------------------
# Events and energy
# ----------------------------------------------------------------------------------------------

#: the zero-skipping schedule of one pass of a layer: (x4, geom, packed, brick, lanes, min_slot,
#: threshold, layer) -> (N, 3) int64 [cycles, non-zero visits, neuron-buffer entries read]; it
#: raises :func:`~auditor.hw.base.lower`'s error for a NaN or infinity in ``x4`` (it reads every value)
Schedule = Callable[[np.ndarray, ConvGeom, bool, int, int, int, float, ComputeLayer], np.ndarray]


@dataclass
class LayerEvents:
    """Cycle and event counts of one layer for a batch of N inputs."""

    cycles: np.ndarray  # (N,) int64
    dense_cycles: int
    nnz_visits: np.ndarray  # (N,) activations multiplied (per filter of the group)
    entries: np.ndarray  # (N,) neuron-buffer entries read over all passes
    entry_bytes: float
    out_bytes: float  # bytes written for the layer's output


def layer_events(layer: ComputeLayer, x: np.ndarray, p: DaDianNaoParams, schedule: Optional[Schedule], *,
                 offset_bits: int, min_slot: int, threshold: float) -> tuple[LayerEvents, ConvGeom]:
    """Cycle and event counts of one layer for a batch: skipping zeros with ``schedule``, or dense
    (every brick costs its occupancy) when it is None."""
    x4, geom = lower(layer, x, finite=schedule is None)
    n = len(x4)
    npass = passes(geom, p.units, p.filter_lanes)
    windows = geom.group * geom.OH * geom.OW
    brick = p.brick_size
    packed = is_packed(geom, brick, p.pack_narrow_layers)
    if packed:
        brick = packed_brick_size(geom, brick, p.neuron_lanes)
    dense = npass * windows * dense_window_cycles(geom, p.neuron_lanes, brick, packed)
    vbytes = p.value_bits / 8.0
    if schedule is not None:
        with kernel_threads(x4.size * geom.KH * geom.KW):
            r = schedule(x4, geom, packed, brick, p.neuron_lanes, min_slot, threshold, layer)
        cycles = r[:, 0] * npass
        nnz = r[:, 1]
        entries = r[:, 2] * npass
        entry_bytes = (p.value_bits + offset_bits) / 8.0
    else:
        slots = windows * geom.KH * geom.KW * geom.Cg
        cycles = np.full(n, dense, dtype=np.int64)
        nnz = np.full(n, slots, dtype=np.int64)
        entries = np.full(n, slots * npass, dtype=np.int64)
        entry_bytes = vbytes
    out_bytes = geom.M * geom.OH * geom.OW * entry_bytes
    return LayerEvents(cycles, dense, nnz, entries, entry_bytes, out_bytes), geom


def simulate(layers, acts, p: DaDianNaoParams, *, conv_schedule: Optional[Schedule] = None,
             fc_schedule: Optional[Schedule] = None, min_slot: int = 0, offset_bits: int = 0,
             threshold: float = 0.0) -> CostResult:
    """Simulate a batch: convolutions scheduled with ``conv_schedule``, fully connected layers with
    ``fc_schedule`` (None: dense), energies from the events."""
    n = check_acts(layers, acts)
    L = len(layers)
    cycles = np.zeros((n, L), dtype=np.int64)
    dense = np.zeros((n, L), dtype=np.int64)
    e = {k: np.zeros((n, L)) for k in ("mac", "synapse_buffer", "neuron_buffer", "offchip")}
    pj = 1e-12
    wbytes = p.value_bits / 8.0
    events = per_layer(lambda li: layer_events(layers[li], acts[layers[li].input], p,
                                               conv_schedule if layers[li].is_conv else fc_schedule,
                                               offset_bits=offset_bits, min_slot=min_slot, threshold=threshold),
                       L, [acts[lay.input].size * math.prod(lay.kernel) for lay in layers])
    for li, layer in enumerate(layers):
        ev, geom = events[li]
        cycles[:, li] = ev.cycles
        dense[:, li] = ev.dense_cycles
        macs = ev.nnz_visits.astype(np.float64) * geom.Mg
        e["mac"][:, li] = macs * p.e_mac_pj * pj
        e["synapse_buffer"][:, li] = macs * wbytes * p.e_synapse_read_pj_per_byte * pj
        e["neuron_buffer"][:, li] = (ev.entries * ev.entry_bytes * p.e_neuron_read_pj_per_byte
                                     + ev.out_bytes * p.e_neuron_write_pj_per_byte) * pj
        off = 0.0
        if li == 0:
            off += math.prod(layer.input_shape) * wbytes
        if li == L - 1:
            off += math.prod(layer.output_shape) * wbytes
        if not p.weights_on_chip:
            off += math.prod(layer.weight_shape) * wbytes
        e["offchip"][:, li] = off * p.e_dram_pj_per_byte * pj
    return CostResult.build([lay.name for lay in layers], cycles, dense, e, p.clock_hz, p.static_power_w)


__all__ = ["DaDianNaoParams", "LayerEvents", "Schedule", "layer_events", "simulate", "window_occupancy",
           "is_packed", "packed_brick_size", "dense_window_cycles", "passes", "SRC_ATTACK", "SRC_CNV", "SRC_DADN"]
