"""``verify_folder`` on Keras conversions: Keras itself as the reference (subprocess), torch and
ONNX both compared, and the first diverging layer named when a weight is damaged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from keras_fixtures import coverage_once
from safetensors.numpy import load_file, save_file

from converters.keras import convert_keras
from converters.verify import verify_folder
from zoo.errors import VerificationError

pytestmark = pytest.mark.slow

VWW = "keras/mlperf_tiny/vww_96.h5"


def test_verify_against_tf_keras(testdata: Path, tmp_path: Path) -> None:
    out = convert_keras(testdata / VWW, tmp_path / "vww", to="all")
    res = verify_folder(out, reference="source", batch=3)
    assert res["passed"] and res["reference"].startswith("tf-keras")
    assert res["backends"] == ["torch", "onnx"] and res["inputs"] == [[3, 3, 96, 96]]
    assert res["rel"] <= 1e-5 and res["argmax_agreement"] == 1.0
    assert json.loads((out / "verify.json").read_text())["passed"] is True


def test_verify_names_first_diverging_layer(testdata: Path, tmp_path: Path) -> None:
    out = convert_keras(testdata / VWW, tmp_path / "vww")
    w = load_file(str(out / "model.safetensors"))
    w["depthwise_conv2d_3.weight"] = w["depthwise_conv2d_3.weight"] * 1.5  # damage one layer
    save_file(w, str(out / "model.safetensors"))
    res = verify_folder(out, reference="source", batch=2)
    assert not res["passed"]
    assert res["first_diverging_layer"] == "depthwise_conv2d_3"
    with pytest.raises(VerificationError, match="depthwise_conv2d_3"):
        verify_folder(out, reference="source", batch=2, raise_on_fail=True)


def test_verify_keras3_and_weights_only(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    d = coverage_once("keras3", tmp_path_factory)  # read-only, shared with test_keras_formats
    res = verify_folder(
        convert_keras(d / "func.keras", tmp_path / "k3", to="all"), reference="source", batch=2
    )
    assert res["passed"] and "Keras 3" in res["reference"] and res["backends"] == ["torch", "onnx"]
    cfg = json.loads((d / "func.json").read_text())  # a config dict: kept in the folder for the reference
    out = convert_keras(d / "func.weights.h5", tmp_path / "w", arch=cfg)
    assert (out / "keras_config.json").is_file()
    assert verify_folder(out, reference="source", batch=2)["passed"]


def test_cli_convert_keras_file_then_verify(testdata: Path, tmp_path: Path) -> None:
    """`zoo convert FILE.h5 --to all --preprocess ...` then `zoo verify` (tf-keras as the reference)."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]

    def zoo(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "zoo.cli", *args],
            capture_output=True,
            text=True,
            cwd=root,
            env=dict(os.environ),
            timeout=600,
        )

    out = tmp_path / "vww"
    r = zoo("convert", str(testdata / VWW), "--to", "all", "-o", str(out), "--preprocess", "scale=1/255")
    assert r.returncode == 0, r.stderr
    conv = json.loads((out / "card.json").read_text())
    assert conv["preprocess"]["scale"] == pytest.approx(1 / 255) and conv["preprocess"]["layout"] == "NCHW"
    assert conv["architecture"]["details"]["artifacts"]["model.onnx"]["layout"] == "NHWC"
    r = zoo("verify", str(out), "--batch", "3")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "tf-keras" in r.stdout and r.stdout.strip().endswith("passed")
    bad = tmp_path / "bad.h5"
    bad.write_text("not hdf5")
    r = zoo("convert", str(bad), "-o", str(tmp_path / "o2"))
    assert r.returncode == 8 and r.stderr.count("\n") == 1 and "not an HDF5" in r.stderr
    assert not (tmp_path / "o2").exists()
