"""Keras -> PyTorch / ONNX on the real third-party files in ../shared/testdata/keras.

Reference: tf-keras (TF_USE_LEGACY_KERAS=1) in a subprocess, on the same random inputs (batch 4).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from torch import nn

from converters.keras import convert_keras
from converters.keras.convert import load_keras_folder
from zoo.errors import ConversionError

ROOT = Path(__file__).resolve().parents[1]

# file, input HWC, input range (the preprocessing each model was trained with)
FILES = {
    "vww_96": ("keras/mlperf_tiny/vww_96.h5", (96, 96, 3), (0.0, 1.0)),
    "resnet8": ("keras/mlperf_tiny/pretrainedResnet.h5", (32, 32, 3), (0.0, 255.0)),
    "mini_xception": (
        "keras/face_classification/fer2013_mini_XCEPTION.102-0.66.hdf5",
        (64, 64, 1),
        (-1.0, 1.0),
    ),
}


def _config(path: Path) -> dict:
    with h5py.File(path, "r") as f:
        return json.loads(f.attrs["model_config"])


def _inputs(hwc: tuple[int, int, int], lo: float, hi: float, n: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(lo, hi, size=(n, *hwc)).astype(np.float32)


@pytest.fixture(scope="module")
def converted(testdata: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = {}
    base = tmp_path_factory.mktemp("keras_real")
    for key, (rel, _, _) in FILES.items():
        out[key] = convert_keras(testdata / rel, base / key, to="torch")
    return out


# --- structure (no TensorFlow) -------------------------------------------------------------------


@pytest.mark.parametrize("key", list(FILES))
def test_module_names_are_keras_layer_names(key: str, testdata: Path, converted: dict[str, Path]) -> None:
    cfg = _config(testdata / FILES[key][0])
    names = [
        layer["config"]["name"] for layer in cfg["config"]["layers"] if layer["class_name"] != "InputLayer"
    ]
    model = load_keras_folder(converted[key])
    assert [n for n, _ in model.named_children()] == names


@pytest.mark.parametrize("key", list(FILES))
def test_batchnorm_kept_with_keras_epsilon(key: str, testdata: Path, converted: dict[str, Path]) -> None:
    cfg = _config(testdata / FILES[key][0])
    model = load_keras_folder(converted[key])
    bns = [layer for layer in cfg["config"]["layers"] if layer["class_name"] == "BatchNormalization"]
    assert bns
    for layer in bns:
        mod = getattr(model, layer["config"]["name"])
        assert isinstance(mod, nn.BatchNorm2d)
        assert mod.eps == pytest.approx(layer["config"]["epsilon"])
        assert mod.momentum == pytest.approx(1.0 - layer["config"]["momentum"])
        assert mod.weight.requires_grad and mod.bias.requires_grad


@pytest.mark.parametrize("key", ["vww_96", "mini_xception"])
def test_depthwise_is_grouped_conv(key: str, testdata: Path, converted: dict[str, Path]) -> None:
    cfg = _config(testdata / FILES[key][0])
    model = load_keras_folder(converted[key])
    n = 0
    for layer in cfg["config"]["layers"]:
        cls, name = layer["class_name"], layer["config"]["name"]
        if cls == "DepthwiseConv2D":
            mod = getattr(model, name)
        elif cls == "SeparableConv2D":
            mod = getattr(model, name).depthwise
        else:
            continue
        assert isinstance(mod, nn.Conv2d)
        assert mod.groups == mod.in_channels > 1
        n += 1
    assert n > 0


@pytest.mark.parametrize("key", list(FILES))
def test_every_keras_weight_is_a_trainable_parameter(
    key: str, testdata: Path, converted: dict[str, Path]
) -> None:
    path = testdata / FILES[key][0]
    trainable = 0
    stats = 0
    with h5py.File(path, "r") as f:
        g = f["model_weights"]
        for lname in g.attrs["layer_names"]:
            lg = g[lname]
            for wn in lg.attrs.get("weight_names", []):
                wn = wn.decode() if isinstance(wn, bytes) else str(wn)
                size = int(np.prod(lg[wn].shape))
                if "moving_" in wn:
                    stats += size
                else:
                    trainable += size
    model = load_keras_folder(converted[key])
    params = list(model.parameters())
    assert all(p.requires_grad for p in params)
    assert sum(p.numel() for p in params) == trainable
    buffers = dict(model.named_buffers())
    assert all(k.endswith(("running_mean", "running_var", "num_batches_tracked")) for k in buffers)
    assert sum(b.numel() for k, b in buffers.items() if not k.endswith("num_batches_tracked")) == stats


@pytest.mark.parametrize("key", list(FILES))
def test_input_is_nchw(key: str, converted: dict[str, Path]) -> None:
    h, w, c = FILES[key][1]
    model = load_keras_folder(converted[key])
    graph = json.loads((converted[key] / "graph.json").read_text())
    assert graph["inputs"][0]["shape"] == [1, c, h, w]
    card = json.loads((converted[key] / "card.json").read_text())
    assert card["architecture"]["details"]["artifacts"]["model.safetensors"]["layout"] == "NCHW"
    with torch.no_grad():
        assert model(torch.zeros(2, c, h, w)).shape[0] == 2
        if c != h:
            with pytest.raises(RuntimeError):
                model(torch.zeros(2, h, w, c))


BLOCKER = textwrap.dedent(
    """
    import sys, importlib.abc
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("keras", "tensorflow", "tf_keras", "h5py"):
                raise ImportError("blocked: " + name)
            return None
    sys.meta_path.insert(0, Block())
    import torch
    from converters.folder import load_folder  # the shared loader: keras.* ops register lazily
    m = load_folder(sys.argv[1])
    shape = [int(s) for s in sys.argv[2].split(",")]
    torch.manual_seed(0)
    y = m(torch.rand(*shape))
    bad = [k for k in sys.modules if k.split(".")[0] in ("keras", "tensorflow", "tf_keras", "h5py")]
    assert not bad, bad
    print("OK", tuple(y.shape))
    """
)


@pytest.mark.parametrize("key", list(FILES))
def test_folder_runs_without_keras_tensorflow_h5py(key: str, converted: dict[str, Path]) -> None:
    h, w, c = FILES[key][1]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.run(
        [sys.executable, "-c", BLOCKER, str(converted[key]), f"2,{c},{h},{w}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.strip().startswith("OK (2,")


# --- numerics against tf-keras (subprocess) --------------------------------------------------------


def _tol(ref: np.ndarray) -> float:
    return 1e-5 * max(1.0, float(np.abs(ref).max()))


@pytest.fixture(scope="module")
def references(testdata: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """tf-keras's outputs for every file, all from one subprocess (the shipped worker's
    ``predict``, as converters.keras.subproc.tf_keras_predict runs it for one file)."""
    from keras_fixtures import tf_keras_predict_many

    xs = {key: _inputs(hwc, lo, hi) for key, (_, hwc, (lo, hi)) in FILES.items()}
    ys = tf_keras_predict_many([(testdata / FILES[key][0], x) for key, x in xs.items()])
    return {key: (x, y) for (key, x), y in zip(xs.items(), ys, strict=True)}


@pytest.mark.slow
@pytest.mark.parametrize("key", list(FILES))
def test_torch_matches_tf_keras(key: str, converted: dict[str, Path], references: dict) -> None:
    x, ref = references[key]
    model = load_keras_folder(converted[key])
    with torch.no_grad():
        y = model(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()).numpy()
    diff = float(np.abs(y - ref).max())
    print(f"{key}: torch max|diff| = {diff:.3g}")
    assert diff <= _tol(ref)
    assert (y.argmax(1) == ref.argmax(1)).all()
    # four inputs with four different outputs: agreement is not agreement on a constant output
    assert ref.shape[0] == 4
    assert all(not np.allclose(ref[i], ref[j]) for i in range(4) for j in range(i))


@pytest.mark.slow
@pytest.mark.parametrize("key", list(FILES))
def test_onnx_matches_tf_keras(key: str, testdata: Path, tmp_path: Path, references: dict) -> None:
    import onnx
    import onnxruntime as ort

    out = convert_keras(testdata / FILES[key][0], tmp_path / "o", to="onnx")
    assert not (out / "model.safetensors").exists()
    card = json.loads((out / "card.json").read_text())
    assert card["architecture"]["details"]["artifacts"]["model.onnx"]["layout"] == "NHWC"
    onnx.checker.check_model(str(out / "model.onnx"))
    x, ref = references[key]
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    y = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    diff = float(np.abs(y - ref).max())
    print(f"{key}: onnx max|diff| = {diff:.3g}")
    assert diff <= _tol(ref)
    assert (y.argmax(1) == ref.argmax(1)).all()


# --- bad input ----------------------------------------------------------------------------------


def _assert_clean_failure(exc: pytest.ExceptionInfo, out: Path, *words: str) -> None:
    msg = str(exc.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, msg
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


def _copy_with_config(src: Path, dst: Path, edit) -> Path:  # noqa: ANN001
    dst.write_bytes(src.read_bytes())
    with h5py.File(dst, "r+") as f:
        cfg = json.loads(f.attrs["model_config"])
        edit(cfg, f)
        f.attrs["model_config"] = json.dumps(cfg)
    return dst


def test_not_hdf5(tmp_path: Path) -> None:
    bad = tmp_path / "model.h5"
    bad.write_text("<html>not a model</html>")
    out = tmp_path / "out"
    with pytest.raises(ConversionError) as e:
        convert_keras(bad, out)
    _assert_clean_failure(e, out, "model.h5", "not an HDF5")


def test_hdf5_without_weights(tmp_path: Path, testdata: Path) -> None:
    bad = tmp_path / "noweights.h5"
    with h5py.File(bad, "w") as f:
        f.attrs["model_config"] = json.dumps(_config(testdata / FILES["vww_96"][0]))
        f.attrs["keras_version"] = "2.4.0"
    out = tmp_path / "out"
    with pytest.raises(ConversionError) as e:
        convert_keras(bad, out)
    _assert_clean_failure(e, out, "noweights.h5", "no weights")
    empty = tmp_path / "empty.h5"
    with h5py.File(empty, "w") as f:
        f.create_group("something")
    with pytest.raises(ConversionError) as e:
        convert_keras(empty, out)
    _assert_clean_failure(e, out, "empty.h5", "no Keras weights")


def test_layer_weight_count_mismatch(tmp_path: Path, testdata: Path) -> None:
    def drop_bias(cfg: dict, f: h5py.File) -> None:
        g = f["model_weights"]["conv2d"]
        g.attrs["weight_names"] = g.attrs["weight_names"][:1]

    bad = _copy_with_config(testdata / FILES["resnet8"][0], tmp_path / "r8.h5", drop_bias)
    out = tmp_path / "out"
    with pytest.raises(ConversionError) as e:
        convert_keras(bad, out)
    _assert_clean_failure(e, out, "'conv2d'", "expects 2 weights", "has 1")


def test_unknown_layer(tmp_path: Path, testdata: Path) -> None:
    def rename(cfg: dict, f: h5py.File) -> None:
        cfg["config"]["layers"][3]["class_name"] = "FancyAttention"

    bad = _copy_with_config(testdata / FILES["resnet8"][0], tmp_path / "r8.h5", rename)
    out = tmp_path / "out"
    with pytest.raises(ConversionError) as e:
        convert_keras(bad, out, to="all")
    _assert_clean_failure(e, out, "'activation'", "FancyAttention")


def test_lambda_refused_without_trust(tmp_path: Path, testdata: Path) -> None:
    def to_lambda(cfg: dict, f: h5py.File) -> None:
        layer = cfg["config"]["layers"][3]
        layer["class_name"] = "Lambda"
        layer["config"]["function"] = ["4wEAAAAAAAAA", None, None]

    bad = _copy_with_config(testdata / FILES["resnet8"][0], tmp_path / "r8.h5", to_lambda)
    out = tmp_path / "out"
    with pytest.raises(ConversionError) as e:
        convert_keras(bad, out)
    _assert_clean_failure(e, out, "'activation'", "Lambda", "trust")
    with pytest.raises(ConversionError) as e:
        convert_keras(bad, out, trust_code=True)
    assert "trust" not in str(e.value) and "Lambda" in str(e.value)


def test_existing_output_not_overwritten(tmp_path: Path, testdata: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ConversionError):
        convert_keras(testdata / FILES["resnet8"][0], out)
    assert (out / "keep.txt").read_text() == "mine"


def test_preprocessing_travels_into_the_card(tmp_path: Path, testdata: Path) -> None:
    src = testdata / FILES["resnet8"][0]
    out = convert_keras(src, tmp_path / "caffe", preprocess="caffe")
    pre = json.loads((out / "card.json").read_text())["preprocess"]
    assert pre["mode"] == "caffe" and pre["channel_order"] == "BGR" and pre["scale"] == 1.0
    assert pre["mean"] == [103.939, 116.779, 123.68] and pre["layout"] == "NCHW"
    # a registry card's record (Keras layout NHWC) keeps everything but the layout of the artifact
    reg = {
        "layout": "NHWC",
        "channel_order": "GRAY",
        "scale": 1 / 255,
        "mean": [0.5],
        "std": [0.5],
        "input_size": [64, 64, 1],
        "mode": "custom",
    }
    out = convert_keras(testdata / FILES["mini_xception"][0], tmp_path / "reg", preprocess=reg)
    pre = json.loads((out / "card.json").read_text())["preprocess"]
    assert pre["layout"] == "NCHW" and pre["input_size"] == [1, 64, 64]
    assert pre["channel_order"] == "GRAY" and pre["mean"] == [0.5] and pre["mode"] == "custom"
    out = convert_keras(src, tmp_path / "none")
    pre = json.loads((out / "card.json").read_text())["preprocess"]
    assert pre["unknown"] is True and pre["layout"] == "NCHW"


@pytest.mark.parametrize("key", list(FILES))
def test_layermap_applies_both_ways(key: str, testdata: Path, converted: dict[str, Path]) -> None:
    """layermap.json applied (converters.layermap, the one implementation of each step) to the
    Keras file's own tensors rebuilds model.safetensors bit for bit, and the inverse gives back
    every Keras tensor exactly (conv, depthwise, separable, dense layouts)."""
    from safetensors.numpy import load_file

    from converters.keras.reader import read_keras
    from converters.layermap import LayerMap

    lm = LayerMap.load(converted[key] / "layermap.json")
    assert lm.source_format == "keras" and len(lm) > 0
    src = read_keras(testdata / FILES[key][0])
    blobs = {name: [a for _, a in ws] for name, ws in src.weights.items() if ws}
    state = load_file(str(converted[key] / "model.safetensors"))
    rebuilt = lm.to_target(blobs)
    assert list(rebuilt) == list(state)
    for k in state:
        assert rebuilt[k].dtype == state[k].dtype and rebuilt[k].tobytes() == state[k].tobytes(), k
    back = lm.to_source(state)
    assert set(back) == set(blobs)
    for name, arrays in back.items():
        assert len(arrays) == len(blobs[name])
        for a, b in zip(arrays, blobs[name], strict=True):
            assert a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b), name
    assert lm.match(state).ok


def test_layermap_rows_have_numeric_steps(converted: dict[str, Path]) -> None:
    """Every step is in the shared vocabulary with numbers (no symbols): a depthwise kernel
    (kh, kw, C, M) is reshape(kh,kw,C*M,1) > permute(2,3,0,1), a conv kernel permute(3,2,0,1)."""
    lm = json.loads((converted["vww_96"] / "layermap.json").read_text())
    assert lm["format"] == "zoo-layermap" and lm["version"] == 2 and lm["source_format"] == "keras"
    rows = {r["target"]: r for r in lm["rows"]}
    dw = rows["depthwise_conv2d.weight"]
    kh, kw, c, m = dw["source_shape"]
    assert dw["steps"] == [f"reshape({kh},{kw},{c * m},1)", "permute(2,3,0,1)"]
    assert dw["target_shape"] == [c * m, 1, kh, kw]
    assert rows["conv2d.weight"]["steps"] == ["permute(3,2,0,1)"]
    assert rows["dense.weight"]["steps"] == ["transpose"]
    assert rows["conv2d.bias"]["steps"] == [] and rows["batch_normalization.running_var"]["steps"] == []


def test_layermap_with_unknown_step_refused(converted: dict[str, Path], tmp_path: Path) -> None:
    from converters.layermap import LayerMap, LayerMapError

    d = json.loads((converted["vww_96"] / "layermap.json").read_text())
    LayerMap.from_dict(d)  # as written, it loads
    d["rows"][0]["steps"] = ["permute(3,2,0,1)", "flip(0)"]
    bad = tmp_path / "layermap.json"
    bad.write_text(json.dumps(d))
    with pytest.raises(LayerMapError, match="unknown layer-map step 'flip"):
        LayerMap.load(bad)
    d["rows"][0]["steps"] = ["reshape(kh,kw,C*M,1)"]  # the old symbolic spelling
    bad.write_text(json.dumps(d))
    with pytest.raises(LayerMapError, match="arguments must be numbers"):
        LayerMap.load(bad)


NODE_KEYS = {"name", "module", "type", "op", "attrs", "inputs", "outputs", "params", "output_shapes"}


@pytest.mark.parametrize("key", list(FILES))
def test_graph_nodes_use_the_shared_schema(key: str, converted: dict[str, Path]) -> None:
    """graph.json in the one zoo-graph dialect: the shared format/version, every node with the
    Caffe node keys, ``output_shapes`` NCHW with the batch axis (what the module really produces
    at the graph's input shape) and ``params`` the module's own tensors and shapes."""
    from converters.folder import GRAPH_FORMAT, GRAPH_VERSION

    graph = json.loads((converted[key] / "graph.json").read_text())
    assert (graph["format"], graph["version"]) == (GRAPH_FORMAT, GRAPH_VERSION)
    assert graph["inputs"][0]["batch"] == "free" and graph["inputs"][0]["shape"][0] == 1
    model = load_keras_folder(converted[key])
    state = model.state_dict()
    trace = model.run_layers(torch.rand(*graph["inputs"][0]["shape"]))
    for node in graph["nodes"]:
        assert set(node) == NODE_KEYS, node["name"]
        assert "out_shape" not in node
        assert len(node["output_shapes"]) == len(node["outputs"]) == 1
        assert [list(t.shape) for t in trace[node["name"]]] == node["output_shapes"], node["name"]
        own = {
            k[len(node["module"]) + 1 :]: list(v.shape)
            for k, v in state.items()
            if k.startswith(node["module"] + ".") and not k.endswith("num_batches_tracked")
        }
        assert node["params"] == own, node["name"]


def test_declared_batch_is_the_graph_batch(tmp_path: Path, testdata: Path) -> None:
    """A model whose input declares its batch keeps it in the shapes (and says so)."""

    def pin_batch(cfg: dict, f: h5py.File) -> None:
        cfg["config"]["layers"][0]["config"]["batch_input_shape"][0] = 2

    src = _copy_with_config(testdata / FILES["vww_96"][0], tmp_path / "b2.h5", pin_batch)
    out = convert_keras(src, tmp_path / "o")
    graph = json.loads((out / "graph.json").read_text())
    assert graph["inputs"][0]["batch"] == "declared" and graph["inputs"][0]["shape"] == [2, 3, 96, 96]
    assert {n["output_shapes"][0][0] for n in graph["nodes"]} == {2}
    assert graph["nodes"][-1]["output_shapes"] == [[2, 2]]


# --- the keras.applications spec (one parser) ----------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"classifier_activation": None},
        {"alpha": 0.25, "include_top": False, "input_shape": [128, 128, 3], "pooling": "avg"},
        {"weights": "a&b=c%#", "s": "1", "n": "null", "one": [1], "empty": [], "x": "a,b", "d": {"k": [1]}},
    ],
)
def test_keras_app_spec_round_trip(kwargs: dict) -> None:
    from converters.keras.reader import app_spec, format_keras_app_spec, parse_keras_app_spec

    text = format_keras_app_spec("MobileNet", kwargs)
    assert text.startswith("keras.applications:MobileNet")
    assert parse_keras_app_spec(text) == ("MobileNet", kwargs)
    assert app_spec(text) == ("MobileNet", kwargs)


def test_keras_app_spec_spellings() -> None:
    from converters.keras.reader import app_spec, format_keras_app_spec, parse_keras_app_spec

    want = ("MobileNet", {"alpha": 0.25, "include_top": False, "input_shape": [128, 128, 3], "weights": None})
    for text in (
        "keras.applications:MobileNet?alpha=0.25&include_top=false&input_shape=128,128,3&weights=none",
        "keras:MobileNet?alpha=0.25&include_top=false&input_shape=[128,128,3]&weights=null",
    ):
        assert parse_keras_app_spec(text) == want
    assert format_keras_app_spec(*want) == (
        "keras.applications:MobileNet?alpha=0.25&include_top=false&input_shape=128,128,3&weights=none"
    )
    assert app_spec({"builder": "keras.applications.VGG16", "kwargs": {"classes": 10}}) == (
        "VGG16",
        {"classes": 10},
    )
    assert app_spec("keras.applications.VGG16") == ("VGG16", {})
    assert app_spec("config.json") is None
    for bad in ("keras.applications:Mobile Net", "keras.applications:VGG16?classes", "vgg16"):
        with pytest.raises(ConversionError):
            parse_keras_app_spec(bad)
