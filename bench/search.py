"""Search at scale: the SQLite index vs parsing and ranking everything per call.

Generated registries of 1k, 10k and 100k entries (the real 484 cards with ids, names and numbers
varied, as tests/test_search_index.py makes them). For each size: the index build (once per
change), the in-process p50 of ``zoo.search(q)`` with the index current, the same through the
in-memory reference (``Registry.load`` + ``search`` per call: what every call did before the
index), and the wall time of the ``zoo search resnet --json`` command; at 100k also with the
entries in the user catalogue instead of the registry file.

Run: ``.venv/bin/python bench/search.py [--sizes 1000,10000,100000] [--runs 21]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from test_search_index import generated_registry  # noqa: E402

from zoo.index import open_index  # noqa: E402
from zoo.registry import Registry, SearchQuery  # noqa: E402

QUERIES = ["resnet", "resnet50", "vgg16", "mobilenet v2"]


def p50(fn, n: int) -> float:
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def command(args: list[str], home: Path, reg: Path | None, n: int = 5) -> float:
    env = dict(os.environ, ZOO_HOME=str(home))
    if reg is not None:
        env["ZOO_REGISTRY"] = str(reg)
    exe = str(Path(sys.executable).with_name("zoo"))

    def run() -> None:
        subprocess.run([exe, *args], env=env, check=True, capture_output=True)

    run()  # builds the index if needed
    return p50(run, n)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--runs", type=int, default=21, help="timed calls per query for the index p50")
    a = ap.parse_args()
    head = ["entries", "index build s", "index MB", "query", "index p50 ms", "matches"]
    print("| " + " | ".join([*head, "per-call parse p50 ms", "ratio"]) + " |")
    print("|---|---|---|---|---|---|---|---|")
    cmd_rows = []
    for n in [int(x) for x in a.sizes.split(",")]:
        with tempfile.TemporaryDirectory() as tmp:
            d = Path(tmp)
            reg = generated_registry(n, d / "reg.json")
            t = time.perf_counter()
            mb = open_index(d, registry_path=reg).path.stat().st_size / 2**20
            build = time.perf_counter() - t
            for q in QUERIES:
                sq = SearchQuery(text=q)
                fast = p50(lambda sq=sq, d=d, reg=reg: open_index(d, registry_path=reg).search(sq), a.runs)
                total = open_index(d, registry_path=reg).search(sq).total
                reps = 3 if n <= 10_000 else 1
                slow = p50(lambda sq=sq, d=d, reg=reg: Registry.load(path=reg, home=d).search(sq), reps)
                print(
                    f"| {n:,} | {build:.1f} | {mb:.0f} | `{q}` | {fast * 1e3:.1f} | {total:,} | "
                    f"{slow * 1e3:.0f} | {slow / fast:.0f}x |",
                    flush=True,
                )
            cmd_rows.append((n, "registry file", command(["search", "resnet", "--json"], d, reg)))
            if n == max(int(x) for x in a.sizes.split(",")):
                home = d / "cat_home"
                home.mkdir()
                small = d / "small.json"
                small.write_text(json.dumps({"schema_version": 1, "models": []}))
                (home / "catalog.json").write_text(reg.read_text())
                t = time.perf_counter()
                command(["search", "resnet", "--json"], home, small, n=1)
                first = time.perf_counter() - t
                cmd_rows.append(
                    (
                        n,
                        f"user catalogue (first call, builds: {first:.0f} s)",
                        command(["search", "resnet", "--json"], home, small),
                    )
                )
    print()
    print("| entries | where | `zoo search resnet --json` p50 s |")
    print("|---|---|---|")
    for n, where, s in cmd_rows:
        print(f"| {n:,} | {where} | {s:.2f} |")
    with tempfile.TemporaryDirectory() as tmp:
        print(f"\n`zoo --help`: {command(['--help'], Path(tmp), None):.3f} s p50")


if __name__ == "__main__":
    main()
