"""Description of the compute layers of a model, as the cost models and objectives see them.

A *compute layer* is a Conv, ConvTranspose, Gemm or MatMul node whose weight is a constant.
Its *data input* is the activation tensor that the hardware streams through its multipliers, and
whose zeros a sparsity-aware machine can skip.  Shapes are per sample (no batch dimension).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ComputeLayer:
    name: str  # node name (unique; unnamed nodes get "<op_type>_<index>" when the model is loaded)
    op_type: str  # "Conv" | "ConvTranspose" | "Gemm" | "MatMul"
    input: str  # name of the data (activation) input tensor
    output: str  # name of the output tensor
    input_shape: tuple[int, ...]  # per sample: (C, H, W) for convolutions, (K,) for Gemm/MatMul
    output_shape: tuple[int, ...]  # per sample: (M, OH, OW) or (M,)
    weight_shape: tuple[int, ...]  # Conv: (M, C/group, KH, KW); Gemm/MatMul: (K, M) as multiplied
    kernel: tuple[int, int] = (1, 1)
    strides: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, left, bottom, right
    dilations: tuple[int, int] = (1, 1)
    group: int = 1
    macs: int = 0  # multiply-accumulates per sample

    @property
    def is_conv(self) -> bool:
        return self.op_type in ("Conv", "ConvTranspose")

    @property
    def in_channels(self) -> int:
        return self.input_shape[0]

    @property
    def out_channels(self) -> int:
        return self.output_shape[0]
