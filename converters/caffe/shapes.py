"""Caffe's shape arithmetic, shared by the graph builder (converters/caffe/graph.py) and the
rebuilt torch ops (converters/graph_torch.py): plain integers, no torch."""

from __future__ import annotations

import math


def reshape_shape(in_shape: list[int], dims: list[int], axis: int, num_axes: int) -> list[int]:
    """Caffe-style reshape: 0 copies the input dim, -1 is inferred, axis/num_axes pick the span."""
    nd = len(in_shape)
    start = axis + nd + 1 if axis < 0 else axis
    end = nd if num_axes == -1 else start + num_axes
    mid = [in_shape[start + i] if d == 0 else d for i, d in enumerate(dims)]
    out = list(in_shape[:start]) + mid + list(in_shape[end:])
    if -1 in out:
        known = math.prod(d for d in out if d != -1)  # no int(): torch.export passes symbolic sizes
        out[out.index(-1)] = math.prod(in_shape) // max(known, 1)
    return out


def caffe_pool_out(size: int, k: int, p: int, s: int) -> int:
    """Caffe's pooled size: ceil mode, then drop a last window that would start in the padding."""
    out = int(math.ceil((size + 2 * p - k) / s)) + 1
    if p > 0 and (out - 1) * s >= size + p:
        out -= 1
    return out


__all__ = ["caffe_pool_out", "reshape_shape"]
