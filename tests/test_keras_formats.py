"""Every Keras file format, on a model that touches every supported layer type.

Fixtures are written by tf-keras (legacy .h5 full model and weights-only .h5, names with ":0")
and by Keras 3 (.keras and .weights.h5, TensorFlow backend), each in a subprocess, with the
outputs of that Keras on the same inputs (batch 3). 'same' padding is asymmetric throughout
(odd sizes, stride 2), and pooling 'same' averages must exclude the padding as TF does.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from keras_fixtures import coverage_once

from converters.keras import convert_keras
from converters.keras.convert import load_keras_folder

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tfk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return coverage_once("tf_keras", tmp_path_factory)  # read-only, shared in the session


@pytest.fixture(scope="module")
def k3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return coverage_once("keras3", tmp_path_factory)  # read-only, shared with test_keras_verify


def _check_layermap(folder: Path, source: Path, arch: Path | None = None) -> None:
    """layermap.json applied to the Keras file's tensors gives model.safetensors bit for bit
    (beside the constants the file does not store: BatchNormalization(center=False)'s zero bias),
    and the inverse gives back every stored tensor, Normalization's unused ``count`` included."""
    from safetensors.numpy import load_file

    from converters.keras.reader import read_keras
    from converters.layermap import LayerMap

    lm = LayerMap.load(folder / "layermap.json")
    blobs = {n: [a for _, a in ws] for n, ws in read_keras(source, arch=arch).weights.items() if ws}
    state = load_file(str(folder / "model.safetensors"))
    rebuilt = lm.to_target(blobs)
    assert all(rebuilt[k].tobytes() == state[k].tobytes() for k in rebuilt)
    constants = sorted(set(state) - set(rebuilt))
    assert constants == (["bn_sep.bias"] if "bn_sep.weight" in state else []), constants
    for k in constants:
        assert not np.any(state[k])
    assert lm.match(state).unexpected == constants and not lm.match(state).unmatched
    back = lm.to_source(state)
    assert set(back) == set(blobs)
    for n, arrays in back.items():
        assert len(arrays) == len(blobs[n])
        for a, b in zip(arrays, blobs[n], strict=True):  # a scalar (count) comes back as [x]
            assert np.array_equal(a.reshape(np.shape(b)), b), n


def _check(folder: Path, d: Path, kind: str) -> float:
    model = load_keras_folder(folder)
    x, ref = np.load(d / f"x_{kind}.npy"), np.load(d / f"y_{kind}.npy")
    assert ref.shape[0] == 3 and ref.std() > 0.05  # not a saturated softmax
    with torch.no_grad():
        y = model(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()).numpy()
    diff = float(np.abs(y - ref).max())
    assert diff <= 1e-5 * max(1.0, float(np.abs(ref).max())), diff
    assert (y.argmax(1) == ref.argmax(1)).all()
    return diff


@pytest.mark.parametrize("kind", ["func", "seq"])
def test_legacy_full_model_h5(tfk: Path, tmp_path: Path, kind: str) -> None:
    out = convert_keras(tfk / f"{kind}.h5", tmp_path / "o")
    print(f"tf-keras {kind}.h5: max|diff| {_check(out, tfk, kind):.3g}")
    _check_layermap(out, tfk / f"{kind}.h5")


@pytest.mark.parametrize("kind", ["func", "seq"])
def test_legacy_weights_only_h5(tfk: Path, tmp_path: Path, kind: str) -> None:
    with h5py.File(tfk / f"{kind}_weights.h5", "r") as f:
        assert "model_config" not in f.attrs and "layer_names" in f.attrs
        # tf-keras writes names with ':0'; the Applications layout from Keras 3 writes none
        assert any(
            str(w).endswith(":0'") or str(w).endswith(":0")
            for w in f["conv_s2" if kind == "func" else "c1"].attrs["weight_names"]
        )
    out = convert_keras(tfk / f"{kind}_weights.h5", tmp_path / "o", arch=tfk / f"{kind}.json")
    print(f"tf-keras {kind}_weights.h5: max|diff| {_check(out, tfk, kind):.3g}")
    _check_layermap(out, tfk / f"{kind}_weights.h5", tfk / f"{kind}.json")


@pytest.mark.parametrize("kind", ["func", "seq"])
def test_keras3_dot_keras(k3: Path, tmp_path: Path, kind: str) -> None:
    out = convert_keras(k3 / f"{kind}.keras", tmp_path / "o")
    print(f"keras3 {kind}.keras: max|diff| {_check(out, k3, kind):.3g}")
    _check_layermap(out, k3 / f"{kind}.keras")
    graph = json.loads((out / "graph.json").read_text())
    cfg = json.loads((k3 / f"{kind}.json").read_text())
    names = [la["config"]["name"] for la in cfg["config"]["layers"] if la["class_name"] != "InputLayer"]
    assert [n["name"] for n in graph["nodes"]] == names


@pytest.mark.parametrize("kind", ["func", "seq"])
def test_keras3_weights_h5(k3: Path, tmp_path: Path, kind: str) -> None:
    out = convert_keras(k3 / f"{kind}.weights.h5", tmp_path / "o", arch=k3 / f"{kind}.json")
    print(f"keras3 {kind}.weights.h5: max|diff| {_check(out, k3, kind):.3g}")
    _check_layermap(out, k3 / f"{kind}.weights.h5", k3 / f"{kind}.json")


ONNX_CASES = [
    ("tfk", "func.h5", None, "func"),
    ("tfk", "seq.h5", None, "seq"),
    ("tfk", "func_weights.h5", "func.json", "func"),
    ("k3", "func.keras", None, "func"),
    ("k3", "seq.keras", None, "seq"),
]


@pytest.mark.parametrize(("flavor", "fname", "arch", "kind"), ONNX_CASES)
def test_onnx(
    flavor: str, fname: str, arch: str | None, kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    import onnx
    import onnxruntime as ort

    d = request.getfixturevalue(flavor)
    out = convert_keras(d / fname, tmp_path / "o", to="all", arch=None if arch is None else d / arch)
    onnx.checker.check_model(str(out / "model.onnx"))
    card = json.loads((out / "card.json").read_text())
    assert card["architecture"]["details"]["artifacts"]["model.onnx"]["layout"] == "NHWC"
    assert card["architecture"]["details"]["artifacts"]["model.safetensors"]["layout"] == "NCHW"
    x, ref = np.load(d / f"x_{kind}.npy"), np.load(d / f"y_{kind}.npy")
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] and sess.get_inputs()[0].shape[1:] == list(x.shape[1:])
    y = sess.run(None, {sess.get_inputs()[0].name: x})[0]  # NHWC, as Keras
    diff = float(np.abs(y - ref).max())
    print(f"{flavor} {fname} -> ONNX: max|diff| {diff:.3g}")
    assert diff <= 1e-5 * max(1.0, float(np.abs(ref).max()))
    assert (y.argmax(1) == ref.argmax(1)).all()
    _check(out, d, kind)


def test_lambda_model_onnx_only_with_trust(tfk: Path, tmp_path: Path) -> None:
    import onnxruntime as ort

    from zoo.errors import ConversionError

    src = tfk / "lambda.h5"
    with pytest.raises(ConversionError, match="trust"):
        convert_keras(src, tmp_path / "a", to="onnx")
    with pytest.raises(ConversionError, match="'lam'.*onnx"):
        convert_keras(src, tmp_path / "b", to="torch", trust_code=True)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    out = convert_keras(src, tmp_path / "c", to="onnx", trust_code=True)
    assert {p.name for p in out.iterdir()} == {"card.json", "model.onnx"}
    x, ref = np.load(tfk / "x_lambda.npy").astype(np.float32), np.load(tfk / "y_lambda.npy")
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    y = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    assert float(np.abs(y - ref).max()) <= 1e-5


def test_weights_only_file_with_other_layer_names_loads_by_order(tfk: Path, tmp_path: Path) -> None:
    """Old Keras Applications files name layers differently; Keras loads them by order, so do we."""
    src = tfk / "seq_weights.h5"
    renamed = tmp_path / "old_names.h5"
    with h5py.File(src, "r") as f, h5py.File(renamed, "w") as g:
        for k, v in f.attrs.items():
            g.attrs[k] = v
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in f.attrs["layer_names"]]
        for n in names:
            f.copy(f[n], g, name=f"old_{n}")
        g.attrs["layer_names"] = np.array([f"old_{n}".encode() for n in names])
    out = convert_keras(renamed, tmp_path / "o", arch=tfk / "seq.json")
    _check(out, tfk, "seq")
    # when the order does not line up, a clear one-line error instead of wrong weights
    with h5py.File(renamed, "r+") as g:
        ln = list(g.attrs["layer_names"])
        g.attrs["layer_names"] = np.array(ln[1:])  # drop one weight-bearing layer
    from zoo.errors import ConversionError

    with pytest.raises(ConversionError, match="not in the model"):
        convert_keras(renamed, tmp_path / "o2", arch=tfk / "seq.json")


NESTED = [
    (f, k, fn, a)
    for k in ("nested", "seq_nested")
    for f, fn, a in (
        ("tfk", f"{k}.h5", None),
        ("k3", f"{k}.keras", None),
        ("k3", f"{k}.weights.h5", f"{k}.json"),
    )
]


@pytest.mark.parametrize(("flavor", "kind", "fname", "arch"), NESTED)
def test_nested_base_model(
    flavor: str, kind: str, fname: str, arch: str | None, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """A base model used as a layer (transfer learning) is inlined; its layers keep their Keras
    names, ``outer/inner`` where an inner name clashes with an outer one. Legacy HDF5 keeps the
    base's weights in one group, Keras 3 under ``layers/functional/layers/...``."""
    import onnxruntime as ort

    d = request.getfixturevalue(flavor)
    to = "torch" if arch else "all"
    out = convert_keras(d / fname, tmp_path / "o", to=to, arch=None if arch is None else d / arch)
    names = [n["name"] for n in json.loads((out / "graph.json").read_text())["nodes"]]
    if kind == "nested":
        assert names == ["conv", "bn", "relu", "base/dense", "gap", "dense"]
    else:
        assert names == ["conv", "bn", "relu", "dense", "flat", "head"]
    model = load_keras_folder(out)
    assert (
        isinstance(model.bn, torch.nn.BatchNorm2d)
        and model.get_submodule(names[3].replace("/", "_")).groups == 6
    )
    x, ref = np.load(d / f"x_{kind}.npy").astype(np.float32), np.load(d / f"y_{kind}.npy")
    with torch.no_grad():
        y = model(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()).numpy()
    assert float(np.abs(y - ref).max()) <= 1e-5 and ref.std() > 0.01
    if to == "all":
        sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
        y = sess.run(None, {sess.get_inputs()[0].name: x})[0]
        assert float(np.abs(y - ref).max()) <= 1e-5
