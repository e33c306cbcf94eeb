"""Bounded fuzzing run of the readers of untrusted input (the targets of tests/test_fuzz.py) with
many more cases than CI: the Caffe prototxt parser, the binary caffemodel reader, the Keras HDF5
reader (+ graph builder on its JSON model_config), the registry / catalogue validation.

Usage: .venv/bin/python bench/fuzz.py [--examples 10000] [--deadline-ms 3000] [--only NAME ...]

Each target runs hypothesis (derandomized: the run is reproducible) for ``--examples`` cases.
Exceptions other than zoo's own (``zoo.errors.ZooError`` subclasses) are collected, not raised,
and listed at the end with the input that caused them (the run's exit status is 1 if any); a
case slower than the deadline fails the run (hypothesis' DeadlineExceeded). Prints per target:
cases, wall time, how the cases ended (ok / the ZooError type / FAILURE).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {
    "prototxt": "test_fuzz_prototxt",
    "caffemodel": "test_fuzz_caffemodel",
    "keras_h5": "test_fuzz_keras_h5",
    "registry": "test_fuzz_registry",
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--examples", type=int, default=10_000)
    ap.add_argument("--deadline-ms", type=int, default=3000)
    ap.add_argument("--only", nargs="*", choices=sorted(TARGETS), default=None)
    a = ap.parse_args()
    os.environ["ZOO_FUZZ_EXAMPLES"] = str(a.examples)
    os.environ["ZOO_FUZZ_DEADLINE_MS"] = str(a.deadline_ms)
    # a file that hangs libhdf5 is stopped by converters.h5guard well inside the deadline
    os.environ.setdefault("ZOO_HDF5_TIMEOUT", str(max(0.5, a.deadline_ms / 1000 / 2)))
    sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]
    import test_fuzz as tf  # noqa: E402  (reads the two settings above at import)

    tf.COLLECT = []
    status = 0
    total_t = 0.0
    for name in a.only or list(TARGETS):
        fn = getattr(tf, TARGETS[name])
        t0 = time.perf_counter()
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - a deadline or property failure: reported
            print(f"{name}: hypothesis stopped: {type(e).__name__}: {str(e)[:300]}")
            status = 1
        dt = time.perf_counter() - t0
        total_t += dt
        outcomes = tf.OUTCOMES.get(name, {})
        n = sum(outcomes.values())
        ends = ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items(), key=lambda kv: -kv[1]))
        print(f"{name:10s} {n:6d} cases  {dt:7.1f} s  ({n / dt:6.0f}/s)  {ends}", flush=True)
    seen: dict[tuple[str, str], int] = {}
    for target, err, where, args in tf.COLLECT:
        key = (target, where)
        if key not in seen:
            print(f"FAILURE {target}: {err} at {where}\n  input: {repr(args)[:600]}")
        seen[key] = seen.get(key, 0) + 1
    if tf.COLLECT:
        status = 1
        for (target, where), n in seen.items():
            print(f"  {target} {where}: {n} case(s)")
    print(f"total {total_t:.1f} s; {len(tf.COLLECT)} failing case(s) at {len(seen)} place(s)")
    return status


if __name__ == "__main__":
    sys.exit(main())
