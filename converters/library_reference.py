"""The reference for library model folders (torchvision / timm architectures, no graph.json):
the library builds the network again and loads the *source* weights file the folder was made from
(its sha256 checked first), independently of the folder's model.safetensors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from zoo.errors import ConversionError


def graph_stub(card: dict[str, Any]) -> dict[str, Any]:
    """The ``inputs`` / ``outputs`` verify needs, from the card's preprocessing input size."""
    size = list((card.get("preprocess") or {}).get("input_size") or [3, 224, 224])
    return {"source": "library", "inputs": [{"name": "input", "shape": [1, *size]}], "outputs": ["output"]}


def reference_outputs(
    folder: Path, card: dict[str, Any], graph: dict[str, Any], xs: list[np.ndarray], reference: str = "source"
) -> tuple[str, list[np.ndarray]]:
    import torch

    from zoo.cards import ModelCard
    from zoo.fileio import sha256_file
    from zoo.models import build_library, read_state

    if reference not in ("source", "torch"):
        raise ConversionError(f"{folder}: reference {reference!r} unknown for library models (source)")
    src = [f for f in card.get("provenance", {}).get("source_files", []) if f.get("role") == "weights"]
    if not src:
        raise ConversionError(f"{folder}: card.json names no source weights file to compare with")
    path = Path(src[0]["path"])
    if not path.is_file():
        raise ConversionError(f"{folder}: the source weights {path} are gone: cannot verify")
    if sha256_file(path) != src[0]["sha256"]:
        raise ConversionError(f"{folder}: the source weights {path} changed since the conversion")
    c = ModelCard.from_dict(card)
    model = build_library(c, read_state(path), where=str(path))
    with torch.no_grad():
        out = model(*[torch.from_numpy(x) for x in xs])
    lib = c.architecture.kind if c.architecture else "library"
    version = __import__(lib).__version__ if lib in ("torchvision", "timm") else ""
    return f"{lib} {version} with {path.name}".strip(), [out.numpy()]
