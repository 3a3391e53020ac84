"""Malformed and hostile data sources (npy, npz, IDX, image folders) through `validate` and
`audit`: exit 2 with one line naming the file, declared sizes checked before anything is
allocated (bombs are headers that declare gigabytes, or sparse files)."""

import gzip
import io
import os
import struct
import zipfile
import zlib

import numpy as np
import pytest

from badinput_harness import MODEL, base_files, check, sparse_file


def _npy_bytes(a):
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=True)
    return buf.getvalue()


def _header_file(shape, dtype="<f4", extra=b""):
    def make(d):
        buf = io.BytesIO()
        np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": tuple(shape)})
        (d / "x.npy").write_bytes(buf.getvalue() + extra)
    return make


def _save(name, a):
    def make(d):
        (d / name).write_bytes(_npy_bytes(a))
    return make


def _npz(members, compress=False):
    def make(d):
        with zipfile.ZipFile(d / "d.npz", "w", zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as z:
            for name, data in members.items():
                z.writestr(name, data if isinstance(data, bytes) else _npy_bytes(data))
    return make


X = np.random.default_rng(0).random((4, 1, 28, 28), np.float32)
Y = np.array([0, 1, 2, 3])


def _both(x, y):
    def make(d):
        (d / "x.npy").write_bytes(_npy_bytes(x))
        (d / "y.npy").write_bytes(_npy_bytes(y))
    return make


def _npz_bomb(d):
    """A member whose .npy header declares 4 GiB of float32 (data a few KB of zeros, deflated)."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": (1 << 20, 1, 32, 32)})
    with zipfile.ZipFile(d / "d.npz", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("x.npy", buf.getvalue() + bytes(1 << 16))


def _npz_real_bomb(d):
    """A member that truly inflates to 300 MB (the zip's declared size is checked before reading)."""
    with zipfile.ZipFile(d / "d.npz", "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        with z.open("x.npy", "w", force_zip64=True) as f:
            buf = io.BytesIO()
            np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False,
                                                       "shape": (76800, 1, 32, 32)})
            f.write(buf.getvalue())
            zero = bytes(1 << 22)
            for _ in range(75):
                f.write(zero)


def _npz_corrupt(d):
    _npz({"x.npy": X}, compress=True)(d)
    b = bytearray((d / "d.npz").read_bytes())
    for i in range(60, 200):
        b[i] ^= 0x5A
    (d / "d.npz").write_bytes(bytes(b))


def _npz_truncated(d):
    _npz({"x.npy": X}, compress=True)(d)
    b = (d / "d.npz").read_bytes()
    (d / "d.npz").write_bytes(b[:len(b) // 2])


def _idx(dims, code=0x08, body=None, gz=False, name="x.idx"):
    def make(d):
        n = int(np.prod(dims)) if dims else 0
        data = bytes([0, 0, code, len(dims)]) + struct.pack(">" + "I" * len(dims), *dims)
        data += body if body is not None else bytes(n)
        (d / name).write_bytes(gzip.compress(data) if gz else data)
    return make


def _idx_gz_bomb(d):
    """A gzip IDX whose header declares 2 GiB; the stream holds only the header."""
    data = bytes([0, 0, 0x08, 3]) + struct.pack(">III", 1 << 15, 256, 256)
    (d / "x.idx").write_bytes(gzip.compress(data))


def _idx_gz_corrupt(d):
    _idx([4, 28, 28], gz=True)(d)
    b = bytearray((d / "x.idx").read_bytes())
    for i in range(12, len(b) - 8):
        b[i] ^= 0xA5
    (d / "x.idx").write_bytes(bytes(b))


def _idx_gz_truncated(d):
    _idx([4, 28, 28], gz=True)(d)
    b = (d / "x.idx").read_bytes()
    (d / "x.idx").write_bytes(b[:len(b) // 2])


def _png(path, w, h, mode="L"):
    from PIL import Image

    Image.new(mode, (w, h)).save(path)


def _png_header_bomb(path, w, h):
    """A PNG whose IHDR declares w x h pixels, with a tiny (invalid) image stream."""
    def chunk(t, data):
        return struct.pack(">I", len(data)) + t + data + struct.pack(">I", zlib.crc32(t + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


def _images(setup):
    def make(d):
        f = d / "imgs"
        f.mkdir()
        setup(f)
    return make


def _labelled(f, labels, size=(28, 28)):
    for lab in labels:
        (f / str(lab)).mkdir(exist_ok=True)
        _png(f / str(lab) / f"{len(list((f / str(lab)).iterdir()))}.png", *size)


# (id, files in the scenario's folder, data section, what the error line names)
CASES = [
    # npy inputs
    ("npy-zero-width", _save("x.npy", np.zeros((4, 1, 0, 28), np.float32)), "{source: npy, path: x.npy}", "a dimension is zero"),
    ("npy-no-inputs", _save("x.npy", np.zeros((0, 1, 28, 28), np.float32)), "{source: npy, path: x.npy}", "no inputs"),
    ("npy-3d", _save("x.npy", np.zeros((4, 28, 28), np.float32)), "{source: npy, path: x.npy}", "expected a 4-D array"),
    ("npy-5d", _save("x.npy", np.zeros((4, 1, 1, 28, 28), np.float32)), "{source: npy, path: x.npy}", "expected a 4-D array"),
    ("npy-scalar", _save("x.npy", np.float32(1)), "{source: npy, path: x.npy}", "expected a 4-D array"),
    ("npy-strings", _save("x.npy", np.array([["a"]] * 4)), "{source: npy, path: x.npy}", "unsupported type <U1"),
    ("npy-bytes", _save("x.npy", np.array([b"ab"] * 4)), "{source: npy, path: x.npy}", "unsupported type |S2"),
    ("npy-complex", _save("x.npy", np.zeros((4, 1, 28, 28), np.complex64)), "{source: npy, path: x.npy}", "unsupported type complex64"),
    ("npy-object", _save("x.npy", np.array([{"a": 1}] * 4, dtype=object)), "{source: npy, path: x.npy}", "unsupported type object"),
    ("npy-structured", _save("x.npy", np.zeros(4, dtype=[("a", "<f4"), ("b", "<i4")])), "{source: npy, path: x.npy}",
     "unsupported type"),
    ("npy-datetime", _save("x.npy", np.zeros((4, 1, 2, 2), "datetime64[s]")), "{source: npy, path: x.npy}", "unsupported type"),
    ("npy-nan", _save("x.npy", np.full((4, 1, 28, 28), np.nan, np.float32)), "{source: npy, path: x.npy}", "NaN or infinite"),
    ("npy-inf", _save("x.npy", np.full((4, 1, 28, 28), np.inf, np.float32)), "{source: npy, path: x.npy}", "NaN or infinite"),
    ("npy-out-of-range", _save("x.npy", np.full((4, 1, 28, 28), 3.0, np.float32)), "{source: npy, path: x.npy}",
     "must lie in the range [0.0, 1.0]"),
    ("npy-int-300", _save("x.npy", np.full((4, 1, 28, 28), 300, np.int32)), "{source: npy, path: x.npy}", "must lie in 0..255"),
    ("npy-int-negative", _save("x.npy", np.full((4, 1, 28, 28), -1, np.int16)), "{source: npy, path: x.npy}", "must lie in 0..255"),
    ("npy-is-npz", lambda d: np.savez(d / "x.npy.npz", x=X) or os.rename(d / "x.npy.npz", d / "x.npy"),
     "{source: npy, path: x.npy}", "is an .npz archive, not an .npy file"),
    ("npy-bad-magic", lambda d: (d / "x.npy").write_bytes(b"NOTNUMPY" * 20), "{source: npy, path: x.npy}", "not a .npy array"),
    ("npy-empty-file", lambda d: (d / "x.npy").write_bytes(b""), "{source: npy, path: x.npy}", "not a .npy array"),
    ("npy-truncated", lambda d: (d / "x.npy").write_bytes(_npy_bytes(X)[:1000]), "{source: npy, path: x.npy}", "truncated"),
    ("npy-header-4GiB", _header_file((1 << 20, 1, 32, 32)), "{source: npy, path: x.npy}", "more than the 256 MiB"),
    ("npy-header-absurd", _header_file((1 << 62, 1 << 62)), "{source: npy, path: x.npy}", "more than the 256 MiB"),
    ("npy-header-garbage", lambda d: (d / "x.npy").write_bytes(np.lib.format.magic(1, 0) + b"\x10\x00{'descr': evil}  \n"),
     "{source: npy, path: x.npy}", "not a .npy array"),
    ("npy-sparse-2GiB", lambda d: sparse_file(d / "x.npy", 2 << 30, _npy_bytes(X)[:128]), "{source: npy, path: x.npy}", "longer than its array"),
    ("npy-dev-zero", lambda d: (d / "x.npy").symlink_to("/dev/zero"), "{source: npy, path: x.npy}", "not a regular file"),
    ("npy-fifo", lambda d: os.mkfifo(d / "x.npy"), "{source: npy, path: x.npy}", "not a regular file"),
    ("npy-folder", lambda d: (d / "x.npy").mkdir(), "{source: npy, path: x.npy}", "is a folder"),
    # labels
    ("labels-strings", _both(X, np.array(["a", "b", "c", "d"])), "{source: npy, path: x.npy, labels: y.npy}", "unsupported type <U1"),
    ("labels-complex", _both(X, np.zeros(4, np.complex128)), "{source: npy, path: x.npy, labels: y.npy}", "unsupported type complex128"),
    ("labels-negative", _both(X, np.array([0, -1, 2, 3])), "{source: npy, path: x.npy, labels: y.npy}",
     "labels must be class indices >= 0 (label 1 is -1)"),
    ("labels-beyond-classes", _both(X, np.array([0, 1, 2, 10])), "{source: npy, path: x.npy, labels: y.npy}", "label 3 is 10"),
    ("labels-huge", _both(X, np.array([0, 1, 2, 1 << 40])), "{source: npy, path: x.npy, labels: y.npy}", "not a class index"),
    ("labels-fractional", _both(X, np.array([0, 1.5, 2, 3])), "{source: npy, path: x.npy, labels: y.npy}", "labels must be integers"),
    ("labels-nan", _both(X, np.array([0, np.nan, 2, 3])), "{source: npy, path: x.npy, labels: y.npy}", "labels must be integers"),
    ("labels-bool", _both(X, np.array([True, False, True, False])), "{source: npy, path: x.npy, labels: y.npy}", "labels must be integer"),
    ("labels-wrong-length", _both(X, np.array([0, 1])), "{source: npy, path: x.npy, labels: y.npy}", "labels have shape (2,)"),
    ("labels-2d", _both(X, np.zeros((4, 10), np.int64)), "{source: npy, path: x.npy, labels: y.npy}", "labels have shape (4, 10)"),
    ("labels-missing", _save("x.npy", X), "{source: npy, path: x.npy, labels: y.npy}", "y.npy"),
    # npz
    ("npz-missing-key", _npz({"a.npy": X}), "{source: npz, path: d.npz}", "no array 'x' in the .npz file (it has: a)"),
    ("npz-member-not-array", _npz({"x": b"raw bytes, not a .npy"}), "{source: npz, path: d.npz}",
     "member 'x' of the .npz file is not a .npy array"),
    ("npz-member-garbage", _npz({"x.npy": b"garbage" * 30}), "{source: npz, path: d.npz}", "not a .npy array"),
    ("npz-member-object", _npz({"x.npy": np.array([None] * 4, dtype=object)}), "{source: npz, path: d.npz}", "unsupported type object"),
    ("npz-bomb-header", _npz_bomb, "{source: npz, path: d.npz}", "more than the 256 MiB"),
    ("npz-corrupt", _npz_corrupt, "{source: npz, path: d.npz}", "cannot read .npz file"),
    ("npz-truncated", _npz_truncated, "{source: npz, path: d.npz}", "cannot read .npz file"),
    ("npz-not-zip", lambda d: (d / "d.npz").write_bytes(b"PK\x03\x04" + b"\0" * 100), "{source: npz, path: d.npz}",
     "cannot read .npz file"),
    ("npz-labels-strings", _npz({"x.npy": X, "y.npy": np.array(list("abcd"))}), "{source: npz, path: d.npz}", "unsupported type"),
    ("npz-labels-negative", _npz({"x.npy": X, "y.npy": np.array([0, 1, -5, 2])}), "{source: npz, path: d.npz}", "label 2 is -5"),
    ("npz-labels-beyond", _npz({"x.npy": X, "y.npy": np.array([0, 1, 99, 2])}), "{source: npz, path: d.npz}", "label 2 is 99"),
    ("npz-key-long", _npz({"a.npy": X}), "{source: npz, path: d.npz, x_key: " + "k" * 5000 + "}", "no array"),
    # idx
    ("idx-bad-magic", lambda d: (d / "x.idx").write_bytes(b"\x01\x02\x08\x03" + bytes(100)), "{source: idx, path: x.idx}", "bad magic"),
    ("idx-unknown-type", _idx([4, 28, 28], code=0x42), "{source: idx, path: x.idx}", "unknown IDX data type 0x42"),
    ("idx-ndim-0", _idx([]), "{source: idx, path: x.idx}", "0 dimensions"),
    ("idx-ndim-9", lambda d: (d / "x.idx").write_bytes(bytes([0, 0, 8, 9]) + struct.pack(">9I", *[1] * 9)),
     "{source: idx, path: x.idx}", "9 dimensions"),
    ("idx-header-truncated", lambda d: (d / "x.idx").write_bytes(bytes([0, 0, 8, 3, 0, 0])), "{source: idx, path: x.idx}",
     "truncated (in its header)"),
    ("idx-body-truncated", _idx([4, 28, 28], body=bytes(100)), "{source: idx, path: x.idx}", "truncated or too long"),
    ("idx-body-too-long", _idx([4, 28, 28], body=bytes(4 * 28 * 28 + 5)), "{source: idx, path: x.idx}", "truncated or too long"),
    ("idx-declares-2GiB", _idx([1 << 15, 256, 256], body=b""), "{source: idx, path: x.idx}", "more than the 256 MiB"),
    ("idx-gz-bomb", _idx_gz_bomb, "{source: idx, path: x.idx}", "more than the 256 MiB"),
    ("idx-gz-corrupt", _idx_gz_corrupt, "{source: idx, path: x.idx}", "cannot read IDX file"),
    ("idx-gz-truncated", _idx_gz_truncated, "{source: idx, path: x.idx}", "x.idx"),
    ("idx-gz-header-only", lambda d: (d / "x.idx").write_bytes(b"\x1f\x8b\x08\x00"), "{source: idx, path: x.idx}", "cannot read IDX"),
    ("idx-zero-width", _idx([4, 0, 28]), "{source: idx, path: x.idx}", "a dimension is zero"),
    ("idx-labels-2d", lambda d: (_idx([4, 28, 28])(d), _idx([4, 2], name="y.idx")(d)), "{source: idx, path: x.idx, labels: y.idx}",
     "labels have shape (4, 2)"),
    ("idx-labels-beyond", lambda d: (_idx([4, 28, 28])(d), _idx([4], body=bytes([0, 1, 2, 200]), name="y.idx")(d)),
     "{source: idx, path: x.idx, labels: y.idx}", "label 3 is 200"),
    ("idx-labels-negative", lambda d: (_idx([4, 28, 28])(d), _idx([4], code=0x09, body=bytes([0, 1, 0xFF, 2]), name="y.idx")(d)),
     "{source: idx, path: x.idx, labels: y.idx}", "label 2 is -1"),
    ("idx-fifo", lambda d: os.mkfifo(d / "x.idx"), "{source: idx, path: x.idx}", "not a regular file"),
    # image folders
    ("images-empty", _images(lambda f: None), "{source: images, path: imgs}", "no PNG/JPEG images found"),
    ("images-not-a-folder", lambda d: (d / "imgs").write_text("x"), "{source: images, path: imgs}", "expected a folder"),
    ("images-corrupt", _images(lambda f: (f / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"junk" * 10)),
     "{source: images, path: imgs}", "cannot read image"),
    ("images-text-as-png", _images(lambda f: (f / "a.png").write_text("hello")), "{source: images, path: imgs}", "cannot read image"),
    ("images-truncated", _images(lambda f: (_png(f / "a.png", 28, 28), (f / "a.png").write_bytes((f / "a.png").read_bytes()[:40]))),
     "{source: images, path: imgs}", "cannot read image"),
    ("images-bomb-pixels", _images(lambda f: _png_header_bomb(f / "a.png", 100000, 100000)), "{source: images, path: imgs}",
     "more pixels than the 4096x4096"),
    ("images-bomb-pil-limit", _images(lambda f: _png_header_bomb(f / "a.png", 4000, 40000)), "{source: images, path: imgs}",
     "more pixels than the 4096x4096"),
    ("images-tall", _images(lambda f: _png_header_bomb(f / "a.png", 10, 5000)), "{source: images, path: imgs}",
     "larger than the 4096x4096"),
    ("images-fifo", _images(lambda f: os.mkfifo(f / "a.png")), "{source: images, path: imgs}", "not a regular file"),
    ("images-dev-zero", _images(lambda f: (f / "a.png").symlink_to("/dev/zero")), "{source: images, path: imgs}",
     "not a regular file"),
    ("images-sizes-differ", _images(lambda f: (_png(f / "a.png", 28, 28), _png(f / "b.png", 20, 20))),
     "{source: images, path: imgs}", "different sizes"),
    ("images-label-beyond", _images(lambda f: _labelled(f, [0, 1, 12])), "{source: images, path: imgs}", "is 12"),
    ("images-total-too-big", _images(lambda f: [_png(f / f"{i}.png", 8, 8) for i in range(3)]),
     "{source: images, path: imgs, size: [4096, 4096], channels: 3}", "more than the 256 MiB"),
    ("images-rgb-on-gray-model", _images(lambda f: _png(f / "a.png", 28, 28, "RGB")), "{source: images, path: imgs, channels: 3}",
     "per-input shape (3, 28, 28)"),
    # counts against the data
    ("count-beyond", _save("x.npy", X), "{source: npy, path: x.npy, count: 50}", "count 50 exceeds the 4 inputs"),
    ("path-missing", lambda d: None, "{source: npy, path: nothere.npy}", "data file not found"),
    ("path-escape", lambda d: None, "{source: npy, path: ../../../../../../dev/zero}", "not a regular file"),
]


def _scenario(tmp, files, data):
    files(tmp)
    sc = tmp / "sc.yaml"
    sc.write_text(f"name: t\ndata: {data}\n")
    return sc


@pytest.mark.parametrize("files,data,where", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_data_audit(tmp_path, files, data, where):
    prof, _ = base_files(tmp_path)
    sc = _scenario(tmp_path, files, data)
    check(["audit", MODEL, "--hw", prof, "--scenario", sc], tmp_path, where)


# `validate` reads the data too (not the model: class-range checks need the model)
VALIDATE = [c for c in CASES if c[0] not in ("labels-beyond-classes", "npz-labels-beyond", "idx-labels-beyond",
                                             "images-label-beyond", "images-rgb-on-gray-model")]


@pytest.mark.parametrize("files,data,where", [c[1:] for c in VALIDATE], ids=[c[0] for c in VALIDATE])
def test_bad_data_validate(tmp_path, files, data, where):
    sc = _scenario(tmp_path, files, data)
    check(["validate", sc], tmp_path, where)


def test_npz_that_inflates_to_300MB(tmp_path):
    """A real deflate bomb (a 300 MB member in a ~300 KB file): refused from the sizes it declares."""
    _npz_real_bomb(tmp_path)
    assert (tmp_path / "d.npz").stat().st_size < 2 << 20
    sc = tmp_path / "sc.yaml"
    sc.write_text("name: t\ndata: {source: npz, path: d.npz}\n")
    check(["validate", sc], tmp_path, "more than the 256 MiB")
