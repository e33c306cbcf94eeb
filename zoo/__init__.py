"""zoo: one index of pretrained models (Keras, torchvision, Caffe, timm), verified downloads,
conversion to PyTorch / ONNX with layer maps, and the tools to reuse them.

Importing ``zoo`` is cheap: torch and friends load only when a function needs them.
"""

from __future__ import annotations

from typing import Any

from zoo.api import info, pull, register, registry, search
from zoo.cards import Checksum, FileRef, Metric, ModelCard, Preprocess
from zoo.errors import ZooError

__version__ = "0.1.0"

__all__ = [
    "Checksum", "FileRef", "Metric", "ModelCard", "Preprocess", "ZooError",
    "info", "load", "pull", "register", "registry", "search", "__version__",
]


def load(folder: Any) -> Any:
    """Rebuild the ``nn.Module`` stored in a zoo model folder (needs torch)."""
    from converters import load_folder

    return load_folder(folder)
