"""PyTorch modules for the ``tf.*`` graph ops of converted TensorFlow graphs (NCHW).

Convolution, pooling, BatchNorm, add and global pooling reuse the ``keras.*`` ops
(:mod:`converters.keras.ops`: TF 'SAME' padding exact, asymmetric at stride 2); here only what
Keras has no layer for: ``tf.squeeze`` (TF's Squeeze, axes given in NCHW) and ``tf.pad`` (a
constant Pad, NCHW pads).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import converters.keras.ops as keras_ops


class Squeeze(nn.Module):
    """TensorFlow Squeeze: removes the given size-1 axes (an axis of another size is an error, as
    in TensorFlow)."""

    def __init__(self, attrs: dict[str, Any]) -> None:
        super().__init__()
        self.dims = [int(d) for d in attrs["dims"]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for d in self.dims:
            if x.shape[d] != 1:
                raise ValueError(f"Squeeze: axis {d} has size {x.shape[d]}, not 1")
        keep = [s for i, s in enumerate(x.shape) if i not in self.dims]
        return x.reshape(keep)


class Pad(nn.Module):
    """TensorFlow Pad with constant zeros; ``pads`` in F.pad order (last axis first)."""

    def __init__(self, attrs: dict[str, Any]) -> None:
        super().__init__()
        self.pads = [int(p) for p in attrs["pads"]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, self.pads)


TF_OPS = {"squeeze": Squeeze, "pad": Pad}


def register(table: dict[str, Any] | None = None) -> dict[str, Any]:
    """Add the ``tf.*`` ops (and the ``keras.*`` ones they build on) to the graph op table."""
    if table is None:
        from converters.graph_torch import OPS as table  # noqa: N811
    keras_ops.register(table)
    for name, factory in TF_OPS.items():
        table.setdefault(f"tf.{name}", keras_ops._node_op(factory))
    return table


register()
