"""The batch axis of Caffe conversions: Reshape heads, ONNX export, verify.

Small face detectors end in a head like the one below: depthwise convolution, a Permute to NHWC,
a Reshape, a Softmax over the classes. ``torch.onnx.export(dynamo=True)`` falls back to
``draft_export`` when ``torch.export`` refuses the dynamic batch, and that fixes the batch at the
export's sample size (2) without a word: onnxruntime then refused a batch-1 input. Two ways in:
the Reshape's shape arithmetic (``np.prod`` of the symbolic sizes) pinned even a free batch
(``dim: 0``), and a Reshape with a literal batch (``dim: 1``: a net written for one image) followed
by a layer reading the axis the batch was folded into (the Pooling here) really pins it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from caffe_ref import onnx_outputs, opencv_outputs, rel_err

from converters.caffe import convert_caffe
from converters.caffe.writer import write_random_caffemodel
from converters.verify import verify_folder

ROOT = Path(__file__).resolve().parents[1]
TOL = 1e-5

HEAD = """
layer {{ name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param {{ num_output: 8 kernel_size: 3 stride: 2 pad: 1 }} }}
layer {{ name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }}
layer {{ name: "conv1_dw" type: "Convolution" bottom: "conv1" top: "conv1_dw"
        convolution_param {{ num_output: 8 group: 8 kernel_size: 3 pad: 1 engine: CAFFE }} }}
layer {{ name: "relu1_dw" type: "ReLU" bottom: "conv1_dw" top: "conv1_dw" }}
layer {{ name: "conf" type: "Convolution" bottom: "conv1_dw" top: "conf"
        convolution_param {{ num_output: 4 kernel_size: 1 }} }}
layer {{ name: "conf_perm" type: "Permute" bottom: "conf" top: "conf_perm"
        permute_param {{ order: 0 order: 2 order: 3 order: 1 }} }}
layer {{ name: "conf_reshape" type: "Reshape" bottom: "conf_perm" top: "conf_reshape"
        reshape_param {{ shape {{ dim: {batch_dim} dim: 2 dim: -1 dim: 2 }} }} }}
layer {{ name: "conf_softmax" type: "Softmax" bottom: "conf_reshape" top: "conf_softmax"
        softmax_param {{ axis: 1 }} }}
layer {{ name: "conf_pool" type: "Pooling" bottom: "conf_softmax" top: "conf_pool"
        pooling_param {{ pool: MAX kernel_size: 2 stride: 2 }} }}
"""


def _net(tmp: Path, batch: int, batch_dim: str) -> tuple[Path, Path]:
    text = (
        'name: "tinyface"\n'
        'layer { name: "data" type: "Input" top: "data" '
        f"input_param {{ shape {{ dim: {batch} dim: 3 dim: 16 dim: 16 }} }} }}\n"
    ) + HEAD.format(batch_dim=batch_dim)
    proto = tmp / "tinyface.prototxt"
    proto.write_text(text)
    return proto, write_random_caffemodel(proto, tmp / "tinyface.caffemodel", seed=3)


def _onnx_batch(path: Path) -> int | str:
    d = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim[0]
    return int(d.dim_value) if d.HasField("dim_value") else d.dim_param


def _check(proto: Path, weights: Path, folder: Path, batch: int, tmp: Path) -> None:
    """OpenCV dnn, onnxruntime and the torch model (through verify) agree at ``batch``."""
    x = np.random.default_rng(batch).uniform(-1, 1, (batch, 3, 16, 16)).astype(np.float32)
    ref = opencv_outputs(proto, weights, {"data": x}, ["conf_pool"], tmp, graph=_graph(folder))[0]
    got = onnx_outputs(folder / "model.onnx", {"data": x})["conf_pool"]
    assert got.shape == ref.shape
    assert rel_err(ref, got) <= TOL


def _graph(folder: Path) -> dict:
    return json.loads((folder / "graph.json").read_text())


def test_reshape_pinning_the_batch_exports_the_declared_batch(tmp_path: Path) -> None:
    proto, weights = _net(tmp_path, 1, "1")
    folder = convert_caffe(proto, weights, tmp_path / "out", to="all")
    assert _onnx_batch(folder / "model.onnx") == 1  # the declared batch, not the sample's 2
    _check(proto, weights, folder, 1, tmp_path)
    res = verify_folder(folder, reference="opencv", atol=TOL)
    assert res["passed"], res
    assert sorted(res["batches"]) == ["1"] and res["backends"] == ["torch", "onnx"]
    assert res["batches"]["1"]["backends"] == ["torch", "onnx"]


def test_cli_verify_on_a_pinned_batch_folder(tmp_path: Path) -> None:
    proto, weights = _net(tmp_path, 1, "1")
    out = tmp_path / "out"
    run = [sys.executable, "-m", "zoo.cli"]
    r = subprocess.run(
        [*run, "convert", str(proto), "--weights", str(weights), "--to", "onnx", "-o", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    r = subprocess.run(
        [*run, "verify", str(out), "--reference", "opencv", "--atol", "1e-5"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and "passed" in r.stdout


@pytest.mark.parametrize("declared", [1, 3])
def test_free_batch_stays_dynamic_and_verify_runs_1_and_the_declared_batch(
    tmp_path: Path, declared: int
) -> None:
    """The same head with ``dim: 0`` (batch copied): a dynamic ONNX, and verify checks batch 1,
    the declared batch and the requested 2 against OpenCV."""
    proto, weights = _net(tmp_path, declared, "0")
    folder = convert_caffe(proto, weights, tmp_path / "out", to="all")
    assert isinstance(_onnx_batch(folder / "model.onnx"), str)
    for b in (1, declared, 2):
        _check(proto, weights, folder, b, tmp_path)
    res = verify_folder(folder, reference="opencv", atol=TOL)
    assert res["passed"], res
    assert sorted(res["batches"]) == sorted({"1", "2", str(declared)})
    assert all(r["backends"] == ["torch", "onnx"] for r in res["batches"].values())
    assert res["batches"][str(declared)]["inputs"] == [[declared, 3, 16, 16]]


def test_verify_reports_an_onnx_refusing_the_declared_batch_in_one_line(tmp_path: Path) -> None:
    """A folder as the old export left it (ONNX batch fixed at 2, declared batch 1): verify runs
    the declared batch, says onnxruntime refused it, and fails in one line, no traceback."""
    proto, weights = _net(tmp_path, 1, "1")
    folder = convert_caffe(proto, weights, tmp_path / "out", to="all")
    m = onnx.load(str(folder / "model.onnx"))
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 2
    onnx.save(m, str(folder / "model.onnx"))
    res = verify_folder(folder, reference="opencv", atol=TOL)
    assert not res["passed"]
    assert len(res["errors"]) == 1 and "onnxruntime" in res["errors"][0], res
    assert res["batches"]["1"]["backends"] == ["torch"]
    r = subprocess.run(
        [sys.executable, "-m", "zoo.cli", "verify", str(folder), "--reference", "opencv"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert r.returncode != 0
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_caffe_graph_does_not_import_torch() -> None:
    code = "import sys, converters.caffe.graph; print('torch' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


def test_shapes_reshape_and_pool() -> None:
    from converters.caffe.shapes import caffe_pool_out, reshape_shape

    assert reshape_shape([2, 4, 8, 8], [0, -1, 2], 0, -1) == [2, 128, 2]
    assert reshape_shape([1, 8, 8, 4], [1, 2, -1, 2], 0, -1) == [1, 2, 64, 2]
    assert reshape_shape([2, 6, 4], [3, 2], 1, 1) == [2, 3, 2, 4]
    assert caffe_pool_out(5, 2, 1, 2) == 3 and caffe_pool_out(32, 3, 0, 2) == 16
