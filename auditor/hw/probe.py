"""Compute layers and their input activations of an ONNX model (for calibration, tests, benchmarks).

A small self-contained probe: :func:`compute_layers` reads Conv/ConvTranspose/Gemm/MatMul nodes
with constant weights into :class:`~auditor.model.layers.ComputeLayer` (using ``auditor.model.graph`` when it
is available), and :func:`activations` exposes their data inputs as extra graph outputs and runs
onnxruntime on a batch.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper, shape_inference

from ..errors import AuditorError
from ..model.layers import ComputeLayer

COMPUTE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def _attrs(node) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _shapes(model: onnx.ModelProto) -> dict[str, tuple]:
    inferred = shape_inference.infer_shapes(model)
    out = {}
    for vi in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
        dims = vi.type.tensor_type.shape.dim
        out[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)
    for init in model.graph.initializer:
        out[init.name] = tuple(init.dims)
    return out


def _constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    consts = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output:
            a = _attrs(node)
            if "value" in a:
                consts[node.output[0]] = numpy_helper.to_array(a["value"])
    return consts


def _same_pads(size, k, s, d, upper):
    out = -(-size // s)
    total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
    lo = total // 2 if upper else total - total // 2
    return lo, total - lo


def compute_layers(model: onnx.ModelProto) -> list[ComputeLayer]:
    """The compute layers of a model, in graph order (uses ``auditor.model.graph.compute_layers`` if present)."""
    try:  # the project's own graph analysis, when it exists
        from ..model.graph import compute_layers as _cl  # type: ignore
    except ImportError:
        _cl = None
    if _cl is not None:
        return _cl(shape_inference.infer_shapes(model))
    shapes = _shapes(model)
    consts = _constants(model)
    layers = []
    for idx, node in enumerate(model.graph.node):
        if node.op_type not in COMPUTE_OPS:
            continue
        name = node.name or f"{node.op_type}_{idx}"
        if len(node.input) < 2 or node.input[1] not in consts:
            continue  # not a layer with a constant weight
        a = _attrs(node)
        xin, w = node.input[0], consts[node.input[1]]
        ishape, oshape = shapes.get(xin), shapes.get(node.output[0])
        if ishape is None or oshape is None or any(v is None for v in ishape[1:]) or any(v is None for v in oshape[1:]):
            raise AuditorError(f"cannot infer the shapes of {node.op_type} node", where=name)
        if node.op_type in ("Conv", "ConvTranspose"):
            C, H, W = ishape[1:]
            kh, kw = (int(v) for v in a.get("kernel_shape", w.shape[2:]))
            s = tuple(int(v) for v in a.get("strides", (1, 1)))
            d = tuple(int(v) for v in a.get("dilations", (1, 1)))
            pads = [int(v) for v in a.get("pads", (0, 0, 0, 0))]
            ap = a.get("auto_pad", b"NOTSET")
            ap = ap.decode() if isinstance(ap, bytes) else ap
            if ap in ("SAME_UPPER", "SAME_LOWER") and node.op_type == "Conv":
                t, b = _same_pads(H, kh, s[0], d[0], ap == "SAME_UPPER")
                l, r = _same_pads(W, kw, s[1], d[1], ap == "SAME_UPPER")
                pads = [t, l, b, r]
            elif ap == "VALID":
                pads = [0, 0, 0, 0]
            g = int(a.get("group", 1))
            M = oshape[1]
            macs = int(M * oshape[2] * oshape[3] * (C // g) * kh * kw) if node.op_type == "Conv" \
                else int(C * H * W * (M // g) * kh * kw)
            layers.append(ComputeLayer(name, node.op_type, xin, node.output[0], (C, H, W), tuple(oshape[1:]),
                                       tuple(w.shape), (kh, kw), s, (pads[0], pads[1], pads[2], pads[3]), d, g, macs))
        else:
            if len(ishape) != 2:
                raise AuditorError(f"{node.op_type} data input must be 2-D (N, K), got {ishape}", where=name)
            if node.op_type == "Gemm" and a.get("transA", 0):
                raise AuditorError("Gemm with transA=1 is not supported", where=name)
            wm = w.T if (node.op_type == "Gemm" and a.get("transB", 0)) else w
            K, M = (int(v) for v in wm.shape)
            layers.append(ComputeLayer(name, node.op_type, xin, node.output[0], (K,), (M,), (K, M), macs=K * M))
    return layers


def activations(model: onnx.ModelProto, layers: list[ComputeLayer], x: np.ndarray, batch: int = 256,
                providers=("CPUExecutionProvider",)) -> dict[str, np.ndarray]:
    """Run the model on ``x`` and return {layer.input: float32 activations} for every compute layer."""
    import onnxruntime as ort

    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    names = []
    for layer in layers:
        if layer.input not in names:
            names.append(layer.input)
    for nm in names:
        if nm not in have:
            m.graph.output.append(onnx.helper.make_tensor_value_info(nm, onnx.TensorProto.FLOAT, None))
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=list(providers))
    in_name = sess.get_inputs()[0].name
    parts: dict[str, list] = {nm: [] for nm in names}
    x = np.asarray(x, dtype=np.float32)
    for i in range(0, len(x), batch):
        res = sess.run(names, {in_name: x[i:i + batch]})
        for nm, r in zip(names, res):
            parts[nm].append(np.asarray(r, dtype=np.float32))
    out = {}
    for layer in layers:
        a = np.concatenate(parts[layer.input], axis=0) if parts[layer.input] else np.zeros((0,) + layer.input_shape, np.float32)
        out[layer.input] = a.reshape((len(a),) + tuple(layer.input_shape))
    return out


def activation_sparsity(acts: dict[str, np.ndarray], layers: list[ComputeLayer]) -> np.ndarray:
    """(N, L) fraction of zeros in each layer's data input."""
    return np.stack([(acts[l.input] == 0).reshape(len(acts[l.input]), -1).mean(axis=1) for l in layers], axis=1)


def total_macs(layers: list[ComputeLayer]) -> int:
    return int(sum(l.macs for l in layers)) if layers else 0


__all__ = ["compute_layers", "activations", "activation_sparsity", "total_macs", "COMPUTE_OPS"]
