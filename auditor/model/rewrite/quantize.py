"""Post-training k-bit quantisation of a model as an ONNX rewrite (a precision what-if).

Defensive Approximation §7.1 compares its approximate multiplier with Defensive Quantization's
"weight-only" and "full" quantisation.  :func:`quantize_model` produces both deployments of a
*trained* model, **without retraining** (the paper's DQ models were trained quantised; here the
float model is quantised as it is, which is what a user can do with their own model):

* weights (``Conv``, ``Gemm``, ``MatMul`` with a constant weight): symmetric, ``q = clip(round(w /
  s), -Q, Q)`` with ``Q = 2^(bits-1) - 1`` and ``s = max|w| / Q`` per tensor or per output
  channel; the initializer is replaced by the float values ``q·s`` (round half to even);
* activations (``activations=True``): the data input ``a`` of each of those layers is quantised
  per tensor with the scale ``s_a = max|a| / Q`` measured on the calibration inputs (the
  scenario's clean data, through the float model), as ``QuantizeLinear -> DequantizeLinear``
  (int8, zero point 0, round half to even) and a ``Clip`` to ``[-Q·s_a, Q·s_a]``.  The gradient
  graph passes the quantiser straight through (:mod:`auditor.grad.ops_quant`), so white-box
  attacks get straight-through (BPDA) gradients.

:func:`fake_quantize` is the numpy reference of the rounding rule.  A JSON record of what was done
goes to the model's ``metadata_props`` key ``auditor.model.rewrite.quantize``.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ...errors import AuditorError
from ..graph import weight_initializers
from ..names import Names
from .instrument import add_outputs
from .preprocess import to_model_input
from ...runtime.engine import Runner

META_KEY = "auditor.model.rewrite.quantize"
OPS = ("Conv", "Gemm", "MatMul")


def fake_quantize(w: np.ndarray, bits: int, axis: int | None = None, scale=None) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric k-bit quantisation of ``w`` (float64 arithmetic): ``(clip(round(w/s), -Q, Q)·s,
    s)`` with ``s = max|w| / Q`` over the whole tensor (``axis`` None) or per index of ``axis``,
    unless ``scale`` is given; an all-zero slice gets s = 1."""
    q = 2 ** (int(bits) - 1) - 1
    w64 = np.asarray(w, np.float64)
    if scale is None:
        if axis is None:
            m = np.abs(w64).max() if w64.size else 0.0
        else:
            m = np.abs(np.moveaxis(w64, axis, 0).reshape(w64.shape[axis], -1)).max(axis=1)
        scale = np.where(np.asarray(m) > 0, np.asarray(m) / q, 1.0)
    s = np.asarray(scale, np.float64)
    sb = s if axis is None or s.ndim == 0 else s.reshape([-1 if i == axis else 1 for i in range(w64.ndim)])
    return np.clip(np.round(w64 / sb), -q, q) * sb, s


def _weight_axis(node: onnx.NodeProto, weight_index: int, ndim: int) -> int:
    """The output-channel axis of a layer's weight (per-channel scales)."""
    if node.op_type == "Conv":
        return 0
    if node.op_type == "Gemm":
        trans = {a.name: a.i for a in node.attribute}
        if weight_index == 1:
            return 0 if trans.get("transB", 0) else 1
        return 1 if trans.get("transA", 0) else 0
    return ndim - 1 if weight_index == 1 else 0  # MatMul: B (K, N) -> N; A (M, K) -> M


def _layers(model: onnx.ModelProto):
    """(node, data input index, weight input index, weight initializer) of every quantisable layer."""
    return [(w.node, w.data, w.weight, w.initializer) for w in weight_initializers(model, OPS)]


def quantize_model(model: onnx.ModelProto, bits: int = 8, *, activations: bool = False, per_channel: bool = True,
                   calibration: np.ndarray | None = None, preprocessing=None) -> onnx.ModelProto:
    """The model with its weights (and with ``activations`` the compute layers' data inputs)
    quantised to ``bits`` bits; ``calibration``: raw inputs (the scenario's clean data) for the
    activation scales, ``preprocessing`` their raw -> model-input transform."""
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 2 <= bits <= (8 if activations else 16):
        raise AuditorError(f"quantisation bits must be an integer in [2, {8 if activations else 16}]"
                           f"{' (activations are int8 at most)' if activations else ''}, got {bits!r}",
                           where="quantize")
    m = onnx.ModelProto()
    m.CopyFrom(model)
    layers = _layers(m)
    if not layers:
        raise AuditorError("the model has no Conv/Gemm/MatMul layer with a constant weight to quantise",
                           where="quantize")
    record = {"bits": int(bits), "weights": "per_channel" if per_channel else "per_tensor",
              "activations": bool(activations), "retrained": False, "layers": []}
    done = set()
    for node, _, wi, init in layers:
        if init.name in done:
            continue
        done.add(init.name)
        w = numpy_helper.to_array(init)
        axis = _weight_axis(node, wi, w.ndim) if per_channel and w.ndim > 1 else None
        wq, _ = fake_quantize(w, bits, axis)
        init.CopyFrom(numpy_helper.from_array(wq.astype(w.dtype), init.name))
        record["layers"].append(node.name or node.op_type)
    if activations:
        if calibration is None or len(calibration) == 0:
            raise AuditorError("quantising activations needs calibration inputs (the scenario's clean data)",
                               where="quantize")
        tensors = list(dict.fromkeys(node.input[di] for node, di, _, _ in layers))
        peak = _peaks(model, tensors, calibration, preprocessing)
        q = 2 ** (bits - 1) - 1
        scales = {t: (peak[t] / q if peak[t] > 0 else 1.0) for t in tensors}
        _insert_qdq(m, layers, scales, bits)
        record["calibration_inputs"] = int(len(calibration))
        record["activation_scales"] = {t: float(s) for t, s in scales.items()}
    entry = m.metadata_props.add()
    entry.key, entry.value = META_KEY, json.dumps(record)
    return onnx.shape_inference.infer_shapes(m) if activations else m


def _peaks(model: onnx.ModelProto, tensors: list[str], x: np.ndarray, preprocessing) -> dict[str, float]:
    """max |t| over the calibration inputs for each tensor, from a plain onnxruntime session
    (batch by batch: only the running peaks are kept)."""
    runner = Runner(add_outputs(model, tensors))
    xx = to_model_input(x, preprocessing)
    peak = {t: 0.0 for t in tensors}
    for s in range(0, len(xx), runner.batch_size):
        outs = runner.run(xx[s:s + runner.batch_size], outputs=list(tensors))
        for t in tensors:
            v = outs[t]
            peak[t] = max(peak[t], float(np.abs(v).max()) if v.size else 0.0)
    return peak


def _insert_qdq(m: onnx.ModelProto, layers, scales: dict[str, float], bits: int) -> None:
    g = m.graph
    fresh = Names.of(m).fresh
    q = 2 ** (bits - 1) - 1
    replaced: dict[str, str] = {}
    new_nodes = []
    for t, s in scales.items():
        sc, zp = fresh(f"auditor::quant/{t}/scale"), fresh(f"auditor::quant/{t}/zero")
        g.initializer.extend([numpy_helper.from_array(np.array(s, np.float32), sc),
                              numpy_helper.from_array(np.array(0, np.int8), zp)])
        qt, dq = fresh(f"auditor::quant/{t}/q"), fresh(f"auditor::quant/{t}/dq")
        nodes = [helper.make_node("QuantizeLinear", [t, sc, zp], [qt], name=fresh(f"auditor::quant/{t}/Quantize")),
                 helper.make_node("DequantizeLinear", [qt, sc, zp], [dq], name=fresh(f"auditor::quant/{t}/Dequantize"))]
        out = dq
        # symmetric: int8 saturates at -128 and 127, the k-bit grid at -Q and Q
        lo, hi = fresh(f"auditor::quant/{t}/lo"), fresh(f"auditor::quant/{t}/hi")
        g.initializer.extend([numpy_helper.from_array(np.array(-q * s, np.float32), lo),
                              numpy_helper.from_array(np.array(q * s, np.float32), hi)])
        out = fresh(f"auditor::quant/{t}/clip")
        nodes.append(helper.make_node("Clip", [dq, lo, hi], [out], name=fresh(f"auditor::quant/{t}/Clip")))
        new_nodes.append((t, nodes))
        replaced[t] = out
    targets = {id(node): di for node, di, _, _ in layers}
    ordered = []
    producers = {o: i for i, n in enumerate(g.node) for o in n.output}
    for i, n in enumerate(g.node):  # each quantiser right after its producer (graph inputs: first)
        if i == 0:
            for t, nodes in new_nodes:
                if t not in producers:
                    ordered.extend(nodes)
        ordered.append(n)
        for t, nodes in new_nodes:
            if producers.get(t) == i:
                ordered.extend(nodes)
    for n in g.node:
        if id(n) in targets:
            di = targets[id(n)]
            n.input[di] = replaced[n.input[di]]
    copies = [onnx.NodeProto() for _ in ordered]
    for c, n in zip(copies, ordered):
        c.CopyFrom(n)
    del g.node[:]
    g.node.extend(copies)
