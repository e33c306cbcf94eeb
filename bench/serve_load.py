"""Benchmark: `zoo serve` under load. N concurrent clients for T seconds mix search requests
(/api/models?q=...), card requests (/api/models/<id>) and ranged file requests (/files/<id>/<file>
with a random Range) against one server on 127.0.0.1; every ranged body is checked against the
same bytes of the real file. Prints errors, p50 / p99 latency per kind and throughput.

The server's cache is filled first by pulling the real LeNet files (../shared/testdata) through a
loopback upstream, so the file requests are cache hits.

Run:  .venv/bin/python bench/serve_load.py [--clients 50] [--seconds 60]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

QUERIES = ["resnet", "vgg16", "mobilenet v2", "caffe", "lenet", "inception", "efficientnet", "densenet"]
CARDS = ["keras/vgg16", "torchvision/resnet50.imagenet1k_v2", "caffe/bvlc_alexnet", "testdata/lenet_mnist"]
MODEL = "testdata/lenet_mnist"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--testdata", default=str(ROOT.parent / "shared" / "testdata"))
    args = ap.parse_args()

    import requests
    from servers import TestServer, mirror_testdata_card, offline_env, registry_card

    tmp = Path(tempfile.mkdtemp(prefix="zoo-serve-load-"))
    home = tmp / "server_home"
    card = registry_card(MODEL)
    with TestServer() as upstream:
        mirror_testdata_card(upstream, card, args.testdata)
        env = {**os.environ, **offline_env(home), "ZOO_MIRROR": upstream.url}
        env["HTTP_PROXY"] = env["HTTPS_PROXY"]
        subprocess.run(
            [sys.executable, "-m", "zoo.cli", "pull", MODEL], env=env, check=True, capture_output=True
        )
        files = {}  # file name -> the real bytes (what every ranged body is checked against)
        for f in card["files"]:
            u = urlsplit(f["urls"][0])
            files[f["name"]] = upstream.files[f"/{u.netloc}{u.path}"]
    server = subprocess.Popen(
        [sys.executable, "-m", "zoo.cli", "serve", "--port", "0", "--no-upstream", "--quiet"],
        env={**env, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    url = server.stdout.readline().strip()
    for _ in range(300):
        try:
            if requests.get(url + "/api/health", timeout=2).ok:
                break
        except requests.ConnectionError:
            time.sleep(0.1)

    lat: dict[str, list[float]] = {"search": [], "card": [], "range": []}
    errors: list[str] = []
    served = [0]
    lock = threading.Lock()
    stop = time.perf_counter() + args.seconds

    def client(i: int) -> None:
        rng = random.Random(i)
        s = requests.Session()
        s.trust_env = False
        while time.perf_counter() < stop:
            kind = rng.choice(["search", "card", "range", "range"])
            t = time.perf_counter()
            try:
                if kind == "search":
                    r = s.get(url + "/api/models", params={"q": rng.choice(QUERIES)}, timeout=30)
                    ok = r.status_code == 200 and isinstance(r.json(), list)
                    n = len(r.content)
                elif kind == "card":
                    cid = rng.choice(CARDS)
                    r = s.get(url + f"/api/models/{cid}", timeout=30)
                    ok = r.status_code == 200 and r.json()["id"] == cid
                    n = len(r.content)
                else:
                    name = rng.choice(list(files))
                    body = files[name]
                    a = rng.randrange(len(body))
                    b = min(len(body) - 1, a + rng.randrange(1, 256 * 1024))
                    r = s.get(url + f"/files/{MODEL}/{name}", headers={"Range": f"bytes={a}-{b}"}, timeout=30)
                    want = hashlib.sha256(body[a : b + 1]).hexdigest()
                    ok = r.status_code == 206 and hashlib.sha256(r.content).hexdigest() == want
                    n = len(r.content)
            except Exception as e:  # noqa: BLE001 - every failure is counted
                ok, n = False, 0
                r = e  # type: ignore[assignment]
            dt = time.perf_counter() - t
            with lock:
                if ok:
                    lat[kind].append(dt)
                    served[0] += n
                else:
                    errors.append(f"{kind}: {getattr(r, 'status_code', r)}")

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t0
    server.terminate()
    server.wait(timeout=10)
    total = sum(len(v) for v in lat.values())
    print(
        f"clients {args.clients}, {wall:.1f} s, {total} requests ok, {len(errors)} errors, "
        f"{total / wall:.1f} req/s, {served[0] / wall / 1e6:.1f} MB/s"
    )
    for kind, v in lat.items():
        if v:
            v.sort()
            p99 = v[min(len(v) - 1, int(0.99 * len(v)))]
            p50 = statistics.median(v)
            print(f"  {kind:7s} n={len(v):6d}  p50 {p50 * 1000:7.1f} ms  p99 {p99 * 1000:7.1f} ms")
    if errors:
        print("  first errors:", errors[:5])


if __name__ == "__main__":
    main()
