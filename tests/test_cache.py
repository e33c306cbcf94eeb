"""The cache's housekeeping: ls, verify, rm, prune, pins; files put there by real downloads."""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import replace
from pathlib import Path

import pytest
from servers import TestServer

from zoo import cache, fetch
from zoo.cards import Checksum, FileRef, ModelCard
from zoo.errors import ChecksumError, ZooError


def sha256(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


@pytest.fixture()
def filled(zoo_home: Path) -> tuple[TestServer, dict[str, bytes], list[ModelCard]]:
    """Two models pulled from a real server: a/one (two files) and b/two (one file)."""
    files = {"/w1": os.urandom(20_000), "/d1": b"layer {}\n", "/w2": os.urandom(30_000)}
    with TestServer(files) as s:

        def ref(path: str, name: str) -> FileRef:
            return FileRef(
                name=name,
                urls=(s.url + path,),
                size=len(files[path]),
                checksum=Checksum("sha256", sha256(files[path])),
            )

        cards = [
            ModelCard(
                id="a/one",
                name="one",
                source="caffe",
                framework="caffe",
                format="caffemodel",
                files=(ref("/w1", "one.caffemodel"), ref("/d1", "deploy.prototxt")),
            ),
            ModelCard(
                id="b/two",
                name="two",
                source="caffe",
                framework="caffe",
                format="caffemodel",
                files=(ref("/w2", "two.caffemodel"),),
            ),
        ]
        for c in cards:
            fetch.pull(c)
        yield s, files, cards


def test_zoo_home_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "h"))
    assert cache.zoo_home() == tmp_path / "h"
    monkeypatch.delenv("ZOO_HOME")
    assert cache.zoo_home() == Path.home() / ".cache" / "zoo"


def test_list_entries(filled, zoo_home: Path) -> None:  # noqa: ANN001
    _, files, _ = filled
    rows = cache.list_entries()
    assert [(r.model_id, r.file_name) for r in rows] == [
        ("a/one", "deploy.prototxt"),
        ("a/one", "one.caffemodel"),
        ("b/two", "two.caffemodel"),
    ]
    by_name = {r.file_name: r for r in rows}
    assert by_name["two.caffemodel"].sha256 == sha256(files["/w2"])
    assert by_name["two.caffemodel"].size == 30_000
    assert Path(by_name["two.caffemodel"].path).read_bytes() == files["/w2"]
    assert all(r.present and r.pinned for r in rows)
    json.dumps([r.__dict__ for r in rows])  # the CLI prints these as JSON


def test_verify_finds_a_damaged_blob_and_repair_removes_it(filled, zoo_home: Path) -> None:  # noqa: ANN001
    server, files, cards = filled
    assert cache.verify_cache() == []
    blob = cache.blob_path(sha256(files["/w1"]), zoo_home)
    os.chmod(blob, 0o644)
    with open(blob, "r+b") as f:  # bit rot
        f.seek(5)
        f.write(b"\x00\x01")
    problems = cache.verify_cache()
    assert len(problems) == 1 and "damaged blob" in problems[0] and blob.name in problems[0]
    assert cache.verify_cache(repair=True) and not blob.exists()
    assert any("is missing" in p for p in cache.verify_cache())
    # The next pull downloads it again and the cache is whole.
    fetch.pull(cards[0])
    assert cache.verify_cache() == []
    assert len(server.requests("/w1", "GET")) == 2


def test_remove_deletes_unshared_blobs_and_keeps_pins(filled, zoo_home: Path) -> None:  # noqa: ANN001
    server, files, cards = filled
    # A third model with the same bytes as b/two shares its blob.
    shared = ModelCard(
        id="c/three",
        name="three",
        source="caffe",
        framework="caffe",
        format="caffemodel",
        files=(replace(cards[1].files[0], name="three.caffemodel"),),
    )
    fetch.pull(shared)
    res = cache.remove("a/one")
    assert (res.files, res.blobs, res.bytes, res.pins) == (2, 2, 20_000 + len(files["/d1"]), 0)
    assert [r.model_id for r in cache.list_entries()] == ["b/two", "c/three"]
    assert not (zoo_home / "files" / "a").exists() and not (zoo_home / "refs" / "a").exists()
    assert [b.name for b in (zoo_home / "blobs" / "sha256").iterdir()] == [sha256(files["/w2"])]
    assert cache.read_pin("a/one", "one.caffemodel") == sha256(files["/w1"])
    assert cache.remove("b/two").blobs == 0  # c/three still uses it
    assert Path(cache.list_entries()[0].path).read_bytes() == files["/w2"]
    assert cache.verify_cache() == []
    with pytest.raises(ZooError, match="b/two is not in the cache"):
        cache.remove("b/two")
    with pytest.raises(ZooError, match="not in the cache"):
        cache.remove("c")  # the family folder of c/three is no model
    # The pin outlived rm: a changed upstream file is refused; forget_pins accepts it again.
    server.files["/w1"] = os.urandom(20_000)
    new_ref = FileRef(name="one.caffemodel", urls=cards[0].files[0].urls, size=20_000)
    card = ModelCard(
        id="a/one", name="one", source="caffe", framework="caffe", format="caffemodel", files=(new_ref,)
    )
    with pytest.raises(ChecksumError, match="pinned"):
        fetch.pull(card)
    assert cache.remove("a/one", forget_pins=True).pins == 2  # nothing cached, but pins to forget
    assert fetch.pull(card)[0].read_bytes() == server.files["/w1"]


def test_prune_drops_unreferenced_blobs_and_stale_partials(filled, zoo_home: Path) -> None:  # noqa: ANN001
    _, files, _ = filled
    # A ref lost (say a process killed between rename and ref write) leaves an unreferenced blob.
    cache.ref_path("a/one", "one.caffemodel", zoo_home).unlink()
    assert cache.prune().blobs == 0  # young blobs are spared: a pull may be committing one
    old = time.time() - 3600
    for b in (zoo_home / "blobs" / "sha256").iterdir():
        os.utime(b, (old, old), follow_symlinks=False)
    stale = zoo_home / "partial" / "deadbeef.part"
    stale.write_bytes(b"half")
    os.utime(stale, (old - 2 * 86400, old - 2 * 86400))
    fresh = zoo_home / "partial" / "cafe.part"
    fresh.write_bytes(b"resume me")
    res = cache.prune()
    assert (res.blobs, res.bytes, res.partials, res.other) == (1, 20_000, 1, 1)  # + its dangling view
    assert "removed 1 unreferenced blob(s)" in str(res)
    assert sorted(b.name for b in (zoo_home / "blobs" / "sha256").iterdir()) == sorted(
        [sha256(files["/d1"]), sha256(files["/w2"])]
    )
    assert not stale.exists() and fresh.exists()
    assert cache.verify_cache() == []


def test_pins_are_full_sha256(zoo_home: Path) -> None:
    with pytest.raises(ValueError):
        cache.write_pin("a/b", "f", "abc")
    cache.write_pin("a/b", "f", "a" * 64)
    assert cache.read_pin("a/b", "f") == "a" * 64
    with pytest.raises(Exception, match="invalid model id"):
        cache.ref_path("../x", "f")
