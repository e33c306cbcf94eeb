"""`zoo serve`: a real uvicorn server on 127.0.0.1 (in a thread, or `zoo serve` as a subprocess),
real HTTP. The search API answers what `zoo search --json` prints; files are the cached blobs with
Range / ETag / If-None-Match / If-Range; misses are pulled once through zoo.fetch from a loopback
upstream (tests/servers.py) holding the real LeNet files from ../shared/testdata; nothing outside
the cache is ever served."""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from servers import Fault, TestServer, free_port, mirror_testdata_card, offline_env, registry_card

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

ROOT = Path(__file__).resolve().parents[1]
LENET = "testdata/lenet_mnist"
PROTO, WEIGHTS = "lenet.prototxt", "lenet_iter_10000.caffemodel"


def _url_path(name: str) -> str:
    """The mirror-layout path of one LeNet file: /<host>/<path>."""
    f = next(f for f in registry_card(LENET)["files"] if f["name"] == name)
    u = urlsplit(f["urls"][0])
    return f"/{u.netloc}{u.path}"


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


@contextmanager
def running(app: Any, **server_kw: Any) -> Iterator[str]:
    """``app`` on a real uvicorn server on 127.0.0.1 in a thread; yields its URL."""
    from zoo.serve.app import build_server

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    server = build_server(app, **server_kw)
    t = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    t.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and t.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        t.join(10)
        sock.close()


@pytest.fixture(scope="module")
def no_egress() -> Iterator[None]:
    """Origins (raw.githubusercontent.com) go to a dead local proxy: only loopback answers."""
    with pytest.MonkeyPatch.context() as mp:
        dead = f"http://127.0.0.1:{free_port()}"
        for k in ("HTTPS_PROXY", "HTTP_PROXY"):
            mp.setenv(k, dead)
        mp.setenv("NO_PROXY", "127.0.0.1")
        for k in ("ZOO_MIRROR", "ZOO_OFFLINE"):
            mp.delenv(k, raising=False)
        yield


@pytest.fixture(scope="module")
def upstream(testdata: Path, no_egress: None) -> Iterator[TestServer]:
    with TestServer() as srv:
        mirror_testdata_card(srv, registry_card(LENET), testdata)
        yield srv


@pytest.fixture(scope="module")
def lenet_bytes(upstream: TestServer) -> dict[str, bytes]:
    return {PROTO: upstream.files[_url_path(PROTO)], WEIGHTS: upstream.files[_url_path(WEIGHTS)]}


@pytest.fixture(scope="module")
def served(upstream: TestServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A caching mirror in a thread: its own home, pulling misses from ``upstream``."""
    from zoo.serve import create_app

    home = tmp_path_factory.mktemp("serve") / "home"
    app = create_app(home, mirrors=[upstream.url], fetch_kw={"retries": 1, "backoff": 0.01})
    with running(app) as url:
        yield {"url": url, "home": home, "app": app}


def _raw(url: str, path: str, method: str = "GET", **kw: Any) -> tuple[int, dict[str, str], bytes]:
    """One request with the path sent exactly as given (requests would normalize '..')."""
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=20)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for k, v in kw.get("headers", {}).items():
            conn.putheader(k, v)
        body = kw.get("body")
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


# ------------------------------------------------------------------ imports, extras


def test_zoo_help_imports_no_server_nor_torch() -> None:
    code = (
        "import sys\nfrom zoo.cli import main\n"
        "main(['--help']); main(['serve', '--help'])\n"
        "heavy = {'starlette', 'uvicorn', 'torch', 'onnxruntime', 'tensorflow'} & set(sys.modules)\n"
        "assert not heavy, heavy\nprint('LIGHT')"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "--no-upstream" in r.stdout and "LIGHT" in r.stdout


def test_missing_serve_extra_is_one_line(monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    import zoo.errors
    from zoo.cli import main

    real = zoo.errors._installed
    monkeypatch.setattr(zoo.errors, "_installed", lambda m: m != "uvicorn" and real(m))
    with pytest.raises(SystemExit) as e:
        main(["serve", "--port", "0"])
    assert e.value.code == zoo.errors.MissingExtra.exit_code
    assert "zoo serve needs the serve extra: pip install 'zoo[serve]'" in capsys.readouterr().err


# ------------------------------------------------------------------ the search API


SEARCHES = [
    ("q=lenet", {"text": "lenet"}),
    ("q=resnet&sort=top1&limit=5", {"text": "resnet", "sort": "top1", "limit": 5}),
    (
        "source=torchvision&min_top1=80&max-params=30M&sort=top1",
        {"source": "torchvision", "min_top1": 80.0, "max_params": 30e6, "sort": "top1"},
    ),
    ("tag=mobile&input_size=224&limit=0", {"tag": "mobile", "input_size": 224, "limit": 0}),
    ("q=vgg16&framework=keras", {"text": "vgg16", "framework": "keras"}),
    ("origin=caffe&sort=params&limit=7", {"origin": "caffe", "sort": "params", "limit": 7}),
    ("max_gflops=0.5&dataset=imagenet", {"max_gflops": 0.5, "dataset": "imagenet"}),
]


@pytest.mark.parametrize(("query", "kw"), SEARCHES, ids=[q for q, _ in SEARCHES])
def test_api_models_is_zoo_search_json(served: dict[str, Any], query: str, kw: dict[str, Any]) -> None:
    from zoo import api
    from zoo.cli.search import json_rows

    kw = dict(kw)
    text = kw.pop("text", None)
    limit = kw.pop("limit", 50)
    local = api.search(text, home=served["home"], limit=limit or None, **kw)
    r = requests.get(f"{served['url']}/api/models?{query}", timeout=30)
    assert r.status_code == 200, r.text
    assert r.json() == json_rows(local) and len(local) > 0
    assert int(r.headers["X-Total-Count"]) == local.total


@pytest.mark.parametrize(
    ("query", "status", "words"),
    [
        ("bogus=1", 400, "unknown parameter 'bogus'"),
        ("min_top1=high", 400, "min_top1='high'"),
        ("max_params=lots", 400, "max_params"),
        ("source=nowhere", 400, "unknown source 'nowhere'"),
        ("sort=colour", 400, "unknown sort key"),
        ("limit=-1", 400, "limit"),
        ("tag=a&tag=b", 400, "given twice"),
        ("q=" + "x" * 5000, 414, "query too long"),
    ],
)
def test_api_models_bad_queries(served: dict[str, Any], query: str, status: int, words: str) -> None:
    r = requests.get(f"{served['url']}/api/models?{query}", timeout=30)
    assert r.status_code == status
    assert words in r.text


def test_api_card_and_health(served: dict[str, Any]) -> None:
    from zoo import api

    url = served["url"]
    r = requests.get(f"{url}/api/models/{LENET}", timeout=30)
    assert r.status_code == 200
    assert r.json() == api.info(LENET, home=served["home"]).to_dict()
    r = requests.get(f"{url}/api/models/testdata/lenet_mnistt", timeout=30)
    assert r.status_code == 404 and "lenet_mnist" in r.json()["error"]  # with the suggestion
    h = requests.get(f"{url}/api/health", timeout=30).json()
    assert h["status"] == "ok" and h["models"] >= 480 and h["upstream"] is True
    assert requests.get(f"{url}/", timeout=30).status_code == 200  # the page's placeholder


def test_bodies_and_other_methods_are_refused(served: dict[str, Any]) -> None:
    url = served["url"]
    status, _, _ = _raw(url, "/api/health", body=b"x" * 100)
    assert status == 413
    status, hdr, _ = _raw(url, "/api/models", method="POST", body=b"{}")
    assert status == 405 and "GET" in hdr["allow"]
    status, _, _ = _raw(url, "/api/models/" + "a" * 5000)
    assert status == 414


# ------------------------------------------------------------------ files


def test_file_pulled_through_then_served_from_cache(
    served: dict[str, Any], upstream: TestServer, lenet_bytes: dict[str, bytes]
) -> None:
    url, data = served["url"], lenet_bytes[PROTO]
    r = requests.get(f"{url}/files/{LENET}/{PROTO}", timeout=30)
    assert r.status_code == 200 and r.content == data
    assert r.headers["ETag"] == f'"{_sha(data)}"' and r.headers["Content-Length"] == str(len(data))
    assert (served["home"] / "blobs" / "sha256" / _sha(data)).is_file()
    n = len(upstream.requests(_url_path(PROTO), "GET"))
    assert n == 1
    for path in (f"/files/{LENET}/{PROTO}", _url_path(PROTO)):  # both routes, from the cache now
        r = requests.get(url + path, timeout=30)
        assert r.status_code == 200 and r.content == data
    h = requests.head(f"{url}{_url_path(PROTO)}", timeout=30)
    assert h.status_code == 200 and h.content == b"" and h.headers["Content-Length"] == str(len(data))
    assert h.headers["ETag"] == f'"{_sha(data)}"'
    assert len(upstream.requests(_url_path(PROTO), "GET")) == n


def _multipart(r: requests.Response) -> list[tuple[str, bytes]]:
    """(Content-Range, body) of each part of a multipart/byteranges response."""
    ctype = r.headers["Content-Type"]
    assert ctype.startswith("multipart/byteranges; boundary=")
    boundary = ctype.split("boundary=", 1)[1].encode()
    body = r.content
    assert body.endswith(b"--" + boundary + b"--")
    out = []
    for part in body.split(b"--" + boundary)[1:-1]:
        head, _, payload = part.partition(b"\r\n\r\n")
        hdrs = dict(line.split(": ", 1) for line in head.decode().strip().splitlines() if ": " in line)
        assert payload.endswith(b"\r\n")
        out.append((hdrs["Content-Range"], payload[:-2]))
    return out


@pytest.mark.parametrize("route", ["files", "mirror"])
def test_ranges(served: dict[str, Any], lenet_bytes: dict[str, bytes], route: str) -> None:
    data = lenet_bytes[WEIGHTS]
    n = len(data)
    path = f"/files/{LENET}/{WEIGHTS}" if route == "files" else _url_path(WEIGHTS)
    url = served["url"] + path

    def get(rng: str, **hdr: str) -> requests.Response:
        return requests.get(url, headers={"Range": rng, **hdr}, timeout=30)

    r = get("bytes=100-199")
    assert r.status_code == 206 and r.content == data[100:200]
    assert r.headers["Content-Range"] == f"bytes 100-199/{n}" and r.headers["Content-Length"] == "100"
    assert r.headers["ETag"] == f'"{_sha(data)}"'
    r = get("bytes=-500")
    assert r.status_code == 206 and r.content == data[-500:]
    assert r.headers["Content-Range"] == f"bytes {n - 500}-{n - 1}/{n}"
    r = get(f"bytes={n - 10}-")
    assert r.status_code == 206 and r.content == data[-10:]
    r = get("bytes=0-9, 1000-1099, -20")
    assert r.status_code == 206
    assert _multipart(r) == [
        (f"bytes 0-9/{n}", data[:10]),
        (f"bytes 1000-1099/{n}", data[1000:1100]),
        (f"bytes {n - 20}-{n - 1}/{n}", data[-20:]),
    ]
    r = get(f"bytes={n}-")
    assert r.status_code == 416 and r.headers["Content-Range"] == f"bytes */{n}"


def test_conditional_requests(served: dict[str, Any], lenet_bytes: dict[str, bytes]) -> None:
    data = lenet_bytes[WEIGHTS]
    etag = f'"{_sha(data)}"'
    url = f"{served['url']}/files/{LENET}/{WEIGHTS}"
    assert requests.get(url, timeout=30).status_code == 200  # cached (pulled if not yet)

    def get(**hdr: str) -> requests.Response:
        return requests.get(url, headers=hdr, timeout=30)

    for inm in (etag, f"W/{etag}", f'"nope", {etag}', "*"):
        r = get(**{"If-None-Match": inm})
        assert r.status_code == 304 and r.content == b"" and r.headers["ETag"] == etag, inm
    r = get(**{"If-None-Match": '"' + "0" * 64 + '"'})
    assert r.status_code == 200 and r.content == data
    # If-Range with the sha256 ETag: the range; with a stale or weak one: the whole file
    r = get(Range="bytes=10-19", **{"If-Range": etag})
    assert r.status_code == 206 and r.content == data[10:20]
    for stale in ('"' + "0" * 64 + '"', f"W/{etag}", '"d41d8cd98f00b204e9800998ecf8427e"'):
        r = get(Range="bytes=10-19", **{"If-Range": stale})
        assert r.status_code == 200 and r.content == data, stale


def test_not_on_the_card_is_404(served: dict[str, Any]) -> None:
    url = served["url"]
    for path in (
        f"/files/{LENET}/lenet_solver.prototxt",
        f"/files/{LENET}/registry.json",
        "/files/testdata/no_such_model/lenet.prototxt",
        "/raw.githubusercontent.com/ethereon/caffe-tensorflow/master/README.md",
        _url_path(PROTO) + ".bak",
        "/etc/passwd",
    ):
        assert requests.get(url + path, timeout=30).status_code == 404, path


TRAVERSALS = [
    "/files/testdata/lenet_mnist/../../../secret.txt",
    "/files/testdata/lenet_mnist/..%2f..%2f..%2fsecret.txt",
    "/files/testdata/lenet_mnist/..%2F..%2F..%2Fsecret.txt",
    "/files/testdata%2flenet_mnist/lenet.prototxt",
    "/files/testdata/lenet_mnist/%2e%2e/%2e%2e/%2e%2e/secret.txt",
    "/files/testdata/lenet_mnist/..\\..\\..\\secret.txt",
    "/files/testdata/lenet_mnist/..%5c..%5csecret.txt",
    "/files/testdata/lenet_mnist//etc/passwd",
    "/files/testdata/lenet_mnist/%2Fetc%2Fpasswd",
    "//etc/passwd",
    "/./files/testdata/lenet_mnist/lenet.prototxt",
    "/raw.githubusercontent.com/../../secret.txt",
    "/%2e%2e/%2e%2e/secret.txt",
    "/files/testdata/lenet_mnist/lenet.prototxt%00.txt",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_paths_outside_the_cache_are_refused(served: dict[str, Any], path: str) -> None:
    secret = served["home"].parent / "secret.txt"
    secret.write_text("TOPSECRET\n")
    status, _, body = _raw(served["url"], path)
    assert status in (400, 404), (status, body[:100])
    assert b"TOPSECRET" not in body and b"root:" not in body


def test_no_upstream_miss_is_404_and_symlinks_out_are_not_followed(
    upstream: TestServer, lenet_bytes: dict[str, bytes], tmp_path: Path
) -> None:
    from zoo import api
    from zoo.serve import create_app

    home = tmp_path / "home"
    api.pull(LENET, PROTO, home=home, mirrors=[upstream.url], retries=1, progress=False)
    data = lenet_bytes[PROTO]
    blob = home / "blobs" / "sha256" / _sha(data)
    assert blob.is_file()
    before = len(upstream.requests(_url_path(WEIGHTS)))
    with running(create_app(home, upstream=False)) as url:
        r = requests.get(f"{url}/files/{LENET}/{PROTO}", timeout=30)
        assert r.status_code == 200 and r.content == data
        r = requests.get(f"{url}/files/{LENET}/{WEIGHTS}", timeout=30)  # not cached, no upstream
        assert r.status_code == 404
        assert requests.get(url + _url_path(WEIGHTS), timeout=30).status_code == 404
        assert len(upstream.requests(_url_path(WEIGHTS))) == before
        # the blob becomes a symlink to a file outside the cache with the very same bytes
        outside = tmp_path / "outside.bin"
        outside.write_bytes(data)
        blob.chmod(0o644)
        blob.unlink()
        blob.symlink_to(outside)
        r = requests.get(f"{url}/files/{LENET}/{PROTO}", timeout=30)
        assert r.status_code == 404 and r.content != data
        # the whole blob folder a symlink out of the cache: refused too
        blob.unlink()
        blob.write_bytes(data)
        bdir = home / "blobs" / "sha256"
        elsewhere = tmp_path / "elsewhere"
        bdir.rename(elsewhere)
        bdir.symlink_to(elsewhere)
        r = requests.get(f"{url}/files/{LENET}/{PROTO}", timeout=30)
        assert r.status_code == 404 and r.content != data
        bdir.unlink()
        elsewhere.rename(bdir)
        r = requests.get(f"{url}/files/{LENET}/{PROTO}", timeout=30)  # back in the cache: served
        assert r.status_code == 200 and r.content == data


def test_eight_concurrent_misses_fetch_once(
    testdata: Path, no_egress: None, tmp_path: Path, lenet_bytes: dict[str, bytes]
) -> None:
    from zoo.serve import create_app

    data = lenet_bytes[WEIGHTS]
    with TestServer() as up:
        mirror_testdata_card(up, registry_card(LENET), testdata)
        up.faults[_url_path(WEIGHTS)] = Fault(rate=2e6)  # ~0.9 s: every request arrives meanwhile
        home = tmp_path / "home"
        app = create_app(home, mirrors=[up.url], fetch_kw={"retries": 1})
        with running(app) as url:
            paths = [f"/files/{LENET}/{WEIGHTS}", _url_path(WEIGHTS)] * 4
            barrier = threading.Barrier(len(paths))
            results: list[tuple[int, str, str]] = []

            def one(path: str) -> None:
                barrier.wait()
                r = requests.get(url + path, timeout=60)
                results.append((r.status_code, _sha(r.content), r.headers.get("ETag", "")))

            threads = [threading.Thread(target=one, args=(p,)) for p in paths]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
        assert results == [(200, _sha(data), f'"{_sha(data)}"')] * 8
        assert len(up.requests(_url_path(WEIGHTS), "GET")) == 1
        assert up.served(_url_path(WEIGHTS)) == len(data)
        blobs = [p for p in (home / "blobs" / "sha256").iterdir() if not p.name.startswith(".tmp-")]
        assert [p.name for p in blobs] == [_sha(data)]
        assert app.state.zoo.fetches == 1


def test_connection_limit_answers_503(served: dict[str, Any]) -> None:
    from zoo.serve import create_app

    with running(create_app(served["home"], upstream=False), max_connections=2) as url:
        u = urlsplit(url)
        held = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
        held.request("GET", "/api/health")
        assert held.getresponse().read() and True
        extra = []
        for _ in range(2):  # the held connection plus these go past the limit
            c = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
            c.request("GET", "/api/health")
            extra.append(c.getresponse().status)
            c.close()
        held.close()
    assert 503 in extra


# ------------------------------------------------------------------ zoo serve as a process


@contextmanager
def zoo_serve(env: dict[str, str], log: Path, *args: str) -> Iterator[str]:
    """`zoo serve --port 0` as a subprocess; yields the URL from its first stdout line."""
    with open(log, "w") as err:
        p = subprocess.Popen(
            [sys.executable, "-m", "zoo.cli", "serve", "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            cwd=ROOT,
            env=env,
        )
        try:
            line: list[str] = []
            t = threading.Thread(target=lambda: line.append(p.stdout.readline()), daemon=True)  # type: ignore[union-attr]
            t.start()
            t.join(30)
            assert line and line[0].startswith("http://127.0.0.1:"), log.read_text()
            url = line[0].strip()
            deadline = time.monotonic() + 20
            while True:
                try:
                    requests.get(url + "/api/health", timeout=5)
                    break
                except requests.ConnectionError:
                    assert time.monotonic() < deadline and p.poll() is None, log.read_text()
                    time.sleep(0.1)
            yield url
        finally:
            p.terminate()
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)


def _zoo(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zoo.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )


@pytest.mark.slow
def test_zoo_pull_and_search_through_zoo_serve(
    upstream: TestServer, lenet_bytes: dict[str, bytes], tmp_path: Path
) -> None:
    server_home, client_home = tmp_path / "server", tmp_path / "client"
    base = {k: v for k, v in os.environ.items() if k not in ("ZOO_MIRROR", "ZOO_OFFLINE")}
    server_env = {**base, **offline_env(server_home), "ZOO_MIRROR": upstream.url}
    server_env["HTTP_PROXY"] = server_env["HTTPS_PROXY"]
    before = {n: len(upstream.requests(_url_path(n), "GET")) for n in (PROTO, WEIGHTS)}
    with zoo_serve(server_env, tmp_path / "serve.log") as url:
        client_env = {**base, **offline_env(client_home), "ZOO_MIRROR": url}
        r = _zoo(client_env, "pull", LENET)
        assert r.returncode == 0, r.stderr
        paths = [Path(p) for p in r.stdout.split()]
        assert sorted(p.name for p in paths) == sorted(lenet_bytes)
        for p in paths:
            assert p.read_bytes() == lenet_bytes[p.name]
            assert str(p).startswith(str(client_home))
            assert (server_home / "blobs" / "sha256" / _sha(lenet_bytes[p.name])).is_file()
        assert {n: len(upstream.requests(_url_path(n), "GET")) - before[n] for n in before} == {
            PROTO: 1,
            WEIGHTS: 1,
        }
        # zoo search --remote prints what the local search prints (table and JSON)
        for args in (
            ["lenet"],
            ["--json", "lenet", "--source", "testdata"],
            ["--sort", "params", "--limit", "3"],
        ):
            local = _zoo(client_env, "search", *args)
            remote = _zoo(client_env, "search", "--remote", url, *args)
            assert remote.returncode == local.returncode == 0, remote.stderr
            assert remote.stdout == local.stdout and remote.stdout.strip()
            assert remote.stderr == local.stderr
        bad = _zoo(client_env, "search", "--remote", url, "--source", "nowhere")
        assert bad.returncode != 0 and "unknown source 'nowhere'" in bad.stderr
        code = (
            "import sys\nfrom zoo.cli import main\n"
            f"main(['search', '--remote', {url!r}, 'lenet'])\n"
            "heavy = {'torch', 'onnxruntime', 'tensorflow', 'starlette', 'uvicorn'} & set(sys.modules)\n"
            "assert not heavy, heavy"
        )
        light = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=client_env, timeout=60
        )
        assert light.returncode == 0, light.stderr
    log = (tmp_path / "serve.log").read_text()
    assert f'"GET {_url_path(WEIGHTS)} HTTP/1.1" 200 {len(lenet_bytes[WEIGHTS])}' in log
    assert '"GET /api/models?' in log and '"GET /api/health HTTP/1.1" 200' in log


@pytest.mark.slow
def test_zoo_serve_no_upstream_process(upstream: TestServer, tmp_path: Path) -> None:
    env = {**os.environ, **offline_env(tmp_path / "home"), "ZOO_MIRROR": upstream.url}
    before = len(upstream.requests())
    with zoo_serve(env, tmp_path / "serve.log", "--no-upstream") as url:
        assert requests.get(f"{url}/files/{LENET}/{PROTO}", timeout=30).status_code == 404
        assert requests.get(url + _url_path(PROTO), timeout=30).status_code == 404
        assert requests.get(f"{url}/api/health", timeout=30).json()["upstream"] is False
    assert len(upstream.requests()) == before
