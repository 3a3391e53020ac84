"""Gradient rules for elementwise ops: activations, arithmetic with broadcasting, variadic ops."""

from __future__ import annotations

import math

import numpy as np

from .builder import GraphBuilder, NotDifferentiable
from .registry import FOLDED, GradNode, rule

# ---------------------------------------------------------------- pass-through


@rule("Identity")
def _identity(b: GraphBuilder, n: GradNode):
    return [n.dy]


@rule("Neg")
def _neg(b: GraphBuilder, n: GradNode):
    return [b.op("Neg", [n.dy])]


@rule("Cast")
def _cast(b: GraphBuilder, n: GradNode):
    dt = b.dtypes.get(n.x())
    if dt is None or not np.issubdtype(b.np_dtype(n.x()), np.floating):
        raise NotDifferentiable("Cast from a non-floating type has no gradient")
    return [b.op("Cast", [n.dy], to=dt)]


# ---------------------------------------------------------------- activations


@rule("Relu")
def _relu(b: GraphBuilder, n: GradNode):
    # Read the output (not the input) so that onnxruntime can keep Conv+Relu fused.
    y = n.y()
    if b.relu_masked.get(n.dy) == y:  # a consumer already applied this mask
        return [n.dy]
    return [b.relu_mask(n.dy, y)]


@rule("LeakyRelu")
def _leaky_relu(b: GraphBuilder, n: GradNode):
    alpha = float(n.attr("alpha", 0.01))
    probe = n.y() if alpha > 0 else n.x()  # sign(y) == sign(x) when alpha > 0
    pos = b.op("Cast", [b.op("Greater", [probe, b.scalar(0, probe)])], to=b.dtypes[probe])
    slope = b.op("Add", [b.op("Mul", [pos, b.scalar(1 - alpha, probe)]), b.scalar(alpha, probe)])
    return [b.op("Mul", [n.dy, slope])]


@rule("PRelu")
def _prelu(b: GraphBuilder, n: GradNode):
    n.only(0)
    x, slope = n.x(0), n.x(1)
    pos = b.op("Cast", [b.op("Greater", [x, b.scalar(0, x)])], to=b.dtypes[x])
    # 1 where x > 0, slope elsewhere
    k = b.op("Add", [slope, b.op("Mul", [pos, b.op("Sub", [b.scalar(1, x), slope])])])
    return [b.op("Mul", [n.dy, k])]


@rule("Clip")
def _clip(b: GraphBuilder, n: GradNode):
    # The mask lo < y < hi on the output y = clip(x) (for lo <= hi it is lo < x < hi; for
    # lo > hi, y = hi is constant and the mask is 0).  Reading y, not x, lets onnxruntime keep
    # Conv + Clip (ReLU6) fused.  At x == lo or x == hi the (sub)gradient is 0, as in PyTorch.
    # Measured no faster for ReLU6 (8x144x56x56, 2 threads): y != 0 by a Cast to bool instead of
    # Greater, Sign(y * (6 - y)) as the mask, Where(cond, dy, 0), |y - 3| < 3.
    n.only(0)
    x, y = n.x(0), n.y()
    lo = n.x(1) if len(n.node.input) > 1 and n.x(1) else None
    hi = n.x(2) if len(n.node.input) > 2 and n.x(2) else None
    if b.opset < 11:  # attributes (canonicalisation normally removes this case)
        lo_v, hi_v = n.attr("min"), n.attr("max")
        lo = b.scalar(lo_v, x) if lo_v is not None else None
        hi = b.scalar(hi_v, x) if hi_v is not None else None
    conds = []
    if lo is not None:
        conds.append(b.op("Greater", [y, lo]))
    if hi is not None:
        conds.append(b.op("Less", [y, hi]))
    if not conds:
        return [n.dy]
    cond = conds[0] if len(conds) == 1 else b.op("And", conds)
    return [b.masked(n.dy, cond, y)]


@rule("Sigmoid")
def _sigmoid(b: GraphBuilder, n: GradNode):
    y = n.y()
    return [b.times(n.dy, b.op("Mul", [y, b.op("Sub", [b.scalar(1, y), y])]), y)]


@rule("Tanh")
def _tanh(b: GraphBuilder, n: GradNode):
    y = n.y()
    return [b.times(n.dy, b.op("Sub", [b.scalar(1, y), b.op("Mul", [y, y])]), y)]


@rule("HardSigmoid")
def _hard_sigmoid(b: GraphBuilder, n: GradNode):
    y = n.y()
    alpha = float(n.attr("alpha", 0.2))
    inside = b.op("And", [b.op("Greater", [y, b.scalar(0, y)]), b.op("Less", [y, b.scalar(1, y)])])
    return [b.masked(b.op("Mul", [n.dy, b.scalar(alpha, y)]), inside, y)]


@rule("HardSwish")
def _hard_swish(b: GraphBuilder, n: GradNode):
    # y = x * clip(x/6 + 1/2, 0, 1);  dy/dx = 0 (x < -3), x/3 + 1/2 (-3 <= x <= 3), 1 (x > 3)
    x = n.x()
    mid = b.op("Add", [b.op("Mul", [x, b.scalar(1 / 3, x)]), b.scalar(0.5, x)])
    inside = b.op("And", [b.op("GreaterOrEqual", [x, b.scalar(-3, x)]),
                          b.op("LessOrEqual", [x, b.scalar(3, x)])])
    above = b.op("Cast", [b.op("Greater", [x, b.scalar(3, x)])], to=b.dtypes[x])
    slope = b.op("Add", [above, b.masked(mid, inside, x)])
    return [b.op("Mul", [n.dy, slope])]


@rule("Celu")
def _celu(b: GraphBuilder, n: GradNode):
    # y = max(0, x) + min(0, alpha (exp(x/alpha) - 1)); dy/dx = 1 (x > 0), exp(x/alpha) = y/alpha + 1
    x, y = n.x(), n.y()
    alpha = float(n.attr("alpha", 1.0))
    neg = b.op("Mul", [n.dy, b.op("Add", [b.op("Mul", [y, b.scalar(1 / alpha, y)]), b.scalar(1, y)])])
    return [b.op("Where", [b.op("Greater", [x, b.scalar(0, x)]), n.dy, neg])]


@rule("ThresholdedRelu")
def _thresholded_relu(b: GraphBuilder, n: GradNode):
    x = n.x()
    return [b.masked(n.dy, b.op("Greater", [x, b.scalar(float(n.attr("alpha", 1.0)), x)]), x)]


@rule("Shrink")
def _shrink(b: GraphBuilder, n: GradNode):
    # y = x - bias (x > lambd), x + bias (x < -lambd), 0 otherwise
    x = n.x()
    lambd = float(n.attr("lambd", 0.5))
    outside = b.op("Greater", [b.op("Abs", [x]), b.scalar(lambd, x)])
    return [b.masked(n.dy, outside, x)]


@rule("Mish")
def _mish(b: GraphBuilder, n: GradNode):
    # y = x tanh(softplus(x)); dy/dx = t + x (1 - t^2) sigmoid(x), t = tanh(softplus(x))
    x = n.x()
    t = b.op("Tanh", [b.op("Softplus", [x])])
    one_minus = b.op("Sub", [b.scalar(1, x), b.op("Mul", [t, t])])
    slope = b.op("Add", [t, b.op("Mul", [b.op("Mul", [x, one_minus]), b.op("Sigmoid", [x])])])
    return [b.op("Mul", [n.dy, slope])]


@rule("Gelu")
def _gelu(b: GraphBuilder, n: GradNode):
    # none: y = x Phi(x), dy/dx = Phi(x) + x phi(x);
    # tanh: y = x (1 + t)/2 with t = tanh(c (x + k x^3)), dy/dx = (1 + t)/2 + x (1 - t^2) c (1 + 3 k x^2)/2
    x = n.x()
    approx = n.text_attr("approximate", "none")
    x2 = b.op("Mul", [x, x])
    if approx == "tanh":
        c, k = math.sqrt(2 / math.pi), 0.044715
        inner = b.op("Mul", [b.op("Add", [x, b.op("Mul", [b.op("Mul", [x2, x]), b.scalar(k, x)])]), b.scalar(c, x)])
        t = b.op("Tanh", [inner])
        half = b.op("Mul", [b.op("Add", [t, b.scalar(1, x)]), b.scalar(0.5, x)])
        dinner = b.op("Add", [b.op("Mul", [x2, b.scalar(3 * k * c, x)]), b.scalar(c, x)])
        rest = b.op("Mul", [b.op("Mul", [x, b.op("Sub", [b.scalar(1, x), b.op("Mul", [t, t])])]),
                            b.op("Mul", [dinner, b.scalar(0.5, x)])])
        return [b.op("Mul", [n.dy, b.op("Add", [half, rest])])]
    if approx != "none":
        raise NotDifferentiable(f"Gelu approximate={approx!r}")
    cdf = b.op("Mul", [b.op("Add", [b.op("Erf", [b.op("Mul", [x, b.scalar(1 / math.sqrt(2), x)])]),
                                    b.scalar(1, x)]), b.scalar(0.5, x)])
    pdf = b.op("Mul", [b.op("Exp", [b.op("Mul", [x2, b.scalar(-0.5, x)])]), b.scalar(1 / math.sqrt(2 * math.pi), x)])
    return [b.op("Mul", [n.dy, b.op("Add", [cdf, b.op("Mul", [x, pdf])])])]


@rule("Elu")
def _elu(b: GraphBuilder, n: GradNode):
    x, y = n.x(), n.y()
    alpha = float(n.attr("alpha", 1.0))
    neg = b.op("Mul", [n.dy, b.op("Add", [y, b.scalar(alpha, y)])])  # alpha*exp(x) = y + alpha
    return [b.op("Where", [b.op("Greater", [x, b.scalar(0, x)]), n.dy, neg])]


@rule("Selu")
def _selu(b: GraphBuilder, n: GradNode):
    x, y = n.x(), n.y()
    alpha = float(n.attr("alpha", 1.67326319217681884765625))
    gamma = float(n.attr("gamma", 1.05070102214813232421875))
    pos = b.op("Mul", [n.dy, b.scalar(gamma, y)])
    neg = b.op("Mul", [n.dy, b.op("Add", [y, b.scalar(gamma * alpha, y)])])
    return [b.op("Where", [b.op("Greater", [x, b.scalar(0, x)]), pos, neg])]


@rule("Softplus")
def _softplus(b: GraphBuilder, n: GradNode):
    return [b.op("Mul", [n.dy, b.op("Sigmoid", [n.x()])])]


@rule("Softsign")
def _softsign(b: GraphBuilder, n: GradNode):
    x = n.x()
    den = b.op("Add", [b.scalar(1, x), b.op("Abs", [x])])
    return [b.op("Div", [n.dy, b.op("Mul", [den, den])])]


@rule("Exp")
def _exp(b: GraphBuilder, n: GradNode):
    return [b.op("Mul", [n.dy, n.y()])]


@rule("Log")
def _log(b: GraphBuilder, n: GradNode):
    return [b.op("Div", [n.dy, n.x()])]


@rule("Sqrt")
def _sqrt(b: GraphBuilder, n: GradNode):
    y = n.y()
    return [b.op("Div", [b.op("Mul", [n.dy, b.scalar(0.5, y)]), y])]


@rule("Reciprocal")
def _reciprocal(b: GraphBuilder, n: GradNode):
    y = n.y()
    return [b.op("Neg", [b.op("Mul", [n.dy, b.op("Mul", [y, y])])])]


@rule("Abs")
def _abs(b: GraphBuilder, n: GradNode):
    return [b.op("Mul", [n.dy, b.op("Sign", [n.x()])])]


@rule("Erf")
def _erf(b: GraphBuilder, n: GradNode):
    x = n.x()
    g = b.op("Exp", [b.op("Neg", [b.op("Mul", [x, x])])])
    return [b.op("Mul", [n.dy, b.op("Mul", [g, b.scalar(2 / math.sqrt(math.pi), x)])])]


@rule("Sin")
def _sin(b: GraphBuilder, n: GradNode):
    return [b.op("Mul", [n.dy, b.op("Cos", [n.x()])])]


@rule("Cos")
def _cos(b: GraphBuilder, n: GradNode):
    return [b.op("Neg", [b.op("Mul", [n.dy, b.op("Sin", [n.x()])])])]


# ---------------------------------------------------------------- binary, with broadcasting


@rule("Add")
def _add(b: GraphBuilder, n: GradNode):
    y = n.y()
    return [b.reduce_to(n.dy, y, n.x(0)) if n.need(0) else None,
            b.reduce_to(n.dy, y, n.x(1)) if n.need(1) else None]


@rule("Sub")
def _sub(b: GraphBuilder, n: GradNode):
    y = n.y()
    return [b.reduce_to(n.dy, y, n.x(0)) if n.need(0) else None,
            b.reduce_to(b.op("Neg", [n.dy]), y, n.x(1)) if n.need(1) else None]


def _silu_gate(b: GraphBuilder, n: GradNode) -> int | None:
    """The input index of s in y = x * s with s = Sigmoid(x) (SiLU / Swish), same shapes."""
    for i in (0, 1):
        s, x = n.x(i), n.x(1 - i)
        p = b.producer(s)
        if (p is not None and p.op_type == "Sigmoid" and p.domain in ("", "ai.onnx") and p.input[0] == x
                and n.need(1 - i) and b.static_shape(x) is not None and b.static_shape(x) == b.static_shape(n.y())):
            return i
    return None


@rule("Mul")
def _mul(b: GraphBuilder, n: GradNode):
    y, a, c = n.y(), n.x(0), n.x(1)
    gate = _silu_gate(b, n)
    if gate is not None:
        # d(x s)/dx = s + x s (1 - s) = s + y (1 - s): both paths (through s too) in four ops,
        # reading s and y only; the Sigmoid node gets no gradient from this Mul.
        s = n.x(gate)
        # 1 - s as a depthwise 1x1 Conv where it can be: the four ops then all run in
        # onnxruntime's blocked layout with x, s and y (Sub by a constant would make it reorder
        # s, y and dY to NCHW and the result back)
        one_minus = b.channel_affine(s, -1.0, 1.0) or b.op("Sub", [b.scalar(1, y), s])
        d = b.op("Add", [s, b.op("Mul", [y, one_minus])])
        out = [FOLDED, FOLDED]
        out[1 - gate] = b.op("Mul", [n.dy, d])
        return out
    # by a 0-d factor (the sparsity objective's beta), a factored dY keeps its full-size op count
    da = _mul_grad(b, n.dy, c, y, a) if n.need(0) else None
    dc = _mul_grad(b, n.dy, a, y, c) if n.need(1) else None
    return [da, dc]


def _mul_grad(b: GraphBuilder, dy: str, other: str, y: str, x: str) -> str:
    """d(x * other)/dx * dy, reduced to the shape of x."""
    scaled = b.times_scalar(dy, other)
    if scaled is not None:
        return scaled
    shp = b.static_shape(other)
    if shp is not None and shp == b.static_shape(y):  # other is full-size: a broadcast dY stays small
        return b.reduce_to(b.times(dy, other, y), y, x)
    return b.reduce_to(b.op("Mul", [dy, other]), y, x)


@rule("Div")
def _div(b: GraphBuilder, n: GradNode):
    y, a, c = n.y(), n.x(0), n.x(1)
    da = b.reduce_to(b.op("Div", [n.dy, c]), y, a) if n.need(0) else None
    dc = None
    if n.need(1):  # d(a/c)/dc = -a/c^2 = -y/c
        dc = b.reduce_to(b.op("Neg", [b.op("Div", [b.op("Mul", [n.dy, y]), c])]), y, c)
    return [da, dc]


@rule("Pow")
def _pow(b: GraphBuilder, n: GradNode):
    y, a, p = n.y(), n.x(0), n.x(1)
    dt = b.np_dtype(a)
    da = dc = None
    if n.need(0):
        pv = b.const_value(p)
        if pv is not None and pv.size == 1:
            e = float(pv.reshape(()))
            if e == 1.0:
                local = None
            elif e == 2.0:
                local = b.op("Mul", [a, b.scalar(2, a)])
            else:
                local = b.op("Mul", [b.op("Pow", [a, b.const(np.asarray(e - 1, dt))]),
                                     b.scalar(e, a)])
        else:
            pc = p if b.dtypes.get(p) == b.dtypes.get(a) else b.op("Cast", [p], to=b.dtypes[a])
            local = b.op("Mul", [pc, b.op("Pow", [a, b.op("Sub", [pc, b.scalar(1, a)])])])
        g = n.dy if local is None else b.op("Mul", [n.dy, local])
        da = b.reduce_to(g, y, a)
    if n.need(1):
        if b.dtypes.get(p) != b.dtypes.get(a):
            raise NotDifferentiable("Pow exponent of another type than the base")
        dc = b.reduce_to(b.op("Mul", [n.dy, b.op("Mul", [y, b.op("Log", [a])])]), y, p)
    return [da, dc]


@rule("Where")
def _where(b: GraphBuilder, n: GradNode):
    n.only(1, 2)
    cond, y = n.x(0), n.y()
    zero = b.scalar(0, y)
    da = b.reduce_to(b.op("Where", [cond, n.dy, zero]), y, n.x(1)) if n.need(1) else None
    dc = b.reduce_to(b.op("Where", [cond, zero, n.dy]), y, n.x(2)) if n.need(2) else None
    return [None, da, dc]


# ---------------------------------------------------------------- variadic


@rule("Sum")
def _sum(b: GraphBuilder, n: GradNode):
    y = n.y()
    return [b.reduce_to(n.dy, y, x) if n.need(i) else None for i, x in enumerate(n.node.input)]


@rule("Mean")
def _mean(b: GraphBuilder, n: GradNode):
    y = n.y()
    g = b.op("Mul", [n.dy, b.scalar(1 / len(n.node.input), y)])
    return [b.reduce_to(g, y, x) if n.need(i) else None for i, x in enumerate(n.node.input)]


@rule("Max", "Min")
def _max_min(b: GraphBuilder, n: GradNode):
    # The gradient goes to the input(s) equal to the result, split evenly between ties.
    y = n.y()
    xs = list(n.node.input)
    if len(xs) == 1:
        return [n.dy]
    masks = [b.op("Equal", [x, y]) for x in xs]
    count = b.add_all([b.op("Cast", [m], to=b.dtypes[y]) for m in masks])
    share = b.op("Div", [n.dy, count])
    return [b.reduce_to(b.masked(share, m, y), y, x) if n.need(i) else None
            for i, (x, m) in enumerate(zip(xs, masks))]
