"""Dense: a DaDianNao-like accelerator that never skips zeros (the baseline of Cnvlutin).

Chen et al., "DaDianNao: A Machine-Learning Supercomputer", MICRO 2014, as the baseline of
Albericio et al., Cnvlutin, ISCA 2016.  The machine is :mod:`auditor.hw.dadiannao`, the same
organisation, brick/lane schedule, passes and energy events as :mod:`auditor.hw.cnvlutin` with
every brick costing its occupancy (zeros and padding are multiplied like any other value,
activations are stored without offsets), so ``CnvlutinModel`` / ``DenseModel`` cycle ratios
isolate the benefit of zero skipping.

Its cost does not depend on the input values (``cycles == dense_cycles``, the same for every
input); it is computed in closed form per layer (:func:`auditor.hw.dadiannao.dense_window_cycles`),
so it needs no numba kernel of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..model.layers import ComputeLayer
from .base import CostModel, CostResult, cost_model
from .dadiannao import DaDianNaoParams, simulate


@dataclass
class DenseParams(DaDianNaoParams):
    """DaDianNao-like dense accelerator; defaults equal the Cnvlutin profile's machine."""


@cost_model("dense")
class DenseModel(CostModel):
    """DaDianNao-like machine without zero skipping: the cost is the same for every input."""

    Params = DenseParams

    @property
    def input_independent(self) -> bool:
        return True  # never skips a zero: cycles == dense_cycles for every input

    def simulate(self, layers: list[ComputeLayer], acts: dict[str, np.ndarray]) -> CostResult:
        return simulate(layers, acts, self.params)
