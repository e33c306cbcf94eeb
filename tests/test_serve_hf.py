"""`zoo serve` as a Hugging Face endpoint: the real huggingface_hub client with ``endpoint=`` (or
``HF_ENDPOINT``) pointed at zoo serve on 127.0.0.1, which pulls a miss once from a hub-compatible
loopback upstream (tests/servers.py) through zoo's verified fetcher, then serves it from its cache."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from servers import TestServer, offline_env
from test_serve import running

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

ROOT = Path(__file__).resolve().parents[1]
MODEL = "timm/densenet121.ra_in1k"  # a bundled card whose weights are a hub file (pinned on first use)
REPO, FILE = "timm/densenet121.ra_in1k", "model.safetensors"


@pytest.fixture()
def hub_and_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    from zoo.serve import create_app

    data = os.urandom(300_000)
    with TestServer() as hub:
        hub.set_hf_file(REPO, FILE, data)
        # the server's own hub client goes to the loopback hub
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "server-hf"))
        monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
        monkeypatch.delenv("HF_HUB_CACHE", raising=False)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        app = create_app(tmp_path / "server-home", fetch_kw={"retries": 1, "backoff": 0.01})
        with running(app) as url:
            yield {"hub": hub, "url": url, "data": data, "app": app}


def _hub_gets(hub: TestServer) -> int:
    return sum(1 for r in hub.requests(method="GET") if "/resolve/" in r.path)


def test_hf_hub_download_through_zoo_serve(hub_and_server: dict[str, Any], tmp_path: Path) -> None:
    import huggingface_hub
    from huggingface_hub.errors import EntryNotFoundError

    s = hub_and_server
    sha = hashlib.sha256(s["data"]).hexdigest()
    for i in range(2):  # two clients with empty caches: one upstream download
        got = huggingface_hub.hf_hub_download(
            REPO, FILE, endpoint=s["url"], cache_dir=str(tmp_path / f"c{i}")
        )
        assert hashlib.sha256(Path(got).read_bytes()).hexdigest() == sha
        assert Path(os.path.realpath(got)).name == sha  # the hub client named its blob by our ETag
    assert _hub_gets(s["hub"]) == 1
    assert s["app"].state.zoo.fetches == 1
    meta = huggingface_hub.get_hf_file_metadata(huggingface_hub.hf_hub_url(REPO, FILE, endpoint=s["url"]))
    assert (
        meta.etag == sha and meta.size == len(s["data"]) and meta.commit_hash and len(meta.commit_hash) == 40
    )
    with pytest.raises(EntryNotFoundError):  # not a file of any card: never proxied
        huggingface_hub.hf_hub_download(
            REPO, "pytorch_model.bin", endpoint=s["url"], cache_dir=str(tmp_path / "x")
        )
    assert _hub_gets(s["hub"]) == 1


def test_zoo_pull_with_hf_endpoint_at_zoo_serve(hub_and_server: dict[str, Any], tmp_path: Path) -> None:
    """Another zoo process, HF_ENDPOINT = zoo serve: the card's hub file arrives, pinned."""
    s = hub_and_server
    env = {
        k: v for k, v in os.environ.items() if "proxy" not in k.lower() and not k.startswith(("ZOO_", "HF_"))
    }
    env.update(offline_env(tmp_path / "client-home"))
    env.update(HF_ENDPOINT=s["url"], HF_HOME=str(tmp_path / "client-hf"), HF_HUB_DISABLE_TELEMETRY="1")
    p = subprocess.run(
        [sys.executable, "-m", "zoo.cli", "pull", MODEL],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    path = Path(p.stdout.strip().splitlines()[-1])
    assert path.read_bytes() == s["data"]
    assert _hub_gets(s["hub"]) == 1
    from zoo import cache

    assert cache.read_pin(MODEL, FILE, tmp_path / "client-home") == hashlib.sha256(s["data"]).hexdigest()
