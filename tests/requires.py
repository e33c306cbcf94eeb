"""Optional test prerequisites: skip with the reason outside CI, fail under ``CI=true``."""

from __future__ import annotations

import importlib.util
import os

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def tensorflow(*extra: str) -> None:
    """Skip (fail in CI) unless TensorFlow and ``extra`` modules (e.g. ``tf_slim``) are installed;
    they are only ever imported by the subprocesses the tests start, never here."""
    missing = [m for m in ("tensorflow", *extra) if importlib.util.find_spec(m) is None]
    if missing:
        msg = f"needs {' and '.join(missing)} (run in a subprocess, never imported here)"
        if in_ci():
            pytest.fail(msg + " -- CI=true, so this is an error, not a skip")
        pytest.skip(msg)
