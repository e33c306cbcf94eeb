"""The Keras layer map's transforms, applied both ways (Keras tensor <-> PyTorch tensor).

A transform is steps joined by ``+``: ``none``, ``transpose`` (2-D), ``permute(a,b,...)``,
``reshape(...)`` (to the named intermediate shape; the inverse goes back to the source shape) and
``nhwc_to_nchw(h,w,c)`` (the columns of a Dense kernel that reads a Keras NHWC flatten, reordered
for an NCHW flatten). Used with :class:`converters.layermap.LayerMap` rows from Keras conversions.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

_STEP = re.compile(r"^(\w+)(?:\(([^)]*)\))?$")


def _steps(transform: str) -> list[tuple[str, list[str]]]:
    out = []
    for part in filter(None, transform.split("+")):
        m = _STEP.match(part.strip())
        if m is None:
            raise ValueError(f"unknown layer-map transform step {part!r}")
        out.append((m.group(1), [a.strip() for a in (m.group(2) or "").split(",") if a.strip()]))
    return out


def _reshape_target(args: list[str], a: np.ndarray, source_shape: list[int]) -> tuple[int, ...]:
    # reshape(kh,kw,C*M,1): symbolic; the only such step is the depthwise one
    kh, kw, c, m = source_shape
    sym = {"kh": kh, "kw": kw, "C*M": c * m, "C": c, "M": m}
    return tuple(int(sym[x]) if x in sym else int(x) for x in args)


def to_target(a: np.ndarray, transform: str, source_shape: list[int]) -> np.ndarray:
    """Keras tensor -> PyTorch tensor."""
    a = np.asarray(a)
    for name, args in _steps(transform):
        if name == "none":
            continue
        if name == "transpose":
            a = a.T
        elif name == "permute":
            a = a.transpose(*[int(x) for x in args])
        elif name == "reshape":
            a = a.reshape(-1) if args == ["-1"] else a.reshape(_reshape_target(args, a, source_shape))
        elif name == "nhwc_to_nchw":
            h, w, c = (int(x) for x in args)
            a = a.reshape(a.shape[0], h, w, c).transpose(0, 3, 1, 2).reshape(a.shape[0], -1)
        else:
            raise ValueError(f"unknown layer-map transform step {name!r}")
    return np.ascontiguousarray(a)


def to_source(a: np.ndarray, transform: str, source_shape: list[int]) -> np.ndarray:
    """PyTorch tensor -> Keras tensor (the inverse of :func:`to_target`)."""
    a = np.asarray(a)
    for name, args in reversed(_steps(transform)):
        if name == "none":
            continue
        if name == "transpose":
            a = a.T
        elif name == "permute":
            perm = [int(x) for x in args]
            a = a.transpose(*np.argsort(perm))
        elif name == "reshape":
            a = a.reshape(source_shape)
        elif name == "nhwc_to_nchw":
            h, w, c = (int(x) for x in args)
            a = a.reshape(a.shape[0], c, h, w).transpose(0, 2, 3, 1).reshape(a.shape[0], -1)
        else:
            raise ValueError(f"unknown layer-map transform step {name!r}")
    return np.ascontiguousarray(a.reshape(source_shape))


def apply_to_target(rows: list[Any], blobs: dict[str, list[np.ndarray]]) -> dict[str, np.ndarray]:
    """Keras weights (``{layer: [arrays]}``) -> a target state dict through layer-map rows."""
    out = {}
    for r in rows:
        if r.target:
            out[r.target] = to_target(blobs[r.source][r.blob], r.transform, r.source_shape)
    return out


def apply_to_source(rows: list[Any], state: dict[str, Any]) -> dict[str, list[np.ndarray]]:
    """A target state dict -> Keras weights ``{layer: [arrays in Keras order]}``."""
    out: dict[str, dict[int, np.ndarray]] = {}
    for r in rows:
        if r.target:
            t = state[r.target]
            arr = t.detach().cpu().numpy() if hasattr(t, "detach") else np.asarray(t)
            out.setdefault(r.source, {})[r.blob] = to_source(arr, r.transform, r.source_shape)
    return {k: [v[i] for i in sorted(v)] for k, v in out.items()}
