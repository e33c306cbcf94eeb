"""Benchmark: Keras ResNet50 and torchvision resnet50 through each target, and the converted
models' CPU inference time under PyTorch and onnxruntime.

Keras ResNet50 is keras.applications.ResNet50 (weights=None, re-randomized) saved in the legacy
HDF5 weights layout (as Keras Applications publishes), converted with its architecture from
keras.applications. Run:  .venv/bin/python bench/keras_torchvision.py [--workdir DIR] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def timed(fn, *a, **kw):  # noqa: ANN001, ANN002, ANN003, ANN201
    t = time.perf_counter()
    r = fn(*a, **kw)
    return r, time.perf_counter() - t


def median_time(fn, reps: int) -> float:  # noqa: ANN001
    fn()  # warm-up
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="zoo-bench-"))
    work.mkdir(parents=True, exist_ok=True)

    import numpy as np
    import onnxruntime as ort
    import torch

    from converters.keras import convert_keras
    from converters.keras.convert import load_keras_folder
    from converters.keras.subproc import run_worker
    from converters.torch_onnx import build_torchvision, export_onnx, randomize

    torch.set_num_threads(args.threads)
    src = work / "keras_resnet50"
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir()
    fixtures = Path(__file__).resolve().parents[1] / "tests" / "keras_fixtures.py"  # test-model builder
    run_worker(["app-make", "ResNet50", "{}", str(src), "0"], env={"KERAS_BACKEND": "torch"}, script=fixtures)
    arch = "keras.applications:ResNet50"
    rows = []
    for to in ("torch", "onnx"):
        out = work / f"k_{to}"
        shutil.rmtree(out, ignore_errors=True)
        _, dt = timed(convert_keras, src / "weights.h5", out, to=to, arch=arch)
        rows.append(("Keras ResNet50 (legacy HDF5 weights + keras.applications arch)", to, dt))
    tv = randomize(build_torchvision("resnet50"))
    (work / "tv.onnx").unlink(missing_ok=True)
    _, dt = timed(export_onnx, tv, work / "tv.onnx", (3, 224, 224))
    rows.append(("torchvision resnet50", "onnx (dynamo export + checker)", dt))

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads
    x = np.random.default_rng(0).uniform(-1, 1, (args.batch, 3, 224, 224)).astype(np.float32)
    xt = torch.from_numpy(x)
    k_torch = load_keras_folder(work / "k_torch")
    k_ort = ort.InferenceSession(
        str(work / "k_onnx" / "model.onnx"), opts, providers=["CPUExecutionProvider"]
    )
    tv_ort = ort.InferenceSession(str(work / "tv.onnx"), opts, providers=["CPUExecutionProvider"])
    x_nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    with torch.no_grad():
        inf = {
            "Keras ResNet50": (
                median_time(lambda: k_torch(xt), args.reps),
                median_time(lambda: k_ort.run(None, {k_ort.get_inputs()[0].name: x_nhwc}), args.reps),
            ),
            "torchvision resnet50": (
                median_time(lambda: tv(xt), args.reps),
                median_time(lambda: tv_ort.run(None, {tv_ort.get_inputs()[0].name: x}), args.reps),
            ),
        }
    print("| model | target | conversion wall time |\n|---|---|---|")
    for m, to, dt in rows:
        print(f"| {m} | {to} | {dt:.1f} s |")
    print(
        f"\n| model | batch | torch (CPU, {args.threads} threads) | onnxruntime (CPU) | onnxruntime / torch |"
    )
    print("|---|---|---|---|---|")
    for m, (tt, to_) in inf.items():
        print(f"| {m} | {args.batch} | {tt * 1000:.0f} ms | {to_ * 1000:.0f} ms | {to_ / tt:.2f} |")
    print(json.dumps({"convert": rows, "inference": inf}))
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
