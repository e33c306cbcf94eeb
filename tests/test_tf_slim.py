"""TF-slim checkpoint -> zoo model folder (issue 12, first slice: slim vgg_16).

One TensorFlow subprocess per module (tests/tf_slim_fixtures.py) builds tf_slim's vgg_16 with
every variable re-randomized, saves it as the slim zoo publishes it (``vgg_16.ckpt.index`` +
``.data-00000-of-00001``, with ``global_step``) and records TensorFlow's logits on 2 random NHWC
images; the conversion and every check here run without TensorFlow.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="module")
def vgg(tmp_path_factory):  # noqa: ANN001, ANN201
    import importlib.util

    if not (importlib.util.find_spec("tensorflow") and importlib.util.find_spec("tf_slim")):
        pytest.skip("needs tensorflow and tf-slim (run in a subprocess, never imported here)")
    from tf_slim_fixtures import make_slim_checkpoint

    from zoo.convert import convert

    d = tmp_path_factory.mktemp("slim")
    prefix = make_slim_checkpoint(d / "ckpt", "vgg_16")
    out = convert(prefix, d / "out", to="all", arch="slim:vgg_16")
    return {
        "prefix": prefix,
        "out": Path(out),
        "x": np.load(d / "ckpt" / "x.npy"),
        "ref": np.load(d / "ckpt" / "ref.npy"),
    }


def test_torch_and_onnx_match_tensorflow(vgg) -> None:  # noqa: ANN001
    import torch

    import zoo
    from converters.torch_onnx import onnx_run

    m = zoo.load(vgg["out"])
    x = np.ascontiguousarray(vgg["x"].transpose(0, 3, 1, 2))  # NCHW: the same images
    with torch.no_grad():
        y = m(torch.from_numpy(x)).numpy()
    ref = vgg["ref"]
    assert y.shape == ref.shape == (2, 1000)
    tol = 1e-5 * max(1.0, float(np.abs(ref).max()))
    assert np.abs(y - ref).max() <= tol
    assert (y.argmax(1) == ref.argmax(1)).all()
    yo = onnx_run(vgg["out"] / "model.onnx", x)
    assert np.abs(yo - y).max() <= 1e-5 * max(1.0, float(np.abs(y).max()))
    assert (yo.argmax(1) == y.argmax(1)).all()


def test_structure(vgg) -> None:  # noqa: ANN001
    from torch import nn

    import zoo
    from converters.tf.checkpoint import list_variables
    from converters.tf.slim import scope_of

    m = zoo.load(vgg["out"])
    graph = json.loads((vgg["out"] / "graph.json").read_text())
    names = [n["name"] for n in graph["nodes"]]
    for n in graph["nodes"]:  # modules named after the TF scopes, reversibly
        assert scope_of(n["module"]) == n["name"]
    assert names[:5] == [
        "vgg_16/conv1/conv1_1",
        "vgg_16/conv1/conv1_1/Relu",
        "vgg_16/conv1/conv1_2",
        "vgg_16/conv1/conv1_2/Relu",
        "vgg_16/pool1",
    ]
    convs = {k: v for k, v in m.named_children() if isinstance(v, nn.Conv2d)}
    assert len(convs) == 16 and "vgg_16__fc6" in convs and convs["vgg_16__fc6"].kernel_size == (7, 7)
    assert convs["vgg_16__fc7"].kernel_size == (1, 1) and convs["vgg_16__fc8"].out_channels == 1000
    assert graph["inputs"][0]["shape"] == [1, 3, 224, 224] and graph["layout"] == "NCHW"
    params = dict(m.named_parameters())
    assert len(params) == 32 and all(p.requires_grad for p in params.values())
    assert set(m.state_dict()) == set(params)  # every weight is a Parameter (no buffers)
    # the layer map names every TF variable exactly once (global_step is not a weight)
    lm = json.loads((vgg["out"] / "layermap.json").read_text())
    sources = [r["source"] for r in lm["rows"]]
    ckpt = {v.name for v in list_variables(vgg["prefix"])}
    assert sorted(sources) == sorted(ckpt - {"global_step"}) and len(set(sources)) == len(sources)
    row = next(r for r in lm["rows"] if r["source"] == "vgg_16/conv1/conv1_1/weights")
    assert row == {
        "source": "vgg_16/conv1/conv1_1/weights",
        "blob": 0,
        "target": "vgg_16__conv1__conv1_1.weight",
        "steps": ["permute(3,2,0,1)"],
        "source_shape": [3, 3, 3, 64],
        "target_shape": [64, 3, 3, 3],
    }
    layers = [la.name for la in m.layers()]
    assert layers == names and "vgg_16/fc8/squeezed" in layers and "vgg_16/dropout7" in layers
    card = json.loads((vgg["out"] / "card.json").read_text())
    assert card["architecture"]["details"]["slim"] == "slim:vgg_16"
    assert card["provenance"]["ignored_variables"] == ["global_step"]
    # slim's end points: the layer scope is the activated output (ReLU and dropout in place)
    feats = m.cut("vgg_16/fc7")
    assert [n["name"] for n in feats.graph["nodes"]][-3:] == [
        "vgg_16/fc7",
        "vgg_16/fc7/Relu",
        "vgg_16/dropout7",
    ]


def test_module_names_reversible() -> None:
    from converters.tf.slim import module_name, reversible, scope_of

    for name in (
        "vgg_16/conv1/conv1_1",
        "resnet_v1_50/block1/unit_1/bottleneck_v1/conv1",
        "InceptionV3/Mixed_5b/Branch_0/Conv2d_0a_1x1",
    ):
        assert reversible(name) and scope_of(module_name(name, set())) == name
    taken: set[str] = set()
    a, b = module_name("a/b-c", taken), module_name("a/b.c", taken)
    assert a != b and "." not in a + b and not reversible("a/b-c") and not reversible("x__y")


def test_arch_and_errors(tmp_path) -> None:  # noqa: ANN001
    from zoo.arch import parse
    from zoo.convert import convert, is_tf_checkpoint
    from zoo.errors import ConversionError

    assert parse("slim:vgg_16?num_classes=1001").to_dict() == {
        "kind": "slim",
        "name": "vgg_16",
        "kwargs": {"num_classes": 1001},
    }
    (tmp_path / "m.ckpt.index").write_bytes(b"")
    assert is_tf_checkpoint(tmp_path / "m.ckpt")
    with pytest.raises(ConversionError, match="needs --arch slim:NAME"):
        convert(tmp_path / "m.ckpt", tmp_path / "out")
    assert not (tmp_path / "out").exists()
