"""The user's own catalogue (``$ZOO_HOME/catalog.json``): models registered from local files."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from zoo.cards import Checksum, FileRef, Metric, ModelCard, Preprocess
from zoo.errors import RegistryError
from zoo.fileio import atomic_write_json, sha256_file
from zoo.registry import Registry, catalog_path, validate_entries

FORMAT_BY_SUFFIX = {
    ".pth": ("pytorch", "pth"), ".pt": ("pytorch", "pth"),
    ".safetensors": ("pytorch", "safetensors"), ".onnx": ("onnx", "onnx"),
    ".h5": ("keras", "h5"), ".hdf5": ("keras", "h5"), ".keras": ("keras", "keras"),
    ".caffemodel": ("caffe", "caffemodel"),
}


def build_card(path: Path, model_id: str, *, name: str | None = None,
               framework: str | None = None, fmt: str | None = None,
               task: str = "image-classification", dataset: str | None = None,
               labels: list[str] | None = None, license: str | None = None,
               tags: tuple[str, ...] = (), architecture: dict[str, Any] | None = None,
               preprocess: dict[str, Any] | None = None, top1: float | None = None,
               params: int | None = None, default_cut: str | None = None,
               publisher: str | None = None, extra_files: tuple[Path, ...] = ()) -> ModelCard:
    """A catalogue card for a local model file (sha256 and size computed now)."""
    path = path.resolve()
    if not path.is_file():
        raise RegistryError(f"no such file: {path}")
    if "/" not in model_id:
        model_id = f"user/{model_id}"
    guess = FORMAT_BY_SUFFIX.get(path.suffix.lower())
    if guess is None and (framework is None or fmt is None):
        raise RegistryError(f"cannot tell the format of {path.name}; pass --framework and --format")
    framework = framework or guess[0]  # type: ignore[index]
    fmt = fmt or guess[1]  # type: ignore[index]

    def ref(p: Path, role: str) -> FileRef:
        p = p.resolve()
        if not p.is_file():
            raise RegistryError(f"no such file: {p}")
        return FileRef(name=p.name, urls=(p.as_uri(),), size=p.stat().st_size, role=role,
                       checksum=Checksum("sha256", sha256_file(p), "computed by zoo register"))

    files = [ref(path, "weights")] + [ref(p, "definition") for p in extra_files]
    metrics = (Metric("top1", top1, dataset or "unknown", "user"),) if top1 is not None else ()
    return ModelCard(
        id=model_id, name=name or path.stem, source="user", framework=framework, format=fmt,
        task=task, dataset=dataset, family=model_id.split("/", 1)[0],
        provenance={"publisher": publisher or os.environ.get("USER", "user"),
                    "note": f"registered from {path}"},
        labels=({"names": labels, "count": len(labels)} if labels else None),
        files=tuple(files), architecture=architecture or {},
        preprocess=Preprocess.from_dict(preprocess) if preprocess else Preprocess(unknown=True),
        metrics=metrics, params=params, license=license, tags=tuple(tags),
        default_cut=default_cut,
    )


def register(card: ModelCard, *, home: Path | None = None, replace: bool = False) -> Path:
    """Add ``card`` to the user catalogue (validated; atomic write). Returns the catalogue path."""
    from filelock import FileLock

    cat = catalog_path(home)
    cat.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cat) + ".lock"):
        reg = Registry.load(home=home)
        if card.id in reg and not replace:
            where = reg.origins.get(card.id, "registry")
            raise RegistryError(f"{card.id} already exists in the {where} (use --replace)")
        data = json.loads(cat.read_text()) if cat.is_file() else {"schema_version": 1, "models": []}
        models = [m for m in data["models"] if m.get("id") != card.id] + [card.to_dict()]
        data["models"] = models
        validate_entries(data, str(cat))
        atomic_write_json(cat, data)
    return cat


def unregister(model_id: str, *, home: Path | None = None) -> None:
    """Remove a model from the user catalogue."""
    from filelock import FileLock

    cat = catalog_path(home)
    with FileLock(str(cat) + ".lock"):
        data = json.loads(cat.read_text()) if cat.is_file() else {"schema_version": 1, "models": []}
        before = len(data["models"])
        data["models"] = [m for m in data["models"] if m.get("id") != model_id]
        if len(data["models"]) == before:
            raise RegistryError(f"{model_id} is not in the user catalogue {cat}")
        atomic_write_json(cat, data)
