"""The user's own catalogue (``$ZOO_HOME/catalog.json``): models registered from local files or URLs."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from zoo.arch import Architecture, parse_optional
from zoo.cards import Checksum, FileRef, Metric, ModelCard, Preprocess
from zoo.errors import RegistryError
from zoo.fileio import atomic_write_json, sha256_file
from zoo.registry import (
    Registry,
    _parse_cards,
    _read_json,
    bundled_registry_path,
    catalog_path,
    validate_entries,
)

FORMAT_BY_SUFFIX = {
    ".pth": ("pytorch", "pth"),
    ".pt": ("pytorch", "pth"),
    ".safetensors": ("pytorch", "safetensors"),
    ".onnx": ("onnx", "onnx"),
    ".h5": ("keras", "h5"),
    ".hdf5": ("keras", "h5"),
    ".keras": ("keras", "keras"),
    ".caffemodel": ("caffe", "caffemodel"),
}


SHA256_HEX = re.compile(r"^[0-9a-fA-F]{64}$")


def is_url(path: str | Path) -> bool:
    """Whether ``path`` is an http(s) URL rather than a local file."""
    return isinstance(path, str) and path.lower().startswith(("http://", "https://"))


def _url_basename(url: str) -> str:
    """The file name at the end of a URL's path (query and fragment ignored)."""
    parts = urlsplit(url)
    if not parts.netloc:
        raise RegistryError(f"not a usable URL (no host): {url}")
    base = unquote(parts.path).rsplit("/", 1)[-1]
    if not base or base in (".", ".."):
        raise RegistryError(f"the URL's path names no file: {url}")
    return base


def _check_sha256(sha256: str) -> str:
    if not SHA256_HEX.match(sha256):
        raise RegistryError(f"--sha256 must be 64 hex digits, got {sha256!r}")
    return sha256.lower()


def build_card(
    path: Path | str,
    model_id: str,
    *,
    name: str | None = None,
    framework: str | None = None,
    fmt: str | None = None,
    task: str = "image-classification",
    dataset: str | None = None,
    labels: list[str] | None = None,
    license: str | None = None,
    tags: tuple[str, ...] = (),
    architecture: Architecture | str | None = None,
    preprocess: dict[str, Any] | None = None,
    top1: float | None = None,
    params: int | None = None,
    default_cut: str | None = None,
    classifier: str | None = None,
    publisher: str | None = None,
    extra_files: tuple[Path, ...] = (),
    sha256: str | None = None,
    size: int | None = None,
) -> ModelCard:
    """A catalogue card for a local model file (sha256 and size computed now) or an http(s) URL.

    For a URL nothing is downloaded: ``sha256`` is required (the checksum a pull verifies) and
    ``size`` is optional. For a local file, ``sha256`` and ``size`` when given must match the file.
    """
    if size is not None and size < 0:
        raise RegistryError(f"--size must not be negative, got {size}")
    if is_url(path):
        url = str(path)
        if sha256 is None:
            raise RegistryError(f"--sha256 is required to register a URL ({url}): pulls verify against it")
        weights = FileRef(
            name=_url_basename(url),
            urls=(url,),
            size=size,
            role="weights",
            checksum=Checksum("sha256", _check_sha256(sha256), "given to zoo register"),
        )
        where = url
    else:
        local = Path(path).resolve()
        if not local.is_file():
            raise RegistryError(f"no such file: {local}")
        weights = _local_ref(local, "weights")
        if sha256 is not None and _check_sha256(sha256) != weights.checksum.value:
            raise RegistryError(f"--sha256 {sha256} does not match {local} (sha256 {weights.checksum.value})")
        if size is not None and size != weights.size:
            raise RegistryError(f"--size {size} does not match {local} ({weights.size} bytes)")
        where = str(local)
    if "/" not in model_id:
        model_id = f"user/{model_id}"
    suffix = Path(weights.name).suffix.lower()
    guess = FORMAT_BY_SUFFIX.get(suffix)
    if guess is None and (framework is None or fmt is None):
        raise RegistryError(f"cannot tell the format of {weights.name}; pass --framework and --format")
    framework = framework or guess[0]  # type: ignore[index]
    fmt = fmt or guess[1]  # type: ignore[index]

    files = [weights] + [_local_ref(Path(p), "definition") for p in extra_files]
    metrics = (Metric("top1", top1, dataset or "unknown", "user"),) if top1 is not None else ()
    card = ModelCard(
        id=model_id,
        name=name or Path(weights.name).stem,
        source="user",
        framework=framework,
        format=fmt,
        task=task,
        dataset=dataset,
        family=model_id.split("/", 1)[0],
        provenance={
            "publisher": publisher or os.environ.get("USER", "user"),
            "note": f"registered from {where}",
        },
        labels=({"names": labels, "count": len(labels)} if labels else None),
        files=tuple(files),
        architecture=parse_optional(architecture),
        preprocess=Preprocess.from_dict(preprocess) if preprocess else Preprocess(unknown=True),
        metrics=metrics,
        params=params,
        license=license,
        tags=tuple(tags),
        default_cut=default_cut,
        num_classes=len(labels) if labels else None,
        classifier=classifier,
    )
    return _with_known_head(card)


FOLDER_FILES = (("model.safetensors", "weights"), ("graph.json", "definition"), ("model.onnx", "model"))


def folder_card(folder: Path, model_id: str, **fields: Any) -> ModelCard:
    """A catalogue card for a zoo model folder (``zoo export``, ``zoo convert``): its card.json
    with this id, and its files (weights, graph.json, model.onnx; hashed now, file:// URLs) as the
    card's files. ``fields``: card fields to override (name, dataset, license, tags, ...)."""
    import dataclasses

    from converters.folder import read_card

    folder = Path(folder).resolve()
    card = read_card(folder)
    if "/" not in model_id:
        model_id = f"user/{model_id}"
    named = [*FOLDER_FILES, *((f.name, "mean") for f in card.files if f.role == "mean")]
    files = tuple(_local_ref(folder / n, role) for n, role in named if (folder / n).is_file())
    if not files or files[0].name != "model.safetensors":
        raise RegistryError(f"{folder}: not a zoo model folder (no model.safetensors)")
    prov = {**card.provenance, "note": f"registered from the folder {folder}"}
    given = {k: v for k, v in fields.items() if v not in (None, (), [])}
    return dataclasses.replace(
        card,
        id=model_id,
        source="user",
        family=model_id.split("/", 1)[0],
        files=files,
        provenance=prov,
        **given,
    )


def _with_known_head(card: ModelCard) -> ModelCard:
    """Head fields (feature layer, classifier module) a bundled card with the same torchvision /
    timm architecture has, where the caller gave none: they name modules of that architecture."""
    import dataclasses

    a = card.architecture
    if a is None or a.kind not in ("torchvision", "timm") or (card.default_cut and card.classifier):
        return card
    base = a.name if a.kind == "torchvision" else a.name.split(".", 1)[0]
    bundled = bundled_registry_path()
    for known in _parse_cards(_read_json(bundled, "registry")["models"], str(bundled)):
        k = known.architecture
        if k is None or k.kind != a.kind or known.classifier is None:
            continue
        if (k.name if k.kind == "torchvision" else str(k.details.get("base", k.name.split(".")[0]))) == base:
            return dataclasses.replace(
                card,
                default_cut=card.default_cut or known.default_cut,
                classifier=card.classifier or known.classifier,
            )
    return card


def _local_ref(p: Path, role: str) -> FileRef:
    """A FileRef for a local file: file:// URL, size and sha256 computed now."""
    p = p.resolve()
    if not p.is_file():
        raise RegistryError(f"no such file: {p}")
    return FileRef(
        name=p.name,
        urls=(p.as_uri(),),
        size=p.stat().st_size,
        role=role,
        checksum=Checksum("sha256", sha256_file(p), "computed by zoo register"),
    )


WHERE = {"bundled": "the bundled registry", "catalogue": "your catalogue"}


def register(card: ModelCard, *, home: Path | None = None, replace: bool = False) -> Path:
    """Add ``card`` to the user catalogue (validated; atomic write). Returns the catalogue path."""
    from filelock import FileLock

    cat = catalog_path(home)
    cat.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cat) + ".lock"):
        reg = Registry.load(home=home)
        if card.id in reg and not replace:
            origin = reg.origins.get(card.id, "bundled")
            where = WHERE.get(origin, f"the {origin}")
            raise RegistryError(f"{card.id} already exists in {where} (use --replace)")
        data = _read_json(cat, "catalogue") if cat.is_file() else {"schema_version": 1, "models": []}
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
        data = _read_json(cat, "catalogue") if cat.is_file() else {"schema_version": 1, "models": []}
        before = len(data["models"])
        data["models"] = [m for m in data["models"] if m.get("id") != model_id]
        if len(data["models"]) == before:
            raise RegistryError(f"{model_id} is not in the user catalogue {cat}")
        atomic_write_json(cat, data)
