"""Benchmark: convert a VGG16-sized caffemodel (written by our random-weight writer).

Reports wall time and peak RSS of the conversion process (prototxt + caffemodel -> zoo model
folder, torch target), next to the file size and a baseline process that only imports the same
modules. Run:  .venv/bin/python bench/caffe_convert.py [--workdir DIR] [--keep]
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
PROTO = ROOT.parent / "shared/testdata/caffe/deploy/VGG_ILSVRC_16_layers_deploy.prototxt"

CHILD = """
import sys, time, json
def hwm():  # VmHWM: this process's peak RSS (unlike ru_maxrss it is not inherited across exec)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
from converters.caffe import convert_caffe
import converters.caffe.graph, converters.caffe.reader, converters.graph_torch, safetensors  # noqa
base = hwm()
t = time.perf_counter()
if sys.argv[1] != "baseline":
    convert_caffe(sys.argv[1], sys.argv[2], sys.argv[3])
print(json.dumps({"wall_s": time.perf_counter() - t, "import_rss_kb": base, "peak_rss_kb": hwm()}))
"""


def run_child(*args: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, *args], capture_output=True, text=True, check=True, cwd=ROOT
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--keep", action="store_true", help="keep the written caffemodel and output")
    a = ap.parse_args()
    work = a.workdir or Path(tempfile.mkdtemp(prefix="zoo-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    model = work / "vgg16_random.caffemodel"
    if not model.exists():
        from converters.caffe.writer import write_random_caffemodel

        t = time.perf_counter()
        write_random_caffemodel(PROTO, model, seed=0)
        print(f"wrote {model} in {time.perf_counter() - t:.1f} s")
    size = model.stat().st_size
    base = run_child("baseline")
    res = run_child(str(PROTO), str(model), str(work / "out"))
    peak = res["peak_rss_kb"] * 1024
    extra = peak - base["peak_rss_kb"] * 1024
    print(
        json.dumps(
            {
                "file_mb": round(size / 2**20, 1),
                "wall_s": round(res["wall_s"], 2),
                "peak_rss_mb": round(peak / 2**20, 1),
                "peak_rss_over_file": round(peak / size, 2),
                "baseline_import_rss_mb": round(base["peak_rss_kb"] / 1024, 1),
                "rss_above_baseline_over_file": round(extra / size, 2),
                "python": sys.version.split()[0],
            },
            indent=1,
        )
    )
    if not a.keep and a.workdir is None:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
