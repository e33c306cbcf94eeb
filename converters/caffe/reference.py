"""The Caffe reference for ``converters.verify``: OpenCV dnn reading the source prototxt and weights.

OpenCV (``zoo[verify]``) runs with Winograd and layer fusion off, so it computes each layer as
Caffe defines it. Inputs and outputs are NCHW, as in the converted graph. ``reference_outputs`` and
``first_diverging_layer`` are the interface ``converters.verify`` calls for every source.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from zoo.errors import ConversionError

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def opencv_net(prototxt: Path, weights: Path | None, tmpdir: Path) -> Any:
    """An OpenCV dnn net computing layers as Caffe does (no Winograd, no fusion)."""
    try:
        import cv2
    except ImportError:
        raise ConversionError(
            "the OpenCV reference needs opencv-python-headless: pip install 'zoo[verify]'"
        ) from None
    wpath = weights
    if weights is not None:
        with open(weights, "rb") as f:
            is_h5 = f.read(8) == HDF5_SIGNATURE
        if is_h5:  # OpenCV opens .caffemodel.h5 but loads no weights from it: copy into a binary one
            from .reader import read_caffemodel_h5
            from .writer import write_caffemodel

            wpath = write_caffemodel(Path(tmpdir) / "weights.caffemodel", read_caffemodel_h5(weights))
    net = cv2.dnn.readNetFromCaffe(str(prototxt), str(wpath) if wpath else None)
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    net.enableWinograd(False)
    net.enableFusion(False)
    return net


def opencv_forward(net: Any, graph: dict[str, Any], blobs: list[str]) -> list[np.ndarray]:
    """OpenCV outputs for blob names: each blob is fetched from the last layer writing it (layer
    outputs beyond the first, e.g. Slice tops, come through ``forwardAndRetrieve``)."""
    where: dict[str, tuple[str, int]] = {}
    for node in graph["nodes"]:
        for i, o in enumerate(node["outputs"]):
            where[o] = (node["name"], i)
    layers = list(dict.fromkeys(where[b][0] for b in blobs))
    got = dict(zip(layers, net.forwardAndRetrieve(layers), strict=True))
    return [np.array(got[where[b][0]][where[b][1]]) for b in blobs]


def _source_files(folder: Path, card: dict[str, Any]) -> tuple[Path, Path | None]:
    files: dict[str, Path] = {}
    for f in card.get("provenance", {}).get("source_files", []):
        p = Path(f["path"])
        if not p.is_file():
            raise ConversionError(f"{folder}: source file {p} (needed as the reference) is gone")
        files[f["role"]] = p
    if "definition" not in files:
        raise ConversionError(f"{folder}: card.json names no Caffe prototxt to compare with")
    return files["definition"], files.get("weights")


def _label() -> str:
    import cv2

    return f"opencv {cv2.__version__} (winograd off, fusion off)"


def _set_inputs(net: Any, graph: dict[str, Any], inputs: list[np.ndarray]) -> None:
    for i, x in zip(graph["inputs"], inputs, strict=True):
        net.setInput(np.ascontiguousarray(x, np.float32), i["name"])


def reference_outputs(
    folder: Path,
    card: dict[str, Any],
    graph: dict[str, Any],
    inputs: list[np.ndarray],
    reference: str = "opencv",
) -> tuple[str, list[np.ndarray]]:
    """(label, outputs in ``graph["outputs"]`` order) from OpenCV dnn on the same inputs."""
    if reference not in ("opencv", "source"):
        raise ConversionError(f"{folder}: reference {reference!r} unknown for Caffe models (opencv)")
    prototxt, weights = _source_files(Path(folder), card)
    with tempfile.TemporaryDirectory() as td:
        net = opencv_net(prototxt, weights, Path(td))
        _set_inputs(net, graph, inputs)
        refs = opencv_forward(net, graph, list(graph["outputs"]))
    return _label(), refs


def first_diverging_layer(
    model: Any,
    folder: Path,
    card: dict[str, Any],
    graph: dict[str, Any],
    inputs: list[np.ndarray],
    atol: float,
) -> str | None:
    """The first node (in graph order) whose first output differs from OpenCV's beyond ``atol``
    (relative to max(1, max |reference|))."""
    import torch

    prototxt, weights = _source_files(Path(folder), card)
    trace = model.run_layers(*[torch.from_numpy(x) for x in inputs])
    with tempfile.TemporaryDirectory() as td:
        net = opencv_net(prototxt, weights, Path(td))
        cv_names = set(net.getLayerNames())
        names = [n["name"] for n in graph["nodes"] if n["name"] in cv_names and n["op"] != "split"]
        _set_inputs(net, graph, inputs)
        refs = net.forward(names)
    for name, ref in zip(names, refs, strict=True):
        ref = np.asarray(ref, np.float32)
        got = trace[name][0].numpy()
        if got.size != ref.size:
            return name
        diff = float(np.abs(ref - got.reshape(ref.shape)).max()) if ref.size else 0.0
        if diff > atol * max(1.0, float(np.abs(ref).max()) if ref.size else 1.0):
            return name
    return None


__all__ = ["first_diverging_layer", "opencv_forward", "opencv_net", "reference_outputs"]
