"""``convert_keras``: a Keras file -> the zoo model folder (PyTorch) and/or ONNX (tf2onnx)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from converters.folder import GRAPH_FORMAT, GRAPH_VERSION, check_output, parse_targets
from converters.keras.graph import KerasGraph, build_graph, has_lambda, inputs_only
from converters.keras.reader import KerasSource, app_spec, format_keras_app_spec, read_keras
from zoo.arch import parse as parse_architecture
from zoo.cards import Checksum, FileRef, ModelCard, Preprocess
from zoo.errors import ConversionError
from zoo.fileio import atomic_write_json, sha256_file

CONVERTER = "zoo.converters.keras"
CONVERTER_VERSION = "1"


def graph_document(g: KerasGraph, src: KerasSource) -> dict[str, Any]:
    """graph.json contents (shared zoo-graph format; ops in the ``keras.`` namespace)."""
    return {
        "format": GRAPH_FORMAT,
        "version": GRAPH_VERSION,
        "source": "keras",
        "source_framework": "keras",
        "keras_version": src.keras_version,
        "layout": "NCHW",
        "inputs": g.inputs,
        "outputs": g.outputs,
        "nodes": g.nodes,
    }


def _arch_ref(arch: Any, folder: Path) -> str:
    """How a subprocess finds the architecture again: a keras.applications spec string, a config
    JSON path, or (for a config dict) ``keras_config.json`` written into the output folder."""
    if arch is None:
        return ""
    spec = app_spec(arch if not isinstance(arch, Path) else str(arch))
    if spec is not None:
        return format_keras_app_spec(*spec)
    if isinstance(arch, dict):
        atomic_write_json(folder / "keras_config.json", arch)
        return "keras_config.json"
    return str(Path(arch).resolve())


def _card(
    src: KerasSource,
    g: KerasGraph,
    out_dir: Path,
    tmp: Path,
    targets: set[str],
    preprocess: Preprocess | dict[str, Any] | str | None,
    onnx_info: dict[str, Any] | None,
    arch: Any = None,
    card_extra: dict[str, Any] | None = None,
) -> ModelCard:
    files = []
    for name, role in (
        ("model.safetensors", "weights"),
        ("graph.json", "definition"),
        ("model.onnx", "model"),
    ):
        p = tmp / name
        if p.is_file():
            files.append(
                FileRef(
                    name=name,
                    urls=((out_dir / name).resolve().as_uri(),),
                    size=p.stat().st_size,
                    checksum=Checksum("sha256", sha256_file(p), "computed at conversion"),
                    role=role,
                )
            )
    shapes = {i["name"]: i for i in g.inputs}
    first = g.inputs[0] if g.inputs else {"shape": [], "shape_keras": []}
    artifacts: dict[str, Any] = {}
    if "torch" in targets:
        artifacts["model.safetensors"] = {
            "framework": "pytorch",
            "layout": "NCHW",
            "input_shape": first["shape"],
            "graph": "graph.json",
        }
    if "onnx" in targets:
        artifacts["model.onnx"] = {
            "framework": "onnx",
            "layout": "NHWC",
            "input_shape": first["shape_keras"],
            "input_names": (onnx_info or {}).get("inputs"),
            "converter": (onnx_info or {}).get("exporter", "tf2onnx"),
        }
    layout = "NCHW" if "torch" in targets else "NHWC"
    if isinstance(preprocess, str):
        from converters.keras.preprocess import keras_preprocess

        preprocess = keras_preprocess(preprocess, layout)
    elif isinstance(preprocess, dict):
        preprocess = Preprocess.from_dict(preprocess)
    spec = app_spec(arch)
    if preprocess is None and spec is not None:
        from converters.keras.preprocess import application_preprocess

        preprocess = application_preprocess(spec[0], layout)
    if preprocess is not None and preprocess.layout != layout:  # the card's layout is the artifact's
        size = preprocess.input_size
        if size is not None and len(size) == 3:
            size = (size[2], size[0], size[1]) if layout == "NCHW" else (size[1], size[2], size[0])
        preprocess = dataclasses.replace(preprocess, layout=layout, input_size=size)
    pre = preprocess or Preprocess(
        layout=layout,
        unknown=True,
        note="preprocessing not recorded in the Keras file; the PyTorch module takes NCHW, the ONNX NHWC",
    )
    n_params = int(sum(a.size for a in g.tensors.values())) or None  # as Keras counts (BN stats too)
    stem = "".join(c if c.isalnum() or c in "._-" else "-" for c in src.path.stem) or "model"
    extra = dict(card_extra or {})
    registry_id = extra.pop("registry_id", None)
    card = ModelCard(
        id=f"converted/{stem}",
        name=src.path.stem,
        source="keras",
        framework="pytorch" if "torch" in targets else "onnx",
        format="safetensors" if "torch" in targets else "onnx",
        origin="keras",
        provenance={
            "publisher": "local conversion",
            "converted_by": f"{CONVERTER} {CONVERTER_VERSION}",
            "generated_from": src.path.name,
            "source_sha256": sha256_file(src.path),
            "source_format": src.fmt,
            "keras_version": src.keras_version,
            "source_files": [
                {
                    "path": str(src.path.resolve()),
                    "role": "model" if src.fmt in ("h5-full", "keras3") else "weights",
                    "sha256": sha256_file(src.path),
                }
            ],
            "keras_arch": _arch_ref(arch, tmp) or None,
            **({"registry_id": registry_id} if registry_id else {}),
        },
        files=tuple(files),
        architecture=parse_architecture(
            {
                "graph": "graph.json",
                "inputs": list(shapes.values()),
                "outputs": g.outputs,
                "artifacts": artifacts,
            }
        ),
        preprocess=pre,
        params=n_params,
        tags=("converted", "keras"),
    )
    return dataclasses.replace(card, **extra)  # head fields, labels, ... of the registry card


def convert_keras(
    path: str | Path,
    out_dir: str | Path,
    to: str | Iterable[str] = ("torch",),
    arch: str | Path | dict[str, Any] | None = None,
    trust_code: bool = False,
    preprocess: Preprocess | dict[str, Any] | str | None = None,
    opset: int = 17,
    card_extra: dict[str, Any] | None = None,
    force: bool = False,
) -> Path:
    """Convert a Keras file (legacy HDF5, ``.keras``, ``.weights.h5`` with ``arch``) into ``out_dir``.

    ``to``: ``torch`` (graph.json + model.safetensors + layermap.json), ``onnx`` (model.onnx via
    tf2onnx in a subprocess, NHWC input) or both / ``all``. Everything is written into a temporary
    folder beside ``out_dir`` and renamed into place, so a failure leaves nothing behind.
    ``preprocess``: a Preprocess (e.g. from the registry card), its dict, or a Keras mode name
    ('caffe', 'tf', 'torch'); for ``arch=keras.applications:NAME`` the application's own mode is
    the default. It is recorded in card.json, never baked into the graph. ``card_extra``: card
    fields from the registry card (labels, head fields ``default_cut`` / ``classifier`` /
    ``num_classes``, licence, ...; ``registry_id`` goes into the provenance). An existing non-empty
    ``out_dir`` is refused unless ``force``.
    """
    targets = parse_targets(to)
    path = Path(path)
    out_dir = Path(out_dir)
    check_output(out_dir, force)  # before any work
    src = read_keras(path, arch=arch)
    try:
        g = build_graph(src, trust_code=trust_code)  # validates the whole model, also for ONNX only
    except ConversionError:
        # a trusted Lambda model can still go to ONNX (tf-keras runs the Lambda, tf2onnx traces it)
        if not (trust_code and targets == {"onnx"} and has_lambda(src.config)):
            raise
        g = inputs_only(src)
    from converters.folder import write_folder

    onnx_info: dict[str, Any] = {}

    def extra(tmp: Path) -> None:
        if "onnx" in targets:
            arch_s = ""
            if src.fmt not in ("h5-full", "keras3"):
                if src.fmt != "h5-weights" or arch is None:
                    raise ConversionError(
                        f"{path.name}: ONNX export of a weights-only file needs a legacy HDF5 weights file "
                        "and arch=keras.applications:NAME or a tf-keras config JSON"
                    )
                arch_s = _arch_ref(arch, tmp)
                if arch_s == "keras_config.json":
                    arch_s = str(tmp / arch_s)
            from converters.keras.subproc import tf2onnx_convert

            onnx_info.update(tf2onnx_convert(path.resolve(), tmp / "model.onnx", opset=opset, arch=arch_s))
        if "torch" not in targets:
            for name in ("graph.json", "model.safetensors", "layermap.json"):
                (tmp / name).unlink()
        card = _card(src, g, out_dir, tmp, targets, preprocess, onnx_info, arch, card_extra)
        atomic_write_json(tmp / "card.json", card.to_dict())

    write_folder(
        out_dir, {}, graph_document(g, src), g.tensors, g.layermap.to_dict(), extra=extra, force=force
    )
    return out_dir


def load_keras_folder(folder: str | Path) -> Any:
    """The ``nn.Module`` of a converted folder (no Keras, TensorFlow or h5py needed)."""
    import converters.keras.ops  # noqa: F401  (registers the keras.* ops)
    from converters.folder import load_folder

    return load_folder(folder)
