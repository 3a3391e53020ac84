"""The flipped-weight Conv adjoint of depthwise (stride 1), pointwise (1x1) and wide (at least
64 input channels) convolutions:
checked by directional finite differences like every Conv case, and the backward graph really
uses it (no ConvTranspose); strided depthwise and grouped (not depthwise) convolutions checked
the same way, elementwise against float64 finite differences too."""

from __future__ import annotations

import numpy as np
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
    (64, 72, 1, [3, 3], [1, 1], [1, 1, 1, 1]),  # wide, more channels out than in (VGG-style)
    (64, 128, 1, [3, 2], [2, 1], [2, 0, 1, 1]),
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


STRIDED = [
    # (channels, kernel, strides, dilations, pads or auto_pad, input size)
    (3, [3, 3], [2, 2], [1, 1], [1, 1, 1, 1], [7, 6]),
    (2, [5, 5], [2, 2], [1, 1], [2, 2, 2, 2], [9, 8]),
    (2, [3, 3], [2, 2], [2, 2], [2, 1, 0, 2], [8, 7]),
    (2, [3, 2], [3, 3], [1, 2], [0, 1, 2, 0], [8, 9]),
    (3, [3, 3], [2, 2], [1, 1], "SAME_UPPER", [7, 7]),
    (2, [1, 1], [2, 2], [1, 1], [0, 0, 0, 0], [6, 5]),  # input positions no tap reads
    (2, [2, 2], [3, 3], [1, 1], [0, 0, 0, 0], [8, 7]),  # input rows no window reads
    (2, [4, 4], [2, 2], [3, 3], [3, 2, 1, 4], [9, 10]),  # dilation coprime with the stride
]


@pytest.mark.parametrize("case", range(len(STRIDED)))
def test_strided_depthwise_adjoint(case):
    ch, kernel, strides, dil, pads, size = STRIDED[case]
    attrs = dict(kernel_shape=kernel, strides=strides, dilations=dil, group=ch)
    if isinstance(pads, str):
        attrs["auto_pad"] = pads
    else:
        attrs["pads"] = pads
    feeds = {"x": rnd([2, ch] + size, case + 7)}
    inits = {"w": rnd([ch, 1] + kernel, case + 70)}
    nodes = [node("Conv", ["x", "w"], **attrs)]
    gradcheck(nodes, feeds, inits, linear=True)


@pytest.mark.parametrize("group,cin,cout,strides", [(2, 4, 6, [1, 1]), (3, 6, 3, [2, 2]), (2, 16, 16, [1, 1]),
                                                    (4, 8, 8, [2, 1])])
def test_grouped_not_depthwise_adjoint(group, cin, cout, strides):
    feeds = {"x": rnd([2, cin, 7, 6], group + cin)}
    inits = {"w": rnd([cout, cin // group, 3, 3], cout)}
    gradcheck([node("Conv", ["x", "w"], kernel_shape=[3, 3], strides=strides, pads=[1, 0, 1, 2], group=group)],
              feeds, inits, linear=True)


@pytest.mark.parametrize("cin,cout,group,kernel,strides,bias", [
    (8, 8, 1, [3, 3], [1, 1], False),   # flipped-weight Conv
    (16, 32, 1, [5, 5], [1, 1], True),  # split flipped Conv, and a bias gradient
    (3, 4, 1, [3, 3], [2, 2], False),   # ConvTranspose
    (4, 4, 4, [3, 3], [1, 1], False),   # depthwise
])
def test_batch_norm_scale_folded_into_conv_adjoint(cin, cout, group, kernel, strides, bias):
    """Conv -> BatchNormalization (inference): the BN gradient's per-channel scale goes into the
    adjoint's weights (no full-size Mul left); values checked against finite differences."""
    rng = np.random.default_rng(cin + cout)
    inits = {"w": rnd([cout, cin // group] + kernel, 3), "s": rnd([cout], 4), "bb": rnd([cout], 5),
             "m": rnd([cout], 6), "v": (rng.random(cout) + 0.5).astype(np.float32)}
    conv_in = ["x", "w"]
    if bias:
        inits["cb"] = rnd([cout], 7)
        conv_in.append("cb")
    nodes = [node("Conv", conv_in, ["c"], kernel_shape=kernel, strides=strides, group=group,
                  pads=[k // 2 for k in kernel] * 2),
             node("BatchNormalization", ["c", "s", "bb", "m", "v"], ["n"]), node("Relu", ["n"])]
    feeds = {"x": rnd([2, cin, 7, 8], cin)}
    gradcheck(nodes, feeds, inits)
    g = add_input_gradient(build(nodes, feeds, inits), "obj")
    scaled = [n for n in g.graph.node if n.op_type == "Mul" and any("bn_grad_scale" in i for i in n.input)]
    assert not scaled


PHASES = [
    # (cin, cout, kernel, stride, pads, input size, phases expected)
    (3, 8, [3, 3], 2, [1, 1, 1, 1], [8, 6], True),   # mobilenet's / efficientnet's stem
    (2, 8, [3, 3], 2, [0, 2, 1, 0], [6, 10], True),  # asymmetric pads
    (1, 8, [3, 3], 3, [1, 0, 0, 1], [9, 6], True),   # stride 3
    (3, 8, [2, 2], 2, [0, 1, 0, 1], [8, 8], True),   # even kernel
    (1, 8, [4, 4], 3, [2, 1, 1, 2], [9, 9], True),   # even kernel, stride 3
    (3, 16, [7, 7], 2, [3, 3, 3, 3], [8, 8], False),  # resnet's stem: ConvTranspose (measured faster)
    (2, 8, [5, 5], 2, [2, 1, 2, 3], [6, 10], False),
    (3, 8, [1, 1], 2, [0, 0, 0, 0], [8, 8], False),  # phases no tap reaches: ConvTranspose
    (3, 8, [3, 3], 2, [1, 1, 1, 1], [7, 6], False),  # an odd input size: ConvTranspose
    (8, 8, [3, 3], 2, [1, 1, 1, 1], [8, 6], False),  # a whole block of input channels: ConvTranspose
]


@pytest.mark.parametrize("case", range(len(PHASES)))
def test_strided_first_layer_phase_adjoint(case):
    """A strided ungrouped Conv with few input channels (a stem): the adjoint as one stride-1 Conv
    with a block of outputs per phase and a one-hot ConvTranspose interleave, elementwise against
    float64 finite differences; the other strided cases keep the ConvTranspose adjoint."""
    cin, cout, kernel, s, pads, size, expected = PHASES[case]
    feeds = {"x": rnd([2, cin] + size, case + 11)}
    inits = {"w": rnd([cout, cin] + kernel, case + 90), "b": rnd([cout], case)}
    nodes = [node("Conv", ["x", "w", "b"], kernel_shape=kernel, strides=[s, s], pads=pads)]
    gradcheck(nodes, feeds, inits, linear=True)
    g = add_input_gradient(build(nodes, feeds, inits), "obj")
    phases = any("conv_grad_phase_weight" in t.name for t in g.graph.initializer)
    assert phases == expected
