"""The version of auditor (read by the packaging metadata and written into every report)."""

__version__ = "0.1.0"
