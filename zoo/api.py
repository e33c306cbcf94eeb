"""The Python API; the CLI is a thin layer over these functions (same names, same options)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from zoo.cards import ModelCard
from zoo.registry import Registry, SearchQuery


def registry(home: Path | None = None) -> Registry:
    """The bundled registry merged with the user's catalogue."""
    return Registry.load(home=home)


def search(text: str | None = None, *, home: Path | None = None, **filters: Any) -> list[ModelCard]:
    """Search all models. Filters: source, framework, origin, task, dataset, min_top1,
    max_params, max_gflops, input_size, license, tag; ``sort`` (relevance, top1, params, gflops,
    name) and ``limit``."""
    return registry(home).search(SearchQuery(text=text, **filters))


def info(model_id: str, *, home: Path | None = None) -> ModelCard:
    """The whole card of one model (UnknownModelError with suggestions if there is none)."""
    return registry(home).get(model_id)


def pull(model_id: str, file: str | None = None, dest: str | Path | None = None, *,
         home: Path | None = None, **kw: Any) -> list[Path]:
    """Download a model's files (or the one named) into the cache, verified; copy to ``dest``."""
    from zoo import fetch

    card = info(model_id, home=home)
    return fetch.pull(card, file_name=file, dest=Path(dest) if dest else None, home=home, **kw)


def register(path: str | Path, model_id: str, *, home: Path | None = None,
             replace: bool = False, **card_fields: Any) -> ModelCard:
    """Add a local model file to the user catalogue; returns its card."""
    from zoo.catalog import build_card
    from zoo.catalog import register as _register

    card = build_card(Path(path), model_id, **card_fields)
    _register(card, home=home, replace=replace)
    return card
