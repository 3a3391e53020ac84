"""Shared test set-up: the test helpers (``builders``, ``badinput_harness``) importable from every
test folder, which mirror the package (tests/model, tests/grad, tests/hw, ...)."""

import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))
