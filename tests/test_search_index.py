"""The search index (zoo.index) against the in-memory reference (zoo.registry.Registry.search),
on the real registry and on generated registries of 1k, 10k and 100k entries."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import zoo.index
from zoo.errors import RegistryError
from zoo.index import open_index
from zoo.registry import Registry, SearchQuery

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT / "registry.json"

QUERIES = [
    SearchQuery(text="resnet"),
    SearchQuery(text="resnet50"),
    SearchQuery(text="vgg16"),
    SearchQuery(text="mobilenet"),
    SearchQuery(text="inception"),
    SearchQuery(text="res 50"),
    SearchQuery(text="v2 resnet"),
    SearchQuery(text="ab"),
    SearchQuery(text="keras/vgg16"),
    SearchQuery(text="ResNet-50"),
    SearchQuery(text="efficientnet b0"),
    SearchQuery(text="zzzz"),
    SearchQuery(),
    SearchQuery(source="torchvision", sort="top1"),
    SearchQuery(text="net", sort="params"),
    SearchQuery(text="vit", sort="gflops"),
    SearchQuery(text="resnet", source="timm", min_top1=80),
    SearchQuery(max_params=5e6, sort="name"),
    SearchQuery(dataset="mnist"),
    SearchQuery(license="bsd", text="vgg"),
    SearchQuery(tag="imagenet", limit=7),
    SearchQuery(input_size=299),
    SearchQuery(origin="caffe", text="vgg"),
    SearchQuery(framework="keras"),
    SearchQuery(text="mobilenet", max_gflops=1.0, sort="top1", limit=20),
    SearchQuery(text="mobilenet v2"),
]


def generated_registry(n: int, path: Path) -> Path:
    """``n`` entries made from the real ones: ids, names and numbers varied, deterministic."""
    real = json.loads(REAL.read_text())["models"]
    out = []
    for k in range(n):
        d = real[k % len(real)]  # repeat 0: the real card itself (only serialized below)
        rep = k // len(real)
        if rep:  # a copy of what changes (the top level and the metrics), key order kept
            d = dict(d)
            if "metrics" in d:
                d["metrics"] = [dict(m) for m in d["metrics"]]
            fam, tail = d["id"].split("/", 1)
            model, _, rest = tail.partition(".")
            if rep % 2:
                d["id"] = f"{fam}/{model}_g{rep}" + (f".{rest}" if rest else "")
            else:
                d["id"] = f"{fam}/{tail}-v{rep}"
            d["name"] = f"{d['name']} copy {rep}"
            for m in d.get("metrics", []):
                m["value"] = round(m["value"] - (rep % 97) / 10, 3)
            if d.get("params"):
                d["params"] += rep
        out.append(d)
    path.write_text(json.dumps({"schema_version": 1, "models": out}))
    return path


def _compare(reg_path: Path, home: Path, queries: list[SearchQuery]) -> None:
    ref = Registry.load(path=reg_path, home=home)
    idx = open_index(home, registry_path=reg_path)
    assert len(idx) == len(ref)
    for q in queries:
        want = [c.id for c in ref.search(q)]
        got = idx.search(q)
        assert got.ids == want, q
        if want:
            assert got[0].id == want[0] and got[-1].id == want[-1]


def test_real_registry_same_as_reference(tmp_path: Path) -> None:
    _compare(REAL, tmp_path, QUERIES)


@pytest.mark.parametrize("n", [1000, 10_000])
def test_generated_same_as_reference(tmp_path: Path, n: int) -> None:
    _compare(generated_registry(n, tmp_path / "reg.json"), tmp_path, QUERIES)


@pytest.mark.slow
def test_generated_100k_same_as_reference(tmp_path: Path) -> None:
    reg = generated_registry(100_000, tmp_path / "reg.json")
    _compare(reg, tmp_path, [*QUERIES[:8], QUERIES[-1]])
    idx = open_index(tmp_path, registry_path=reg)  # the broad words are ranked from the words table
    for text in ("resnet", "resnet50", "v2 resnet", "mobilenet v2"):
        q = SearchQuery(text=text)
        assert idx._from_words(q, q.tokens()) is not None, text


# Queries for the words table: repeated words, a word spelled with punctuation, an id as the query
# ("res/net" is an id below and normalizes to the table word "resnet"), a limit.
WORD_QUERIES = [
    *QUERIES,
    SearchQuery(text="resnet resnet"),
    SearchQuery(text="v2 mobilenet V2"),
    SearchQuery(text="efficientnet b0 b0"),
    SearchQuery(text="res/net"),
    SearchQuery(text="res/net v2"),
    SearchQuery(text="Mobile-Net"),
    SearchQuery(text="resnet", limit=3),
    SearchQuery(text="resnet50 torchvision"),
]


@pytest.fixture
def every_word(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every whole word gets a row in the words table (at the default, only words of 1000 cards)."""
    monkeypatch.setattr(zoo.index, "WORDS_MIN_ROWS", 1)


@pytest.mark.parametrize("n", [0, 1000])
def test_words_table_same_as_reference(tmp_path: Path, every_word: None, n: int) -> None:
    reg = generated_registry(n, tmp_path / "reg.json") if n else tmp_path / "reg.json"
    data = json.loads((reg if n else REAL).read_text())
    data["models"].append(dict(data["models"][0], id="res/net", name="Res net"))
    reg.write_text(json.dumps(data))
    _compare(reg, tmp_path, WORD_QUERIES)
    idx = open_index(tmp_path, registry_path=reg)
    (words,) = idx.con.execute("SELECT count(*) FROM words").fetchone()
    assert words > 100

    def table(q: SearchQuery) -> bool:
        return idx._from_words(q, q.tokens()) is not None

    assert table(SearchQuery(text="resnet")) and table(SearchQuery(text="mobilenet v2"))
    assert table(SearchQuery(text="ResNet-50", limit=5))  # no id is "resnet-50"
    assert not table(SearchQuery(text="res/net"))  # an id: its exact-id score is not in the table
    assert not table(SearchQuery(text="resne"))  # a prefix: ranked per query
    assert not table(SearchQuery(text="resnet zzzz"))
    assert not table(SearchQuery(text="resnet", source="timm"))  # a filter: ranked per query
    assert not table(SearchQuery(text="resnet", sort="top1"))
    assert not table(SearchQuery())


def test_words_table_default_threshold(tmp_path: Path) -> None:
    """At the default threshold only words of 1000 cards or more have a row; the rest still rank
    the same (the 10k comparison above covers both paths together)."""
    idx = open_index(tmp_path, registry_path=REAL)
    assert idx.con.execute("SELECT count(*) FROM words").fetchone() == (0,)


def test_change_is_picked_up_and_touch_is_not_a_rebuild(tmp_path: Path) -> None:
    reg = generated_registry(600, tmp_path / "reg.json")
    idx = open_index(tmp_path, registry_path=reg)
    assert "zzuniq" not in " ".join(idx.search(SearchQuery(text="vgg16")).ids)
    built = idx.path.stat().st_ino
    os.utime(reg)  # same bytes, new mtime: re-hashed, not rebuilt
    assert open_index(tmp_path, registry_path=reg).path.stat().st_ino == built
    data = json.loads(reg.read_text())
    data["models"][0] = dict(data["models"][0], id="keras/vgg16zzuniq")
    reg.write_text(json.dumps(data))
    idx2 = open_index(tmp_path, registry_path=reg)
    assert idx2.path.stat().st_ino != built
    assert "keras/vgg16zzuniq" in idx2.search(SearchQuery(text="vgg16")).ids
    # the catalogue is part of the key too
    mine = dict(data["models"][1], id="me/vgg16mine", source="user")
    (tmp_path / "catalog.json").write_text(json.dumps({"schema_version": 1, "models": [mine]}))
    idx3 = open_index(tmp_path, registry_path=reg)
    assert "me/vgg16mine" in idx3.search(SearchQuery(text="vgg16")).ids
    assert idx3.origin("me/vgg16mine") == "catalogue"


def test_bad_catalogue_entry_skipped_with_one_warning(tmp_path: Path) -> None:
    good = json.loads(REAL.read_text())["models"][0]
    bad = dict(good, id="me/broken", params="many")
    ok = dict(good, id="me/fine-vgg16")
    (tmp_path / "catalog.json").write_text(json.dumps({"schema_version": 1, "models": [bad, ok]}))
    idx = open_index(tmp_path, registry_path=REAL)
    assert len(idx.warnings) == 1 and "me/broken" in idx.warnings[0] and "params" in idx.warnings[0]
    ids = idx.search(SearchQuery(text="vgg16", limit=0)).ids
    assert "me/fine-vgg16" in ids and "me/broken" not in ids


@pytest.mark.parametrize("text", ["resnet50", "vgg16", "mobilenet", "inception"])
def test_every_source_within_first_ten(tmp_path: Path, text: str) -> None:
    hits = open_index(tmp_path, registry_path=REAL).search(SearchQuery(text=text))
    having = {c.source for c in hits}
    assert len(having) >= 3
    assert {c.source for c in hits[:10]} == having, hits.ids[:10]


def test_exact_before_prefix(tmp_path: Path) -> None:
    hits = open_index(tmp_path, registry_path=REAL).search(SearchQuery(text="resnet"))
    first_v2 = next(i for i, m in enumerate(hits.ids) if "resnetv2" in m)
    # every plain ResNet of torchvision, Caffe and timm comes before the first ResNetV2
    plain = [
        i
        for i, m in enumerate(hits.ids)
        if m.split("/")[1].split(".")[0]
        in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnet50_msra")
    ]
    assert plain and max(plain) < first_v2
    hits = open_index(tmp_path, registry_path=REAL).search(SearchQuery(text="resnet50"))
    assert {"torchvision", "keras", "caffe", "timm"} <= {c.source for c in hits[:4]}


def test_unknown_filter_value_names_known_ones(tmp_path: Path) -> None:
    idx = open_index(tmp_path, registry_path=REAL)
    with pytest.raises(
        RegistryError, match="known: caffe, keras, tensorflow, testdata, tf-slim, timm, torchvision"
    ):
        idx.search(SearchQuery(text="vgg16", source="kerass"))
    with pytest.raises(RegistryError, match="unknown framework"):
        idx.search(SearchQuery(framework="jax"))


def test_results_are_lazy_and_total_counts_all(tmp_path: Path) -> None:
    hits = open_index(tmp_path, registry_path=REAL).search(SearchQuery(text="resnet", limit=5))
    assert len(hits) == 5 and hits.total > 5
    assert not hits._cards
    assert hits[2].id == hits.ids[2] and list(hits._cards) == [2]


def _zoo(*args: str, home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    e = dict(os.environ, ZOO_HOME=str(home), **env)
    e.pop("ZOO_REGISTRY", None)
    return subprocess.run(
        [sys.executable, "-m", "zoo.cli", *args], capture_output=True, text=True, env=e, cwd=ROOT, timeout=120
    )


def test_80_columns_keep_numbers_and_hashes_whole(tmp_path: Path) -> None:
    r = _zoo("search", "vgg16", home=tmp_path, COLUMNS="80")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), lines
    cards = json.loads(_zoo("search", "vgg16", "--json", home=tmp_path).stdout)
    for c in cards:
        row = next(line for line in lines if line.split()[0] == c["id"])  # ids whole
        top1 = next((m["value"] for m in c["metrics"] if m["name"] == "top1"), None)
        if top1 is not None:
            assert f"{top1:.2f}" in row.split()
        assert f"{c['params'] / 1e6:.1f}M" in row.split()
    assert all(line == line.rstrip() for line in lines)
    info = _zoo("info", "keras/vgg16", home=tmp_path, COLUMNS="80")
    assert info.returncode == 0, info.stderr
    card = json.loads(_zoo("info", "keras/vgg16", "--json", home=tmp_path).stdout)
    words = info.stdout.split()
    for f in card["files"]:
        assert f"{f['checksum']['algo']}:{f['checksum']['value']}" in words
        for url in f["urls"]:
            assert url in words
    for m in card["metrics"]:
        assert f"{m['value']:g}" in words
    assert all(line == line.rstrip() for line in info.stdout.splitlines())


def test_input_shape_one_way_and_no_markup(tmp_path: Path) -> None:
    out = _zoo("search", "--columns", "id,input", "--limit", "0", home=tmp_path).stdout.splitlines()[1:]
    import re

    shapes = {line.split()[-1] for line in out}
    assert shapes and all(re.fullmatch(r"\d+x\d+x\d+|-", s) for s in shapes), shapes
    assert "3x224x224" in shapes and "1x28x28" in shapes
    good = json.loads(REAL.read_text())["models"][0]
    mine = dict(good, id="me/marked", notes="see [https://example.org/x] and [bold]this[/bold]")
    (tmp_path / "catalog.json").write_text(json.dumps({"schema_version": 1, "models": [mine]}))
    info = _zoo("info", "me/marked", home=tmp_path).stdout
    assert "[https://example.org/x]" in info and "[bold]this[/bold]" in info


def test_no_match_exit_code_same_with_and_without_json(tmp_path: Path) -> None:
    a = _zoo("search", "zzzznothing", home=tmp_path)
    b = _zoo("search", "zzzznothing", "--json", home=tmp_path)
    assert a.returncode == b.returncode == 1
    assert json.loads(b.stdout) == []


def test_limit_says_how_many(tmp_path: Path) -> None:
    r = _zoo("search", home=tmp_path)
    n = len(json.loads(REAL.read_text())["models"])
    assert f"showing 50 of {n} (--limit 0 for all)" in r.stderr
    assert len(r.stdout.splitlines()) == 51
    r = _zoo("search", "--limit", "0", home=tmp_path)
    assert "showing" not in r.stderr and len(r.stdout.splitlines()) == n + 1


def test_unwritable_index_folder_still_searches(tmp_path: Path) -> None:
    (tmp_path / "index").write_text("not a folder")  # the index cannot be written, even as root
    idx = open_index(tmp_path, registry_path=REAL)
    assert idx.search(SearchQuery(text="vgg16")).ids[:2] == ["caffe/vgg16", "keras/vgg16"]
    assert (tmp_path / "index").read_text() == "not a folder"


def test_registry_and_index_merge_the_same_way(tmp_path: Path) -> None:
    """One merge (zoo.registry.read_sources) for both: an unreadable catalogue is skipped with one
    line by the in-memory registry too, and register refuses to write over it in one line."""
    (tmp_path / "catalog.json").write_text('{"schema_version": 1, "models": [')
    reg = Registry.load(path=REAL, home=tmp_path)
    idx = open_index(tmp_path, registry_path=REAL)
    assert reg.warnings == idx.warnings and len(reg.warnings) == 1 and "line 1" in reg.warnings[0]
    assert len(reg) == len(idx)
    model = tmp_path / "m.pth"
    model.write_bytes(b"x" * 64)
    r = _zoo("register", str(model), "--id", "me/m", home=tmp_path)
    assert r.returncode == 3 and len(r.stderr.strip().splitlines()) == 1 and "not valid JSON" in r.stderr
    assert (tmp_path / "catalog.json").read_text() == '{"schema_version": 1, "models": ['
