#!/usr/bin/env python
"""Train and export the bundled example models (development-time only).

This is the ONLY place in the project that uses torch.  It trains four small
image classifiers on scikit-learn's bundled ``digits`` data set (1797 8x8
images, no download), upsampled to 28x28 so they look MNIST-like, and exports
them as small ONNX files together with the data files the tool uses at run
time.

Outputs (paths relative to the repository root by default):

* ``auditor/data/digits28_test.npz``   held-out test split, ``x`` uint8
  (N,1,28,28) = round(255*pixel), ``y`` int64 labels.
* ``auditor/data/digits28_train.npz``  train split, same layout (only written
  when it is under 1 MB compressed).
* ``models/plain_cnn.onnx``, ``models/bn_resnet.onnx``, ``models/lenet5.onnx``,
  ``models/surrogate_cnn.onnx``
* ``models/metrics.json``

Every model takes an input named ``input`` of shape (N,1,28,28) (dynamic
batch) and returns ``logits`` of shape (N,10).  ``bn_resnet`` expects
normalised input ``(x - 0.1) / 0.25``; the others take raw pixels in [0,1].

Regenerate with::

    pip install -e ".[train]" && python models/train.py
"""

from __future__ import annotations

import argparse
import io
import json
import random
import sys
import time
import warnings
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent

DATA_SEED = 0
IMAGE_SIZE = 28
TEST_FRACTION = 0.2
MAX_SHIFT = 2
BATCH_SIZE = 64
OPSET = 13
TRAIN_NPZ_LIMIT = 1_000_000  # bytes
ONNX_LIMIT = 1_000_000  # bytes
BN_MEAN = 0.1
BN_STD = 0.25


# --------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------


def _upsample(img01: np.ndarray) -> np.ndarray:
    """Bilinear 8x8 -> 28x28 upsampling of a [0,1] float image.

    PIL's BILINEAR filter keeps far-away background pixels exactly 0 (a zero
    pixel only becomes non-zero next to ink), unlike e.g. bicubic filters
    that ring.
    """
    from PIL import Image

    im = Image.fromarray(img01.astype(np.float32), mode="F")
    up = np.asarray(im.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR), dtype=np.float64)
    return np.clip(up, 0.0, 1.0)


def build_dataset(seed: int = DATA_SEED):
    """Return (x_train, y_train, x_test, y_test) with x as uint8 (N,1,28,28)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = digits.images.astype(np.float64) / 16.0  # 0..16 -> [0,1]
    labels = digits.target.astype(np.int64)
    up = np.stack([_upsample(im) for im in images])
    x = np.round(255.0 * up).astype(np.uint8)[:, None, :, :]
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, labels, test_size=TEST_FRACTION, stratify=labels, random_state=seed
    )
    return x_tr, y_tr.astype(np.int64), x_te, y_te.astype(np.int64)


def save_npz(path: Path, x: np.ndarray, y: np.ndarray) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.savez_compressed(buf, x=x, y=y)
    data = buf.getvalue()
    path.write_bytes(data)
    return len(data)


def npz_size(x: np.ndarray, y: np.ndarray) -> int:
    buf = io.BytesIO()
    np.savez_compressed(buf, x=x, y=y)
    return len(buf.getvalue())


# --------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------


def _build_models():
    import torch
    from torch import nn

    class PlainCNN(nn.Module):
        """MNIST network of the sparsity-attack paper (Sponge-style)."""

        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(1, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(16, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            )
            self.classifier = nn.Sequential(
                nn.Flatten(), nn.Linear(32 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10),
            )

        def forward(self, x):
            return self.classifier(self.features(x))

    class ResBlock(nn.Module):
        def __init__(self, ch):
            super().__init__()
            self.conv1 = nn.Conv2d(ch, ch, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(ch)
            self.conv2 = nn.Conv2d(ch, ch, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(ch)
            self.relu = nn.ReLU()

        def forward(self, x):
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return self.relu(out + x)

    class BNResNet(nn.Module):
        """Tiny residual net with BatchNorm; expects (x-0.1)/0.25 input."""

        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(
                nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU()
            )
            self.block1 = ResBlock(16)
            self.down = nn.Sequential(
                nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU()
            )
            self.block2 = ResBlock(32)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.flatten = nn.Flatten()
            self.fc = nn.Linear(32, 10)

        def forward(self, x):
            x = self.block2(self.down(self.block1(self.stem(x))))
            return self.fc(self.flatten(self.pool(x)))

    class LeNet5(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
            )
            self.classifier = nn.Sequential(
                nn.Flatten(), nn.Linear(16 * 5 * 5, 120), nn.ReLU(),
                nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10),
            )

        def forward(self, x):
            return self.classifier(self.features(x))

    class SurrogateCNN(nn.Module):
        """Different small architecture, used as a black-box attack surrogate."""

        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(
                nn.Conv2d(1, 8, 3), nn.ReLU(),              # 28 -> 26
                nn.Conv2d(8, 16, 3, stride=2), nn.ReLU(),   # 26 -> 12
                nn.Flatten(), nn.Linear(16 * 12 * 12, 64), nn.ReLU(), nn.Linear(64, 10),
            )

        def forward(self, x):
            return self.net(x)

    _ = torch  # keep linters quiet
    return {
        "plain_cnn": PlainCNN,
        "bn_resnet": BNResNet,
        "lenet5": LeNet5,
        "surrogate_cnn": SurrogateCNN,
    }


# name -> (architecture string, preprocessing, seed, lr)
MODEL_SPECS = {
    "plain_cnn": {
        "architecture": "Conv(1->16,5x5,p2)-ReLU-MaxPool2-Conv(16->32,5x5,p2)-ReLU-MaxPool2"
                        "-Flatten-Gemm(1568->128)-ReLU-Gemm(128->10)",
        "preprocessing": None,
        "seed": 1,
        "lr": 1e-3,
    },
    "bn_resnet": {
        "architecture": "Conv(1->16,3x3)-BN-ReLU-ResBlock(16)-Conv(16->32,3x3,s2)-BN-ReLU"
                        "-ResBlock(32)-GlobalAveragePool-Flatten-Gemm(32->10); "
                        "ResBlock = Conv-BN-ReLU-Conv-BN + skip, ReLU",
        "preprocessing": {"mean": BN_MEAN, "std": BN_STD},
        "seed": 2,
        "lr": 3e-3,
    },
    "lenet5": {
        "architecture": "Conv(1->6,5x5,p2)-ReLU-MaxPool2-Conv(6->16,5x5)-ReLU-MaxPool2"
                        "-Flatten-Gemm(400->120)-ReLU-Gemm(120->84)-ReLU-Gemm(84->10)",
        "preprocessing": None,
        "seed": 3,
        "lr": 2e-3,
    },
    "surrogate_cnn": {
        "architecture": "Conv(1->8,3x3)-ReLU-Conv(8->16,3x3,s2)-ReLU-Flatten"
                        "-Gemm(2304->64)-ReLU-Gemm(64->10)",
        "preprocessing": None,
        "seed": 4,
        "lr": 1e-3,
    },
}


# --------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def preprocess(x01: np.ndarray, prep) -> np.ndarray:
    if prep is None:
        return x01.astype(np.float32)
    return ((x01 - prep["mean"]) / prep["std"]).astype(np.float32)


def random_shift(batch: np.ndarray, rng: np.random.Generator, max_shift: int) -> np.ndarray:
    """Shift each (1,H,W) image by up to +-max_shift px, filling with 0."""
    n, c, h, w = batch.shape
    padded = np.zeros((n, c, h + 2 * max_shift, w + 2 * max_shift), dtype=batch.dtype)
    padded[:, :, max_shift:max_shift + h, max_shift:max_shift + w] = batch
    offs = rng.integers(0, 2 * max_shift + 1, size=(n, 2))
    out = np.empty_like(batch)
    for i, (dy, dx) in enumerate(offs):
        out[i] = padded[i, :, dy:dy + h, dx:dx + w]
    return out


def train_model(name: str, x_train_u8: np.ndarray, y_train: np.ndarray, epochs: int):
    import torch
    from torch import nn

    spec = MODEL_SPECS[name]
    seed_everything(spec["seed"])
    model = _build_models()[name]()
    rng = np.random.default_rng(spec["seed"])
    x01 = x_train_u8.astype(np.float32) / 255.0
    opt = torch.optim.Adam(model.parameters(), lr=spec["lr"])
    steps_per_epoch = int(np.ceil(len(x01) / BATCH_SIZE))
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=spec["lr"], total_steps=max(1, epochs * steps_per_epoch)
    )
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(epochs):
        model.train()
        perm = rng.permutation(len(x01))
        total, correct, loss_sum = 0, 0, 0.0
        for start in range(0, len(perm), BATCH_SIZE):
            idx = perm[start:start + BATCH_SIZE]
            xb = x01[idx]
            # Shift augmentation on the raw [0,1] pixels (zero fill = background),
            # then the model's own preprocessing.
            xb = random_shift(xb, rng, MAX_SHIFT)
            xb = torch.from_numpy(preprocess(xb, spec["preprocessing"]))
            yb = torch.from_numpy(y_train[idx])
            opt.zero_grad()
            logits = model(xb)
            loss = loss_fn(logits, yb)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += float(loss.detach()) * len(idx)
            correct += int((logits.argmax(1) == yb).sum())
            total += len(idx)
        print(f"  [{name}] epoch {epoch + 1}/{epochs} loss {loss_sum / total:.4f} "
              f"train-acc {correct / total:.4f}", flush=True)
    model.eval()
    return model


# --------------------------------------------------------------------------
# Export + verification
# --------------------------------------------------------------------------


def export_onnx(model, name: str, path: Path) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    model.eval()
    dummy = torch.zeros(1, 1, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.float32)
    kwargs = dict(
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        opset_version=OPSET,
        dynamo=False,
    )
    if name == "bn_resnet":
        # In EVAL mode the TorchScript exporter folds BatchNorm into the
        # preceding Conv.  PRESERVE with the model in eval() keeps the
        # BatchNormalization nodes (inference form, running stats).
        kwargs["training"] = torch.onnx.TrainingMode.PRESERVE
        kwargs["do_constant_folding"] = False
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # The classic TorchScript exporter is used on purpose (dynamo=False).
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (dummy,), buf, **kwargs)
    path.write_bytes(buf.getvalue())


def check_onnx(name: str, path: Path, model, x_test_u8: np.ndarray, y_test: np.ndarray) -> dict:
    import onnx
    import onnxruntime as ort
    import torch

    spec = MODEL_SPECS[name]
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    graph = proto.graph
    assert [i.name for i in graph.input] == ["input"], [i.name for i in graph.input]
    assert [o.name for o in graph.output] == ["logits"], [o.name for o in graph.output]
    ops = [n.op_type for n in graph.node]
    if name == "bn_resnet":
        bns = [n for n in graph.node if n.op_type == "BatchNormalization"]
        assert len(bns) == 6, f"expected BatchNormalization nodes, got ops {sorted(set(ops))}"
        for n in bns:
            assert len(n.output) == 1, f"BN node {n.name} has extra outputs {list(n.output)}"
            for a in n.attribute:
                if a.name == "training_mode":
                    assert a.i == 0, f"BN node {n.name} has training_mode={a.i}"
        inits = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
        for n in bns:
            mean, var = inits[n.input[3]], inits[n.input[4]]
            assert not np.allclose(mean, 0.0) and not np.allclose(var, 1.0), \
                f"BN node {n.name} has untrained running stats"
    x = preprocess(x_test_u8.astype(np.float32) / 255.0, spec["preprocessing"])
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ort_logits = sess.run(["logits"], {"input": x})[0]
    with torch.no_grad():
        torch_logits = model(torch.from_numpy(x)).numpy()
    assert ort_logits.shape == (len(x), 10), ort_logits.shape
    max_diff = float(np.max(np.abs(ort_logits - torch_logits)))
    assert max_diff <= 1e-4, f"{name}: onnxruntime vs torch max |diff| {max_diff}"
    acc = float(np.mean(ort_logits.argmax(1) == y_test))
    size = path.stat().st_size
    assert size < ONNX_LIMIT, f"{name}.onnx is {size} bytes"
    return {
        "test_accuracy": round(acc, 6),
        "test_samples": int(len(y_test)),
        "max_abs_diff_vs_torch": max_diff,
        "param_count": int(sum(p.numel() for p in model.parameters())),
        "file_size_bytes": int(size),
        "op_types": sorted(set(ops)),
    }


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out-dir", type=Path, default=REPO_ROOT / "models",
                   help="directory for the .onnx files and metrics.json (default: models/)")
    p.add_argument("--data-dir", type=Path, default=REPO_ROOT / "auditor" / "data",
                   help="directory for digits28_*.npz (default: auditor/data/)")
    p.add_argument("--epochs", type=int, default=15, help="training epochs per model")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--models", nargs="*", default=list(MODEL_SPECS),
                   choices=list(MODEL_SPECS), help="subset of models to train")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    t0 = time.time()

    x_tr, y_tr, x_te, y_te = build_dataset(DATA_SEED)
    zero_frac = float(np.mean(x_te == 0))
    print(f"data: train {x_tr.shape} test {x_te.shape}; exactly-zero pixels in test: {zero_frac:.4f}")
    test_path = args.data_dir / "digits28_test.npz"
    n = save_npz(test_path, x_te, y_te)
    print(f"wrote {test_path} ({n} bytes)")
    train_path = args.data_dir / "digits28_train.npz"
    train_size = npz_size(x_tr, y_tr)
    if train_size < TRAIN_NPZ_LIMIT:
        save_npz(train_path, x_tr, y_tr)
        print(f"wrote {train_path} ({train_size} bytes)")
    else:
        print(f"skipped {train_path}: {train_size} bytes >= {TRAIN_NPZ_LIMIT}")

    metrics = {
        "dataset": {
            "source": "sklearn.datasets.load_digits, 8x8 -> 28x28 PIL bilinear, uint8 round(255*x)",
            "split_seed": DATA_SEED,
            "test_fraction": TEST_FRACTION,
            "train_samples": int(len(y_tr)),
            "test_samples": int(len(y_te)),
            "test_zero_pixel_fraction": round(zero_frac, 6),
        },
        "models": {},
    }
    metrics_path = args.out_dir / "metrics.json"
    if metrics_path.exists() and set(args.models) != set(MODEL_SPECS):
        try:
            metrics["models"] = json.loads(metrics_path.read_text()).get("models", {})
        except (OSError, ValueError):
            pass

    for name in args.models:
        spec = MODEL_SPECS[name]
        t1 = time.time()
        print(f"training {name} (seed {spec['seed']}, {args.epochs} epochs)", flush=True)
        model = train_model(name, x_tr, y_tr, args.epochs)
        path = args.out_dir / f"{name}.onnx"
        export_onnx(model, name, path)
        m = check_onnx(name, path, model, x_te, y_te)
        m.update({
            "file": f"{name}.onnx",
            "architecture": spec["architecture"],
            "preprocessing": spec["preprocessing"],
            "seed": spec["seed"],
            "epochs": args.epochs,
        })
        metrics["models"][name] = m
        print(f"  {name}: onnxruntime test acc {m['test_accuracy']:.4f}, "
              f"{m['param_count']} params, {m['file_size_bytes']} bytes, "
              f"max|ort-torch| {m['max_abs_diff_vs_torch']:.2e} ({time.time() - t1:.1f}s)",
              flush=True)

    metrics_path.parent.mkdir(parents=True, exist_ok=True)
    # No timings in here: the file is byte-for-byte reproducible.
    metrics_path.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    print(f"wrote {metrics_path}")
    print("summary:")
    for name, m in metrics["models"].items():
        print(f"  {name:14s} acc {m['test_accuracy']:.4f}  size {m['file_size_bytes']:7d} B")
    print(f"total {time.time() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
