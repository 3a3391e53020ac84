"""Input preprocessing declared in a scenario, prepended to the model as ONNX ops.

Attacks and data live in the *raw pixel domain* (NCHW, values in ``range``, [0, 1] by default);
the model sees ``(x * scale - mean[c]) / std[c]``, transposed to NHWC when its input is NHWC.
Because the preprocessing is part of the graph, input gradients are taken in the raw domain.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from typing import TYPE_CHECKING

import numpy as np

from ... import schema
from ...errors import AuditorError, short
from ..names import check_free, graph_names, ns

if TYPE_CHECKING:
    import onnx


#: the most channels a per-channel mean/std may list
MAX_CHANNELS = 4096


@dataclass
class Preprocessing:
    """How raw pixels (NCHW, in `range`) become the model's input."""

    range: list[float] = schema.field(default_factory=lambda: [0.0, 1.0],
                                      doc="valid raw pixel range [low, high]; attacks clip to it")
    scale: float = schema.field(1.0, doc="raw pixels are multiplied by this first (e.g. 255 for a model trained on 0..255)")
    mean: list[float] = schema.field(default_factory=lambda: [0.0], doc="per-channel mean subtracted after scaling (one value = all channels)")
    std: list[float] = schema.field(default_factory=lambda: [1.0], doc="per-channel standard deviation divided by after the mean")
    layout: Literal["NCHW", "NHWC"] = schema.field("NCHW", doc="layout of the model's input tensor (data is always read as NCHW)")
    input_size: Optional[list[int]] = schema.field(
        None, doc="[height, width] of the audited input, for a model exported with dynamic spatial dimensions "
        "(fixed at load, before constant folding); must agree with a model's static size")

    def validate(self) -> None:
        if len(self.range) != 2 or not self.range[0] < self.range[1]:
            raise ValueError(f"range must be [low, high] with low < high, got {short(self.range)}")
        if not self.mean:
            raise ValueError("mean must have one value (all channels) or one per channel, got none")
        if not self.std:
            raise ValueError("std must have one value (all channels) or one per channel, got none")
        if len(self.mean) > MAX_CHANNELS or len(self.std) > MAX_CHANNELS:
            raise ValueError(f"mean and std may have at most {MAX_CHANNELS} values (one per channel)")
        if any(s == 0 for s in self.std):
            raise ValueError("std must be non-zero")
        if self.scale == 0:
            raise ValueError("scale must be non-zero")
        if self.input_size is not None and (len(self.input_size) != 2 or min(self.input_size) <= 0):
            raise ValueError(f"input_size must be [height, width] with positive values, got {self.input_size}")

    def channel_mismatch(self, channels: int | None) -> str | None:
        """Why ``mean``/``std`` cannot apply to an input with ``channels`` channels (None if they can)."""
        if channels is None:
            if len(self.mean) > 1 and len(self.std) > 1 and len(self.mean) != len(self.std):
                return f"preprocessing.mean has {len(self.mean)} values but preprocessing.std has {len(self.std)}"
            return None
        for key in ("mean", "std"):
            n = len(getattr(self, key))
            if n not in (1, channels):
                return (f"preprocessing.{key} has {n} values but the input has {channels} channel"
                        f"{'s' if channels != 1 else ''} (give 1 value or {channels})")
        return None

    @property
    def bounds(self) -> tuple[float, float]:
        return float(self.range[0]), float(self.range[1])

    @property
    def is_identity(self) -> bool:
        return (self.scale == 1.0 and all(m == 0 for m in self.mean) and all(s == 1 for s in self.std)
                and self.layout == "NCHW")

    def channel_constants(self, channels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``scale`` (scalar), ``mean`` and ``std`` (1, channels, 1, 1), float32: the constants of
        the transform, shared by the graph (:func:`prepend`) and numpy (:meth:`apply`) forms."""
        mean = np.broadcast_to(np.asarray(self.mean, np.float32), (channels,)).reshape(1, channels, 1, 1)
        std = np.broadcast_to(np.asarray(self.std, np.float32), (channels,)).reshape(1, channels, 1, 1)
        return np.array(self.scale, np.float32), mean.copy(), std.copy()

    def apply(self, x: np.ndarray) -> np.ndarray:
        """The same transform in numpy (the same float32 operations as the graph :func:`prepend` adds)."""
        scale, mean, std = self.channel_constants(x.shape[1])
        y = (x.astype(np.float32) * scale - mean) / std
        return y.transpose(0, 2, 3, 1) if self.layout == "NHWC" else y


def to_model_input(x: np.ndarray, pre=None) -> np.ndarray:
    """Raw inputs ``x`` as the model's input, float32 and contiguous: the one numpy entry point for
    a raw -> model-input transform ``pre``, which is None (the identity), a :class:`Preprocessing`
    (or anything with its ``apply``), a callable, or a ``(mean, std)`` pair (``(x - mean) / std``).
    ``x`` is converted to float32 first."""
    x = np.asarray(x, np.float32)
    if pre is None:
        y = x
    elif hasattr(pre, "apply"):
        y = pre.apply(x)
    elif callable(pre):
        y = pre(x)
    else:
        mean, std = pre
        y = (x - np.float32(mean)) / np.float32(std)
    return np.ascontiguousarray(y, np.float32)


def prepend(model: onnx.ModelProto, pre: Preprocessing) -> onnx.ModelProto:
    """A copy of ``model`` whose data input takes raw NCHW pixels (same input name)."""
    import onnx  # here, not at import time: checking a scenario (auditor validate) needs no onnx
    from onnx import helper, numpy_helper

    from ..interface import graph_inputs
    out = onnx.ModelProto()
    out.CopyFrom(model)
    if pre.is_identity:
        return out
    g = out.graph
    inp = graph_inputs(out)[0]
    name = inp.name
    dims = list(inp.type.tensor_type.shape.dim)
    if len(dims) != 4:
        raise AuditorError(f"preprocessing needs a 4-D image input (N, C, H, W), input '{name}' has rank {len(dims)}")
    if pre.layout == "NHWC":
        dims = [dims[0], dims[3], dims[1], dims[2]]
    channels = dims[1].dim_value if dims[1].HasField("dim_value") else None
    internal = ns("pre/model_input")  # the tool's namespace: no clash with the model's own names
    for node in g.node:
        for i, x in enumerate(node.input):
            if x == name:
                node.input[i] = internal
    for o in g.output:
        if o.name == name:
            raise AuditorError(f"the model's input '{name}' is also one of its outputs")
    bad = pre.channel_mismatch(channels)
    if bad:
        raise AuditorError(f"{bad} of model input '{name}'")
    scale, mean, std = pre.channel_constants(max(len(pre.mean), len(pre.std)) if channels is None else channels)
    p = ns("pre/")
    check_free(graph_names(model), internal)
    inits = [numpy_helper.from_array(scale, p + "scale"), numpy_helper.from_array(mean, p + "mean"),
             numpy_helper.from_array(std, p + "std")]
    nodes = [helper.make_node("Mul", [name, p + "scale"], [p + "scaled"], name=p + "Mul"),
             helper.make_node("Sub", [p + "scaled", p + "mean"], [p + "centred"], name=p + "Sub"),
             helper.make_node("Div", [p + "centred", p + "std"],
                              [internal if pre.layout == "NCHW" else p + "nchw"], name=p + "Div")]
    if pre.layout == "NHWC":
        nodes.append(helper.make_node("Transpose", [p + "nchw"], [internal], perm=[0, 2, 3, 1], name=p + "Transpose"))
    new_nodes = nodes + list(g.node)
    del g.node[:]
    g.node.extend(new_nodes)
    g.initializer.extend(inits)
    new_inp = helper.make_tensor_value_info(name, inp.type.tensor_type.elem_type, None)
    new_inp.type.tensor_type.shape.dim.extend(dims)
    for i, x in enumerate(g.input):
        if x.name == name:
            g.input.remove(x)
            g.input.insert(i, new_inp)
            break
    return onnx.shape_inference.infer_shapes(out)
