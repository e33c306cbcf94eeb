"""The `zoo` command as a user runs it: a real subprocess, real registry, real exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Runs the CLI in a fresh interpreter where importing a heavy framework raises ImportError.
BLOCKER = r"""
import sys
HEAVY = {"torch", "tensorflow", "onnxruntime", "keras", "cv2", "tf_keras", "onnx", "torchvision"}
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HEAVY:
            raise ImportError("blocked heavy import: " + name)
        return None
sys.meta_path.insert(0, Block())
from zoo.cli import main
main(sys.argv[1:])
"""


def zoo(
    *args: str, env: dict[str, str] | None = None, block_heavy: bool = False, check: bool = False
) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-c", BLOCKER, *args] if block_heavy else [sys.executable, "-m", "zoo.cli", *args]
    full_env = dict(os.environ, **(env or {}))
    r = subprocess.run(cmd, capture_output=True, text=True, env=full_env, cwd=ROOT, timeout=120)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def test_help_is_fast_and_light() -> None:
    r = zoo("--help", block_heavy=True, check=True)
    assert "search" in r.stdout and "pull" in r.stdout
    # median of several starts of the installed console script
    exe = Path(sys.executable).parent / "zoo"
    times = []
    for _ in range(5):
        t = time.perf_counter()
        subprocess.run([str(exe), "--help"], capture_output=True, check=True)
        times.append(time.perf_counter() - t)
    assert sorted(times)[2] < 0.5, times


def test_search_and_info_never_import_heavy_frameworks(zoo_home: Path) -> None:
    r = zoo("search", "vgg16", block_heavy=True, check=True)
    for src in ("keras/vgg16", "torchvision/vgg16", "caffe/"):
        assert src in r.stdout, r.stdout
    r = zoo("info", "keras/vgg16", block_heavy=True, check=True)
    assert "md5" in r.stdout or "sha256" in r.stdout
    assert "BGR" in r.stdout and "103.939" in r.stdout  # caffe-mode preprocessing, explicit


def test_search_json_roundtrips_cards(zoo_home: Path) -> None:
    r = zoo("search", "--source", "keras", "--sort", "top1", "--limit", "5", "--json", check=True)
    cards = json.loads(r.stdout)
    assert len(cards) == 5 and all(c["source"] == "keras" for c in cards)
    tops = [next(m["value"] for m in c["metrics"] if m["name"] == "top1") for c in cards]
    assert tops == sorted(tops, reverse=True)


def test_max_params_suffix(zoo_home: Path) -> None:
    r = zoo("search", "--max-params", "5M", "--json", "--limit", "0", check=True)
    cards = json.loads(r.stdout)
    assert cards and all(c["params"] <= 5e6 for c in cards)


def test_info_json_shows_checksums_and_preprocess(zoo_home: Path) -> None:
    r = zoo("info", "torchvision/resnet50.imagenet1k_v2", "--json", check=True)
    card = json.loads(r.stdout)
    ck = card["files"][0]["checksum"]
    assert ck["algo"] == "sha256-prefix" and ck["value"] in card["files"][0]["urls"][0]
    assert card["preprocess"]["crop"] == 224 and len(card["preprocess"]["mean"]) == 3


def test_unknown_id_is_one_line_with_suggestions(zoo_home: Path) -> None:
    r = zoo("info", "keras/vgg-16")
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "keras/vgg16" in lines[0], r.stderr


def test_malformed_catalogue_entry_is_skipped_with_one_line(zoo_home: Path) -> None:
    good = json.loads((ROOT / "registry.json").read_text())["models"][0]
    mine = dict(good, id="me/vgg16-mine", name="my vgg16")
    (zoo_home / "catalog.json").write_text(
        json.dumps({"schema_version": 1, "models": [{"id": "me/x"}, mine]})
    )
    r = zoo("search", "vgg16", "--limit", "0")
    assert r.returncode == 0, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "me/x" in lines[0] and "skipped" in lines[0], r.stderr
    assert "keras/vgg16" in r.stdout and "me/vgg16-mine" in r.stdout
    (zoo_home / "catalog.json").write_text('{"schema_version": 1, "models": [')
    r = zoo("search", "vgg16")
    assert r.returncode == 0 and "keras/vgg16" in r.stdout
    assert "line 1" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_register_then_search_info(zoo_home: Path, tmp_path: Path) -> None:
    model = tmp_path / "cats.pth"
    model.write_bytes(os.urandom(4096))
    zoo(
        "register",
        str(model),
        "--id",
        "me/cats",
        "--arch",
        "torchvision:resnet50",
        "--labels",
        "cat,dog",
        "--top1",
        "97.5",
        "--tag",
        "pets",
        check=True,
    )
    r = zoo("search", "--tag", "pets", "--json", check=True)
    assert [c["id"] for c in json.loads(r.stdout)] == ["me/cats"]
    card = json.loads(zoo("info", "me/cats", "--json", check=True).stdout)
    import hashlib

    assert card["files"][0]["checksum"] == {
        "algo": "sha256",
        "value": hashlib.sha256(model.read_bytes()).hexdigest(),
        "source": "computed by zoo register",
    }
    again = zoo("register", str(model), "--id", "me/cats")
    assert again.returncode != 0 and "already exists" in again.stderr


@pytest.mark.parametrize("args", [["info"], ["search", "--sort", "bogus"], ["nosuchcommand"]])
def test_usage_errors_exit_nonzero(args: list[str]) -> None:
    assert zoo(*args).returncode == 2


def test_registry_validate_reports_field_paths(tmp_path: Path) -> None:
    assert zoo("registry", "validate", str(ROOT / "registry.json")).returncode == 0
    data = json.loads((ROOT / "registry.json").read_text())
    data["models"][3]["files"][0]["urls"] = ["ftp://nope"]
    del data["models"][5]["preprocess"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    r = zoo("registry", "validate", str(bad))
    assert r.returncode == 3
    assert f"{data['models'][3]['id']!r}: files[0].urls[0]" in r.stderr
    assert f"{data['models'][5]['id']!r}" in r.stderr and "preprocess" in r.stderr
