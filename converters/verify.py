"""verify: the same inputs through the converted model (torch, and ONNX when present) and through
an independent reader of the source files; max |diff|, relative error, argmax agreement, and the
first layer whose output diverges when the result is over tolerance.

For Caffe the independent reader is OpenCV dnn (``zoo[verify]``), run with Winograd and layer
fusion off so it computes each layer as Caffe defines it. Other sources plug in a module
``converters.<source>.verify`` with ``reference_outputs(folder, card, graph, inputs, reference=...)
-> (label, [arrays in graph["outputs"] order])``. Result: a dict, also written to ``verify.json``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from zoo.errors import ConversionError, VerificationError
from zoo.fileio import atomic_write_json

from .folder import VERIFY, read_folder


def _source_files(card: dict[str, Any], folder: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for f in card.get("provenance", {}).get("source_files", []):
        p = Path(f["path"])
        if not p.is_file():
            raise ConversionError(f"{folder}: source file {p} (needed as the reference) is gone")
        out[f["role"]] = p
    return out


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
            is_h5 = f.read(8) == b"\x89HDF\r\n\x1a\n"
        if is_h5:  # OpenCV opens .caffemodel.h5 but loads no weights from it: copy into a binary one
            from .caffe.reader import read_caffemodel_h5
            from .caffe.writer import write_caffemodel

            wpath = write_caffemodel(tmpdir / "weights.caffemodel", read_caffemodel_h5(weights))
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


def _make_inputs(
    graph: dict[str, Any], inputs: str | Sequence[str | Path], seed: int, batch: int | None
) -> list[np.ndarray]:
    if isinstance(inputs, str) and inputs == "random":
        rng = np.random.default_rng(seed)
        arrs = []
        for i in graph["inputs"]:
            shape = list(i["shape"])
            if batch is not None:
                shape[0] = batch
            arrs.append(rng.standard_normal(shape).astype(np.float32))
        return arrs
    files = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    if len(files) != len(graph["inputs"]):
        raise ConversionError(f"{len(graph['inputs'])} input(s) needed, {len(files)} file(s) given")
    arrs = []
    for f, i in zip(files, graph["inputs"], strict=True):
        a = np.load(f).astype(np.float32)
        if a.ndim == len(i["shape"]) - 1:
            a = a[None]
        arrs.append(a)
    return arrs


def compare(ref: np.ndarray, got: np.ndarray) -> dict[str, Any]:
    """max |diff|, relative error max|diff| / max(1, max|ref|), argmax agreement over axis 1."""
    ref = np.asarray(ref, np.float32)
    got = np.asarray(got, np.float32).reshape(ref.shape)
    diff = float(np.abs(ref - got).max()) if ref.size else 0.0
    rel = diff / max(1.0, float(np.abs(ref).max()) if ref.size else 1.0)
    if ref.ndim >= 2 and ref.shape[1] > 1:
        agree = float((ref.argmax(axis=1) == got.argmax(axis=1)).mean())
    else:
        agree = 1.0
    return {"max_abs_diff": diff, "rel": rel, "argmax_agreement": agree, "shape": list(ref.shape)}


def verify_folder(
    out_dir: str | Path,
    reference: str = "opencv",
    atol: float = 1e-4,
    inputs: str | Sequence[str | Path] = "random",
    seed: int = 0,
    batch: int | None = 2,
    raise_on_fail: bool = False,
) -> dict[str, Any]:
    """Compare a converted folder with the reference; returns (and writes) the verify result.

    ``passed`` is true when every output (torch and ONNX) has rel <= atol and identical argmax.
    """
    import torch

    from .folder import load_folder

    folder = Path(out_dir)
    card, graph = read_folder(folder)
    source = graph.get("source")
    if source == "caffe" and reference not in ("opencv", "source"):
        raise ConversionError(f"{folder}: reference {reference!r} unknown for Caffe models (opencv)")
    model = load_folder(folder)
    onnx_path = folder / "model.onnx"
    if onnx_path.is_file() and batch is not None:
        import onnx

        dims = [
            i.type.tensor_type.shape.dim[0]
            for i in onnx.load(str(onnx_path), load_external_data=False).graph.input
        ]
        if any(d.HasField("dim_value") for d in dims):  # exported with a fixed batch: use it
            batch = None
    xs = _make_inputs(graph, inputs, seed, batch)
    try:
        with torch.no_grad():
            t_out = model(*[torch.from_numpy(x) for x in xs])
    except RuntimeError:  # a graph with fixed batch (Reshape dims): use the declared shapes
        if not (isinstance(inputs, str) and inputs == "random"):
            raise
        xs = _make_inputs(graph, inputs, seed, None)
        with torch.no_grad():
            t_out = model(*[torch.from_numpy(x) for x in xs])
    t_out = t_out if isinstance(t_out, tuple) else (t_out,)
    names = list(graph["outputs"])
    runs: dict[str, list[np.ndarray]] = {"torch": [t.numpy() for t in t_out]}
    if onnx_path.is_file():
        import onnxruntime as ort

        sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        nhwc = card.get("architecture", {}).get("artifacts", {}).get("model.onnx", {}).get("layout") == "NHWC"
        feed = {
            i.name: (x.transpose(0, 2, 3, 1) if nhwc and x.ndim == 4 else x)
            for i, x in zip(sess.get_inputs(), xs, strict=True)
        }
        got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feed), strict=True))
        if nhwc:  # the card says the ONNX keeps the source's NHWC layout (Keras via tf2onnx)
            got = {k: (v.transpose(0, 3, 1, 2) if v.ndim == 4 else v) for k, v in got.items()}
        runs["onnx"] = [got[n] for n in names] if all(n in got for n in names) else list(got.values())
    with tempfile.TemporaryDirectory() as td:
        if source == "caffe":
            import cv2

            src = _source_files(card, folder)
            net = opencv_net(src["definition"], src.get("weights"), Path(td))
            for i, x in zip(graph["inputs"], xs, strict=True):
                net.setInput(x, i["name"])
            refs = opencv_forward(net, graph, names)
            label = f"opencv {cv2.__version__} (winograd off, fusion off)"
        else:  # another converter's reference: converters.<source>.verify.reference_outputs
            import importlib

            try:
                mod = importlib.import_module(f"converters.{source}.verify")
            except ImportError:
                raise ConversionError(f"{folder}: no reference reader for {source!r} models") from None
            label, refs = mod.reference_outputs(folder, card, graph, xs, reference=reference)
            net = None
        outputs: dict[str, Any] = {}
        worst = {"max_abs_diff": 0.0, "rel": 0.0, "argmax_agreement": 1.0}
        for backend, outs in runs.items():
            for n, r, o in zip(names, refs, outs, strict=True):
                c = compare(r, o)
                outputs.setdefault(n, {})[backend] = c
                worst["max_abs_diff"] = max(worst["max_abs_diff"], c["max_abs_diff"])
                worst["rel"] = max(worst["rel"], c["rel"])
                worst["argmax_agreement"] = min(worst["argmax_agreement"], c["argmax_agreement"])
        passed = worst["rel"] <= atol and worst["argmax_agreement"] == 1.0
        first = None
        if not passed and net is not None:
            first = first_diverging_layer(model, net, graph, xs, atol)
        elif not passed and hasattr(mod, "first_diverging_layer"):  # the plugged-in source's own
            first = mod.first_diverging_layer(model, folder, card, graph, xs, atol)
    result = {
        "reference": label,
        "atol": atol,
        "inputs": [list(x.shape) for x in xs],
        "backends": list(runs),
        "outputs": outputs,
        **worst,
        "first_diverging_layer": first,
        "passed": passed,
    }
    atomic_write_json(folder / VERIFY, result)
    if raise_on_fail and not passed:
        where = f", first diverging layer {first!r}" if first else ""
        raise VerificationError(
            f"{folder}: rel error {worst['rel']:.3g} > {atol:g} "
            f"or argmax differs ({worst['argmax_agreement']:.3f}){where}"
        )
    return result


def first_diverging_layer(
    model: Any, net: Any, graph: dict[str, Any], xs: list[np.ndarray], atol: float
) -> str | None:
    """The first node (in graph order) whose first output differs from OpenCV's beyond ``atol``."""
    import torch

    trace = model.run_layers(*[torch.from_numpy(x) for x in xs])
    cv_names = set(net.getLayerNames())
    names = [n["name"] for n in graph["nodes"] if n["name"] in cv_names and n["op"] != "split"]
    for i, x in zip(graph["inputs"], xs, strict=True):
        net.setInput(x, i["name"])
    refs = net.forward(names)
    for name, ref in zip(names, refs, strict=True):
        got = trace[name][0].numpy()
        if got.size != np.asarray(ref).size or compare(ref, got)["rel"] > atol:
            return name
    return None
