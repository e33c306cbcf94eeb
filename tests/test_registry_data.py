"""What the bundled registry.json says about its numbers and in its text: the image size and crop
each metric was measured at, the ``mobile`` tag, and no card text naming paths of this checkout."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from zoo.cards import Metric, ModelCard
from zoo.registry import Registry

ROOT = Path(__file__).resolve().parents[1]
REGISTRY = ROOT / "registry.json"
TIMM_CSV = ROOT / "tools" / "registry_sources" / "timm_results_imagenet.csv"
GENERATED = ("torchvision", "keras", "timm")


@pytest.fixture(scope="module")
def cards() -> list[dict[str, Any]]:
    return json.loads(REGISTRY.read_text(encoding="utf-8"))["models"]


def _timm_rows() -> dict[str, dict[str, str]]:
    lines = TIMM_CSV.read_text(encoding="utf-8").splitlines()
    return {r["model"]: r for r in csv.DictReader(ln for ln in lines if not ln.startswith("#"))}


def _strings(value: Any, where: str = "") -> Iterator[tuple[str, str]]:
    """Every string in a card (keys' values, list items), with its field path."""
    if isinstance(value, str):
        yield where, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(v, f"{where}.{k}" if where else k)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _strings(v, f"{where}[{i}]")


# ------------------------------------------------------------------------------------------------
# Metric: resolution and crop_pct


def test_metric_new_fields_round_trip_and_stay_optional() -> None:
    plain = Metric("top1", 76.1, "imagenet-1k", "somewhere")
    assert plain.resolution is None and plain.crop_pct is None
    assert plain.to_dict() == {"name": "top1", "value": 76.1, "dataset": "imagenet-1k", "source": "somewhere"}
    assert Metric.from_dict(plain.to_dict()) == plain
    full = Metric("top1", 82.1, "imagenet-1k", "src", 288, 0.95)  # positional order kept
    d = full.to_dict()
    assert d == {
        "name": "top1",
        "value": 82.1,
        "dataset": "imagenet-1k",
        "source": "src",
        "resolution": 288,
        "crop_pct": 0.95,
    }
    assert Metric.from_dict(d) == full
    only_res = Metric("top1", 70.0, "x", resolution=224)
    assert only_res.to_dict() == {"name": "top1", "value": 70.0, "dataset": "x", "resolution": 224}


def test_every_generated_metric_says_its_resolution(cards: list[dict[str, Any]]) -> None:
    missing = [
        f"{c['id']}:{m['name']}"
        for c in cards
        if c["source"] in GENERATED
        for m in c["metrics"]
        if not isinstance(m.get("resolution"), int)
    ]
    assert not missing, missing[:10]
    for c in cards:
        for m in c["metrics"]:
            if "crop_pct" in m:
                assert 0 < m["crop_pct"] <= 1, (c["id"], m)
            assert ModelCard.from_dict(c).to_dict() == c


def test_timm_metrics_carry_the_results_csv_size_and_crop(cards: list[dict[str, Any]]) -> None:
    rows = _timm_rows()
    differ = 0
    checked = 0
    for c in cards:
        if c["source"] != "timm" or not c["metrics"]:
            continue
        row = rows[c["id"].split("/", 1)[1]]
        for m in c["metrics"]:
            assert m["resolution"] == int(row["img_size"]), c["id"]
            assert m["crop_pct"] == float(row["crop_pct"]), c["id"]
            checked += 1
        top1 = next(m for m in c["metrics"] if m["name"] == "top1")
        if top1["resolution"] != c["preprocess"]["crop"]:
            differ += 1
    assert checked >= 300
    # Many timm weights were measured at a larger size than their default crop: the cards must say so.
    assert differ >= 50


def test_torchvision_metrics_carry_the_weights_transforms(cards: list[dict[str, Any]]) -> None:
    seen = 0
    for c in cards:
        if c["source"] != "torchvision":
            continue
        pre = c["preprocess"]
        for m in c["metrics"]:
            assert m["resolution"] == pre["crop"], c["id"]
            assert m["crop_pct"] == pre["crop"] / pre["resize"], c["id"]
            seen += 1
    assert seen >= 150
    by_id = {c["id"]: c for c in cards}
    (top1,) = [m for m in by_id["torchvision/resnet50.imagenet1k_v2"]["metrics"] if m["name"] == "top1"]
    assert top1["resolution"] == 224 and top1["crop_pct"] == 224 / 232


def test_keras_metrics_are_at_the_default_input_size(cards: list[dict[str, Any]]) -> None:
    by_id = {c["id"]: c for c in cards}
    for mid, size in (("keras/efficientnetb7", 600), ("keras/inceptionv3", 299), ("keras/vgg16", 224)):
        metrics = by_id[mid]["metrics"]
        assert metrics and all(m["resolution"] == size for m in metrics), mid
        assert all("crop_pct" not in m for m in metrics), "keras states no crop"
    v3 = by_id["keras/mobilenetv3large"]["metrics"]
    assert v3 and all(m["resolution"] == 224 for m in v3)


def test_curated_metrics_carry_what_their_sources_say(cards: list[dict[str, Any]]) -> None:
    by_id = {c["id"]: c for c in cards}
    one_crop = by_id["caffe/resnet50_msra"]["metrics"]
    assert {(m["name"], m.get("resolution"), m.get("crop_pct")) for m in one_crop} == {
        ("top1", 224, 0.875),
        ("top5", 224, 0.875),
        ("top1_10crop", 224, None),
        ("top5_10crop", 224, None),
    }
    assert all(m["resolution"] == 227 for m in by_id["caffe/bvlc_alexnet"]["metrics"])
    unsaid = [m for m in by_id["caffe/vgg16"]["metrics"] if "multi-scale" in m["dataset"]]
    assert unsaid and all("resolution" not in m for m in unsaid)


# ------------------------------------------------------------------------------------------------
# text shown to users


def test_no_card_text_names_a_path_of_this_checkout(cards: list[dict[str, Any]]) -> None:
    bad = [
        f"{c['id']}: {where}: {text}"
        for c in cards
        for where, text in _strings(c)
        if "../" in text or "shared/" in text
    ]
    assert not bad, bad[:5]


def test_testdata_notes_cite_upstream_repositories(cards: list[dict[str, Any]]) -> None:
    for c in cards:
        if c["source"] != "testdata":
            continue
        note = c["preprocess"].get("note", "")
        assert "README" not in note or "@" in note, c["id"]
    by_id = {c["id"]: c for c in cards}
    det1 = by_id["testdata/mtcnn_det1"]["preprocess"]["note"]
    assert "kpzhang93/MTCNN_face_detection_alignment@4617f55b08846aea1b2328e9c12e48df91b3d725" in det1


# ------------------------------------------------------------------------------------------------
# the mobile tag


def test_mobile_tag_search_from_the_readme_finds_every_source() -> None:
    found = Registry.load().search(tag="mobile", input_size=224)
    sources = {c.source for c in found}
    assert {"torchvision", "keras", "timm"} <= sources, sources
    ids = {c.id for c in found}
    for mid in ("torchvision/mobilenet_v2.imagenet1k_v1", "keras/mobilenet", "timm/mobilenetv2_100.ra_in1k"):
        assert mid in ids, mid


def test_mobile_tag_marks_mobile_families_only(cards: list[dict[str, Any]]) -> None:
    mobile = {c["id"] for c in cards if "mobile" in c["tags"]}
    for mid in (
        "torchvision/mnasnet1_0.imagenet1k_v1",
        "torchvision/shufflenet_v2_x1_0.imagenet1k_v1",
        "torchvision/squeezenet1_1.imagenet1k_v1",
        "torchvision/efficientnet_b0.imagenet1k_v1",
        "keras/nasnetmobile",
        "keras/efficientnetb0",
        "timm/tf_efficientnet_lite0.in1k",
        "caffe/mobilenet_v1",
        "caffe/squeezenet1_1",
    ):
        assert mid in mobile, mid
    for mid in (
        "torchvision/resnet50.imagenet1k_v2",
        "keras/efficientnetb7",
        "keras/nasnetlarge",
        "keras/vgg16",
    ):
        assert mid not in mobile, mid
    assert not [m for m in mobile if "efficientnet_b7" in m or "efficientnetv2" in m]


# ------------------------------------------------------------------------------------------------
# zoo register with a URL


def _zoo(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, ZOO_HOME=str(home))
    return subprocess.run(
        [sys.executable, "-m", "zoo.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )


def _catalogue(home: Path) -> dict[str, dict[str, Any]]:
    return {m["id"]: m for m in json.loads((home / "catalog.json").read_text())["models"]}


SHA = "ab" * 32


def test_register_a_url_writes_an_http_file_ref(zoo_home: Path) -> None:
    url = "https://models.example.com/team/v3/cats-resnet50.pth?sig=1"
    r = _zoo("register", url, "--id", "team/cats", "--sha256", SHA.upper(), "--size", "1234", home=zoo_home)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "registered team/cats"
    card = _catalogue(zoo_home)["team/cats"]
    assert card["files"] == [
        {
            "name": "cats-resnet50.pth",
            "role": "weights",
            "urls": [url],
            "size": 1234,
            "checksum": {"algo": "sha256", "value": SHA, "source": "given to zoo register"},
        }
    ]
    assert (card["framework"], card["format"], card["name"]) == ("pytorch", "pth", "cats-resnet50")
    assert url in card["provenance"]["note"]
    assert Registry.load(home=zoo_home).get("team/cats").file().urls == (url,)
    again = _zoo("register", url, "--id", "team/cats", "--sha256", SHA, home=zoo_home)
    assert again.returncode == 3
    assert again.stderr.strip() == "zoo: error: team/cats already exists in your catalogue (use --replace)"
    assert (
        _zoo("register", url, "--id", "team/cats", "--sha256", SHA, "--replace", home=zoo_home).returncode
        == 0
    )
    assert "size" not in _catalogue(zoo_home)["team/cats"]["files"][0]


def test_register_a_url_needs_a_sha256(zoo_home: Path) -> None:
    url = "http://10.0.0.7/models/net.onnx"
    r = _zoo("register", url, "--id", "team/net", home=zoo_home)
    assert r.returncode == 3
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "--sha256 is required" in lines[0], r.stderr
    bad = _zoo("register", url, "--id", "team/net", "--sha256", "1234", home=zoo_home)
    assert bad.returncode == 3 and len(bad.stderr.strip().splitlines()) == 1 and "64 hex" in bad.stderr
    assert not (zoo_home / "catalog.json").exists()


def test_register_over_a_bundled_id_names_the_bundled_registry(zoo_home: Path) -> None:
    r = _zoo("register", "https://x.example/vgg16.h5", "--id", "keras/vgg16", "--sha256", SHA, home=zoo_home)
    assert r.returncode == 3
    assert (
        r.stderr.strip() == "zoo: error: keras/vgg16 already exists in the bundled registry (use --replace)"
    )


def test_register_a_local_file_is_unchanged(zoo_home: Path, tmp_path: Path) -> None:
    model = tmp_path / "dogs.onnx"
    model.write_bytes(os.urandom(2048))
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    assert _zoo("register", str(model), "--id", "me/dogs", home=zoo_home).returncode == 0
    (f,) = _catalogue(zoo_home)["me/dogs"]["files"]
    assert f["urls"] == [model.resolve().as_uri()] and f["size"] == 2048
    assert f["checksum"] == {"algo": "sha256", "value": digest, "source": "computed by zoo register"}
    missing = _zoo("register", str(tmp_path / "nope.pth"), "--id", "me/nope", home=zoo_home)
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    wrong = _zoo("register", str(model), "--id", "me/dogs2", "--sha256", SHA, home=zoo_home)
    assert wrong.returncode == 3 and "does not match" in wrong.stderr
