"""Every file the tool reads or writes goes through here.

Reading: only regular files (not folders, devices such as ``/dev/zero``, FIFOs or sockets), with
a size limit checked before a byte is read.  Writing: never over an existing path (a file, a
folder, a symlink, even a dangling one) unless ``force``; the parent must be an existing folder;
the text is written to a temporary file next to the target and renamed onto it, so an
interrupted write never leaves half a report and a symlink at the target is replaced, not
followed.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from .errors import AuditorError

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30


def human_bytes(n: int) -> str:
    for unit, f in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= f:
            return f"{n / f:.3g} {unit}"
    return f"{n} bytes"


def regular_file(path: str | os.PathLike, what: str = "file", max_bytes: int | None = None,
                 where: str | None = None) -> Path:
    """``path`` as a Path after checking it is an existing regular file of at most ``max_bytes``."""
    where = where or str(path)
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise AuditorError(f"{what} not found", where=where) from None
    except (OSError, ValueError) as e:  # permission, a NUL byte, a name too long, a loop of links
        raise AuditorError(f"cannot open {what} ({e.__class__.__name__})", where=where) from None
    if stat.S_ISDIR(st.st_mode):
        raise AuditorError(f"is a folder, expected a {what}", where=where)
    if not stat.S_ISREG(st.st_mode):
        raise AuditorError(f"is not a regular file (a device, FIFO or socket), expected a {what}", where=where)
    if max_bytes is not None and st.st_size > max_bytes:
        raise AuditorError(f"{what} is {human_bytes(st.st_size)}, larger than the {human_bytes(max_bytes)} "
                           "the tool reads", where=where)
    return p


def read_bytes(path, what: str = "file", max_bytes: int | None = None, where: str | None = None) -> bytes:
    p = regular_file(path, what, max_bytes, where)
    try:
        with open(p, "rb") as f:
            # never ask for more than the file holds (read(n) allocates n bytes up front)
            size = os.fstat(f.fileno()).st_size + 1
            data = f.read(min(size, max_bytes + 1) if max_bytes is not None else size)
            if max_bytes is None or len(data) <= max_bytes:
                while True:  # the file grew meanwhile, or reports no size (procfs)
                    more = f.read(1 << 20)
                    if not more:
                        break
                    data += more
                    if max_bytes is not None and len(data) > max_bytes:
                        break
    except OSError as e:
        raise AuditorError(f"cannot read {what} ({e.__class__.__name__})", where=where or str(path)) from None
    if max_bytes is not None and len(data) > max_bytes:  # grew while we read it
        raise AuditorError(f"{what} is larger than the {human_bytes(max_bytes)} the tool reads", where=where or str(path))
    return data


def read_text(path, what: str = "file", max_bytes: int | None = None, where: str | None = None) -> str:
    data = read_bytes(path, what, max_bytes, where)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise AuditorError(f"{what} is not UTF-8 text (byte {e.start})", where=where or str(path)) from None


def check_output(path: str | os.PathLike, force: bool, what: str = "output file") -> Path:
    """Refuse to write ``path`` when it exists (unless ``force``) or its folder does not."""
    p = Path(path)
    where = str(path)
    try:
        exists = os.path.lexists(p)
        if exists:
            st = os.lstat(p)
    except (OSError, ValueError) as e:
        raise AuditorError(f"cannot use this {what} path ({e.__class__.__name__})", where=where) from None
    if exists:
        if stat.S_ISDIR(st.st_mode):
            raise AuditorError(f"is a folder, expected a path for the {what}", where=where)
        if not force:
            state = "is a symlink" if stat.S_ISLNK(st.st_mode) else "exists"
            raise AuditorError(f"{what} {state}; pass --force to overwrite it", where=where)
        if not stat.S_ISREG(st.st_mode) and not stat.S_ISLNK(st.st_mode):
            raise AuditorError("is not a regular file, refusing to overwrite it", where=where)
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.exists():
        raise AuditorError(f"folder of the {what} does not exist", where=where)
    if not parent.is_dir():
        raise AuditorError(f"'{parent}' is not a folder, cannot write the {what} in it", where=where)
    return p


def write_bytes(path: str | os.PathLike, data: bytes, force: bool = False, what: str = "output file") -> None:
    """Write ``data`` to ``path`` (see the module docstring for the rules)."""
    p = check_output(path, force, what)
    parent = p.parent if str(p.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name[:40]}.", suffix=".tmp", dir=parent)
    except OSError as e:
        raise AuditorError(f"cannot write the {what} ({e.__class__.__name__}: {e.strerror})", where=str(path)) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_umask())
        if force:
            os.replace(tmp, p)
        else:
            # no overwrite even if the path appeared meanwhile: link() fails on an existing name
            try:
                os.link(tmp, p)
            except FileExistsError:
                raise AuditorError(f"{what} exists; pass --force to overwrite it", where=str(path)) from None
            except OSError:  # a file system without hard links
                if os.path.lexists(p):
                    raise AuditorError(f"{what} exists; pass --force to overwrite it", where=str(path)) from None
                os.replace(tmp, p)
    except OSError as e:
        raise AuditorError(f"cannot write the {what} ({e.__class__.__name__}: {e.strerror})", where=str(path)) from None
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def write_text(path, text: str, force: bool = False, what: str = "output file") -> None:
    write_bytes(path, text.encode("utf-8"), force, what)


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def safe_name(name: str, limit: int = 80) -> str:
    """``name`` as one harmless file-name component (no separators, no leading dot, bounded)."""
    out = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(name))[:limit].lstrip(".")
    return out or "_"


def output_folder(path: str | os.PathLike, what: str = "folder") -> Path:
    """Create the folder ``path`` (and its parents) for files the tool writes; refuse a file there."""
    p = Path(path)
    try:
        if os.path.lexists(p) and not p.is_dir():
            raise AuditorError(f"is not a folder, cannot write the {what} in it", where=str(path))
        p.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise AuditorError(f"a parent of the {what} is a file, cannot create it", where=str(path)) from None
    except (OSError, ValueError) as e:
        raise AuditorError(f"cannot create the {what} ({e.__class__.__name__})", where=str(path)) from None
    return p
