"""Activation thresholding as an ONNX rewrite (the defence of Krithivasan, Sen, Raghunathan, Section IV).

Every listed ReLU(x) becomes x * (x > t_l): activations at or below a per-layer threshold t_l are
zeroed (t_l = 0 is the plain ReLU).  The thresholds are tuned and the defence scored in
:mod:`auditor.attacks.energy.defences`.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ...errors import AuditorError
from ..names import Names, node_names, ns


def relu_nodes(model: onnx.ModelProto) -> list[tuple[str, str]]:
    """(node name, output tensor) of every Relu, in graph order (names by
    :func:`auditor.model.names.node_names`: unnamed nodes are "Relu_<index>")."""
    return [(name, n.output[0]) for name, n in zip(node_names(model.graph), model.graph.node) if n.op_type == "Relu"]


def _resolve(model: onnx.ModelProto, thresholds: Mapping[str, float]) -> dict[str, float]:
    """Threshold per Relu output tensor, keyed by node name or output tensor name."""
    by_key = {}
    for name, out in relu_nodes(model):
        by_key[name] = out
        by_key[out] = out
    res = {}
    for k, t in thresholds.items():
        if k not in by_key:
            raise AuditorError(f"no Relu node or output named '{k}'; Relus: {', '.join(n for n, _ in relu_nodes(model))}")
        t = float(t)
        if not np.isfinite(t):
            raise AuditorError(f"threshold for '{k}' must be finite, got {t}")
        res[by_key[k]] = t
    return res


def threshold_input(relu_output: str) -> str:
    """The graph input (or initializer) holding the threshold of the Relu writing ``relu_output``."""
    return ns(f"threshold/{relu_output}")


def threshold_relus(model: onnx.ModelProto, thresholds: Mapping[str, float], *, as_inputs: bool = False) -> onnx.ModelProto:
    """A copy of ``model`` where each listed Relu(x) is x * Cast(Greater(x, t), float).

    ``thresholds``: Relu node name or output tensor -> t (Relus not listed stay as they are).  The
    output tensor names are kept, so probes and cost models see the same layer inputs.  With
    ``as_inputs`` the thresholds become scalar graph inputs named ``auditor::threshold/<relu output>``
    (for tuning with one onnxruntime session).
    """
    thr = _resolve(model, thresholds)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    fresh = Names.of(out).fresh
    new_nodes = []
    for name, node in zip(node_names(g), g.node):
        if node.op_type != "Relu" or node.output[0] not in thr:
            new_nodes.append(node)
            continue
        y = node.output[0]
        base = ns(f"threshold/{name}")
        t_name = threshold_input(y)
        if as_inputs:
            g.input.append(helper.make_tensor_value_info(t_name, TensorProto.FLOAT, []))
        else:
            g.initializer.append(numpy_helper.from_array(np.array(thr[y], np.float32), t_name))
        x, mask, maskf = node.input[0], fresh(f"{base}_mask"), fresh(f"{base}_maskf")
        new_nodes += [
            helper.make_node("Greater", [x, t_name], [mask], name=fresh(f"{base}_greater")),
            helper.make_node("Cast", [mask], [maskf], name=fresh(f"{base}_cast"), to=TensorProto.FLOAT),
            helper.make_node("Mul", [x, maskf], [y], name=name),
        ]
    del g.node[:]
    g.node.extend(new_nodes)
    return out


__all__ = ["relu_nodes", "threshold_input", "threshold_relus"]
