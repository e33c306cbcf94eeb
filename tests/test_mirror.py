"""`zoo mirror push` (zoo/mirror.py, docs/mirror.md): a cache filled by pulling the real testdata
files (LeNet, MTCNN det1) from a loopback server is pushed into the mirror layout, to a folder served
by a plain static HTTP server and to moto's S3 server on 127.0.0.1; a second `zoo` process with a
fresh ZOO_HOME then pulls through each (the S3 one resuming a partial download with Range)."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from servers import TestServer, free_port, mirror_testdata_card, offline_env, registry_card

from zoo.errors import ChecksumError

ROOT = Path(__file__).resolve().parents[1]
LENET, DET1 = "testdata/lenet_mnist", "testdata/mtcnn_det1"
IDS = (LENET, DET1)
SUMMARY_TAIL = "skipped (already there with the same sha256)"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def expected_objects(*ids: str) -> dict[str, tuple[str, int]]:
    """``<host>/<path>`` -> (sha256, size) of every file of the cards, read from registry.json."""
    out = {}
    for model_id in ids:
        for f in registry_card(model_id)["files"]:
            u = urlsplit(f["urls"][0])
            assert f["checksum"]["algo"] == "sha256"
            out[u.netloc + u.path] = (f["checksum"]["value"], f["size"])
    return out


EXPECTED = expected_objects(*IDS)
CAFFEMODEL = next(k for k in EXPECTED if k.endswith("lenet_iter_10000.caffemodel"))


def aws_env(tmp: Path) -> dict[str, str]:
    """Fake credentials, and no user AWS config or instance metadata to fall back on."""
    return {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(tmp / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def zoo(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("ZOO_", "AWS_"))}
    return subprocess.run(
        [sys.executable, "-m", "zoo.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**base, **env},
        timeout=120,
    )


def files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() or p.is_symlink()}


@pytest.fixture(scope="module")
def cache_home(testdata: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ZOO_HOME holding LeNet and MTCNN det1, pulled and verified from a loopback server."""
    from zoo import api

    tmp = tmp_path_factory.mktemp("mirror-src")
    home = tmp / "zoo_home"
    with TestServer() as server, pytest.MonkeyPatch.context() as mp:
        for model_id in IDS:
            mirror_testdata_card(server, registry_card(model_id), testdata)
        for k, v in offline_env(home).items():
            mp.setenv(k, v)
        mp.delenv("ZOO_OFFLINE", raising=False)
        for model_id in IDS:
            api.pull(model_id, home=home, mirrors=[server.url], progress=False)
    return home


@dataclass
class Hit:
    method: str
    path: str
    range: str | None
    status: int = 0


class Moto:
    """moto's S3 server on 127.0.0.1 with every request recorded (method, path, Range, status)."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.hits: list[Hit] = []
        self.lock = threading.Lock()

    def __enter__(self) -> Moto:
        self.server.start()
        wsgi = self.server._server
        app = wsgi.app

        def recorder(environ: dict[str, Any], start_response: Any) -> Any:
            hit = Hit(environ["REQUEST_METHOD"], environ.get("PATH_INFO", ""), environ.get("HTTP_RANGE"))
            with self.lock:
                self.hits.append(hit)

            def respond(status: str, headers: Any, exc_info: Any = None) -> Any:
                hit.status = int(status.split()[0])
                return start_response(status, headers, exc_info)

            return app(environ, respond)

        wsgi.app = recorder  # werkzeug reads server.app on every request
        host, port = self.server.get_host_and_port()
        self.url = f"http://{host}:{port}"
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop()

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def public_bucket(self, name: str) -> Any:
        """A bucket anyone may read (what an HTTP front or a public mirror needs); its client."""
        s3 = self.client()
        s3.create_bucket(Bucket=name)
        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": "*",
                    "Action": "s3:GetObject",
                    "Resource": f"arn:aws:s3:::{name}/*",
                }
            ],
        }
        s3.put_bucket_policy(Bucket=name, Policy=json.dumps(policy))
        return s3

    def since(self, n: int) -> list[Hit]:
        with self.lock:
            return list(self.hits[n:])


@pytest.fixture(scope="module")
def moto_s3() -> Iterator[Moto]:
    pytest.importorskip("moto.server")
    log = logging.getLogger("werkzeug")
    level = log.level
    log.setLevel(logging.ERROR)  # moto's server logs every request otherwise
    try:
        with Moto() as m:
            yield m
    finally:
        log.setLevel(level)


class _QuietFolderHandler(SimpleHTTPRequestHandler):
    seen: list[str]

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        self.seen.append(self.path)


@pytest.fixture()
def static_server() -> Iterator[Any]:
    """``serve(folder)`` -> (base URL, request paths): http.server's plain static file server."""
    servers: list[ThreadingHTTPServer] = []

    def serve(folder: Path) -> tuple[str, list[str]]:
        seen: list[str] = []
        handler = type("H", (_QuietFolderHandler,), {"seen": seen})
        srv = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(folder)))
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}", seen

    yield serve
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def printed_hashes(stdout: str) -> dict[str, str]:
    """File name -> sha256 of every path `zoo pull` printed."""
    return {Path(p).name: _sha(Path(p).read_bytes()) for p in stdout.split()}


# ---------------------------------------------------------------------------------------------
# a folder behind a static HTTP server


@pytest.mark.slow
def test_folder_push_serves_zoo_mirror_from_a_static_server(
    cache_home: Path, tmp_path: Path, static_server: Any
) -> None:
    dest = tmp_path / "mirror"
    env = offline_env(cache_home)
    r = zoo(env, "mirror", "push", str(dest))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert sorted(ln.split()[1] for ln in lines[:-1]) == sorted(EXPECTED)
    assert lines[-1] == f"{dest}: 4 uploaded (1.8 MB), 0 {SUMMARY_TAIL}"
    assert files_under(dest) == set(EXPECTED)  # exactly the mirror keys: no temporaries, no sidecars
    for key, (sha, size) in EXPECTED.items():
        data = (dest / key).read_bytes()
        assert (len(data), _sha(data)) == (size, sha)
        assert (dest / key).stat().st_mode & 0o777 == 0o644

    # a second push writes nothing
    mtimes = {k: (dest / k).stat().st_mtime_ns for k in EXPECTED}
    r = zoo(env, "mirror", "push", str(dest))
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [f"{dest}: 0 uploaded (0 B), 4 {SUMMARY_TAIL}"]
    assert {k: (dest / k).stat().st_mtime_ns for k in EXPECTED} == mtimes

    # a file changed in place (same size) is hashed, found different, and replaced
    bad = dest / CAFFEMODEL
    data = bytearray(bad.read_bytes())
    data[1000] ^= 0xFF
    bad.write_bytes(bytes(data))
    r = zoo(env, "mirror", "push", str(dest), "--model", LENET)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        f"uploaded {CAFFEMODEL} (1.7 MB)",
        f"{dest}: 1 uploaded (1.7 MB), 1 {SUMMARY_TAIL}",
    ]
    assert _sha(bad.read_bytes()) == EXPECTED[CAFFEMODEL][0]
    assert files_under(dest) == set(EXPECTED)

    # another zoo, fresh cache, origins unreachable: everything comes through the static server
    url, seen = static_server(dest)
    fresh = tmp_path / "fresh_home"
    r = zoo({**offline_env(fresh), "ZOO_MIRROR": url}, "pull", LENET, DET1)
    assert r.returncode == 0, r.stderr
    assert printed_hashes(r.stdout) == {k.rsplit("/", 1)[1]: sha for k, (sha, _) in EXPECTED.items()}
    assert sorted(seen) == sorted(f"/{k}" for k in EXPECTED)
    ref = json.loads((fresh / "refs" / LENET / "lenet_iter_10000.caffemodel.json").read_text())
    assert ref["url"] == f"{url}/{CAFFEMODEL}"


# ---------------------------------------------------------------------------------------------
# an S3 bucket (moto) behind its own HTTP endpoint


@pytest.mark.slow
def test_s3_push_keeps_sha256_metadata_and_pull_resumes_through_the_endpoint(
    cache_home: Path, moto_s3: Moto, tmp_path: Path
) -> None:
    from zoo.cards import FileRef
    from zoo.fetch import identity_key

    bucket = "team-zoo"
    s3 = moto_s3.public_bucket(bucket)
    env = {**offline_env(cache_home), **aws_env(tmp_path)}
    push = ("mirror", "push", f"s3://{bucket}", "--endpoint-url", moto_s3.url)
    r = zoo(env, *push, "--multipart-threshold", "1M")  # the 1.7 MB caffemodel goes up in parts
    assert r.returncode == 0, r.stderr
    assert (
        r.stdout.splitlines()[-1] == f"s3://{bucket} at {moto_s3.url}: 4 uploaded (1.8 MB), 0 {SUMMARY_TAIL}"
    )

    listed = s3.list_objects_v2(Bucket=bucket)["Contents"]
    assert {o["Key"] for o in listed} == set(EXPECTED)
    for key, (sha, size) in EXPECTED.items():
        head = s3.head_object(Bucket=bucket, Key=key)
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        assert head["Metadata"]["sha256"] == sha == _sha(body)
        assert head["ContentLength"] == size == len(body)
        assert head["ContentType"] == "application/octet-stream"
    etag = s3.head_object(Bucket=bucket, Key=CAFFEMODEL)["ETag"].strip('"')
    body = s3.get_object(Bucket=bucket, Key=CAFFEMODEL)["Body"].read()
    assert etag.endswith("-1") and etag != hashlib.md5(body).hexdigest()  # multipart: not a content hash

    # a second push: HEADs only, nothing uploaded
    n = len(moto_s3.hits)
    r = zoo(env, *push)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [f"s3://{bucket} at {moto_s3.url}: 0 uploaded (0 B), 4 {SUMMARY_TAIL}"]
    assert {h.method for h in moto_s3.since(n)} == {"HEAD"}

    # a fresh cache with the first 700001 bytes of the caffemodel as an interrupted download
    fresh = tmp_path / "fresh_home"
    card_file = next(f for f in registry_card(LENET)["files"] if f["name"] == "lenet_iter_10000.caffemodel")
    part = fresh / "partial" / f"{identity_key(FileRef.from_dict(card_file))}.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(body[:700_001])
    n = len(moto_s3.hits)
    mirror = f"{moto_s3.url}/{bucket}"
    r = zoo({**offline_env(fresh), "ZOO_MIRROR": mirror}, "pull", LENET)
    assert r.returncode == 0, r.stderr
    assert printed_hashes(r.stdout) == {
        k.rsplit("/", 1)[1]: sha for k, (sha, _) in expected_objects(LENET).items()
    }
    gets = [
        (h.range, h.status)
        for h in moto_s3.since(n)
        if h.method == "GET" and h.path == f"/{bucket}/{CAFFEMODEL}"
    ]
    assert gets == [("bytes=700001-", 206)]
    assert not part.exists()
    ref = json.loads((fresh / "refs" / LENET / "lenet_iter_10000.caffemodel.json").read_text())
    assert (ref["url"], ref["sha256"]) == (f"{mirror}/{CAFFEMODEL}", EXPECTED[CAFFEMODEL][0])


def test_s3_prefix_and_model_filter_in_process(
    cache_home: Path, moto_s3: Moto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from zoo import api, mirror

    for k, v in aws_env(tmp_path).items():
        monkeypatch.setenv(k, v)
    s3 = moto_s3.public_bucket("prefixed")
    want = expected_objects(DET1)
    res = mirror.push("s3://prefixed/team/zoo/", models=[DET1], endpoint_url=moto_s3.url, home=cache_home)
    assert res.dest == f"s3://prefixed/team/zoo at {moto_s3.url}"
    assert sorted(i.key for i in res.uploaded) == sorted(want) and res.skipped == [] and res.notes == []
    assert res.bytes_uploaded == sum(size for _, size in want.values())
    assert {o["Key"] for o in s3.list_objects_v2(Bucket="prefixed")["Contents"]} == {
        f"team/zoo/{k}" for k in want
    }
    again = mirror.push("s3://prefixed/team/zoo", models=[DET1], endpoint_url=moto_s3.url, home=cache_home)
    assert (again.uploaded, sorted(i.key for i in again.skipped)) == ([], sorted(want))

    fresh = tmp_path / "fresh_home"
    paths = api.pull(
        DET1, home=fresh, mirrors=[f"{moto_s3.url}/prefixed/team/zoo"], progress=False, retries=0
    )
    assert sorted(_sha(p.read_bytes()) for p in paths) == sorted(sha for sha, _ in want.values())


# ---------------------------------------------------------------------------------------------
# damaged blobs and bad input


@pytest.fixture()
def damaged_home(cache_home: Path, tmp_path: Path) -> Path:
    """A copy of the cache whose det1.caffemodel blob has one byte flipped (same size)."""
    home = tmp_path / "damaged_home"
    shutil.copytree(cache_home, home, symlinks=True)
    sha = next(sha for k, (sha, _) in EXPECTED.items() if k.endswith("det1.caffemodel"))
    blob = home / "blobs" / "sha256" / sha
    blob.chmod(0o644)
    data = bytearray(blob.read_bytes())
    data[100] ^= 0xFF
    blob.write_bytes(bytes(data))
    return home


def test_a_damaged_blob_is_never_published(
    damaged_home: Path, moto_s3: Moto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from zoo import mirror

    key = next(k for k in EXPECTED if k.endswith("det1.caffemodel"))
    dest = tmp_path / "mirror"
    with pytest.raises(
        ChecksumError,
        match=r"^testdata/mtcnn_det1/det1.caffemodel: the cached blob .* has sha256 .*; not pushed",
    ):
        mirror.push(dest, home=damaged_home)
    assert key not in files_under(dest)
    assert files_under(dest) <= set(EXPECTED)  # whatever was written before is whole; no temporaries

    for k, v in aws_env(tmp_path).items():
        monkeypatch.setenv(k, v)
    s3 = moto_s3.public_bucket("damaged")
    with pytest.raises(ChecksumError, match="not pushed"):
        mirror.push("s3://damaged", endpoint_url=moto_s3.url, home=damaged_home)
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="damaged").get("Contents", [])}
    assert key not in keys and keys <= set(EXPECTED)


def _main_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Run the CLI in-process; its exit code and its one stderr line."""
    from zoo.cli import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1, err
    return int(exc.value.code or 0), err[0]


@pytest.mark.parametrize(
    ("dest", "extra", "message"),
    [
        ("ftp://host/mirror", [], "zoo: error: ftp://host/mirror: unknown scheme ftp:// (expected a folder"),
        ("s3://", [], "zoo: error: s3://: no bucket name (expected s3://bucket[/prefix])"),
        ("s3:///prefix", [], "zoo: error: s3:///prefix: no bucket name"),
        ("FOLDER", ["--endpoint-url", "http://127.0.0.1:9"], "zoo: error: --endpoint-url is for s3://"),
        ("FILE", [], "zoo: error: FILE is not a folder"),
    ],
)
def test_bad_destination_is_one_line(
    dest: str,
    extra: list[str],
    message: str,
    cache_home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("ZOO_HOME", str(cache_home))
    (tmp_path / "a-file").write_text("x")
    subs = {"FOLDER": str(tmp_path / "out"), "FILE": str(tmp_path / "a-file")}
    code, line = _main_error(["mirror", "push", subs.get(dest, dest), *extra], capsys)
    assert code == 1
    assert line.startswith(functools.reduce(lambda s, kv: s.replace(*kv), subs.items(), message))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]  # nothing written anywhere


def test_unknown_or_uncached_model(
    cache_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ZOO_HOME", str(cache_home))
    dest = tmp_path / "out"
    code, line = _main_error(["mirror", "push", str(dest), "--model", "testdata/no_such_model"], capsys)
    assert code == 2 and line.startswith("zoo: error: unknown model 'testdata/no_such_model'")
    code, line = _main_error(
        ["mirror", "push", str(dest), "--model", LENET, "--model", "testdata/vww_96"], capsys
    )
    assert (code, line) == (
        1,
        "zoo: error: nothing of testdata/vww_96 is cached: run 'zoo pull testdata/vww_96' first",
    )
    assert not dest.exists()


def test_s3_without_credentials_a_bucket_or_an_endpoint(
    cache_home: Path,
    moto_s3: Moto,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("ZOO_HOME", str(cache_home))
    env = aws_env(tmp_path)
    for k, v in env.items():
        if k.startswith("AWS_ACCESS") or k.startswith("AWS_SECRET"):
            monkeypatch.delenv(k, raising=False)
        else:
            monkeypatch.setenv(k, v)
    for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(k, raising=False)
    code, line = _main_error(["mirror", "push", "s3://team-zoo", "--endpoint-url", moto_s3.url], capsys)
    assert (code, line) == (
        1,
        "zoo: error: no S3 credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
        "or AWS_PROFILE (a profile in ~/.aws/credentials)",
    )

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    code, line = _main_error(["mirror", "push", "s3://no-such-bucket", "--endpoint-url", moto_s3.url], capsys)
    assert (code, line) == (
        1,
        f"zoo: error: s3://no-such-bucket: no bucket named 'no-such-bucket' at {moto_s3.url}",
    )

    down = f"http://127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    code, line = _main_error(["mirror", "push", "s3://team-zoo", "--endpoint-url", down], capsys)
    assert time.monotonic() - t0 < 20
    assert (code, line) == (
        1,
        f"zoo: error: s3://team-zoo: cannot connect to the S3 endpoint {down}/team-zoo",
    )
    assert [o for o in moto_s3.client().list_buckets()["Buckets"] if o["Name"] == "no-such-bucket"] == []


BLOCKER = r"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("boto3", "botocore", "s3transfer"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, Block())
from zoo.cli import main
main(sys.argv[1:])
"""


@pytest.mark.slow
def test_light_install_pushes_folders_and_names_the_s3_extra(cache_home: Path, tmp_path: Path) -> None:
    """Without boto3 a folder push works and an s3:// push says which extra is missing."""
    env = {**offline_env(cache_home), **aws_env(tmp_path)}
    base = {k: v for k, v in os.environ.items() if not k.startswith(("ZOO_", "AWS_"))}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", BLOCKER, *args],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env={**base, **env},
            timeout=120,
        )

    dest = tmp_path / "mirror"
    r = run("mirror", "push", str(dest))
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1] == f"{dest}: 4 uploaded (1.8 MB), 0 {SUMMARY_TAIL}"
    assert files_under(dest) == set(EXPECTED)
    r = run("mirror", "push", "s3://team-zoo", "--endpoint-url", "http://127.0.0.1:9")
    assert r.returncode == 10
    assert r.stderr.splitlines() == [
        "zoo: error: zoo mirror push to an s3:// bucket needs the s3 extra: pip install 'zoo[s3]'"
    ]
