"""`zoo convert` / `zoo verify`: detect the source format and hand it to the right converter.

Sources: a Caffe prototxt (+ ``weights``), a Keras file (``.h5``/``.hdf5``/``.keras``, weights-only
files with ``arch``), a PyTorch state dict with ``arch="torchvision:NAME"``, or a registry id
(pulled first, verified, then converted with the card's architecture and preprocessing).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from zoo.cards import ModelCard, Preprocess
from zoo.errors import ConversionError
from zoo.fileio import atomic_write_json

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


def _parse_arch(arch: str | None) -> str | None:
    if arch is None:
        return None
    if arch.startswith("torchvision:"):
        return arch.split(":", 1)[1]
    if arch.startswith("torchvision.models."):
        return arch.rsplit(".", 1)[1]
    raise ConversionError(f"--arch {arch!r}: expected torchvision:NAME (e.g. torchvision:resnet50)")


def convert_torchvision(
    name: str, out_dir: Path, weights: Path | None, card: ModelCard | None, to: str
) -> Path:
    """torchvision NAME (+ local weights) -> ``out_dir/model.onnx`` verified with onnxruntime."""
    from converters.torch_onnx import torchvision_to_onnx

    if to not in ("onnx", "all"):
        raise ConversionError("torchvision models are already native PyTorch: use --to onnx")
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ConversionError(f"{out_dir}: output folder exists and is not empty")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        res = torchvision_to_onnx(name, tmp / "model.onnx", weights=weights)
        meta = {
            "id": card.id if card else f"torchvision/{name}",
            "converter": "zoo torch_onnx",
            "source": {
                "framework": "pytorch",
                "arch": f"torchvision:{name}",
                "weights": str(weights) if weights else None,
            },
            "artifacts": {"model.onnx": {"layout": "NCHW", "input_shape": res.get("input_shape")}},
            "preprocess": (card.preprocess.to_dict() if card else {"unknown": True}),
        }
        atomic_write_json(tmp / "card.json", meta)
        res["onnx"] = str(out_dir / "model.onnx")
        atomic_write_json(tmp / "verify.json", {"reference": "torch", **res})
        if out_dir.exists():
            out_dir.rmdir()
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


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
    **pull_kw: Any,
) -> Path:
    """Convert a file or a registry entry into the zoo model folder ``out_dir``.

    ``allow_unknown_fields``: Caffe prototxt fields unknown to Caffe are skipped (named on
    stderr) instead of refused."""
    out_dir = Path(out_dir)
    src = Path(source)
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
            )
        if fmt == "keras":
            from converters.keras import convert_keras

            return convert_keras(
                src, out_dir, to=to, arch=arch, trust_code=trust_code, preprocess=_as_preprocess(preprocess)
            )
        name = _parse_arch(arch)
        if name is None:
            raise ConversionError(f"{src.name}: a PyTorch state dict needs --arch torchvision:NAME")
        return convert_torchvision(name, out_dir, src, None, to)
    if "/" not in str(source):
        raise ConversionError(f"{source}: no such file (and not a registry id like keras/vgg16)")
    from zoo import api

    card = api.info(str(source), home=home)
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
            card_extra={"registry_id": card.id},
            allow_unknown_fields=allow_unknown_fields,
        )
    if card.framework == "keras":
        wts = _pick(files, card, *KERAS_SUFFIXES, role=("weights", "model"))
        if wts is None:
            raise ConversionError(f"{card.id}: the card lists no Keras weights file")
        from converters.keras import convert_keras

        # A full model file carries its own architecture; weights-only files take the card's builder.
        karch = arch or (None if _is_full_model(wts) else (card.architecture or None))
        return convert_keras(
            wts, out_dir, to=to, arch=karch, trust_code=trust_code, preprocess=_as_preprocess(pre)
        )
    if card.source == "torchvision" or card.framework == "pytorch":
        builder = card.architecture.get("builder", "")
        name = _parse_arch(arch) if arch else builder.rsplit(".", 1)[-1]
        wts = _pick(files, card, role="weights")
        return convert_torchvision(name, out_dir, wts, card, to)
    raise ConversionError(f"{card.id}: no converter for {card.framework} / {card.format} yet")


def _is_full_model(path: Path) -> bool:
    if path.suffix == ".keras":
        return True
    try:
        import h5py

        with h5py.File(path, "r") as h5:
            return "model_config" in h5.attrs
    except OSError:
        return False


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
