"""The zoo model folder: card.json, graph.json, model.safetensors, layermap.json [, model.onnx].

``write_folder`` builds everything in a temporary sibling folder and renames it into place, so a
failed conversion never leaves a half-written folder. ``load_folder`` rebuilds the ``nn.Module``
from graph.json + model.safetensors alone (no source framework, no pickle, no code execution).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from zoo.errors import ConversionError

GRAPH_FORMAT = "zoo-graph"
GRAPH_VERSION = 2

CARD, GRAPH, WEIGHTS, LAYERMAP, ONNX, VERIFY = (
    "card.json",
    "graph.json",
    "model.safetensors",
    "layermap.json",
    "model.onnx",
    "verify.json",
)


def save_safetensors(
    state: dict[str, np.ndarray], path: Path, metadata: dict[str, str] | None = None
) -> None:
    """Write float32 arrays as safetensors, streaming each array (no whole-file copy in memory)."""
    header: dict[str, Any] = {"__metadata__": metadata or {"format": "pt"}}
    off = 0
    arrays = []
    for name, a in state.items():
        a = np.ascontiguousarray(a, dtype="<f4")
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + a.nbytes]}
        off += a.nbytes
        arrays.append(a)
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * (-len(hb) % 8)
    with open(path, "wb") as f:
        f.write(len(hb).to_bytes(8, "little"))
        f.write(hb)
        for a in arrays:
            f.write(memoryview(a.reshape(-1)).cast("B"))


def parse_targets(to: str | Iterable[str]) -> set[str]:
    """``"torch"`` | ``"onnx"`` | ``"all"`` (or a collection of them) -> a set of targets."""
    ts = {to} if isinstance(to, str) else set(to)
    if "all" in ts:
        ts = (ts - {"all"}) | {"torch", "onnx"}
    bad = ts - {"torch", "onnx"}
    if bad or not ts:
        raise ConversionError(f"unknown conversion target(s) {sorted(bad) or '(none)'} (torch, onnx or all)")
    return ts


def _dump(obj: Any, path: Path) -> None:
    path.write_text(json.dumps(obj, indent=1, sort_keys=False) + "\n")


def write_folder(
    out_dir: str | Path,
    card: dict[str, Any],
    graph: dict[str, Any],
    state: dict[str, np.ndarray],
    layermap: dict[str, Any],
    extra: Callable[[Path], None] | None = None,
) -> Path:
    """Write the folder atomically; ``extra(tmp_dir)`` may add files (e.g. model.onnx) first."""
    out = Path(out_dir).absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        _dump(card, tmp / CARD)
        _dump(graph, tmp / GRAPH)
        save_safetensors(state, tmp / WEIGHTS)
        _dump(layermap, tmp / LAYERMAP)
        if extra is not None:
            extra(tmp)
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def read_folder(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(card, graph) of a model folder."""
    p = Path(path)
    for name in (CARD, GRAPH, WEIGHTS):
        if not (p / name).is_file():
            raise ConversionError(f"{p}: not a zoo model folder ({name} missing)")
    return json.loads((p / CARD).read_text()), json.loads((p / GRAPH).read_text())


def load_folder(path: str | Path):  # -> converters.graph_torch.GraphModule
    """Rebuild the converted model (eval mode) from a zoo model folder."""
    from safetensors.torch import load_file

    from .graph_torch import OPS, build_module

    p = Path(path)
    _card, graph = read_folder(p)
    if any(n["op"] not in OPS for n in graph.get("nodes", [])):
        import importlib

        try:  # a converter that adds its own ops registers them on import (converters.<source>.ops)
            importlib.import_module(f"converters.{graph.get('source', '')}.ops")
        except ImportError:
            pass
    state = load_file(str(p / WEIGHTS))
    try:
        return build_module(graph, state)
    except (RuntimeError, ValueError, KeyError) as e:
        raise ConversionError(f"{p}: graph.json and model.safetensors do not fit ({e})") from None
