#!/usr/bin/env python
"""ImageNet-sized classifiers built with onnx.helper (random He-initialised weights), for the
scaling benchmarks: no torch needed.

* ``resnet18``      7x7/2 stem + max-pool, 4 stages of 2 basic blocks (64-512 channels), 1x1/2
                    downsample shortcuts, global average pool, FC 1000 (as torchvision's resnet18)
* ``mobilenet_v2``  inverted residuals (1x1 expand, depthwise 3x3, 1x1 project), ReLU6 = Clip(0, 6)
* ``efficientnet_b0`` MBConv blocks with depthwise 3x3 / 5x5, SiLU = x * Sigmoid(x) and
                    squeeze-excite (global pool, two 1x1 convolutions, Sigmoid, Mul)
* ``vgg11_bn``      VGG-11 with BatchNormalization after every convolution, the 25088-4096-4096-1000
                    classifier (Flatten + Gemm)

All take ``input`` (N, 3, 224, 224) with a symbolic batch dimension and output ``logits`` (N, 1000);
BatchNormalization nodes are kept (running mean 0, variance 1, gamma ~ 1, small random beta), as a
model exported without folding has them.  ``build(name)`` returns the ModelProto;
``cached(name, folder)`` writes it once to ``folder/name.onnx`` and returns the path::

    python benchmarks/imagenet_models.py [--out /tmp/auditor-imagenet] [names...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
NAMES = ("resnet18", "mobilenet_v2", "efficientnet_b0", "vgg11_bn")


class _Net:
    """A tiny graph writer: every method appends nodes and returns the output tensor name."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.k = 0

    def name(self, hint: str) -> str:
        self.k += 1
        return f"{hint}_{self.k}"

    def init(self, arr: np.ndarray, hint: str) -> str:
        n = self.name(hint)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), n))
        return n

    def node(self, op: str, inputs: list[str], **attrs) -> str:
        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=self.name(op), **attrs))
        return out

    def conv(self, x: str, cin: int, cout: int, k: int, s: int = 1, group: int = 1, bias: bool = False) -> str:
        fan_in = (cin // group) * k * k
        w = (self.rng.standard_normal((cout, cin // group, k, k)) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        ins = [x, self.init(w, "w")]
        if bias:
            ins.append(self.init((self.rng.standard_normal(cout) * 0.01).astype(np.float32), "b"))
        p = k // 2
        return self.node("Conv", ins, kernel_shape=[k, k], strides=[s, s], pads=[p, p, p, p], group=group)

    def bn(self, x: str, c: int) -> str:
        gamma = (1.0 + 0.1 * self.rng.standard_normal(c)).astype(np.float32)
        beta = (0.1 * self.rng.standard_normal(c)).astype(np.float32)
        return self.node("BatchNormalization", [x, self.init(gamma, "gamma"), self.init(beta, "beta"),
                                                self.init(np.zeros(c, np.float32), "mean"),
                                                self.init(np.ones(c, np.float32), "var")], epsilon=1e-5)

    def relu(self, x: str) -> str:
        return self.node("Relu", [x])

    def relu6(self, x: str) -> str:
        return self.node("Clip", [x, self.init(np.array(0.0, np.float32), "lo"),
                                  self.init(np.array(6.0, np.float32), "hi")])

    def silu(self, x: str) -> str:
        return self.node("Mul", [x, self.node("Sigmoid", [x])])

    def cbr(self, x, cin, cout, k, s=1, group=1, act="relu"):
        y = self.bn(self.conv(x, cin, cout, k, s, group), cout)
        return {"relu": self.relu, "relu6": self.relu6, "silu": self.silu, None: lambda t: t}[act](y)

    def head(self, x: str, c: int, classes: int = 1000) -> str:
        y = self.node("Flatten", [self.node("GlobalAveragePool", [x])], axis=1)
        return self.gemm(y, c, classes)

    def gemm(self, x: str, k: int, m: int) -> str:
        w = (self.rng.standard_normal((m, k)) * np.sqrt(1.0 / k)).astype(np.float32)
        b = (self.rng.standard_normal(m) * 0.01).astype(np.float32)
        return self.node("Gemm", [x, self.init(w, "fc_w"), self.init(b, "fc_b")], transB=1)

    def model(self, out: str, name: str) -> onnx.ModelProto:
        self.nodes.append(helper.make_node("Identity", [out], ["logits"], name="logits_out"))
        x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 224, 224])
        y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 1000])
        g = helper.make_graph(self.nodes, name, [x], [y], self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="auditor-bench")
        m.ir_version = 8
        return m


def resnet18(seed: int = 0) -> onnx.ModelProto:
    n = _Net(seed)
    x = n.cbr("input", 3, 64, 7, 2)
    x = n.node("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin = 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        for b in range(2):
            s = stride if b == 0 else 1
            y = n.cbr(x, cin, cout, 3, s)
            y = n.bn(n.conv(y, cout, cout, 3), cout)
            sc = x if (s == 1 and cin == cout) else n.bn(n.conv(x, cin, cout, 1, s), cout)
            x = n.relu(n.node("Add", [y, sc]))
            cin = cout
    return n.model(n.head(x, 512), "resnet18")


def mobilenet_v2(seed: int = 0) -> onnx.ModelProto:
    n = _Net(seed)
    x = n.cbr("input", 3, 32, 3, 2, act="relu6")
    cin = 32
    for t, c, reps, s in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                          (6, 160, 3, 2), (6, 320, 1, 1)):
        for r in range(reps):
            stride = s if r == 0 else 1
            hid = cin * t
            y = x if t == 1 else n.cbr(x, cin, hid, 1, act="relu6")
            y = n.cbr(y, hid, hid, 3, stride, group=hid, act="relu6")
            y = n.cbr(y, hid, c, 1, act=None)
            x = n.node("Add", [x, y]) if stride == 1 and cin == c else y
            cin = c
    x = n.cbr(x, cin, 1280, 1, act="relu6")
    return n.model(n.head(x, 1280), "mobilenet_v2")


def efficientnet_b0(seed: int = 0) -> onnx.ModelProto:
    n = _Net(seed)
    x = n.cbr("input", 3, 32, 3, 2, act="silu")
    cin = 32
    for t, c, reps, s, k in ((1, 16, 1, 1, 3), (6, 24, 2, 2, 3), (6, 40, 2, 2, 5), (6, 80, 3, 2, 3),
                             (6, 112, 3, 1, 5), (6, 192, 4, 2, 5), (6, 320, 1, 1, 3)):
        for r in range(reps):
            stride = s if r == 0 else 1
            hid = cin * t
            y = x if t == 1 else n.cbr(x, cin, hid, 1, act="silu")
            y = n.cbr(y, hid, hid, k, stride, group=hid, act="silu")
            sq = max(1, cin // 4)  # squeeze-excite on the block's input width
            e = n.node("GlobalAveragePool", [y])
            e = n.silu(n.conv(e, hid, sq, 1, bias=True))
            e = n.node("Sigmoid", [n.conv(e, sq, hid, 1, bias=True)])
            y = n.node("Mul", [y, e])
            y = n.cbr(y, hid, c, 1, act=None)
            x = n.node("Add", [x, y]) if stride == 1 and cin == c else y
            cin = c
    x = n.cbr(x, cin, 1280, 1, act="silu")
    return n.model(n.head(x, 1280), "efficientnet_b0")


def vgg11_bn(seed: int = 0) -> onnx.ModelProto:
    n = _Net(seed)
    x, cin = "input", 3
    for v in (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"):
        if v == "M":
            x = n.node("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])
        else:
            x = n.relu(n.bn(n.conv(x, cin, v, 3, bias=True), v))
            cin = v
    x = n.node("Flatten", [x], axis=1)
    x = n.relu(n.gemm(x, 512 * 7 * 7, 4096))
    x = n.relu(n.gemm(x, 4096, 4096))
    return n.model(n.gemm(x, 4096, 1000), "vgg11_bn")


BUILDERS = {"resnet18": resnet18, "mobilenet_v2": mobilenet_v2, "efficientnet_b0": efficientnet_b0,
            "vgg11_bn": vgg11_bn}


def build(name: str, seed: int = 0) -> onnx.ModelProto:
    return BUILDERS[name](seed)


def cached(name: str, folder: str | Path) -> Path:
    """``folder/name.onnx``, built and checked on first use."""
    p = Path(folder) / f"{name}.onnx"
    if not p.exists():
        p.parent.mkdir(parents=True, exist_ok=True)
        m = build(name)
        onnx.checker.check_model(m)
        tmp = p.with_suffix(".tmp")
        onnx.save(m, str(tmp))
        tmp.replace(p)
    return p


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", default=list(NAMES))
    ap.add_argument("--out", default="/tmp/auditor-imagenet")
    args = ap.parse_args(argv)
    for name in args.names:
        print(cached(name, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
