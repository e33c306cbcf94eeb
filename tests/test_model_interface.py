"""The one model interface (zoo/models.py) on every source, each model got through ``zoo.load``:

- a torchvision resnet18 (random weights in a ``.pth``) registered with ``zoo register --arch``;
- a timm resnet18 (random weights, safetensors) pulled from the loopback Hugging Face endpoint
  under the repo its bundled registry entry names;
- the real Keras ``testdata/vww_96`` and the real Caffe ``testdata/lenet_mnist`` and
  ``testdata/mtcnn_det3`` (../shared/testdata, served by a loopback mirror), converted on first use
  into ``$ZOO_HOME/converted`` and reused afterwards;
- a Caffe MobileNet v1 (the real deploy prototxt, random weights written as a caffemodel)
  registered with ``zoo register --arch caffe:... --definition``.

For each: ``layers()`` names and output shapes (against forward hooks at the card's input size),
``cut(default_cut)`` (the documented feature shape, the values of that layer in a full forward),
``reset_classifier(7)``, a train-mode backward that reaches every parameter, ``group_matcher()``
covering each parameter once (timm's ``group_parameters``), eval outputs unchanged by the
interface calls; and the outputs against the source: bit for bit for torchvision / timm, OpenCV
dnn for Caffe and tf-keras (subprocess) for Keras within the real-file tests' tolerances.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from servers import TestServer, free_port, mirror_testdata_card, registry_card
from timm.models import group_parameters
from torch import nn

import zoo
from converters.graph_torch import GraphModule

pytestmark = pytest.mark.slow  # about a minute: six models, each forward and backward several times

ROOT = Path(__file__).resolve().parents[1]
TIMM_ID = "timm/resnet18.a1_in1k"
MOBILENET = "caffe/deploy/mobilenet_v1_deploy.prototxt"


def _resnet_units(act: str, pool: str) -> list[str]:
    blocks = [n for i in range(1, 5) for n in (f"layer{i}", f"layer{i}.0", f"layer{i}.1")]
    return ["conv1", "bn1", act, "maxpool", *blocks, pool, "fc"]


@dataclass(frozen=True)
class Case:
    model_id: str  # what zoo.load is given
    source: str  # torchvision | timm | keras | caffe
    input: tuple[int, ...]  # the card's input size (C, H, W)
    value_range: tuple[float, float]
    default_cut: str
    feature: tuple[int, ...]  # the documented output of cut(default_cut) at batch 1
    outputs: tuple[tuple[int, ...], ...]  # forward()'s output shapes at batch 1
    head: int  # which of them the classifier feeds
    names: list[str] | None = None  # layers() names of library models (converted: the source's)
    tol: float = 1e-5  # against the reference (Caffe, Keras); library models: bit for bit


CASES = {
    "torchvision": Case(
        "me/r18",
        "torchvision",
        (3, 224, 224),
        (-2.0, 2.0),
        "avgpool",
        (1, 512, 1, 1),
        ((1, 5),),
        0,
        _resnet_units("relu", "avgpool"),
    ),
    "timm": Case(
        TIMM_ID,
        "timm",
        (3, 224, 224),
        (-2.0, 2.0),
        "global_pool",
        (1, 512),
        ((1, 1000),),
        0,
        _resnet_units("act1", "global_pool"),
    ),
    "keras_vww_96": Case(
        "testdata/vww_96", "keras", (3, 96, 96), (0.0, 1.0), "average_pooling2d", (1, 256, 1, 1), ((1, 2),), 0
    ),
    "caffe_lenet": Case(
        "testdata/lenet_mnist", "caffe", (1, 28, 28), (0.0, 1.0), "ip1", (1, 500), ((1, 10),), 0
    ),
    "caffe_det3": Case(
        "testdata/mtcnn_det3",
        "caffe",
        (3, 48, 48),
        (-1.0, 1.0),
        "conv5",
        (1, 256),
        ((1, 4), (1, 10), (1, 2)),  # conv6-2 (box), conv6-3 (landmarks), prob1 (after conv6-1)
        2,
    ),
    "caffe_registered": Case(
        "me/mobilenet-caffe",
        "caffe",
        (3, 224, 224),
        (-1.0, 1.0),
        "pool6",
        (1, 1024, 1, 1),
        ((1, 1000, 1, 1),),  # fc7 is a 1x1 convolution, prob its softmax over channels
        0,
        tol=1e-4,  # random weights: tests/test_caffe_deploy.py's tolerance for the same net
    ),
}
CONVERTED = [k for k, c in CASES.items() if c.source in ("keras", "caffe")]


# --- the world: a private ZOO_HOME and HF cache, a loopback mirror + hub, two registered models ---


@dataclass
class World:
    home: Path
    tmp: Path
    testdata: Path
    tv_state: dict[str, torch.Tensor]
    timm_file: Path
    mobilenet_weights: Path
    first: dict[str, Any]  # case -> what its first zoo.load did (converted folders before / after)


def _zoo(*args: str) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "zoo.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=dict(os.environ),
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.fixture(scope="module")
def world(testdata: Path, tmp_path_factory: pytest.TempPathFactory):
    import torchvision
    from safetensors.torch import save_file

    from converters.caffe.writer import write_random_caffemodel

    tmp = tmp_path_factory.mktemp("model_interface")
    home = tmp / "zoo_home"
    home.mkdir()
    with TestServer() as server, pytest.MonkeyPatch.context() as mp:
        for key in ("ZOO_MIRROR", "ZOO_OFFLINE", "HF_HUB_CACHE", "HF_HUB_OFFLINE", "HF_TOKEN"):
            mp.delenv(key, raising=False)
        for key, value in {
            "ZOO_HOME": str(home),
            "ZOO_MIRROR": server.url,  # registry files come from the loopback mirror
            "ZOO_RETRIES": "1",
            "ZOO_BACKOFF": "0.01",
            "HF_ENDPOINT": server.url,  # timm weights from the loopback hub
            "HF_HOME": str(tmp / "hf"),
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HTTPS_PROXY": f"http://127.0.0.1:{free_port()}",  # nothing leaves the machine
            "HTTP_PROXY": f"http://127.0.0.1:{free_port()}",
            "NO_PROXY": "127.0.0.1",
        }.items():
            mp.setenv(key, value)
        for case in CASES.values():
            if case.model_id.startswith("testdata/"):
                mirror_testdata_card(server, registry_card(case.model_id), testdata)

        torch.manual_seed(0)
        tv = torchvision.models.resnet18(num_classes=5)
        pth = tmp / "r18.pth"
        torch.save(tv.state_dict(), pth)
        _zoo(
            "register",
            str(pth),
            "--id",
            "me/r18",
            "--arch",
            "torchvision:resnet18",
            "--labels",
            "cat,dog,fox,owl,elk",
            "--default-cut",
            "avgpool",
        )

        import timm

        # timm zero-initializes each block's last BatchNorm weight: its blocks' first layers would
        # get no gradient; trained weights have none of these zeros
        tm = timm.create_model("resnet18", pretrained=False, zero_init_last=False)
        timm_file = tmp / "timm_resnet18.safetensors"
        save_file(tm.state_dict(), str(timm_file))
        hf = registry_card(TIMM_ID)["files"][0]["hf"]
        server.set_hf_file(hf["repo_id"], hf["filename"], timm_file.read_bytes())

        proto = testdata / MOBILENET
        weights = write_random_caffemodel(proto, tmp / "mobilenet_v1.caffemodel", seed=0)
        _zoo(
            "register",
            str(weights),
            "--id",
            "me/mobilenet-caffe",
            "--arch",
            f"caffe:{proto.name}",
            "--definition",
            str(proto),
            "--default-cut",
            "pool6",
        )
        yield World(home, tmp, testdata, tv.state_dict(), timm_file, weights, {})


def _converted(home: Path) -> dict[str, tuple[int, int]]:
    """Folders in $ZOO_HOME/converted: name -> (inode, card.json mtime_ns)."""
    root = home / "converted"
    if not root.is_dir():
        return {}
    return {
        p.name: (p.stat().st_ino, (p / "card.json").stat().st_mtime_ns) for p in root.iterdir() if p.is_dir()
    }


def _load(world: World, case: str) -> nn.Module:
    """zoo.load by id; the first load of each case records the converted folders around it."""
    if case not in world.first:
        before = _converted(world.home)
        model = zoo.load(CASES[case].model_id, progress="off")
        world.first[case] = {"before": before, "after": _converted(world.home)}
        return model
    return zoo.load(CASES[case].model_id, progress="off")


def _x(case: str, n: int, seed: int = 0) -> torch.Tensor:
    lo, hi = CASES[case].value_range
    a = np.random.default_rng(seed).uniform(lo, hi, (n, *CASES[case].input)).astype(np.float32)
    return torch.from_numpy(a)


def _outs(y: Any) -> tuple[torch.Tensor, ...]:
    return tuple(y) if isinstance(y, (tuple, list)) else (y,)


def _first(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, (tuple, list)) else out


def _with_hooks(model: nn.Module, targets: dict[str, nn.Module], run: Callable[[], Any]) -> dict[str, Any]:
    """Every output of each target module during ``run()`` (name -> list of tensors)."""
    got: dict[str, list[torch.Tensor]] = {n: [] for n in targets}
    hooks = [
        m.register_forward_hook(lambda _m, _i, out, n=n: got[n].append(_first(out).detach().clone()))
        for n, m in targets.items()
    ]
    try:
        run()
    finally:
        for h in hooks:
            h.remove()
    return got


def _layer_modules(model: nn.Module) -> dict[str, nn.Module]:
    """layers() row name -> the module computing it (graphs: the node's module)."""
    if isinstance(model, GraphModule):
        mods = dict(model.named_children())
        return {n["name"]: mods[n["module"]] for n in model.graph["nodes"]}
    return {r.name: model.get_submodule(r.name) for r in model.layers()}


def _feature_value(model: nn.Module, name: str, x: torch.Tensor) -> torch.Tensor:
    """The value of layer ``name``'s output in a full forward pass (for a Caffe / Keras graph: its
    first output blob as the net holds it, after the in-place layers that rewrite it)."""
    if not isinstance(model, GraphModule):
        got = _with_hooks(model, {name: model.get_submodule(name)}, lambda: model(x))
        assert len(got[name]) == 1
        return got[name][0]
    nodes = model.graph["nodes"]
    i = next(j for j, n in enumerate(nodes) if n["name"] == name)
    blob = nodes[i]["outputs"][0]
    writers = [n for n in nodes[i:] if blob in n["outputs"]]
    assert all(n["inputs"] == n["outputs"] == [blob] for n in writers[1:])  # in-place only
    mods = dict(model.named_children())
    got = _with_hooks(model, {w["name"]: mods[w["module"]] for w in writers}, lambda: model(x))
    return got[writers[-1]["name"]][0]


def _source_layers(world: World, case: str) -> list[tuple[str, str]] | None:
    """(name, type) of each layer of the source file (Caffe prototxt, Keras model config)."""
    c = CASES[case]
    if c.source not in ("caffe", "keras"):
        return None
    if c.source == "caffe":
        from converters.caffe.reader import read_prototxt

        card = registry_card(c.model_id) if c.model_id.startswith("testdata/") else None
        rel = MOBILENET if card is None else _testdata_path(world, card, ".prototxt")
        net = read_prototxt(world.testdata / rel)
        return [(layer.name, layer.type) for layer in net.layers]
    import json

    import h5py

    rel = _testdata_path(world, registry_card(c.model_id), ".h5")
    with h5py.File(world.testdata / rel, "r") as f:
        cfg = json.loads(f.attrs["model_config"])
    layers = cfg["config"]["layers"]
    return [(lay["config"]["name"], lay["class_name"]) for lay in layers if lay["class_name"] != "InputLayer"]


def _testdata_path(world: World, card: dict, suffix: str) -> str:
    """The path in ../shared/testdata of the card's file ending in ``suffix`` (by its sha256)."""
    lines = (world.testdata / "SHA256SUMS").read_text().splitlines()
    by_hash = dict(ln.split(maxsplit=1) for ln in lines if ln.strip())
    f = next(f for f in card["files"] if f["name"].endswith(suffix))
    return by_hash[f["checksum"]["value"]].strip()


def _loss(y: Any) -> torch.Tensor:
    """A loss that depends on every output value (fixed random weights: a softmax's sum is constant)."""
    g = torch.Generator().manual_seed(1)
    return sum((t * torch.randn(t.shape, generator=g)).sum() for t in _outs(y))  # type: ignore[return-value]


# --- the tests ------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", list(CASES))
def test_layers_names_and_real_shapes(case: str, world: World) -> None:
    model = _load(world, case)
    c = CASES[case]
    rows = model.layers()
    assert [r.index for r in rows] == list(range(len(rows)))
    mods = _layer_modules(model)
    source = _source_layers(world, case)
    if source is None:  # library models: module paths, the module's class
        assert [r.name for r in rows] == c.names
        assert [r.type for r in rows] == [type(mods[r.name]).__name__ for r in rows]
    else:  # converted models: the source file's layer names and types, in its order
        assert [(r.name, r.type) for r in rows] == source
    for r in rows:
        ps = list(mods[r.name].parameters())
        assert r.params == sum(p.numel() for p in ps), r.name
        assert r.trainable == any(p.requires_grad for p in ps), r.name
    if isinstance(model, GraphModule):
        assert sum(r.params for r in rows) == sum(p.numel() for p in model.parameters())
        assert model.graph["inputs"][0]["shape"][1:] == list(c.input)  # the net's input size
    elif c.source == "timm":
        assert model.zoo_input_size == c.input  # the card's (a registered .pth has none: 224)
    with torch.no_grad():
        got = _with_hooks(model, mods, lambda: model(_x(case, 1)))
    real = {n: tuple(v[0].shape) for n, v in got.items() if v}
    assert set(real) == {r.name for r in rows}  # every row's module ran
    assert {r.name: r.output_shape for r in rows} == real
    assert next(r for r in rows if r.name == c.default_cut).output_shape == c.feature


@pytest.mark.parametrize("case", list(CASES))
def test_cut_at_default_cut_gives_the_feature_layer(case: str, world: World) -> None:
    model = _load(world, case)
    c = CASES[case]
    assert model.default_cut == c.default_cut  # from the card (registry, or zoo register --default-cut)
    x = _x(case, 2)
    cut = model.cut(c.default_cut)
    own = {id(p) for p in model.parameters()}
    shared = [id(p) in own for p in cut.parameters()]
    assert shared and all(shared)  # the cut holds this model's parameters, not copies
    with torch.no_grad():
        feat = cut(x)
        full = _feature_value(model, c.default_cut, x)
        ff = model.forward_features(x)
    assert tuple(feat.shape) == (2, *c.feature[1:])
    assert torch.equal(feat, full)
    if c.source == "timm":  # timm's own forward_features: the unpooled map before global_pool
        with torch.no_grad():
            assert torch.equal(ff, _feature_value(model, "layer4", x))
        assert tuple(ff.shape) == (2, 512, 7, 7)
    else:
        assert torch.equal(ff, feat)


@pytest.mark.parametrize("case", list(CASES))
def test_reset_classifier_gives_7_outputs(case: str, world: World) -> None:
    model = _load(world, case)
    c = CASES[case]
    x = _x(case, 2)
    with torch.no_grad():
        before = _outs(model(x))
    assert [tuple(t.shape) for t in before] == [(2, *s[1:]) for s in c.outputs]
    old = model.get_classifier()
    model.reset_classifier(7)
    new = model.get_classifier()
    assert new is not old and type(new) is type(old)
    assert (new.out_features if isinstance(new, nn.Linear) else new.out_channels) == 7
    assert not model.training
    with torch.no_grad():
        after = _outs(model(x))
    for i, (a, b) in enumerate(zip(before, after, strict=True)):
        if i == c.head:
            assert tuple(b.shape) == (2, 7, *a.shape[2:])
        else:  # det3's other heads are untouched
            assert torch.equal(a, b)
    rows = model.layers()
    mods = _layer_modules(model)
    head = next(r for r in rows if mods[r.name] is new)
    assert head.output_shape is not None and head.output_shape[1] == 7


@pytest.mark.parametrize("case", list(CASES))
def test_train_mode_backward_reaches_every_parameter(case: str, world: World) -> None:
    model = _load(world, case)
    model.reset_classifier(7)
    model.train()
    _loss(model(_x(case, 2, seed=3))).backward()
    named = list(model.named_parameters())
    assert named
    no_grad = [n for n, p in named if p.grad is None]
    zero = [n for n, p in named if p.grad is not None and not bool(p.grad.abs().sum() > 0)]
    assert not no_grad and not zero, (no_grad, zero)


@pytest.mark.parametrize("case", list(CASES))
def test_group_matcher_covers_each_parameter_once(case: str, world: World) -> None:
    model = _load(world, case)
    names = sorted(n for n, _ in model.named_parameters())
    for stage in ("loaded", "after reset_classifier"):
        for coarse in (False, True):
            groups = group_parameters(model, model.group_matcher(coarse=coarse))
            flat = [n for g in groups.values() for n in g]
            assert sorted(flat) == names, (stage, coarse)  # every parameter, none twice
            assert len(groups) >= 3, (stage, coarse)  # a stem, blocks, more than one group
        model.reset_classifier(7)


@pytest.mark.parametrize("case", list(CASES))
def test_eval_outputs_unchanged_by_the_interface_calls(case: str, world: World) -> None:
    model = _load(world, case)
    c = CASES[case]
    x = _x(case, 2, seed=5)
    assert not model.training  # zoo.load returns eval mode
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        y0 = _outs(model(x))
        model.layers()
        model.cut(c.default_cut)(x)
        model.cut(model.layers()[0].name)(x)
        model.forward_features(x)
        model.get_classifier()
        model.group_matcher()
        model.group_matcher(coarse=True)
        y1 = _outs(model(x))
    assert not model.training
    assert all(torch.equal(a, b) for a, b in zip(y0, y1, strict=True))
    after = model.state_dict()
    assert list(after) == list(state) and all(torch.equal(after[k], state[k]) for k in state)
    # layers() runs its shape pass in eval mode, then gives each module its own mode back (a
    # BatchNorm frozen in eval inside a training model stays frozen); no statistics move
    model.train()
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    frozen = bns[0] if bns else next(model.children())
    frozen.eval()
    model.layers()
    assert [m.training for m in model.modules()] == [m is not frozen for m in model.modules()]
    after = model.state_dict()
    assert all(torch.equal(after[k], state[k]) for k in state)


@pytest.mark.parametrize("case", list(CASES))
def test_whole_model_pickles_and_deepcopies(case: str, world: World, tmp_path: Path) -> None:
    """torch.save(model) / copy.deepcopy keep the class, the interface and the outputs (library
    models get their class with the interface made at run time: pickle must not look it up by name)."""
    import copy

    model = _load(world, case)
    torch.save(model, tmp_path / "whole.pt")
    loaded = torch.load(tmp_path / "whole.pt", weights_only=False)
    twin = copy.deepcopy(model)
    x = _x(case, 2, seed=11)
    with torch.no_grad():
        y = _outs(model(x))
        for other in (loaded, twin):
            assert type(other) is type(model)
            assert other.default_cut == model.default_cut
            assert [r.name for r in other.layers()] == [r.name for r in model.layers()]
            assert all(torch.equal(a, b) for a, b in zip(y, _outs(other(x)), strict=True))
    assert twin.get_classifier().weight is not model.get_classifier().weight


@pytest.mark.parametrize("case", ["torchvision", "timm"])
def test_library_outputs_equal_the_source_module_bit_for_bit(case: str, world: World) -> None:
    import timm
    import torchvision
    from safetensors.torch import load_file

    model = _load(world, case)
    if case == "torchvision":
        ref = torchvision.models.resnet18(num_classes=5)
        ref.load_state_dict(world.tv_state)
    else:
        ref = timm.create_model("resnet18", pretrained=False)
        ref.load_state_dict(load_file(str(world.timm_file)))
    ref.eval()
    x = _x(case, 2, seed=9)
    with torch.no_grad():
        y, r = model(x), ref(x)
    assert torch.equal(y, r)
    assert type(model).__mro__[1] is type(ref)  # the library's own class, with the interface mixed in


@pytest.mark.parametrize("case", [k for k in CONVERTED if CASES[k].source == "caffe"])
def test_caffe_outputs_match_opencv(case: str, world: World, tmp_path: Path) -> None:
    from caffe_ref import check_against_opencv

    from zoo.models import converted_folder

    c = CASES[case]
    _load(world, case)
    folder = converted_folder(c.model_id, progress="off")
    if c.model_id.startswith("testdata/"):
        card = registry_card(c.model_id)
        proto = world.testdata / _testdata_path(world, card, ".prototxt")
        weights = world.testdata / _testdata_path(world, card, ".caffemodel")
    else:
        proto, weights = world.testdata / MOBILENET, world.mobilenet_weights
    x = _x(case, 2, seed=7).numpy()
    worst = check_against_opencv(proto, weights, {"data": x}, tmp_path, c.tol, folder=folder)
    assert worst["torch"] <= c.tol and worst["layers"] <= c.tol


def test_keras_outputs_match_tf_keras(world: World) -> None:
    from converters.keras.subproc import tf_keras_predict

    case = "keras_vww_96"
    model = _load(world, case)
    x = _x(case, 4, seed=7)
    card = registry_card(CASES[case].model_id)
    ref = tf_keras_predict(world.testdata / _testdata_path(world, card, ".h5"), x.permute(0, 2, 3, 1).numpy())
    with torch.no_grad():
        y = model(x).numpy()
    assert np.abs(y - ref).max() <= CASES[case].tol * max(1.0, float(np.abs(ref).max()))
    assert (y.argmax(1) == ref.argmax(1)).all()
    assert all(not np.allclose(ref[i], ref[j]) for i in range(4) for j in range(i))  # four different outputs


@pytest.mark.parametrize("case", CONVERTED)
def test_converted_once_into_zoo_home_then_reused(case: str, world: World) -> None:
    import json

    c = CASES[case]
    first = _load(world, case)  # the first load of this case converts (unless an earlier test did)
    rec = world.first[case]
    new = sorted(set(rec["after"]) - set(rec["before"]))
    prefix = c.model_id.replace("/", "--") + "-"
    assert len(new) == 1 and new[0].startswith(prefix), new  # one folder, converted on first use
    assert [n for n in rec["after"] if n.startswith(prefix)] == new
    folder = world.home / "converted" / new[0]
    card = json.loads((folder / "card.json").read_text())
    assert card["provenance"]["registry_id"] == c.model_id
    assert card["default_cut"] == c.default_cut and first.default_cut == c.default_cut
    if c.model_id.startswith("testdata/"):  # the registry card's head fields travel with the model
        reg = registry_card(c.model_id)
        assert (card["classifier"], card["num_classes"]) == (reg["classifier"], reg["num_classes"])
        assert first.classifier == reg["classifier"]
        assert card["labels"] == reg["labels"]
    second = zoo.load(c.model_id, progress="off")
    now = _converted(world.home)
    mine = {n: v for n, v in now.items() if n.startswith(prefix)}
    assert mine == {new[0]: rec["after"][new[0]]}  # the same folder (inode), card.json not rewritten
    assert not [p for p in (world.home / "converted").iterdir() if p.name.startswith(".")]  # no temporaries
    x = _x(case, 2)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(_outs(first(x)), _outs(second(x)), strict=True))
