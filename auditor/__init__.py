"""auditor: pre-deployment audit of embedded CNN inference (latency, energy, robustness)."""

__version__ = "0.1.0"
