"""Benchmark: convert a TF-slim VGG 16 checkpoint (528 MB, random weights written by TensorFlow
through tests/tf_slim_fixtures.py) to each target, as ratios of the checkpoint's size.

Per target, a fresh process runs ``zoo.convert.convert(prefix, out, arch="slim:vgg_16", to=...)``
and reports its wall time, its own peak RSS (VmHWM, after the imports and at the end) and the
peak RSS of its TensorFlow subprocess (the slim graph export; ``RUSAGE_CHILDREN``). Targets:
``torch`` (graph.json + model.safetensors), ``all`` (also model.onnx, exported from the converted
PyTorch model and checked with onnxruntime), and, when a frozen graph is given or can be made,
``pb`` (the frozen GraphDef of the same net, torch target).

Run:  .venv/bin/python bench/tf_convert.py [--workdir DIR] [--targets torch all pb]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import json, resource, sys, time
def hwm():  # VmHWM: this process's peak RSS (not inherited across exec, unlike ru_maxrss)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
from zoo.convert import convert
import converters.tf.slim, converters.tf.checkpoint  # noqa
import converters.graph_torch, converters.torch_onnx, safetensors  # noqa
base = hwm()
src, out, to, arch = sys.argv[1:5]
t = time.perf_counter()
if to == "pb":
    convert(src, out, to="torch")
else:
    convert(src, out, arch=arch, to=to)
wall = time.perf_counter() - t
kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"wall_s": wall, "import_rss_kb": base, "peak_rss_kb": hwm(), "tf_child_rss_kb": kids}))
"""


def run_child(*args: str) -> dict:
    p = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True, cwd=ROOT)
    if p.returncode != 0:
        raise SystemExit(f"conversion failed: {p.stderr.strip().splitlines()[-1:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--targets", nargs="*", default=["torch", "all"], choices=["torch", "all", "pb"])
    ap.add_argument("--pb", type=Path, default=None, help="a frozen GraphDef of the same vgg_16 (for 'pb')")
    a = ap.parse_args()
    if "pb" in a.targets and a.pb is not None and not a.pb.is_file():
        raise SystemExit(f"--pb {a.pb}: no such file")
    work = a.workdir or Path(tempfile.mkdtemp(prefix="zoo-bench-tf-"))
    work.mkdir(parents=True, exist_ok=True)
    sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]
    prefix = work / "ckpt" / "vgg_16.ckpt"
    if not Path(str(prefix) + ".index").is_file():
        from tf_slim_fixtures import make_slim_checkpoint

        t = time.perf_counter()
        prefix = make_slim_checkpoint(work / "ckpt", "vgg_16")
        print(f"wrote {prefix} (TensorFlow, random weights) in {time.perf_counter() - t:.1f} s")
    files = [Path(str(prefix) + ".index"), *sorted(prefix.parent.glob(prefix.name + ".data-*"))]
    size = sum(f.stat().st_size for f in files)
    print(f"checkpoint: {size / 1e6:.1f} MB in {len(files)} files")
    rows = []
    for target in a.targets:
        if target == "pb" and a.pb is None:
            print("pb: skipped (no --pb frozen graph given)")
            continue
        out = work / f"out-{target}"
        shutil.rmtree(out, ignore_errors=True)
        src = str(a.pb) if target == "pb" else str(prefix)
        src_size = a.pb.stat().st_size if target == "pb" and a.pb else size
        r = run_child(src, str(out), target, "slim:vgg_16")
        written = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
        rows.append((target, r, src_size, written))
        print(f"{target}: {r}", flush=True)
        shutil.rmtree(out, ignore_errors=True)
    print(
        "\n| target | source MB | wall s | s per GB | converter peak RSS MB | peak / source size | "
        "(peak - imports) / source size | TF subprocess peak MB | written MB |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for target, r, src_size, written in rows:
        peak, base = r["peak_rss_kb"] * 1024, r["import_rss_kb"] * 1024
        print(
            f"| {target} | {src_size / 1e6:.0f} | {r['wall_s']:.1f} | {r['wall_s'] / (src_size / 1e9):.1f} | "
            f"{peak / 1e6:.0f} | {peak / src_size:.2f} | {(peak - base) / src_size:.2f} | "
            f"{r['tf_child_rss_kb'] * 1024 / 1e6:.0f} | {written / 1e6:.0f} |"
        )
    if a.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
