"""Numerical checks of input gradients (used by the tests; handy when debugging a rule).

The analytic gradient comes from :func:`~auditor.grad.add_input_gradient` run by onnxruntime in
the model's own precision (float32).  The reference is a central finite difference of the same
objective evaluated in **float64**: onnxruntime when it has float64 kernels for every op of the
model, otherwise onnx's reference evaluator.  The float64 evaluator is only trusted after its
forward values agree with onnxruntime's float32 ones (onnx 1.23's reference evaluator gets some
ops wrong, e.g. BatchNormalization-9 with a ``momentum`` attribute runs in training mode; the
conversion below drops that attribute, which inference ignores).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from ..runtime.engine import make_session
from .builder import constant_node_value


def to_float64(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy computing in float64: float32 initializers, constants, value types and Casts."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    for i, t in enumerate(g.initializer):
        if t.data_type == TensorProto.FLOAT:
            a = numpy_helper.to_array(t).astype(np.float64)
            g.initializer[i].CopyFrom(numpy_helper.from_array(a, t.name))
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        if vi.type.tensor_type.elem_type == TensorProto.FLOAT:
            vi.type.tensor_type.elem_type = TensorProto.DOUBLE
    for node in g.node:
        for a in node.attribute:
            if node.op_type == "Cast" and a.name == "to" and a.i == TensorProto.FLOAT:
                a.i = TensorProto.DOUBLE
            if node.op_type == "ConstantOfShape" and a.name == "value" and \
                    a.t.data_type == TensorProto.FLOAT:
                a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float64)))
        if node.op_type == "Constant":
            val = constant_node_value(node)
            if val is not None and val.dtype == np.float32:
                del node.attribute[:]
                node.attribute.append(onnx.helper.make_attribute(
                    "value", numpy_helper.from_array(val.astype(np.float64))))
        if node.op_type == "BatchNormalization":
            keep = [a for a in node.attribute if a.name != "momentum"]
            del node.attribute[:]
            node.attribute.extend(keep)
    del g.value_info[:]
    return m


def _ort_session(model: onnx.ModelProto):
    return make_session(model, 1)


def float64_runner(model: onnx.ModelProto, prefer: str = "ort"
                   ) -> tuple[Callable[[list[str], dict], list], str]:
    """(run(output_names, feeds), engine name) evaluating ``model`` in float64."""
    m64 = to_float64(model)
    if prefer == "ort":
        try:
            sess = _ort_session(m64)
            return (lambda outs, feeds: sess.run(outs, feeds)), "onnxruntime-float64"
        except Exception:
            pass
    from onnx.reference import ReferenceEvaluator

    ref = ReferenceEvaluator(m64, new_ops=[_batch_norm_inference()])
    return (lambda outs, feeds: ref.run(outs, feeds)), "reference-float64"


def _batch_norm_inference():
    """BatchNormalization for onnx's reference evaluator, in inference mode whatever the
    (schema-default) momentum: onnx 1.23's BatchNormalization-9 runs in training mode as soon as
    it sees a momentum."""
    from onnx.reference.op_run import OpRun

    class BatchNormalization(OpRun):
        op_domain = ""

        def _run(self, x, scale, bias, mean, var, epsilon=None, momentum=None,
                 training_mode=None, spatial=None):
            shape = (1, -1) + (1,) * (x.ndim - 2)
            eps = 1e-5 if epsilon is None else epsilon
            y = (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps)
            return ((y * scale.reshape(shape) + bias.reshape(shape)).astype(x.dtype),)

    return BatchNormalization


def float32_runner(model: onnx.ModelProto) -> Callable[[list[str], dict], list]:
    sess = _ort_session(model)
    return lambda outs, feeds: sess.run(outs, feeds)


def checked_float64_runner(model: onnx.ModelProto, objective: str, feeds: dict,
                           engine: str = "ort") -> tuple[Callable, dict]:
    """A float64 runner whose ``objective`` agrees with onnxruntime's float32 value at ``feeds``
    (AssertionError otherwise), and the feeds converted to float64."""
    run, name = float64_runner(model, engine)
    ref32 = float32_runner(model)([objective], feeds)[0]
    feeds64 = {k: (v.astype(np.float64) if v.dtype == np.float32 else v) for k, v in feeds.items()}
    got = run([objective], feeds64)[0]
    if not np.allclose(got, ref32, rtol=1e-4, atol=1e-4 * (1 + np.abs(ref32).max())):
        raise AssertionError(f"the {name} evaluator disagrees with onnxruntime: {got} vs {ref32}")
    return run, feeds64


def directional_check(model: onnx.ModelProto, objective: str, feeds: dict, wrt: str,
                      grad: np.ndarray, n_dirs: int = 3, seed: int = 0, h: float = 1e-6,
                      linear: bool = False, engine: str = "ort"
                      ) -> list[tuple[float, float, float]]:
    """[(analytic v.grad, finite difference, scale)] for ``n_dirs`` random directions ``v``.

    ``scale`` = sum |v * grad| is the natural size against which to judge the difference.
    With ``linear=True`` (the objective is linear in ``wrt``) the difference is taken in float32
    by onnxruntime with unit steps, which is exact up to rounding.
    """
    rng = np.random.default_rng(seed)
    x = feeds[wrt]
    if linear:
        run = float32_runner(model)
        dtype, step = x.dtype, 1.0
    else:
        run, feeds = checked_float64_runner(model, objective, feeds, engine)
        dtype, step = np.float64, h
    out = []
    for _ in range(n_dirs):
        v = rng.standard_normal(x.shape)
        fp = dict(feeds, **{wrt: (x.astype(dtype) + step * v).astype(dtype)})
        fm = dict(feeds, **{wrt: (x.astype(dtype) - step * v).astype(dtype)})
        fd = (np.sum(run([objective], fp)[0], dtype=np.float64)
              - np.sum(run([objective], fm)[0], dtype=np.float64)) / (2 * step)
        g = grad.astype(np.float64)
        out.append((float(np.sum(g * v)), float(fd), float(np.sum(np.abs(g * v)))))
    return out


def elementwise_fd(model: onnx.ModelProto, objective: str, feeds: dict, wrt: str,
                   h: float = 1e-6, engine: str = "ort") -> np.ndarray:
    """Central finite-difference gradient of sum(objective) w.r.t. every element (float64)."""
    run, feeds64 = checked_float64_runner(model, objective, feeds, engine)
    x = feeds64[wrt]
    g = np.zeros_like(x)
    flat = g.reshape(-1)
    for i in range(x.size):
        xp = x.copy().reshape(-1)
        xm = x.copy().reshape(-1)
        xp[i] += h
        xm[i] -= h
        fp = np.sum(run([objective], dict(feeds64, **{wrt: xp.reshape(x.shape)}))[0])
        fm = np.sum(run([objective], dict(feeds64, **{wrt: xm.reshape(x.shape)}))[0])
        flat[i] = (fp - fm) / (2 * h)
    return g
