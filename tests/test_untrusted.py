"""Untrusted content is refused and never executed.

- A ``.pth`` whose pickle would run code (``__reduce__`` -> ``exec``) is refused by ``zoo convert
  FILE.pth --arch torchvision:resnet18``, by ``zoo.load`` of a catalogue entry pointing at it and by
  ``zoo.models.read_state``; the marker file the payload would create never appears, and a
  positive control (``torch.load(weights_only=False)``, what zoo never does) shows the payload is
  live, so the marker assertion can fail.
- A Keras HDF5 file with a Lambda layer (its marshalled function would create the marker) is
  refused by ``zoo convert`` without ``--trust-code``; the positive control runs the marshalled
  function the way Keras' ``func_load`` would. (The API-level Lambda checks, with and without
  trust, are tests/test_keras.py::test_lambda_refused_without_trust and
  tests/test_keras_formats.py::test_lambda_model_onnx_only_with_trust.)
- Archive members with ``..``, absolute paths, drive letters or backslashes are refused through
  ``zoo pull`` of a registry entry, and nothing is written outside the cache. (A tar link member:
  tests/test_fetch.py::test_tar_link_member_is_refused.)
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import marshal
import os
import subprocess
import sys
import types
import zipfile
from pathlib import Path
from typing import Any

import pytest
from servers import TestServer

ROOT = Path(__file__).resolve().parents[1]


def sha256(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def zoo_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if "proxy" not in k.lower() and not k.startswith("ZOO_")}
    return subprocess.run(
        [sys.executable, "-m", "zoo.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**base, **env},
        timeout=120,
    )


# ---------------------------------------------------------------------------------------------
# a .pth whose pickle runs code


def evil_pth(path: Path, marker: Path, legacy: bool = False) -> Path:
    import torch

    class Payload:
        def __reduce__(self) -> Any:
            return (exec, (f"open({str(marker)!r}, 'w').write('pwned')",))

    state = {"conv1.weight": torch.zeros(2, 2), "x": Payload()}
    torch.save(state, path, _use_new_zipfile_serialization=not legacy)
    return path


@pytest.mark.timeout(120)
@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy-pickle"])
def test_pth_with_code_is_refused_by_read_state_and_zoo_load(
    tmp_path: Path, zoo_home: Path, legacy: bool
) -> None:
    import torch

    import zoo
    from zoo import api
    from zoo.errors import ConversionError
    from zoo.models import read_state

    marker = tmp_path / "PWNED"
    bad = evil_pth(tmp_path / "evil.pth", marker, legacy)
    with pytest.raises(ConversionError, match=r"evil\.pth: refused: .*would run code"):
        read_state(bad)
    assert not marker.exists()
    api.register(bad, "user/evil", architecture="torchvision:resnet18", home=zoo_home)
    with pytest.raises(ConversionError, match="refused"):
        zoo.load("user/evil", home=zoo_home)
    assert not marker.exists()
    # positive control: the payload is live; only zoo's weights-only loading kept it from running
    torch.load(bad, map_location="cpu", weights_only=False)
    assert marker.read_text() == "pwned"


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_pth_with_code_is_refused_by_zoo_convert(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    bad = evil_pth(tmp_path / "evil.pth", marker)
    out = tmp_path / "out"
    r = zoo_cli(
        "convert",
        str(bad),
        "--arch",
        "torchvision:resnet18",
        "-o",
        str(out),
        env={"ZOO_HOME": str(tmp_path / "home")},
    )
    assert r.returncode == 8, (r.stdout, r.stderr)  # ConversionError's exit code
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "evil.pth: refused" in lines[0] and "(exec)" in lines[0], r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    assert not marker.exists()
    assert not out.exists() or not any(out.iterdir())


# ---------------------------------------------------------------------------------------------
# a Keras Lambda layer


def lambda_function(marker: Path) -> list[Any]:
    """A Keras 2 serialized lambda (``[base64 marshal of the code, defaults, closure]``) whose
    call creates ``marker``."""
    src = f"lambda x: (open({str(marker)!r}, 'w').write('pwned'), x)[1]"
    code = compile(src, "<lambda>", "eval").co_consts[0]
    return [base64.b64encode(marshal.dumps(code)).decode("ascii"), None, None]


def lambda_h5(path: Path, marker: Path) -> Path:
    import copy

    from test_fuzz import KERAS_CONFIG, write_keras_h5

    cfg = copy.deepcopy(KERAS_CONFIG)
    layers = cfg["config"]["layers"]
    pool = next(la for la in layers if la["name"] == "pool")
    pool["class_name"] = "Lambda"
    pool["config"] = {
        "name": "pool",
        "trainable": True,
        "dtype": "float32",
        "function": lambda_function(marker),
        "function_type": "lambda",
        "module": "__main__",
        "output_shape": None,
        "output_shape_type": "raw",
        "output_shape_module": None,
        "arguments": {},
    }
    write_keras_h5(path, cfg)
    return path


@pytest.mark.timeout(120)
def test_keras_lambda_is_refused_without_trust_code(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    src = lambda_h5(tmp_path / "lambda.h5", marker)
    out = tmp_path / "out"
    r = zoo_cli("convert", str(src), "-o", str(out), env={"ZOO_HOME": str(tmp_path / "home")})
    assert r.returncode == 8, (r.stdout, r.stderr)
    line = r.stderr.strip()
    assert "\n" not in line and "Lambda" in line and "trust" in line and "'pool'" in line, r.stderr
    assert not marker.exists()
    assert not out.exists() or not any(out.iterdir())
    # positive control: what Keras' func_load would do with the stored function
    raw = json.loads(__import__("h5py").File(src, "r").attrs["model_config"])
    fn_b64 = next(la for la in raw["config"]["layers"] if la["class_name"] == "Lambda")["config"]["function"][
        0
    ]
    fn = types.FunctionType(marshal.loads(base64.b64decode(fn_b64)), {"open": open})
    assert fn(1) == 1 and marker.read_text() == "pwned"


# ---------------------------------------------------------------------------------------------
# archive members that would escape


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


BAD_MEMBERS = [
    "../evil.txt",
    "/etc/passwd",
    "a/../../evil.txt",
    "..\\evil.txt",
    "C:/evil.txt",
    "./../evil.txt",
]


@pytest.mark.timeout(60)
def test_archive_members_escaping_are_refused_through_pull(
    tmp_path: Path, zoo_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from zoo import api
    from zoo.errors import FetchError

    archive = _zip({"model/w.bin": b"good weights", "../evil.txt": b"owned", "..\\evil.txt": b"owned"})
    files = [
        {
            "name": f"f{i}.bin",
            "role": "weights",
            "urls": ["URL"],
            "size": len(archive),
            "member": m,
            "checksum": {"algo": "sha256", "value": sha256(archive), "source": "test"},
        }
        for i, m in enumerate(["model/w.bin", *BAD_MEMBERS])
    ]
    with TestServer({"/pack.zip": archive}) as server:
        for f in files:
            f["urls"] = [server.url + "/pack.zip"]
        entry = {
            "id": "rel/archive",
            "name": "archive",
            "source": "testdata",
            "framework": "onnx",
            "format": "onnx",
            "origin": "native",
            "task": "image-classification",
            "provenance": {"publisher": "test"},
            "files": [
                {
                    "name": "pack.zip",
                    "role": "archive",
                    **{k: v for k, v in files[0].items() if k not in ("name", "role", "member")},
                },
                *files,
            ],
            "preprocess": {"unknown": True},
            "metrics": [],
            "tags": [],
        }
        reg = tmp_path / "registry.json"
        reg.write_text(json.dumps({"schema_version": 1, "models": [entry]}))
        monkeypatch.setenv("ZOO_REGISTRY", str(reg))
        [good] = api.pull("rel/archive", "f0.bin", home=zoo_home, progress=False)
        assert good.read_bytes() == b"good weights"
        dest = tmp_path / "dest"
        for i in range(1, len(BAD_MEMBERS) + 1):
            with pytest.raises(FetchError, match=r"refusing archive member .*absolute path or '\.\.'"):
                api.pull("rel/archive", f"f{i}.bin", dest=dest, home=zoo_home, progress=False)
        assert len(server.requests("/pack.zip", "GET")) == 1  # refused before any extraction
    written = [p for p in tmp_path.rglob("*evil*")] + [p for p in zoo_home.parent.rglob("*evil*")]
    assert written == [] and not dest.exists()
    assert not Path("/evil.txt").exists() and not (ROOT / "evil.txt").exists()
    # the blobs are the archive and the one good member; no ref names a refused member
    blobs = sorted(p.name for p in (zoo_home / "blobs" / "sha256").iterdir())
    assert blobs == sorted([sha256(archive), sha256(b"good weights")])
    refs = sorted(p.name for p in (zoo_home / "refs" / "rel" / "archive").iterdir())
    assert "model%2Fw.bin.json" in refs and not [r for r in refs if "evil" in r or "passwd" in r], refs
