"""`zoo layers` and `zoo predict` (and zoo.layers / zoo.predict) on the real Caffe LeNet
(../shared/testdata/caffe/lenet_mnist, served by a loopback mirror under its registry id
testdata/lenet_mnist), with scikit-learn's digits rendered as MNIST-like 28x28 PNG files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_features import lenet_world
from test_features import zoo_cli as _zoo

ROOT = Path(__file__).resolve().parents[1]
LENET = "testdata/lenet_mnist"
LENET_LAYERS = ["conv1", "pool1", "conv2", "pool2", "ip1", "relu1", "ip2", "prob"]
LENET_SHAPES = [
    [1, 20, 24, 24],
    [1, 20, 12, 12],
    [1, 50, 8, 8],
    [1, 50, 4, 4],
    [1, 500],
    [1, 500],
    [1, 10],
    [1, 10],
]


def _digit_images(out: Path) -> tuple[list[Path], np.ndarray]:
    """scikit-learn's digits as MNIST: 0-16 -> 0-255, 8x8 -> 20x20 (bilinear), centred in 28x28,
    written as 8-bit grey PNGs (tests/test_caffe_real.py's _digits, rounded to 8 bits)."""
    import cv2
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, im in enumerate(d.images):
        big = cv2.resize((im * (255.0 / 16.0)).astype(np.float32), (20, 20), interpolation=cv2.INTER_LINEAR)
        a = np.zeros((28, 28), np.uint8)
        a[4:24, 4:24] = np.clip(np.rint(big), 0, 255).astype(np.uint8)
        p = out / f"{i:04d}.png"
        Image.fromarray(a, "L").save(p)
        paths.append(p)
    return paths, d.target


@pytest.fixture(scope="module")
def world(testdata: Path, tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("reuse")
    with lenet_world(testdata, tmp) as w:  # ZOO_HOME + the loopback mirror serving the real LeNet
        paths, target = _digit_images(tmp / "digits")
        yield {**w, "paths": paths, "target": target}


def test_layers_cli_lists_lenet_and_marks_ip1(world, capsys: pytest.CaptureFixture[str]) -> None:
    r = _zoo(world["env"], "layers", LENET)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["#", "name", "type", "output", "params", "trainable"]
    rows = [ln.split() for ln in lines[1:]]
    assert [row[1] for row in rows] == LENET_LAYERS
    assert [row[3] for row in rows] == ["x".join(map(str, s)) for s in LENET_SHAPES]
    marked = [row[1] for row in rows if ln_has_cut(row)]
    assert marked == ["ip1"]
    conv1 = rows[0]
    assert conv1[2] == "Convolution" and conv1[4] == "520" and conv1[5] == "yes"  # 20*1*5*5 + 20

    code, out, err = _zoo_here(capsys, "layers", LENET, "--json")
    assert code == 0, err
    data = json.loads(out)
    assert [d["name"] for d in data] == LENET_LAYERS
    assert [d["output_shape"] for d in data] == LENET_SHAPES
    assert [d["name"] for d in data if d["default_cut"]] == ["ip1"]
    assert sum(d["params"] for d in data) == 431080  # LeNet's published parameter count
    assert {d["type"] for d in data} >= {"Convolution", "Pooling", "InnerProduct", "ReLU", "Softmax"}


def _zoo_here(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """The CLI in this process (torch is loaded here already): (exit code, stdout, stderr)."""
    from zoo.cli import main

    capsys.readouterr()
    try:
        main(list(args))
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def ln_has_cut(row: list[str]) -> bool:
    return row[-3:] == ["<-", "default", "cut"]


def test_layers_api_matches_the_cli(world) -> None:
    import zoo

    rows = zoo.layers(LENET)
    assert [r["name"] for r in rows] == LENET_LAYERS
    assert [r["default_cut"] for r in rows].index(True) == 4


def test_predict_api_on_real_digits(world) -> None:
    import zoo

    paths, target = world["paths"], world["target"]
    res = zoo.predict(LENET, paths, top_k=3)
    assert len(res) == len(paths)
    top1 = np.array([int(r["top"][0]["label"]) for r in res])
    acc = float((top1 == target).mean())
    # measured: 0.8509 on all 1,797 digits (tests/test_caffe_real.py's float rendering: >= 0.80)
    assert acc >= 0.84, acc
    for r in res[:20]:
        top = r["top"]
        assert len(top) == 3
        assert [t["label"] for t in top] == [str(t["index"]) for t in top]  # names from the card's labels
        scores = [t["score"] for t in top]
        assert scores == sorted(scores, reverse=True)
        assert 0 < sum(scores) <= 1 + 1e-5  # the net's own softmax, not a second one on top
    # LeNet ends in Softmax (prob): a second softmax would squash every top score below 0.24
    assert max(r["top"][0]["score"] for r in res) > 0.99


def test_predict_cli_top_k_names_and_json(world, tmp_path: Path) -> None:
    paths, target = world["paths"][:12], world["target"][:12]
    bad = tmp_path / "broken.png"
    bad.write_bytes(paths[0].read_bytes()[:60])  # a truncated PNG: skipped, named on stderr
    r = _zoo(world["env"], "predict", LENET, *map(str, paths), str(bad), "--top-k", "2", "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert [x["image"] for x in res] == [*map(str, paths), str(bad)]
    assert "skipped" in res[-1] and f"skipped {bad}" in r.stderr
    got = [int(x["top"][0]["label"]) for x in res[:-1]]
    assert sum(g == t for g, t in zip(got, target, strict=True)) >= 8  # measured: 9 of these 12
    import zoo

    api = zoo.predict(LENET, paths, top_k=2)  # the CLI is the API: same classes, same scores
    assert [[t["index"] for t in x["top"]] for x in api] == [[t["index"] for t in x["top"]] for x in res[:-1]]
    np.testing.assert_allclose(
        [t["score"] for x in api for t in x["top"]],
        [t["score"] for x in res[:-1] for t in x["top"]],
        rtol=1e-6,
    )
    assert all(len(x["top"]) == 2 for x in res[:-1])
    assert all(t["label"] in [str(i) for i in range(10)] for x in res[:-1] for t in x["top"])

    t = _zoo(world["env"], "predict", LENET, str(paths[0]))
    assert t.returncode == 0, t.stderr
    lines = t.stdout.splitlines()
    assert lines[0] == str(paths[0]) and len(lines) == 6  # the image, then its top 5
    assert lines[1].split()[0] == str(target[0])


def test_predict_bad_input_is_one_line(world, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _zoo_here(capsys, "predict", LENET, str(tmp_path / "nope.png"))
    assert code != 0
    assert err.strip().splitlines() == [f"zoo: error: {tmp_path / 'nope.png'}: no such image file"]
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image")
    code, _, err = _zoo_here(capsys, "predict", LENET, str(junk))
    assert code != 0
    assert err.strip().splitlines()[-1] == "zoo: error: no image could be read"
    code, _, err = _zoo_here(capsys, "layers", "testdata/lenet_mnistx")
    assert code != 0 and len(err.strip().splitlines()) == 1, err
    assert "testdata/lenet_mnist" in err  # the near match is suggested
