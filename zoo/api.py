"""The Python API; the CLI is a thin layer over these functions (same names, same options)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.cards import ModelCard
from zoo.registry import Registry, SearchQuery

if TYPE_CHECKING:
    from zoo.index import Index, SearchResults

log = logging.getLogger("zoo.registry")


def registry(home: Path | None = None) -> Registry:
    """The bundled registry merged with the user's catalogue, all cards in memory."""
    return Registry.load(home=home)


def index(home: Path | None = None) -> Index:
    """The search index over the registry and the catalogue (rebuilt when either changed).

    Each catalogue entry that fails validation is skipped and logged once per call, one line.
    """
    from zoo.index import open_index

    idx = open_index(home)
    for line in idx.warnings:
        log.warning("zoo: warning: %s", line)
    return idx


def search(text: str | None = None, *, home: Path | None = None, **filters: Any) -> SearchResults:
    """Search all models. Filters: source, framework, origin, task, dataset, min_top1,
    max_params, max_gflops, input_size, license, tag; ``sort`` (relevance, top1, params, gflops,
    name) and ``limit``. The result is a sequence of cards (built when read) with ``ids`` and
    ``total`` (every match, before ``limit``)."""
    return index(home).search(SearchQuery(text=text, **filters))


def info(model_id: str, *, home: Path | None = None) -> ModelCard:
    """The whole card of one model (UnknownModelError with suggestions if there is none)."""
    return index(home).get(model_id)


def pull(
    model_id: str,
    file: str | None = None,
    dest: str | Path | None = None,
    *,
    home: Path | None = None,
    verify: bool = False,
    **kw: Any,
) -> list[Path]:
    """Download a model's files (or the one named) into the cache, verified; copy to ``dest``.

    A cached copy is re-hashed when its blob's size, mtime or inode changed since it was last
    verified, or always with ``verify=True``; damaged bytes are fetched again (offline:
    ChecksumError). Other keyword arguments: those of ``zoo.fetch.fetch_file`` (mirrors, offline,
    require_checksum, progress, retries, backoff, timeout).
    """
    from zoo import fetch

    card = info(model_id, home=home)
    return fetch.pull(card, file_name=file, dest=Path(dest) if dest else None, home=home, verify=verify, **kw)


def register(
    path: str | Path, model_id: str, *, home: Path | None = None, replace: bool = False, **card_fields: Any
) -> ModelCard:
    """Add a model to the user catalogue; returns its card.

    ``path`` is a local file (hashed now), a zoo model folder (its card.json and files; ``zoo
    export`` writes one) or an http(s) URL, which then needs ``sha256=`` (and may give ``size=``):
    nothing is downloaded until it is pulled.
    """
    from zoo.catalog import build_card, folder_card, is_url
    from zoo.catalog import register as _register

    if not is_url(path) and Path(path).is_dir():  # a zoo model folder (zoo export / zoo convert)
        keep = {k: card_fields.get(k) for k in ("name", "dataset", "license", "tags")}
        card = folder_card(Path(path), model_id, **keep)
    else:
        card = build_card(path if is_url(path) else Path(path), model_id, **card_fields)
    _register(card, home=home, replace=replace)
    return card


# ------------------------------------------------------------------ reuse (needs torch)
def _card_of(model_ref: Any, home: Path | None) -> ModelCard:
    """The card of a registry / catalogue id, a zoo model folder or a fine-tuning run folder."""
    p = Path(str(model_ref))
    if p.is_dir():
        if (p / "config.json").is_file() and (p / "checkpoints").is_dir():  # a zoo finetune run
            from zoo.finetune.run import read_run, run_card

            return run_card(read_run(p))
        from converters.folder import read_card

        return read_card(p)
    return info(str(model_ref), home=home)


def layers(model_ref: Any, *, home: Path | None = None, **pull_kw: Any) -> list[dict[str, Any]]:
    """The rows of ``zoo layers``: each layer's index, name (what ``cut`` takes), type, output
    shape at the card's input size (batch 1), parameters, trainable, and ``default_cut`` (True on
    the card's feature layer). ``model_ref``: an id or a zoo model folder; a ZooError if it has no
    such model."""
    from zoo.models import load

    model = load(model_ref, home=home, **pull_kw)
    cut = getattr(model, "default_cut", None)
    return [{**row.to_dict(), "default_cut": row.name == cut} for row in model.layers()]


def label_names(card: ModelCard, n: int) -> list[str]:
    """``n`` class names from the card: ``labels.names``, or the bundled list of ``labels.set``
    (zoo/data/labels/<set>.json); class indices as strings where neither fits ``n``."""
    import json

    lab = card.labels or {}
    names = lab.get("names")
    if not names and lab.get("set"):
        f = Path(__file__).resolve().parent / "data" / "labels" / f"{lab['set']}.json"
        if f.is_file():
            names = json.loads(f.read_text())
    if names and len(names) == n:
        return [str(x) for x in names]
    if names:
        log.warning("zoo: warning: %s: %d label names for %d outputs: using indices", card.id, len(names), n)
    return [str(i) for i in range(n)]


def _is_probability(model: Any, output_index: int) -> bool:
    """Whether output ``output_index`` of ``model`` is already a probability: the layer producing
    it is a softmax (or a layer with a softmax / sigmoid activation) in the converted graph. Library
    models (torchvision, timm) end in a Linear: logits."""
    graph = getattr(model, "graph", None)
    if not isinstance(graph, dict):
        return False
    blob = graph["outputs"][output_index]
    for node in reversed(graph["nodes"]):
        if blob in node.get("outputs", ()):
            if node["op"].split(".")[-1] in ("softmax", "sigmoid"):
                return True
            act = (node.get("attrs") or {}).get("activation")
            if act in ("softmax", "sigmoid"):
                return True
            if node["op"].split(".")[-1] in ("identity", "dropout", "flatten", "reshape") and node["inputs"]:
                blob = node["inputs"][0]  # look through shape-only / no-op layers
                continue
            return False
    return False


def predict(
    model_ref: Any,
    images: Any,
    *,
    top_k: int = 5,
    home: Path | None = None,
    batch_size: int = 32,
    **pull_kw: Any,
) -> list[dict[str, Any]]:
    """The ``top_k`` classes of each image: ``[{"image", "top": [{"label", "index", "score"}]}]``
    (an unreadable image: ``{"image", "skipped": why}``). The card's preprocessing is applied
    (zoo.data); scores are probabilities: a softmax over the outputs unless the model's output
    layer is a softmax already (Caffe's ``prob``, a Keras Dense with softmax activation)."""
    import torch

    from zoo.data import load_images, transform_for
    from zoo.errors import ZooError
    from zoo.models import load

    paths = [images] if isinstance(images, (str, Path)) else list(images)
    if not paths:
        raise ZooError("no images given")
    if top_k < 1:
        raise ZooError(f"--top-k must be at least 1, got {top_k}")
    card = _card_of(model_ref, home)
    transform = transform_for(model_ref, card=card, home=home, draft=True, **pull_kw)
    x, used, skipped, _ = load_images(paths, transform)
    model = load(model_ref, home=home, **pull_kw).eval()
    results: dict[str, dict[str, Any]] = {str(p): {"image": str(p), "skipped": why} for p, why in skipped}
    if len(used):
        outs = []
        with torch.no_grad():
            for i in range(0, len(x), batch_size):
                y = model(x[i : i + batch_size])
                outs.append(list(y) if isinstance(y, (tuple, list)) else [y])
        ys = [torch.cat([o[k] for o in outs]) for k in range(len(outs[0]))]
        want = card.num_classes
        k_out = next((k for k, y in enumerate(ys) if want and y[0].numel() == want), 0)
        y = ys[k_out].reshape(len(used), -1).float()
        probs = y if _is_probability(model, k_out) else torch.softmax(y, dim=1)
        names = label_names(card, y.shape[1])
        k = min(top_k, y.shape[1])
        top = torch.topk(probs, k, dim=1)
        for p, vals, idx in zip(used, top.values.tolist(), top.indices.tolist(), strict=True):
            results[str(p)] = {
                "image": str(p),
                "top": [{"label": names[j], "index": j, "score": v} for v, j in zip(vals, idx, strict=True)],
            }
    return [results[str(Path(p))] if str(Path(p)) in results else results[str(p)] for p in paths]
