"""The Keras reference for ``converters.verify``: the source file run by Keras itself.

tf-keras for legacy HDF5 files, Keras 3 (TensorFlow backend) for ``.keras`` / ``.weights.h5``,
always in a subprocess (TensorFlow never shares a process with torch). Inputs arrive in the
PyTorch graph's layout (NCHW images) and outputs leave in it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from converters.keras.reader import is_keras_app_spec
from zoo.errors import ConversionError


def _to_keras(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if x.ndim == 4 else x


def _from_keras(y: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(y.transpose(0, 3, 1, 2)) if y.ndim == 4 else y


def _source(folder: Path, card: dict[str, Any]) -> tuple[Path, str]:
    prov = card.get("provenance", {})
    files = prov.get("source_files") or []
    if not files:
        raise ConversionError(f"{folder}: card.json names no Keras source file to compare with")
    path = Path(files[0]["path"])
    if not path.is_file():
        raise ConversionError(f"{folder}: source file {path} (needed as the reference) is gone")
    arch = prov.get("keras_arch") or ""
    if arch and not is_keras_app_spec(arch) and not Path(arch).is_absolute():
        arch = str(folder / arch)
    return path, arch


def reference_outputs(
    folder: Path,
    card: dict[str, Any],
    graph: dict[str, Any],
    inputs: list[np.ndarray],
    reference: str = "source",
) -> tuple[str, list[np.ndarray]]:
    """(label, outputs in ``graph["outputs"]`` order) from Keras on the same inputs."""
    if reference not in ("source", "keras", "tf-keras"):
        raise ConversionError(f"{folder}: reference {reference!r} unknown for Keras models (source)")
    from converters.keras.subproc import keras_reference

    path, arch = _source(Path(folder), card)
    res = keras_reference(path, arch, [_to_keras(x) for x in inputs])
    return res["__label__"], [_from_keras(res[k]) for k in res["__outputs__"]]


def first_diverging_layer(
    model: Any,
    folder: Path,
    card: dict[str, Any],
    graph: dict[str, Any],
    inputs: list[np.ndarray],
    atol: float,
) -> str | None:
    """The first graph node (Keras layer) whose output differs from Keras's beyond ``atol``
    (relative to max(1, max |reference|))."""
    import torch

    from converters.keras.subproc import keras_reference

    path, arch = _source(Path(folder), card)
    res = keras_reference(path, arch, [_to_keras(x) for x in inputs], layers=True)
    trace = model.run_layers(*[torch.from_numpy(x) for x in inputs])
    for node in graph["nodes"]:
        name = node["name"]
        if name not in res or name not in trace:
            continue
        ref = _from_keras(res[name])
        got = trace[name][0].numpy()
        if got.shape != ref.shape:
            return name
        if float(np.abs(got - ref).max()) > atol * max(1.0, float(np.abs(ref).max())):
            return name
    return None
