"""TensorFlow sources. Light at import, and never imports TensorFlow: checkpoints are read by
:mod:`converters.tf.checkpoint` (numpy only); TensorFlow itself only ever runs in a subprocess."""

from __future__ import annotations

from typing import Any

__all__ = ["CheckpointError", "list_variables", "read_checkpoint"]


def read_checkpoint(*args: Any, **kwargs: Any) -> Any:
    """See :func:`converters.tf.checkpoint.read_checkpoint`."""
    from converters.tf.checkpoint import read_checkpoint as _impl

    return _impl(*args, **kwargs)


def list_variables(*args: Any, **kwargs: Any) -> Any:
    """See :func:`converters.tf.checkpoint.list_variables`."""
    from converters.tf.checkpoint import list_variables as _impl

    return _impl(*args, **kwargs)


def __getattr__(name: str) -> Any:
    if name == "CheckpointError":
        from converters.tf.checkpoint import CheckpointError

        return CheckpointError
    raise AttributeError(name)
