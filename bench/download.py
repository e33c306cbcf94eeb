"""Download throughput: `zoo pull` (checksum verified, into the cache) against `curl -s -o FILE URL`.

Usage: .venv/bin/python bench/download.py [--workdir /tmp/zoo-bench-download] [--size-mib 1024] [--runs 5]

The script writes a file of random bytes (once; reused while its size matches), serves it from disk on
127.0.0.1 with a threaded HTTP server (``socket.sendfile``, Range supported), writes a one-model
registry whose single file points at that URL with its size and sha256 (``ZOO_REGISTRY``), then
times, alternately, ``curl -s -o FILE URL`` and ``zoo pull bench/download`` into an empty
``ZOO_HOME``: whole processes from start to exit (interpreter start-up included for zoo). Every run's
output is checked (size for curl, sha256 for zoo). It prints each run, the medians, and
median(curl) / median(zoo): zoo's throughput as a fraction of curl's.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _FileServer

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
        pass

    def do_HEAD(self) -> None:  # noqa: N802
        self._serve(head=True)

    def do_GET(self) -> None:  # noqa: N802
        self._serve(head=False)

    def _serve(self, head: bool) -> None:
        path = self.server.files.get(self.path.split("?", 1)[0])
        if path is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        total = path.stat().st_size
        start, end, status = 0, total - 1, 200
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", (self.headers.get("Range") or "").strip())
        if m:
            start = int(m.group(1))
            end = min(int(m.group(2)), total - 1) if m.group(2) else total - 1
            if start >= total:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{total}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{total}")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        if head:
            return
        self.wfile.flush()
        try:
            with open(path, "rb") as f:
                self.connection.sendfile(f, start, end - start + 1)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


class _FileServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, files: dict[str, Path]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files = files

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


def _make_file(path: Path, size: int) -> str:
    """Random bytes of ``size`` (reused while the size matches); returns their sha256."""
    side = path.with_suffix(path.suffix + ".sha256")
    if path.is_file() and path.stat().st_size == size and side.is_file():
        return side.read_text().strip()
    h = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            b = os.urandom(min(left, 1 << 24))
            f.write(b)
            h.update(b)
            left -= len(b)
    side.write_text(h.hexdigest() + "\n")
    return h.hexdigest()


def _registry(path: Path, url: str, size: int, sha: str) -> None:
    card = {
        "id": "bench/download",
        "name": "download benchmark file",
        "source": "testdata",
        "framework": "onnx",
        "format": "onnx",
        "origin": "native",
        "task": "image-classification",
        "provenance": {"publisher": "bench/download.py (random bytes)"},
        "files": [
            {
                "name": "big.bin",
                "role": "weights",
                "urls": [url],
                "size": size,
                "checksum": {"algo": "sha256", "value": sha, "source": "bench/download.py"},
            }
        ],
        "architecture": {},
        "preprocess": {"unknown": True},
        "metrics": [],
        "tags": ["bench"],
    }
    path.write_text(json.dumps({"schema_version": 1, "models": [card]}, indent=1) + "\n")


def _zoo_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("zoo")
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "zoo.cli"]


def _timed(cmd: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    return time.perf_counter() - t0, r


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/zoo-bench-download"))
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--serve", action="store_true", help="Only serve the file (Ctrl-C to stop).")
    args = ap.parse_args(argv)
    if shutil.which("curl") is None:
        print("curl is not installed (apt-get install curl)", file=sys.stderr)
        return 2
    wd: Path = args.workdir
    wd.mkdir(parents=True, exist_ok=True)
    size = args.size_mib << 20
    src = wd / "served" / "big.bin"
    src.parent.mkdir(exist_ok=True)
    sha = _make_file(src, size)
    srv = _FileServer({"/big.bin": src})
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    url = srv.url + "/big.bin"
    if args.serve:
        print(url, sha, flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            return 0
    reg = wd / "registry.json"
    _registry(reg, url, size, sha)
    home, out = wd / "home", wd / "curl.out"
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("ZOO_") and "proxy" not in k.lower()}
    zoo_env = {**base_env, "ZOO_REGISTRY": str(reg), "ZOO_HOME": str(home)}
    curl_cmd = ["curl", "-s", "-o", str(out), url]
    zoo_cmd = [*_zoo_cmd(), "pull", "bench/download"]
    print(f"file: {size / 2**20:.0f} MiB from {url} (sha256 {sha[:12]})")
    print(f"A: {' '.join(curl_cmd)}")
    print(f"B: ZOO_REGISTRY={reg} ZOO_HOME={home} {' '.join(zoo_cmd)}")
    times: dict[str, list[float]] = {"curl": [], "zoo": []}
    for i in range(args.runs + 1):  # run 0 is a warm-up (page cache, imports), not counted
        order = ("curl", "zoo") if i % 2 == 0 else ("zoo", "curl")
        for which in order:
            out.unlink(missing_ok=True)
            shutil.rmtree(home, ignore_errors=True)
            subprocess.run(["sync"], check=False)
            if which == "curl":
                dt, r = _timed(curl_cmd, base_env)
                ok = r.returncode == 0 and out.stat().st_size == size
            else:
                dt, r = _timed(zoo_cmd, zoo_env)
                ok = r.returncode == 0 and Path(r.stdout.strip()).stat().st_size == size
                if ok and i == 0:
                    ok = hashlib.sha256(Path(r.stdout.strip()).read_bytes()).hexdigest() == sha
            if not ok:
                print(f"{which} failed (exit {r.returncode}): {r.stderr.strip()}", file=sys.stderr)
                return 1
            if i:
                times[which].append(dt)
            print(
                f"run {i}{' (warm-up)' if not i else ''}: {which:4} {dt:6.3f} s  {size / dt / 1e6:7.1f} MB/s"
            )
    out.unlink(missing_ok=True)
    shutil.rmtree(home, ignore_errors=True)
    mc, mz = statistics.median(times["curl"]), statistics.median(times["zoo"])
    print(
        f"median curl {mc:.3f} s ({size / mc / 1e6:.0f} MB/s), min {min(times['curl']):.3f}, "
        f"max {max(times['curl']):.3f}"
    )
    print(
        f"median zoo  {mz:.3f} s ({size / mz / 1e6:.0f} MB/s), min {min(times['zoo']):.3f}, "
        f"max {max(times['zoo']):.3f}"
    )
    print(f"zoo throughput / curl throughput = {mc / mz:.2f}x (target >= 0.8)")
    srv.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
