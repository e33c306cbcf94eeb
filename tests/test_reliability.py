"""Downloads under faults, through the real ``zoo pull`` path, with figures.

A fault-injecting HTTP server on 127.0.0.1 (below; tests/servers.py has no ETag / If-Range and
cuts a response per request, not at absolute file offsets) serves the files of a generated
one-entry registry (``ZOO_REGISTRY``) into a private ``ZOO_HOME``; pulls go through
``zoo.api.pull`` (registry lookup, index, fetch, cache) or the ``zoo pull`` command itself:

- the connection dropped at 20 random (seeded) offsets: every drop is resumed with Range from the
  exact offset, no byte is sent twice, the right sha256 at the end;
- one flipped byte: detected, never cached (and a once-only flip: fetched again from zero);
- a wrong Content-Length (longer or shorter), with and without a size in the card;
- 500 / 503 / 429 with Retry-After (seconds and an HTTP date): retried, Retry-After honoured and
  bounded by ``ZOO_MAX_RETRY_AFTER``;
- a server ignoring Range (200 with the whole body to a ranged request);
- a file that changes between two ranged requests: an honest server answers the If-Range with
  the new file (200); one that ignores If-Range sends a 206 of the new version, which its ETag
  gives away: both start again from zero, the two versions are never stitched;
- ``kill -9`` of ``zoo pull`` at 20 random (seeded) moments of a slowed download, then pulled
  again: no damaged blob is ever visible, refs and views point at good blobs, the right hash.

bench/reliability.py runs the same scenarios with larger counts for bench/RESULTS.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


def sha256(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


# ---------------------------------------------------------------------------------------------
# the fault-injecting server


@dataclass
class Faults:
    """What to do wrong for one path (all off by default)."""

    drops: list[int] = field(
        default_factory=list
    )  # absolute offsets: a response crossing one is cut there (once each)
    flip: int | None = None  # XOR 0xFF at this absolute offset ...
    flip_times: int | None = None  # ... on this many responses (None: always)
    length_delta: int = 0  # announce Content-Length + delta
    statuses: list[tuple[int, str | None]] = field(default_factory=list)  # (status, Retry-After) first
    no_range: bool = False  # ignore Range: 200 with the whole file
    ignore_if_range: bool = False  # answer a Range with 206 even when If-Range names another version
    change_to: bytes | None = None  # the file's new version, from the first cut response on
    chunk: int = 64 * 1024
    delay: float = 0.0  # seconds between chunks (a slow server)


@dataclass
class Req:
    method: str
    range: str | None
    if_range: str | None
    status: int = 0
    sent: int = 0
    etag: str | None = None
    t: float = 0.0


def etag_of(data: bytes) -> str:
    return f'"{sha256(data)}"'


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Srv

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
        pass

    def do_GET(self) -> None:  # noqa: N802
        srv = self.server
        path = self.path.split("?", 1)[0]
        req = Req("GET", self.headers.get("Range"), self.headers.get("If-Range"), t=time.monotonic())
        with srv.lock:
            srv.log.setdefault(path, []).append(req)
            data = srv.files.get(path)
            f = srv.faults.get(path) or Faults()
            status = f.statuses.pop(0) if f.statuses else None
        if data is None or status is not None:
            code, retry_after = status or (404, None)
            req.status = code
            self.send_response(code)
            if retry_after is not None:
                self.send_header("Retry-After", retry_after)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", "3")
            self.end_headers()
            self.wfile.write(b"no\n")
            return
        etag = etag_of(data)
        start, code = 0, 200
        m = re.fullmatch(r"bytes=(\d+)-", (req.range or "").strip())
        if m and not f.no_range and (req.if_range in (None, etag) or f.ignore_if_range):
            start, code = int(m.group(1)), 206
            if start >= len(data):
                req.status = 416
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        body = bytearray(data[start:])
        with srv.lock:
            cut = next((d for d in sorted(f.drops) if start < d < len(data)), None)
            if cut is not None:
                f.drops.remove(cut)
            end = len(data) if cut is None else cut  # a flip counts only on a response that sends it
            if f.flip is not None and start <= f.flip < end and f.flip_times != 0:
                body[f.flip - start] ^= 0xFF
                if f.flip_times is not None:
                    f.flip_times -= 1
        req.status, req.etag = code, etag
        self.send_response(code)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("ETag", etag)
        self.send_header("Accept-Ranges", "none" if f.no_range else "bytes")
        if code == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(body) + f.length_delta))
        self.end_headers()
        limit = len(body) if cut is None else cut - start
        pos = 0
        try:
            while pos < limit:
                piece = bytes(body[pos : min(pos + f.chunk, limit)])
                self.wfile.write(piece)
                pos += len(piece)
                req.sent += len(piece)
                if f.delay:
                    time.sleep(f.delay)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass
        if cut is not None or f.length_delta:
            self.close_connection = True
            if cut is not None and f.change_to is not None:
                with srv.lock:
                    srv.files[path], f.change_to = f.change_to, None


class _Srv(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.files: dict[str, bytes] = {}
        self.faults: dict[str, Faults] = {}
        self.log: dict[str, list[Req]] = {}

    def handle_error(self, request: Any, client_address: Any) -> None:  # killed clients: quiet
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class FaultServer:
    """``with FaultServer() as s``: ``s.files[path] = bytes``, ``s.faults[path] = Faults(...)``,
    ``s.gets(path)`` the requests seen."""

    def __init__(self) -> None:
        self._srv = _Srv()
        self._t = threading.Thread(
            target=self._srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> FaultServer:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._srv.shutdown()
        self._srv.server_close()

    @property
    def url(self) -> str:
        host, port = self._srv.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def files(self) -> dict[str, bytes]:
        return self._srv.files

    @property
    def faults(self) -> dict[str, Faults]:
        return self._srv.faults

    def gets(self, path: str) -> list[Req]:
        with self._srv.lock:
            return list(self._srv.log.get(path, []))


# ---------------------------------------------------------------------------------------------
# a generated one-entry registry and a private ZOO_HOME


def card(model_id: str, url: str, data: bytes, *, checksum: bool = True, size: bool = True) -> dict[str, Any]:
    ck = {"algo": "sha256", "value": sha256(data), "source": "test"} if checksum else {"algo": None}
    f: dict[str, Any] = {"name": "model.bin", "role": "weights", "urls": [url], "checksum": ck}
    if size:
        f["size"] = len(data)
    return {
        "id": model_id,
        "name": model_id,
        "source": "testdata",
        "framework": "onnx",
        "format": "onnx",
        "origin": "native",
        "task": "image-classification",
        "provenance": {"publisher": "test"},
        "files": [f],
        "architecture": None,
        "classifier": None,
        "num_classes": None,
        "preprocess": {"unknown": True},
        "metrics": [],
        "tags": [],
    }


class World:
    """A server, a registry file (``ZOO_REGISTRY``) and a ``ZOO_HOME`` of one test."""

    def __init__(self, tmp: Path, server: FaultServer, env: dict[str, str]) -> None:
        self.tmp, self.server, self.env = tmp, server, env
        self.home = tmp / "home"
        self.home.mkdir(exist_ok=True)
        self.registry = tmp / "registry.json"
        self.cards: list[dict[str, Any]] = []

    def add(self, model_id: str, data: bytes, faults: Faults | None = None, **kw: Any) -> str:
        """Serve ``data`` at /<id>/model.bin (with ``faults``) and list it in the registry."""
        path = f"/{model_id}/model.bin"
        self.server.files[path] = data
        if faults is not None:
            self.server.faults[path] = faults
        self.cards.append(card(model_id, self.server.url + path, data, **kw))
        self.registry.write_text(json.dumps({"schema_version": 1, "models": self.cards}))
        return path

    def pull(self, model_id: str) -> Path:
        from zoo import api

        [p] = api.pull(model_id, home=self.home, progress=False)
        return p

    def blobs(self) -> list[Path]:
        d = self.home / "blobs" / "sha256"
        return sorted(d.iterdir()) if d.is_dir() else []

    def partials(self) -> list[Path]:
        d = self.home / "partial"
        return sorted(d.iterdir()) if d.is_dir() else []


@pytest.fixture()
def server() -> Any:
    with FaultServer() as s:
        yield s


@pytest.fixture()
def world(tmp_path: Path, server: FaultServer, monkeypatch: pytest.MonkeyPatch) -> World:
    env = {
        "ZOO_HOME": str(tmp_path / "home"),
        "ZOO_REGISTRY": str(tmp_path / "registry.json"),
        "ZOO_RETRIES": "3",
        "ZOO_BACKOFF": "0.01",
        "ZOO_MAX_RETRY_AFTER": "60",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    for k in ("ZOO_MIRROR", "ZOO_OFFLINE"):
        monkeypatch.delenv(k, raising=False)
    return World(tmp_path, server, env)


def check_cache(home: Path) -> dict[str, int]:
    """The cache's visible state is consistent: every blob's name is its sha256 (no ``.tmp-``
    file either: HTTP downloads stage in partial/), every ref points at an existing, intact blob,
    every view links to a blob. Returns counts."""
    bdir = home / "blobs" / "sha256"
    blobs = sorted(bdir.iterdir()) if bdir.is_dir() else []
    for b in blobs:
        assert not b.name.startswith(".tmp-"), f"temporary file visible in blobs/: {b}"
        assert sha256(b.read_bytes()) == b.name, f"damaged blob visible: {b}"
    refs = sorted((home / "refs").rglob("*.json")) if (home / "refs").is_dir() else []
    for r in refs:
        rec = json.loads(r.read_text())  # a ref is always complete JSON (atomic writes)
        blob = bdir / rec["sha256"]
        assert blob.is_file(), f"{r} points at a missing blob"
        assert rec["size"] == blob.stat().st_size
    views = [p for p in (home / "files").rglob("*") if p.is_symlink()] if (home / "files").is_dir() else []
    for v in views:
        target = Path(os.path.realpath(v))
        assert target.parent == bdir.resolve() and target.is_file(), f"dangling view {v}"
    return {"blobs": len(blobs), "refs": len(refs), "views": len(views)}


# ---------------------------------------------------------------------------------------------
# dropped connections


def drop_offsets(size: int, n: int, seed: int) -> list[int]:
    return sorted(random.Random(seed).sample(range(1, size), n))


@pytest.mark.timeout(60)
def test_twenty_random_drops_each_resume_at_the_exact_offset(world: World) -> None:
    data = random.Random(1).randbytes(2_000_000)
    drops = drop_offsets(len(data), 20, seed=11)
    path = world.add("rel/drops", data, Faults(drops=list(drops), chunk=32 * 1024))
    t0 = time.monotonic()
    out = world.pull("rel/drops")
    took = time.monotonic() - t0
    assert sha256(out.read_bytes()) == sha256(data)
    gets = world.server.gets(path)
    assert [g.range for g in gets] == [None] + [f"bytes={d}-" for d in drops]
    assert [g.status for g in gets] == [200] + [206] * 20
    assert all(g.if_range == etag_of(data) for g in gets[1:])  # every resume names its version
    assert sum(g.sent for g in gets) == len(data)  # no byte sent twice
    assert [b.name for b in world.blobs()] == [sha256(data)] and world.partials() == []
    check_cache(world.home)
    assert took < 30


@pytest.mark.timeout(60)
def test_retry_count_resets_with_progress(world: World) -> None:
    # 20 drops with ZOO_RETRIES=3: only consecutive failures without new bytes count
    data = random.Random(2).randbytes(500_000)
    path = world.add("rel/progress", data, Faults(drops=drop_offsets(len(data), 20, seed=12)))
    assert sha256(world.pull("rel/progress").read_bytes()) == sha256(data)
    assert len(world.server.gets(path)) == 21


# ---------------------------------------------------------------------------------------------
# corrupted bytes, wrong lengths


@pytest.mark.timeout(60)
def test_flipped_byte_is_detected_and_never_cached(world: World) -> None:
    from zoo import cache
    from zoo.errors import ChecksumError

    data = random.Random(3).randbytes(300_000)
    at = random.Random(13).randrange(len(data))
    path = world.add("rel/flip", data, Faults(flip=at))  # every response carries the flip
    with pytest.raises(ChecksumError) as ei:
        world.pull("rel/flip")
    bad = bytearray(data)
    bad[at] ^= 0xFF
    assert f"expected sha256 {sha256(data)}" in str(ei.value) and sha256(bytes(bad)) in str(ei.value)
    assert len(world.server.gets(path)) == 2  # the partial was dropped and fetched once more
    assert world.blobs() == [] and world.partials() == []
    assert cache.read_ref("rel/flip", "model.bin", world.home) is None
    assert cache.read_pin("rel/flip", "model.bin", world.home) is None
    # a flip on one response only: the second, clean download from zero is the one cached
    world.server.faults[path] = Faults(flip=at, flip_times=1)
    assert sha256(world.pull("rel/flip").read_bytes()) == sha256(data)
    assert [g.range for g in world.server.gets(path)[2:]] == [None, None]
    assert [b.name for b in world.blobs()] == [sha256(data)]


@pytest.mark.timeout(60)
def test_flipped_byte_after_a_resume_is_detected(world: World) -> None:
    """The flip lands in the resumed part: the stitched file fails the checksum, is dropped, and
    the retry from zero is clean."""
    from zoo.errors import ChecksumError

    data = random.Random(4).randbytes(400_000)
    path = world.add("rel/flip2", data, Faults(drops=[100_000], flip=300_000, flip_times=1))
    assert sha256(world.pull("rel/flip2").read_bytes()) == sha256(data)
    assert [g.range for g in world.server.gets(path)] == [None, "bytes=100000-", None]
    # with the flip on every response, nothing is ever cached
    world.server.faults[path] = Faults(drops=[50_000], flip=300_000)
    world.cards[0]["id"] = "rel/flip3"  # another entry, same URL: a fresh download
    world.registry.write_text(json.dumps({"schema_version": 1, "models": world.cards}))
    with pytest.raises(ChecksumError):
        world.pull("rel/flip3")
    assert [b.name for b in world.blobs()] == [sha256(data)]  # only the earlier good one


@pytest.mark.timeout(60)
@pytest.mark.parametrize("delta", [100, -100])
def test_wrong_content_length_is_refused(world: World, delta: int) -> None:
    from zoo.errors import ChecksumError, FetchError

    data = random.Random(5).randbytes(100_000)
    world.add("rel/len", data, Faults(length_delta=delta))
    with pytest.raises(FetchError, match=f"announces {len(data) + delta} bytes, the card says {len(data)}"):
        world.pull("rel/len")
    # no size in the card: a longer announcement never completes (truncated, retried, given up);
    # a shorter one gives fewer bytes, which the checksum refuses
    world.add("rel/len-nosize", data, Faults(length_delta=delta), size=False)
    with pytest.raises(FetchError) as ei:
        world.pull("rel/len-nosize")
    if delta > 0:
        assert "gave up after 3 retries" in str(ei.value)  # a body that never completes
    else:
        assert isinstance(ei.value, ChecksumError)
    assert world.blobs() == [] and world.partials() == []
    check_cache(world.home)


# ---------------------------------------------------------------------------------------------
# HTTP statuses


@pytest.mark.timeout(60)
def test_500_503_and_429_with_retry_after_are_retried(
    world: World, capfd: pytest.CaptureFixture[str]
) -> None:
    data = random.Random(6).randbytes(200_000)
    path = world.add("rel/busy", data, Faults(statuses=[(500, None), (503, None), (429, "1")]))
    t0 = time.monotonic()
    assert sha256(world.pull("rel/busy").read_bytes()) == sha256(data)
    gets = world.server.gets(path)
    assert [g.status for g in gets] == [500, 503, 429, 200]
    assert gets[3].t - gets[2].t >= 0.95  # ZOO_BACKOFF is 0.01 s: only Retry-After explains this
    assert time.monotonic() - t0 < 10
    err = capfd.readouterr().err
    assert "HTTP 429; retry 3/3 in 1.0s" in err


@pytest.mark.timeout(60)
def test_retry_after_as_a_date_and_mid_download(world: World) -> None:
    """A 429 with an HTTP-date Retry-After, between two parts of a resumed download."""
    data = random.Random(7).randbytes(300_000)
    path = world.add("rel/date", data, Faults(drops=[120_000]))
    world.server.faults[path].statuses = []
    orig = world.server.faults[path]

    # the 429 comes on the resume: inject it once the first response was cut
    def inject() -> None:
        while not world.server.gets(path):
            time.sleep(0.001)
        orig.statuses.append((429, formatdate(time.time() + 2, usegmt=True)))

    threading.Thread(target=inject, daemon=True).start()
    assert sha256(world.pull("rel/date").read_bytes()) == sha256(data)
    gets = world.server.gets(path)
    assert [(g.status, g.range) for g in gets] == [
        (200, None),
        (429, "bytes=120000-"),
        (206, "bytes=120000-"),
    ]
    assert 0.9 <= gets[2].t - gets[1].t <= 5  # an HTTP date has whole seconds: ~1-2 s


@pytest.mark.timeout(30)
def test_retry_after_is_bounded(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZOO_MAX_RETRY_AFTER", "1")
    data = random.Random(8).randbytes(50_000)
    path = world.add("rel/cap", data, Faults(statuses=[(429, "3600"), (503, "86400")]))
    t0 = time.monotonic()
    assert world.pull("rel/cap").read_bytes() == data
    took = time.monotonic() - t0
    gets = world.server.gets(path)
    assert [g.status for g in gets] == [429, 503, 200]
    assert 1.9 <= gets[2].t - gets[0].t and took < 6  # two capped 1 s waits, not an hour


@pytest.mark.timeout(30)
def test_persistent_500_gives_up_naming_the_url(world: World) -> None:
    from zoo.errors import FetchError

    data = b"x" * 1000
    path = world.add("rel/down", data, Faults(statuses=[(500, None)] * 10))
    with pytest.raises(FetchError, match=r"/rel/down/model\.bin: HTTP 500 \(gave up after 3 retries\)"):
        world.pull("rel/down")
    assert len(world.server.gets(path)) == 4
    assert world.blobs() == []


# ---------------------------------------------------------------------------------------------
# Range ignored, file changed between ranged requests


@pytest.mark.timeout(60)
def test_server_ignoring_range_restarts_from_zero(world: World) -> None:
    data = random.Random(9).randbytes(600_000)
    path = world.add("rel/norange", data, Faults(drops=[250_000, 500_000], no_range=True))
    assert sha256(world.pull("rel/norange").read_bytes()) == sha256(data)
    gets = world.server.gets(path)
    assert [(g.range, g.status) for g in gets] == [
        (None, 200),
        ("bytes=250000-", 200),  # the whole file again, cut at 500,000 ...
        ("bytes=500000-", 200),  # ... and again: each time zoo starts its partial from zero
    ]
    assert sum(g.sent for g in gets) == 250_000 + 500_000 + len(data)
    check_cache(world.home)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("server_kind", ["honours If-Range", "ignores If-Range"])
@pytest.mark.parametrize("published", [False, True])
def test_file_changed_between_ranged_requests_is_never_stitched(
    world: World, server_kind: str, published: bool
) -> None:
    from zoo import cache
    from zoo.errors import ChecksumError

    rng = random.Random(10)
    v1, v2 = rng.randbytes(400_000), rng.randbytes(400_000)
    stitched = v1[:150_000] + v2[150_000:]
    faults = Faults(drops=[150_000], change_to=v2, ignore_if_range=server_kind == "ignores If-Range")
    # published: the card still publishes v1's checksum (the publisher replaced the file)
    path = world.add("rel/changed", v1, faults, checksum=published)
    if published:
        with pytest.raises(ChecksumError) as ei:
            world.pull("rel/changed")
        assert sha256(v2) in str(ei.value) and sha256(stitched) not in str(ei.value)
        assert world.blobs() == []
    else:  # no published checksum: what arrives first is pinned, so a stitch would be trusted
        out = world.pull("rel/changed")
        assert sha256(out.read_bytes()) == sha256(v2)
        assert cache.read_pin("rel/changed", "model.bin", world.home) == sha256(v2)
        assert [b.name for b in world.blobs()] == [sha256(v2)]
    gets = world.server.gets(path)
    assert gets[0].etag == etag_of(v1) and gets[1].if_range == etag_of(v1)
    if server_kind == "honours If-Range":  # 200 with the new version: restarted at once
        assert [(g.range, g.status) for g in gets[:2]] == [(None, 200), ("bytes=150000-", 200)]
    else:  # 206 of the new version, its ETag differs: refused, then from zero
        assert [(g.range, g.status) for g in gets[:3]] == [(None, 200), ("bytes=150000-", 206), (None, 200)]
        assert gets[1].etag == etag_of(v2)
    assert sha256(stitched) not in {b.name for b in world.blobs()}
    assert world.partials() == []
    check_cache(world.home)


# ---------------------------------------------------------------------------------------------
# kill -9 of `zoo pull` at random moments


def zoo_cli(world: World, *args: str) -> subprocess.Popen[str]:
    base = {k: v for k, v in os.environ.items() if "proxy" not in k.lower() and not k.startswith("ZOO_")}
    return subprocess.Popen(
        [sys.executable, "-m", "zoo.cli", *args],
        cwd=ROOT,
        env={**base, **world.env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def kill_rounds(world: World, model_id: str, path: str, data: bytes, moments: list[float]) -> dict[str, Any]:
    """For each moment: start ``zoo pull``, SIGKILL it after that many seconds, check the cache,
    pull again to the end (resuming), check the hash and the cache, then ``cache rm`` for the next
    round. Returns figures."""
    from zoo import cache

    part = world.home / "partial"
    stats: dict[str, Any] = {"rounds": 0, "killed mid-download": 0, "resumed": 0, "finished before kill": 0}
    for t in moments:
        proc = zoo_cli(world, "pull", model_id)
        time.sleep(t)
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
        check_cache(world.home)
        parts = sorted(part.glob("*.part")) if part.is_dir() else []
        have = parts[0].stat().st_size if parts else 0
        done = cache.read_ref(model_id, "model.bin", world.home) is not None
        n_before = len(world.server.gets(path))
        again = zoo_cli(world, "pull", model_id)
        out, err = again.communicate(timeout=60)
        assert again.returncode == 0, err
        assert sha256(Path(out.strip()).read_bytes()) == sha256(data)
        check_cache(world.home)
        new = world.server.gets(path)[n_before:]
        if done:
            stats["finished before kill"] += 1
            assert new == []  # the cache answered
        elif have == len(data):
            # killed after the last byte but before the commit: the partial is complete, so the
            # next pull verifies and commits it without asking the server again
            stats["complete partial"] = stats.get("complete partial", 0) + 1
            assert new == []
        elif have:
            stats["killed mid-download"] += 1
            stats["resumed"] += 1
            assert new[0].range == f"bytes={have}-" and new[0].if_range == etag_of(data)
            assert sum(g.sent for g in new) == len(data) - have
        stats["rounds"] += 1
        cache.remove(model_id, world.home)  # the pin stays: the next round is checked against it
        assert world.blobs() == []
    return stats


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_kill_9_at_twenty_random_moments(world: World) -> None:
    data = random.Random(14).randbytes(512 * 1024)
    # 16 KiB every 12 ms: ~0.4 s of download after the ~0.3 s interpreter start
    path = world.add("rel/kill", data, Faults(chunk=16 * 1024, delay=0.012))
    moments = [random.Random(15 + i).uniform(0.15, 0.9) for i in range(20)]
    stats = kill_rounds(world, "rel/kill", path, data, moments)
    assert stats["rounds"] == 20
    assert stats["killed mid-download"] >= 5, stats  # most kills land inside the transfer
