"""`zoo layermap FOLDER`: one row per source tensor, and the match report against the folder's model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from converters.caffe.writer import write_random_caffemodel
from zoo.convert import convert

NET = """name: "bn"
input: "data"
input_shape { dim: 1 dim: 3 dim: 6 dim: 6 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" }
layer { name: "ip1" type: "InnerProduct" bottom: "conv1" top: "ip1"
        inner_product_param { num_output: 3 transpose: true } }
"""


def _zoo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "zoo.cli", *args], capture_output=True, text=True)


def _folder(tmp_path: Path) -> Path:
    proto = tmp_path / "bn.prototxt"
    proto.write_text(NET)
    w = write_random_caffemodel(proto, tmp_path / "bn.caffemodel", seed=3)
    return convert(proto, tmp_path / "out", weights=w)


def test_rows_show_steps_and_shapes_and_the_match(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    r = _zoo("layermap", str(folder))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    bn_mean = next(x for x in lines if x.startswith("bn1[0]"))
    assert "-> bn1.running_mean" in bn_mean and "moving_average(" in bn_mean and "[4] -> [4]" in bn_mean
    assert any(x.startswith("bn1[2]") and "(folded)" in x and "fold(" in x for x in lines)
    ip = next(x for x in lines if x.startswith("ip1[0]"))
    assert "transpose" in ip and "[64, 3] -> [3, 64]" in ip  # Caffe's transpose: true
    assert lines[-1] == "matched: 6 tensors"
    doc = json.loads(_zoo("layermap", str(folder), "--json").stdout)
    assert len(doc["rows"]) == 7 and doc["match"]["unmatched"] == []


def test_a_map_that_does_not_fit_the_model_is_reported(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    p = folder / "layermap.json"
    doc = json.loads(p.read_text())
    for row in doc["rows"]:
        if row["target"] == "conv1.bias":
            row["target"] = "conv9.bias"
    p.write_text(json.dumps(doc))
    r = _zoo("layermap", str(folder))
    assert r.returncode == 1
    assert "in the map but not in the model:\n  conv9.bias" in r.stdout
    assert "in the model but not in the map (left as initialized):\n  conv1.bias" in r.stdout


def test_an_unknown_step_is_refused_in_one_line(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    p = folder / "layermap.json"
    doc = json.loads(p.read_text())
    doc["rows"][0]["steps"] = ["flip(0)"]
    p.write_text(json.dumps(doc))
    r = _zoo("layermap", str(folder))
    assert r.returncode != 0 and "unknown layer-map step 'flip(0)'" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
