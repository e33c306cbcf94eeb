"""Where zoo keeps its files: ``$ZOO_HOME`` (default ``~/.cache/zoo``)."""

from __future__ import annotations

import os
from pathlib import Path


def zoo_home() -> Path:
    """The cache and catalogue root: ``$ZOO_HOME``, else ``~/.cache/zoo``."""
    env = os.environ.get("ZOO_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "zoo"
