"""Keras Applications weights -> torchvision architectures through the LayerMap."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from keras_fixtures import make_apps, selected

from converters.keras.to_torchvision import keras_to_torchvision
from converters.layermap import LayerMap
from zoo.errors import ConversionError

VGGS = ["VGG16", "VGG19"]


@pytest.fixture(scope="module")
def made(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The Keras applications this module's selected tests use, from one subprocess (read-only;
    ResNet50 is shared with test_keras_apps when both run in one session)."""
    names = selected(request, "name", VGGS)
    if any(item.name == "test_keras_resnet50_to_torchvision_refused" for item in request.session.items):
        names.append("ResNet50")
    return make_apps(names, {"classifier_activation": None}, tmp_path_factory)


@pytest.mark.slow
@pytest.mark.parametrize("name", VGGS)
def test_keras_vgg_to_torchvision_vgg(name: str, made: dict[str, Path]) -> None:
    d = made[name]
    state, lm = keras_to_torchvision(d / "weights.h5", name.lower(), arch=d / "config.json")
    model = torchvision.models.get_model(name.lower(), weights=None)
    model.load_state_dict(state, strict=True)
    model.eval()
    x, ref = np.load(d / "x.npy"), np.load(d / "y.npy")
    with torch.no_grad():
        y = model(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()).numpy()
    diff = float(np.abs(y - ref).max())
    top = float(np.abs(ref).max())
    print(f"Keras {name} -> torchvision {name.lower()}: max|diff| = {diff:.3g} (max|ref| {top:.3g})")
    assert diff <= 1e-4 and (y.argmax(1) == ref.argmax(1)).all()
    # the map: every torchvision tensor, the first Dense permuted from NHWC to NCHW order
    rows = {r.target: r for r in lm.rows}
    assert set(rows) == set(model.state_dict())
    assert rows["classifier.0.weight"].source == "fc1"
    assert rows["classifier.0.weight"].steps_str() == "transpose > nhwc_to_nchw(7,7,512)"
    assert rows["classifier.3.weight"].steps_str() == "transpose"
    assert rows["features.0.weight"].source == "block1_conv1"
    assert rows["features.0.weight"].steps_str() == "permute(3,2,0,1)"
    again = LayerMap.from_dict(json.loads(json.dumps(lm.to_dict())))
    assert again.match({k: v.numpy() for k, v in state.items()}).ok
    # the map applied to the Keras file's tensors is the state dict, bit for bit
    from converters.keras.reader import read_keras

    keras_w = {n: [a for _, a in ws] for n, ws in read_keras(d / "weights.h5").weights.items() if ws}
    rebuilt = again.to_target(keras_w)
    assert list(rebuilt) == list(state)
    assert all(rebuilt[k].tobytes() == state[k].numpy().tobytes() for k in state)
    # and back: torchvision weights -> the Keras file's tensors, exactly
    back = again.to_source(state)
    assert set(back) == set(keras_w)
    for n, arrays in back.items():
        assert all(np.array_equal(a, b) for a, b in zip(arrays, keras_w[n], strict=True))
    # without the permutation the numbers are wrong: the permutation is what makes this work
    bad = dict(state)
    bad["classifier.0.weight"] = (
        state["classifier.0.weight"].reshape(4096, 512, 7, 7).permute(0, 2, 3, 1).reshape(4096, -1)
    )
    model.load_state_dict(bad)
    with torch.no_grad():
        y_bad = model(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()).numpy()
    assert np.abs(y_bad - ref).max() > 1e-2


@pytest.mark.slow
def test_keras_resnet50_to_torchvision_refused(made: dict[str, Path]) -> None:
    d = made["ResNet50"]
    with pytest.raises(ConversionError) as e:
        keras_to_torchvision(d / "weights.h5", "resnet50", arch=d / "config.json")
    msg = str(e.value)
    assert "\n" not in msg
    assert "conv3_block1_1_conv" in msg and "1x1" in msg and "3x3" in msg and "not the same network" in msg


def test_unsupported_pair_refused(tmp_path: Path) -> None:
    with pytest.raises(ConversionError, match="no verified Keras -> torchvision mapping"):
        keras_to_torchvision(tmp_path / "x.h5", "mobilenet_v2")
