"""BPDA gradient graphs for a model whose Conv / Gemm / MatMul nodes run on an approximate multiplier.

Backward Pass Differentiable Approximation (Athalye et al. 2018): the forward pass is the
approximate one, the backward pass the exact network's vector-Jacobian product evaluated at the
approximate forward's intermediate values.  :func:`bpda_model` rewrites every approximated node
``y = f(a)`` (f linear in the activation ``a`` plus a bias) to::

    y = y_approx + f_nobias(a - a_fed)

where ``y_approx`` and ``a_fed`` are new graph inputs, fed with the approximate forward's output
and input of that node.  ``a`` in the graph equals ``a_fed`` bit for bit (everything upstream is
exact ops on the same values or another rewritten node), so ``a - a_fed == 0``,
``f_nobias(0) == 0`` and ``y == y_approx`` exactly: the objective and logits of the gradient
graph are the approximate ones.  The new inputs are not differentiated, so ``dy/da`` is exactly
``f``'s Jacobian, the straight-through rule of BPDA.
"""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

from ..graph import tensor_shapes
from ..names import Names, node_names, ns

#: the bias operand of the rewritten node copies, by op type (dropped: the copy is f without bias)
BIAS_INPUT = {"Conv": 2, "Gemm": 2}


def bpda_model(model: onnx.ModelProto, approx_nodes, names: list[str] | None = None
               ) -> tuple[onnx.ModelProto, dict[str, str]]:
    """``model`` with each approximated node ``y = f(a)`` rewritten to ``y = y_fed + f_nobias(a - a_fed)``.

    ``approx_nodes``: node names (``names``: the name of each node, by default
    :func:`auditor.model.names.node_names`).  Returns the new model and ``feeds``: new graph input
    name -> the tensor of the approximate forward pass it must be fed with (the node's activation
    input or its output).
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    names = node_names(g) if names is None else names
    # the weight of an approximated node is an initializer or a Constant's output (ApproxModel's rule)
    consts = {t.name for t in g.initializer}
    consts |= {o for n in g.node if n.op_type == "Constant" for o in n.output}
    shapes = tensor_shapes(onnx.shape_inference.infer_shapes(model))
    types = {vi.name: vi.type.tensor_type.elem_type
             for vi in list(g.input) + list(g.value_info) + list(g.output)}
    index = {n: i for i, n in enumerate(names)}
    chosen = {index[n] for n in approx_nodes}
    fresh = Names.of(out).fresh
    feeds: dict[str, str] = {}
    new_inputs = []

    def value_info(name: str, like: str):
        shp = shapes.get(like)
        dims = None if shp is None else ["N"] + list(shp[1:])
        return helper.make_tensor_value_info(name, types.get(like, TensorProto.FLOAT), dims)

    nodes = []
    for i, node in enumerate(g.node):
        if i not in chosen:
            nodes.append(node)
            continue
        ins = list(node.input)
        if node.op_type == "Conv":
            act_pos = 0
        else:  # Gemm / MatMul: the constant operand is the weight
            act_pos = 0 if (len(ins) > 1 and ins[1] in consts) else 1
        a, y = ins[act_pos], node.output[0]
        k = len(feeds) // 2
        a_fed, y_fed = fresh(ns(f"bpda/act_{k}")), fresh(ns(f"bpda/out_{k}"))
        diff, lin = fresh(ns(f"bpda/{y}/diff")), fresh(ns(f"bpda/{y}/lin"))
        feeds[a_fed], feeds[y_fed] = a, y
        new_inputs += [value_info(a_fed, a), value_info(y_fed, y)]
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copy.name = fresh(ns(f"bpda/{names[i]}/lin"))
        bias = BIAS_INPUT.get(node.op_type)
        keep = ins[:bias] if bias is not None else ins
        keep[act_pos] = diff
        del copy.input[:]
        copy.input.extend(keep)
        del copy.output[:]
        copy.output.append(lin)
        nodes += [helper.make_node("Sub", [a, a_fed], [diff], name=fresh(ns(f"bpda/{names[i]}/sub"))), copy,
                  helper.make_node("Add", [y_fed, lin], [y], name=fresh(ns(f"bpda/{names[i]}/add")))]
    del g.node[:]
    g.node.extend(nodes)
    g.input.extend(new_inputs)
    return out, feeds


__all__ = ["bpda_model", "BIAS_INPUT"]
