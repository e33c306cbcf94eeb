"""Converters: source formats -> the zoo model folder (graph.json + model.safetensors + layermap.json).

Light at import: each function loads torch / protobuf / h5py only when called.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def load_folder(path: str | Path) -> Any:
    """Rebuild the ``nn.Module`` of a zoo model folder (no source framework needed)."""
    from converters.folder import load_folder as _load

    return _load(path)


def convert_caffe(prototxt: str | Path, weights: str | Path | None, out_dir: str | Path, **kw: Any) -> Path:
    """Caffe prototxt + caffemodel -> zoo model folder (see ``converters.caffe.convert_caffe``)."""
    from converters.caffe import convert_caffe as _convert

    return _convert(prototxt, weights, out_dir, **kw)


__all__ = ["convert_caffe", "load_folder"]
