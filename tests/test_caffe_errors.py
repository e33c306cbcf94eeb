"""Bad Caffe input: each a one-line ConversionError naming the file (and layer), nothing left behind."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from converters.caffe import convert_caffe
from converters.caffe.writer import write_caffemodel
from zoo.errors import ConversionError

NET = """name: "small"
input: "data"
input_shape { dim: 1 dim: 1 dim: 8 dim: 8 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "ip1" type: "InnerProduct" bottom: "conv1" top: "ip1" inner_product_param { num_output: 3 } }
"""
GOOD = {
    "conv1": [np.ones((4, 1, 3, 3), np.float32), np.ones(4, np.float32)],
    "ip1": [np.ones((3, 144), np.float32), np.ones(3, np.float32)],
}


def _convert_fails(tmp: Path, proto_text: str, blobs: dict | bytes | None, match: str) -> str:
    proto = tmp / "net.prototxt"
    proto.write_text(proto_text)
    weights = None
    if isinstance(blobs, bytes):
        weights = tmp / "w.caffemodel"
        weights.write_bytes(blobs)
    elif blobs is not None:
        weights = write_caffemodel(tmp / "w.caffemodel", blobs)
    out = tmp / "out"
    with pytest.raises(ConversionError, match=match) as ei:
        convert_caffe(proto, weights, out)
    msg = str(ei.value)
    assert "\n" not in msg
    assert not out.exists()
    assert sorted(p.name for p in tmp.iterdir()) == sorted(
        ["net.prototxt"] + (["w.caffemodel"] if weights else [])
    ), "temporary output left behind"
    return msg


def test_good_net_converts(tmp_path: Path) -> None:
    w = write_caffemodel(tmp_path / "w.caffemodel", GOOD)
    out = convert_caffe(_write(tmp_path, NET), w, tmp_path / "o")
    assert sorted(p.name for p in out.iterdir()) == [
        "card.json",
        "graph.json",
        "layermap.json",
        "model.safetensors",
    ]


def _write(tmp: Path, text: str) -> Path:
    p = tmp / "net.prototxt"
    p.write_text(text)
    return p


def test_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    bad = NET.replace('top: "ip1" inner', 'top "ip1" inner')
    msg = _convert_fails(tmp_path, bad, GOOD, r"syntax error at line 7, column \d+")
    assert "net.prototxt" in msg


def test_unknown_layer_type_names_layer_type_and_file(tmp_path: Path) -> None:
    text = NET + 'layer { name: "odd" type: "ROIPooling" bottom: "ip1" top: "odd" }\n'
    msg = _convert_fails(tmp_path, text, GOOD, "unsupported type 'ROIPooling'")
    assert "'odd'" in msg and "net.prototxt" in msg


def test_missing_weights_for_layer(tmp_path: Path) -> None:
    msg = _convert_fails(tmp_path, NET, {"conv1": GOOD["conv1"]}, "weights for layer 'ip1'")
    assert "w.caffemodel" in msg and "InnerProduct" in msg


def test_blob_shape_contradicting_prototxt(tmp_path: Path) -> None:
    blobs = dict(GOOD, conv1=[np.ones((4, 1, 5, 5), np.float32), np.ones(4, np.float32)])
    want = r"layer 'conv1' \(Convolution\) blob 0 has shape \[4, 1, 5, 5\]"
    msg = _convert_fails(tmp_path, NET, blobs, want)
    assert "[4, 1, 3, 3]" in msg and "w.caffemodel" in msg


def test_truncated_caffemodel(tmp_path: Path, testdata: Path) -> None:
    raw = (testdata / "caffe/lenet_mnist/lenet_iter_10000.caffemodel").read_bytes()
    lenet = (testdata / "caffe/lenet_mnist/lenet.prototxt").read_text()
    msg = _convert_fails(tmp_path, lenet, raw[: len(raw) // 2], "corrupt or truncated caffemodel")
    assert "w.caffemodel" in msg and "after layer 'pool2'" in msg


def test_not_a_caffemodel(tmp_path: Path) -> None:
    _convert_fails(tmp_path, NET, b"\xff" * 64, "w.caffemodel")


def test_undefined_bottom_and_no_input(tmp_path: Path) -> None:
    text = NET.replace('bottom: "conv1" top: "ip1"', 'bottom: "nope" top: "ip1"')
    _convert_fails(tmp_path, text, GOOD, "layer 'ip1' .*reads blob 'nope'")
    text = "\n".join(line for line in NET.splitlines() if not line.startswith(("input", "input_shape")))
    _convert_fails(tmp_path, text, GOOD, "no input declared")


def test_unknown_target_and_existing_folder_untouched(tmp_path: Path) -> None:
    proto = _write(tmp_path, NET)
    w = write_caffemodel(tmp_path / "w.caffemodel", GOOD)
    with pytest.raises(ConversionError, match=r"unknown conversion target\(s\) \['tflite'\]"):
        convert_caffe(proto, w, tmp_path / "o", to="tflite")
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("old")
    bad = write_caffemodel(tmp_path / "bad.caffemodel", {"conv1": GOOD["conv1"]})
    with pytest.raises(ConversionError, match="not empty"):
        convert_caffe(proto, w, out)  # a non-empty folder is refused: the user's file survives
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    with pytest.raises(ConversionError):
        convert_caffe(proto, bad, out, force=True)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    convert_caffe(proto, w, out, force=True)  # --force: success replaces the folder as a whole
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").is_file()
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ["bad.caffemodel", "net.prototxt", "o", "w.caffemodel"]


def test_fork_pooling_option_refused(tmp_path: Path) -> None:
    text = NET.replace("kernel_size: 3 }", "kernel_size: 3 }\n") + (
        'layer { name: "pool" type: "Pooling" bottom: "ip1" top: "pool"\n'
        "        pooling_param { pool: MAX kernel_size: 1 round_mode: FLOOR } }\n"
    )
    _convert_fails(tmp_path, text, GOOD, r"line 10: option 'round_mode' comes from a Caffe fork")


def test_unknown_field_refused_unless_allowed_then_recorded(tmp_path: Path) -> None:
    extra = NET.replace("num_output: 4 kernel_size: 3", "num_output: 4 kernel_size: 3 my_fork_flag: true")
    msg = _convert_fails(
        tmp_path, extra, GOOD, r"line 5, column \d+: unknown field 'my_fork_flag' in ConvolutionParameter"
    )
    assert "net.prototxt" in msg and "--allow-unknown-fields" in msg
    proto = _write(tmp_path, extra)
    w = write_caffemodel(tmp_path / "w.caffemodel", GOOD)
    out = convert_caffe(proto, w, tmp_path / "o", allow_unknown_fields=True)
    import json

    skipped = json.loads((out / "card.json").read_text())["provenance"]["skipped_prototxt_fields"]
    assert len(skipped) == 1 and "ConvolutionParameter.my_fork_flag" in skipped[0]


def test_misspelled_num_output_names_the_field_not_the_blob(tmp_path: Path) -> None:
    text = NET.replace("num_output: 4 kernel_size: 3", "num_ouput: 4 kernel_size: 3")
    msg = _convert_fails(tmp_path, text, GOOD, r"unknown field 'num_ouput' in ConvolutionParameter")
    assert "line 5, column 29" in msg and "blob" not in msg


def test_empty_caffemodel_says_empty(tmp_path: Path) -> None:
    msg = _convert_fails(tmp_path, NET, b"", r"w.caffemodel: the caffemodel is empty \(0 bytes\)")
    assert "layer" not in msg
