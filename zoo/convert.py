"""`zoo convert` / `zoo verify`: detect the source format and hand it to the right converter.

Sources: a Caffe prototxt (+ ``weights``), a Keras file (``.h5``/``.hdf5``/``.keras``, weights-only
files with ``arch``), a TF-slim checkpoint with ``arch="slim:NAME"``, a PyTorch state dict with
``arch="torchvision:NAME"``, or a registry id (pulled first, verified, then converted with the
card's architecture and preprocessing).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

from zoo.cards import ModelCard, Preprocess
from zoo.errors import ConversionError

KERAS_SUFFIXES = (".h5", ".hdf5", ".keras")
TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")


def detect_format(path: Path) -> str:
    """``caffe`` | ``keras`` | ``torch`` from the file name and first bytes."""
    name = path.name.lower()
    if name.endswith((".prototxt", ".pbtxt")):
        return "caffe"
    if name.endswith(".caffemodel") or name.endswith(".caffemodel.h5"):
        raise ConversionError(f"{path.name}: give the deploy prototxt and pass this file with --weights")
    if name.endswith(KERAS_SUFFIXES):
        return "keras"
    if name.endswith(TORCH_SUFFIXES):
        return "torch"
    head = path.read_bytes()[:512] if path.is_file() else b""
    if head.startswith(b"\x89HDF"):
        return "keras"
    if b"layer" in head and (b"{" in head or b"name:" in head):
        return "caffe"
    raise ConversionError(
        f"{path}: cannot tell the format (expected a Caffe prototxt, a Keras .h5/.keras "
        "or a PyTorch state dict)"
    )


def is_tf_checkpoint(path: Path) -> bool:
    """A TF checkpoint: a V2 prefix (``PREFIX.index`` beside it), its ``.index`` / ``.data-*``
    file, a ``.ckpt`` file (V1), or a folder with a ``checkpoint`` state file."""
    name = path.name
    if Path(str(path) + ".index").is_file() or (name.endswith(".index") and path.is_file()):
        return True
    if re.search(r"\.data-\d{5}-of-\d{5}$", name) or (name.endswith(".ckpt") and path.is_file()):
        return True
    return path.is_dir() and (path / "checkpoint").is_file()


def convert_library(
    card: ModelCard, weights: Path, out_dir: Path, to: str | set[str], force: bool = False
) -> Path:
    """A torchvision / timm model (the card's architecture + a local weights file) -> the zoo
    model folder: card.json (the typed architecture, no graph.json), model.safetensors, an
    identity layermap.json, model.onnx with ``--to onnx|all``; then verified (verify.json)."""
    from converters.folder import parse_targets, write_folder
    from converters.layermap import LayerMap, LayerMapRow
    from converters.torch_onnx import export_onnx
    from zoo.cards import Checksum, FileRef
    from zoo.fileio import sha256_file
    from zoo.models import build_library, read_state

    targets = parse_targets(to)
    model = build_library(card, read_state(weights), where=str(weights))
    full = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    lmap = LayerMap(
        [LayerMapRow(k, 0, k, (), tuple(v.shape), tuple(v.shape)) for k, v in full.items()],
        source_format=card.architecture.kind if card.architecture else "pytorch",
    )
    src_sha = sha256_file(weights)
    files = card.files or (
        FileRef(
            name=Path(weights).name,
            urls=(Path(weights).resolve().as_uri(),),
            size=Path(weights).stat().st_size,
            role="weights",
            checksum=Checksum("sha256", src_sha),
        ),
    )
    folder_card = dataclasses.replace(
        card,
        format="safetensors",
        files=files,
        provenance={
            "publisher": "converted locally by zoo",
            **card.provenance,
            "converted_by": "zoo.convert.convert_library",
            "registry_id": card.id,
            "source_files": [{"path": str(Path(weights).resolve()), "sha256": src_sha, "role": "weights"}],
        },
    )
    size = tuple(card.preprocess.input_size or (3, 224, 224))

    def add_onnx(tmp: Path) -> None:
        if "onnx" in targets:
            export_onnx(model, tmp / "model.onnx", size)

    out = write_folder(out_dir, folder_card, None, full, lmap, extra=add_onnx, force=force)
    from converters.verify import verify_folder

    verify_folder(out, reference="source", raise_on_fail=True)  # a failure stays in verify.json
    return out


def _library_card(arch: str, path: Path) -> ModelCard:
    """A card for a local PyTorch weights file with ``--arch torchvision:NAME`` / ``timm:NAME``."""
    from zoo.arch import parse

    a = parse(arch)
    if a.kind not in ("torchvision", "timm"):
        raise ConversionError(f"{path.name}: a PyTorch state dict needs --arch torchvision:NAME or timm:NAME")
    return ModelCard(
        id=f"user/{re.sub(r'[^A-Za-z0-9_.+-]', '_', path.stem).lstrip('_.+-') or 'model'}",
        name=path.stem,
        source="user",
        framework="pytorch",
        format="pth",
        architecture=a,
        preprocess=Preprocess(unknown=True),
    )


def _pick(
    files: list[Path], card: ModelCard, *suffixes: str, role: str | tuple[str, ...] | None = None
) -> Path | None:
    by_name = {p.name: p for p in files}
    for f in card.files:
        p = by_name.get(f.member.rsplit("/", 1)[-1] if f.member else f.name)
        if p is None:
            continue
        if role and not f.role.startswith(role if isinstance(role, tuple) else (role,)):
            continue
        if not suffixes or p.name.lower().endswith(suffixes):
            return p
    return None


def convert(
    source: str | Path,
    out_dir: str | Path,
    *,
    to: str = "torch",
    weights: str | Path | None = None,
    arch: str | None = None,
    preprocess: dict[str, Any] | Preprocess | None = None,
    trust_code: bool = False,
    home: Path | None = None,
    allow_unknown_fields: bool = False,
    force: bool = False,
    inputs: list[str] | None = None,
    outputs: list[str] | None = None,
    **pull_kw: Any,
) -> Path:
    """Convert a file or a registry entry into the zoo model folder ``out_dir``.

    An existing non-empty ``out_dir`` is refused unless ``force`` (checked before anything is
    pulled). ``inputs`` / ``outputs``: tensor names of a frozen TensorFlow GraphDef (``.pb``).
    ``allow_unknown_fields``: Caffe prototxt fields unknown to Caffe are skipped (named on
    stderr) instead of refused."""
    from converters.folder import check_output

    out_dir = Path(out_dir)
    check_output(out_dir, force)
    src = Path(source)
    if is_tf_checkpoint(src):
        if arch is None:
            raise ConversionError(
                f"{src.name}: a TensorFlow checkpoint needs --arch slim:NAME (e.g. slim:vgg_16)"
            )
        from converters.tf.slim import convert_slim

        return convert_slim(src, out_dir, arch, to=to, preprocess=_as_preprocess(preprocess), force=force)
    if src.is_file() and src.suffix.lower() == ".pb":
        from converters.tf.graphdef import convert_graphdef

        return convert_graphdef(
            src,
            out_dir,
            inputs=inputs,
            outputs=outputs,
            to=to,
            preprocess=_as_preprocess(preprocess),
            force=force,
        )
    if src.exists():
        fmt = detect_format(src)
        if fmt == "caffe":
            from converters import convert_caffe

            return convert_caffe(
                src,
                Path(weights) if weights else None,
                out_dir,
                to=to,
                preprocess=preprocess,
                allow_unknown_fields=allow_unknown_fields,
                force=force,
            )
        if fmt == "keras":
            from converters.keras import convert_keras

            return convert_keras(
                src,
                out_dir,
                to=to,
                arch=arch,
                trust_code=trust_code,
                preprocess=_as_preprocess(preprocess),
                force=force,
            )
        if arch is None:
            raise ConversionError(
                f"{src.name}: a PyTorch state dict needs --arch torchvision:NAME or timm:NAME"
            )
        return convert_library(_library_card(arch, src), src, out_dir, to, force)
    if "/" not in str(source):
        raise ConversionError(f"{source}: no such file (and not a registry id like keras/vgg16)")
    from zoo import api

    card = api.info(str(source), home=home)
    if card.framework == "tensorflow":
        from converters.tf.cards import precheck

        precheck(card, arch)  # a net tf_slim does not ship is refused before the download
    files = api.pull(card.id, home=home, **pull_kw)
    pre = preprocess if preprocess is not None else card.preprocess
    if card.framework == "caffe":
        proto = _pick(files, card, ".prototxt", role="definition")
        wts = _pick(files, card, ".caffemodel", ".caffemodel.h5", role="weights")
        if proto is None:
            raise ConversionError(f"{card.id}: the card lists no deploy prototxt")
        from converters import convert_caffe

        return convert_caffe(
            proto,
            wts,
            out_dir,
            to=to,
            preprocess=pre,
            card_extra={"registry_id": card.id, **_head(card)},
            allow_unknown_fields=allow_unknown_fields,
            force=force,
        )
    if card.framework == "keras":
        wts = _pick(files, card, *KERAS_SUFFIXES, role=("weights", "model"))
        if wts is None:
            raise ConversionError(f"{card.id}: the card lists no Keras weights file")
        from converters.keras import convert_keras
        from converters.keras.reader import is_full_model

        # A full model file carries its own architecture; weights-only files take the card's builder.
        karch = arch or (None if is_full_model(wts) else (card.architecture or None))
        return convert_keras(
            wts,
            out_dir,
            to=to,
            arch=karch,
            trust_code=trust_code,
            preprocess=_as_preprocess(pre),
            card_extra={"registry_id": card.id, **_head(card)},
            force=force,
        )
    if card.architecture is not None and card.architecture.kind in ("torchvision", "timm"):
        wts = _pick(files, card, role="weights")
        if wts is None:
            raise ConversionError(f"{card.id}: the card lists no weights file")
        if arch:
            from zoo.arch import parse

            card = dataclasses.replace(card, architecture=parse(arch))
        return convert_library(card, wts, out_dir, to, force)
    if card.framework == "tensorflow":
        from converters.tf.cards import convert_card

        return convert_card(
            card,
            files,
            out_dir,
            to=to,
            arch=arch,
            inputs=inputs,
            outputs=outputs,
            preprocess=_as_preprocess(pre),
            card_extra={"registry_id": card.id, **_head(card)},
            force=force,
        )
    raise ConversionError(f"{card.id}: no converter for {card.framework} / {card.format} yet")


def _head(card: ModelCard) -> dict[str, Any]:
    """The registry card's fields a converted folder's card keeps (labels, head, licence)."""
    keys = ("labels", "default_cut", "classifier", "num_classes", "license", "dataset", "task")
    return {k: getattr(card, k) for k in keys if getattr(card, k) is not None}


def _as_preprocess(p: dict[str, Any] | Preprocess | None) -> Preprocess | None:
    if p is None or isinstance(p, Preprocess):
        return p
    return Preprocess.from_dict(p)


def verify(
    out_dir: str | Path,
    *,
    reference: str = "source",
    atol: float = 1e-4,
    inputs: str | list[str] = "random",
    batch: int = 2,
    seed: int = 0,
) -> dict[str, Any]:
    """Run the same inputs through the converted folder and a reference; writes verify.json."""
    from converters.verify import verify_folder

    return verify_folder(out_dir, reference=reference, atol=atol, inputs=inputs, batch=batch, seed=seed)
