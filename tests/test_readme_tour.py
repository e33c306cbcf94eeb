"""The README's tour: every `zoo search` / `zoo info` line runs offline and returns what it says."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def tour_lines() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = text.split("## Tour", 1)[1]
    lines = []
    for line in block.splitlines():
        cmd = line.split("  #", 1)[0].strip()
        if re.match(r"^zoo (search|info)\b", cmd):
            lines.append(cmd)
    return lines


def test_the_tour_has_search_and_info_lines() -> None:
    lines = tour_lines()
    assert sum(c.startswith("zoo search") for c in lines) >= 4
    assert any(c.startswith("zoo info") for c in lines)


@pytest.mark.parametrize("cmd", tour_lines())
def test_tour_line_returns_models(cmd: str, zoo_home: Path) -> None:
    args = shlex.split(cmd)[1:]
    r = subprocess.run(
        [sys.executable, "-m", "zoo.cli", *args],
        capture_output=True,
        text=True,
        env=dict(os.environ, ZOO_HOME=str(zoo_home)),
        cwd=ROOT,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    if "--json" in args:
        hits = json.loads(r.stdout)
        assert hits
        if "--tag" in args:
            tag = args[args.index("--tag") + 1]
            assert all(tag in h["tags"] for h in hits)
            assert {"torchvision", "keras", "timm"} <= {h["source"] for h in hits}
    elif args[0] == "search":
        rows = r.stdout.splitlines()[1:]
        assert rows
        if "--origin" in args:
            assert all(row.split()[2] == args[args.index("--origin") + 1] for row in rows)
    else:
        assert args[1] in r.stdout.splitlines()[0]
