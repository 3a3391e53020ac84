"""The one exception type for bad user input.

Anything a user can get wrong (a malformed model or YAML file, an unsupported op, wrong shapes,
NaNs, a missing file) raises :class:`AuditorError` with a one-line message naming the problem and
where it is.  The CLI prints ``error: <message>`` and exits with code 2, without a traceback.
"""

import reprlib

#: the longest message an error prints (user values inside it are shortened, see :func:`short`)
MAX_MESSAGE = 600

_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = 60
_repr.maxlist = _repr.maxtuple = _repr.maxdict = _repr.maxset = 6
_repr.maxlevel = 3


def short(value, limit: int = 60) -> str:
    """A bounded ``repr`` of a user value for an error message (never the whole of a huge or
    deeply nested value)."""
    r = _repr.repr(value)
    return r if len(r) <= limit else r[:limit - 3] + "..."


def clip(text: str, limit: int = 80) -> str:
    """A user-chosen name (tensor, node, key) for a message: as written, cut at ``limit``."""
    text = str(text)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def one_line(text: str, limit: int = MAX_MESSAGE) -> str:
    """``text`` on one line (control characters shown escaped), at most ``limit`` characters."""
    s = "".join(c if c.isprintable() else (" " if c in "\n\r\t" else repr(c)[1:-1]) for c in str(text))
    s = " ".join(s.split())
    return s if len(s) <= limit else s[:limit - 3] + "..."


class AuditorError(Exception):
    """A problem with the user's input, reported as one line (CLI exit code 2)."""

    def __init__(self, message: str, where: str | None = None):
        self.where = where
        super().__init__(one_line(f"{where}: {message}" if where else message))
