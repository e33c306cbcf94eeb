"""The bundled registry.json merged with the user's catalogue: loading, validation, search.

Only the standard library and jsonschema (lazily) are imported here, so ``zoo search`` and
``zoo info`` stay fast and never touch torch, TensorFlow or onnxruntime.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from zoo.cards import ModelCard
from zoo.errors import RegistryError, UnknownModelError

PACKAGE_DIR = Path(__file__).resolve().parent
SCHEMA_PATH = PACKAGE_DIR / "data" / "registry.schema.json"
SORT_KEYS = ("relevance", "top1", "params", "gflops", "name")


def bundled_registry_path() -> Path:
    """``$ZOO_REGISTRY`` if set, else the checkout's ``registry.json`` (beside ``zoo/``)."""
    env = os.environ.get("ZOO_REGISTRY")
    if env:
        return Path(env)
    for cand in (PACKAGE_DIR.parent / "registry.json", PACKAGE_DIR / "data" / "registry.json"):
        if cand.is_file():
            return cand
    return PACKAGE_DIR.parent / "registry.json"


def catalog_path(home: Path | None = None) -> Path:
    from zoo.paths import zoo_home

    return (home or zoo_home()) / "catalog.json"


@lru_cache(maxsize=1)
def _schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text())


def _format_path(path: Iterable[Any]) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(entry)"


def validate_entries(data: Any, origin: str) -> None:
    """Validate a registry/catalogue document against the schema.

    Raises RegistryError naming the file, the entry id and the field path of the first problem
    (all problems are listed, one per line, in ``RegistryError.problems``).
    """
    import jsonschema

    validator = jsonschema.Draft202012Validator(_schema())
    problems: list[str] = []
    if not isinstance(data, dict) or not isinstance(data.get("models"), list):
        raise RegistryError(f"{origin}: not a zoo registry (expected an object with 'models')")
    for err in validator.iter_errors({k: v for k, v in data.items() if k != "models"} | {"models": []}):
        problems.append(f"{origin}: {_format_path(err.absolute_path)}: {err.message}")
    card_validator = jsonschema.Draft202012Validator({"$ref": "#/$defs/card", "$defs": _schema()["$defs"]})
    seen: set[str] = set()
    for i, entry in enumerate(data["models"]):
        eid = entry.get("id", f"models[{i}]") if isinstance(entry, dict) else f"models[{i}]"
        for err in sorted(card_validator.iter_errors(entry), key=lambda e: list(e.absolute_path)):
            problems.append(f"{origin}: entry {eid!r}: {_format_path(err.absolute_path)}: "
                            f"{err.message}")
        if eid in seen:
            problems.append(f"{origin}: entry {eid!r}: id: duplicate id")
        seen.add(eid)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        exc = RegistryError(problems[0] + more)
        exc.problems = problems  # type: ignore[attr-defined]
        raise exc


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RegistryError(f"{what} not found: {path}") from None
    except json.JSONDecodeError as e:
        raise RegistryError(f"{what} {path} is not valid JSON: line {e.lineno} column {e.colno}: "
                            f"{e.msg}") from None


def _parse_cards(entries: list[Any], origin: str) -> list[ModelCard]:
    cards = []
    for i, d in enumerate(entries):
        try:
            cards.append(ModelCard.from_dict(d))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            eid = d.get("id", f"models[{i}]") if isinstance(d, dict) else f"models[{i}]"
            raise RegistryError(f"{origin}: entry {eid!r} is malformed ({type(e).__name__}: {e}); "
                                f"run `zoo registry validate` for the field path") from None
    return cards


@dataclass
class SearchQuery:
    """Filters and ordering for :func:`Registry.search` (None: no filter)."""

    text: str | None = None
    source: str | None = None  # torchvision | keras | caffe | timm | testdata | user
    framework: str | None = None
    origin: str | None = None
    task: str | None = None
    dataset: str | None = None
    min_top1: float | None = None
    max_params: float | None = None
    max_gflops: float | None = None
    input_size: int | None = None
    license: str | None = None
    tag: str | None = None
    sort: str = "relevance"
    limit: int | None = None


def _norm(s: str) -> str:
    return re.sub(r"[^a-z0-9]", "", s.lower())


def _model_part(card_id: str) -> str:
    tail = card_id.split("/", 1)[-1]
    return tail.split(".", 1)[0]


def _score_token(tok: str, card: ModelCard) -> float:
    """How well one query token matches a card (0: not at all)."""
    nt = _norm(tok)
    if not nt:
        return 0.0
    model = _norm(_model_part(card.id))
    name = _norm(card.name)
    fam = _norm(card.family or "")
    tags = {_norm(t) for t in card.tags}
    if card.id.lower() == tok.lower():
        return 200.0
    if nt == model:
        return 100.0
    if nt == name:
        return 90.0
    if nt == fam or nt in tags:
        return 50.0
    if model.startswith(nt) or name.startswith(nt):
        return 60.0 - min(20.0, len(model) - len(nt))
    if nt in _norm(card.id) or nt in name:
        return 30.0
    if any(t.startswith(nt) for t in tags) or nt == _norm(card.source):
        return 20.0
    return 0.0


def _input_hw(card: ModelCard) -> int | None:
    p = card.preprocess
    if p.crop:
        return p.crop
    if p.input_size:
        dims = [d for d in p.input_size if d and d > 4] or list(p.input_size)
        return dims[0] if dims else None
    return None


class Registry:
    """All known models: the bundled index plus the user's catalogue (user entries win)."""

    def __init__(self, cards: Sequence[ModelCard], origins: dict[str, str] | None = None):
        self._cards = list(cards)
        self._by_id = {c.id: c for c in self._cards}
        self.origins = origins or {}

    @classmethod
    def load(cls, path: Path | None = None, home: Path | None = None,
             validate: bool = False) -> Registry:
        """Read the bundled registry and ``$ZOO_HOME/catalog.json`` (validated, it's user data)."""
        path = path or bundled_registry_path()
        data = _read_json(path, "registry")
        if validate:
            validate_entries(data, str(path))
        elif not isinstance(data, dict) or not isinstance(data.get("models"), list):
            raise RegistryError(f"{path}: not a zoo registry (expected an object with 'models')")
        cards = _parse_cards(data["models"], str(path))
        origins = {c.id: "bundled" for c in cards}
        cat = catalog_path(home)
        if cat.is_file():
            cdata = _read_json(cat, "catalogue")
            validate_entries(cdata, str(cat))
            user = _parse_cards(cdata["models"], str(cat))
            known = {c.id: i for i, c in enumerate(cards)}
            for c in user:
                if c.id in known:
                    cards[known[c.id]] = c
                else:
                    cards.append(c)
                origins[c.id] = "catalogue"
        return cls(cards, origins)

    def __len__(self) -> int:
        return len(self._cards)

    def __iter__(self):
        return iter(self._cards)

    def __contains__(self, model_id: object) -> bool:
        return model_id in self._by_id

    @property
    def ids(self) -> list[str]:
        return [c.id for c in self._cards]

    def get(self, model_id: str) -> ModelCard:
        """The card with this id; UnknownModelError with near matches otherwise."""
        card = self._by_id.get(model_id)
        if card is not None:
            return card
        raise UnknownModelError(f"unknown model {model_id!r}" + self._suggest(model_id))

    def _suggest(self, model_id: str) -> str:
        ids = self.ids
        close = difflib.get_close_matches(model_id, ids, n=5, cutoff=0.6)
        if len(close) < 3:
            ranked = [c.id for c in self.search(SearchQuery(text=model_id.replace("/", " "),
                                                            limit=5))]
            close += [i for i in ranked if i not in close]
        close = close[:5]
        return f"; did you mean: {', '.join(close)}?" if close else "; try `zoo search`"

    def search(self, q: SearchQuery | None = None, **kw: Any) -> list[ModelCard]:
        """Filter, rank and sort cards. Keyword arguments are :class:`SearchQuery` fields."""
        q = q or SearchQuery(**kw)
        if q.sort not in SORT_KEYS:
            raise RegistryError(f"unknown sort key {q.sort!r} (choose from {', '.join(SORT_KEYS)})")
        tokens = [t for t in re.split(r"\s+", (q.text or "").strip()) if t]
        scored: list[tuple[float, int, ModelCard]] = []
        for i, c in enumerate(self._cards):
            if not _passes(c, q):
                continue
            score = 0.0
            if tokens:
                parts = [_score_token(t, c) for t in tokens]
                if min(parts) <= 0:
                    continue
                score = sum(parts)
            scored.append((score, i, c))
        if q.sort == "relevance":
            scored.sort(key=lambda t: (-t[0], t[2].id))
        elif q.sort == "name":
            scored.sort(key=lambda t: t[2].id)
        else:
            def key(t: tuple[float, int, ModelCard]) -> tuple[bool, float, str]:
                c = t[2]
                v = {"top1": c.top1, "params": c.params, "gflops": c.gflops}[q.sort]
                if v is None:
                    return (True, 0.0, c.id)
                return (False, -v if q.sort == "top1" else v, c.id)
            scored.sort(key=key)
        out = [c for _, _, c in scored]
        return out[: q.limit] if q.limit else out


def _eq(a: str | None, b: str) -> bool:
    return a is not None and a.lower() == b.lower()


def _passes(c: ModelCard, q: SearchQuery) -> bool:
    if q.source and not _eq(c.source, q.source):
        return False
    if q.framework and not _eq(c.framework, q.framework):
        return False
    if q.origin and not _eq(c.origin, q.origin):
        return False
    if q.task and not _eq(c.task, q.task):
        return False
    if q.dataset and (c.dataset is None or _norm(q.dataset) not in _norm(c.dataset)):
        return False
    if q.min_top1 is not None and (c.top1 is None or c.top1 < q.min_top1):
        return False
    if q.max_params is not None and (c.params is None or c.params > q.max_params):
        return False
    if q.max_gflops is not None and (c.gflops is None or c.gflops > q.max_gflops):
        return False
    if q.input_size is not None and _input_hw(c) != q.input_size:
        return False
    if q.license and (c.license is None or q.license.lower() not in c.license.lower()):
        return False
    if q.tag and _norm(q.tag) not in {_norm(t) for t in c.tags}:
        return False
    return True
