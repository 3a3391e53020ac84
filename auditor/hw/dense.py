"""Dense: a DaDianNao-like accelerator that never skips zeros (the baseline of Cnvlutin).

Chen et al., "DaDianNao: A Machine-Learning Supercomputer", MICRO 2014, as the baseline of
Albericio et al., Cnvlutin, ISCA 2016.  The organisation, brick/lane schedule, passes and energy
events are exactly those of :mod:`auditor.hw.cnvlutin` with every brick costing its occupancy
(zeros and padding are multiplied like any other value, activations are stored without offsets),
so ``CnvlutinModel`` / ``DenseModel`` cycle ratios isolate the benefit of zero skipping.

Its cost does not depend on the input values (``cycles == dense_cycles``, the same for every
input); it is computed in closed form per layer (:func:`auditor.hw.cnvlutin.dense_window_cycles`),
so it needs no numba kernel of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..model.layers import ComputeLayer
from ..schema import field
from .base import CostModel, CostResult
from .cnvlutin import _SRC_ATTACK, _SRC_CNV, _SRC_HOROWITZ, check_machine_params, dadn_simulate

_SRC_DADN = "Chen et al., DaDianNao, MICRO 2014 (baseline of " + _SRC_CNV + ")"


@dataclass
class DenseParams:
    """DaDianNao-like dense accelerator; defaults equal the Cnvlutin profile's machine."""

    clock_hz: float = field(1.0e9, doc="clock frequency", unit="Hz", source=_SRC_ATTACK + " (1 GHz)")
    units: int = field(16, doc="units (PEs / tiles); they process different filters", unit="count", source=_SRC_DADN)
    neuron_lanes: int = field(16, doc="neuron lanes per unit (activations consumed per cycle per unit)",
                              unit="count", source=_SRC_DADN)
    filter_lanes: int = field(16, doc="filter lanes per neuron lane (filters computed in parallel per unit)",
                              unit="count", source=_SRC_DADN)
    brick_size: int = field(16, doc="activations per brick (consecutive channels at one position)",
                            unit="activations", source=_SRC_CNV)
    pack_narrow_layers: bool = field(True, doc="groups with fewer channels than brick_size use window-packed bricks "
                                               "(min(brick_size, ceil(window values / neuron_lanes)) consecutive "
                                               "window values in (ky, kx, c) order)",
                                     unit="bool", source="assumption (same layout as the Cnvlutin profile)")
    value_bits: int = field(16, doc="bits per activation and per weight (fixed point)", unit="bits", source=_SRC_DADN)
    e_mac_pj: float = field(1.6, doc="energy of one 16-bit fixed-point multiply-accumulate", unit="pJ",
                            source=_SRC_HOROWITZ + "; 16b mult ~0.8 pJ + 32b add 0.1")
    e_synapse_read_pj_per_byte: float = field(2.25, doc="synapse buffer (weight eDRAM bank) read energy per byte",
                                              unit="pJ/byte", source=_SRC_HOROWITZ + "; 8KB-bank 64-bit read 10 pJ")
    e_neuron_read_pj_per_byte: float = field(2.25, doc="neuron memory / input buffer read energy per byte",
                                             unit="pJ/byte", source=_SRC_HOROWITZ + "; 8KB-bank 64-bit read 10 pJ")
    e_neuron_write_pj_per_byte: float = field(2.25, doc="neuron memory write energy per byte (layer outputs)",
                                              unit="pJ/byte", source="assumption (= read energy)")
    e_dram_pj_per_byte: float = field(244.0, doc="off-chip DRAM access energy per byte", unit="pJ/byte",
                                      source="Horowitz ISSCC 2014: DRAM 1.3-2.6 nJ per 64-bit access (midpoint)")
    weights_on_chip: bool = field(True, doc="all weights resident on chip (no per-inference DRAM weight traffic)",
                                  unit="bool", source=_SRC_DADN + ": synapses in on-chip eDRAM")
    static_power_w: float = field(2.5, doc="static (leakage) power of the chip", unit="W",
                                  source="assumption (same chip as the Cnvlutin profile)")

    def validate(self) -> None:
        check_machine_params(self)


class DenseModel(CostModel):
    """DaDianNao-like machine without zero skipping: the cost is the same for every input."""

    kind = "dense"
    Params = DenseParams

    @property
    def input_independent(self) -> bool:
        return True  # never skips a zero: cycles == dense_cycles for every input

    def simulate(self, layers: list[ComputeLayer], acts: dict[str, np.ndarray]) -> CostResult:
        return dadn_simulate(layers, acts, self.params, skip_conv=False, skip_fc=False, min_slot=0,
                             offset_bits=0, threshold=0.0)
