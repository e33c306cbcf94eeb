"""Shared fixtures. Real-file tests read ../shared/testdata beside the checkout."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TESTDATA = ROOT.parent / "shared" / "testdata"


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.fixture(scope="session")
def testdata() -> Path:
    """The real third-party files; skip when absent, but fail in CI (a wrong path is a bug)."""
    if not (TESTDATA / "README.md").is_file():
        msg = f"real test files not found at {TESTDATA} (clone beside ../shared to run these)"
        if _in_ci():
            pytest.fail(msg + " -- CI=true, so this is an error, not a skip")
        pytest.skip(msg)
    return TESTDATA


@pytest.fixture()
def zoo_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private $ZOO_HOME for one test (cache + user catalogue)."""
    home = tmp_path / "zoo_home"
    home.mkdir()
    monkeypatch.setenv("ZOO_HOME", str(home))
    monkeypatch.delenv("ZOO_MIRROR", raising=False)
    monkeypatch.delenv("ZOO_OFFLINE", raising=False)
    return home
