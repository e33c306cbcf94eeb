"""`zoo pull` end to end: the real registry entry for a testdata file, pulled through a loopback
mirror by the console command, exactly as a user pulls from the internet."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

from servers import TestServer, free_port, mirror_testdata_card, offline_env, registry_card

ROOT = Path(__file__).resolve().parents[1]


def _zoo(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zoo.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **env},
        timeout=120,
    )


def test_registry_testdata_entries_pull_through_mirror(
    testdata: Path, zoo_home: Path, tmp_path: Path
) -> None:
    reg = json.loads((ROOT / "registry.json").read_text())
    card = registry_card("testdata/lenet_mnist")
    sums = dict(
        line.split()[::-1] for line in (testdata / "SHA256SUMS").read_text().splitlines() if line.strip()
    )
    by_hash = {h: p for p, h in sums.items()}
    with TestServer() as server:
        mirror_testdata_card(server, card, testdata)
        env = offline_env(zoo_home)
        dest = tmp_path / "out"
        r = _zoo("pull", card["id"], "--mirror", server.url, "--dest", str(dest), env=env)
        assert r.returncode == 0, r.stderr
        paths = [Path(line) for line in r.stdout.split()]
        assert sorted(p.name for p in paths) == sorted(f["name"] for f in card["files"])
        for p, f in zip(sorted(paths), sorted(card["files"], key=lambda f: f["name"]), strict=True):
            assert hashlib.sha256(p.read_bytes()).hexdigest() == f["checksum"]["value"]
        # offline now works from the cache and makes no request
        before = len(server.requests())
        r = _zoo("pull", card["id"], env={**env, "ZOO_OFFLINE": "1"})
        assert r.returncode == 0, r.stderr
        assert len(server.requests()) == before
        # a file the mirror serves corrupted is refused: one line, expected and actual shown
        other = next(m for m in reg["models"] if m["id"] == "testdata/lenet_mnist_v1")
        for f in other["files"]:
            u = urlsplit(f["urls"][0])
            data = bytearray((testdata / by_hash[f["checksum"]["value"]]).read_bytes())
            data[len(data) // 2] ^= 1
            server.files[f"/{u.netloc}{u.path}"] = bytes(data)
        r = _zoo("pull", other["id"], "--mirror", server.url, env=env)
        assert r.returncode != 0
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "expected" in lines[0] and "sha256" in lines[0], r.stderr
        assert not list((zoo_home / "files").glob(f"{other['id']}/*"))


def test_offline_without_cache_is_one_line(zoo_home: Path) -> None:
    r = _zoo("pull", "keras/vgg16", env={"ZOO_HOME": str(zoo_home), "ZOO_OFFLINE": "1"})
    assert r.returncode == 6
    assert len(r.stderr.strip().splitlines()) == 1 and "offline" in r.stderr


def test_no_network_is_one_line(zoo_home: Path) -> None:
    # A mirror nobody listens on and an unreachable origin: fails clearly after the retries.
    env = {
        "ZOO_HOME": str(zoo_home),
        "ZOO_RETRIES": "1",
        "ZOO_BACKOFF": "0.01",
        "ZOO_MIRROR": f"http://127.0.0.1:{free_port()}",
        "HTTPS_PROXY": f"http://127.0.0.1:{free_port()}",
    }
    r = _zoo("pull", "testdata/lenet_mnist", env=env)
    assert r.returncode == 4, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
