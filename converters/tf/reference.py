"""The TensorFlow reference for ``converters.verify`` (``zoo verify`` of a folder converted from a
TF-slim checkpoint or a frozen GraphDef): TensorFlow itself runs the source file on the same
inputs, in a subprocess (converters/tf/_reference_worker.py; TensorFlow never shares a process
with torch). Inputs arrive in the PyTorch graph's layout (NCHW images) and outputs leave in it."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from zoo.errors import ConversionError


def _nhwc(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if x.ndim == 4 else x


def _nchw(y: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(y.transpose(0, 3, 1, 2)) if y.ndim == 4 else y


def _tensor(name: str) -> str:
    """A tensor name without the shape an input may carry (``Mul:0[1,299,299,3]`` -> ``Mul:0``)."""
    return name.split("[", 1)[0]


def _source(folder: Path, card: dict[str, Any]) -> tuple[dict[str, Any], Path]:
    prov = card.get("provenance") or {}
    files = prov.get("source_files") or []
    if not files:
        raise ConversionError(f"{folder}: card.json names no TensorFlow source file to compare with")
    for f in files:
        if not Path(f["path"]).is_file():
            raise ConversionError(f"{folder}: source file {f['path']} (needed as the reference) is gone")
    return prov, Path(files[0]["path"])


def reference_outputs(
    folder: Path,
    card: dict[str, Any],
    graph: dict[str, Any],
    inputs: list[np.ndarray],
    reference: str = "source",
) -> tuple[str, list[np.ndarray]]:
    """(label, outputs in ``graph["outputs"]`` order) from TensorFlow on the same inputs."""
    if reference not in ("source", "tensorflow", "tf"):
        raise ConversionError(f"{folder}: reference {reference!r} unknown for TensorFlow models (source)")
    from converters.tf.slim import parse_slim_arch, run_tf_worker

    prov, first = _source(Path(folder), card)
    with tempfile.TemporaryDirectory() as td:
        inp, out = Path(td) / "x.npz", Path(td) / "y.npz"
        np.savez(inp, **{f"x{i}": _nhwc(x) for i, x in enumerate(inputs)})
        if prov.get("source_format") == "tf-graphdef":
            args = [
                "graphdef",
                str(first),
                json.dumps([_tensor(n) for n in prov.get("inputs") or []]),
                json.dumps([_tensor(n) for n in prov.get("outputs") or []]),
            ]
        elif prov.get("slim_arch"):
            name, kwargs, _ = parse_slim_arch(prov["slim_arch"])
            h, w = graph["inputs"][0]["shape"][2:]
            ckpt = str(first)[: -len(".index")] if str(first).endswith(".index") else str(first)
            args = ["slim", name, json.dumps(kwargs), str(h), str(w), ckpt]
        else:
            raise ConversionError(f"{folder}: card.json says neither a slim net nor a GraphDef source")
        run_tf_worker([*args, str(inp), str(out)], module="converters.tf._reference_worker")
        with np.load(out, allow_pickle=False) as z:
            label = str(z["__label__"])
            ys = [z[f"y{i}"] for i in range(len(z.files) - 1)]
    return label, [_nchw(y) for y in ys]
