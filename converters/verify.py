"""verify: the same inputs through the converted model (torch, and ONNX when present) and through
an independent reader of the source files; max |diff|, relative error, argmax agreement, and the
first layer whose output diverges when the result is over tolerance.

Each source plugs in its reference as a module ``converters.<source>.reference`` (or
``converters.<source>.verify``) with ``reference_outputs(folder, card, graph, inputs, reference=...)
-> (label, [arrays in graph["outputs"] order])`` and, optionally, ``first_diverging_layer(model,
folder, card, graph, inputs, atol)``: OpenCV dnn for Caffe (converters/caffe/reference.py), Keras
itself for Keras (converters/keras/verify.py). Result: a dict, also written to ``verify.json``.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from zoo.errors import ConversionError, VerificationError
from zoo.fileio import atomic_write_json

from .folder import VERIFY, read_folder


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
    mref = float(np.abs(ref).max()) if ref.size else 0.0
    return {
        "max_abs_diff": diff,
        "rel": rel,
        "argmax_agreement": agree,
        "max_abs_ref": mref,
        "shape": list(ref.shape),
    }


def reference_module(folder: Path, source: str | None) -> Any:
    """The module holding ``source``'s reference: ``converters.<source>.reference`` or ``.verify``."""
    for name in (f"converters.{source}.reference", f"converters.{source}.verify"):
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError as e:
            if not e.name or not name.startswith(e.name):  # a dependency of the module is missing
                raise
    raise ConversionError(f"{folder}: no reference reader for {source!r} models")


def _onnx_fixed_batch(path: Path) -> int | None:
    """The batch an ONNX file's first input is fixed at, None when that axis is symbolic."""
    import onnx

    inputs = onnx.load(str(path), load_external_data=False).graph.input
    dims = [i.type.tensor_type.shape.dim[0] for i in inputs if i.type.tensor_type.shape.dim]
    fixed = [int(d.dim_value) for d in dims if d.HasField("dim_value")]
    return fixed[0] if fixed else None


def _batches(
    graph: dict[str, Any], source: str | None, batch: int | None, onnx_batch: int | None
) -> list[int]:
    """Batch sizes to run random inputs at: ``batch`` (else the declared one; the declared one when
    model.onnx was exported with a fixed batch); for Caffe, whose prototxt declares a batch that a
    Reshape may pin, also 1 and the declared batch."""
    declared = int(graph["inputs"][0]["shape"][0])
    wanted = [declared if onnx_batch is not None or batch is None else batch]
    if source == "caffe":
        wanted += [1, declared]
    return list(dict.fromkeys(wanted))


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


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

    Random inputs run at ``batch`` (Caffe: also at batch 1 and the declared batch; see
    ``_batches``). ``inputs`` and ``outputs`` describe the first run, ``batches`` each run, and
    ``max_abs_diff`` / ``rel`` / ``argmax_agreement`` are the worst over all runs. ``passed`` is
    true when every output (torch and ONNX) at every batch has rel <= atol and identical argmax,
    and onnxruntime accepted every input.
    """
    import torch

    from .folder import load_folder

    folder = Path(out_dir)
    card, graph = read_folder(folder)
    if graph is None:  # a library model (torchvision / timm): the library with the source weights
        from . import library_reference as mod

        graph = mod.graph_stub(card)
        source = "library"
    else:
        source = graph.get("source")
        mod = reference_module(folder, source)
    model = load_folder(folder)
    onnx_path = folder / "model.onnx"
    random = isinstance(inputs, str) and inputs == "random"
    onnx_batch = _onnx_fixed_batch(onnx_path) if onnx_path.is_file() else None
    runs_xs = (
        [_make_inputs(graph, inputs, seed, b) for b in _batches(graph, source, batch, onnx_batch)]
        if random
        else [_make_inputs(graph, inputs, seed, None)]
    )
    sess = None
    errors: list[str] = []
    if onnx_path.is_file():
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3  # errors only: its warnings are not the verify result
        try:
            sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own types
            errors.append(f"onnxruntime cannot load model.onnx: {_first_line(e)}")
    details = (card.get("architecture") or {}).get("details") or {}
    nhwc = details.get("artifacts", {}).get("model.onnx", {}).get("layout") == "NHWC"
    names = list(graph["outputs"])
    declared = int(graph["inputs"][0]["shape"][0])
    label = ""
    outputs: dict[str, Any] = {}
    per_batch: dict[str, Any] = {}
    notes: dict[str, str] = {}
    worst = {"max_abs_diff": 0.0, "rel": 0.0, "argmax_agreement": 1.0}
    failing: list[np.ndarray] | None = None
    done: list[list[np.ndarray]] = []
    for xs in runs_xs:
        b = int(xs[0].shape[0])
        try:
            with torch.no_grad():
                t_out = model(*[torch.from_numpy(x) for x in xs])
        except RuntimeError as e:  # e.g. a Reshape with fixed dims: only the declared batch fits
            if random and b != declared:
                notes[str(b)] = f"the PyTorch model does not take batch {b}: {_first_line(e)}"
                continue
            raise ConversionError(
                f"{folder}: the PyTorch model fails on inputs {[list(x.shape) for x in xs]}: {_first_line(e)}"
            ) from None
        t_out = t_out if isinstance(t_out, tuple) else (t_out,)
        runs: dict[str, list[np.ndarray]] = {"torch": [t.numpy() for t in t_out]}
        if sess is not None and onnx_batch is not None and b != declared:
            notes[str(b)] = f"model.onnx has a fixed batch of {onnx_batch}: PyTorch only"
        elif sess is not None:
            feed = {
                i.name: (x.transpose(0, 2, 3, 1) if nhwc and x.ndim == 4 else x)
                for i, x in zip(sess.get_inputs(), xs, strict=True)
            }
            try:
                got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feed), strict=True))
            except Exception as e:  # noqa: BLE001 - onnxruntime raises its own types; one line each
                errors.append(f"onnxruntime refused inputs {[list(x.shape) for x in xs]}: {_first_line(e)}")
                got = None
            if got is not None:
                if nhwc:  # the card says the ONNX keeps the source's NHWC layout (Keras via tf2onnx)
                    got = {k: (v.transpose(0, 3, 1, 2) if v.ndim == 4 else v) for k, v in got.items()}
                runs["onnx"] = [got[n] for n in names] if all(n in got for n in names) else list(got.values())
        label, refs = mod.reference_outputs(folder, card, graph, xs, reference=reference)
        done.append(xs)
        bworst = {"max_abs_diff": 0.0, "rel": 0.0, "argmax_agreement": 1.0}
        bout: dict[str, Any] = {}
        for backend, outs in runs.items():
            for n, r, o in zip(names, refs, outs, strict=True):
                c = compare(r, o)
                bout.setdefault(n, {})[backend] = c
                bworst["max_abs_diff"] = max(bworst["max_abs_diff"], c["max_abs_diff"])
                bworst["rel"] = max(bworst["rel"], c["rel"])
                bworst["argmax_agreement"] = min(bworst["argmax_agreement"], c["argmax_agreement"])
        if not outputs:
            outputs = bout
        for k in worst:
            pick = min if k == "argmax_agreement" else max
            worst[k] = pick(worst[k], bworst[k])
        per_batch[str(b)] = {"inputs": [list(x.shape) for x in xs], "backends": list(runs), **bworst}
        if failing is None and (bworst["rel"] > atol or bworst["argmax_agreement"] != 1.0):
            failing = xs
    passed = bool(done) and not errors and worst["rel"] <= atol and worst["argmax_agreement"] == 1.0
    first = None
    if failing is not None and hasattr(mod, "first_diverging_layer"):
        first = mod.first_diverging_layer(model, folder, card, graph, failing, atol)
    result = {
        "reference": label,
        "atol": atol,
        "inputs": [list(x.shape) for x in done[0]] if done else [],
        "backends": ["torch"] + (["onnx"] if onnx_path.is_file() else []),
        "outputs": outputs,
        **worst,
        "batches": per_batch,
        "first_diverging_layer": first,
        "passed": passed,
    }
    if errors:
        result["errors"] = errors
    if notes:
        result["batch_notes"] = notes
    atomic_write_json(folder / VERIFY, result)
    if raise_on_fail and not passed:
        if errors:
            raise VerificationError(f"{folder}: {errors[0]}")
        where = f", first diverging layer {first!r}" if first else ""
        raise VerificationError(
            f"{folder}: rel error {worst['rel']:.3g} > {atol:g} "
            f"or argmax differs ({worst['argmax_agreement']:.3f}){where}"
        )
    return result
