"""Keras Applications (weights=None, every tensor re-randomized, legacy HDF5 weights layout)
-> zoo model folder, against Keras 3 itself on the torch backend (no TensorFlow), in a subprocess.

The weights-only file is paired with its architecture the way a registry entry does it:
``arch="keras.applications:NAME?..."`` (the config comes from Keras in a subprocess).
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from keras_fixtures import make_apps, selected
from torch import nn

from converters.keras import convert_keras
from converters.keras.convert import load_keras_folder
from converters.keras.preprocess import APPLICATIONS

APPS = [
    "VGG16",
    "ResNet50",
    "MobileNet",
    "MobileNetV2",
    "DenseNet121",
    "InceptionV3",
    "EfficientNetB0",
    "Xception",
]


KWARGS = {"classifier_activation": None}  # compare logits, not saturated probabilities


@pytest.fixture(scope="module")
def made(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every application this module's selected tests use, built and run by Keras in one
    subprocess (read-only: each test writes only under its own tmp_path)."""
    return make_apps(selected(request, "name", APPS), KWARGS, tmp_path_factory)


@pytest.mark.slow
@pytest.mark.parametrize("name", APPS)
def test_keras_application_matches_keras(name: str, made: dict[str, Path], tmp_path: Path) -> None:
    src = made[name]
    weights = src / "weights.h5"
    with h5py.File(weights, "r") as f:  # the published weights-only layout, nothing else
        assert "layer_names" in f.attrs and "model_config" not in f.attrs
    out = convert_keras(
        weights, tmp_path / "out", arch=f"keras.applications:{name}?classifier_activation=null"
    )
    model = load_keras_folder(out)
    pre = json.loads((out / "card.json").read_text())["preprocess"]
    assert pre["mode"] == APPLICATIONS[name][0] and pre["layout"] == "NCHW"  # the app's own mode travels
    x, ref = np.load(src / "x.npy"), np.load(src / "y.npy")
    assert np.isfinite(ref).all() and ref.std() > 1e-3
    with torch.no_grad():
        y = model(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()).numpy()
    diff = float(np.abs(y - ref).max())
    print(f"{name}: max|diff| = {diff:.3g} (max|ref| = {np.abs(ref).max():.3g})")
    assert diff <= 1e-4
    assert (y.argmax(1) == ref.argmax(1)).all()
    # BatchNorm stays BatchNorm with Keras's epsilon; all weights trainable
    cfg = json.loads((src / "config.json").read_text())
    for layer in cfg["config"]["layers"]:
        if layer["class_name"] == "BatchNormalization":
            bn = getattr(model, layer["config"]["name"])
            assert isinstance(bn, nn.BatchNorm2d)
            assert bn.eps == pytest.approx(layer["config"]["epsilon"])
    # every Keras trainable weight is a trainable parameter, nothing more
    with h5py.File(weights, "r") as f:
        stats = ("moving_mean", "moving_variance", "/mean", "/variance", "/count")
        n_keras = sum(
            int(np.prod(f[ln][wn].shape))
            for ln in f.attrs["layer_names"]
            for wn in f[ln].attrs["weight_names"]
            if not (wn.decode() if isinstance(wn, bytes) else str(wn)).endswith(stats)
        )
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == n_keras


@pytest.mark.slow
@pytest.mark.parametrize("name", ["MobileNet", "ResNet50"])
def test_keras_application_weights_to_onnx(name: str, made: dict[str, Path], tmp_path: Path) -> None:
    """A published-style weights-only file + its registry architecture -> ONNX (tf-keras builds the
    net in a subprocess, tf2onnx converts), against Keras 3 on the same inputs."""
    import onnxruntime as ort

    src = made[name]
    arch = f"keras.applications:{name}?classifier_activation=null"
    out = convert_keras(src / "weights.h5", tmp_path / "out", to="onnx", arch=arch)
    x, ref = np.load(src / "x.npy"), np.load(src / "y.npy")
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    y = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    diff = float(np.abs(y - ref).max())
    print(f"{name} -> ONNX: max|diff| = {diff:.3g} (max|ref| = {np.abs(ref).max():.3g})")
    assert diff <= 1e-4 and (y.argmax(1) == ref.argmax(1)).all()
