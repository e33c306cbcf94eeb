"""The generated registry.json: schema, size, reproducibility, and spot checks against the
installed libraries (read at test time, so a stale or mistyped entry fails)."""

from __future__ import annotations

import csv
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REGISTRY = ROOT / "registry.json"
SCHEMA = ROOT / "zoo" / "data" / "registry.schema.json"
GEN = ROOT / "tools" / "gen_registry.py"
TIMM_CSV = ROOT / "tools" / "registry_sources" / "timm_results_imagenet.csv"
LABELS = ROOT / "zoo" / "data" / "labels" / "imagenet-1k.json"


@pytest.fixture(scope="module")
def registry() -> dict:
    return json.loads(REGISTRY.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def by_id(registry: dict) -> dict[str, dict]:
    return {m["id"]: m for m in registry["models"]}


def test_registry_validates_and_is_big_enough(registry: dict) -> None:
    import jsonschema

    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text(encoding="utf-8")))
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(registry)]
    assert errors == []
    ids = [m["id"] for m in registry["models"]]
    assert len(ids) >= 200
    assert len(ids) == len(set(ids)), "duplicate ids"
    assert ids == sorted(ids), "entries must be sorted by id (stable output)"


def test_vgg16_from_all_three_sources(by_id: dict[str, dict]) -> None:
    for key in ("keras/vgg16", "torchvision/vgg16.imagenet1k_v1", "timm/vgg16.tv_in1k"):
        assert key in by_id, key
    assert by_id["keras/vgg16"]["origin"] == "caffe"
    assert by_id["keras/vgg16"]["preprocess"]["channel_order"] == "BGR"


def test_torchvision_resnet50_matches_installed_torchvision(by_id: dict[str, dict]) -> None:
    import torchvision.models as tvm

    w = tvm.ResNet50_Weights.IMAGENET1K_V2
    card = by_id["torchvision/resnet50.imagenet1k_v2"]
    f = card["files"][0]
    assert f["urls"] == [w.url]
    prefix = w.url.rsplit("/", 1)[-1].rsplit("-", 1)[-1].split(".")[0]
    assert f["checksum"] == {
        "algo": "sha256-prefix",
        "value": prefix,
        "source": f["checksum"]["source"],
    }
    metrics = {m["name"]: m["value"] for m in card["metrics"]}
    assert metrics["top1"] == w.meta["_metrics"]["ImageNet-1K"]["acc@1"]
    assert metrics["top5"] == w.meta["_metrics"]["ImageNet-1K"]["acc@5"]
    assert card["params"] == w.meta["num_params"]
    t = w.transforms()
    assert card["preprocess"]["resize"] == t.resize_size[0]
    assert card["preprocess"]["crop"] == t.crop_size[0]
    assert card["preprocess"]["mean"] == list(t.mean)
    for m in card["metrics"]:  # torchvision measures with the weights' own transforms
        assert m["resolution"] == t.crop_size[0]
        assert m["crop_pct"] == t.crop_size[0] / t.resize_size[0]


def test_every_torchvision_weight_is_listed(registry: dict) -> None:
    import torchvision.models as tvm

    want = {
        f"torchvision/{name}.{w.name.lower()}"
        for name in tvm.list_models(module=tvm)
        for w in tvm.get_model_weights(name)
    }
    have = {m["id"] for m in registry["models"] if m["source"] == "torchvision"}
    assert have == want


def test_imagenet_labels_file_matches_torchvision() -> None:
    import torchvision.models as tvm

    assert (
        json.loads(LABELS.read_text(encoding="utf-8"))
        == tvm.ResNet50_Weights.IMAGENET1K_V2.meta["categories"]
    )


def _keras_app_source(module: str) -> str:
    """Source text of a keras.applications module, read without importing keras."""
    spec = importlib.util.find_spec("keras")
    assert spec is not None and spec.submodule_search_locations
    path = Path(spec.submodule_search_locations[0]) / "src" / "applications" / f"{module}.py"
    return path.read_text(encoding="utf-8")


def test_keras_vgg16_hashes_come_from_keras_source(by_id: dict[str, dict]) -> None:
    src = _keras_app_source("vgg16")
    hashes = re.findall(r'file_hash="([0-9a-f]+)"', src)
    card = by_id["keras/vgg16"]
    files = {f["role"]: f for f in card["files"]}
    assert set(files) == {"weights", "weights-notop"}
    for f in files.values():
        assert f["checksum"]["algo"] == "md5"
        assert f["checksum"]["value"] in hashes
        assert f["urls"][0].rsplit("/", 1)[-1] in src
    assert files["weights"]["checksum"]["value"] != files["weights-notop"]["checksum"]["value"]
    assert card["default_cut"] == "block5_pool"


def test_keras_sha256_hashes_are_detected_as_sha256(registry: dict) -> None:
    """keras treats a 64-hex file_hash as sha256 (ConvNeXt): the card must say so."""
    src = _keras_app_source("convnext")
    seen = 0
    for m in registry["models"]:
        if m["id"].startswith("keras/convnext"):
            for f in m["files"]:
                assert f["checksum"]["algo"] == "sha256"
                assert f["checksum"]["value"] in src
                seen += 1
    assert seen >= 2


def test_timm_entries_match_installed_timm_and_results_csv(registry: dict) -> None:
    from timm.models import get_pretrained_cfg

    rows = {
        r["model"]: r
        for r in csv.DictReader(
            ln for ln in TIMM_CSV.read_text(encoding="utf-8").splitlines() if not ln.startswith("#")
        )
    }
    timm_cards = [m for m in registry["models"] if m["source"] == "timm"]
    assert len(timm_cards) >= 100
    with_metrics = 0
    for card in timm_cards:
        full = card["id"].split("/", 1)[1]
        cfg = get_pretrained_cfg(full)
        (f,) = card["files"]
        assert f["hf"]["repo_id"] == cfg.hf_hub_id
        assert f["checksum"]["algo"] is None and f["pin"] == "first-use"
        assert card["preprocess"]["input_size"] == list(cfg.input_size)
        if full in rows:
            with_metrics += 1
            top1 = {m["name"]: m for m in card["metrics"]}["top1"]
            assert top1["value"] == float(rows[full]["top1"])
            assert top1["resolution"] == int(rows[full]["img_size"])
            assert top1["crop_pct"] == float(rows[full]["crop_pct"])
    assert with_metrics >= 150


@pytest.mark.slow
def test_generator_reproduces_registry_byte_for_byte(tmp_path: Path) -> None:
    out = tmp_path / "registry.json"
    proc = subprocess.run(
        [sys.executable, str(GEN), "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert out.read_bytes() == REGISTRY.read_bytes(), "registry.json is stale: run tools/gen_registry.py"
