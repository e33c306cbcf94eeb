"""`zoo convert` / `zoo verify` as a user runs them, on real files and real registry entries."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from servers import TestServer, mirror_testdata_card, offline_env, registry_card

ROOT = Path(__file__).resolve().parents[1]


def _zoo(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zoo.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        timeout=600,
    )


@pytest.mark.parametrize(
    "model_id,reference,layout",
    [
        ("testdata/cifar10_quick_v2", "opencv", "NCHW"),  # Caffe, checked against OpenCV dnn
        ("testdata/vww_96", "source", "NCHW"),  # Keras 2.4 file, checked against tf-keras
    ],
)
def test_convert_registry_entry_through_mirror_then_verify(
    model_id: str, reference: str, layout: str, testdata: Path, zoo_home: Path, tmp_path: Path
) -> None:
    card = registry_card(model_id)
    with TestServer() as server:
        mirror_testdata_card(server, card, testdata)
        env = offline_env(zoo_home)
        out = tmp_path / "converted"
        r = _zoo("convert", card["id"], "--mirror", server.url, "--to", "all", "-o", str(out), env=env)
        assert r.returncode == 0, r.stderr
    conv = json.loads((out / "card.json").read_text())
    # the registry card's preprocessing travels with the converted model (as NCHW for PyTorch)
    for key in ("channel_order", "scale", "mean", "std"):
        assert conv["preprocess"].get(key) == card["preprocess"].get(key), key
    assert conv["preprocess"]["layout"] == layout
    assert {p.name for p in out.iterdir()} >= {
        "card.json",
        "graph.json",
        "model.safetensors",
        "layermap.json",
        "model.onnx",
    }
    r = _zoo("verify", str(out), "--reference", reference, "--atol", "1e-5")
    assert r.returncode == 0, r.stdout + r.stderr
    res = json.loads((out / "verify.json").read_text())
    assert res["passed"] and res["rel"] <= 1e-5 and res["argmax_agreement"] == 1.0


def test_verify_fails_nonzero_when_weights_are_damaged(testdata: Path, tmp_path: Path) -> None:
    t = testdata / "caffe" / "lenet_mnist"
    out = tmp_path / "lenet"
    r = _zoo(
        "convert",
        str(t / "lenet.prototxt"),
        "--weights",
        str(t / "lenet_iter_10000.caffemodel"),
        "-o",
        str(out),
    )
    assert r.returncode == 0, r.stderr
    from safetensors.numpy import load_file, save_file

    state = load_file(out / "model.safetensors")
    key = next(k for k in state if k.startswith("ip2"))
    state[key] = state[key] * 1.01
    save_file(state, out / "model.safetensors")
    r = _zoo("verify", str(out), "--reference", "opencv")
    assert r.returncode == 9, r.stdout + r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert json.loads((out / "verify.json").read_text())["passed"] is False


def test_convert_bad_inputs_one_line_nothing_written(tmp_path: Path) -> None:
    junk = tmp_path / "junk.bin"
    junk.write_bytes(os.urandom(100))
    bad_proto = tmp_path / "bad.prototxt"
    bad_proto.write_text('name: "x"\nlayer {\n  name: "a"\n  type: "Convolution"\n  bottom: \n}\n')
    for args in (
        ["convert", str(junk), "-o", str(tmp_path / "o1")],
        ["convert", str(bad_proto), "-o", str(tmp_path / "o2")],
        ["convert", "keras/no-such-model", "-o", str(tmp_path / "o3")],
    ):
        r = _zoo(*args)
        assert r.returncode != 0
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.prototxt", "junk.bin"]
