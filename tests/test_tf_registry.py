"""TF-slim registry entries end to end (issue 12): pull through a loopback mirror, convert, and
the 1001-class background offset.

One TensorFlow subprocess (tests/tf_slim_fixtures.py) builds tf_slim's resnet_v2_50 (1001
classes, as the slim zoo publishes it; at 112 px to keep the test short) with every variable
re-randomized, saves a V2 checkpoint and records TensorFlow's logits; a second (``python
tests/test_tf_registry.py tf-run``, below) re-saves it as a V1 checkpoint and runs TF on the
zoo-preprocessed image files. Each checkpoint is packed as the slim zoo publishes it
(``resnet_v2_50_2017_04_14.tar.gz``) and served by a real HTTP server on 127.0.0.1 in the mirror
layout (``ZOO_MIRROR``; origins routed to a dead proxy). The registry is a one-model
``ZOO_REGISTRY``: the bundled ``tf-slim/resnet_v2_50`` card (labels ``imagenet-1001``) at the
smaller input size. ``zoo pull`` and ``zoo convert`` run as CLI subprocesses; TensorFlow never
enters the pytest process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requires
from test_features import zoo_cli
from tf_slim_fixtures import tf_env

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

MODEL, NET, SIZE = "tf-slim/resnet_v2_50", "resnet_v2_50", 112
ARCHIVE_PATH = "/download.tensorflow.org/models/resnet_v2_50_2017_04_14.tar.gz"


def tf_run(prefix: str, name: str, kwargs_json: str, x_npy: str, out_npy: str, v1_prefix: str) -> None:
    """(TensorFlow side) restore slim ``name`` from the V2 ``prefix``, save it again as V1 at
    ``v1_prefix`` and frozen beside it (``frozen.pb``, tensor names in ``frozen.json``), and write
    its outputs on the NHWC images in ``x_npy`` to ``out_npy``."""
    from converters.tf._worker import build_slim, tf_modules

    tf, tf_slim = tf_modules()
    v1 = tf.compat.v1
    xs = np.load(x_npy)
    g = tf.Graph()
    with g.as_default():
        x, y, _ = build_slim(tf, tf_slim, name, json.loads(kwargs_json), xs.shape[1], xs.shape[2])
        v1.train.get_or_create_global_step()
        with v1.Session(graph=g) as sess:
            v1.train.Saver().restore(sess, prefix)
            np.save(out_npy, np.asarray(sess.run(y, {x: xs}), np.float32))
            saver = v1.train.Saver(write_version=v1.train.SaverDef.V1)
            saver.save(sess, v1_prefix, write_meta_graph=False, write_state=False)
            # and frozen (variables folded into constants), as a GraphDef .pb
            frozen = v1.graph_util.convert_variables_to_constants(sess, g.as_graph_def(), [y.op.name])
            pb = Path(v1_prefix).parent / "frozen.pb"
            pb.write_bytes(frozen.SerializeToString())
            (pb.parent / "frozen.json").write_text(json.dumps({"output": y.name, "input": x.name}))


def _images(d: Path) -> list[Path]:
    """Real image files of several sizes and modes (PNG, JPEG), with structure, not flat noise."""
    from PIL import Image

    rng = np.random.default_rng(7)
    d.mkdir(parents=True, exist_ok=True)
    out = []
    for i, (w, h) in enumerate([(260, 300), (224, 224), (400, 256), (300, 500), (256, 256), (320, 240)]):
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([(xx * (i + 1)) % 256, (yy * (i + 2)) % 256, ((xx + yy) * (3 + i)) % 256], -1)
        a = np.clip(base + rng.normal(0, 40, base.shape), 0, 255).astype(np.uint8)
        p = d / f"img{i}.{'jpg' if i % 2 else 'png'}"
        Image.fromarray(a).save(p)
        out.append(p)
    return out


def _tar(archive: Path, files: list[Path]) -> bytes:
    with tarfile.open(archive, "w:gz", compresslevel=1) as t:
        for f in files:
            t.add(f, arcname=f.name)
    return archive.read_bytes()


def _card(member_names: list[str]) -> dict[str, Any]:
    from servers import registry_card

    card = registry_card(MODEL)
    assert card["labels"] == {"set": "imagenet-1001", "count": 1001}  # as the slim zoo publishes it
    card["architecture"]["kwargs"]["input_size"] = SIZE  # smaller than slim's 299: a faster test
    card["preprocess"].update(input_size=[SIZE, SIZE, 3], crop=SIZE, resize=round(SIZE / 0.875))
    f = card["files"][0]
    card["files"] = [{**f, "member": m} for m in member_names]
    return card


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Any:
    requires.tensorflow("tf_slim")
    from servers import TestServer, offline_env
    from tf_slim_fixtures import make_slim_checkpoint

    from zoo.cards import ModelCard
    from zoo.data import load_images, transform_for

    d = tmp_path_factory.mktemp("tfreg")
    prefix = make_slim_checkpoint(d / "ckpt", NET, {"num_classes": 1001}, size=SIZE)
    v2_files = [Path(str(prefix) + ".index"), *sorted(prefix.parent.glob(prefix.name + ".data-*"))]
    card = _card([p.name for p in v2_files])
    images = _images(d / "images")
    # the registry card's preprocessing (zoo.data), as zoo predict applies it; TF gets the same arrays
    x_img = load_images(images, transform_for(None, card=ModelCard.from_dict(card)))[0].numpy()
    np.save(d / "imgs.npy", np.ascontiguousarray(x_img.transpose(0, 2, 3, 1)))
    v1_prefix = d / "v1" / f"{NET}.ckpt"
    v1_prefix.parent.mkdir()
    args = [str(prefix), NET, json.dumps({"num_classes": 1001}), str(d / "imgs.npy"), str(d / "tf.npy")]
    p = subprocess.run(
        [sys.executable, str(Path(__file__)), "tf-run", *args, str(v1_prefix)],
        env=tf_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    with TestServer() as server:
        env = {**os.environ, **offline_env(d / "home"), "ZOO_MIRROR": server.url}
        env["HTTP_PROXY"] = env["HTTPS_PROXY"]  # nothing leaves the machine; the mirror is loopback
        for k in ("ZOO_OFFLINE", "HF_HUB_OFFLINE"):
            env.pop(k, None)
        reg = d / "registry.json"
        env["ZOO_REGISTRY"] = str(reg)
        reg.write_text(json.dumps({"schema_version": 1, "models": [card]}))
        server.files[ARCHIVE_PATH] = _tar(d / "v2.tar.gz", v2_files)
        yield {
            "d": d,
            "env": env,
            "server": server,
            "card": card,
            "v1_prefix": v1_prefix,
            "x": np.load(d / "ckpt" / "x.npy"),
            "ref": np.load(d / "ckpt" / "ref.npy"),
            "images": images,
            "x_img": x_img,
            "tf_img": np.load(d / "tf.npy"),
        }


def _tol(ref: np.ndarray) -> float:
    return 1e-5 * max(1.0, float(np.abs(ref).max()))


@pytest.fixture(scope="module")
def converted_v2(world: dict[str, Any]) -> Path:
    env, out = world["env"], world["d"] / "out_v2"
    r = zoo_cli(env, "pull", MODEL)
    assert r.returncode == 0, r.stderr
    assert world["server"].served(ARCHIVE_PATH) == len(world["server"].files[ARCHIVE_PATH])
    r = zoo_cli(env, "convert", MODEL, str(out))
    assert r.returncode == 0, r.stderr
    return out


@pytest.mark.slow
def test_pull_then_convert_v2_matches_tensorflow(world: dict[str, Any], converted_v2: Path) -> None:
    import torch

    import zoo

    m = zoo.load(converted_v2)
    x = np.ascontiguousarray(world["x"].transpose(0, 3, 1, 2))
    with torch.no_grad():
        y = m(torch.from_numpy(x)).numpy()
    ref = world["ref"]
    assert ref.shape == (2, 1, 1, 1001) and y.shape == (2, 1001, 1, 1)  # slim's resnet logits, unsqueezed
    y = y.transpose(0, 2, 3, 1)
    assert np.abs(y - ref).max() <= _tol(ref)
    card = json.loads((converted_v2 / "card.json").read_text())
    assert card["provenance"]["registry_id"] == MODEL
    assert card["labels"] == {"set": "imagenet-1001", "count": 1001} and card["num_classes"] == 1001
    pre = card["preprocess"]
    want = world["card"]["preprocess"]
    assert pre["layout"] == "NCHW" and pre["input_size"] == [3, SIZE, SIZE]
    assert (pre["mean"], pre["scale"], pre["mode"]) == (want["mean"], want["scale"], "inception")
    assert card["architecture"]["details"]["slim"] == f"slim:{NET}?num_classes=1001&input_size={SIZE}"


@pytest.mark.slow
def test_predict_names_are_tensorflow_argmax_minus_background(
    world: dict[str, Any], converted_v2: Path
) -> None:
    """``zoo predict`` / ``zoo.predict`` on a 1001-class model: TF's argmax i is imagenet-1k name i-1."""
    import zoo
    from zoo.data import load_images, transform_for

    x = load_images(world["images"], transform_for(converted_v2))[0].numpy()
    assert np.array_equal(x, world["x_img"])  # the folder keeps the registry card's preprocessing
    tf_logits = world["tf_img"].reshape(len(world["images"]), -1)
    imagenet = json.loads((ROOT / "zoo" / "data" / "labels" / "imagenet-1k.json").read_text())
    names = ["background" if i == 0 else imagenet[i - 1] for i in tf_logits.argmax(1)]
    assert sum(n != "background" for n in names) >= 1
    api = zoo.predict(converted_v2, world["images"], top_k=3)
    assert [r["top"][0]["label"] for r in api] == names
    assert [r["top"][0]["index"] for r in api] == tf_logits.argmax(1).tolist()
    # the CLI on the registry id: pulled (cached), converted into $ZOO_HOME/converted/ on first use
    r = zoo_cli(world["env"], "predict", MODEL, *map(str, world["images"]), "--json")
    assert r.returncode == 0, r.stderr
    assert [row["top"][0]["label"] for row in json.loads(r.stdout)] == names


@pytest.mark.slow
def test_pull_then_convert_v1_matches_tensorflow(world: dict[str, Any], tmp_path: Path) -> None:
    """The same card with a V1 checkpoint member (as the 2016 slim archives hold)."""
    import torch

    import zoo

    v1 = world["v1_prefix"]
    server, env = world["server"], dict(world["env"])
    env["ZOO_HOME"] = str(tmp_path / "home")
    path = "/download.tensorflow.org/models/v1/resnet_v2_50_2017_04_14.tar.gz"
    server.files[path] = _tar(tmp_path / "v1.tar.gz", [Path(v1)])
    card = _card([f"{NET}.ckpt"])
    card["files"][0]["urls"] = ["http:/" + path]  # the mirror layout is /<host>/<path>
    reg = tmp_path / "registry.json"
    reg.write_text(json.dumps({"schema_version": 1, "models": [card]}))
    env["ZOO_REGISTRY"] = str(reg)
    out = tmp_path / "out_v1"
    r = zoo_cli(env, "convert", MODEL, str(out))
    assert r.returncode == 0, r.stderr
    assert server.served(path) == len(server.files[path])
    m = zoo.load(out)
    x = np.ascontiguousarray(world["x"].transpose(0, 3, 1, 2))
    with torch.no_grad():
        y = m(torch.from_numpy(x)).numpy().transpose(0, 2, 3, 1)
    assert np.abs(y - world["ref"]).max() <= _tol(world["ref"])


@pytest.mark.slow
def test_frozen_graph_converts_to_the_same_model(
    world: dict[str, Any], converted_v2: Path, tmp_path: Path
) -> None:
    """The same randomized resnet_v2_50 frozen into a GraphDef: the same module names, layer map
    and weights as its checkpoint's conversion, and TensorFlow's numbers."""
    import torch
    from safetensors.numpy import load_file

    import zoo
    from zoo.convert import convert

    pb = world["v1_prefix"].parent / "frozen.pb"
    names = json.loads((pb.parent / "frozen.json").read_text())
    out = convert(pb, tmp_path / "pb", inputs=[names["input"]], outputs=[names["output"]])
    gp = json.loads((out / "graph.json").read_text())
    gc = json.loads((converted_v2 / "graph.json").read_text())
    # slim's end points (resnet_v2_50/block1..4, aliases of a unit's output) live in tf_slim's
    # Python end_points dict, not in the graph: the checkpoint's conversion has them as identity
    # nodes, the frozen graph's cannot; every other node is the same
    aliases = [n["name"] for n in gc["nodes"] if n["type"] == "EndPoint"]
    assert aliases == [f"{NET}/block{i}" for i in (1, 2, 3, 4)]
    gc["nodes"] = [n for n in gc["nodes"] if n["type"] != "EndPoint"]
    assert [n["module"] for n in gp["nodes"]] == [n["module"] for n in gc["nodes"]]
    assert [n["name"] for n in gp["nodes"]] == [n["name"] for n in gc["nodes"]]
    assert [n["attrs"] for n in gp["nodes"]] == [n["attrs"] for n in gc["nodes"]]

    def rows(f: Path) -> list[tuple[str, str]]:
        return [(r["source"], r["target"]) for r in json.loads((f / "layermap.json").read_text())["rows"]]

    assert rows(out) == rows(converted_v2)
    sp, sc = load_file(out / "model.safetensors"), load_file(converted_v2 / "model.safetensors")
    assert sorted(sp) == sorted(sc) and all(np.array_equal(sp[k], sc[k]) for k in sp)
    x = np.ascontiguousarray(world["x"].transpose(0, 3, 1, 2))
    with torch.no_grad():
        y = zoo.load(out)(torch.from_numpy(x)).numpy().transpose(0, 2, 3, 1)
    assert np.abs(y - world["ref"]).max() <= _tol(world["ref"])


def _class_images(d: Path, per_class: int = 6) -> Path:
    """Two classes of real PNG files that differ in colour (red-ish vs blue-ish), sizes varied."""
    from PIL import Image

    rng = np.random.default_rng(3)
    for c, tint in (("red", (200, 60, 60)), ("blue", (60, 60, 200))):
        (d / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            h, w = int(rng.integers(100, 160)), int(rng.integers(100, 160))
            a = np.clip(np.array(tint) + rng.normal(0, 30, (h, w, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(a).save(d / c / f"{i}.png")
    return d


@pytest.mark.slow
def test_reuse_layer_on_a_converted_slim_model(
    world: dict[str, Any], converted_v2: Path, tmp_path: Path
) -> None:
    """``zoo layers``, features at a scope name, a probe and a fine-tune on the converted net."""
    import torch

    import zoo
    from zoo.data import load_images, transform_for

    cut = f"{NET}/block1"  # slim's end point; the random net's activations grow ~10x per block after it
    rows = zoo.layers(converted_v2)
    assert cut in [r["name"] for r in rows]
    data = _class_images(tmp_path / "data")
    home = tmp_path / "home"
    f = zoo.features(converted_v2, data, cut=cut, val_fraction=0.5, seed=0, workers=0, home=home)
    assert f.X["train"].shape == (6, 256) and f.X["val"].shape == (6, 256)
    # the cached rows are the cut model's outputs, averaged over space
    files = sorted(data.rglob("*.png"))
    x = load_images(files, transform_for(converted_v2))[0]
    with torch.no_grad():
        want = zoo.load(converted_v2).cut(cut)(x).mean((2, 3)).numpy()
    got = np.concatenate([f.X["train"], f.X["val"]])
    nearest = np.abs(got[:, None, :] - want[None, :, :]).max(-1).min(1)
    assert nearest.max() <= 1e-4 * max(1.0, float(np.abs(want).max()))
    probe = zoo.probe(converted_v2, data, cut=cut, val_fraction=0.5, seed=0, workers=0, home=home)
    assert probe.accuracy >= 5 / 6  # the colours are far apart, even for random conv weights
    run = zoo.finetune(
        converted_v2,
        data,
        tmp_path / "run",
        cut=cut,
        epochs=10,
        lr=0.01,
        batch_size=4,
        cache_features=True,
        workers=0,
        val_fraction=0.5,
        seed=0,
        home=home,
    )
    assert run.cache["used"] and len(run.history) == 10  # stage 1 from the features cached above
    assert run.history[-1]["train_loss"] < run.history[0]["train_loss"]
    assert run.accuracy >= 5 / 6


def test_refusals_name_the_reason(tmp_path: Path) -> None:
    from converters.tf.to_torchvision import measured_avgpool_difference, slim_to_torchvision
    from zoo.errors import ConversionError

    d = measured_avgpool_difference()
    assert abs(d - 5 / 9) < 1e-6  # corner: 4 of 9 window cells are padding
    for net, tv, words in (
        ("inception_v3", "inception_v3", "count_include_pad=True"),
        ("resnet_v1_50", "resnet50", "strides in the last unit of each block"),
    ):
        f = tmp_path / net
        f.mkdir()
        (f / "graph.json").write_text(json.dumps({"name": net, "nodes": [], "inputs": []}))
        with pytest.raises(ConversionError, match=words):
            slim_to_torchvision(f, tv)
    with pytest.raises(ConversionError, match="no verified TF-slim -> torchvision mapping"):
        slim_to_torchvision(tmp_path, "mobilenet_v2")


def _bundled() -> dict[str, dict[str, Any]]:
    reg = json.loads((ROOT / "registry.json").read_text())
    return {m["id"]: m for m in reg["models"] if m["source"] in ("tf-slim", "tensorflow")}


def test_registry_entries_are_pinned_sourced_and_labelled() -> None:
    cards = _bundled()
    want = {
        *(f"tf-slim/{n}" for n in ("inception_v1", "inception_v2", "inception_v3", "inception_v4")),
        "tf-slim/inception_resnet_v2",
        *(f"tf-slim/resnet_v{v}_{d}" for v in (1, 2) for d in (50, 101, 152)),
        "tf-slim/vgg_16",
        "tf-slim/vgg_19",
        "tf-slim/mobilenet_v1_1.0_224",
        "tf-slim/mobilenet_v2_1.0_224",
        "tensorflow/inception_v3_2015_12_05",
    }
    assert set(cards) == want
    src = json.loads((ROOT / "tools" / "registry_sources" / "tf_slim.json").read_text())
    for c in cards.values():
        assert c["framework"] == "tensorflow"
        for f in c["files"]:  # nobody publishes a checksum: none invented, pinned on first pull
            assert f["checksum"]["algo"] is None and f["pin"] == "first-use" and f["member"]
            assert f["urls"][0].startswith("http") and f["urls"][0].endswith(f["name"])
        if c["source"] != "tf-slim":
            continue
        net = c["architecture"]["name"]
        assert c["architecture"]["kind"] == "slim" and c["format"] == "ckpt"
        n = c["num_classes"]
        assert c["architecture"]["kwargs"]["num_classes"] == n == c["labels"]["count"]
        assert c["labels"]["set"] == ("imagenet-1001" if n == 1001 else "imagenet-1k")
        assert (n == 1000) == net.startswith(("vgg", "resnet_v1"))
        size = c["architecture"]["kwargs"]["input_size"]
        assert c["preprocess"]["input_size"] == [size, size, 3]
        assert c["preprocess"]["mode"] == ("vgg" if n == 1000 else "inception")
        for m in c["metrics"]:
            key = "mobilenet_v2_readme" if "mobilenet/README" in m["source"] else "readme"
            assert f"@{src[key]['commit']} " in m["source"] and m["resolution"] == size
        assert {m["name"] for m in c["metrics"]} == {"top1", "top5"}
    v3 = cards["tf-slim/inception_v3"]
    assert v3["files"][0]["urls"] == ["http://download.tensorflow.org/models/inception_v3_2016_08_28.tar.gz"]
    assert v3["files"][0]["member"] == "inception_v3.ckpt"
    assert cards["tf-slim/vgg_16"]["preprocess"]["mean"] == [123.68, 116.78, 103.94]
    assert cards["tf-slim/vgg_16"]["preprocess"]["scale"] == 1.0
    g = cards["tensorflow/inception_v3_2015_12_05"]
    assert (g["inputs"], g["outputs"], g["default_cut"]) == (["Mul:0"], ["softmax:0"], "pool_3/_reshape:0")
    assert g["files"][0]["member"] == "classify_image_graph_def.pb" and g["num_classes"] == 1008
    assert g["architecture"] == {"kind": "graphdef", "name": "classify_image_graph_def.pb"}


def test_imagenet_1001_is_background_then_imagenet_1k() -> None:
    labels = ROOT / "zoo" / "data" / "labels"
    k = json.loads((labels / "imagenet-1k.json").read_text())
    assert json.loads((labels / "imagenet-1001.json").read_text()) == ["background", *k]


def test_convert_refuses_nets_tf_slim_does_not_ship(tmp_path: Path) -> None:
    from converters.tf.cards import convert_card, nchw_preprocess
    from zoo.cards import ModelCard
    from zoo.errors import ConversionError

    cards = _bundled()
    for cid, net in (
        ("tf-slim/mobilenet_v1_1.0_224", "mobilenet_v1"),
        ("tf-slim/inception_v4", "inception_v4"),
    ):
        card = ModelCard.from_dict(cards[cid])
        with pytest.raises(ConversionError, match=f"tf_slim ships no {net} net"):
            convert_card(card, [], tmp_path / "out")
    assert not (tmp_path / "out").exists()
    r = zoo_cli(  # refused before any download (origins unreachable: a pull would fail differently)
        {
            **os.environ,
            "ZOO_HOME": str(tmp_path / "home"),
            "HTTP_PROXY": "http://127.0.0.1:9",
            "ZOO_RETRIES": "1",
        },
        "convert",
        "tf-slim/mobilenet_v2_1.0_224",
        str(tmp_path / "out2"),
    )
    assert r.returncode != 0 and "tf_slim ships no mobilenet_v2 net" in r.stderr, r.stderr
    assert not (tmp_path / "home" / "blobs").exists()
    pre = nchw_preprocess(ModelCard.from_dict(cards["tf-slim/inception_v3"]).preprocess)
    assert pre is not None and pre.layout == "NCHW" and pre.input_size == (3, 299, 299)


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    sys.path.insert(0, str(ROOT))
    {"tf-run": tf_run}[cmd](*args)
