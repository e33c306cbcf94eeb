"""Caffe -> zoo model folder: prototxt (current or V1) + caffemodel / .caffemodel.h5.

``convert_caffe`` reads the net and weights, builds graph.json (faithful to the Caffe net), the
weights in PyTorch layout keyed by module name, the layer map and the card, optionally exports
ONNX, and writes everything atomically. Light at import: protobuf, torch and h5py load on use.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from zoo.fileio import sha256_file

CONVERTER = "zoo.converters.caffe"


def _preprocess(preprocess: Any, net: Any) -> Any:
    from zoo.cards import Preprocess

    if isinstance(preprocess, Preprocess):
        return preprocess
    if isinstance(preprocess, dict):
        return Preprocess.from_dict(preprocess)
    tp = net.transform
    if tp is not None and (tp.HasField("scale") or len(tp.mean_value) or tp.HasField("mean_file")):
        shape = net.inputs[0][1]
        mean = tuple(float(v) for v in tp.mean_value) or None
        note = "from the prototxt's transform_param (Caffe subtracts the mean, then scales)"
        if tp.HasField("mean_file"):
            note += f"; mean image file {tp.mean_file!r} not included"
        return Preprocess(
            layout="NCHW",
            channel_order="BGR" if shape[1] == 3 else "GRAY",
            scale=1.0,
            mean=mean,
            std=(1.0 / float(tp.scale),) if tp.scale != 1 else None,
            input_size=tuple(shape[1:]),
            note=note,
        )
    return Preprocess(
        unknown=True,
        note="not published with the Caffe files; give it with --preprocess or convert a registry entry",
    )


def _batch_is_free(path: Path) -> bool:
    """Whether every input of the ONNX file at ``path`` has a symbolic batch axis."""
    import onnx

    inputs = onnx.load(str(path), load_external_data=False).graph.input
    return all(not i.type.tensor_type.shape.dim[0].HasField("dim_value") for i in inputs)


def export_onnx(model: Any, graph: dict[str, Any], path: Path, opset: int = 18) -> Path:
    """torch.onnx (dynamo) export to one file, checker-clean, with the Caffe layer names as metadata.

    The batch axis is dynamic where the graph allows it. Where it does not (a Reshape with fixed
    dims pins it), ``torch.onnx.export`` does not always raise: when ``torch.export`` refuses the
    dynamic batch it falls back to ``draft_export``, which silently fixes the batch at the sample's
    size. The exported inputs are checked, and such a net is exported with the declared batch.
    """
    import json

    import onnx
    import torch

    from zoo.errors import ConversionError

    gen = torch.Generator().manual_seed(0)
    args = tuple(torch.randn(*i["shape"], generator=gen) for i in graph["inputs"])
    kw = dict(
        dynamo=True,
        external_data=False,
        opset_version=opset,
        verbose=False,
        input_names=[i["name"] for i in graph["inputs"]],
        output_names=list(graph["outputs"]),
    )
    batch = torch.export.Dim("batch", min=1, max=4096)
    try:
        dynamic = False
        try:  # a free batch dimension where the graph allows it (fixed Reshape dims do not)
            dargs = tuple(torch.cat([a, a]) if a.shape[0] == 1 else a for a in args)  # size 1 would pin it
            prog = torch.onnx.export(model, dargs, dynamic_shapes=(tuple({0: batch} for _ in args),), **kw)
            prog.save(str(path))
            dynamic = _batch_is_free(path)  # False: the exporter pinned the batch at the sample's size
        except Exception:  # noqa: BLE001
            pass
        if not dynamic:  # the declared batch, fixed
            prog = torch.onnx.export(model, args, **kw)
            prog.save(str(path))
    except Exception as e:  # noqa: BLE001 - the exporter raises many types; report one line
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConversionError(f"ONNX export failed: {msg}") from None
    m = onnx.load(str(path))
    names = {n["module"]: n["name"] for n in graph["nodes"]}
    entry = m.metadata_props.add()
    entry.key, entry.value = "zoo.layer_names", json.dumps(names)
    entry = m.metadata_props.add()
    entry.key, entry.value = "zoo.source", graph.get("source", "")
    onnx.checker.check_model(m, full_check=True)
    onnx.save(m, str(path))
    return path


def convert_caffe(
    prototxt: str | Path,
    weights: str | Path | None,
    out_dir: str | Path,
    to: str | Iterable[str] = ("torch",),
    preprocess: Any = None,
    card_extra: dict[str, Any] | None = None,
    input_shapes: dict[str, list[int]] | None = None,
    allow_unknown_fields: bool = False,
    force: bool = False,
) -> Path:
    """Convert a Caffe net into the zoo model folder ``out_dir``; returns its path.

    ``weights`` is a binary .caffemodel or an HDF5 .caffemodel.h5 (None: the net has no learned
    parameters). ``to``: "torch" (always written: graph.json + model.safetensors + layermap.json),
    "onnx" or "all" adds model.onnx. ``preprocess``: a Preprocess or its dict (else the prototxt's
    transform_param, else "unknown"). ``input_shapes`` overrides declared input shapes (e.g. a
    fully convolutional net exported to ONNX at another image size). A prototxt field unknown to
    Caffe's schema (a misspelling, or a Caffe fork's extra) is refused as Caffe refuses it;
    ``allow_unknown_fields`` skips such fields, naming each on stderr and in the card's provenance
    (``skipped_prototxt_fields``). Errors are ConversionError naming file and layer.
    """
    from zoo import __version__
    from zoo.arch import Architecture
    from zoo.cards import Checksum, FileRef, ModelCard
    from zoo.errors import ConversionError

    from ..folder import check_output, parse_targets, write_folder
    from .graph import build_graph
    from .reader import read_prototxt, read_weights

    targets = parse_targets(to)
    check_output(out_dir, force)  # before any work
    prototxt = Path(prototxt)
    net = read_prototxt(prototxt, allow_unknown_fields=allow_unknown_fields)
    if net.unknown_fields:
        import sys

        for entry in net.unknown_fields:
            print(f"zoo: {prototxt}: skipped a field unknown to Caffe at {entry}", file=sys.stderr)
    if input_shapes:
        unknown = set(input_shapes) - {n for n, _ in net.inputs}
        if unknown:
            raise ConversionError(f"{prototxt}: no input named {sorted(unknown)} (inputs: {net.inputs})")
        net.inputs = [(n, list(input_shapes.get(n, s))) for n, s in net.inputs]
    wpath = Path(weights) if weights is not None else None
    blobs = read_weights(wpath) if wpath is not None else {}
    graph, state, lmap = build_graph(net, blobs, wpath)
    files = [
        FileRef(
            name=prototxt.name,
            urls=(prototxt.resolve().as_uri(),),
            size=prototxt.stat().st_size,
            role="definition",
            checksum=Checksum("sha256", sha256_file(prototxt)),
        )
    ]
    src = [{"role": "definition", "path": str(prototxt.resolve()), "sha256": files[0].checksum.value}]
    if wpath is not None:
        fmt = "caffemodel.h5" if wpath.name.endswith(".h5") else "caffemodel"
        files.append(
            FileRef(
                name=wpath.name,
                urls=(wpath.resolve().as_uri(),),
                size=wpath.stat().st_size,
                role="weights",
                checksum=Checksum("sha256", sha256_file(wpath)),
            )
        )
        src.append(
            {
                "role": "weights",
                "path": str(wpath.resolve()),
                "sha256": files[1].checksum.value,
                "format": fmt,
            }
        )
    name = net.name or prototxt.stem
    extra = dict(card_extra or {})
    prov = {
        "publisher": "converted locally by zoo",
        "converted_by": CONVERTER,
        "converter": CONVERTER,
        "converter_version": __version__,
        "source_files": src,
        "caffe_format": "v1" if net.v1 else "v2",
        "ignored_layers": net.ignored,
        "skipped_prototxt_fields": net.unknown_fields,
    }
    if "registry_id" in extra:
        prov["registry_id"] = extra.pop("registry_id")
    card = ModelCard(
        id=extra.pop("id", f"converted/{re.sub(r'[^A-Za-z0-9_.+-]', '_', name).lstrip('_.-+') or 'net'}"),
        name=extra.pop("name", name),
        source="caffe",
        framework="pytorch",
        format="safetensors",
        origin="caffe",
        files=tuple(files),
        provenance=prov,
        architecture=Architecture(
            "graph",
            "graph.json",
            details={"inputs": graph["inputs"], "outputs": graph["outputs"], "layout": "NCHW"},
        ),
        preprocess=_preprocess(preprocess, net),
        params=int(sum(int(a.size) for a in state.values())),
        tags=("converted", "caffe"),
    )
    card = dataclasses.replace(card, **extra)  # head fields, labels, ... of the registry card

    def add_onnx(tmp: Path) -> None:
        if "onnx" not in targets:
            return
        from ..graph_torch import build_module

        export_onnx(build_module(graph, state), graph, tmp / "model.onnx")

    try:
        return write_folder(out_dir, card, graph, state, lmap, extra=add_onnx, force=force)
    except OSError as e:
        raise ConversionError(f"{out_dir}: cannot write the model folder ({e})") from None


__all__ = ["CONVERTER", "convert_caffe", "export_onnx"]
