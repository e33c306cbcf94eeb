"""Hugging Face hub files: the real huggingface_hub client against a hub-compatible endpoint on
127.0.0.1 (``HF_ENDPOINT``), pinned on first use."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from servers import TestServer

from zoo import cache, fetch
from zoo.cards import Checksum, FileRef, ModelCard
from zoo.errors import ChecksumError, FetchError, OfflineError

REPO = "timm/tiny_test.a1_in1k"


def sha256(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


@pytest.fixture()
def hub(zoo_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> TestServer:
    with TestServer() as s:
        monkeypatch.setenv("HF_ENDPOINT", s.url)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
        monkeypatch.delenv("HF_HUB_CACHE", raising=False)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
        yield s


def hf_card(filename: str = "model.safetensors", checksum: Checksum | None = None) -> ModelCard:
    ref = FileRef(
        name=filename,
        hf={"repo_id": REPO, "filename": filename, "revision": "main"},
        checksum=checksum or Checksum(None, None, "the hub publishes none; pinned on first use"),
        pin="first-use",
    )
    return ModelCard(
        id="timm/tiny_test.a1_in1k",
        name="tiny",
        source="timm",
        framework="pytorch",
        format="safetensors",
        files=(ref,),
    )


def test_hub_file_is_pinned_then_a_changed_file_is_refused(
    hub: TestServer, zoo_home: Path, tmp_path: Path
) -> None:
    v1, v2 = os.urandom(200_000), os.urandom(200_000)
    hub.set_hf_file(REPO, "model.safetensors", v1)
    card = hf_card()
    [path] = fetch.pull(card)
    assert path.name == "model.safetensors" and path.read_bytes() == v1
    assert cache.read_pin(card.id, "model.safetensors", zoo_home) == sha256(v1)
    rec = cache.read_ref(card.id, "model.safetensors", zoo_home)
    assert rec is not None and rec["sha256"] == sha256(v1)
    assert rec["checksum"] == {"algo": "sha256", "value": sha256(v1), "source": "hub ETag"}
    # The real client did the talking: a HEAD on the resolve URL, then a GET; its cache holds it.
    res = f"/{REPO}/resolve/main/model.safetensors"
    assert [r.method for r in hub.requests(res)] == ["HEAD", "GET"]
    hf_blobs = list((tmp_path / "hf" / "hub").glob("models--timm--tiny_test.a1_in1k/blobs/*"))
    assert [b.name for b in hf_blobs] == [sha256(v1)]
    # Same file again: answered from the caches after the client's HEAD; no second GET.
    assert fetch.pull(card) == [path]
    assert [r.method for r in hub.requests(res)] == ["HEAD", "GET", "HEAD"]

    hub.set_hf_file(REPO, "model.safetensors", v2)  # a new commit with different bytes
    with pytest.raises(ChecksumError) as ei:
        fetch.pull(card)
    assert sha256(v1) in str(ei.value) and sha256(v2) in str(ei.value)
    assert [b.name for b in (zoo_home / "blobs" / "sha256").iterdir()] == [sha256(v1)]
    # Offline, the pinned copy is still served.
    assert fetch.pull(card, offline=True) == [path]
    assert path.read_bytes() == v1


def test_hub_bytes_that_contradict_the_etag_are_refused(hub: TestServer, zoo_home: Path) -> None:
    data = os.urandom(50_000)
    hub.set_hf_file(REPO, "model.safetensors", data)
    hub.corrupt_hf(REPO, "model.safetensors")
    with pytest.raises(ChecksumError, match=f"ETag says sha256 {sha256(data)}"):
        fetch.pull(hf_card())
    assert not (zoo_home / "blobs").exists() or not any((zoo_home / "blobs").rglob("*"))
    assert cache.read_pin("timm/tiny_test.a1_in1k", "model.safetensors", zoo_home) is None


def test_hub_published_checksum_and_require_checksum(hub: TestServer, zoo_home: Path) -> None:
    data = os.urandom(10_000)
    hub.set_hf_file(REPO, "config.json", data)
    with pytest.raises(ChecksumError, match="no checksum"):
        fetch.pull(hf_card("config.json"), require_checksum=True)
    good = hf_card("config.json", Checksum("sha256", sha256(data), "test"))
    assert fetch.pull(good, require_checksum=True)[0].read_bytes() == data
    wrong = hf_card("config.json", Checksum("md5", "0" * 32, "test"))
    cache.remove(wrong.id, zoo_home, forget_pins=True)
    with pytest.raises(
        ChecksumError, match=f"expected md5 {'0' * 32}, got md5 {hashlib.md5(data).hexdigest()}"
    ):
        fetch.pull(wrong)


def test_hub_missing_file_and_offline_miss(hub: TestServer, zoo_home: Path) -> None:
    hub.set_hf_file(REPO, "model.safetensors", b"x" * 100)
    with pytest.raises(FetchError, match=f"{REPO}/nope.bin@main"):
        fetch.pull(hf_card("nope.bin"))
    with pytest.raises(
        OfflineError, match="offline and timm/tiny_test.a1_in1k/model.safetensors is not cached"
    ):
        fetch.pull(hf_card(), offline=True)
