"""Real HTTP servers on 127.0.0.1 for the fetch tests: files with switchable faults, and a small
Hugging Face compatible ``resolve`` endpoint (what huggingface_hub's ``hf_hub_download`` asks for).

Everything a test wants to assert on is counted: the body bytes actually written per path, and
every request seen (method, path, Range header, status, bytes sent).
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

HTML_PAGE = b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body>Please sign in</body></html>\n"


@dataclass
class Fault:
    """What to do wrong when serving one path (every field off by default)."""

    drop_after: int | None = None  # close the connection after this many body bytes
    flip_byte: int | None = None  # XOR 0xFF this byte offset of the file
    times: int | None = None  # drop/flip only on this many GETs (None: always)
    length_delta: int = 0  # announce Content-Length + delta
    statuses: list[int] = field(default_factory=list)  # answer these first, one per request
    retry_after: str | None = None  # Retry-After header sent with those statuses
    no_range: bool = False  # ignore Range: always 200 with the whole file
    html: bool = False  # serve an HTML sign-in page (text/html) instead of the file
    html_as_binary: bool = False  # the HTML page, but labelled application/octet-stream
    rate: float | None = None  # throttle to this many bytes per second


@dataclass
class Seen:
    """One request as the server saw it."""

    method: str
    path: str
    range: str | None
    status: int = 0
    sent: int = 0


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
        pass

    def do_HEAD(self) -> None:  # noqa: N802
        self._serve(head=True)

    def do_GET(self) -> None:  # noqa: N802
        self._serve(head=False)

    # -- plumbing --------------------------------------------------------------------------

    def _send_body(self, seen: Seen, body: bytes, fault: Fault | None, drop: int | None) -> None:
        chunk = 16 * 1024
        limit = len(body) if drop is None else min(drop, len(body))
        pos = 0
        try:
            while pos < limit:
                piece = body[pos : min(pos + chunk, limit)]
                self.wfile.write(piece)
                pos += len(piece)
                seen.sent += len(piece)
                with self.server.lock:
                    self.server.bytes_served[seen.path] += len(piece)
                if fault is not None and fault.rate:
                    time.sleep(len(piece) / fault.rate)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
            return
        if drop is not None:
            self.close_connection = True

    def _simple(
        self,
        seen: Seen,
        status: int,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        head: bool = False,
    ) -> None:
        seen.status = status
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head and body:  # error pages and HTML are not counted in bytes_served
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

    def _serve(self, head: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        seen = Seen(self.command, path, self.headers.get("Range"))
        with self.server.lock:
            self.server.requests.append(seen)
        m = re.fullmatch(r"/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)", path)
        if m and m.group("repo") in self.server.hf_repos:
            self._serve_hf(seen, m.group("repo"), m.group("rev"), m.group("file"), head)
        else:
            self._serve_file(seen, path, head)

    def _serve_file(self, seen: Seen, path: str, head: bool) -> None:
        srv = self.server
        with srv.lock:
            data = srv.files.get(path)
            fault = srv.faults.get(path)
            status_now = fault.statuses.pop(0) if fault and fault.statuses else None
            active = fault is not None and (fault.times is None or fault.times > 0)
            if (
                active
                and fault is not None
                and fault.times is not None
                and not head
                and status_now is None
                and data is not None
                and (fault.drop_after is not None or fault.flip_byte is not None)
            ):
                fault.times -= 1
        if data is None:
            return self._simple(seen, 404, b"not found\n", {"Content-Type": "text/plain"}, head)
        if status_now is not None:
            hdr = {"Content-Type": "text/plain"}
            if fault is not None and fault.retry_after is not None:
                hdr["Retry-After"] = fault.retry_after
            return self._simple(seen, status_now, b"try later\n", hdr, head)
        if fault is not None and (fault.html or fault.html_as_binary):
            ctype = "text/html; charset=utf-8" if fault.html else "application/octet-stream"
            return self._simple(seen, 200, HTML_PAGE, {"Content-Type": ctype}, head)
        body = data
        if active and fault is not None and fault.flip_byte is not None:
            b = bytearray(body)
            b[fault.flip_byte] ^= 0xFF
            body = bytes(b)
        self._send_range(
            seen,
            body,
            fault if fault is not None else None,
            active,
            head,
            {"Content-Type": "application/octet-stream"},
        )

    def _send_range(
        self, seen: Seen, body: bytes, fault: Fault | None, active: bool, head: bool, headers: dict[str, str]
    ) -> None:
        total = len(body)
        start, end = 0, total - 1
        status = 200
        rng = self.headers.get("Range")
        if rng and not (fault is not None and fault.no_range):
            m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng.strip())
            if m:
                start = int(m.group(1))
                end = min(int(m.group(2)), total - 1) if m.group(2) else total - 1
                if start >= total:
                    return self._simple(seen, 416, b"", {"Content-Range": f"bytes */{total}"}, head)
                status = 206
        part = body[start : end + 1]
        seen.status = status
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Accept-Ranges", "none" if fault is not None and fault.no_range else "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{total}")
        delta = fault.length_delta if fault is not None else 0
        self.send_header("Content-Length", str(len(part) + delta))
        self.end_headers()
        if head:
            return
        drop = None
        if fault is not None and active and fault.drop_after is not None:
            drop = fault.drop_after
        self._send_body(seen, part, fault, drop)
        if delta:
            self.close_connection = True

    # -- a Hugging Face hub 'resolve' endpoint ---------------------------------------------

    def _serve_hf(self, seen: Seen, repo: str, rev: str, filename: str, head: bool) -> None:
        srv = self.server
        with srv.lock:
            files = srv.hf_repos[repo]
            commit = srv.hf_commit(repo)
            data = files.get(filename)
            corrupt = srv.hf_corrupt.get((repo, filename), False)
        if rev not in ("main", commit):
            return self._simple(seen, 404, b"", {"X-Error-Code": "RevisionNotFound"}, head)
        if data is None:
            return self._simple(
                seen, 404, b"", {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit}, head
            )
        sha = hashlib.sha256(data).hexdigest()
        body = data
        if corrupt and not head:
            b = bytearray(data)
            b[len(b) // 2] ^= 0xFF
            body = bytes(b)
        headers = {
            "Content-Type": "application/octet-stream",
            "X-Repo-Commit": commit,
            "ETag": f'"{sha}"',
            "X-Linked-Etag": f'"{sha}"',
            "X-Linked-Size": str(len(data)),
        }
        self._send_range(seen, body, None, False, head, headers)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.files: dict[str, bytes] = {}
        self.faults: dict[str, Fault] = {}
        self.bytes_served: Counter[str] = Counter()
        self.requests: list[Seen] = []
        self.hf_repos: dict[str, dict[str, bytes]] = {}
        self.hf_corrupt: dict[tuple[str, str], bool] = {}

    def handle_error(self, request: object, client_address: object) -> None:
        """Clients that hang up mid-body (killed pulls, timeouts) are expected: stay quiet."""
        import sys

        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)

    def hf_commit(self, repo: str) -> str:
        """A commit id that changes whenever the repo's files change (40 hex, like git)."""
        h = hashlib.sha1(repo.encode())
        for name, data in sorted(self.hf_repos[repo].items()):
            h.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
        return h.hexdigest()


class TestServer:
    """A threaded HTTP server on 127.0.0.1 serving ``files`` (path -> bytes) with ``faults``, and
    Hugging Face repos under ``/<org>/<name>/resolve/<revision>/<file>``.

    Use as a context manager; ``url`` is its base URL.
    """

    __test__ = False  # not a pytest test class

    def __init__(self, files: dict[str, bytes] | None = None) -> None:
        self._srv = _Server()
        self._srv.files.update(files or {})
        self._thread = threading.Thread(
            target=self._srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> TestServer:
        self._thread.start()
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
    def faults(self) -> dict[str, Fault]:
        return self._srv.faults

    def set_hf_file(self, repo_id: str, filename: str, data: bytes) -> None:
        """Add or change a file in a hub repo (a new commit id follows)."""
        with self._srv.lock:
            self._srv.hf_repos.setdefault(repo_id, {})[filename] = data

    def corrupt_hf(self, repo_id: str, filename: str, on: bool = True) -> None:
        """Serve flipped bytes for this hub file while announcing the right ETag."""
        with self._srv.lock:
            self._srv.hf_corrupt[(repo_id, filename)] = on

    def served(self, path: str) -> int:
        """Body bytes written for ``path`` so far."""
        with self._srv.lock:
            return self._srv.bytes_served[path]

    def requests(self, path: str | None = None, method: str | None = None) -> list[Seen]:
        with self._srv.lock:
            return [
                r
                for r in self._srv.requests
                if (path is None or r.path == path) and (method is None or r.method == method)
            ]


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def registry_card(model_id: str) -> dict:
    """The bundled registry.json entry ``model_id`` as a plain dict."""
    import json
    from pathlib import Path

    reg = json.loads((Path(__file__).resolve().parents[1] / "registry.json").read_text())
    return next(m for m in reg["models"] if m["id"] == model_id)


def mirror_testdata_card(server: TestServer, card: dict, testdata: object) -> None:
    """Serve every file of a testdata registry card at ``/<host>/<path>`` (the mirror layout),
    with the real bytes from ../shared/testdata found by their sha256 in SHA256SUMS."""
    from pathlib import Path

    root = Path(str(testdata))
    lines = (root / "SHA256SUMS").read_text().splitlines()
    by_hash = dict(ln.split(maxsplit=1) for ln in lines if ln.strip())
    for f in card["files"]:
        u = urlsplit(f["urls"][0])
        server.files[f"/{u.netloc}{u.path}"] = (root / by_hash[f["checksum"]["value"]].strip()).read_bytes()


def offline_env(home: object) -> dict[str, str]:
    """Environment for CLI subprocesses: private ZOO_HOME, fast retries, and origins routed to a dead
    local proxy so no test traffic ever leaves the machine (loopback mirrors still answer)."""
    return {
        "ZOO_HOME": str(home),
        "ZOO_RETRIES": "1",
        "ZOO_BACKOFF": "0.01",
        "HTTPS_PROXY": f"http://127.0.0.1:{free_port()}",
        "NO_PROXY": "127.0.0.1",
    }
