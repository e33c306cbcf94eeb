"""Keras -> zoo model folder (PyTorch) and ONNX. Light at import: torch and h5py load lazily."""

from __future__ import annotations

from typing import Any

__all__ = ["convert_keras"]


def convert_keras(*args: Any, **kwargs: Any) -> Any:
    """See :func:`converters.keras.convert.convert_keras`."""
    from converters.keras.convert import convert_keras as _impl

    return _impl(*args, **kwargs)
