"""Data sources a scenario can name, all returned as raw NCHW float32 pixels in the scenario's range.

- ``digits``: the bundled held-out split of scikit-learn's digits, upsampled to 28x28 (made by
  ``models/train.py``; no download);
- ``npy`` / ``npz``: arrays (``x`` and optional ``y``), layout NCHW, NHWC or NHW;
- ``images``: a folder of PNG/JPEG files, labelled by integer sub-folder names when present;
- ``idx``: MNIST-style IDX files (images and optional labels).

Integer data (uint8 images) are read as fractions of 255 and mapped onto the pixel range; float
data must already lie in the range.  NaNs, infinities, wrong ranks and out-of-range values are
refused with an error naming the file.
"""

from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import numpy as np

from . import schema
from .errors import AuditorError

BUNDLED = Path(__file__).parent / "data"


@dataclass
class DataSpec:
    """Where the audit's inputs come from."""

    source: Literal["digits", "npy", "npz", "images", "idx"] = schema.field("digits", doc="kind of data source")
    path: Optional[str] = schema.field(None, doc="file or folder (relative to the scenario file); not used by 'digits'")
    labels: Optional[str] = schema.field(None, doc="labels file: .npy for 'npy', IDX for 'idx'")
    x_key: str = schema.field("x", doc="array name of the inputs in an .npz file")
    y_key: Optional[str] = schema.field("y", doc="array name of the labels in an .npz file (absent = no labels)")
    split: Literal["test", "train"] = schema.field("test", doc="'digits' only: the held-out split (default) or the training split")
    layout: Literal["NCHW", "NHWC", "NHW"] = schema.field("NCHW", doc="layout of arrays in npy/npz files")
    count: Optional[int] = schema.field(None, doc="use this many inputs (all when absent)")
    shuffle: bool = schema.field(False, doc="draw `count` inputs at random (seeded) instead of the first ones")
    size: Optional[list[int]] = schema.field(None, doc="'images' only: resize to [height, width]")
    channels: Literal[1, 3] = schema.field(1, doc="'images' only: 1 = grayscale, 3 = RGB")

    def validate(self) -> None:
        if self.source != "digits" and not self.path:
            raise ValueError(f"data source '{self.source}' needs a 'path'")
        if self.count is not None and self.count <= 0:
            raise ValueError("count must be positive")
        if self.size is not None and (len(self.size) != 2 or min(self.size) <= 0):
            raise ValueError("size must be [height, width] with positive values")


@dataclass
class Dataset:
    x: np.ndarray  # (N, C, H, W) float32 in the raw pixel range
    y: np.ndarray | None  # (N,) int64
    description: str


def load_data(spec: DataSpec, base_dir: Path, bounds: tuple[float, float] = (0.0, 1.0), seed: int = 0) -> Dataset:
    base_dir = Path(base_dir)
    where = str(base_dir / spec.path) if spec.path else "bundled digits"
    if spec.source == "digits":
        f = BUNDLED / f"digits28_{spec.split}.npz"
        x, y = _read_npz(f, "x", "y", where)
        desc = f"bundled digits ({spec.split} split, 28x28)"
    else:
        p = base_dir / spec.path
        if not p.exists():
            raise AuditorError("data file not found", where=str(p))
        if spec.source == "npy":
            x = _read_npy(p)
            y = _read_npy(base_dir / spec.labels) if spec.labels else None
        elif spec.source == "npz":
            x, y = _read_npz(p, spec.x_key, spec.y_key, str(p))
        elif spec.source == "idx":
            x = _read_idx(p)
            y = _read_idx(base_dir / spec.labels) if spec.labels else None
            if x.ndim == 3:
                x = x[:, None]
        else:
            x, y = _read_images(p, spec)
        if spec.source in ("npy", "npz"):
            x = _to_nchw(x, spec.layout, str(p))
        desc = f"{spec.source}: {spec.path}"
    x = _to_range(x, bounds, where)
    if y is not None:
        y = np.asarray(y)
        if y.ndim != 1 or len(y) != len(x):
            raise AuditorError(f"labels have shape {y.shape}, expected ({len(x)},)", where=where)
        if not np.issubdtype(y.dtype, np.integer):
            if not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
                raise AuditorError("labels must be integers", where=where)
        y = y.astype(np.int64)
    if spec.count is not None:
        if spec.count > len(x):
            raise AuditorError(f"count {spec.count} exceeds the {len(x)} inputs available", where=where)
        idx = (np.random.default_rng(seed).choice(len(x), spec.count, replace=False) if spec.shuffle
               else np.arange(spec.count))
        x = x[idx]
        y = y[idx] if y is not None else None
    return Dataset(np.ascontiguousarray(x), y, desc)


def _read_npy(p: Path) -> np.ndarray:
    if not p.exists():
        raise AuditorError("data file not found", where=str(p))
    try:
        return np.load(p, allow_pickle=False)
    except Exception as e:
        raise AuditorError(f"cannot read .npy file ({str(e).splitlines()[0][:200]})", where=str(p)) from None


def _read_npz(p: Path, xk: str, yk: str | None, where: str):
    if not p.exists():
        raise AuditorError("data file not found", where=str(p))
    try:
        with np.load(p, allow_pickle=False) as z:
            if xk not in z.files:
                raise AuditorError(f"no array '{xk}' in the .npz file (it has: {', '.join(z.files)})", where=str(p))
            return z[xk], (z[yk] if yk and yk in z.files else None)
    except AuditorError:
        raise
    except Exception as e:
        raise AuditorError(f"cannot read .npz file ({str(e).splitlines()[0][:200]})", where=str(p)) from None


def _to_nchw(x: np.ndarray, layout: str, where: str) -> np.ndarray:
    want = 3 if layout == "NHW" else 4
    if x.ndim != want:
        raise AuditorError(f"inputs have shape {x.shape}, expected a {want}-D array in layout {layout}", where=where)
    if layout == "NHW":
        return x[:, None]
    if layout == "NHWC":
        return x.transpose(0, 3, 1, 2)
    return x


def _to_range(x: np.ndarray, bounds, where: str) -> np.ndarray:
    lo, hi = bounds
    if x.ndim != 4:
        raise AuditorError(f"inputs have shape {x.shape}, expected (N, C, H, W)", where=where)
    if len(x) == 0:
        raise AuditorError("no inputs in the data source", where=where)
    if np.issubdtype(x.dtype, np.integer) or x.dtype == np.bool_:
        if x.min() < 0 or x.max() > 255:
            raise AuditorError(f"integer pixels must lie in 0..255, found {x.min()}..{x.max()}", where=where)
        return (lo + (x.astype(np.float32) / 255.0) * (hi - lo)).astype(np.float32)
    if not np.issubdtype(x.dtype, np.floating):
        raise AuditorError(f"unsupported data type {x.dtype}", where=where)
    bad = ~np.isfinite(x)
    if bad.any():
        i = int(np.argwhere(bad.reshape(len(x), -1).any(axis=1))[0, 0])
        raise AuditorError(f"inputs contain NaN or infinite values (first at input {i})", where=where)
    if x.min() < lo - 1e-6 or x.max() > hi + 1e-6:
        raise AuditorError(f"float pixels must lie in the range [{lo}, {hi}], found [{x.min():.4g}, {x.max():.4g}]",
                           where=where)
    return np.clip(x, lo, hi).astype(np.float32)


def _read_idx(p: Path) -> np.ndarray:
    if not p.exists():
        raise AuditorError("data file not found", where=str(p))
    raw = p.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise AuditorError("not an IDX file (bad magic number)", where=str(p))
    types = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    code, ndim = raw[2], raw[3]
    if code not in types:
        raise AuditorError(f"unknown IDX data type 0x{code:02x}", where=str(p))
    dims = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    dt = np.dtype(types[code])
    body = raw[4 + 4 * ndim:]
    if len(body) != int(np.prod(dims)) * dt.itemsize:
        raise AuditorError(f"IDX file is truncated or too long for shape {dims}", where=str(p))
    return np.frombuffer(body, dt).reshape(dims).astype(dt.newbyteorder("="))


def _read_images(folder: Path, spec: DataSpec):
    from PIL import Image, UnidentifiedImageError

    if not folder.is_dir():
        raise AuditorError("expected a folder of images", where=str(folder))
    exts = {".png", ".jpg", ".jpeg"}
    subdirs = sorted(d for d in folder.iterdir() if d.is_dir() and d.name.isdigit())
    items = ([(f, int(d.name)) for d in subdirs for f in sorted(d.iterdir()) if f.suffix.lower() in exts]
             if subdirs else [(f, None) for f in sorted(folder.iterdir()) if f.suffix.lower() in exts])
    if not items:
        raise AuditorError("no PNG/JPEG images found", where=str(folder))
    arrs = []
    for f, _ in items:
        try:
            with Image.open(f) as im:
                im = im.convert("L" if spec.channels == 1 else "RGB")
                if spec.size:
                    im = im.resize((spec.size[1], spec.size[0]), Image.BILINEAR)
                a = np.asarray(im, dtype=np.uint8)
        except (UnidentifiedImageError, OSError) as e:
            raise AuditorError(f"cannot read image ({e.__class__.__name__})", where=str(f)) from None
        arrs.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
    shapes = {a.shape for a in arrs}
    if len(shapes) != 1:
        raise AuditorError(f"images have different sizes {sorted(shapes)[:3]}; set data.size to resize them", where=str(folder))
    y = np.array([lab for _, lab in items], np.int64) if subdirs else None
    return np.stack(arrs), y
