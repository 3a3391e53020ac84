"""The flipped-weight Conv adjoint of depthwise (stride 1) and pointwise (1x1) convolutions:
checked by directional finite differences like every Conv case, and the backward graph really
uses it (no ConvTranspose)."""

from __future__ import annotations

import pytest
from test_grad_ops import build, gradcheck, node, rnd

from auditor.grad import add_input_gradient

CASES = [
    # (cin, cout, group, kernel, dilations, pads or auto_pad)
    (6, 6, 6, [3, 3], [1, 1], [1, 1, 1, 1]),
    (5, 5, 5, [5, 5], [1, 1], [2, 1, 2, 3]),
    (4, 4, 4, [3, 3], [2, 2], [2, 2, 0, 1]),
    (3, 3, 3, [3, 2], [1, 1], "SAME_UPPER"),
    (8, 16, 1, [1, 1], [1, 1], [0, 0, 0, 0]),
    (16, 8, 1, [1, 1], [1, 1], [1, 0, 0, 1]),
]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_depthwise_and_pointwise_adjoint(case):
    cin, cout, group, kernel, dil, pads = CASES[case]
    attrs = dict(kernel_shape=kernel, dilations=dil, group=group)
    if isinstance(pads, str):
        attrs["auto_pad"] = pads
    else:
        attrs["pads"] = pads
    feeds = {"x": rnd([2, cin, 7, 6], case)}
    inits = {"w": rnd([cout, cin // group] + kernel, case + 50)}
    nodes = [node("Conv", ["x", "w"], **attrs)]
    gradcheck(nodes, feeds, inits, linear=True)
    g = add_input_gradient(build(nodes, feeds, inits), "obj")
    ops = [n.op_type for n in g.graph.node]
    assert "ConvTranspose" not in ops and ops.count("Conv") == 2
