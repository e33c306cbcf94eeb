"""The hand-curated registry cards (tools/registry_sources/curated/*.json) against the schema and real files.

The testdata cards' URLs must name the upstream repository and commit the testdata README's Sources table
gives, and the sha256/size they carry must be those of the file that table maps the URL to; the Caffe
cards whose definition is one of those files must name a real layer as their default cut.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from zoo.cards import ModelCard

ROOT = Path(__file__).resolve().parents[1]
CURATED = ROOT / "tools" / "registry_sources" / "curated"
SCHEMA = ROOT / "zoo" / "data" / "registry.schema.json"
RAW = re.compile(r"^https://raw\.githubusercontent\.com/([^/]+/[^/]+)/([0-9a-f]{40})/(.+)$")
ROW = re.compile(r"^\|\s*(.+?)\s*\|\s*(\S+) @ (\S+) : (.+?)\s*\|\s*$")
LAYER_NAME = re.compile(r'^[ \t]+name:\s*"([^"]+)"', re.MULTILINE)
HASHES = {"sha256": hashlib.sha256, "sha1": hashlib.sha1, "md5": hashlib.md5}


def _load(name: str) -> list[dict[str, Any]]:
    data = json.loads((CURATED / f"{name}.json").read_text(encoding="utf-8"))
    assert isinstance(data, list) and data, f"{name}.json must be a non-empty JSON list"
    return data


def _all_cards() -> list[dict[str, Any]]:
    return [d for path in sorted(CURATED.glob("*.json")) for d in _load(path.stem)]


def _card_id(d: dict[str, Any]) -> str:
    return str(d.get("id"))


def _sources_table(testdata: Path) -> dict[tuple[str, str, str], str]:
    """(owner/repo, commit, upstream path or folder/) -> local path, from the README's Sources table."""
    text = (testdata / "README.md").read_text(encoding="utf-8")
    table: dict[tuple[str, str, str], str] = {}
    last_repo = last_commit = ""
    for line in text.split("## Sources", 1)[1].splitlines():
        m = ROW.match(line)
        if not m:
            continue
        here, repo, commit, up = m.groups()
        repo = last_repo if repo == "same" else repo
        commit = last_commit if commit == "same" else commit
        last_repo, last_commit = repo, commit
        local = re.findall(r"`([^`]+)`", here)
        upstream = re.findall(r"`([^`]+)`", up)
        folder = local[0].rsplit("/", 1)[0]
        if len(upstream) == 1 and upstream[0].endswith("/"):
            table[(repo, commit, upstream[0])] = folder + "/"
        else:
            assert len(upstream) == len(local), line
            for lo, upp in zip(local, upstream, strict=True):
                table[(repo, commit, upp)] = lo if "/" in lo else f"{folder}/{lo}"
    assert table, "no rows parsed from the testdata README's Sources table"
    return table


def _local_for(url: str, table: dict[tuple[str, str, str], str]) -> str | None:
    """The testdata-relative path the Sources table maps a pinned raw URL to (None: not a testdata file)."""
    m = RAW.match(url)
    if not m:
        return None
    repo, commit, path = m.groups()
    if (repo, commit, path) in table:
        return table[(repo, commit, path)]
    for (r, c, up), local in table.items():
        if r == repo and c == commit and up.endswith("/") and path.startswith(up):
            return local + path[len(up) :].rsplit("/", 1)[-1]
    return None


def _digest(path: Path, algo: str) -> str:
    return HASHES[algo](path.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------------------
# every curated card


def test_curated_files_exist_and_ids_are_unique() -> None:
    names = sorted(p.name for p in CURATED.glob("*.json"))
    assert {"caffe.json", "testdata.json"} <= set(names)
    ids = [_card_id(d) for d in _all_cards()]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    assert not dupes, f"duplicate ids: {dupes}"


@pytest.mark.parametrize("card", _all_cards(), ids=_card_id)
def test_card_validates_and_round_trips(card: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    validator = jsonschema.Draft202012Validator({"$defs": schema["$defs"], "$ref": "#/$defs/card"})
    errors = [f"/{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(card)]
    assert not errors, errors
    assert ModelCard.from_dict(card).to_dict() == card, "card does not survive ModelCard.from_dict/to_dict"
    assert card["id"].split("/", 1)[0] == card["source"], "id prefix must name the source"


@pytest.mark.parametrize("card", _all_cards(), ids=_card_id)
def test_card_files_are_pinned_and_sourced(card: dict[str, Any]) -> None:
    roles = [f["role"] for f in card["files"]]
    assert any(r in ("weights", "model") for r in roles), "no weights file"
    for f in card["files"]:
        ck = f["checksum"]
        assert ck.get("source"), f"{f['name']}: checksum without a named source"
        if ck["algo"] is None:
            assert f.get("pin") == "first-use", f"{f['name']}: no published checksum must pin on first use"
        else:
            assert "pin" not in f, f"{f['name']}: has a published checksum, nothing to pin on first use"
        for url in f["urls"]:
            if "githubusercontent.com" in url:
                pinned = RAW.match(url) or re.search(r"/raw/[0-9a-f]{40}/", url)
                assert pinned, f"not pinned to a commit: {url}"
    arch = card["architecture"]
    proto = arch["name"] if arch and arch["kind"] == "caffe" else None
    if card["framework"] == "caffe":
        defs = [f["name"] for f in card["files"] if f["role"] == "definition"]
        assert proto in defs, f"architecture caffe:{proto!r} is not one of the definition files {defs}"
    for m in card["metrics"]:
        assert 0 < m["value"] <= 100 and m.get("source"), m


def test_transfer_learning_models_are_there() -> None:
    cards = {d["id"]: d for d in _all_cards()}
    for mid in (
        "caffe/bvlc_alexnet",
        "caffe/bvlc_reference_caffenet",
        "caffe/bvlc_googlenet",
        "caffe/lenet_mnist",
        "caffe/vgg16",
        "caffe/resnet50_msra",
        "caffe/mobilenet_v1",
    ):
        assert mid in cards, f"{mid} missing"
        roles = {f["role"] for f in cards[mid]["files"] if f["urls"]}
        assert {"definition", "weights"} <= roles, f"{mid}: needs a deploy definition and weights"
        assert cards[mid]["default_cut"], f"{mid}: no default cut"
    for mid in (
        "caffe/vgg19",
        "caffe/resnet101_msra",
        "caffe/resnet152_msra",
        "caffe/squeezenet1_0",
        "caffe/squeezenet1_1",
        "caffe/mobilenet_v2",
        "caffe/cifar10_quick",
    ):
        assert mid in cards, f"{mid} missing"
    converted = [d for d in cards.values() if d["origin"] == "caffe"]
    assert converted and all(d["preprocess"]["channel_order"] == "BGR" for d in converted)


def test_bvlc_weights_carry_the_readme_sha1() -> None:
    """The BVLC model zoo publishes a sha1 per caffemodel: the cards must check it, not pin on first use."""
    cards = {d["id"]: d for d in _load("caffe")}
    for mid in ("caffe/bvlc_alexnet", "caffe/bvlc_reference_caffenet", "caffe/bvlc_googlenet"):
        w = next(f for f in cards[mid]["files"] if f["role"] == "weights")
        assert w["checksum"]["algo"] == "sha1" and len(w["checksum"]["value"]) == 40
        assert w["urls"][0].startswith("http://dl.caffe.berkeleyvision.org/")


# ------------------------------------------------------------------------------------------------
# against the real files in ../shared/testdata


def test_testdata_cards_cover_every_model(testdata: Path) -> None:
    cards = _load("testdata")
    assert all(d["source"] == "testdata" for d in cards)
    covered = {_local_for(u, _sources_table(testdata)) for d in cards for f in d["files"] for u in f["urls"]}
    sums = [line.split()[1] for line in (testdata / "SHA256SUMS").read_text().splitlines() if line.strip()]
    weights = [p for p in sums if p.endswith((".caffemodel", ".caffemodel.h5", ".h5", ".hdf5"))]
    assert weights and not set(weights) - covered, f"weights without a card: {sorted(set(weights) - covered)}"


@pytest.mark.parametrize("card", _load("testdata"), ids=_card_id)
def test_testdata_card_matches_real_bytes(card: dict[str, Any], testdata: Path) -> None:
    table = _sources_table(testdata)
    sums = {}
    for line in (testdata / "SHA256SUMS").read_text().splitlines():
        if line.strip():
            digest, rel = line.split()
            sums[rel] = digest
    for f in card["files"]:
        assert len(f["urls"]) == 1 and RAW.match(f["urls"][0]), f"{f['name']}: expected one pinned raw URL"
        local = _local_for(f["urls"][0], table)
        assert local, f"{f['urls'][0]} is not a file the testdata README's Sources table lists"
        path = testdata / local
        assert path.is_file(), path
        assert f["name"] == path.name
        assert f["checksum"]["algo"] == "sha256"
        assert f["checksum"]["value"] == _digest(path, "sha256") == sums[local]
        assert f["size"] == path.stat().st_size


@pytest.mark.parametrize("card", _all_cards(), ids=_card_id)
def test_checksums_of_files_we_hold_match(card: dict[str, Any], testdata: Path) -> None:
    """Every file of any curated card that is also in testdata has the checksum of those bytes."""
    table = _sources_table(testdata)
    for f in card["files"]:
        for url in f["urls"]:
            local = _local_for(url, table)
            if local is None:
                continue
            ck = f["checksum"]
            assert ck["algo"] in HASHES, f"{f['name']}: we hold the bytes, so a full checksum is expected"
            assert ck["value"] == _digest(testdata / local, ck["algo"]), f"{f['name']} != {local}"
            if f.get("size") is not None:
                assert f["size"] == (testdata / local).stat().st_size


def _definition_layers(card: dict[str, Any], testdata: Path) -> list[str] | None:
    """Layer names of the card's definition, read from the testdata copy of it.

    Where the definition itself is not in testdata but the weights are, the prototxt of the same name beside
    those weights (the net they were trained with) is read instead.
    """
    table = _sources_table(testdata)
    defs = [f for f in card["files"] if f["role"] == "definition"]
    for f in defs:
        for url in f["urls"]:
            local = _local_for(url, table)
            if local:
                return LAYER_NAME.findall((testdata / local).read_text(encoding="utf-8"))
    for f in card["files"]:
        local = _local_for(f["urls"][0], table) if f["role"] == "weights" else None
        for d in defs if local else []:
            beside = (testdata / local).parent / d["name"]
            if beside.is_file():
                return LAYER_NAME.findall(beside.read_text(encoding="utf-8"))
    return None


def _keras_layers(path: Path) -> list[str]:
    import h5py

    with h5py.File(path, "r") as h5:
        raw = h5.attrs["model_config"]
    cfg = json.loads(raw if isinstance(raw, str) else raw.decode("utf-8"))
    return [layer["config"]["name"] for layer in cfg["config"]["layers"]]


def test_default_cut_names_a_real_layer(testdata: Path) -> None:
    """Every card whose definition (prototxt or Keras model_config) we hold cuts at a real, inner layer."""
    checked: list[str] = []
    bad: list[str] = []
    for card in _all_cards():
        if card["framework"] == "caffe":
            layers = _definition_layers(card, testdata)
        elif card["framework"] == "keras":
            local = _local_for(card["files"][0]["urls"][0], _sources_table(testdata))
            layers = _keras_layers(testdata / local) if local else None
        else:
            layers = None
        if layers is None:
            continue
        checked.append(card["id"])
        cut = card["default_cut"]
        if cut not in layers or layers.index(cut) == len(layers) - 1:
            bad.append(f"{card['id']}: {cut!r} is not an inner layer of {layers[-6:]}")
    assert not bad, bad
    expected = {
        "caffe/bvlc_alexnet",
        "caffe/bvlc_reference_caffenet",
        "caffe/bvlc_googlenet",
        "caffe/vgg16",
        "caffe/resnet50_msra",
        "caffe/squeezenet1_1",
        "caffe/mobilenet_v1",
        "caffe/mobilenet_v2",
        "caffe/lenet_mnist",
        "caffe/cifar10_quick",
    } | {d["id"] for d in _load("testdata")}
    assert expected <= set(checked), f"not checked: {sorted(expected - set(checked))}"


@pytest.mark.slow
def test_caffe_params_recount_from_the_deploy_prototxt(testdata: Path) -> None:
    """Cards whose params were counted from a deploy prototxt we hold: count again, compare."""

    from converters.caffe.reader import read_prototxt
    from converters.caffe.writer import random_weights

    by_sha = {
        hashlib.sha256(p.read_bytes()).hexdigest(): p
        for p in (testdata / "caffe" / "deploy").glob("*.prototxt")
    }
    checked = 0
    for card in json.loads((CURATED / "caffe.json").read_text()):
        if "params_source" not in card["provenance"]:
            continue
        [proto] = [by_sha[f["checksum"]["value"]] for f in card["files"] if f["role"] == "definition"]
        net = read_prototxt(proto)
        types = {layer.name: layer.type for layer in net.layers}
        learnable = sum(
            b.size
            for name, blobs in random_weights(net).items()
            if types.get(name) != "BatchNorm"
            for b in blobs
        )
        assert card["params"] == learnable, card["id"]
        checked += 1
    assert checked >= 8
