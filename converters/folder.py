"""The zoo model folder: card.json, graph.json, model.safetensors, layermap.json [, model.onnx].

``write_folder`` builds everything in a temporary sibling folder and renames it into place, so a
failed conversion never leaves a half-written folder. ``load_folder`` rebuilds the ``nn.Module``
from graph.json + model.safetensors alone (no source framework, no pickle, no code execution).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from zoo.cards import ModelCard
from zoo.errors import ConversionError
from zoo.fileio import current_umask

from .layermap import LayerMap

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


TMP_SUFFIX = ".zoo-tmp"
OWNER = ".zoo-owner"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(parent: Path) -> list[Path]:
    """Remove temporary folders of conversions that died (SIGKILL, power loss) in ``parent``.

    A temporary folder is ``.<name>.<random>.zoo-tmp`` holding ``.zoo-owner`` (host and pid of the
    writer); it is stale when that process no longer runs on this host, or when it has no owner
    file and is over an hour old.
    """
    removed = []
    host = socket.gethostname()
    try:
        candidates = [p for p in parent.iterdir() if p.name.startswith(".") and p.name.endswith(TMP_SUFFIX)]
    except OSError:
        return removed
    for p in candidates:
        try:
            owner = json.loads((p / OWNER).read_text())
            stale = owner.get("host") == host and not _alive(int(owner["pid"]))
        except (OSError, ValueError, KeyError, TypeError):
            try:
                stale = time.time() - p.stat().st_mtime > 3600
            except OSError:
                continue
        if stale:
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def check_output(out_dir: str | Path, force: bool = False) -> Path:
    """Refuse an existing non-empty output folder unless ``force`` (call before converting)."""
    out = Path(out_dir).absolute()
    if out.exists() and not out.is_dir():
        raise ConversionError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ConversionError(f"{out}: output folder exists and is not empty (use --force to replace it)")
    return out


def write_folder(
    out_dir: str | Path,
    card: ModelCard | dict[str, Any] | None,
    graph: dict[str, Any] | None,
    state: dict[str, Any],
    layermap: LayerMap | dict[str, Any] | None,
    extra: Callable[[Path], None] | None = None,
    force: bool = False,
) -> Path:
    """The one folder writer: everything goes into a temporary sibling folder, then renamed into
    place, so a failed conversion leaves nothing half-written.

    ``card`` is validated (it may be None when ``extra(tmp_dir)`` writes card.json itself; it is
    validated all the same). ``graph`` is None for library models (the card's architecture builds
    them). An existing non-empty ``out_dir`` is refused unless ``force``; folders get the user's
    umask; stale temporaries of killed conversions in the same parent are removed first.
    """
    out = check_output(out_dir, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=TMP_SUFFIX, dir=out.parent))
    try:
        os.chmod(tmp, 0o777 & ~current_umask())
        _dump({"host": socket.gethostname(), "pid": os.getpid()}, tmp / OWNER)
        if card:
            c = card if isinstance(card, ModelCard) else ModelCard.from_dict(card)
            _dump(validate_card(c.to_dict(), "card.json"), tmp / CARD)
        if graph is not None:
            _dump(graph, tmp / GRAPH)
        save_safetensors(state, tmp / WEIGHTS)
        if layermap is not None:
            lm = layermap if isinstance(layermap, LayerMap) else LayerMap.from_dict(layermap)
            _dump(lm.to_dict(), tmp / LAYERMAP)
        if extra is not None:
            extra(tmp)
        read_card(tmp)  # whoever wrote it, card.json must be a valid ModelCard
        (tmp / OWNER).unlink()
        if out.exists():
            old = out.with_name(f".{out.name}.old{TMP_SUFFIX}")
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


def validate_card(d: dict[str, Any], where: str) -> dict[str, Any]:
    """``d`` if it is a valid card (the registry schema's card), else ConversionError naming the field."""
    from zoo.registry import card_validator

    errs = sorted(card_validator().iter_errors(d), key=lambda e: list(e.absolute_path))
    if errs:
        e = errs[0]
        path = "/".join(str(p) for p in e.absolute_path) or "(top)"
        raise ConversionError(f"{where}: not a valid model card: /{path}: {e.message}")
    return d


def read_card(path: str | Path) -> ModelCard:
    """The validated ModelCard of a model folder."""
    p = Path(path) / CARD
    try:
        d = json.loads(p.read_text())
    except FileNotFoundError:
        raise ConversionError(f"{Path(path)}: not a zoo model folder (card.json missing)") from None
    except (OSError, json.JSONDecodeError) as e:
        raise ConversionError(f"{p}: cannot read ({e})") from None
    return ModelCard.from_dict(validate_card(d, str(p)))


def read_folder(path: str | Path) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(card, graph) of a model folder; graph is None for a library model (built by its architecture)."""
    p = Path(path)
    if not p.is_dir():
        raise ConversionError(f"{p}: not a zoo model folder (no such folder)")
    card = read_card(p)
    if not (p / WEIGHTS).is_file():
        raise ConversionError(f"{p}: not a zoo model folder ({WEIGHTS} missing)")
    graph = None
    if (p / GRAPH).is_file():
        graph = json.loads((p / GRAPH).read_text())
        if graph.get("format") != GRAPH_FORMAT or graph.get("version") != GRAPH_VERSION:
            raise ConversionError(
                f"{p / GRAPH}: {graph.get('format')} version {graph.get('version')}, this zoo reads "
                f"{GRAPH_FORMAT} version {GRAPH_VERSION}: convert again"
            )
    elif card.architecture is None or card.architecture.kind not in ("torchvision", "timm", "finetune"):
        raise ConversionError(f"{p}: not a zoo model folder ({GRAPH} missing)")
    return card.to_dict(), graph


def graph_of(model: Any) -> dict[str, Any] | None:
    """The graph.json document a GraphModule was built from; None for a library model."""
    g = getattr(model, "graph", None)
    return g if isinstance(g, dict) and g.get("format") == GRAPH_FORMAT else None


def load_folder(path: str | Path):  # -> nn.Module with the zoo model interface
    """Rebuild the model (eval mode) of a zoo model folder: from graph.json, or for library
    models from the card's architecture; weights from model.safetensors (no pickle, no code)."""
    from safetensors.torch import load_file

    from .graph_torch import OPS, build_module

    p = Path(path)
    card_d, graph = read_folder(p)
    card = ModelCard.from_dict(card_d)
    if card.architecture is not None and card.architecture.kind == "finetune":
        from zoo.export import load_exported

        return load_exported(p, card, graph)
    if graph is None:
        from zoo.models import build_library

        return build_library(card, load_file(str(p / WEIGHTS)), where=str(p))
    if any(n["op"] not in OPS for n in graph.get("nodes", [])):
        import importlib

        try:  # a converter that adds its own ops registers them on import (converters.<source>.ops)
            importlib.import_module(f"converters.{graph.get('source', '')}.ops")
        except ImportError:
            pass
    state = load_file(str(p / WEIGHTS))
    try:
        model = build_module(graph, state)
    except (RuntimeError, ValueError, KeyError) as e:
        raise ConversionError(f"{p}: graph.json and model.safetensors do not fit ({e})") from None
    for attr in ("default_cut", "classifier"):
        if getattr(card, attr) and hasattr(model, attr):
            setattr(model, attr, getattr(card, attr))
    return model
