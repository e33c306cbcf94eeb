"""The search index: the registry and the catalogue parsed and validated once per change.

``$ZOO_HOME/index/search-<key>.sqlite`` (``<key>``: a hash of the two files' paths) holds one row
per card (the ranking's normalized fields, the filter columns and the card's JSON) and an FTS5
trigram index over the text a query word can match. It is rebuilt (atomically, under a file lock)
when either file's sha256 differs from the one recorded; a file whose size, mtime and inode are
unchanged is not re-hashed. Searches rank in SQL with the same numbers as
:func:`zoo.registry.token_score` and build cards only for the rows a caller reads. The broad words
(those of 1000 cards or more) have their ranking precomputed in a ``words`` table, so a search for
them with no filters reads one row per word instead of scoring and ordering every match.

Standard library only (sqlite3), so ``zoo search`` never imports torch, TensorFlow or onnxruntime.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import tempfile
from array import array
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, overload

from zoo.cards import ModelCard
from zoo.errors import RegistryError, UnknownModelError
from zoo.fileio import sha256_file
from zoo.registry import (
    CHECKED_FIELDS,
    EXACT,
    PREFIX,
    SUBSTRING,
    WEAK,
    SearchFields,
    SearchQuery,
    _norm,
    bundled_registry_path,
    catalog_path,
    check_known_values,
    input_hw,
    read_sources,
    suggestion,
)

INDEX_VERSION = 4  # bump when the table layout or the ranking's columns change

_COLUMNS = (
    "id",
    "id_l",
    "norm_id",
    "model",
    "name_n",
    "fam",
    "tags",
    "words",
    "source",
    "source_n",
    "framework_l",
    "origin_l",
    "task_l",
    "dataset_n",
    "license_l",
    "top1",
    "params",
    "gflops",
    "input_hw",
    "origin",
    "src",
)


def _stat_key(path: Path) -> str | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"


def _sha256(path: Path) -> str | None:
    try:
        return sha256_file(path)
    except FileNotFoundError:
        return None


def _row(card: ModelCard, raw: Any, origin: str, f: SearchFields) -> tuple[Any, ...]:
    """The ranking and filter columns, then the card's JSON (its entry as written), then the text."""
    return (
        card.id,
        f.id_l,
        f.norm_id,
        f.model,
        f.name_n,
        f.fam,
        f.tags,
        f.words,
        f.source,
        f.source_n,
        card.framework.lower(),
        card.origin.lower(),
        card.task.lower(),
        _norm(card.dataset) if card.dataset is not None else None,
        card.license.lower() if card.license is not None else None,
        card.top1,
        card.params,
        card.gflops,
        input_hw(card),
        origin,
        json.dumps(raw, separators=(",", ":"), ensure_ascii=False),
        f.hay,
    )


def _build(dest: Path, reg_path: Path, cat_path: Path, meta: dict[str, str]) -> None:
    """Parse, validate and write a fresh index to ``dest`` (a new file)."""
    rows, warnings = read_sources(reg_path, cat_path)
    cards = {c.id: (c, d, origin) for c, d, origin in rows}
    del rows
    con = sqlite3.connect(dest)
    try:
        con.executescript(f"""
            PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;
            CREATE TABLE meta(k TEXT PRIMARY KEY, v TEXT);
            CREATE TABLE cards(rid INTEGER PRIMARY KEY, {", ".join(_COLUMNS)});
            CREATE TABLE card_json(rid INTEGER PRIMARY KEY, card TEXT);
            CREATE UNIQUE INDEX cards_id ON cards(id);
            CREATE INDEX cards_id_l ON cards(id_l);
            CREATE VIRTUAL TABLE hay USING fts5(txt, content='', tokenize='trigram');
            CREATE TABLE words(word TEXT PRIMARY KEY, rids BLOB, scores BLOB, srcs BLOB);
        """)
        marks = ", ".join("?" * len(_COLUMNS))
        # rows in id order and sources as their rank, so ranking sorts integers (rid order = id order)
        src_rank = {v: i for i, v in enumerate(sorted({c.source for c, _, _ in cards.values()}))}
        seen: Counter[str] = Counter()
        for i, (c, raw, origin) in enumerate(sorted(cards.values(), key=lambda t: t[0].id), 1):
            f = SearchFields.of(c)
            seen.update(_entry_words(f))
            r = _row(c, raw, origin, f)
            con.execute(
                f"INSERT INTO cards(rid, {', '.join(_COLUMNS)}) VALUES (?, {marks})",
                (i, *r[:-2], src_rank[c.source]),
            )
            con.execute("INSERT INTO card_json VALUES (?, ?)", (i, r[-2]))
            con.execute("INSERT INTO hay(rowid, txt) VALUES (?, ?)", (i, r[-1]))
        _build_words(con, [w for w, n in seen.items() if n >= WORDS_MIN_ROWS])
        known = {f: sorted({getattr(c, f) for c, _, _ in cards.values()}) for f in CHECKED_FIELDS}
        meta = {
            **meta,
            "warnings": json.dumps(warnings),
            "known": json.dumps(known),
            "count": str(len(cards)),
        }
        con.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
        con.commit()
    finally:
        con.close()


# A word that is the model, name or family of at least this many cards, or one of their tags or
# words, gets a row in the ``words`` table: its whole ranking, precomputed (see _build_words).
# Rarer words, prefixes and substrings are ranked per query, which is fast for them.
WORDS_MIN_ROWS = 1000


def _entry_words(f: SearchFields) -> set[str]:
    """The whole words (two characters or more) a query could match this card by exactly: its
    model, name and family, its tags and its words."""
    out = {f.model, f.name_n, f.fam}
    out.update(f.tags[1:-1].split("|"))
    out.update(f.words[1:-1].split("|"))
    return {w for w in out if len(w) >= 2}


def _build_words(con: sqlite3.Connection, words: list[str]) -> None:
    """For each of ``words`` (normalized), its ranking as one query word with no filters: the
    rows in rank order, each one's score for the word and its source rank (arrays as blobs). The
    ranking is the per-query SQL's, so both paths agree by construction."""
    for w in sorted(words):
        sql, args = _search_sql(SearchQuery(text=w), [(w, w)], out="rid, score, src")
        rows = con.execute(sql, args).fetchall()
        if rows:  # rid as int32, score (at most 7999) and source rank as uint16
            rids, scores, srcs = zip(*rows, strict=True)
            blobs = (array("i", rids), array("H", scores), array("H", srcs))
            con.execute("INSERT INTO words VALUES (?, ?, ?, ?)", (w, *(b.tobytes() for b in blobs)))


class Index:
    """A read-only view of one built index (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        self.meta = dict(self.con.execute("SELECT k, v FROM meta"))
        self.warnings: list[str] = json.loads(self.meta.get("warnings", "[]"))
        self.known: dict[str, set[str]] = {k: set(v) for k, v in json.loads(self.meta["known"]).items()}

    def __len__(self) -> int:
        return int(self.meta["count"])

    def close(self) -> None:
        self.con.close()

    # -- lookups

    def card(self, rid: int) -> ModelCard:
        (text,) = self.con.execute("SELECT card FROM card_json WHERE rid = ?", (rid,)).fetchone()
        return ModelCard.from_dict(json.loads(text))

    def get(self, model_id: str) -> ModelCard:
        """The card with this id; UnknownModelError with near matches otherwise."""
        row = self.con.execute(
            "SELECT j.card FROM cards c JOIN card_json j ON j.rid = c.rid WHERE c.id = ?", (model_id,)
        ).fetchone()
        if row is not None:
            return ModelCard.from_dict(json.loads(row[0]))
        ids = [r[0] for r in self.con.execute("SELECT id FROM cards")]
        ranked = self.search(SearchQuery(text=model_id.replace("/", " "), limit=5))
        raise UnknownModelError(f"unknown model {model_id!r}" + suggestion(model_id, ids, ranked.ids))

    def origin(self, model_id: str) -> str | None:
        row = self.con.execute("SELECT origin FROM cards WHERE id = ?", (model_id,)).fetchone()
        return row[0] if row else None

    # -- search

    def search(self, q: SearchQuery) -> SearchResults:
        """The rows matching ``q`` in rank order (cards are built only when read)."""
        q.check()
        check_known_values(q, self.known)
        tokens = q.tokens()
        rids = self._from_words(q, tokens)
        if rids is None:
            sql, args = _search_sql(q, tokens)
            rids = [r for (r,) in self.con.execute(sql, args)]
        total = len(rids)
        return SearchResults(self, rids[: q.limit] if q.limit else rids, total)

    def _from_words(self, q: SearchQuery, tokens: list[tuple[str, str]]) -> list[int] | None:
        """The ranking from the ``words`` table (see :func:`_build_words`) when every query word
        has a row there and nothing but the words narrows or orders the result; None otherwise."""
        if not tokens or q.sort != "relevance" or any(getattr(q, f) is not None for f in _FILTERS):
            return None
        posts: dict[str, tuple[bytes, bytes, bytes]] = {}
        for raw, nt in tokens:
            if nt not in posts:
                row = self.con.execute(
                    "SELECT rids, scores, srcs FROM words WHERE word = ?", (nt,)
                ).fetchone()
                if row is None:
                    return None
                posts[nt] = row
            if (
                raw != nt
                and self.con.execute("SELECT 1 FROM cards WHERE id_l IN (?, ?) LIMIT 1", (raw, nt)).fetchone()
            ):
                return None  # the stored scores are for raw == nt; an id equal to either differs
        if len(posts) == 1 and len(tokens) == 1:
            return _ints("i", next(iter(posts.values()))[0])  # stored in rank order
        return _combine([_posting(p) for p in posts.values()], [nt for _, nt in tokens])


_FILTERS = tuple(f for f in SearchQuery.__dataclass_fields__ if f not in ("text", "sort", "limit"))


def _ints(code: str, blob: bytes) -> list[int]:
    a = array(code)
    a.frombytes(blob)
    return a.tolist()


def _posting(row: tuple[bytes, bytes, bytes]) -> tuple[list[int], list[int], list[int]]:
    return _ints("i", row[0]), _ints("H", row[1]), _ints("H", row[2])


def _combine(posts: list[tuple[list[int], list[int], list[int]]], words: list[str]) -> list[int]:
    """Several words' postings (one per distinct word; ``words`` lists the query's words, repeats
    included) ranked as ``order_rows`` ranks them: a row must match every word, its tier is its
    weakest word's, its score the sum; then each (tier, source)'s best first, score, source, rid.
    The sort keys are packed into one integer each (rid < 2**32, score sums < 2**20, source
    ranks < 2**16), which sorts several times faster than tuples."""
    times = [words.count(w) for w in dict.fromkeys(words)]
    maps = [dict(zip(rids, scores, strict=True)) for rids, scores, _ in posts]
    smallest = min(range(len(posts)), key=lambda i: len(posts[i][0]))
    common = set(maps[smallest])
    for m in maps:
        common.intersection_update(m.keys())
    total = dict.fromkeys(common, 0)
    low = dict.fromkeys(common, 1 << 16)
    for m, t in zip(maps, times, strict=True):
        for r in common:
            v = m[r]
            total[r] += v * t
            if v < low[r]:
                low[r] = v
    src = dict(zip(posts[smallest][0], posts[smallest][2], strict=True))
    top = (1 << 20) - 1
    seen: dict[int, int] = {}
    keys = []
    for k in sorted((top - total[r]) << 32 | r for r in common):  # score descending, then rid
        r = k & 0xFFFFFFFF
        tier, s = low[r] // 1000, src[r]
        g = tier << 16 | s
        n = seen.get(g, 0)
        seen[g] = n + 1
        keys.append(((((15 - tier) << 32 | n) << 20 | (top - total[r])) << 16 | s) << 32 | r)
    keys.sort()
    return [k & 0xFFFFFFFF for k in keys]


def _search_sql(q: SearchQuery, tokens: list[tuple[str, str]], out: str = "rid") -> tuple[str, list[Any]]:
    """The SQL (and its parameters) that lists the rows matching ``q`` in rank order: ``out``
    names the columns read (``rid``, or ``rid, score, src`` for a relevance search with words)."""
    where: list[str] = []
    args: list[Any] = []
    for col, val in (
        ("source", q.source),
        ("framework_l", q.framework),
        ("origin_l", q.origin),
        ("task_l", q.task),
    ):
        if val:
            where.append(f"lower({col}) = ?" if col == "source" else f"{col} = ?")
            args.append(val.lower())
    if q.dataset:
        where.append("instr(dataset_n, ?) > 0")
        args.append(_norm(q.dataset))
    for col, op, val in (
        ("top1", ">=", q.min_top1),
        ("params", "<=", q.max_params),
        ("gflops", "<=", q.max_gflops),
        ("input_hw", "=", q.input_size),
    ):
        if val is not None:
            where.append(f"{col} {op} ?")
            args.append(val)
    if q.license:
        where.append("instr(license_l, ?) > 0")
        args.append(q.license.lower())
    if q.tag:
        where.append("instr(tags, ?) > 0")
        args.append(f"|{_norm(q.tag)}|")
    long_words = [nt for _, nt in tokens if len(nt) >= 3]
    src = "cards"
    if long_words:  # trigram FTS: rows whose text contains every long word as a substring
        src = "hay JOIN cards ON cards.rid = hay.rowid"
        where.insert(0, "hay MATCH ?")
        args.insert(0, " AND ".join(f'"{nt}"' for nt in long_words))
    cond = " AND ".join(where) or "1"
    if tokens:
        cases, case_args = [], []
        for i, (raw, nt) in enumerate(tokens):
            case_sql, a = _token_case(raw, nt)
            cases.append(f"{case_sql} AS s{i}")
            case_args += a
        s = [f"s{i}" for i in range(len(tokens))]
        val = f", {q.sort}" if q.sort in ("top1", "params", "gflops") else ""
        tier = f"min({', '.join(s if len(s) > 1 else s * 2)}) / 1000"
        sql = f"""
            WITH m AS MATERIALIZED (SELECT cards.rid AS rid, src{val}, {", ".join(cases)}
                                    FROM {src} WHERE {cond}),
            g AS (SELECT rid, src{val}, {" + ".join(s)} AS score, {tier} AS tier
                  FROM m WHERE {" AND ".join(f"{x} > 0" for x in s)}),
            h AS (SELECT *, row_number() OVER (PARTITION BY tier, src ORDER BY score DESC, rid) AS srank
                  FROM g)
            SELECT {out} FROM h"""
        args = case_args + args
    else:
        sql = f"SELECT cards.rid AS rid FROM {src} WHERE {cond}"
        if q.sort == "relevance":  # no words: every source's first ids first (a spread)
            sql = (
                f"SELECT rid FROM (SELECT rid, src, row_number() OVER "
                f"(PARTITION BY src ORDER BY rid) AS srank FROM cards WHERE {cond}) "
                "ORDER BY srank, src, rid"
            )
    if q.sort == "relevance" and tokens:
        sql += " ORDER BY tier DESC, srank, score DESC, src, rid"
    elif q.sort == "relevance":
        pass
    elif q.sort == "name":
        sql += " ORDER BY rid"
    else:
        sql += f" ORDER BY {q.sort} IS NULL, {q.sort} {'DESC' if q.sort == 'top1' else 'ASC'}, rid"
    return sql, args


def _token_case(raw: str, nt: str) -> tuple[str, list[Any]]:
    """One query word's score in SQL and its parameters: the same tiers and closeness bonus as
    :func:`zoo.registry.token_score` (the tests hold the two equal)."""
    branches: list[tuple[str, list[Any], int]] = [
        ("id_l = ?", [raw], EXACT * 1000 + 900),
        ("model = ?", [nt], EXACT * 1000 + 800),
        ("name_n = ?", [nt], EXACT * 1000 + 700),
        ("fam = ?", [nt], EXACT * 1000 + 600),
        ("instr(tags, ?) > 0", [f"|{nt}|"], EXACT * 1000 + 500),
        ("instr(words, ?) > 0", [f"|{nt}|"], EXACT * 1000 + 400),
        ("substr(model, 1, ?) = ? OR substr(name_n, 1, ?) = ?", [len(nt), nt, len(nt), nt], PREFIX * 1000),
        ("instr(norm_id, ?) > 0 OR instr(name_n, ?) > 0", [nt, nt], SUBSTRING * 1000),
        ("instr(tags, ?) > 0 OR source_n = ?", [f"|{nt}", nt], WEAK * 1000),
    ]
    bonus = f"99 - min(99, abs(length(model) - {len(nt)}))"
    whens = " ".join(f"WHEN {cond} THEN {base} + {bonus}" for cond, _, base in branches)
    sql = f"CASE {whens} ELSE 0 END"
    return sql, [a for _, args, _ in branches for a in args]


class SearchResults(Sequence[ModelCard]):
    """Search hits in rank order: ``ids`` now, each ``ModelCard`` built when first read.

    ``total`` counts every match, before the query's ``limit``.
    """

    def __init__(self, index: Index, rids: list[int], total: int) -> None:
        self._index = index
        self._rids = rids
        self.total = total
        self._cards: dict[int, ModelCard] = {}
        self._ids: list[str] | None = None

    @property
    def ids(self) -> list[str]:
        """The hits' ids, in rank order (read from the index on first use)."""
        if self._ids is None:
            by_rid: dict[int, str] = {}
            for start in range(0, len(self._rids), 500):
                chunk = self._rids[start : start + 500]
                marks = ", ".join("?" * len(chunk))
                by_rid.update(
                    self._index.con.execute(f"SELECT rid, id FROM cards WHERE rid IN ({marks})", chunk)
                )
            self._ids = [by_rid[r] for r in self._rids]
        return self._ids

    def __len__(self) -> int:
        return len(self._rids)

    @overload
    def __getitem__(self, i: int) -> ModelCard: ...
    @overload
    def __getitem__(self, i: slice) -> list[ModelCard]: ...

    def __getitem__(self, i: int | slice) -> ModelCard | list[ModelCard]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        if i not in self._cards:
            self._cards[i] = self._index.card(self._rids[i])
        return self._cards[i]

    def __iter__(self) -> Iterator[ModelCard]:
        return (self[i] for i in range(len(self)))

    def __repr__(self) -> str:
        return f"SearchResults({self.ids[:5]}{'...' if len(self) > 5 else ''}, total={self.total})"


def _index_file(home: Path, reg_path: Path, cat_path: Path) -> Path:
    key = hashlib.sha256(f"{reg_path.resolve()}\n{cat_path.resolve()}".encode()).hexdigest()[:16]
    return home / "index" / f"search-{key}.sqlite"


def _fresh(
    meta: dict[str, str] | None, path: Path, reg_path: Path, cat_path: Path
) -> tuple[bool, dict[str, str]]:
    """Does an index with ``meta`` (None: none readable) match the sources now? Also the sources'
    stat keys and hashes as now known. Hashes only a source whose stat changed."""
    now = {
        "version": str(INDEX_VERSION),
        "registry_stat": _stat_key(reg_path) or "",
        "catalog_stat": _stat_key(cat_path) or "",
    }
    if meta is None or meta.get("version") != now["version"]:
        return False, now
    same = True
    for name, src in (("registry", reg_path), ("catalog", cat_path)):
        if meta.get(f"{name}_stat") == now[f"{name}_stat"]:
            now[f"{name}_sha256"] = meta.get(f"{name}_sha256", "")
            continue
        sha = _sha256(src) or ""
        now[f"{name}_sha256"] = sha
        if sha != meta.get(f"{name}_sha256"):
            same = False
    if same and (meta.get("registry_stat"), meta.get("catalog_stat")) != (
        now["registry_stat"],
        now["catalog_stat"],
    ):
        _restamp(path, now)
    return same, now


def _try_open(path: Path) -> Index | None:
    try:
        return Index(path)
    except (sqlite3.Error, KeyError, ValueError):  # missing, half-written by an older version, ...
        return None


def _restamp(path: Path, now: dict[str, str]) -> None:
    """Same bytes, new stat (a touch or a copy): record the new stat so it is not hashed again."""
    try:
        con = sqlite3.connect(path)
        with con:
            con.executemany(
                "UPDATE meta SET v = ? WHERE k = ?",
                [(now["registry_stat"], "registry_stat"), (now["catalog_stat"], "catalog_stat")],
            )
        con.close()
    except sqlite3.Error:
        pass  # read-only home: we just hash again next time


def open_index(home: Path | None = None, registry_path: Path | None = None) -> Index:
    """The current index for the bundled registry (or ``registry_path``) and the catalogue under
    ``home`` ($ZOO_HOME), built first if missing or stale."""
    from zoo.paths import zoo_home

    home = Path(home) if home is not None else zoo_home()
    reg_path = Path(registry_path) if registry_path is not None else bundled_registry_path()
    cat_path = catalog_path(home)
    if not reg_path.is_file():
        raise RegistryError(f"registry not found: {reg_path}")
    path = _index_file(home, reg_path, cat_path)
    idx = _try_open(path)
    if _fresh(idx.meta if idx else None, path, reg_path, cat_path)[0]:
        return idx  # type: ignore[return-value]
    if idx is not None:
        idx.close()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        from filelock import FileLock

        lock = FileLock(str(path) + ".lock")
    except OSError:
        return _build_private(reg_path, cat_path)
    with lock:
        idx = _try_open(path)  # someone may have built it while we waited
        ok, now = _fresh(idx.meta if idx else None, path, reg_path, cat_path)
        if ok:
            return idx  # type: ignore[return-value]
        if idx is not None:
            idx.close()
        for name, src in (("registry", reg_path), ("catalog", cat_path)):
            now.setdefault(f"{name}_sha256", _sha256(src) or "")
        fd, tmp = tempfile.mkstemp(prefix=".search-", suffix=".tmp", dir=path.parent)
        os.close(fd)
        os.unlink(tmp)
        try:
            _build(Path(tmp), reg_path, cat_path, now)
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
    return Index(path)


def _build_private(reg_path: Path, cat_path: Path) -> Index:
    """An index in a temporary file, for a $ZOO_HOME that cannot be written."""
    fd, tmp = tempfile.mkstemp(prefix="zoo-search-", suffix=".sqlite")
    os.close(fd)
    os.unlink(tmp)
    meta = {"version": str(INDEX_VERSION)}
    _build(Path(tmp), reg_path, cat_path, meta)
    idx = Index(Path(tmp))
    os.unlink(tmp)  # the open connection keeps it readable
    return idx
