"""Cached features (zoo/features.py, `zoo features`): one pass of the real Caffe LeNet
(../shared/testdata/caffe/lenet_mnist, served by a loopback mirror as testdata/lenet_mnist) cut at
a layer over scikit-learn's digits written as an ImageFolder; the cache key, reuse without a
forward pass, damaged shards, concurrent extraction, and bad input."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from servers import TestServer, mirror_testdata_card, offline_env, registry_card

ROOT = Path(__file__).resolve().parents[1]
LENET = "testdata/lenet_mnist"


def digit_array(im: np.ndarray) -> np.ndarray:
    """One 8x8 digit (0-16) as an MNIST-like 28x28 uint8 image: 20x20 (bilinear) centred
    (tests/test_caffe_real.py's _digits, rounded to 8 bits)."""
    import cv2

    big = cv2.resize((im * (255.0 / 16.0)).astype(np.float32), (20, 20), interpolation=cv2.INTER_LINEAR)
    a = np.zeros((28, 28), np.uint8)
    a[4:24, 4:24] = np.clip(np.rint(big), 0, 255).astype(np.uint8)
    return a


def write_digits(out: Path, indices: dict[str, list[int]]) -> Path:
    """ImageFolder ``out/<split>/<digit>/<i>.png`` of scikit-learn's digits (``split`` may be "":
    one folder of class folders)."""
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    for split, idx in indices.items():
        for i in idx:
            p = out / split / str(d.target[i]) / f"{i:04d}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(digit_array(d.images[i]), "L").save(p)
    return out


def small_digits(out: Path, per_class: int = 8, classes: int = 4) -> Path:
    """``per_class`` images of each of the digits 0..classes-1, one folder of class folders."""
    from sklearn.datasets import load_digits

    y = load_digits().target
    idx = [int(i) for c in range(classes) for i in np.flatnonzero(y == c)[:per_class]]
    return write_digits(out, {"": idx})


@contextlib.contextmanager
def lenet_world(testdata: Path, tmp: Path, ids: tuple[str, ...] = (LENET,)) -> Iterator[dict[str, Any]]:
    """ZOO_HOME + a loopback mirror serving the real files of the testdata cards ``ids`` (the real
    LeNet), set in os.environ while open."""
    home = tmp / "zoo_home"
    home.mkdir()
    with TestServer() as server, pytest.MonkeyPatch.context() as mp:
        for model_id in ids:
            mirror_testdata_card(server, registry_card(model_id), testdata)
        env = {**offline_env(home), "ZOO_MIRROR": server.url}
        env["HTTP_PROXY"] = env["HTTPS_PROXY"]  # nothing leaves the machine; the mirror is loopback
        for key in ("ZOO_OFFLINE", "HF_HUB_OFFLINE"):
            mp.delenv(key, raising=False)
        for k, v in env.items():
            mp.setenv(k, v)
        yield {"home": home, "env": dict(os.environ), "tmp": tmp}


@pytest.fixture(scope="module")
def lenet_env(testdata: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with lenet_world(testdata, tmp_path_factory.mktemp("features")) as world:
        yield world


def zoo_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zoo.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
    )


@pytest.fixture(scope="module")
def digits(lenet_env) -> Path:
    return small_digits(lenet_env["tmp"] / "digits")


def _direct(folder_or_id: str, layer: str, paths: list[Path]) -> np.ndarray:
    """The cut model run by hand on the card's preprocessing of ``paths``."""
    import torch

    import zoo
    from zoo.data import load_images, transform_for

    x, used, skipped, _ = load_images(paths, transform_for(folder_or_id))
    assert len(used) == len(paths) and not skipped
    with torch.no_grad():
        return zoo.load(folder_or_id).cut(layer).eval()(x).numpy()


class _CountForwards:
    """Counts every nn.Module forward call in this process (a global forward hook)."""

    def __enter__(self) -> _CountForwards:
        import torch

        self.calls = 0

        def hook(*_a: Any) -> None:
            self.calls += 1

        self.handle = torch.nn.modules.module.register_module_forward_hook(hook)
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.remove()


def test_features_equal_a_direct_forward_pass_and_are_reused(lenet_env, digits: Path) -> None:
    import zoo
    from zoo.data import scan

    with _CountForwards() as first:
        f = zoo.features(LENET, digits, cut="ip1")
    assert not f.reused and first.calls > 0
    assert f.classes == ["0", "1", "2", "3"] and f.cut == "ip1" and f.splits == ["train"]
    assert f.path == lenet_env["home"] / "features" / f.key
    x, y = f.X["train"], f.y["train"]
    assert isinstance(x, np.memmap) and x.dtype == np.float32 and x.shape == (32, 500)
    items = scan(digits)["train"]
    np.testing.assert_array_equal(y, [lab for _, lab in items])
    ref = _direct(LENET, "ip1", [p for p, _ in items])
    np.testing.assert_allclose(x, ref, rtol=1e-5, atol=1e-5)
    assert float(ref.min()) == 0.0  # relu1 (in place on ip1) is part of the cut
    idx = f.index
    assert idx["splits"]["train"]["counts"] == {"0": 8, "1": 8, "2": 8, "3": 8}
    assert idx["output"] == "vector" and idx["skipped"] == []
    assert sorted(p.name for p in f.path.iterdir()) == ["index.json", "train.x.npy", "train.y.npy"]

    with _CountForwards() as second:
        g = zoo.features(LENET, digits, cut="ip1")
    assert g.reused and second.calls == 0  # no forward pass at all
    assert g.key == f.key
    np.testing.assert_array_equal(g.X["train"], x)

    p = zoo.features(LENET, digits, cut="pool2", val_fraction=0.25)  # a feature map: averaged
    assert p.key != f.key and p.index["output"] == "feature map, global average pooled"
    assert p.X["train"].shape == (24, 50) and p.X["val"].shape == (8, 50)
    val = scan(digits, val_fraction=0.25)["val"]
    ref = _direct(LENET, "pool2", [q for q, _ in val]).mean(axis=(2, 3))
    np.testing.assert_allclose(p.X["val"], ref, rtol=1e-5, atol=1e-5)


def test_the_key_follows_cut_preprocessing_weights_and_data(lenet_env, digits: Path, tmp_path: Path) -> None:
    import json
    import shutil

    from zoo.features import cache_key
    from zoo.models import converted_folder

    base = cache_key(LENET, digits, cut="ip1")
    assert cache_key(LENET, digits, cut="ip1") == base  # stable
    assert cache_key(LENET, digits) == base  # ip1 is LeNet's default cut
    assert cache_key(LENET, digits, cut="conv2") != base
    assert cache_key(LENET, digits, cut="ip1", val_fraction=0.25) != base  # another split

    folder = tmp_path / "lenet"
    shutil.copytree(converted_folder(LENET), folder)
    assert cache_key(folder, digits, cut="ip1") == base  # the same weights and card: the same key
    card = json.loads((folder / "card.json").read_text())
    card["preprocess"]["scale"] = 1 / 255
    (folder / "card.json").write_text(json.dumps(card))
    assert cache_key(folder, digits, cut="ip1") != base  # the preprocessing

    data = tmp_path / "digits"
    shutil.copytree(digits, data)
    before = cache_key(LENET, data, cut="ip1")
    one = sorted(data.rglob("*.png"))[5]
    st = one.stat()
    os.utime(one, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # the same bytes, touched
    touched = cache_key(LENET, data, cut="ip1")
    assert touched != before
    from PIL import Image

    Image.fromarray(np.full((28, 28), 7, np.uint8), "L").save(one)  # other bytes
    assert cache_key(LENET, data, cut="ip1") not in (before, touched)


def test_a_damaged_shard_is_found_and_rebuilt(lenet_env, digits: Path) -> None:
    import zoo

    f = zoo.features(LENET, digits, cut="ip1", val_fraction=0.5)
    good = np.array(f.X["val"])
    shard = f.path / "val.x.npy"
    raw = bytearray(shard.read_bytes())
    raw[-7] ^= 0xFF  # one byte of one feature
    shard.write_bytes(bytes(raw))
    r = zoo_cli(
        lenet_env["env"], "features", LENET, "--data", str(digits), "--cut", "ip1", "--val-fraction", "0.5"
    )
    assert r.returncode == 0, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "damaged" in lines[0] and "val.x.npy" in lines[0], r.stderr
    assert r.stdout.startswith(f"extracted features: {f.path}")
    g = zoo.features(LENET, digits, cut="ip1", val_fraction=0.5)
    assert g.reused and g.key == f.key
    np.testing.assert_array_equal(g.X["val"], good)
    assert [p.name for p in (lenet_env["home"] / "features").iterdir() if p.name.startswith(".")] == []


def test_two_processes_extract_one_entry(lenet_env, tmp_path: Path) -> None:
    data = small_digits(tmp_path / "d", per_class=6, classes=3)
    home = tmp_path / "home"
    shutil_env = {**lenet_env["env"], "ZOO_HOME": str(home)}
    cmd = [sys.executable, "-m", "zoo.cli", "features", LENET, "--data", str(data)]
    procs = [
        subprocess.Popen(
            cmd, cwd=ROOT, env=shutil_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e for _, e in outs]
    firsts = sorted(o.splitlines()[0].split(":")[0] for o, _ in outs)
    assert firsts == ["extracted features", "reused the cached features (no forward pass)"], outs
    entries = list((home / "features").iterdir())
    assert len(entries) == 1 and not entries[0].name.startswith("."), entries
    import zoo

    f = zoo.features(LENET, data, home=home)
    assert f.reused and f.path == entries[0] and f.X["train"].shape == (18, 500)


@pytest.mark.slow
def test_torchrun_two_ranks_give_the_entry_one_process_gives(lenet_env, tmp_path: Path) -> None:
    """`torchrun --nproc_per_node 2 zoo features` (gloo on CPU): each rank extracts a share, rank 0
    joins them; the entry equals one process's (same key, same rows in the same order) and a
    later single-process call reuses it. An odd count per split gives the ranks unequal shares."""
    import json

    import zoo

    data = small_digits(tmp_path / "d", per_class=7, classes=3)
    from PIL import Image

    (data / "1" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)  # skipped, counted
    Image.fromarray(np.zeros((28, 28), np.uint8), "L").save(data / "2" / "blank.png")
    home = tmp_path / "home"
    env = {**lenet_env["env"], "ZOO_HOME": str(home), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += [
        "-m",
        "zoo.cli",
        "features",
        LENET,
        "--data",
        str(data),
        "--val-fraction",
        "0.3",
        "--workers",
        "0",
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("extracted features: ") == 1, r.stdout  # rank 0 reports, once
    entries = [p for p in (home / "features").iterdir()]
    assert len(entries) == 1 and not entries[0].name.startswith("."), entries
    assert sorted(p.name for p in entries[0].iterdir()) == [
        "index.json",
        "train.x.npy",
        "train.y.npy",
        "val.x.npy",
        "val.y.npy",
    ]
    index = json.loads((entries[0] / "index.json").read_text())
    assert index["ranks"] == 2 and [s[0].endswith("broken.png") for s in index["skipped"]] == [True]

    one_home = tmp_path / "one"
    one = zoo.features(LENET, data, val_fraction=0.3, home=one_home, workers=0)
    assert not one.reused and one.key == entries[0].name and one.index["ranks"] == 1
    both = zoo.features(LENET, data, val_fraction=0.3, home=home, workers=0)
    assert both.reused and both.key == one.key
    for split in ("train", "val"):
        a, b = both.index["splits"][split], one.index["splits"][split]
        assert {k: v for k, v in a.items() if k != "x_sha256"} == {
            k: v for k, v in b.items() if k != "x_sha256"
        }
        assert both.X[split].shape[0] == len(one.y[split]) > 0
        np.testing.assert_array_equal(both.y[split], one.y[split])  # the same rows in the same order
        # other batch sizes (a share per rank): the same numbers up to float rounding
        np.testing.assert_allclose(both.X[split], one.X[split], rtol=1e-5, atol=1e-5)


def test_bad_cut_is_one_line_and_writes_nothing(lenet_env, tmp_path: Path) -> None:
    data = small_digits(tmp_path / "d", per_class=3, classes=2)
    home = tmp_path / "home"
    env = {**lenet_env["env"], "ZOO_HOME": str(home)}
    r = zoo_cli(env, "features", LENET, "--data", str(data), "--cut", "ip11")
    assert r.returncode != 0
    assert r.stderr.strip().splitlines() == [
        "zoo: error: no layer 'ip11' in this model (close: ip1, ip2)"
    ] or (len(r.stderr.strip().splitlines()) == 1 and "ip1" in r.stderr and "ip11" in r.stderr), r.stderr
    assert not (home / "features").exists() or not any((home / "features").iterdir())


def test_outputs_that_are_not_features_are_refused() -> None:
    import torch

    from zoo.errors import ZooError
    from zoo.features import _as_features

    v, kind = _as_features(torch.ones(3, 5), 3, "fc")
    assert v.shape == (3, 5) and kind == "vector"
    m, kind = _as_features(torch.arange(24.0).reshape(2, 3, 2, 2), 2, "conv")
    assert kind.startswith("feature map") and torch.equal(
        m, torch.tensor([[1.5, 5.5, 9.5], [13.5, 17.5, 21.5]])
    )
    for out, why in [
        (torch.ones(3, 4, dtype=torch.long), "not float"),
        (torch.ones(4, 5), "not the batch of 3"),
        (torch.ones(3, 7, 5), "neither a feature vector"),
        ((torch.ones(3, 5), torch.ones(3, 5)), "is a tuple"),
    ]:
        with pytest.raises(ZooError, match=why) as e:
            _as_features(out, 3, "x")
        assert "\n" not in str(e.value)


def test_cache_prune_drops_broken_and_leftover_feature_folders(tmp_path: Path) -> None:
    import json
    import time

    from zoo import cache
    from zoo.features import list_feature_entries

    root = tmp_path / "features"
    good, broken = root / ("a" * 32), root / ("b" * 32)
    old_tmp, new_tmp = root / f".{'c' * 32}.1234abcd.tmp", root / f".{'d' * 32}.5678abcd.tmp"
    for d in (good, broken, old_tmp, new_tmp):
        d.mkdir(parents=True)
        np.save(d / "train.x.npy", np.zeros((4, 3), np.float32))
    (good / "index.json").write_text(
        json.dumps({"model": "m", "cut": "fc", "splits": {"train": {"count": 4}}})
    )
    (broken / "index.json").write_text("{not json")
    hour_ago = time.time() - 2 * 3600
    os.utime(old_tmp, (hour_ago, hour_ago))
    rows = list_feature_entries(tmp_path)
    assert [(r.key, r.ok, r.splits) for r in rows] == [("a" * 32, True, {"train": 4}), ("b" * 32, False, {})]
    res = cache.prune(tmp_path)
    assert (res.features, res.blobs) == (2, 0) and res.feature_bytes > 0
    assert "2 feature folder(s)" in str(res)
    assert sorted(p.name for p in root.iterdir()) == sorted([good.name, new_tmp.name])


@pytest.mark.slow  # three CLI processes
def test_cache_ls_lists_feature_entries_and_prune_features_removes_them(lenet_env, tmp_path: Path) -> None:
    import json

    import zoo
    from zoo.features import list_feature_entries

    data = small_digits(tmp_path / "d", per_class=3, classes=2)
    home = tmp_path / "home"
    env = {**lenet_env["env"], "ZOO_HOME": str(home)}
    f = zoo.features(LENET, data, home=home)
    r = zoo_cli(env, "cache", "ls")
    assert r.returncode == 0, r.stderr
    files, feats = r.stdout.split("\n\n")
    assert files.splitlines()[0].split() == ["MODEL", "FILE", "SIZE", "SHA256", "PATH"]
    assert any(line.split()[0] == LENET for line in files.splitlines()[1:]), files
    rows = [line.split() for line in feats.strip().splitlines()]
    assert rows[0] == ["FEATURES", "MODEL", "CUT", "IMAGES", "SIZE", "PATH"]
    assert rows[1][:5] == [f.key[:12], LENET, "ip1", "train", "6"] and rows[1][-1] == str(f.path)
    r = zoo_cli(env, "cache", "ls", "--features", "--json")
    got = json.loads(r.stdout)
    assert [(e["key"], e["cut"], e["splits"], e["ok"]) for e in got] == [(f.key, "ip1", {"train": 6}, True)]

    from zoo import cache

    cache.prune(home)  # an intact entry stays
    assert f.path.is_dir()
    r = zoo_cli(env, "cache", "prune", "--features")
    assert r.returncode == 0 and "1 feature folder(s)" in r.stdout, r.stdout + r.stderr
    assert not f.path.exists()
    assert [e.model_id for e in cache.list_entries(home)] and not list_feature_entries(home)  # files stay
