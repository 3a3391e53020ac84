#!/usr/bin/env python
"""torchvision architectures exported to ONNX the ordinary way (needs the optional torch extra:
``pip install torch torchvision``; nothing is downloaded: ``weights=None``, random weights from
``torch.manual_seed(0)``).

Two exporters, as a user of the installed torch meets them:

* ``dynamo``       ``torch.onnx.export(..., dynamo=True)``, the default since torch 2.9 (torch.export
                   + onnxscript; its optimiser folds BatchNormalization into the convolutions).  When
                   onnxscript cannot convert its graph down to the requested opset it keeps its own
                   (18 with torch 2.9-2.14): the model's real opset is what ``opset_of`` reads.
* ``torchscript``  ``torch.onnx.export(..., dynamo=False)``, the legacy TorchScript exporter
                   (BatchNormalization kept, Constant nodes, the requested opset).

Random weights as torchvision initialises them make some networks degenerate: mobilenet_v2's
logits differ by ~1e-9 (its classifier is N(0, 0.01) over features that identity batch
normalisations leave tiny), so every input gradient is float32 noise.  Before export each
BatchNormalization's running statistics are therefore calibrated on ``CALIBRATE`` batches of 8
uniform [0, 1] inputs (train mode, cumulative average), as training would leave them: activations
of unit scale, about half of every ReLU's outputs zero, and folded BatchNormalizations that are not
identities.

Both with a dynamic batch (input ``input``, output ``logits``).  ``cached(arch, folder, ...)``
exports once to ``folder/<arch>_<size>_op<opset>_<exporter>.onnx`` and returns the path.

    python benchmarks/torchvision_models.py [--out DIR] [--size 224] [--opset 17] [--exporter dynamo] [ARCH ...]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import warnings
from pathlib import Path

import onnx

EXPORTERS = ("dynamo", "torchscript")
CALIBRATE = 2
#: the architectures of issue 12's table
TABLE = ("resnet18", "mobilenet_v2", "efficientnet_b0", "densenet121", "convnext_tiny", "vgg11_bn")
#: the coverage run's default set: the table's and five more families
ARCHS = TABLE + ("mobilenet_v3_small", "squeezenet1_1", "shufflenet_v2_x1_0", "regnet_y_400mf")


def torch_or_none():
    """(torch, torchvision), or None when the optional extra is not installed."""
    try:
        import torch
        import torchvision
    except ImportError:
        return None
    return torch, torchvision


def network(arch: str, size: int = 224):
    """The torch module ``arch`` in eval mode: random weights from ``torch.manual_seed(0)``, batch
    normalisations calibrated at ``size`` x ``size`` (what :func:`export` exports)."""
    import torch
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.get_model(arch, weights=None)
    bns = [mod for mod in net.modules() if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm)]
    if bns:
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average over the calibration batches
        net.train()
        with torch.no_grad():
            for _ in range(CALIBRATE):
                net(torch.rand(8, 3, size, size))
    return net.eval()


def export(arch: str, size: int, opset: int, exporter: str, path: Path, net=None) -> None:
    """Export ``arch`` (:func:`network`; or the module ``net`` given) at ``size`` x ``size`` to
    ``path``; the exporter's chatter (progress lines, deprecation warnings) is swallowed, its
    exceptions are not."""
    import torch

    net = network(arch, size) if net is None else net.eval()
    # a batch of 2: torch.export specialises dimensions of size 1, and convnext_tiny's dynamic batch
    # then violates its constraints ("Constraints violated (N)!")
    dummy = torch.rand(2, 3, size, size)
    names = dict(input_names=["input"], output_names=["logits"])
    for log in ("torch.onnx", "onnxscript"):  # "Setting ONNX exporter to use operator set 18", its converter failing
        logging.getLogger(log).setLevel(logging.ERROR)
    with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            torch.onnx.export(net, (dummy,), str(path), dynamo=True, opset_version=opset, external_data=False,
                              dynamic_shapes=({0: torch.export.Dim("N")},), **names)
        elif exporter == "torchscript":
            torch.onnx.export(net, dummy, str(path), dynamo=False, opset_version=opset,
                              dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}}, **names)
        else:
            raise ValueError(f"unknown exporter {exporter!r} (one of {', '.join(EXPORTERS)})")


def cached(arch: str, folder: str | Path, size: int = 224, opset: int = 17, exporter: str = "dynamo") -> Path:
    """``folder/<arch>_<size>_op<opset>_<exporter>.onnx``, exported on first use."""
    p = Path(folder) / f"{arch}_{size}_op{opset}_{exporter}.onnx"
    if not p.exists():
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(".tmp")
        export(arch, size, opset, exporter, tmp)
        tmp.replace(p)
    return p


def opset_of(path: Path) -> int:
    """The default-domain opset the exported file declares."""
    m = onnx.load(str(path), load_external_data=False)
    return next((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), 0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("archs", nargs="*", default=list(TABLE))
    ap.add_argument("--out", default="/tmp/auditor-torchvision")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--opset", type=int, default=17)
    ap.add_argument("--exporter", default="dynamo", choices=EXPORTERS)
    args = ap.parse_args(argv)
    if torch_or_none() is None:
        print("skipped: needs the optional torch extra (pip install torch torchvision)")
        return 0
    for arch in args.archs:
        print(cached(arch, args.out, args.size, args.opset, args.exporter))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
