"""Strict readers: a prototxt field unknown to Caffe is refused as Caffe refuses it (skipped only
when asked, each one named); a .pth that would run code when loaded is refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from converters.caffe import convert_caffe
from converters.caffe.reader import read_prototxt
from converters.caffe.writer import write_caffemodel
from converters.torch_onnx import load_state_dict
from zoo.errors import ConversionError

ROOT = Path(__file__).resolve().parents[1]

LRN_NET = """name: "lrn"
input: "data"
input_shape { dim: 1 dim: 8 dim: 6 dim: 6 }
layer { name: "norm1" type: "LRN" bottom: "data" top: "norm1"
        lrn_param { local_size: 5 alpah: 0.5 beta: 0.75 } }
"""


def _zoo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zoo.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=dict(os.environ),
        timeout=600,
    )


def test_misspelled_field_in_a_known_message_is_refused(tmp_path: Path) -> None:
    proto = tmp_path / "lrn.prototxt"
    proto.write_text(LRN_NET)
    with pytest.raises(ConversionError) as ei:
        convert_caffe(proto, None, tmp_path / "out")
    msg = str(ei.value)
    assert "\n" not in msg
    assert str(proto) in msg and "line 5, column 35" in msg and "'alpah'" in msg and "LRNParameter" in msg
    assert not (tmp_path / "out").exists()


def test_cli_refuses_then_skips_with_the_flag_naming_each_field(tmp_path: Path) -> None:
    proto = tmp_path / "lrn.prototxt"
    proto.write_text(LRN_NET.replace("beta: 0.75", "beta: 0.75 fork_extra: 2"))
    r = _zoo("convert", str(proto), "-o", str(tmp_path / "a"))
    assert r.returncode != 0 and not (tmp_path / "a").exists()
    assert len(r.stderr.strip().splitlines()) == 1 and "'alpah'" in r.stderr, r.stderr
    r = _zoo("convert", str(proto), "--allow-unknown-fields", "-o", str(tmp_path / "b"))
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if "unknown to Caffe" in ln]
    assert len(lines) == 2, r.stderr
    assert "line 5, column 35: LRNParameter.alpah" in lines[0]
    assert "LRNParameter.fork_extra" in lines[1]
    card = json.loads((tmp_path / "b" / "card.json").read_text())
    skipped = card["provenance"]["skipped_prototxt_fields"]
    assert [s.split(": ")[-1] for s in skipped] == ["LRNParameter.alpah", "LRNParameter.fork_extra"]


def test_unknown_parameter_message_from_a_fork(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    text = LRN_NET.replace("alpah: 0.5 ", "alpha: 0.5 ").replace(
        'top: "norm1"', 'top: "norm1"\n        prior_box_param { min_size: 10 aspect_ratio: [2, 3] }'
    )
    proto = tmp_path / "ssd.prototxt"
    proto.write_text(text)
    with pytest.raises(ConversionError, match=r"line 5, column 9: unknown field 'prior_box_param'"):
        read_prototxt(proto)
    net = read_prototxt(proto, allow_unknown_fields=True)
    assert net.unknown_fields == ["line 5, column 9: LayerParameter.prior_box_param"]
    out = convert_caffe(proto, None, tmp_path / "out", allow_unknown_fields=True)
    assert "LayerParameter.prior_box_param" in capfd.readouterr().err
    assert (out / "graph.json").is_file()


def test_caffe_fields_a_deploy_conversion_ignores_are_known(tmp_path: Path) -> None:
    """Training-time fields and parameter messages of layers a deploy conversion leaves out are
    Caffe's own: accepted without the flag, and nothing is recorded as skipped."""
    text = """name: "train"
layer { name: "mnist" type: "Data" top: "data" top: "label" include { phase: TRAIN }
        transform_param { scale: 0.00390625 } data_param { source: "x_lmdb" batch_size: 64 backend: LMDB } }
layer { name: "input" type: "Input" top: "data" include { phase: TEST }
        input_param { shape { dim: 1 dim: 1 dim: 8 dim: 8 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
        convolution_param { num_output: 4 kernel_size: 3
          weight_filler { type: "xavier" } bias_filler { type: "constant" value: 0.1 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "conv1" bottom: "label" top: "loss"
        include { phase: TRAIN } loss_param { normalization: VALID ignore_label: 255 } }
"""
    proto = tmp_path / "train.prototxt"
    proto.write_text(text)
    blobs = {"conv1": [np.ones((4, 1, 3, 3), np.float32), np.ones(4, np.float32)]}
    w = write_caffemodel(tmp_path / "w.caffemodel", blobs)
    out = convert_caffe(proto, w, tmp_path / "out")
    card = json.loads((out / "card.json").read_text())
    assert card["provenance"]["skipped_prototxt_fields"] == []


def test_real_prototxts_need_no_flag(testdata: Path) -> None:
    """Every real prototxt in the test data (deploy and train_test, BVLC and forks' examples)
    reads with fields all known to Caffe: their tests need no --allow-unknown-fields."""
    from converters.caffe.reader import parse_prototxt_text, unknown_fields

    files = sorted((testdata / "caffe").rglob("*.prototxt"))
    assert len(files) >= 20
    for p in files:
        text = p.read_text()
        assert unknown_fields(text) == [], p
        parse_prototxt_text(text, p)  # strict: raises on an unknown field


class Custom:
    """A class a .pth can hold: loading it would import and build this (run code)."""

    def __init__(self) -> None:
        self.weights = torch.ones(2)


def test_pth_with_objects_beyond_tensors_is_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "model.pth"
    torch.save({"model": Custom(), "w": torch.zeros(3)}, path)
    with pytest.raises(ConversionError) as ei:
        load_state_dict(path)
    msg = str(ei.value)
    assert "\n" not in msg
    assert msg.startswith("model.pth: refused") and "would run code when loaded" in msg
    assert "test_caffe_strict.Custom" in msg
    assert "weights_only=False" not in msg and "weights_only` set to `False" not in msg
    good = tmp_path / "state.pth"
    torch.save({"w": torch.zeros(3)}, good)
    assert list(load_state_dict(good)) == ["w"]
