"""Real third-party Caffe files (../shared/testdata/caffe) converted and compared with OpenCV dnn."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from caffe_ref import check_against_opencv, opencv_outputs

from converters.caffe import convert_caffe
from converters.caffe.reader import read_caffemodel, read_weights
from converters.caffe.writer import write_caffemodel
from converters.folder import load_folder
from converters.layermap import LayerMap
from converters.verify import verify_folder
from zoo.errors import VerificationError

TOL = 1e-5

# id: (prototxt, weights, {input: shape}, input range)
CASES = {
    "lenet_v2": (
        "lenet_mnist/lenet.prototxt",
        "lenet_mnist/lenet_iter_10000.caffemodel",
        (3, 1, 28, 28),
        (0, 1),
    ),
    "lenet_v1": (
        "lenet_mnist_v1/lenet.prototxt",
        "lenet_mnist_v1/lenet_iter_10000.caffemodel",
        (3, 1, 28, 28),
        (0, 1),
    ),
    "cifar_v1": (
        "cifar10_quick_v1/cifar10_quick.prototxt",
        "cifar10_quick_v1/cifar10_quick_iter_5000.caffemodel",
        (2, 3, 32, 32),
        (-120, 130),
    ),
    "cifar_v2": (
        "cifar10_quick_v2/cifar10_quick.prototxt",
        "cifar10_quick_v2/cifar10_quick_iter_4000.caffemodel",
        (2, 3, 32, 32),
        (-120, 130),
    ),
    "cifar_v2_h5": (
        "cifar10_quick_v2/cifar10_quick.prototxt",
        "cifar10_quick_v2/cifar10_quick_iter_5000.caffemodel.h5",
        (2, 3, 32, 32),
        (-120, 130),
    ),
    "det1": ("mtcnn/det1.prototxt", "mtcnn/det1.caffemodel", (2, 3, 12, 12), (-1, 1)),
    "det1_120x160": ("mtcnn/det1.prototxt", "mtcnn/det1.caffemodel", (2, 3, 120, 160), (-1, 1)),
    "det2": ("mtcnn/det2.prototxt", "mtcnn/det2.caffemodel", (3, 3, 24, 24), (-1, 1)),
    "det3": ("mtcnn/det3.prototxt", "mtcnn/det3.caffemodel", (2, 3, 48, 48), (-1, 1)),
    "det4": ("mtcnn/det4.prototxt", "mtcnn/det4.caffemodel", (2, 15, 24, 24), (-1, 1)),
}


@pytest.fixture(scope="module")
def converted(testdata: Path, tmp_path_factory: pytest.TempPathFactory):
    """Convert each (prototxt, weights) pair once, with ONNX."""
    cache: dict[tuple[str, str, tuple[int, ...] | None], Path] = {}

    def get(proto: str, weights: str, hw: tuple[int, ...] | None = None) -> Path:
        """``hw``: export at this input shape instead of the declared one (fully convolutional det1)."""
        key = (proto, weights, hw)
        if key not in cache:
            out = tmp_path_factory.mktemp("caffe") / "model"
            shapes = {"data": list(hw)} if hw else None
            cache[key] = convert_caffe(
                testdata / "caffe" / proto, testdata / "caffe" / weights, out, to="all", input_shapes=shapes
            )
        return cache[key]

    return get


def h5_as_binary(h5: Path, out: Path) -> Path:
    """The test's own copy of an HDF5 snapshot into a binary caffemodel (OpenCV loads no .h5 weights)."""
    blobs: dict[str, list[np.ndarray]] = {}
    with h5py.File(h5, "r") as f:
        for name, grp in f["data"].items():
            blobs[name] = [np.asarray(grp[k], np.float32) for k in sorted(grp.keys(), key=int)]
    return write_caffemodel(out, blobs)


@pytest.mark.parametrize("case", list(CASES))
def test_real_model_matches_opencv(case: str, testdata: Path, converted, tmp_path: Path) -> None:
    proto, weights, shape, (lo, hi) = CASES[case]
    folder = converted(proto, weights, shape if case == "det1_120x160" else None)
    x = np.random.default_rng(7).uniform(lo, hi, shape).astype(np.float32)
    ref_w = None
    if weights.endswith(".h5"):
        ref_w = h5_as_binary(testdata / "caffe" / weights, tmp_path / "from_h5.caffemodel")
    worst = check_against_opencv(
        testdata / "caffe" / proto,
        testdata / "caffe" / weights,
        {"data": x},
        tmp_path,
        TOL,
        folder=folder,
        ref_weights=ref_w,
    )
    assert worst["onnx"] <= TOL  # the ONNX file exists (to="all") and was compared
    assert (folder / "model.onnx").is_file()


def test_h5_snapshot_weights_equal_h5py(testdata: Path) -> None:
    """Our HDF5 reader gives exactly the datasets h5py reads, and differs from the other run's weights."""
    h5 = testdata / "caffe/cifar10_quick_v2/cifar10_quick_iter_5000.caffemodel.h5"
    ours = read_weights(h5)
    with h5py.File(h5, "r") as f:
        with_blobs = sorted(k for k in f["data"].keys() if len(f["data"][k]))
        assert sorted(ours) == with_blobs
        for name, blobs in ours.items():
            for i, b in enumerate(blobs):
                np.testing.assert_array_equal(b, f["data"][name][str(i)][()])
    other = read_caffemodel(testdata / "caffe/cifar10_quick_v2/cifar10_quick_iter_4000.caffemodel")
    assert not np.array_equal(other["conv1"][0], ours["conv1"][0])


def test_v1_blobs_upgraded_to_current_shapes(testdata: Path, converted) -> None:
    folder = converted("lenet_mnist_v1/lenet.prototxt", "lenet_mnist_v1/lenet_iter_10000.caffemodel")
    lm = LayerMap.load(folder / "layermap.json")
    rows = {(r.source, r.blob): r for r in lm.rows}
    assert rows[("ip1", 0)].source_shape == (1, 1, 500, 800)
    assert rows[("ip1", 0)].target_shape == (500, 800)
    assert [str(s) for s in rows[("ip1", 0)].steps] == ["reshape(500,800)"]
    assert rows[("conv1", 1)].source_shape == (1, 1, 1, 20)
    card = json.loads((folder / "card.json").read_text())
    assert card["provenance"]["caffe_format"] == "v1"


def test_mtcnn_training_layers_in_caffemodel_ignored(testdata: Path) -> None:
    """det4.caffemodel carries training layers; the deploy conversion uses only the prototxt's layers."""
    raw = read_caffemodel(testdata / "caffe/mtcnn/det4.caffemodel")
    folder_layers = {
        r.source
        for r in __import__("converters.caffe.graph", fromlist=["build_graph"])
        .build_graph(
            __import__("converters.caffe.reader", fromlist=["read_prototxt"]).read_prototxt(
                testdata / "caffe/mtcnn/det4.prototxt"
            ),
            raw,
        )[2]
        .rows
    }
    assert folder_layers <= set(raw)


def _digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled digits laid out as MNIST: 0-16 -> 0-255, 8x8 -> 20x20, centred in 28x28."""
    import cv2
    from sklearn.datasets import load_digits

    d = load_digits()
    imgs = np.zeros((len(d.images), 1, 28, 28), np.float32)
    for i, im in enumerate(d.images):
        big = cv2.resize((im * (255.0 / 16.0)).astype(np.float32), (20, 20), interpolation=cv2.INTER_LINEAR)
        imgs[i, 0, 4:24, 4:24] = np.clip(big, 0, 255)
    return imgs * 0.00390625, d.target


@pytest.mark.parametrize("variant", ["lenet_v2", "lenet_v1"])
def test_lenet_classifies_real_digits(variant: str, testdata: Path, converted, tmp_path: Path) -> None:
    proto, weights, _, _ = CASES[variant]
    model = load_folder(converted(proto, weights))
    x, y = _digits()
    with torch.no_grad():
        ours = model(torch.from_numpy(x)).numpy().argmax(1)
    ref = opencv_outputs(
        testdata / "caffe" / proto, testdata / "caffe" / weights, {"data": x}, ["prob"], tmp_path
    )[0].argmax(1)
    acc = float((ours == y).mean())
    assert acc >= 0.80, acc
    assert acc == float((ref == y).mean())
    np.testing.assert_array_equal(ours, ref)


def test_folder_loads_without_caffe_modules(testdata: Path, converted, tmp_path: Path) -> None:
    """A subprocess where importing the Caffe converter (schema, readers; everything under
    converters.caffe but its package and its shape arithmetic, converters.caffe.shapes) fails
    still loads and runs the folder, and its output equals the in-process one exactly."""
    folder = converted("mtcnn/det4.prototxt", "mtcnn/det4.caffemodel")
    x = np.random.default_rng(3).uniform(-1, 1, (2, 15, 24, 24)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    with torch.no_grad():
        first = load_folder(folder)(torch.from_numpy(x))
    script = textwrap.dedent(f"""
        import importlib.abc, sys
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.startswith("converters.caffe.") and name != "converters.caffe.shapes":
                    raise ImportError("blocked: " + name)
                return None
        sys.meta_path.insert(0, Block())
        import numpy as np, torch
        from converters import load_folder
        m = load_folder({str(folder)!r})
        with torch.no_grad():
            outs = m(torch.from_numpy(np.load({str(tmp_path / "x.npy")!r})))
        np.savez({str(tmp_path / "y.npz")!r}, *[o.numpy() for o in outs])
        allowed = {{"converters.caffe", "converters.caffe.shapes"}}
        assert not any(k.startswith("converters.caffe") and k not in allowed for k in sys.modules)
        assert "google.protobuf" not in sys.modules
        try:
            import converters.caffe.reader  # noqa
        except ImportError:
            print("BLOCKED")
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "BLOCKED" in r.stdout
    got = np.load(tmp_path / "y.npz")
    assert len(got.files) == len(first) == 5
    for i, t in enumerate(first):
        np.testing.assert_array_equal(got[f"arr_{i}"], t.numpy())


def test_verify_folder_passes_then_names_the_broken_layer(testdata: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    proto, weights, _, _ = CASES["lenet_v2"]
    folder = convert_caffe(testdata / "caffe" / proto, testdata / "caffe" / weights, tmp_path / "lenet")
    res = verify_folder(folder)
    assert res["passed"] and res["rel"] <= 1e-5 and res["argmax_agreement"] == 1.0
    assert res["first_diverging_layer"] is None
    assert json.loads((folder / "verify.json").read_text())["passed"] is True
    st = load_file(str(folder / "model.safetensors"))
    st["conv2.bias"] = st["conv2.bias"] + 0.5
    save_file(st, str(folder / "model.safetensors"))
    res = verify_folder(folder)
    assert not res["passed"]
    assert res["first_diverging_layer"] == "conv2"
    with pytest.raises(VerificationError, match="conv2"):
        verify_folder(folder, raise_on_fail=True)


def test_layermap_round_trip_and_match_report(testdata: Path, converted) -> None:
    proto, weights, _, _ = CASES["lenet_v2"]
    folder = converted(proto, weights)
    lm = LayerMap.load(folder / "layermap.json")
    src = read_caffemodel(testdata / "caffe" / weights)
    state = lm.to_target(src)
    from safetensors.numpy import load_file

    saved = load_file(str(folder / "model.safetensors"))
    assert sorted(state) == sorted(saved)
    for k in state:
        np.testing.assert_array_equal(state[k], saved[k])
    back = lm.to_source(saved)
    for layer, blobs in src.items():
        for a, b in zip(blobs, back[layer], strict=True):
            np.testing.assert_array_equal(a, b)
    rep = lm.match(saved)
    assert rep.ok and len(rep.matched) == 8
    broken = dict(saved)
    del broken["ip2.bias"]
    broken["conv1.weight"] = np.zeros((20, 1, 3, 3), np.float32)
    broken["extra.weight"] = np.zeros(1, np.float32)
    rep = lm.match(broken)
    assert rep.unmatched == ["ip2.bias"]
    assert rep.shape_mismatched == [("conv1.weight", [20, 1, 5, 5], [20, 1, 3, 3])]
    assert rep.unexpected == ["extra.weight"] and not rep.ok
    assert LayerMap.from_dict(json.loads(json.dumps(lm.to_dict()))).to_dict() == lm.to_dict()


def test_onnx_file_is_single_checker_clean_and_traceable(converted) -> None:
    import onnx

    folder = converted("mtcnn/det4.prototxt", "mtcnn/det4.caffemodel")
    files = sorted(p.name for p in folder.iterdir())
    assert files == ["card.json", "graph.json", "layermap.json", "model.onnx", "model.safetensors"]
    m = onnx.load(str(folder / "model.onnx"))
    onnx.checker.check_model(m, full_check=True)
    assert max(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert all(init.data_location != onnx.TensorProto.EXTERNAL for init in m.graph.initializer)
    meta = {p.key: p.value for p in m.metadata_props}
    names = json.loads(meta["zoo.layer_names"])
    graph = json.loads((folder / "graph.json").read_text())
    assert names == {n["module"]: n["name"] for n in graph["nodes"]}
    assert [o.name for o in m.graph.output] == graph["outputs"]
    # the exporter's scope metadata names our modules, which names map back to Caffe layers
    key = "pkg.torch.onnx.name_scopes"
    scoped = {p.value for n in m.graph.node for p in n.metadata_props if p.key == key}
    assert any("conv1_1" in s for s in scoped)


def test_verify_with_input_files_covers_onnx(testdata: Path, converted, tmp_path: Path) -> None:
    folder = converted("mtcnn/det2.prototxt", "mtcnn/det2.caffemodel")
    x = np.random.default_rng(4).uniform(-1, 1, (5, 3, 24, 24)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    res = verify_folder(folder, inputs=[tmp_path / "x.npy"], atol=1e-5)
    assert res["passed"] and res["backends"] == ["torch", "onnx"] and res["inputs"] == [[5, 3, 24, 24]]
    assert set(res["outputs"]) == {"conv5-2", "prob1"}
    assert all(v["onnx"]["rel"] <= 1e-5 for v in res["outputs"].values())


@pytest.mark.parametrize("case", sorted({k for k in CASES if not k.endswith("_120x160")}))
def test_every_real_layermap_reproduces_the_weights_both_ways(case: str, testdata: Path, converted) -> None:
    """Applying layermap.json to the source file's blobs gives model.safetensors bit for bit, and the
    inverse gives the source blobs back (the shapes as stored: V1's 4-D ones included)."""
    from safetensors.numpy import load_file

    from converters.caffe.reader import read_weights

    proto, weights, _, _ = CASES[case]
    folder = converted(proto, weights)
    lm = LayerMap.load(folder / "layermap.json")
    src = read_weights(testdata / "caffe" / weights)
    saved = load_file(str(folder / "model.safetensors"))
    state = lm.to_target(src)
    assert sorted(state) == sorted(saved) and lm.match(saved).ok
    for k in saved:
        assert state[k].dtype == saved[k].dtype and state[k].tobytes() == saved[k].tobytes(), k
    back = lm.to_source(saved)
    assert set(back) == {r.source for r in lm.rows} <= set(src)
    for layer, blobs in back.items():
        for i, b in enumerate(blobs):
            np.testing.assert_array_equal(b, src[layer][i], err_msg=f"{layer}[{i}]")
