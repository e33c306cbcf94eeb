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

    ``path`` is a local file (hashed now) or an http(s) URL, which then needs ``sha256=`` (and may
    give ``size=``): nothing is downloaded until it is pulled.
    """
    from zoo.catalog import build_card, is_url
    from zoo.catalog import register as _register

    card = build_card(path if is_url(path) else Path(path), model_id, **card_fields)
    _register(card, home=home, replace=replace)
    return card
