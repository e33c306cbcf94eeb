"""Download-fault figures: the scenarios of tests/test_reliability.py with larger counts.

Usage: .venv/bin/python bench/reliability.py [--drops 200] [--drop-runs 10] [--kills 50] [--seed 0]

Everything runs on 127.0.0.1: the fault-injecting server of tests/test_reliability.py, a generated
one-entry registry (``ZOO_REGISTRY``) and a private ``ZOO_HOME`` per scenario, pulls through
``zoo.api.pull`` (kills: the ``zoo pull`` command). Prints, per scenario, what was injected, what
zoo did (requests, resumes, restarts from zero, retries, bytes over the wire) and the time, and
checks every pull's sha256 and the cache's consistency (tests/test_reliability.py::check_cache).
Exit status 1 if any check fails.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from email.utils import formatdate
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]

import test_reliability as tr  # noqa: E402


def world(tmp: Path, server: tr.FaultServer) -> tr.World:
    tmp.mkdir(parents=True)
    env = {
        "ZOO_HOME": str(tmp / "home"),
        "ZOO_REGISTRY": str(tmp / "registry.json"),
        "ZOO_RETRIES": "3",
        "ZOO_BACKOFF": "0.01",
        "ZOO_MAX_RETRY_AFTER": "60",
    }
    os.environ.update(env)
    os.environ.pop("ZOO_MIRROR", None)
    os.environ.pop("ZOO_OFFLINE", None)
    return tr.World(tmp, server, env)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--drops", type=int, default=200, help="drops in the one large-drop run")
    ap.add_argument("--drop-runs", type=int, default=10, help="runs of 20 random drops each")
    ap.add_argument("--kills", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="zoo-reliability-"))
    n = 0

    def fresh(server: tr.FaultServer) -> tr.World:
        nonlocal n
        n += 1
        return world(base / f"w{n}", server)

    with tr.FaultServer() as server:
        # 1. dropped connections: runs of 20 random drops, then one run of --drops
        size = 8_000_000
        for runs, k in ((a.drop_runs, 20), (1, a.drops)):
            t0 = time.perf_counter()
            gets = sent = 0
            for r in range(runs):
                rng = random.Random(a.seed * 1000 + k * 100 + r)
                data = rng.randbytes(size)
                w = fresh(server)
                drops = tr.drop_offsets(size, k, seed=rng.randrange(1 << 30))
                path = w.add(f"bench/drops{k}-{r}", data, tr.Faults(drops=list(drops), chunk=256 * 1024))
                assert tr.sha256(w.pull(f"bench/drops{k}-{r}").read_bytes()) == tr.sha256(data)
                g = server.gets(path)
                assert [x.range for x in g[1:]] == [f"bytes={d}-" for d in drops]
                gets += len(g)
                sent += sum(x.sent for x in g)
                tr.check_cache(w.home)
            dt = time.perf_counter() - t0
            print(
                f"drops: {runs} run(s) x {k} drops of an {size / 1e6:.0f} MB file: {runs * k} drops, "
                f"{gets - runs} resumes (Range at the exact offset), {gets} GETs, "
                f"{sent / (runs * size):.4f} x the file over the wire, all hashes right, {dt:.2f} s",
                flush=True,
            )

        # 2. statuses: 500, 503, 429 + Retry-After 1 s; and 429 with an HTTP date; capped Retry-After
        data = random.Random(a.seed + 1).randbytes(1_000_000)
        w = fresh(server)
        path = w.add("bench/busy", data, tr.Faults(statuses=[(500, None), (503, None), (429, "1")]))
        t0 = time.perf_counter()
        assert w.pull("bench/busy").read_bytes() == data
        g = server.gets(path)
        print(
            f"statuses: 500, 503, 429 (Retry-After: 1): {len(g) - 1} retries, then 200; "
            f"wait before the 200 {g[-1].t - g[-2].t:.2f} s; total {time.perf_counter() - t0:.2f} s",
            flush=True,
        )
        w = fresh(server)
        date = formatdate(time.time() + 3, usegmt=True)
        path = w.add("bench/date", data, tr.Faults(statuses=[(429, date)]))
        assert w.pull("bench/date").read_bytes() == data
        g = server.gets(path)
        print(
            f"statuses: 429 (Retry-After: an HTTP date 3 s ahead): waited {g[1].t - g[0].t:.2f} s", flush=True
        )
        w = fresh(server)
        os.environ["ZOO_MAX_RETRY_AFTER"] = "2"  # after fresh(), which sets the defaults
        path = w.add("bench/cap", data, tr.Faults(statuses=[(429, "3600")]))
        t0 = time.perf_counter()
        assert w.pull("bench/cap").read_bytes() == data
        print(
            f"statuses: 429 (Retry-After: 3600) with ZOO_MAX_RETRY_AFTER=2: pulled in "
            f"{time.perf_counter() - t0:.2f} s",
            flush=True,
        )
        os.environ["ZOO_MAX_RETRY_AFTER"] = "60"

        # 3. Range ignored; file changed between ranged requests (both server kinds)
        w = fresh(server)
        path = w.add("bench/norange", data, tr.Faults(drops=[300_000, 700_000], no_range=True))
        assert w.pull("bench/norange").read_bytes() == data
        g = server.gets(path)
        print(
            f"range ignored: 2 drops, {len(g)} GETs all 200, restarted from zero each time, "
            f"{sum(x.sent for x in g) / len(data):.2f} x the file over the wire",
            flush=True,
        )
        for kind in ("honours If-Range", "ignores If-Range"):
            for r in range(10):
                rng = random.Random(a.seed * 77 + r)
                v1, v2 = rng.randbytes(1_000_000), rng.randbytes(1_000_000)
                cut = rng.randrange(1, len(v1))
                w = fresh(server)
                f = tr.Faults(drops=[cut], change_to=v2, ignore_if_range=kind == "ignores If-Range")
                mid = f"bench/changed-{kind.split()[0]}-{r}"
                path = w.add(mid, v1, f, checksum=False)
                assert tr.sha256(w.pull(mid).read_bytes()) == tr.sha256(v2)
                assert [b.name for b in w.blobs()] == [tr.sha256(v2)]
            g = server.gets(path)
            print(
                f"file changed after a drop, server {kind}: 10 of 10 pulls got the new version whole, "
                f"0 stitched; requests of the last: {[(x.range, x.status) for x in g]}",
                flush=True,
            )

        # 4. kill -9 of `zoo pull` at random moments, then pulled again
        data = random.Random(a.seed + 2).randbytes(512 * 1024)
        w = fresh(server)
        path = w.add("bench/kill", data, tr.Faults(chunk=16 * 1024, delay=0.012))
        moments = [random.Random(a.seed * 31 + i).uniform(0.15, 0.9) for i in range(a.kills)]
        t0 = time.perf_counter()
        stats = tr.kill_rounds(w, "bench/kill", path, data, moments)
        print(
            f"kill -9: {stats['rounds']} rounds in {time.perf_counter() - t0:.1f} s: "
            f"{stats['killed mid-download']} killed mid-download (all resumed from the partial with "
            f"If-Range), {stats['finished before kill']} had finished, "
            f"{stats['rounds'] - stats['killed mid-download'] - stats['finished before kill']} killed "
            "before the first byte; cache consistent after every kill, every re-pull the right hash",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except AssertionError as e:
        print(f"CHECK FAILED: {e}")
        sys.exit(1)
