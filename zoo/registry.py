"""The bundled registry.json merged with the user's catalogue: loading, validation, search.

Only the standard library and jsonschema (lazily) are imported here, so ``zoo search`` and
``zoo info`` stay fast and never touch torch, TensorFlow or onnxruntime.
"""

from __future__ import annotations

import difflib
import functools
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


@functools.cache
def card_validator() -> Any:
    """A JSON-Schema validator for one card (the schema's ``$defs/card``)."""
    import jsonschema

    schema = _schema()
    return jsonschema.Draft202012Validator({"$ref": "#/$defs/card", "$defs": schema["$defs"]})


def _format_path(path: Iterable[Any]) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(entry)"


def _entry_id(entry: Any, i: int) -> str:
    eid = entry.get("id") if isinstance(entry, dict) else None
    return eid if isinstance(eid, str) else f"models[{i}]"  # a non-string id is a schema error


def entry_problems(data: Any, origin: str) -> tuple[list[str], dict[int, list[str]]]:
    """Schema problems of a registry/catalogue document: (document-level, per entry index).

    Each line names the file, the entry id and the field path. Raises RegistryError when ``data``
    is not a registry at all.
    """
    import jsonschema

    if not isinstance(data, dict) or not isinstance(data.get("models"), list):
        raise RegistryError(f"{origin}: not a zoo registry (expected an object with 'models')")
    validator = jsonschema.Draft202012Validator(_schema())
    top = [
        f"{origin}: {_format_path(err.absolute_path)}: {err.message}"
        for err in validator.iter_errors({k: v for k, v in data.items() if k != "models"} | {"models": []})
    ]
    card_validator = jsonschema.Draft202012Validator({"$ref": "#/$defs/card", "$defs": _schema()["$defs"]})
    per: dict[int, list[str]] = {}
    seen: set[str] = set()
    for i, entry in enumerate(data["models"]):
        eid = _entry_id(entry, i)
        lines = [
            f"{origin}: entry {eid!r}: {_format_path(err.absolute_path)}: {err.message}"
            for err in sorted(card_validator.iter_errors(entry), key=lambda e: list(e.absolute_path))
        ]
        if eid in seen:
            lines.append(f"{origin}: entry {eid!r}: id: duplicate id")
        seen.add(eid)
        if lines:
            per[i] = lines
    return top, per


def validate_entries(data: Any, origin: str) -> None:
    """Validate a registry/catalogue document against the schema.

    Raises RegistryError naming the file, the entry id and the field path of the first problem
    (all problems are listed, one per line, in ``RegistryError.problems``).
    """
    top, per = entry_problems(data, origin)
    problems = top + [line for i in sorted(per) for line in per[i]]
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        exc = RegistryError(problems[0] + more)
        exc.problems = problems  # type: ignore[attr-defined]
        raise exc


def usable_entries(data: Any, origin: str) -> tuple[list[tuple[ModelCard, dict[str, Any]]], list[str]]:
    """(card, entry) for every valid entry of a catalogue, and one warning line per skipped entry."""
    top, per = entry_problems(data, origin)
    warnings = list(top)
    cards: list[tuple[ModelCard, dict[str, Any]]] = []
    for i, entry in enumerate(data["models"]):
        if i in per:
            warnings.append(
                per[i][0] + (f" (and {len(per[i]) - 1} more)" if len(per[i]) > 1 else "") + "; entry skipped"
            )
            continue
        try:
            cards.append((ModelCard.from_dict(entry), entry))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            warnings.append(
                f"{origin}: entry {_entry_id(entry, i)!r}: malformed ({type(e).__name__}: {e}); entry skipped"
            )
    return cards, warnings


def read_sources(
    path: Path, cat: Path, *, validate: bool = False
) -> tuple[list[tuple[ModelCard, dict[str, Any], str]], list[str]]:
    """Every card of the bundled registry at ``path`` merged with the catalogue ``cat``.

    Returns ``(card, entry as written, "bundled" | "catalogue")`` in registry order (a catalogue
    entry replaces the bundled one of the same id, others follow), and one warning line per skipped
    catalogue entry (its id and field path) or for a catalogue that cannot be read at all. The
    bundled file is trusted unless ``validate``.
    """
    data = _read_json(path, "registry")
    if validate:
        validate_entries(data, str(path))
    elif not isinstance(data, dict) or not isinstance(data.get("models"), list):
        raise RegistryError(f"{path}: not a zoo registry (expected an object with 'models')")
    parsed = _parse_cards(data["models"], str(path))
    rows = [(c, d, "bundled") for c, d in zip(parsed, data["models"], strict=True)]
    warnings: list[str] = []
    if cat.is_file():
        try:
            user, warnings = usable_entries(_read_json(cat, "catalogue"), str(cat))
        except RegistryError as e:  # unreadable as a whole: the bundled registry still works
            user, warnings = [], [f"{e}; catalogue skipped"]
        known = {c.id: i for i, (c, _, _) in enumerate(rows)}
        for c, d in user:
            if c.id in known:
                rows[known[c.id]] = (c, d, "catalogue")
            else:
                known[c.id] = len(rows)
                rows.append((c, d, "catalogue"))
    return rows, warnings


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RegistryError(f"{what} not found: {path}") from None
    except json.JSONDecodeError as e:
        raise RegistryError(
            f"{what} {path} is not valid JSON: line {e.lineno} column {e.colno}: {e.msg}"
        ) from None


def _parse_cards(entries: list[Any], origin: str) -> list[ModelCard]:
    cards = []
    for i, d in enumerate(entries):
        try:
            cards.append(ModelCard.from_dict(d))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            eid = d.get("id", f"models[{i}]") if isinstance(d, dict) else f"models[{i}]"
            raise RegistryError(
                f"{origin}: entry {eid!r} is malformed ({type(e).__name__}: {e}); "
                f"run `zoo registry validate` for the field path"
            ) from None
    return cards


@dataclass
class SearchQuery:
    """Filters and ordering for a search (None: no filter)."""

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

    def tokens(self) -> list[tuple[str, str]]:
        """The query words as (lower-cased, normalized) pairs; words with no letter or digit drop."""
        out = []
        for t in re.split(r"\s+", (self.text or "").strip()):
            if _norm(t):
                out.append((t.lower(), _norm(t)))
        return out

    def check(self) -> None:
        if self.sort not in SORT_KEYS:
            raise RegistryError(f"unknown sort key {self.sort!r} (choose from {', '.join(SORT_KEYS)})")


# Fields checked against the values the registry actually has (an unknown value is an error).
CHECKED_FIELDS = ("source", "framework", "task")


def check_known_values(q: SearchQuery, known: dict[str, set[str]]) -> None:
    """RegistryError naming the known values when a --source/--framework/--task value is unknown."""
    for f in CHECKED_FIELDS:
        v = getattr(q, f)
        if v is not None and v.lower() not in {k.lower() for k in known.get(f, set())}:
            raise RegistryError(f"unknown {f} {v!r} (known: {', '.join(sorted(known.get(f, set())))})")


def _norm(s: str) -> str:
    return re.sub(r"[^a-z0-9]", "", s.lower())


def _model_part(card_id: str) -> str:
    tail = card_id.split("/", 1)[-1]
    return tail.split(".", 1)[0]


@dataclass(frozen=True)
class SearchFields:
    """The normalized text of one card that ranking looks at (also the search index's columns)."""

    id_l: str  # the id, lower-cased
    norm_id: str  # the id, letters and digits only
    model: str  # the id's model part (between '/' and the first '.'), normalized
    name_n: str
    fam: str
    tags: str  # "|tag1|tag2|", normalized
    words: str  # "|w1|w2|": words of the model part (split at _ and -) and of the name, normalized
    source: str
    source_n: str

    @classmethod
    def of(cls, card: ModelCard) -> SearchFields:
        model_raw = _model_part(card.id)
        words = {_norm(w) for w in re.split(r"[_\-]+", model_raw)}
        words |= {_norm(w) for w in re.split(r"[\s(),;:/]+", card.name)}
        words.discard("")
        tags = [_norm(t) for t in card.tags]
        return cls(
            id_l=card.id.lower(),
            norm_id=_norm(card.id),
            model=_norm(model_raw),
            name_n=_norm(card.name),
            fam=_norm(card.family or ""),
            tags="|" + "|".join(t for t in tags if t) + "|",
            words="|" + "|".join(sorted(words)) + "|",
            source=card.source,
            source_n=_norm(card.source),
        )

    @property
    def hay(self) -> str:
        """Every string a match can come from: a query word scores only if it is a substring."""
        return " ".join((self.norm_id, self.name_n, self.fam, self.tags, self.words, self.source_n))


# How one query word matches a card, best first. A word's score is the tier's base plus a
# closeness bonus (99 minus how much longer the card's model name is). Rows are ranked by tier
# (the weakest word's), then spread over sources (each source's best first), then by score.
EXACT, PREFIX, SUBSTRING, WEAK = 7, 5, 3, 1


def token_score(raw: str, nt: str, f: SearchFields) -> int:
    """How well one query word (lower-cased ``raw``, normalized ``nt``) matches (0: not at all).

    ``zoo.index`` computes the same numbers in SQL; tests hold the two equal.
    """
    if f.id_l == raw:
        base = EXACT * 1000 + 900
    elif f.model == nt:
        base = EXACT * 1000 + 800
    elif f.name_n == nt:
        base = EXACT * 1000 + 700
    elif f.fam == nt:
        base = EXACT * 1000 + 600
    elif f"|{nt}|" in f.tags:
        base = EXACT * 1000 + 500
    elif f"|{nt}|" in f.words:
        base = EXACT * 1000 + 400
    elif f.model.startswith(nt) or f.name_n.startswith(nt):
        base = PREFIX * 1000
    elif nt in f.norm_id or nt in f.name_n:
        base = SUBSTRING * 1000
    elif f"|{nt}" in f.tags or nt == f.source_n:
        base = WEAK * 1000
    else:
        return 0
    return base + 99 - min(99, abs(len(f.model) - len(nt)))


def input_hw(card: ModelCard) -> int | None:
    """The input height/width a card's model takes (its crop, else its input size)."""
    p = card.preprocess
    if p.crop:
        return p.crop
    if p.input_size:
        dims = [d for d in p.input_size if d and d > 4] or list(p.input_size)
        return dims[0] if dims else None
    return None


def passes(c: ModelCard, q: SearchQuery, f: SearchFields | None = None) -> bool:
    """Does ``c`` (whose search fields are ``f``) pass the query's filters (text aside)?"""
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
    if q.input_size is not None and input_hw(c) != q.input_size:
        return False
    if q.license and (c.license is None or q.license.lower() not in c.license.lower()):
        return False
    if q.tag and f"|{_norm(q.tag)}|" not in (f or SearchFields.of(c)).tags:
        return False
    return True


def _eq(a: str | None, b: str) -> bool:
    return a is not None and a.lower() == b.lower()


class Registry:
    """All known models in memory: the bundled index plus the user's catalogue (user entries win).

    Commands use ``zoo.index`` (the same data and ranking from an SQLite index built once per
    change); this class is the plain reference, and what writers such as ``zoo register`` use.
    """

    def __init__(
        self, cards: Sequence[ModelCard], origins: dict[str, str] | None = None, warnings: Sequence[str] = ()
    ):
        self._cards = list(cards)
        self._by_id = {c.id: c for c in self._cards}
        self.origins = origins or {}
        self.warnings = list(warnings)  # one line per skipped catalogue entry
        self._fields: dict[str, SearchFields] = {}

    def fields(self, card: ModelCard) -> SearchFields:
        f = self._fields.get(card.id)
        if f is None:
            f = self._fields[card.id] = SearchFields.of(card)
        return f

    @classmethod
    def load(cls, path: Path | None = None, home: Path | None = None, validate: bool = False) -> Registry:
        """Read the bundled registry and ``$ZOO_HOME/catalog.json``.

        The catalogue is user data: each entry is validated, and a bad one is skipped with one
        line in ``warnings`` (its id and field path); the rest stays usable (see ``read_sources``).
        """
        rows, warnings = read_sources(path or bundled_registry_path(), catalog_path(home), validate=validate)
        return cls([c for c, _, _ in rows], {c.id: o for c, _, o in rows}, warnings)

    def __len__(self) -> int:
        return len(self._cards)

    def __iter__(self):
        return iter(self._cards)

    def __contains__(self, model_id: object) -> bool:
        return model_id in self._by_id

    @property
    def ids(self) -> list[str]:
        return [c.id for c in self._cards]

    def known_values(self) -> dict[str, set[str]]:
        return {f: {getattr(c, f) for c in self._cards} for f in CHECKED_FIELDS}

    def get(self, model_id: str) -> ModelCard:
        """The card with this id; UnknownModelError with near matches otherwise."""
        card = self._by_id.get(model_id)
        if card is not None:
            return card
        raise UnknownModelError(
            f"unknown model {model_id!r}"
            + suggestion(
                model_id,
                self.ids,
                [c.id for c in self.search(SearchQuery(text=model_id.replace("/", " "), limit=5))],
            )
        )

    def search(self, q: SearchQuery | None = None, **kw: Any) -> list[ModelCard]:
        """Filter, rank and sort cards. Keyword arguments are :class:`SearchQuery` fields."""
        q = q or SearchQuery(**kw)
        q.check()
        tokens = q.tokens()
        rows: list[tuple[int, int, ModelCard]] = []  # (tier, score, card)
        for c in self._cards:
            f = self.fields(c)
            if not passes(c, q, f):
                continue
            tier = score = 0
            if tokens:
                parts = [token_score(raw, nt, f) for raw, nt in tokens]
                if min(parts) <= 0:
                    continue
                tier, score = min(parts) // 1000, sum(parts)
            rows.append((tier, score, c))
        out = [c for _, _, c in order_rows(rows, q.sort)]
        return out[: q.limit] if q.limit else out


def order_rows(rows: list[tuple[int, int, ModelCard]], sort: str) -> list[tuple[int, int, ModelCard]]:
    """Relevance: tier, then each source's best first (round-robin within a tier), then score,
    source and id. Other sorts: the value (unknown last), then id."""
    if sort == "relevance":
        by_group: dict[tuple[int, str], list[tuple[int, int, ModelCard]]] = {}
        for r in sorted(rows, key=lambda r: (-r[1], r[2].id)):
            by_group.setdefault((r[0], r[2].source), []).append(r)
        ranked = [(r, i) for grp in by_group.values() for i, r in enumerate(grp)]
        ranked.sort(key=lambda t: (-t[0][0], t[1], -t[0][1], t[0][2].source, t[0][2].id))
        return [r for r, _ in ranked]
    if sort == "name":
        return sorted(rows, key=lambda r: r[2].id)

    def key(r: tuple[int, int, ModelCard]) -> tuple[bool, float, str]:
        c = r[2]
        v = {"top1": c.top1, "params": c.params, "gflops": c.gflops}[sort]
        if v is None:
            return (True, 0.0, c.id)
        return (False, -v if sort == "top1" else v, c.id)

    return sorted(rows, key=key)


def suggestion(model_id: str, ids: Sequence[str], ranked: Sequence[str]) -> str:
    """ "; did you mean: a, b?" from close spellings and the search's own top hits."""
    close = difflib.get_close_matches(model_id, ids, n=5, cutoff=0.6)
    if len(close) < 3:
        close += [i for i in ranked if i not in close]
    close = close[:5]
    return f"; did you mean: {', '.join(close)}?" if close else "; try `zoo search`"
