"""The one model folder: output-folder policy (refuse / --force, umask, stale temporaries after
SIGKILL), card.json always a valid ModelCard, and library (torchvision) folders."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from converters.caffe.writer import write_random_caffemodel
from converters.folder import TMP_SUFFIX, load_folder, read_folder
from zoo.convert import convert
from zoo.errors import ConversionError
from zoo.fileio import current_umask

ROOT = Path(__file__).resolve().parents[1]
NET = """name: "tiny"
input: "data"
input_shape { dim: 1 dim: 3 dim: 8 dim: 8 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "ip1" type: "InnerProduct" bottom: "conv1" top: "ip1" inner_product_param { num_output: 5 } }
layer { name: "prob" type: "Softmax" bottom: "ip1" top: "prob" }
"""


def _net(tmp_path: Path) -> tuple[Path, Path]:
    proto = tmp_path / "tiny.prototxt"
    proto.write_text(NET)
    return proto, write_random_caffemodel(proto, tmp_path / "tiny.caffemodel")


def test_non_empty_output_refused_without_force_and_files_survive(tmp_path: Path) -> None:
    proto, w = _net(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    r = subprocess.run(
        [sys.executable, "-m", "zoo.cli", "convert", str(proto), "--weights", str(w), "-o", str(out)],
        capture_output=True,
        text=True,
    )
    assert r.returncode != 0 and "not empty" in r.stderr and "--force" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "zoo.cli",
            "convert",
            str(proto),
            "--weights",
            str(w),
            "-o",
            str(out),
            "--force",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert (out / "card.json").is_file() and not (out / "notes.txt").exists()


def test_registry_id_refused_before_any_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A non-empty output folder is refused before the (possibly large) source is pulled."""
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ZOO_OFFLINE", "1")  # a pull would fail with another message
    out = tmp_path / "out"
    out.mkdir()
    (out / "x").write_text("1")
    with pytest.raises(ConversionError, match="not empty"):
        convert("keras/vgg16", out)


def test_folders_follow_the_umask(tmp_path: Path) -> None:
    proto, w = _net(tmp_path)
    old = os.umask(0o022)
    try:
        out = convert(proto, tmp_path / "o", weights=w)
    finally:
        os.umask(old)
    assert out.stat().st_mode & 0o777 == 0o755
    for name in (
        "model.safetensors",
        "card.json",
        "verify.json" if (out / "verify.json").exists() else "card.json",
    ):
        assert (out / name).stat().st_mode & 0o777 == 0o644, name
    old = os.umask(0o077)
    try:
        out2 = convert(proto, tmp_path / "o2", weights=w)
    finally:
        os.umask(old)
    assert out2.stat().st_mode & 0o777 == 0o700


def test_sigkill_leaves_no_stale_temporary_after_the_next_conversion(tmp_path: Path) -> None:
    """A conversion killed with SIGKILL while writing leaves its hidden temporary folder; the next
    conversion into the same parent removes it (its writer no longer runs)."""
    proto, w = _net(tmp_path)
    parent = tmp_path / "models"
    parent.mkdir()
    script = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {str(ROOT)!r})
        import converters.folder as f
        real = f.save_safetensors
        def slow(state, path, metadata=None):
            real(state, path, metadata)
            print("WRITING", flush=True)
            time.sleep(60)
        f.save_safetensors = slow
        from converters import convert_caffe
        convert_caffe({str(proto)!r}, {str(w)!r}, {str(parent / "a")!r})
        """
    )
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "WRITING"
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    stale = [x for x in parent.iterdir() if x.name.endswith(TMP_SUFFIX)]
    assert len(stale) == 1 and (stale[0] / "model.safetensors").is_file()
    convert(proto, parent / "b", weights=w)
    assert sorted(x.name for x in parent.iterdir()) == ["b"]


def test_card_json_is_validated_when_read(tmp_path: Path) -> None:
    proto, w = _net(tmp_path)
    out = convert(proto, tmp_path / "o", weights=w)
    card = json.loads((out / "card.json").read_text())
    assert card["architecture"]["kind"] == "graph"
    card["format"] = "zoo-v0"
    (out / "card.json").write_text(json.dumps(card))
    with pytest.raises(ConversionError, match=r"not a valid model card: /format"):
        read_folder(out)


def test_torchvision_state_dict_folder_loads_and_verifies(tmp_path: Path) -> None:
    """`zoo convert my.pth --arch torchvision:resnet18` writes the same folder layout (no graph.json:
    the card's architecture builds it); zoo.load and zoo verify work on it."""
    import torchvision

    import zoo

    torch.manual_seed(0)
    src = torchvision.models.resnet18(num_classes=10).eval()
    pth = tmp_path / "r18.pth"
    torch.save(src.state_dict(), pth)
    with pytest.raises(ConversionError, match="do not fit"):
        convert(pth, tmp_path / "bad", arch="torchvision:resnet50")
    out = convert(pth, tmp_path / "r18", arch="torchvision:resnet18", to="all")
    names = sorted(p.name for p in out.iterdir())
    assert names == ["card.json", "layermap.json", "model.onnx", "model.safetensors", "verify.json"]
    card, graph = read_folder(out)
    assert graph is None and card["architecture"] == {"kind": "torchvision", "name": "resnet18"}
    for f in out.iterdir():  # verify.json and model.onnx too (written through mkstemp)
        assert f.stat().st_mode & 0o777 == 0o666 & ~current_umask(), f.name
    v = json.loads((out / "verify.json").read_text())
    assert v["passed"] and v["argmax_agreement"] == 1.0 and v["backends"] == ["torch", "onnx"]
    m = zoo.load(out)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        np.testing.assert_array_equal(m(x).numpy(), src(x).numpy())
    assert [r.name for r in m.layers()][:4] == ["conv1", "bn1", "relu", "maxpool"]
    assert load_folder(out).cut("layer4")(x).shape == (2, 512, 2, 2)
    t0 = time.perf_counter()
    assert time.perf_counter() - t0 < 60
