"""The cache never hands out damaged bytes; no silent waits; progress when piped; several ids.

Everything runs the real ``zoo`` command against real loopback HTTP servers (tests/servers.py)
with a generated registry (``ZOO_REGISTRY``) whose URLs point at them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from servers import Fault, TestServer, free_port

from zoo import cache, fetch
from zoo.cards import ModelCard
from zoo.errors import ChecksumError

ROOT = Path(__file__).resolve().parents[1]


def sha256(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _card(model_id: str, files: list[tuple[str, str, bytes]]) -> dict:
    return {
        "id": model_id,
        "name": model_id,
        "source": "testdata",
        "framework": "onnx",
        "format": "onnx",
        "origin": "native",
        "task": "image-classification",
        "provenance": {"publisher": "test"},
        "files": [
            {
                "name": name,
                "role": "weights",
                "urls": [url],
                "size": len(data),
                "checksum": {"algo": "sha256", "value": sha256(data), "source": "test"},
            }
            for name, url, data in files
        ],
        "architecture": None,
        "classifier": None,
        "num_classes": None,
        "preprocess": {"unknown": True},
        "metrics": [],
        "tags": [],
    }


class Env:
    """A private ZOO_HOME and a generated registry of files served by ``server``."""

    def __init__(self, tmp_path: Path, server: TestServer) -> None:
        self.home = tmp_path / "home"
        self.home.mkdir()
        self.registry = tmp_path / "registry.json"
        self.server = server
        self.cards: list[dict] = []
        self.env = {
            "ZOO_HOME": str(self.home),
            "ZOO_REGISTRY": str(self.registry),
            "ZOO_RETRIES": "1",
            "ZOO_BACKOFF": "0.01",
        }

    def add(self, model_id: str, **files: bytes) -> None:
        """``files``: name -> bytes, served at /<model_id>/<name>."""
        entries = []
        for name, data in files.items():
            path = f"/{model_id}/{name}"
            self.server.files[path] = data
            entries.append((name.replace("_", "."), self.server.url + path, data))
        self.cards.append(_card(model_id, entries))
        self.registry.write_text(json.dumps({"schema_version": 1, "models": self.cards}))

    def zoo(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        base = {k: v for k, v in os.environ.items() if "proxy" not in k.lower() and not k.startswith("ZOO_")}
        return subprocess.run(
            [sys.executable, "-m", "zoo.cli", *args],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env={**base, **self.env, **env},
            timeout=60,
        )


@pytest.fixture()
def server() -> TestServer:
    with TestServer() as s:
        yield s


@pytest.fixture()
def env(tmp_path: Path, server: TestServer) -> Env:
    return Env(tmp_path, server)


def flip(blob: Path, at: int = 100) -> None:
    """Bit rot in place: make the read-only blob writable and flip one byte."""
    blob.chmod(0o644)
    with open(blob, "r+b") as f:
        f.seek(at)
        b = f.read(1)
        f.seek(at)
        f.write(bytes([b[0] ^ 0xFF]))


def blob_of(path: str) -> Path:
    return Path(os.path.realpath(path.strip()))


# ---------------------------------------------------------------------------------------------
# damaged blobs


def test_online_pull_fetches_a_damaged_blob_again(env: Env) -> None:
    data = os.urandom(50_000)
    env.add("t/a", model_bin=data)
    r = env.zoo("pull", "t/a")
    assert r.returncode == 0, r.stderr
    blob = blob_of(r.stdout)
    flip(blob)
    r = env.zoo("pull", "t/a")
    assert r.returncode == 0, r.stderr
    assert Path(r.stdout.strip()).read_bytes() == data
    assert "damaged" in r.stderr and str(blob) in r.stderr
    assert len(env.server.requests("/t/a/model_bin", "GET")) == 2
    assert blob.stat().st_mode & 0o777 == 0o444  # the replacement is read-only again
    assert env.zoo("cache", "verify").returncode == 0


def test_offline_pull_of_a_damaged_blob_fails_naming_it(env: Env) -> None:
    data = os.urandom(50_000)
    env.add("t/a", model_bin=data)
    r = env.zoo("pull", "t/a")
    blob = blob_of(r.stdout)
    flip(blob, at=49_999)
    bad = sha256(blob.read_bytes())
    before = len(env.server.requests())
    r = env.zoo("pull", "t/a", "--offline")
    assert r.returncode == 5 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert str(blob) in lines[0] and f"expected sha256 {sha256(data)}" in lines[0] and bad in lines[0]
    assert len(env.server.requests()) == before  # offline: nothing asked
    r = env.zoo("pull", "t/a", ZOO_OFFLINE="1")  # the environment's offline, the same
    assert r.returncode == 5 and "damaged" in r.stderr


def test_a_change_right_after_the_download_is_caught(env: Env) -> None:
    # The same clock tick as the commit: size, mtime and inode alone could not show it, so zoo
    # moves a fresh blob's mtime into the past before recording it.
    data = os.urandom(30_000)
    env.add("t/a", model_bin=data)
    card = ModelCard.from_dict(env.cards[0])
    path = fetch.fetch_file(card, card.files[0], home=env.home)
    blob = blob_of(str(path))
    recorded = (cache.read_ref("t/a", "model.bin", env.home) or {})["blob_stat"]
    assert recorded["mtime_ns"] == blob.stat().st_mtime_ns
    assert time.time_ns() - recorded["mtime_ns"] >= 2_000_000_000  # any write from now on shows
    flip(blob)
    with pytest.raises(ChecksumError, match="damaged"):
        fetch.fetch_file(card, card.files[0], home=env.home, offline=True)
    assert fetch.fetch_file(card, card.files[0], home=env.home).read_bytes() == data


def test_verify_option_rehashes_even_when_the_stat_is_unchanged(env: Env) -> None:
    data = os.urandom(30_000)
    env.add("t/a", model_bin=data)
    r = env.zoo("pull", "t/a")
    blob = blob_of(r.stdout)
    st = blob.stat()
    flip(blob)
    os.utime(blob, ns=(st.st_atime_ns, st.st_mtime_ns))  # a change that hides from the stat
    rec = cache.read_ref("t/a", "model.bin", env.home)
    assert rec is not None and rec["blob_stat"]["mtime_ns"] == blob.stat().st_mtime_ns
    r = env.zoo("pull", "t/a", "--offline", "--verify")
    assert r.returncode == 5 and "damaged" in r.stderr
    r = env.zoo("pull", "t/a", "--verify")
    assert r.returncode == 0 and Path(r.stdout.strip()).read_bytes() == data
    assert (
        fetch.pull(ModelCard.from_dict(env.cards[0]), home=env.home, verify=True, offline=True)[
            0
        ].read_bytes()
        == data
    )


def test_fresh_download_replaces_a_damaged_blob_of_the_same_name(env: Env) -> None:
    # Two models publish the same bytes: one blob. It rots; pulling the other model downloads
    # verified bytes, which must replace the damaged blob rather than be dropped in its favour.
    data = os.urandom(40_000)
    env.add("t/a", model_bin=data)
    env.add("t/b", model_bin=data)
    a = env.zoo("pull", "t/a")
    blob = blob_of(a.stdout)
    flip(blob)
    b = env.zoo("pull", "t/b")
    assert b.returncode == 0, b.stderr
    assert blob_of(b.stdout) == blob and blob.read_bytes() == data
    assert Path(a.stdout.strip()).read_bytes() == data  # t/a's path reads right bytes again


def test_cache_rm_then_pull_gives_the_right_bytes(env: Env) -> None:
    data, other = os.urandom(40_000), os.urandom(10_000)
    env.add("t/a", model_bin=data)
    env.add("t/b", model_bin=other)
    blob = blob_of(env.zoo("pull", "t/a").stdout)
    keep = blob_of(env.zoo("pull", "t/b").stdout)
    flip(blob)
    r = env.zoo("cache", "rm", "t/a")
    assert r.returncode == 0 and "forgot 1 cached file(s), deleted 1 blob(s)" in r.stdout, r.stdout
    assert not blob.exists() and keep.exists()  # its blob went; the other model's stayed
    r = env.zoo("pull", "t/a")
    assert r.returncode == 0 and Path(r.stdout.strip()).read_bytes() == data


def test_cache_rm_of_an_unknown_id_is_an_error(env: Env) -> None:
    env.add("t/a", model_bin=b"x" * 100)
    assert env.zoo("pull", "t/a").returncode == 0
    for mid in ("t/nothing", "t"):  # not cached; a family folder is not a model
        r = env.zoo("cache", "rm", mid)
        assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "not in the cache" in r.stderr and r.stdout == ""
    assert env.zoo("cache", "rm", "t/a").returncode == 0
    r = env.zoo("cache", "rm", "t/a")
    assert r.returncode == 1 and "not in the cache" in r.stderr


def test_verify_repair_fetches_damaged_files_again(env: Env) -> None:
    a, b = os.urandom(40_000), os.urandom(20_000)
    env.add("t/a", model_bin=a, extra_bin=b)
    r = env.zoo("pull", "t/a")
    paths = r.stdout.split()
    flip(blob_of(paths[0]))
    blob_of(paths[1]).chmod(0o644)
    blob_of(paths[1]).unlink()  # and one blob lost altogether
    r = env.zoo("cache", "verify")
    assert r.returncode == 5 and "damaged blob" in r.stderr and "is missing" in r.stderr
    r = env.zoo("cache", "verify", "--repair")
    assert r.returncode == 0, r.stderr
    assert "repaired t/a/model.bin" in r.stdout and "repaired t/a/extra.bin" in r.stdout
    assert [Path(p).read_bytes() for p in paths] == [a, b]
    assert env.zoo("cache", "verify").returncode == 0
    # What cannot be fetched again is reported, and the exit status says the cache is not whole.
    flip(blob_of(paths[0]))
    env.server.files.clear()
    r = env.zoo("cache", "verify", "--repair")
    assert r.returncode == 5
    assert "could not repair t/a/model.bin" in r.stderr and "HTTP 404" in r.stderr


# ---------------------------------------------------------------------------------------------
# several ids, cache ls


def test_pull_several_ids(env: Env) -> None:
    a, b = os.urandom(1000), os.urandom(2000)
    env.add("t/a", model_bin=a)
    env.add("t/b", model_bin=b)
    r = env.zoo("pull", "t/a", "t/b")
    assert r.returncode == 0, r.stderr
    assert [Path(p).read_bytes() for p in r.stdout.split()] == [a, b]
    r = env.zoo("pull", "t/a", "t/b", "--file", "model.bin")
    assert r.returncode == 2 and "--file" in r.stderr
    r = env.zoo("pull", "t/a", "t/nope")  # an unknown id: nothing is downloaded
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and r.stdout == ""
    assert env.zoo("pull").returncode == 2


def test_cache_ls_has_a_header_and_readable_sizes(env: Env) -> None:
    a, b = os.urandom(1_234_567), os.urandom(999)
    env.add("t/a", model_bin=a)
    env.add("t/bb", weights_bin=b)
    assert env.zoo("pull", "t/a", "t/bb").returncode == 0
    lines = env.zoo("cache", "ls").stdout.splitlines()
    assert lines[0].split() == ["MODEL", "FILE", "SIZE", "SHA256", "PATH"]
    assert lines[1].split() == [
        "t/a",
        "model.bin",
        "1.2",
        "MB",
        sha256(a)[:12],
        str(env.home / "files" / "t/a" / "model.bin"),
    ]
    assert lines[2].split()[:5] == ["t/bb", "weights.bin", "999", "B", sha256(b)[:12]]
    assert lines[0].index("SIZE") + 4 == lines[1].index("MB") + 2  # sizes right-aligned
    rows = json.loads(env.zoo("cache", "ls", "--json").stdout)
    assert [(r["model_id"], r["size"]) for r in rows] == [("t/a", 1_234_567), ("t/bb", 999)]


def test_human_size() -> None:
    assert [cache.human_size(n) for n in (0, 999, 1000, 1_234_567, 999_960, 5 * 10**12, None)] == [
        "0 B",
        "999 B",
        "1.0 kB",
        "1.2 MB",
        "1.0 MB",
        "5.0 TB",
        "-",
    ]


# ---------------------------------------------------------------------------------------------
# no silent waits


def test_unresolvable_host_fails_fast_with_one_line(env: Env) -> None:
    env.add("t/a", model_bin=b"x" * 100)
    env.cards[0]["files"][0]["urls"] = ["http://nonexistent.invalid/t/a/model.bin"]
    env.registry.write_text(json.dumps({"schema_version": 1, "models": env.cards}))
    t0 = time.monotonic()
    r = env.zoo("pull", "t/a", ZOO_RETRIES="5", ZOO_BACKOFF="5")
    elapsed = time.monotonic() - t0
    assert r.returncode == 4
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot resolve the host name nonexistent.invalid" in lines[0], r.stderr
    assert elapsed < 2, elapsed


def test_refused_mirror_is_skipped_at_once(env: Env) -> None:
    data = os.urandom(20_000)
    env.add("t/a", model_bin=data)
    mirror = f"http://127.0.0.1:{free_port()}"  # bound, then closed: connections are refused
    t0 = time.monotonic()
    r = env.zoo("pull", "t/a", "--mirror", mirror, ZOO_RETRIES="5", ZOO_BACKOFF="5")
    elapsed = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    assert Path(r.stdout.strip()).read_bytes() == data and r.stderr == ""
    assert elapsed < 2, elapsed


def test_transient_failure_waits_are_announced(env: Env) -> None:
    data = os.urandom(20_000)
    env.add("t/a", model_bin=data)
    env.server.faults["/t/a/model_bin"] = Fault(statuses=[503])
    r = env.zoo("pull", "t/a", ZOO_RETRIES="3", ZOO_BACKOFF="0.2")
    assert r.returncode == 0, r.stderr
    assert r.stderr.splitlines() == [f"zoo: {env.server.url}/t/a/model_bin: HTTP 503; retry 1/3 in 0.2s"]


# ---------------------------------------------------------------------------------------------
# progress when stderr is not a terminal

LINE = re.compile(r"zoo: model\.bin (\d+\.\d)/(\d+\.\d) MB \((\d+)%\) [\d.]+ MB/s")


def test_progress_lines_when_piped(env: Env) -> None:
    data = os.urandom(1_500_000)
    env.add("t/a", model_bin=data)
    env.server.faults["/t/a/model_bin"] = Fault(rate=1_500_000)  # about a second
    r = env.zoo("pull", "t/a", ZOO_PROGRESS_INTERVAL="0.2")
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) >= 2 and all(LINE.fullmatch(ln) for ln in lines), r.stderr
    done = [float(LINE.fullmatch(ln).group(1)) for ln in lines]  # type: ignore[union-attr]
    assert done == sorted(done) and {LINE.fullmatch(ln).group(2) for ln in lines} == {"1.5"}  # type: ignore[union-attr]
    # A download shorter than the interval prints nothing.
    env.add("t/b", model_bin=os.urandom(200_000))
    r = env.zoo("pull", "t/b")
    assert r.returncode == 0 and r.stderr == ""


def test_progress_lines_for_the_rehash_of_a_partial(env: Env) -> None:
    data = os.urandom(300_000)
    env.add("t/a", model_bin=data)
    card = ModelCard.from_dict(env.cards[0])
    ref = card.files[0]
    part = env.home / "partial" / f"{fetch.identity_key(ref)}.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(data[:200_000])  # what a killed pull left
    env.server.faults["/t/a/model_bin"] = Fault(rate=400_000)
    r = env.zoo("pull", "t/a", ZOO_PROGRESS_INTERVAL="0.1")
    assert r.returncode == 0 and Path(r.stdout.strip()).read_bytes() == data
    assert [x.range for x in env.server.requests("/t/a/model_bin")] == ["bytes=200000-"]
    assert any(LINE.fullmatch(ln) for ln in r.stderr.splitlines()), r.stderr


def test_progress_object_phases() -> None:
    import io
    from contextlib import redirect_stderr

    buf = io.StringIO()
    with redirect_stderr(buf):
        p = fetch._Progress("lines", "f.bin", interval=0.0)
        p.phase("re-hashing the partial download", 4_000_000)
        p.advance(2_000_000)
        p.start(10_000_000, 4_000_000)
        p.advance(1_000_000)
        q = fetch._Progress("lines", "g.bin", interval=60)
        q.start(10_000_000, 0)
        q.advance(10_000_000)  # done before the interval: silent
    lines = buf.getvalue().splitlines()
    assert lines[0].startswith("zoo: f.bin re-hashing the partial download 2.0/4.0 MB (50%) ")
    assert lines[1].startswith("zoo: f.bin 5.0/10.0 MB (50%) ")
    assert len(lines) == 2


def test_cached_blob_is_not_rehashed_when_its_stat_is_unchanged(env: Env, tmp_path: Path) -> None:
    # Cheap on the hot path: a second pull reads no byte of the blob (its atime is left alone
    # by the stat check; a re-hash would read it). Checked via the ref: no re-record happened.
    data = os.urandom(20_000)
    env.add("t/a", model_bin=data)
    card = ModelCard.from_dict(env.cards[0])
    fetch.fetch_file(card, card.files[0], home=env.home)
    ref_file = cache.ref_path("t/a", "model.bin", env.home)
    before = ref_file.stat().st_mtime_ns, ref_file.read_text()
    time.sleep(0.01)
    fetch.fetch_file(card, card.files[0], home=env.home)
    assert (ref_file.stat().st_mtime_ns, ref_file.read_text()) == before
    fetch.fetch_file(card, card.files[0], home=env.home, verify=True)  # re-hashed: re-recorded
    assert ref_file.stat().st_mtime_ns != before[0]


def test_refs_written_by_older_versions_are_verified_once(env: Env) -> None:
    data = os.urandom(20_000)
    env.add("t/a", model_bin=data)
    card = ModelCard.from_dict(env.cards[0])
    path = fetch.fetch_file(card, card.files[0], home=env.home)
    rec = cache.read_ref("t/a", "model.bin", env.home)
    assert rec is not None
    del rec["blob_stat"]
    cache.write_ref("t/a", "model.bin", rec, env.home)
    assert fetch.fetch_file(card, card.files[0], home=env.home, offline=True) == path
    assert "blob_stat" in (cache.read_ref("t/a", "model.bin", env.home) or {})


def test_damaged_hub_file_is_downloaded_again(
    tmp_path: Path, zoo_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Our blob of a hub file is a hard link to the hub client's cached copy: damage shows in both,
    # so zoo must make the client download it again rather than accept its cache.
    from zoo.cards import Checksum, FileRef

    repo = "timm/tiny_test.a1_in1k"
    data = os.urandom(100_000)
    with TestServer() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
        monkeypatch.delenv("HF_HUB_CACHE", raising=False)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        hub.set_hf_file(repo, "model.safetensors", data)
        ref = FileRef(
            name="model.safetensors",
            checksum=Checksum(None, None, "none"),
            hf={"repo_id": repo, "filename": "model.safetensors", "revision": "main"},
        )
        card = ModelCard(
            id=repo, name="tiny", source="timm", framework="pytorch", format="safetensors", files=(ref,)
        )
        [path] = fetch.pull(card)
        flip(blob_of(str(path)))
        with pytest.raises(ChecksumError, match="damaged"):
            fetch.pull(card, offline=True)
        assert fetch.pull(card)[0].read_bytes() == data
        assert fetch.pull(card, offline=True)[0].read_bytes() == data
        assert cache.verify_cache() == []
