"""`zoo cache ls | verify | rm | prune` on a real cache filled by `zoo pull` of catalogue files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _zoo(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zoo.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "ZOO_HOME": str(home)},
        timeout=120,
    )


def test_cache_commands(zoo_home: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a.pth", tmp_path / "b.onnx"
    a.write_bytes(os.urandom(3000))
    b.write_bytes(os.urandom(5000))
    for path, mid in ((a, "me/a"), (b, "me/b")):
        assert _zoo("register", str(path), "--id", mid, home=zoo_home).returncode == 0
        r = _zoo("pull", mid, home=zoo_home)
        assert r.returncode == 0, r.stderr
        assert Path(r.stdout.strip()).read_bytes() == path.read_bytes()
    rows = json.loads(_zoo("cache", "ls", "--json", home=zoo_home).stdout)
    assert sorted((r["model_id"], r["size"]) for r in rows) == [("me/a", 3000), ("me/b", 5000)]
    assert _zoo("cache", "verify", home=zoo_home).returncode == 0
    # damage one blob in place: verify names it and fails
    blob = Path(next(r["blob"] for r in rows if r["model_id"] == "me/b"))
    blob.chmod(0o644)
    blob.write_bytes(b"x" * 5000)
    r = _zoo("cache", "verify", home=zoo_home)
    assert r.returncode != 0 and blob.name in r.stderr
    # forget me/b: its (damaged) blob goes with it, me/a's stays
    r = _zoo("cache", "rm", "me/b", home=zoo_home)
    assert r.returncode == 0 and "forgot 1 cached file(s), deleted 1 blob(s)" in r.stdout, r.stdout
    assert not blob.exists()
    r = _zoo("cache", "rm", "me/b", home=zoo_home)
    assert r.returncode == 1 and r.stderr.strip() == (
        "zoo: error: me/b is not in the cache ('zoo cache ls' lists what is)"
    )
    r = _zoo("cache", "prune", home=zoo_home)
    assert r.returncode == 0 and "removed 0 unreferenced" in r.stdout
    rows = json.loads(_zoo("cache", "ls", "--json", home=zoo_home).stdout)
    assert [r["model_id"] for r in rows] == ["me/a"]
    assert _zoo("cache", "verify", home=zoo_home).returncode == 0
    r = _zoo("cache", "ls", home=zoo_home)
    assert r.stdout.splitlines()[0].split() == ["MODEL", "FILE", "SIZE", "SHA256", "PATH"]
    assert r.stdout.splitlines()[1].split()[:4] == ["me/a", "a.pth", "3.0", "kB"]
