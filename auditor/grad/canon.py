"""Bringing a model into the form the gradient rules expect.

Rules are written for the default-domain opsets 13 and later (axes as inputs for ReduceSum,
Squeeze, Unsqueeze and Split; Softmax over one axis; Clip bounds as inputs).  Older models
(opset 11 and 12, or earlier) are upgraded with onnx's version converter; the forward nodes of a
model that is already at opset 13 or later are left exactly as they are.
"""

from __future__ import annotations

import onnx
from onnx import version_converter

from auditor.errors import AuditorError

from .builder import default_opset

MIN_OPSET = 13


def upgrade_opset(model: onnx.ModelProto, target: int = MIN_OPSET) -> onnx.ModelProto:
    """A copy of ``model`` at default-domain opset >= ``target`` (unchanged when already there)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    version = default_opset(m)
    if version >= target:
        return m
    try:
        converted = version_converter.convert_version(m, target)
    except Exception as e:  # the converter raises a variety of types
        raise AuditorError(
            f"cannot upgrade the model from opset {version} to {target}: {e}".splitlines()[0]
        ) from None
    return converted


def with_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy with shapes and types inferred (best effort: partial information is kept)."""
    try:
        return onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:
        try:
            return onnx.shape_inference.infer_shapes(model)
        except Exception:
            m = onnx.ModelProto()
            m.CopyFrom(model)
            return m
