"""The real bundled registry: schema, search filters, ranking and sorting, catalogue merge."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from zoo.errors import RegistryError, UnknownModelError
from zoo.registry import Registry, SearchQuery, bundled_registry_path, validate_entries

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def reg() -> Registry:
    return Registry.load(path=ROOT / "registry.json", home=Path("/nonexistent-zoo-home"))


def test_bundled_path_is_the_checkout_file() -> None:
    assert bundled_registry_path() == ROOT / "registry.json"


def test_real_registry_validates_and_is_big() -> None:
    data = json.loads((ROOT / "registry.json").read_text())
    validate_entries(data, "registry.json")
    assert len(data["models"]) >= 200
    sources = {m["source"] for m in data["models"]}
    assert {"torchvision", "keras", "caffe", "timm", "testdata"} <= sources


def test_transfer_learning_favourites_present(reg: Registry) -> None:
    for text in (
        "vgg16",
        "inceptionv3",
        "resnet50",
        "mobilenet",
        "googlenet",
        "alexnet",
        "caffenet",
        "lenet",
    ):
        assert reg.search(SearchQuery(text=text)), text


def test_vgg16_across_three_sources(reg: Registry) -> None:
    hits = reg.search(SearchQuery(text="vgg16", limit=20))
    top_sources = {c.source for c in hits[:12]}
    assert {"keras", "torchvision", "caffe"} <= top_sources
    # exact model-name matches rank above vgg16_bn and friends
    first_non_exact = next(i for i, c in enumerate(hits) if "bn" in c.id or "vgg16" not in c.id)
    assert all("vgg16" in c.id for c in hits[:first_non_exact])


@pytest.mark.parametrize(
    "field,value",
    [
        ("source", "keras"),
        ("source", "torchvision"),
        ("source", "caffe"),
        ("source", "timm"),
        ("framework", "caffe"),
        ("origin", "caffe"),
        ("task", "image-classification"),
    ],
)
def test_equality_filters(reg: Registry, field: str, value: str) -> None:
    hits = reg.search(SearchQuery(**{field: value}))
    assert hits
    assert all(getattr(c, field) == value for c in hits)
    assert len(hits) < len(reg) or field == "task"


def test_numeric_filters(reg: Registry) -> None:
    hits = reg.search(SearchQuery(min_top1=80.0, max_params=30e6, max_gflops=6.0))
    assert hits
    for c in hits:
        assert c.top1 is not None and c.top1 >= 80.0
        assert c.params is not None and c.params <= 30e6
        assert c.gflops is not None and c.gflops <= 6.0
    everything = reg.search(SearchQuery())
    assert len(hits) < len(everything)


def test_input_size_dataset_licence_tag(reg: Registry) -> None:
    hits = reg.search(SearchQuery(input_size=299))
    assert hits and any("inception" in c.id for c in hits)
    assert all((c.preprocess.crop or max(c.preprocess.input_size or (0,))) == 299 for c in hits)
    mn = reg.search(SearchQuery(dataset="mnist"))
    assert mn and all("mnist" in c.dataset.lower() for c in mn)
    bsd = reg.search(SearchQuery(license="bsd"))
    assert bsd and all("bsd" in c.license.lower() for c in bsd)
    tagged = reg.search(SearchQuery(tag="imagenet"))
    assert tagged and all("imagenet" in [t.lower() for t in c.tags] for c in tagged)


@pytest.mark.parametrize("key", ["top1", "params", "gflops", "name"])
def test_sort_orders(reg: Registry, key: str) -> None:
    hits = reg.search(SearchQuery(source="torchvision", sort=key))
    assert len(hits) > 10
    if key == "name":
        assert [c.id for c in hits] == sorted(c.id for c in hits)
        return
    vals = [getattr(c, key) for c in hits if getattr(c, key) is not None]
    assert vals == sorted(vals, reverse=(key == "top1"))
    # unknown values go last
    known = [getattr(c, key) is not None for c in hits]
    assert known == sorted(known, reverse=True)


def test_limit_and_bad_sort(reg: Registry) -> None:
    assert len(reg.search(SearchQuery(text="resnet", limit=3))) == 3
    with pytest.raises(RegistryError):
        reg.search(SearchQuery(sort="size"))


def test_unknown_id_suggests(reg: Registry) -> None:
    with pytest.raises(UnknownModelError) as e:
        reg.get("keras/vgg-16")
    assert "keras/vgg16" in str(e.value)


def test_malformed_catalogue_named_with_id_and_path(tmp_path: Path) -> None:
    good = json.loads((ROOT / "registry.json").read_text())["models"][0]
    bad = dict(good, id="me/broken")
    bad["files"] = [dict(good["files"][0], checksum={"algo": "md5", "value": "xyz"})]
    ok = dict(good, id="me/fine", name="a fine model")
    (tmp_path / "catalog.json").write_text(json.dumps({"schema_version": 1, "models": [bad, ok]}))
    reg = Registry.load(path=ROOT / "registry.json", home=tmp_path)
    # the bad entry is skipped with one line naming its id and field path; the rest still works
    assert len(reg.warnings) == 1
    assert "me/broken" in reg.warnings[0] and "files[0].checksum" in reg.warnings[0]
    assert "me/broken" not in reg and "me/fine" in reg
    with pytest.raises(RegistryError):
        validate_entries(json.loads((tmp_path / "catalog.json").read_text()), "catalog.json")


def test_catalogue_entries_merge_and_override(tmp_path: Path) -> None:
    good = json.loads((ROOT / "registry.json").read_text())["models"][0]
    mine = dict(good, id="me/mine", source="user", name="my own model", tags=["zzuniquetag"])
    (tmp_path / "catalog.json").write_text(json.dumps({"schema_version": 1, "models": [mine]}))
    reg = Registry.load(path=ROOT / "registry.json", home=tmp_path)
    assert reg.get("me/mine").name == "my own model"
    assert [c.id for c in reg.search(SearchQuery(tag="zzuniquetag"))] == ["me/mine"]
    assert reg.origins["me/mine"] == "catalogue"
