"""The typed architecture reference: one parser for every spelling, and the head fields on cards."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from zoo.arch import Architecture, ArchitectureError, parse
from zoo.cards import ModelCard

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("text", "kind", "name", "kwargs"),
    [
        ("torchvision:resnet50", "torchvision", "resnet50", {}),
        ("torchvision.models.resnet50", "torchvision", "resnet50", {}),
        ("timm:resnet50.a1_in1k", "timm", "resnet50.a1_in1k", {}),
        (
            "keras.applications:MobileNet?alpha=0.25&include_top=false&input_shape=128,128,3",
            "keras.applications",
            "MobileNet",
            {"alpha": 0.25, "include_top": False, "input_shape": [128, 128, 3]},
        ),
        ("keras.applications.VGG16", "keras.applications", "VGG16", {}),
        ("deploy.prototxt", "caffe", "deploy.prototxt", {}),
        ("caffe:det3.prototxt", "caffe", "det3.prototxt", {}),
        ("out/net/graph.json", "graph", "out/net/graph.json", {}),
    ],
)
def test_every_spelling_parses_and_round_trips(text: str, kind: str, name: str, kwargs: dict) -> None:
    a = parse(text)
    assert (a.kind, a.name, dict(a.kwargs)) == (kind, name, kwargs)
    assert parse(a.spec) == a
    assert parse(a.to_dict()) == a


@pytest.mark.parametrize(
    ("old", "spec"),
    [
        ({"builder": "torchvision.models.vgg16", "weights": "VGG16_Weights.IMAGENET1K_V1"}, "torchvision:vgg16"),  # noqa: E501
        ({"builder": "timm.create_model", "model_name": "resnet50.a1_in1k", "architecture": "resnet50"}, "timm:resnet50.a1_in1k"),  # noqa: E501
        ({"builder": "keras.applications.Xception", "kwargs": {"input_shape": [299, 299, 3]}}, "keras.applications:Xception?input_shape=299,299,3"),  # noqa: E501
        ({"prototxt": "deploy.prototxt", "config": "D"}, "caffe:deploy.prototxt"),
    ],
)  # fmt: skip
def test_older_registry_dicts_read(old: dict, spec: str) -> None:
    """The dict spellings registry entries had before (a `builder` string parsed with rsplit('.'))."""
    assert parse(old).spec == spec


@pytest.mark.parametrize(
    "bad", ["resnet50", "create_model", "pytorch:resnet50", "torchvision:", "keras.applications:X?alpha", {}]
)
def test_bad_spellings_are_refused_in_one_line(bad: object) -> None:
    with pytest.raises(ArchitectureError) as e:
        parse(bad)  # type: ignore[arg-type]
    assert "\n" not in str(e.value)


def test_every_registry_entry_has_a_typed_architecture_and_head_fields() -> None:
    doc = json.loads((ROOT / "registry.json").read_text())
    for d in doc["models"]:
        card = ModelCard.from_dict(d)
        assert isinstance(card.architecture, Architecture), card.id
        assert d["architecture"] == card.architecture.to_dict(), card.id  # written in the typed form
        if card.source in ("torchvision", "timm", "keras") and card.task == "image-classification":
            assert card.classifier and card.num_classes and card.default_cut, card.id
            assert card.labels is None or card.labels.get("count") == card.num_classes, card.id
    by_id = {d["id"]: d for d in doc["models"]}
    assert by_id["torchvision/vgg16.imagenet1k_v1"]["classifier"] == "classifier.6"
    assert by_id["timm/resnet50.a1_in1k"]["classifier"] == "fc"
    assert by_id["keras/mobilenet"]["classifier"] == "conv_preds"


def test_register_arch_is_stored_typed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`zoo register --arch torchvision:resnet50` (the README's spelling) stores kind + name."""
    from click.testing import CliRunner

    from zoo.cli import cli

    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "home"))
    f = tmp_path / "m.pth"
    f.write_bytes(b"weights")
    r = CliRunner().invoke(
        cli, ["register", str(f), "--id", "me/cats", "--arch", "torchvision:resnet50", "--labels", "cat,dog"]
    )
    assert r.exit_code == 0, r.output
    cat = json.loads((tmp_path / "home" / "catalog.json").read_text())
    (entry,) = cat["models"] if isinstance(cat, dict) else cat
    assert entry["architecture"] == {"kind": "torchvision", "name": "resnet50"}
    assert entry["num_classes"] == 2
    # head fields a bundled torchvision resnet50 card names, as nothing else was given
    assert (entry["default_cut"], entry["classifier"]) == ("avgpool", "fc")
    r = CliRunner().invoke(cli, ["register", str(f), "--id", "me/dogs", "--arch", "resnet50"])
    assert isinstance(r.exception, ArchitectureError) and "torchvision:NAME" in str(r.exception)
    assert "me/dogs" not in (tmp_path / "home" / "catalog.json").read_text()
