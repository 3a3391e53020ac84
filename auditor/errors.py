"""The one exception type for bad user input.

Anything a user can get wrong (a malformed model or YAML file, an unsupported op, wrong shapes,
NaNs, a missing file) raises :class:`AuditorError` with a one-line message naming the problem and
where it is.  The CLI prints ``error: <message>`` and exits with code 2, without a traceback.
"""


class AuditorError(Exception):
    """A problem with the user's input, reported as one line (CLI exit code 2)."""

    def __init__(self, message: str, where: str | None = None):
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)
