"""Downloads against real HTTP servers on 127.0.0.1 (tests/servers.py), real files, real faults."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest
from servers import Fault, TestServer, free_port

from zoo import cache, fetch
from zoo.cards import Checksum, FileRef, ModelCard
from zoo.errors import ChecksumError, FetchError, OfflineError

ROOT = Path(__file__).resolve().parents[1]
LENET_COMMIT = "d870c51e8fa3452cb210b378c78be7ba4dcc8cf0"
LENET_URL = (
    f"https://raw.githubusercontent.com/ethereon/caffe-tensorflow/{LENET_COMMIT}"
    "/examples/mnist/lenet_iter_10000.caffemodel"
)

# A child process that pulls the first file of a card given as JSON; exit 3 on a zoo error.
CHILD = r"""
import json, os, sys, time
from pathlib import Path
pre = os.environ.get("CHILD_PRE")
if pre:
    exec(pre)
from zoo.cards import ModelCard
from zoo import fetch
card = ModelCard.from_dict(json.loads(sys.argv[1]))
go = os.environ.get("CHILD_GO")
if go:
    while not Path(go).exists():
        time.sleep(0.005)
try:
    p = fetch.fetch_file(card, card.files[0])
except Exception as e:
    print(f"{type(e).__name__}: {e}")
    sys.exit(3)
print(p)
"""


def sha256(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def make_card(*refs: FileRef, model_id: str = "test/model") -> ModelCard:
    return ModelCard(
        id=model_id, name=model_id, source="testdata", framework="caffe", format="caffemodel", files=refs
    )


def ref_for(
    server: TestServer,
    path: str,
    data: bytes,
    *,
    algo: str | None = "sha256",
    value: str | None = None,
    size: bool = True,
    name: str | None = None,
) -> FileRef:
    if algo is not None and value is None:
        h = hashlib.new("sha256" if algo.startswith("sha256") else algo, data).hexdigest()
        value = h[:10] if algo == "sha256-prefix" else h
    ck = Checksum(algo, value, "test") if algo else Checksum(None, None, "not published")
    return FileRef(
        name=name or path.rsplit("/", 1)[-1],
        urls=(server.url + path,),
        size=len(data) if size else None,
        checksum=ck,
    )


def blobs(home: Path) -> list[Path]:
    d = home / "blobs" / "sha256"
    return sorted(d.iterdir()) if d.is_dir() else []


def partials(home: Path) -> list[Path]:
    d = home / "partial"
    return sorted(d.iterdir()) if d.is_dir() else []


@pytest.fixture()
def home(zoo_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private $ZOO_HOME with fast retries (also for child processes)."""
    monkeypatch.setenv("ZOO_BACKOFF", "0.01")
    monkeypatch.setenv("ZOO_RETRIES", "4")
    return zoo_home


@pytest.fixture()
def server() -> TestServer:
    with TestServer() as s:
        yield s


@pytest.fixture(scope="module")
def blob1m() -> bytes:
    return os.urandom(1_000_000)


def run_child(card: ModelCard, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps(card.to_dict())],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


# ---------------------------------------------------------------------------------------------
# mirrors and a real testdata file


def test_pull_testdata_entry_through_loopback_mirror(
    testdata: Path, home: Path, server: TestServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sums = dict(
        line.split()[::-1] for line in (testdata / "SHA256SUMS").read_text().splitlines() if line.strip()
    )
    rel = "caffe/lenet_mnist/lenet_iter_10000.caffemodel"
    data = (testdata / rel).read_bytes()
    ref = FileRef(
        name="lenet_iter_10000.caffemodel",
        urls=(LENET_URL,),
        size=len(data),
        checksum=Checksum("sha256", sums[rel], "testdata SHA256SUMS"),
    )
    card = make_card(ref, model_id="testdata/lenet_mnist")
    mirror_path = "/raw.githubusercontent.com" + LENET_URL.split("raw.githubusercontent.com", 1)[1]
    server.files[mirror_path] = data
    # The first mirror lacks the file (404): the next one in the list serves it.
    monkeypatch.setenv("ZOO_MIRROR", f"{server.url}/empty-mirror, {server.url}")
    dest = tmp_path / "dest"
    [out] = fetch.pull(card, dest=dest)
    assert out == dest / "lenet_iter_10000.caffemodel"
    assert sha256(out.read_bytes()) == sums[rel]
    assert [p.name for p in dest.iterdir()] == ["lenet_iter_10000.caffemodel"]  # no temp files
    assert [r.path for r in server.requests(method="GET")] == ["/empty-mirror" + mirror_path, mirror_path]
    cached = fetch.fetch_file(card, ref)
    assert cached == home / "files" / "testdata/lenet_mnist" / "lenet_iter_10000.caffemodel"
    assert os.path.realpath(cached) == str(home / "blobs" / "sha256" / sums[rel])
    rec = json.loads(
        (home / "refs" / "testdata/lenet_mnist" / "lenet_iter_10000.caffemodel.json").read_text()
    )
    assert rec["sha256"] == sums[rel] and rec["size"] == len(data)
    assert rec["url"] == server.url + mirror_path
    assert rec["checksum"]["value"] == sums[rel]
    assert len(server.requests(method="GET")) == 2  # the second fetch came from the cache


def test_options_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ZOO_MIRROR", "http://a/ ,http://b\thttp://c")
    monkeypatch.setenv("ZOO_OFFLINE", "yes")
    monkeypatch.setenv("ZOO_RETRIES", "7")
    monkeypatch.setenv("ZOO_BACKOFF", "0.25")
    monkeypatch.setenv("ZOO_HOME", str(tmp_path))
    o = fetch.Options.resolve()
    assert (o.mirrors, o.offline, o.retries, o.backoff, o.home) == (
        ["http://a/", "http://b", "http://c"],
        True,
        7,
        0.25,
        tmp_path,
    )
    o = fetch.Options.resolve(mirrors=["http://m"], offline=False, retries=1, progress=False)
    assert (o.mirrors, o.offline, o.retries, o.progress) == (["http://m"], False, 1, "off")
    assert fetch.Options.resolve(progress=True).progress == "bar"
    assert fetch.Options.resolve().progress == "lines"  # pytest's stderr is not a terminal
    monkeypatch.setenv("ZOO_PROGRESS_INTERVAL", "0.5")
    assert fetch.Options.resolve().progress_interval == 0.5
    monkeypatch.setenv("ZOO_OFFLINE", "0")
    assert fetch.Options.resolve().offline is False


def test_mirror_url_layout() -> None:
    assert (
        fetch.mirror_url("http://m:8/base/", "https://host.org/a/b.bin?x=1")
        == "http://m:8/base/host.org/a/b.bin?x=1"
    )
    ref = FileRef(name="b", urls=("https://h/a/b", "file:///x/b"))
    assert fetch.candidate_urls(ref, ["http://m1", "http://m2"]) == [
        "http://m1/h/a/b",
        "http://m2/h/a/b",
        "https://h/a/b",
        "file:///x/b",
    ]


# ---------------------------------------------------------------------------------------------
# resume, concurrency


def test_resume_after_killed_pull(home: Path, server: TestServer) -> None:
    data = os.urandom(3_000_000)
    server.files["/slow.bin"] = data
    server.faults["/slow.bin"] = Fault(rate=1_000_000)
    ref = ref_for(server, "/slow.bin", data)
    card = make_card(ref)
    part = home / "partial" / f"{fetch.identity_key(ref)}.part"
    proc = run_child(card)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (not part.exists() or part.stat().st_size < 400_000):
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    have = part.stat().st_size
    assert 400_000 <= have < len(data)
    assert blobs(home) == []
    del server.faults["/slow.bin"]
    before = len(server.requests("/slow.bin"))
    path = fetch.fetch_file(card, ref)
    assert sha256(path.read_bytes()) == sha256(data)
    again = server.requests("/slow.bin")[before:]
    assert [(r.range, r.status) for r in again] == [(f"bytes={have}-", 206)]
    assert again[0].sent == len(data) - have  # only the remainder came over the wire
    assert not part.exists()


def test_eight_concurrent_processes_download_once(
    home: Path, server: TestServer, blob1m: bytes, tmp_path: Path
) -> None:
    server.files["/shared.bin"] = blob1m
    server.faults["/shared.bin"] = Fault(rate=2_000_000)  # slow enough that all of them overlap
    ref = ref_for(server, "/shared.bin", blob1m)
    go = tmp_path / "go"
    procs = [run_child(make_card(ref), CHILD_GO=str(go)) for _ in range(8)]
    time.sleep(0.3)
    go.touch()
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, outs
    paths = {o[0].strip() for o in outs}
    assert len(paths) == 1
    assert sha256(Path(paths.pop()).read_bytes()) == sha256(blob1m)
    assert len(server.requests("/shared.bin", "GET")) == 1
    assert server.served("/shared.bin") == len(blob1m)


def test_eight_concurrent_threads_download_once(home: Path, server: TestServer, blob1m: bytes) -> None:
    server.files["/t.bin"] = blob1m
    server.faults["/t.bin"] = Fault(rate=4_000_000)
    ref = ref_for(server, "/t.bin", blob1m)
    card = make_card(ref)
    barrier = threading.Barrier(8)
    results: list[Path | BaseException] = []

    def work() -> None:
        barrier.wait()
        try:
            results.append(fetch.fetch_file(card, ref))
        except BaseException as e:  # noqa: BLE001 - reported below
            results.append(e)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 8 and all(isinstance(r, Path) for r in results), results
    assert server.served("/t.bin") == len(blob1m)
    assert len(server.requests("/t.bin", "GET")) == 1


# ---------------------------------------------------------------------------------------------
# corruption and checksums


def test_flipped_byte_is_rejected_then_retried(home: Path, server: TestServer, blob1m: bytes) -> None:
    server.files["/f.bin"] = blob1m
    server.faults["/f.bin"] = Fault(flip_byte=123_456, times=1)
    ref = ref_for(server, "/f.bin", blob1m)
    path = fetch.fetch_file(make_card(ref), ref)
    assert sha256(path.read_bytes()) == sha256(blob1m)
    gets = server.requests("/f.bin", "GET")
    assert [r.range for r in gets] == [None, None]  # the retry started from zero
    assert [b.name for b in blobs(home)] == [sha256(blob1m)]


def test_persistent_corruption_raises_and_caches_nothing(
    home: Path, server: TestServer, blob1m: bytes
) -> None:
    server.files["/bad.bin"] = blob1m
    server.faults["/bad.bin"] = Fault(flip_byte=10)
    ref = ref_for(server, "/bad.bin", blob1m)
    bad = bytearray(blob1m)
    bad[10] ^= 0xFF
    with pytest.raises(ChecksumError) as ei:
        fetch.fetch_file(make_card(ref), ref)
    msg = str(ei.value)
    assert f"expected sha256 {sha256(blob1m)}" in msg and f"got sha256 {sha256(bytes(bad))}" in msg
    assert blobs(home) == [] and partials(home) == []
    assert not (home / "refs").exists() or not any((home / "refs").rglob("*.json"))
    assert cache.read_pin("test/model", "bad.bin", home) is None
    assert len(server.requests("/bad.bin", "GET")) == 2


@pytest.mark.parametrize("algo", ["md5", "sha1", "sha256-prefix", "sha256"])
def test_published_checksum_algorithms(algo: str, home: Path, server: TestServer) -> None:
    data = os.urandom(50_000)
    server.files["/c.bin"] = data
    good = ref_for(server, "/c.bin", data, algo=algo)
    assert fetch.fetch_file(make_card(good, model_id="test/good"), good).read_bytes() == data
    wrong = "0" * len(good.checksum.value or "")
    bad = ref_for(server, "/c.bin", data, algo=algo, value=wrong)
    with pytest.raises(ChecksumError) as ei:
        fetch.fetch_file(make_card(bad, model_id="test/bad"), bad)
    actual = hashlib.new("sha256" if algo.startswith("sha256") else algo, data).hexdigest()
    assert f"expected {algo} {wrong}" in str(ei.value) and actual in str(ei.value)


def test_no_published_checksum_pins_on_first_use(
    home: Path, server: TestServer, caplog: pytest.LogCaptureFixture
) -> None:
    v1, v2 = os.urandom(40_000), os.urandom(40_000)
    server.files["/p.bin"] = v1
    ref = ref_for(server, "/p.bin", v1, algo=None)
    card = make_card(ref)
    with pytest.raises(ChecksumError, match="no checksum"):
        fetch.fetch_file(card, ref, require_checksum=True)
    assert server.requests("/p.bin") == []
    with caplog.at_level(logging.WARNING, logger="zoo.fetch"):
        fetch.fetch_file(card, ref)
    assert any("no published checksum" in r.getMessage() for r in caplog.records)
    assert cache.read_pin(card.id, "p.bin", home) == sha256(v1)
    # The publisher's file changes; our cached copy is forgotten (the pin stays).
    server.files["/p.bin"] = v2
    cache.remove(card.id, home)
    with pytest.raises(ChecksumError) as ei:
        fetch.fetch_file(card, ref)
    assert sha256(v1) in str(ei.value) and sha256(v2) in str(ei.value)
    # Even a card whose published md5 matches the new bytes is refused: the pin wins.
    md5_ref = ref_for(server, "/p.bin", v2, algo="md5")
    with pytest.raises(ChecksumError, match="pinned"):
        fetch.fetch_file(make_card(md5_ref), md5_ref)
    assert blobs(home) == []  # rm deleted v1's blob (no other ref used it); v2 never entered


# ---------------------------------------------------------------------------------------------
# HTTP faults


def test_500_then_ok(home: Path, server: TestServer) -> None:
    data = os.urandom(30_000)
    server.files["/e.bin"] = data
    server.faults["/e.bin"] = Fault(statuses=[500, 503])
    ref = ref_for(server, "/e.bin", data)
    assert fetch.fetch_file(make_card(ref), ref).read_bytes() == data
    assert [r.status for r in server.requests("/e.bin")] == [500, 503, 200]


def test_persistent_500_fails_naming_the_url(home: Path, server: TestServer) -> None:
    data = os.urandom(1000)
    server.files["/down.bin"] = data
    server.faults["/down.bin"] = Fault(statuses=[500] * 20)
    ref = ref_for(server, "/down.bin", data)
    with pytest.raises(FetchError, match=r"/down\.bin: HTTP 500 \(gave up after 4 retries\)"):
        fetch.fetch_file(make_card(ref), ref)
    assert len(server.requests("/down.bin")) == 5


def test_429_honours_retry_after(home: Path, server: TestServer) -> None:
    data = os.urandom(30_000)
    server.files["/r.bin"] = data
    server.faults["/r.bin"] = Fault(statuses=[429], retry_after="1")
    ref = ref_for(server, "/r.bin", data)
    t0 = time.monotonic()
    assert fetch.fetch_file(make_card(ref), ref).read_bytes() == data
    reqs = server.requests("/r.bin")
    assert [r.status for r in reqs] == [429, 200]
    assert time.monotonic() - t0 >= 0.95  # ZOO_BACKOFF is 0.01: only Retry-After explains this


def test_dropped_connection_resumes_with_range(home: Path, server: TestServer, blob1m: bytes) -> None:
    server.files["/d.bin"] = blob1m
    server.faults["/d.bin"] = Fault(drop_after=300_000, times=2)
    ref = ref_for(server, "/d.bin", blob1m)
    assert sha256(fetch.fetch_file(make_card(ref), ref).read_bytes()) == sha256(blob1m)
    assert [r.range for r in server.requests("/d.bin")] == [None, "bytes=300000-", "bytes=600000-"]
    assert server.served("/d.bin") == len(blob1m)  # no byte sent twice


def test_server_without_range_support_restarts_cleanly(home: Path, server: TestServer, blob1m: bytes) -> None:
    server.files["/n.bin"] = blob1m
    server.faults["/n.bin"] = Fault(drop_after=300_000, times=1, no_range=True)
    ref = ref_for(server, "/n.bin", blob1m)
    assert sha256(fetch.fetch_file(make_card(ref), ref).read_bytes()) == sha256(blob1m)
    reqs = server.requests("/n.bin")
    assert [(r.range, r.status) for r in reqs] == [(None, 200), ("bytes=300000-", 200)]
    assert server.served("/n.bin") == 300_000 + len(blob1m)


@pytest.mark.parametrize("kind", ["html", "html_as_binary"])
def test_html_page_is_refused(kind: str, home: Path, server: TestServer) -> None:
    data = os.urandom(20_000)
    server.files["/h.bin"] = data
    server.faults["/h.bin"] = Fault(**{kind: True})
    ref = ref_for(server, "/h.bin", data, size=False)
    with pytest.raises(FetchError, match="HTML"):
        fetch.fetch_file(make_card(ref), ref)
    assert blobs(home) == [] and partials(home) == []
    assert len(server.requests("/h.bin")) == 1  # not retried: it will not get better


def test_wrong_content_length_is_refused(home: Path, server: TestServer) -> None:
    data = os.urandom(20_000)
    server.files["/w.bin"] = data
    server.faults["/w.bin"] = Fault(length_delta=100)
    ref = ref_for(server, "/w.bin", data)
    with pytest.raises(FetchError, match="announces 20100 bytes, the card says 20000"):
        fetch.fetch_file(make_card(ref), ref)
    # Without a size in the card, the lie shows as a body that never completes.
    ref2 = ref_for(server, "/w.bin", data, size=False)
    with pytest.raises(FetchError, match="gave up"):
        fetch.fetch_file(make_card(ref2, model_id="test/nosize"), ref2)
    assert blobs(home) == []


def test_size_differing_from_the_card_is_refused(home: Path, server: TestServer) -> None:
    data = os.urandom(20_000)
    server.files["/s.bin"] = data
    ref = FileRef(
        name="s.bin",
        urls=(server.url + "/s.bin",),
        size=len(data) + 1,
        checksum=Checksum("sha256", sha256(data)),
    )
    with pytest.raises(FetchError, match="card says 20001"):
        fetch.fetch_file(make_card(ref), ref)
    assert blobs(home) == []


def test_connection_refused_fails_at_once_naming_the_url(
    home: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    # Not transient: no retry, so a long backoff must not be waited for.
    monkeypatch.setenv("ZOO_BACKOFF", "5")
    url = f"http://127.0.0.1:{free_port()}/gone.bin"
    ref = FileRef(name="gone.bin", urls=(url,), checksum=Checksum("sha256", "0" * 64))
    t0 = time.monotonic()
    with pytest.raises(FetchError) as ei:
        fetch.fetch_file(make_card(ref), ref)
    assert str(ei.value) == f"{url}: cannot connect: Connection refused"
    assert time.monotonic() - t0 < 2
    assert "retry" not in capfd.readouterr().err


def test_unresolvable_host_fails_at_once(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZOO_BACKOFF", "5")
    url = "http://nonexistent.invalid/model.bin"
    ref = FileRef(name="model.bin", urls=(url,), checksum=Checksum("sha256", "0" * 64))
    t0 = time.monotonic()
    with pytest.raises(
        FetchError,
        match=r"nonexistent\.invalid/model\.bin: cannot resolve the host "
        r"name nonexistent\.invalid",
    ):
        fetch.fetch_file(make_card(ref), ref)
    assert time.monotonic() - t0 < 2


def test_refused_mirror_is_skipped_at_once(
    home: Path, server: TestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ZOO_BACKOFF", "5")
    data = os.urandom(20_000)
    server.files["/m.bin"] = data
    ref = ref_for(server, "/m.bin", data)
    t0 = time.monotonic()
    path = fetch.fetch_file(make_card(ref), ref, mirrors=[f"http://127.0.0.1:{free_port()}"])
    assert path.read_bytes() == data
    assert time.monotonic() - t0 < 1.5
    assert [r.path for r in server.requests()] == ["/m.bin"]


def test_transient_failures_say_so_on_stderr(
    home: Path, server: TestServer, capfd: pytest.CaptureFixture[str]
) -> None:
    data = os.urandom(20_000)
    server.files["/busy.bin"] = data
    server.faults["/busy.bin"] = Fault(statuses=[503, 503])
    ref = ref_for(server, "/busy.bin", data)
    assert fetch.fetch_file(make_card(ref), ref).read_bytes() == data
    err = capfd.readouterr().err.splitlines()
    assert err == [
        f"zoo: {server.url}/busy.bin: HTTP 503; retry 1/4 in 0.0s",
        f"zoo: {server.url}/busy.bin: HTTP 503; retry 2/4 in 0.0s",
    ]


# ---------------------------------------------------------------------------------------------
# offline, file://, archives, full disk


def test_offline_serves_cache_or_fails_clearly(
    home: Path, server: TestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(10_000)
    server.files["/o.bin"] = data
    ref = ref_for(server, "/o.bin", data)
    card = make_card(ref)
    with pytest.raises(OfflineError, match="offline and test/model/o.bin is not cached"):
        fetch.fetch_file(card, ref, offline=True)
    assert server.requests() == []
    online = fetch.fetch_file(card, ref)
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    server.files.clear()
    assert fetch.fetch_file(card, ref) == online
    assert len(server.requests()) == 1


def test_file_url_is_copied_and_verified(home: Path, tmp_path: Path) -> None:
    src = tmp_path / "mine.onnx"
    src.write_bytes(os.urandom(5000))
    ref = FileRef(
        name="mine.onnx",
        urls=(src.as_uri(),),
        size=5000,
        checksum=Checksum("sha256", sha256(src.read_bytes())),
    )
    path = fetch.fetch_file(make_card(ref, model_id="user/mine"), ref)
    assert path.name == "mine.onnx" and path.read_bytes() == src.read_bytes()
    src.write_bytes(os.urandom(5000))  # the user's file changed behind our back
    bad = FileRef(
        name="mine.onnx", urls=(src.as_uri(),), size=5000, checksum=Checksum("sha256", ref.checksum.value)
    )
    with pytest.raises(ChecksumError):
        fetch.fetch_file(make_card(bad, model_id="user/other"), bad)


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _tar(members: dict[str, bytes], symlink: str | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in members.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
        if symlink:
            ti = tarfile.TarInfo(symlink)
            ti.type = tarfile.SYMTYPE
            ti.linkname = "/etc/passwd"
            tf.addfile(ti)
    return buf.getvalue()


@pytest.mark.parametrize("packer", [_zip, _tar])
def test_archive_member_extraction(
    packer,
    home: Path,
    server: TestServer,  # noqa: ANN001
    tmp_path: Path,
) -> None:
    weights, proto = os.urandom(30_000), b"name: 'net'\n"
    archive = packer(
        {"ResNet/model.caffemodel": weights, "ResNet/deploy.prototxt": proto, "../evil.txt": b"owned"}
    )
    server.files["/pack"] = archive
    base = ref_for(server, "/pack", archive, name="pack.archive")
    w = replace(base, member="ResNet/model.caffemodel")
    d = replace(base, member="ResNet/deploy.prototxt", role="definition")
    card = make_card(w, d, model_id="test/archived")
    paths = fetch.pull(card, dest=tmp_path / "out")
    assert [p.name for p in paths] == ["model.caffemodel", "deploy.prototxt"]
    assert paths[0].read_bytes() == weights and paths[1].read_bytes() == proto
    cached = fetch.fetch_file(card, w)
    assert cached.read_bytes() == weights and cached.name == "ResNet%2Fmodel.caffemodel"
    assert {b.name for b in blobs(home)} == {sha256(archive), sha256(weights), sha256(proto)}
    assert len(server.requests("/pack", "GET")) == 1  # one archive download for both members
    evil = replace(base, member="../evil.txt")
    with pytest.raises(FetchError, match=r"refusing archive member '\.\./evil\.txt'"):
        fetch.fetch_file(make_card(evil, model_id="test/evil"), evil)
    absolute = replace(base, member="/etc/passwd")
    with pytest.raises(FetchError, match="refusing"):
        fetch.fetch_file(make_card(absolute, model_id="test/abs"), absolute)
    assert not (home.parent / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()


def test_tar_link_member_is_refused(home: Path, server: TestServer) -> None:
    archive = _tar({"a.bin": b"x"}, symlink="model.bin")
    server.files["/l.tgz"] = archive
    base = ref_for(server, "/l.tgz", archive)
    ref = replace(base, member="model.bin")
    with pytest.raises(FetchError, match="not a regular file"):
        fetch.fetch_file(make_card(ref), ref)


def test_disk_full_raises_and_leaves_nothing(home: Path, server: TestServer, blob1m: bytes) -> None:
    server.files["/big.bin"] = blob1m
    ref = ref_for(server, "/big.bin", blob1m)
    pre = "import resource; resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))"
    proc = run_child(make_card(ref), CHILD_PRE=pre)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, (out, err)
    assert out.startswith("DiskFullError: disk full while writing"), out
    assert blobs(home) == [] and partials(home) == []
    assert 0 < server.served("/big.bin") <= len(blob1m)
