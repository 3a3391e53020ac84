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
from .errors import AuditorError, clip, short

BUNDLED = Path(__file__).parent / "data"

#: the most bytes of inputs (as float32) or labels a data source may declare; checked against
#: the sizes a file declares before anything is allocated (a 9 MB .npz can inflate to 2 GB)
MAX_DATA_BYTES = 256 << 20
#: the largest image side read or resized to (``data.size``)
MAX_SIDE = 4096
#: the most image files read from a folder
MAX_IMAGES = 100_000


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
    count: Optional[int] = schema.field(None, doc="use this many inputs (all when absent)", minimum=1)
    shuffle: bool = schema.field(False, doc="draw `count` inputs at random (seeded) instead of the first ones")
    size: Optional[list[int]] = schema.field(None, doc="'images' only: resize to [height, width]", minimum=1,
                                              maximum=MAX_SIDE)
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
    ywhere = where
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
            ywhere = str(base_dir / spec.labels) if spec.labels else where
            y = _read_npy(base_dir / spec.labels, "labels") if spec.labels else None
        elif spec.source == "npz":
            x, y = _read_npz(p, spec.x_key, spec.y_key, str(p))
        elif spec.source == "idx":
            x = _read_idx(p)
            ywhere = str(base_dir / spec.labels) if spec.labels else where
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
        y = _labels(np.asarray(y), len(x), ywhere)
    if spec.count is not None:
        if spec.count > len(x):
            raise AuditorError(f"count {spec.count} exceeds the {len(x)} inputs available", where=where)
        idx = (np.random.default_rng(seed).choice(len(x), spec.count, replace=False) if spec.shuffle
               else np.arange(spec.count))
        x = x[idx]
        y = y[idx] if y is not None else None
    return Dataset(np.ascontiguousarray(x), y, desc)


def _labels(y: np.ndarray, n: int, where: str) -> np.ndarray:
    """Labels as int64 class indices: one per input, integral, non-negative."""
    if y.ndim != 1 or len(y) != n:
        raise AuditorError(f"labels have shape {y.shape}, expected ({n},)", where=where)
    if y.dtype.kind not in "iuf":
        raise AuditorError(f"labels must be integer class indices, got {y.dtype} values", where=where)
    if y.dtype.kind == "f":
        bad = ~np.isfinite(y) | (y != np.round(y))
        if bad.any():
            raise AuditorError(f"labels must be integers (label {int(np.argmax(bad))} is {short(y[bad][0].item())})",
                               where=where)
    if len(y) and y.min() < 0:
        i = int(np.argmin(y))
        raise AuditorError(f"labels must be class indices >= 0 (label {i} is {short(y[i].item())})", where=where)
    if len(y) and y.max() > 2**31:
        i = int(np.argmax(y))
        raise AuditorError(f"label {i} is {short(y[i].item())}, not a class index", where=where)
    return y.astype(np.int64)


def check_label_range(y: np.ndarray | None, num_classes: int | None, where: str) -> None:
    """Refuse labels that are not classes of a model with ``num_classes`` outputs."""
    if y is None or num_classes is None or not len(y):
        return
    if y.max() >= num_classes:
        i = int(np.argmax(y))
        raise AuditorError(f"label {i} is {int(y[i])} but the model has {num_classes} classes (0..{num_classes - 1})",
                           where=where)


def _check_array_header(shape, dtype: np.dtype, what: str, where: str) -> None:
    """Refuse arrays the tool cannot use before reading them: objects, strings, complex numbers,
    records, or more data than :data:`MAX_DATA_BYTES` once converted to float32."""
    if dtype.hasobject or dtype.kind not in "biuf" or dtype.fields is not None or dtype.subdtype is not None:
        raise AuditorError(f"{what} have unsupported type {clip(str(dtype), 40)} (expected integers or floats)", where=where)
    n = 1
    for d in shape:
        n *= int(d)
    if n * max(4, dtype.itemsize) > MAX_DATA_BYTES:
        raise AuditorError(f"{what} declare shape {short(tuple(shape))}: more than the {MAX_DATA_BYTES >> 20} MiB the "
                           "tool reads", where=where)


def _read_npy_stream(f, what: str, where: str, file_size: int | None = None) -> np.ndarray:
    fmt = np.lib.format
    try:
        version = fmt.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(f)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = fmt.read_array_header_2_0(f)
        else:
            raise ValueError(f"unknown .npy format version {version}")
    except (ValueError, OSError, EOFError, SyntaxError, TypeError) as e:
        raise AuditorError(f"not a .npy array ({short(str(e).splitlines()[0] if str(e) else e.__class__.__name__, 120)})",
                           where=where) from None
    _check_array_header(shape, dtype, what, where)
    n = int(np.prod(shape, dtype=np.int64))
    if file_size is not None and file_size - f.tell() != n * dtype.itemsize:
        raise AuditorError(f"{what}: the .npy data is {'truncated' if file_size - f.tell() < n * dtype.itemsize else 'longer than its array'} "
                           f"(shape {short(tuple(shape))} needs {n * dtype.itemsize} bytes, the file has "
                           f"{file_size - f.tell()})", where=where)
    data = f.read(n * dtype.itemsize)
    if len(data) != n * dtype.itemsize:
        raise AuditorError(f"{what}: the array data is truncated (shape {short(tuple(shape))})", where=where)
    a = np.frombuffer(data, dtype=dtype)
    return a.reshape(shape[::-1]).T if fortran else a.reshape(shape)


def _read_npy(p: Path, what: str = "inputs") -> np.ndarray:
    from .files import regular_file

    regular_file(p, "data file")
    try:
        with open(p, "rb") as f:
            if f.read(4) == b"PK\x03\x04":
                raise AuditorError("is an .npz archive, not an .npy file (use source: npz)", where=str(p))
            f.seek(0)
            return _read_npy_stream(f, what, str(p), p.stat().st_size)
    except OSError as e:
        raise AuditorError(f"cannot read .npy file ({e.__class__.__name__})", where=str(p)) from None


def _read_npz(p: Path, xk: str, yk: str | None, where: str):
    import zipfile
    import zlib

    from .files import regular_file

    regular_file(p, "data file")
    try:
        with zipfile.ZipFile(p) as z:
            names = z.namelist()
            arrays = [n[:-4] for n in names if n.endswith(".npy")]

            def member(key, what):
                if key + ".npy" in names:
                    info = z.getinfo(key + ".npy")
                elif key in names:
                    raise AuditorError(f"member '{clip(key, 40)}' of the .npz file is not a .npy array", where=str(p))
                else:
                    return None
                if info.file_size > MAX_DATA_BYTES * 2 + 4096:
                    raise AuditorError(f"member '{clip(key, 40)}' inflates to {info.file_size >> 20} MiB, more than "
                                       "the tool reads", where=str(p))
                with z.open(info) as f:
                    return _read_npy_stream(f, what, f"{p}[{clip(key, 40)}]", info.file_size)

            x = member(xk, "inputs")
            if x is None:
                raise AuditorError(f"no array '{clip(xk, 40)}' in the .npz file (it has: "
                                   f"{clip(', '.join(arrays) or 'none', 200)})", where=str(p))
            return x, (member(yk, "labels") if yk else None)
    except AuditorError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, NotImplementedError,
            zlib.error) as e:
        raise AuditorError(f"cannot read .npz file ({e.__class__.__name__}: {short(str(e), 120)})", where=str(p)) from None


def _to_nchw(x: np.ndarray, layout: str, where: str) -> np.ndarray:
    want = 3 if layout == "NHW" else 4
    if x.ndim != want:
        raise AuditorError(f"inputs have shape {short(x.shape)}, expected a {want}-D array in layout {layout}", where=where)
    if layout == "NHW":
        return x[:, None]
    if layout == "NHWC":
        return x.transpose(0, 3, 1, 2)
    return x


def _to_range(x: np.ndarray, bounds, where: str) -> np.ndarray:
    lo, hi = bounds
    if x.ndim != 4:
        raise AuditorError(f"inputs have shape {short(x.shape)}, expected (N, C, H, W)", where=where)
    if len(x) == 0:
        raise AuditorError("no inputs in the data source", where=where)
    if x.size == 0:
        raise AuditorError(f"inputs have shape {short(x.shape)}: a dimension is zero", where=where)
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
    import zlib

    from .files import regular_file

    regular_file(p, "data file")
    where = str(p)
    types = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    try:
        with open(p, "rb") as raw:
            gz = raw.read(2) == b"\x1f\x8b"
            raw.seek(0)
            f = gzip.GzipFile(fileobj=raw) if gz else raw
            head = f.read(4)
            if len(head) < 4 or head[0] != 0 or head[1] != 0:
                raise AuditorError("not an IDX file (bad magic number)", where=where)
            code, ndim = head[2], head[3]
            if code not in types:
                raise AuditorError(f"unknown IDX data type 0x{code:02x}", where=where)
            if not 1 <= ndim <= 4:
                raise AuditorError(f"IDX file has {ndim} dimensions, expected 1 to 4", where=where)
            dims_raw = f.read(4 * ndim)
            if len(dims_raw) != 4 * ndim:
                raise AuditorError("IDX file is truncated (in its header)", where=where)
            dims = struct.unpack(">" + "I" * ndim, dims_raw)
            dt = np.dtype(types[code])
            _check_array_header(dims, dt, "IDX data", where)
            n = int(np.prod(dims, dtype=np.int64)) * dt.itemsize
            body = f.read(n + 1)
    except AuditorError:
        raise
    except (OSError, EOFError, zlib.error) as e:
        raise AuditorError(f"cannot read IDX file (corrupt or truncated{' gzip' if gz else ''}: "
                           f"{e.__class__.__name__})", where=where) from None
    if len(body) != n:
        raise AuditorError(f"IDX file is truncated or too long for shape {dims}", where=where)
    return np.frombuffer(body, dt).reshape(dims).astype(dt.newbyteorder("="))


def _label_folder(name: str) -> int | None:
    return int(name) if name.isascii() and name.isdigit() and len(name) <= 9 else None


def _read_images(folder: Path, spec: DataSpec):
    import warnings

    from PIL import Image

    from .files import regular_file

    if not folder.is_dir():
        raise AuditorError("expected a folder of images", where=str(folder))
    exts = {".png", ".jpg", ".jpeg"}
    try:
        subdirs = sorted(d for d in folder.iterdir() if d.is_dir() and _label_folder(d.name) is not None)
        items = ([(f, _label_folder(d.name)) for d in subdirs for f in sorted(d.iterdir()) if f.suffix.lower() in exts]
                 if subdirs else [(f, None) for f in sorted(folder.iterdir()) if f.suffix.lower() in exts])
    except OSError as e:
        raise AuditorError(f"cannot list the image folder ({e.__class__.__name__})", where=str(folder)) from None
    if not items:
        raise AuditorError("no PNG/JPEG images found", where=str(folder))
    if len(items) > MAX_IMAGES:
        raise AuditorError(f"{len(items)} images, more than the {MAX_IMAGES} the tool reads", where=str(folder))
    arrs, total = [], 0
    ch = 1 if spec.channels == 1 else 3
    for f, _ in items:
        regular_file(f, "image file")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(f) as im:
                    w, h = im.size
                    if max(w, h) > MAX_SIDE:
                        raise AuditorError(f"image is {w}x{h} pixels, larger than the {MAX_SIDE}x{MAX_SIDE} the tool "
                                           "reads", where=str(f))
                    oh, ow = (spec.size[0], spec.size[1]) if spec.size else (h, w)
                    total += oh * ow * ch * 4
                    if total > MAX_DATA_BYTES:
                        raise AuditorError(f"the images amount to more than the {MAX_DATA_BYTES >> 20} MiB the tool "
                                           "reads", where=str(folder))
                    im = im.convert("L" if spec.channels == 1 else "RGB")
                    if spec.size:
                        im = im.resize((spec.size[1], spec.size[0]), Image.BILINEAR)
                    a = np.asarray(im, dtype=np.uint8)
        except AuditorError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise AuditorError(f"image declares more pixels than the {MAX_SIDE}x{MAX_SIDE} the tool reads (a "
                               "decompression bomb?)", where=str(f)) from None
        except Exception as e:  # PIL's decoders raise OSError, SyntaxError, ValueError...
            raise AuditorError(f"cannot read image ({e.__class__.__name__}: {short(str(e), 100)})", where=str(f)) from None
        arrs.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
    shapes = {a.shape for a in arrs}
    if len(shapes) != 1:
        raise AuditorError(f"images have different sizes {sorted(shapes)[:3]}; set data.size to resize them", where=str(folder))
    y = np.array([lab for _, lab in items], np.int64) if subdirs else None
    return np.stack(arrs), y
