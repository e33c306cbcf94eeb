"""TF-slim checkpoint -> zoo model folder (issue 12): slim vgg_16, inception_v3, resnet_v1_50,
resnet_v2_50.

TensorFlow runs only in subprocesses (tests/tf_slim_fixtures.py): one builds tf_slim's vgg_16,
one builds the three others, every variable re-randomized, saves them as the slim zoo publishes
them (with ``global_step``; V2 and V1, in ``.tar.gz`` archives) and records TensorFlow's outputs
and end points on 2 random NHWC images. The conversions of the three run in a subprocess where
importing TensorFlow is blocked (the slim graph comes from the converter's own TF worker); every
check here runs without TensorFlow.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requires

pytestmark = pytest.mark.slow
sys.path.insert(0, str(Path(__file__).parent))


MIRROR: Any = None  # the loopback mirror while a fixture pulls through it


def slim_card(card_id: str, name: str, archive: str, members: list[str], spec: dict[str, Any]) -> dict:
    """The bundled ``tf-slim/NAME`` card for a test archive (its members, the test's input size)."""
    from servers import registry_card

    card = registry_card(f"tf-slim/{name}")
    card["id"] = card_id
    card["architecture"]["kwargs"].update(spec["kwargs"], input_size=spec["size"])
    n = spec["kwargs"]["num_classes"]
    card["num_classes"] = n
    card["labels"] = {"set": "imagenet-1001" if n == 1001 else "imagenet-1k", "count": n}
    f = card["files"][0]
    url = f"http://download.tensorflow.org/models/{archive}"
    card["files"] = [{**f, "name": archive, "urls": [url], "member": m} for m in members]
    return card


@contextlib.contextmanager
def mirrored(d: Path, cards: list[dict], files: dict[str, bytes]) -> Iterator[dict[str, str]]:
    """A loopback HTTP server in the ``ZOO_MIRROR`` layout serving ``files`` and the environment
    (private ZOO_HOME, a one-off ZOO_REGISTRY of ``cards``, origins to a dead proxy) that pulls
    through it."""
    global MIRROR
    from servers import TestServer, offline_env

    with TestServer() as server:
        server.files.update(files)
        reg = d / "registry.json"
        reg.write_text(json.dumps({"schema_version": 1, "models": cards}))
        env = {**os.environ, **offline_env(d / "home"), "ZOO_MIRROR": server.url, "ZOO_REGISTRY": str(reg)}
        env["HTTP_PROXY"] = env["HTTPS_PROXY"]  # nothing leaves the machine; the mirror is loopback
        for k in ("ZOO_OFFLINE", "HF_HUB_OFFLINE"):
            env.pop(k, None)
        MIRROR = server
        try:
            yield env
        finally:
            MIRROR = None


@pytest.fixture(scope="module")
def vgg(tmp_path_factory):  # noqa: ANN001, ANN201
    requires.tensorflow("tf_slim")
    from tf_slim_fixtures import make_slim_checkpoint

    from zoo.convert import convert

    d = tmp_path_factory.mktemp("slim")
    # 1001 classes (slim's training setup with a background class; the zoo's VGG has 1000): the
    # torchvision check below drops the background row
    prefix = make_slim_checkpoint(d / "ckpt", "vgg_16", {"num_classes": 1001})
    files = [Path(str(prefix) + ".index"), *sorted(prefix.parent.glob(prefix.name + ".data-*"))]
    tar = d / "vgg_16_2016_08_28.tar.gz"
    with tarfile.open(tar, "w:gz", compresslevel=0) as t:  # the V2 layout; random weights do not compress
        for f in files:
            t.add(f, arcname=f.name)
    spec = {"kwargs": {"num_classes": 1001}, "size": 224}
    card = slim_card("test-slim/vgg_16", "vgg_16", tar.name, [f.name for f in files], spec)
    path = f"/download.tensorflow.org/models/{tar.name}"
    with mirrored(d, [card], {path: tar.read_bytes()}) as env, pytest.MonkeyPatch.context() as mp:
        for k in ("ZOO_HOME", "ZOO_MIRROR", "ZOO_REGISTRY", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"):
            mp.setenv(k, env[k])
        out = convert("test-slim/vgg_16", d / "out", to="all", arch="slim:vgg_16?num_classes=1001")
        assert MIRROR.served(path) == tar.stat().st_size
    # disk: the suite's other 1.6 GB copies of this checkpoint (archive, cache) are not needed again
    tar.unlink()
    shutil.rmtree(d / "home")
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
    assert y.shape == ref.shape == (2, 1001)
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
    assert convs["vgg_16__fc7"].kernel_size == (1, 1) and convs["vgg_16__fc8"].out_channels == 1001
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
    assert card["architecture"]["details"]["slim"] == "slim:vgg_16?num_classes=1001"
    assert card["provenance"]["ignored_variables"] == ["global_step"]
    # slim's end points: the layer scope is the activated output (ReLU and dropout in place)
    feats = m.cut("vgg_16/fc7")
    assert [n["name"] for n in feats.graph["nodes"]][-3:] == [
        "vgg_16/fc7",
        "vgg_16/fc7/Relu",
        "vgg_16/dropout7",
    ]


def test_vgg16_into_torchvision_drops_the_background_row(vgg) -> None:  # noqa: ANN001
    import torch
    import torchvision

    from converters.tf.to_torchvision import slim_to_torchvision

    w = slim_to_torchvision(vgg["out"], "vgg16")
    assert w.dropped == [
        "classifier.6.weight[0] (slim vgg_16/fc8/weights row 0: the background class)",
        "classifier.6.bias[0] (slim vgg_16/fc8/biases row 0: the background class)",
    ]
    row = next(r for r in w.layermap.rows if r.target == "classifier.0.weight")
    assert row.source == "vgg_16/fc6/weights" and row.steps_str() == "permute(3,2,0,1) > reshape(4096,-1)"
    tv = torchvision.models.vgg16(weights=None).eval()
    tv.load_state_dict(w.state, strict=True)  # what load_into_torchvision does
    x = np.ascontiguousarray(vgg["x"].transpose(0, 3, 1, 2))
    with torch.no_grad():
        y = tv(torch.from_numpy(x)).numpy()
    ref = vgg["ref"][:, 1:]  # TF's logits without the background class
    assert y.shape == (2, 1000)
    assert np.abs(y - ref).max() <= 1e-5 * max(1.0, float(np.abs(ref).max()))


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


# inception_v3 below 299 (slim reduces its last pooling kernel), resnets at 112; num_classes as
# slim publishes them (read from the checkpoint where --arch does not give it)
NETS = {
    "inception_v3": {
        "size": 150,
        "kwargs": {"num_classes": 1001},
        "archive": ["v1", "v2"],
        "end_points": ["InceptionV3/Mixed_6e"],
        "arch": "slim:inception_v3?input_size=150",
    },
    "resnet_v1_50": {
        "size": 112,
        "kwargs": {"num_classes": 1000},
        "archive": ["v2"],  # V1 and V2 alike: inception_v3 below, resnet_v2_50 in test_tf_registry
        "bad": True,
        "arch": "slim:resnet_v1_50?num_classes=1000&input_size=112",
    },
    "resnet_v2_50": {
        "size": 112,
        "kwargs": {"num_classes": 1001},
        "archive": ["v2"],
        "end_points": ["resnet_v2_50/block3"],
        "arch": "slim:resnet_v2_50?input_size=112",
    },
}

# convert (V2 -> torch + ONNX, V1 -> torch) and load with TensorFlow blocked in this process
BLOCKED = textwrap.dedent(
    """
    import importlib.abc, importlib.machinery, json, sys, time
    BLOCK = ("tensorflow", "tf_slim", "tf_keras", "keras")
    class Refuse(importlib.abc.Loader):
        def create_module(self, spec):
            raise ImportError("blocked: " + spec.name)
        def exec_module(self, module):
            pass
    class Block(importlib.abc.MetaPathFinder):
        # a spec without origin (torch._dynamo find_spec()s tensorflow); importing it fails
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCK:
                return importlib.machinery.ModuleSpec(name, Refuse(), origin=None)
            return None
    sys.meta_path.insert(0, Block())
    import numpy as np, torch
    import zoo
    from zoo.convert import convert
    times = {}
    for job in json.loads(sys.argv[1]):
        t = time.time()
        convert(job["src"], job["out"], to=job["to"], arch=job["arch"])
        times[job["out"]] = time.time() - t
        x = np.load(job["x"]).transpose(0, 3, 1, 2)
        with torch.no_grad():
            y = zoo.load(job["out"])(torch.from_numpy(np.ascontiguousarray(x))).numpy()
        np.save(job["out"] + "/y_blocked.npy", y)
    bad = [k for k in sys.modules if k.split(".")[0] in BLOCK]
    assert not bad, bad
    print(json.dumps(times))
    """
)


@pytest.fixture(scope="module")
def nets(tmp_path_factory):  # noqa: ANN001, ANN201
    requires.tensorflow("tf_slim")
    from tf_slim_fixtures import make_slim_nets

    d = tmp_path_factory.mktemp("slim_nets")
    t = time.time()
    specs = {k: {a: b for a, b in v.items() if a != "arch"} for k, v in NETS.items()}
    res = make_slim_nets(d / "tf", specs)
    fixture_s = time.time() - t
    jobs, cards, served = [], [], {}
    for name, r in res.items():
        for version, tar in r["archives"].items():  # the published layout
            with tarfile.open(tar) as tf:
                members = tf.getnames()
                tf.extractall(d / "extracted" / name / version, filter="data")  # for list_variables
            r[f"members_{version}"] = members
            ckpt = f"{name}.ckpt" if version == "v1" else "model.ckpt"
            r[f"src_{version}"] = d / "extracted" / name / version / ckpt
            card_id = f"test-slim/{name}_{version}"
            cards.append(slim_card(card_id, name, tar.name, members, NETS[name]))
            served[f"/download.tensorflow.org/models/{tar.name}"] = tar.read_bytes()
            out = d / "out" / f"{name}_{version}"
            r[f"out_{version}"] = out
            to = "all" if version == "v2" else "torch"
            # the registry id: pulled through the loopback mirror, its member converted
            jobs.append({"src": card_id, "out": str(out), "arch": NETS[name]["arch"], "to": to})
            jobs[-1]["x"] = str(r["dir"] / "x.npy")
    with mirrored(d, cards, served) as env:
        p = subprocess.run(
            [sys.executable, "-c", BLOCKED, json.dumps(jobs)],
            capture_output=True,
            text=True,
            env={**env, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
            timeout=900,
        )
        assert p.returncode == 0, p.stderr[-3000:]
        for path in served:
            assert MIRROR.served(path) == len(served[path])  # every archive came through the mirror
    shutil.rmtree(d / "home")  # disk: the pulled archives and members are not needed again
    for r in res.values():
        for tar in r["archives"].values():
            tar.unlink()
    times = json.loads(p.stdout.strip().splitlines()[-1])
    print(f"slim nets: TF fixture {fixture_s:.0f} s, conversions {times}")
    return res


def _nhwc(y: np.ndarray) -> np.ndarray:
    """NCHW [N, C, 1, 1] (resnet logits, as tf_slim returns them: not squeezed) -> TF's NHWC."""
    return y.transpose(0, 2, 3, 1) if y.ndim == 4 else y


def _close(y: np.ndarray, ref: np.ndarray) -> None:
    assert y.shape == ref.shape
    tol = 1e-5 * max(1.0, float(np.abs(ref).max()))
    assert np.abs(y - ref).max() <= tol
    assert (y.reshape(len(y), -1).argmax(1) == ref.reshape(len(ref), -1).argmax(1)).all()


@pytest.mark.parametrize("name", list(NETS))
def test_nets_match_tensorflow(nets, name: str) -> None:  # noqa: ANN001
    import torch

    import zoo
    from converters.torch_onnx import onnx_run

    r = nets[name]
    out = r["out_v2"]
    x = np.ascontiguousarray(r["x"].transpose(0, 3, 1, 2))  # NCHW: the same images
    ref = r["ref"]
    n_cls = NETS[name]["kwargs"]["num_classes"]
    # resnet logits stay [N, 1, 1, C] as tf_slim returns them (NCHW here: [N, C, 1, 1])
    assert ref.shape == ((2, n_cls) if name == "inception_v3" else (2, 1, 1, n_cls))
    with torch.no_grad():
        y = zoo.load(out)(torch.from_numpy(x)).numpy()
    _close(_nhwc(y), ref)
    _close(_nhwc(np.load(out / "y_blocked.npy")), ref)  # converted and run with TF blocked
    yo = onnx_run(out / "model.onnx", x)
    _close(_nhwc(yo), ref)


@pytest.mark.parametrize("name", [n for n, spec in NETS.items() if len(spec["archive"]) == 2])
def test_v1_and_v2_archives_convert_alike(nets, name: str) -> None:  # noqa: ANN001
    from zoo.models import read_state

    r = nets[name]
    assert r["members_v1"] == [f"{name}.ckpt"]
    assert sorted(r["members_v2"]) == ["model.ckpt.data-00000-of-00001", "model.ckpt.index"]
    a = read_state(r["out_v1"] / "model.safetensors")
    b = read_state(r["out_v2"] / "model.safetensors")
    assert set(a) == set(b) and all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)
    assert np.array_equal(np.load(r["out_v1"] / "y_blocked.npy"), np.load(r["out_v2"] / "y_blocked.npy"))


@pytest.mark.parametrize("name", list(NETS))
def test_nets_structure(nets, name: str) -> None:  # noqa: ANN001
    import torch
    from torch import nn

    import zoo
    from converters.tf.checkpoint import list_variables
    from converters.tf.slim import scope_of

    r = nets[name]
    out = r["out_v2"]
    m = zoo.load(out)
    graph = json.loads((out / "graph.json").read_text())
    size = NETS[name]["size"]
    assert graph["inputs"][0]["shape"] == [1, 3, size, size] and graph["layout"] == "NCHW"
    mods = dict(m.named_children())
    for n in graph["nodes"]:  # modules named after the TF scopes, reversibly
        assert scope_of(n["module"]) == n["name"]
    top = "InceptionV3" if name == "inception_v3" else name
    assert all(n["name"].split("/")[0] == top for n in graph["nodes"])
    assert not any(n["name"].startswith(f"{top}/{top}/") for n in graph["nodes"])  # no doubled scope
    bns = [n for n in graph["nodes"] if n["op"] == "keras.batch_norm"]
    assert len(bns) == {"inception_v3": 94, "resnet_v1_50": 53, "resnet_v2_50": 49}[name]
    for n in bns:  # torch BatchNorm2d with TF's epsilon (from the TF op)
        bn = mods[n["module"]]
        assert isinstance(bn, nn.BatchNorm2d) and bn.eps == n["attrs"]["eps"]
        assert n["name"].endswith(("/BatchNorm", "/preact", "/postnorm"))
    eps = {mods[n["module"]].eps for n in bns}
    assert eps == ({np.float32(1e-3).item()} if name == "inception_v3" else {np.float32(1e-5).item()})
    lm = json.loads((out / "layermap.json").read_text())
    targets = {row["target"] for row in lm["rows"]}
    params = dict(m.named_parameters())
    for t in targets:  # every checkpoint weight: a trainable parameter (or a BatchNorm statistic)
        if t.endswith((".running_mean", ".running_var")):
            assert t in dict(m.named_buffers())
        else:
            assert params[t].requires_grad, t
    if name == "inception_v3":  # scale=False: gamma fixed at 1 (a frozen parameter)
        for n in bns:
            w = mods[n["module"]].weight
            assert isinstance(w, nn.Parameter) and not w.requires_grad and torch.all(w == 1)
            assert f"{n['module']}.weight" not in targets
    else:
        assert all(f"{n['module']}.weight" in targets for n in bns)
    # the layer map names each checkpoint variable the output reads, once
    sources = [row["source"] for row in lm["rows"]]
    ckpt = {v.name for v in list_variables(r["src_v2"])}
    card = json.loads((out / "card.json").read_text())
    ignored = card["provenance"]["ignored_variables"]
    assert len(set(sources)) == len(sources) and sorted(set(sources) | set(ignored)) == sorted(ckpt)
    if name == "inception_v3":  # AuxLogits: built by slim at 299, not read by the eval output
        assert "global_step" in ignored and all(
            v.startswith("InceptionV3/AuxLogits/") for v in ignored if v != "global_step"
        )
        assert "InceptionV3/AuxLogits/Conv2d_2a_5x5/weights" in ignored
    else:
        assert ignored == ["global_step"]
    types = {n["type"] for n in graph["nodes"]}
    if name != "inception_v3":  # slim's explicit padding before the stride-2 convs
        pads = [n for n in graph["nodes"] if n["op"] == "tf.pad"]
        assert len(pads) == 4 and "Add" in types and "Mean" in types
        conv = mods[f"{name}__conv1"]
        assert conv.stride == (2, 2) and conv.kernel_size == (7, 7)
    else:
        assert "Concat" in types and "InceptionV3/Mixed_5b" in [n["name"] for n in graph["nodes"]]
    assert card["architecture"]["details"]["slim"] == NETS[name]["arch"]
    assert graph["net_args"]["num_classes"] == NETS[name]["kwargs"]["num_classes"]


def test_cut_at_end_points(nets) -> None:  # noqa: ANN001
    import torch

    import zoo

    for name in ("resnet_v2_50", "inception_v3"):
        r = nets[name]
        m = zoo.load(r["out_v2"])
        x = torch.from_numpy(np.ascontiguousarray(r["x"].transpose(0, 3, 1, 2)))
        for ep, want in r["end_points"].items():
            assert ep in [la.name for la in m.layers()]
            with torch.no_grad():
                got = m.cut(ep)(x).numpy().transpose(0, 2, 3, 1)
            tol = 1e-5 * max(1.0, float(np.abs(want).max()))
            assert got.shape == want.shape and np.abs(got - want).max() <= tol, ep
    # zoo layers OUT lists the scope names
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    p = subprocess.run(
        [sys.executable, "-m", "zoo.cli", "layers", str(nets["resnet_v2_50"]["out_v2"])],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    for scope in ("resnet_v2_50/block3", "resnet_v2_50/block3/unit_6/bottleneck_v2", "resnet_v2_50/logits"):
        assert scope in p.stdout


def test_bad_checkpoints(nets, tmp_path) -> None:  # noqa: ANN001
    from zoo.convert import convert
    from zoo.errors import ConversionError

    r = nets["resnet_v1_50"]
    arch = NETS["resnet_v1_50"]["arch"]
    with pytest.raises(ConversionError) as e:
        convert(r["bad_missing"], tmp_path / "o1", arch=arch)
    msg = str(e.value)
    assert "\n" not in msg and "no variable 'resnet_v1_50/conv1/BatchNorm/gamma'" in msg
    assert not (tmp_path / "o1").exists()
    with pytest.raises(ConversionError) as e:
        convert(r["bad_shape"], tmp_path / "o2", arch=arch)
    msg = str(e.value)
    assert "\n" not in msg and "'resnet_v1_50/conv1/weights'" in msg
    assert "[7, 7, 3, 32]" in msg and "[7, 7, 3, 64]" in msg
    assert not (tmp_path / "o2").exists()


def test_unknown_op_is_named() -> None:
    from converters.tf.slim import build_slim_graph
    from zoo.errors import ConversionError

    def op(name: str, typ: str, inputs: list, shape: list) -> dict:
        return {
            "type": typ,
            "name": name,
            "inputs": inputs,
            "variables": {},
            "consts": {},
            "attrs": {},
            "output_shapes": [shape],
            "consumers": [],
        }

    doc = {
        "ops": [
            op("input", "Placeholder", [], [-1, 8, 8, 3]),
            op("net/act/Erf", "Erf", [["input", 0]], [-1, 8, 8, 3]),
        ],
        "input": "input",
        "output": ["net/act/Erf", 0],
        "variables": [],
    }
    with pytest.raises(ConversionError, match=r"^TF op net/act/Erf: type Erf is not supported") as e:
        build_slim_graph(doc, {})
    assert "\n" not in str(e.value)
