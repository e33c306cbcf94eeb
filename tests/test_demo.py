"""`zoo demo` end to end (zoo/demo.py): offline, its own ZOO_HOME; the pretrained frozen base beats
the random frozen base on digits 5-9 with ten labels per class."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # the whole demo: about a minute


def test_zoo_demo_runs_offline_and_transfer_beats_the_control(tmp_path: Path) -> None:
    from servers import offline_env

    user_home = tmp_path / "user_home"
    env = {**offline_env(user_home), "PATH": "/usr/bin:/bin"}
    out = tmp_path / "demo"
    r = subprocess.run(
        [sys.executable, "-m", "zoo.cli", "demo", "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.splitlines()
    got = {}
    for key in ("pretrained base, frozen (stage 1)", "random base, frozen (control, stage 1)"):
        (line,) = [ln for ln in lines if ln.strip().startswith(key)]
        got[key] = float(line.split()[-1])
    transfer, control = got.values()
    tr = json.loads((out / "run-transfer" / "metrics.json").read_text())
    ctl = json.loads((out / "run-control" / "metrics.json").read_text())
    stage1 = [h["val_acc"] for h in tr["epochs"] if h["stage"] == 1]
    assert transfer == pytest.approx(stage1[-1], abs=1e-4)
    assert control == pytest.approx(ctl["final"]["accuracy"], abs=1e-4)
    assert transfer >= control + 0.10, (transfer, control)  # measured: 0.7584 vs 0.5390
    assert tr["cache"]["used"] and ctl["cache"]["used"]
    assert [h["stage"] for h in tr["epochs"]].count(2) == 5
    assert json.loads((out / "digits-5-9-model" / "verify.json").read_text())["passed"] is True
    assert (out / "run-transfer" / "report.html").is_file()
    cat = json.loads((out / "zoo_home" / "catalog.json").read_text())
    assert "demo/digits-cnn" in json.dumps(cat)
    assert f"report: {out / 'run-transfer' / 'report.html'}" in r.stdout
    assert (
        not user_home.exists() or not (user_home / "catalog.json").exists()
    )  # the user's catalogue untouched

    r = subprocess.run(
        [sys.executable, "-m", "zoo.cli", "demo", "--out", str(out)], capture_output=True, text=True, env=env
    )
    assert r.returncode != 0 and "--force" in r.stderr and len(r.stderr.strip().splitlines()) == 1

    r = subprocess.run(
        [sys.executable, "-m", "zoo.cli", "demo", "--out", str(tmp_path), "--force"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert r.returncode != 0 and "not an earlier zoo demo" in r.stderr and (out / "run-transfer").is_dir()
