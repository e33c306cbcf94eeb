"""The light core install: `pip install zoo` without extras gives registry, search, info, pull,
cache and register; a command that needs a missing extra names it in one line.

The slow test builds a real venv with pip, as a user would; the fast ones block the heavy modules
in a subprocess of the dev venv (where every extra is installed)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from servers import TestServer

from zoo.errors import EXTRA_MODULES, MissingExtra, missing_extra, require

ROOT = Path(__file__).resolve().parents[1]

PROTOTXT = 'name: "tiny"\ninput: "data"\ninput_shape { dim: 1 dim: 3 dim: 8 dim: 8 }\n'
TORCH_LINE = "zoo: error: zoo convert needs the torch extra: pip install 'zoo[torch]'"

# Runs the CLI where the BLOCKED modules are not installed (find_spec and import both fail as for
# an absent package); "needs-report" is a command that imports an extra's module, as commands do.
BLOCKER = r"""
import os, sys
BLOCKED = set(os.environ["ZOO_TEST_BLOCKED"].split(","))
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, Block())
from zoo.cli import main
from zoo.cli._app import cli
@cli.command("needs-report")
def _needs_report():
    import matplotlib  # noqa: F401
@cli.command("needs-nothing-known")
def _needs_nothing_known():
    import zoo_no_such_module  # noqa: F401
main(sys.argv[1:])
"""


def _blocked(*args: str, blocked: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, ZOO_TEST_BLOCKED=blocked)
    return subprocess.run(
        [sys.executable, "-c", BLOCKER, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=120
    )


def test_missing_module_of_an_extra_is_one_line_naming_it(zoo_home: Path, tmp_path: Path) -> None:
    r = _blocked("needs-report", blocked="matplotlib", cwd=tmp_path)
    assert r.returncode == MissingExtra.exit_code, r.stderr
    assert r.stderr.splitlines() == [
        "zoo: error: zoo needs-report needs the report extra: pip install 'zoo[report]'"
    ]
    # a module that is no extra's stays a bug: the traceback is kept
    r = _blocked("needs-nothing-known", blocked="matplotlib", cwd=tmp_path)
    assert r.returncode == 1 and "ModuleNotFoundError" in r.stderr and "zoo_no_such_module" in r.stderr


def test_convert_without_torch_fails_before_anything_is_written(zoo_home: Path, tmp_path: Path) -> None:
    proto = tmp_path / "tiny.prototxt"
    proto.write_text(PROTOTXT)
    before = sorted(tmp_path.iterdir())
    r = _blocked("convert", str(proto), "-o", str(tmp_path / "out"), blocked="torch", cwd=tmp_path)
    assert r.returncode == MissingExtra.exit_code and r.stderr.splitlines() == [TORCH_LINE], r.stderr
    assert sorted(tmp_path.iterdir()) == before and r.stdout == ""
    # a registry id fails the same way, before any pull
    r = _blocked("convert", "keras/vgg16", "-o", str(tmp_path / "out"), blocked="torch", cwd=tmp_path)
    assert r.stderr.splitlines() == [TORCH_LINE] and not any(zoo_home.iterdir())
    # help needs no extra
    r = _blocked("convert", "--help", blocked="torch", cwd=tmp_path)
    assert r.returncode == 0 and "SOURCE" in r.stdout
    r = _blocked("verify", str(tmp_path), blocked="torch", cwd=tmp_path)
    assert r.stderr.splitlines() == ["zoo: error: zoo verify needs the torch extra: pip install 'zoo[torch]'"]


def test_require_and_missing_extra() -> None:
    for extra in EXTRA_MODULES:  # the dev venv has every extra
        require(extra)
    with pytest.raises(MissingExtra) as ei:
        require("torch", "torch", "zoo_no_such_module", what="zoo.load")
    assert str(ei.value) == "zoo.load needs the torch extra: pip install 'zoo[torch]'"
    assert ei.value.extra == "torch" and ei.value.module == "zoo_no_such_module"
    with pytest.raises(MissingExtra, match=r"^cv2_missing is not installed; .* pip install 'zoo\[verify\]'$"):
        require("verify", "cv2_missing")
    with pytest.raises(ValueError, match="unknown extra"):
        require("gen")
    # installed modules are no missing extra, even when a submodule is absent (a real bug)
    assert missing_extra(ModuleNotFoundError("x", name="torch._no_such")) is None
    assert missing_extra(ModuleNotFoundError("x", name="zoo_no_such_module")) is None
    assert missing_extra(ModuleNotFoundError("x", name=None)) is None


def _copy_project(dst: Path) -> Path:
    """The files a `pip install` builds from, copied so the build writes nothing into the checkout."""
    dst.mkdir()
    for f in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / f, dst / f)
    for d in ("zoo", "converters"):
        shutil.copytree(ROOT / d, dst / d, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dst


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_core_install_without_extras(tmp_path: Path) -> None:
    t0 = time.perf_counter()
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py, zoo = venv / "bin" / "python", venv / "bin" / "zoo"
    src = _copy_project(tmp_path / "src")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "ZOO_", "HF_"))}
    env.update(ZOO_HOME=str(tmp_path / "home"), HF_HOME=str(tmp_path / "hf"), HF_HUB_DISABLE_TELEMETRY="1")
    pip = subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(src)],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
    )
    assert pip.returncode == 0, pip.stderr[-3000:]
    t_install = time.perf_counter() - t0

    def run(*args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(a) for a in args],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env={**env, **extra_env},
            timeout=120,
        )

    # the core really is light: none of the extras' modules is there
    for mod in ("torch", "torchvision", "timm", "onnxruntime", "tensorflow", "h5py", "matplotlib"):
        r = run(py, "-c", f"import {mod}")
        assert r.returncode != 0 and "ModuleNotFoundError" in r.stderr, (mod, r.stderr)
    r = run(py, "-c", "import zoo, converters; print(zoo.__file__)")
    assert str(venv) in r.stdout, r.stdout + r.stderr  # the installed copy, not the checkout

    r = run(zoo, "--help")
    assert r.returncode == 0 and "search" in r.stdout and "pull" in r.stdout, r.stderr
    r = run(zoo, "search", "vgg16")
    assert r.returncode == 0 and "keras/vgg16" in r.stdout and "torchvision/vgg16" in r.stdout, r.stderr
    r = run(zoo, "info", "keras/vgg16")
    assert r.returncode == 0 and ("md5" in r.stdout or "sha256" in r.stdout), r.stderr
    r = run(zoo, "registry", "validate")
    assert r.returncode == 0, r.stderr

    data, hub_data = os.urandom(300_000), os.urandom(100_000)
    with TestServer({"/models/cats.pth": data}) as server:
        # a file on the user's server, registered then pulled with its checksum checked
        sha = hashlib.sha256(data).hexdigest()
        url = f"{server.url}/models/cats.pth"
        r = run(zoo, "register", url, "--id", "me/cats", "--sha256", sha, "--labels", "cat,dog")
        assert r.returncode == 0, r.stderr
        r = run(zoo, "pull", "me/cats", "--dest", tmp_path / "dl")
        assert r.returncode == 0, r.stderr
        assert (tmp_path / "dl" / "cats.pth").read_bytes() == data
        # a bundled timm entry through huggingface_hub (the loopback hub-compatible endpoint)
        server.set_hf_file("timm/densenet121.ra_in1k", "model.safetensors", hub_data)
        r = run(zoo, "pull", "timm/densenet121.ra_in1k", HF_ENDPOINT=server.url)
        assert r.returncode == 0, r.stderr
        assert Path(r.stdout.strip().splitlines()[-1]).read_bytes() == hub_data
    r = run(zoo, "cache", "verify")
    assert r.returncode == 0, r.stdout + r.stderr
    r = run(zoo, "cache", "ls")
    assert r.returncode == 0 and "me/cats" in r.stdout and "timm/densenet121.ra_in1k" in r.stdout

    # a command that needs an extra: one line naming it, non-zero, nothing written
    proto = tmp_path / "tiny.prototxt"
    proto.write_text(PROTOTXT)
    before = sorted(p.name for p in tmp_path.iterdir())
    r = run(zoo, "convert", proto, "-o", tmp_path / "out")
    assert r.returncode != 0 and r.stderr.splitlines() == [TORCH_LINE], r.stderr
    assert r.stdout == "" and sorted(p.name for p in tmp_path.iterdir()) == before
    t_all = time.perf_counter() - t0
    print(f"light install: venv + pip install {t_install:.1f}s, whole test {t_all:.1f}s")
    assert t_all < 200, (t_install, t_all)  # ~90 s expected; pip from a cold cache may be slower
