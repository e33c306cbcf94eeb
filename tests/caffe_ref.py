"""Helpers for the Caffe tests: convert, run ours (torch / ONNX) and OpenCV dnn on the same input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from converters.caffe import convert_caffe
from converters.caffe.reference import opencv_forward, opencv_net
from converters.folder import load_folder


def rel_err(ref: np.ndarray, got: np.ndarray) -> float:
    """max |diff| / max(1, max |ref|)."""
    ref = np.asarray(ref, np.float32)
    got = np.asarray(got, np.float32)
    assert ref.shape == got.shape, (ref.shape, got.shape)
    return float(np.abs(ref - got).max()) / max(1.0, float(np.abs(ref).max()))


def assert_same_argmax(ref: np.ndarray, got: np.ndarray) -> None:
    if ref.ndim >= 2 and ref.shape[1] > 1:
        np.testing.assert_array_equal(ref.argmax(axis=1), got.argmax(axis=1))


def opencv_outputs(
    prototxt: Path,
    weights: Path | None,
    xs: dict[str, np.ndarray],
    names: list[str],
    tmp: Path,
    graph: dict | None = None,
) -> list[np.ndarray]:
    """OpenCV's values for layer names (first output) or, given the graph, for blob names."""
    net = opencv_net(Path(prototxt), Path(weights) if weights else None, tmp)
    for k, v in xs.items():
        net.setInput(v, k)
    if graph is not None:
        return opencv_forward(net, graph, names)
    return [np.array(r) for r in net.forward(names)]


def torch_layers(model: torch.nn.Module, xs: dict[str, np.ndarray]) -> dict[str, list[np.ndarray]]:
    trace = model.run_layers(*[torch.from_numpy(xs[n]) for n in model.input_names])
    return {k: [t.numpy() for t in v] for k, v in trace.items()}


def onnx_outputs(path: Path, xs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outs = sess.run(None, {i.name: xs[i.name] for i in sess.get_inputs()})
    return dict(zip([o.name for o in sess.get_outputs()], outs, strict=True))


def check_against_opencv(
    prototxt: Path,
    weights: Path | None,
    xs: dict[str, np.ndarray],
    tmp: Path,
    tol: float,
    folder: Path | None = None,
    ref_weights: Path | None = None,
    every_layer: bool = True,
) -> dict[str, float]:
    """Convert (unless ``folder`` is given), then compare every layer (torch) and every net output
    (torch and ONNX, when the folder has one) with OpenCV; returns the worst relative errors."""
    if folder is None:
        folder = convert_caffe(prototxt, weights, tmp / "out", to="torch")
    model = load_folder(folder)
    graph_nodes = model.graph["nodes"]
    outputs = list(model.output_names)
    trace = torch_layers(model, xs)
    names = [n["name"] for n in graph_nodes if n["op"] != "split"] if every_layer else []
    refs = {}
    if names:
        refs = dict(zip(names, opencv_outputs(prototxt, ref_weights or weights, xs, names, tmp), strict=True))
    outs_ref = opencv_outputs(prototxt, ref_weights or weights, xs, outputs, tmp, graph=model.graph)
    worst = {"layers": 0.0, "torch": 0.0, "onnx": 0.0}
    for n in names:
        ref = refs[n]
        got = trace[n][0].reshape(ref.shape) if trace[n][0].size == ref.size else trace[n][0]
        e = rel_err(ref, got)
        assert e <= tol, f"layer {n}: rel error {e:.3g} > {tol:g}"
        worst["layers"] = max(worst["layers"], e)
    producer = {o: n["name"] for n in graph_nodes for o in n["outputs"]}
    final = {
        o: trace[producer[o]][
            list(next(n for n in graph_nodes if n["name"] == producer[o])["outputs"]).index(o)
        ]
        for o in outputs
    }
    refs_out = dict(zip(outputs, outs_ref, strict=True))
    for o in outputs:
        e = rel_err(refs_out[o], final[o])
        assert e <= tol, f"output {o}: torch rel error {e:.3g} > {tol:g}"
        assert_same_argmax(refs_out[o], final[o])
        worst["torch"] = max(worst["torch"], e)
    if (folder / "model.onnx").is_file():
        got = onnx_outputs(folder / "model.onnx", xs)
        for o in outputs:
            e = rel_err(refs_out[o], got[o])
            assert e <= tol, f"output {o}: ONNX rel error {e:.3g} > {tol:g}"
            assert_same_argmax(refs_out[o], got[o])
            worst["onnx"] = max(worst["onnx"], e)
    return worst
