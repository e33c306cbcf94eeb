"""The on-disk download cache under ``$ZOO_HOME``: blobs, refs, pins, named views, partials.

The layout (the contract; docs/cache.md says the same for users)::

    $ZOO_HOME/
      blobs/sha256/<hex>             verified file contents, named by their full sha256; written only
                                     by an atomic rename after every check passed
      refs/<model id>/<file>.json    what is cached for one file of one model: sha256, size, the url
                                     it came from, the published checksum it was verified against,
                                     the time, and ``blob_stat`` (the blob's size, mtime_ns and inode
                                     when its bytes were last verified: a pull re-hashes the blob
                                     when they differ); removed by ``remove`` (``zoo cache rm``)
      pins/<model id>/<file>.sha256  trust on first use: the full sha256 recorded after the first
                                     verified download; every later download must match it. Pins
                                     survive ``remove`` unless ``forget_pins=True``
      files/<model id>/<file>        a relative symlink to the blob, so callers get a path that keeps
                                     the file's own name and suffix (what ``fetch_file`` returns)
      partial/<key>.part             an interrupted download, resumed with HTTP Range; ``<key>`` is a
                                     hash of the file's identity (first URL + published checksum)
      partial/<key>.etag             the URL, ETag and Last-Modified its first bytes came with (the
                                     resume's If-Range; a 206 of another version is refused)
      locks/<key>.lock               one file lock per file identity (threads and processes)
      features/<key>/                cached features (zoo.features); ``prune`` drops the broken
                                     ones and leftover extraction folders

``<file>`` is the file's name in the card; for a member of an archive it is the member path with
``/`` quoted (``urllib.parse.quote(member, safe="")``).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo.errors import ZooError
from zoo.fileio import atomic_write_text, sha256_file  # noqa: F401 - re-exported
from zoo.paths import zoo_home

__all__ = [
    "CacheEntry",
    "PruneResult",
    "RemoveResult",
    "RepairResult",
    "zoo_home",
    "blob_path",
    "ref_path",
    "pin_path",
    "view_path",
    "read_ref",
    "write_ref",
    "read_pin",
    "write_pin",
    "link_view",
    "list_entries",
    "verify_cache",
    "repair_cache",
    "remove",
    "prune",
    "human_size",
    "sha256_file",
    "atomic_write_text",
]

CHUNK = 1 << 20
PARTIAL_MAX_AGE_S = 24 * 3600  # prune drops partial downloads untouched for this long
TMP_MAX_AGE_S = 3600  # and leftover temporary files (a killed process) this old
BLOB_GRACE_S = 60  # prune never drops a blob younger than this (a pull may be committing it)


def _home(home: Path | None) -> Path:
    return Path(home) if home is not None else zoo_home()


def human_size(n: int | float | None) -> str:
    """``1234567`` -> ``"1.2 MB"`` (decimal units, as download sizes are usually given)."""
    if n is None:
        return "-"
    if n < 1000:
        return f"{int(n)} B"
    for unit in ("kB", "MB", "GB", "TB"):
        n /= 1000
        if n < 999.95 or unit == "TB":
            return f"{n:.1f} {unit}"
    raise AssertionError("unreachable")


def _check_model_id(model_id: str) -> None:
    parts = model_id.split("/")
    if model_id.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ZooError(f"invalid model id for the cache: {model_id!r}")


def _check_file_key(name: str) -> None:
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise ZooError(f"invalid cached file name: {name!r}")


def blob_path(sha256: str, home: Path | None = None) -> Path:
    """Where the blob with this full sha256 lives (it may not exist)."""
    return _home(home) / "blobs" / "sha256" / sha256


def ref_path(model_id: str, file_key: str, home: Path | None = None) -> Path:
    _check_model_id(model_id)
    _check_file_key(file_key)
    return _home(home) / "refs" / model_id / f"{file_key}.json"


def pin_path(model_id: str, file_key: str, home: Path | None = None) -> Path:
    _check_model_id(model_id)
    _check_file_key(file_key)
    return _home(home) / "pins" / model_id / f"{file_key}.sha256"


def view_path(model_id: str, file_key: str, home: Path | None = None) -> Path:
    _check_model_id(model_id)
    _check_file_key(file_key)
    return _home(home) / "files" / model_id / file_key


def read_ref(model_id: str, file_key: str, home: Path | None = None) -> dict[str, Any] | None:
    """The cache record of one file of one model, or None."""
    p = ref_path(model_id, file_key, home)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return None  # a damaged record counts as not cached; the next pull rewrites it


def write_ref(model_id: str, file_key: str, record: dict[str, Any], home: Path | None = None) -> Path:
    """Record (atomically) that ``file_key`` of ``model_id`` is cached as blob ``record['sha256']``."""
    p = ref_path(model_id, file_key, home)
    rec = {"model_id": model_id, "file_name": file_key, **record}
    rec.setdefault("time", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    atomic_write_text(p, json.dumps(rec, indent=1, sort_keys=True) + "\n")
    return p


def read_pin(model_id: str, file_key: str, home: Path | None = None) -> str | None:
    """The full sha256 pinned for this file (recorded at its first verified download), or None."""
    try:
        value = pin_path(model_id, file_key, home).read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return None
    return value or None


def write_pin(model_id: str, file_key: str, sha256: str, home: Path | None = None) -> None:
    """Pin this file to ``sha256`` (atomically); later downloads must match it."""
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise ValueError(f"not a full lower-case sha256: {sha256!r}")
    atomic_write_text(pin_path(model_id, file_key, home), sha256 + "\n")


def link_view(model_id: str, file_key: str, sha256: str, home: Path | None = None) -> Path:
    """Point ``files/<id>/<file>`` at the blob (relative symlink, replaced atomically)."""
    view = view_path(model_id, file_key, home)
    blob = blob_path(sha256, home)
    target = os.path.relpath(blob, view.parent)
    view.parent.mkdir(parents=True, exist_ok=True)
    try:
        if os.readlink(view) == target:
            return view
    except OSError:
        pass
    tmp = view.parent / f".tmp-{os.getpid()}-{time.monotonic_ns()}"
    os.symlink(target, tmp)
    os.replace(tmp, view)
    return view


@dataclass
class CacheEntry:
    """One cached file of one model (a row of ``zoo cache ls``)."""

    model_id: str
    file_name: str
    sha256: str
    size: int | None
    path: str  # the named view (symlink to the blob)
    blob: str
    url: str | None
    verified_with: str | None  # the published checksum it was checked against ("algo:value")
    pinned: bool
    present: bool  # the blob exists
    time: str | None


def _iter_refs(home: Path) -> Iterator[tuple[str, str, Path]]:
    root = home / "refs"
    if not root.is_dir():
        return
    for dirpath, _dirs, files in os.walk(root):
        for fn in sorted(files):
            if not fn.endswith(".json") or fn.startswith(".tmp-"):
                continue
            rel = Path(dirpath).relative_to(root)
            yield rel.as_posix(), fn[: -len(".json")], Path(dirpath) / fn


def list_entries(home: Path | None = None) -> list[CacheEntry]:
    """Every cached file, sorted by model id and file name."""
    h = _home(home)
    rows: list[CacheEntry] = []
    for model_id, key, p in _iter_refs(h):
        try:
            rec = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        sha = str(rec.get("sha256", ""))
        blob = blob_path(sha, h)
        ck = rec.get("checksum") or {}
        rows.append(
            CacheEntry(
                model_id=model_id,
                file_name=key,
                sha256=sha,
                size=rec.get("size"),
                path=str(view_path(model_id, key, h)),
                blob=str(blob),
                url=rec.get("url"),
                verified_with=f"{ck.get('algo')}:{ck.get('value')}" if ck.get("algo") else None,
                pinned=read_pin(model_id, key, h) == sha,
                present=blob.is_file(),
                time=rec.get("time"),
            )
        )
    rows.sort(key=lambda r: (r.model_id, r.file_name))
    return rows


@dataclass
class _Problem:
    text: str
    refs: list[tuple[str, str]]  # (model id, file name) of the cached files it affects


def _scan(h: Path, *, delete_damaged: bool = False) -> list[_Problem]:
    problems: list[_Problem] = []
    entries = list_entries(h)
    bdir = h / "blobs" / "sha256"
    if bdir.is_dir():
        for p in sorted(bdir.iterdir()):
            if p.name.startswith(".tmp-") or not p.is_file():
                continue
            actual = sha256_file(p)
            if actual != p.name:
                users = [(e.model_id, e.file_name) for e in entries if e.sha256 == p.name]
                problems.append(_Problem(f"damaged blob {p}: sha256 is {actual}, expected {p.name}", users))
                if delete_damaged:
                    p.unlink(missing_ok=True)
    for e in entries:
        key = (e.model_id, e.file_name)
        if not Path(e.blob).is_file():
            if not any(key in pr.refs for pr in problems):  # a damaged blob just deleted
                problems.append(_Problem(f"{e.model_id}/{e.file_name}: blob {e.sha256} is missing", [key]))
        elif e.size is not None and Path(e.blob).stat().st_size != e.size:
            problems.append(
                _Problem(
                    f"{e.model_id}/{e.file_name}: size {Path(e.blob).stat().st_size}, recorded {e.size}",
                    [key],
                )
            )
        pin = read_pin(e.model_id, e.file_name, h)
        if pin is not None and pin != e.sha256:
            problems.append(
                _Problem(
                    f"{e.model_id}/{e.file_name}: cached sha256 {e.sha256} differs from the pin {pin}", [key]
                )
            )
    return problems


def verify_cache(home: Path | None = None, *, repair: bool = False) -> list[str]:
    """Re-hash every blob and compare it with its name; check every ref points at a blob of the
    recorded size that agrees with its pin.

    Returns one line per problem (empty: all good). ``repair`` only deletes damaged blobs (the next
    pull downloads them again); ``repair_cache`` also fetches them again.
    """
    return [p.text for p in _scan(_home(home), delete_damaged=repair)]


@dataclass
class RepairResult:
    """What ``repair_cache`` found and did."""

    found: list[str] = field(default_factory=list)  # the problems before the repair
    repaired: list[str] = field(default_factory=list)  # "<id>/<file>" fetched again and verified
    failed: list[str] = field(default_factory=list)  # "<id>/<file>: why" that could not be
    problems: list[str] = field(default_factory=list)  # what verify still finds afterwards

    @property
    def ok(self) -> bool:
        return not self.problems and not self.failed


def repair_cache(home: Path | None = None, *, registry: Any = None, **fetch_kw: Any) -> RepairResult:
    """``verify_cache``, then fetch again every cached file a problem affects.

    Damaged blobs are deleted; each affected file is looked up in ``registry`` (default:
    ``zoo.registry.Registry.load(home=...)``, anything with ``get(model_id) -> ModelCard``) and
    fetched with ``zoo.fetch.fetch_file(card, ref, home=..., **fetch_kw)`` (verified like any
    download). Damaged blobs no ref uses are only deleted. The result lists what was repaired,
    what could not be (unknown model or file, download failure) and what is still wrong.
    """
    from dataclasses import replace

    from zoo import fetch

    h = _home(home)
    res = RepairResult()
    found = _scan(h, delete_damaged=True)
    res.found = [p.text for p in found]
    todo = sorted({key for p in found for key in p.refs})
    if todo and registry is None:
        from zoo.registry import Registry

        registry = Registry.load(home=h)
    for model_id, name in todo:
        label = f"{model_id}/{name}"
        try:
            card = registry.get(model_id)
        except ZooError as e:
            res.failed.append(f"{label}: {str(e).splitlines()[0]}")
            continue
        ref = next((r for r in card.files if fetch.file_key(r) == name), None)
        if ref is None:  # the archive an archive member was extracted from
            ref = next(
                (replace(r, member=None, role="archive") for r in card.files if r.member and r.name == name),
                None,
            )
        if ref is None:
            res.failed.append(f"{label}: the card of {model_id} has no file {name!r} any more")
            continue
        try:
            fetch.fetch_file(card, ref, home=h, **fetch_kw)
        except ZooError as e:
            res.failed.append(f"{label}: {e}")
            continue
        res.repaired.append(label)
    res.problems = verify_cache(h) if found else []
    return res


@dataclass
class RemoveResult:
    """What ``remove`` deleted."""

    files: int = 0  # refs (cached files of the model)
    blobs: int = 0  # blobs no other ref uses
    bytes: int = 0
    pins: int = 0

    def __str__(self) -> str:
        s = (
            f"forgot {self.files} cached file(s), deleted {self.blobs} blob(s) no other model uses "
            f"({human_size(self.bytes)})"
        )
        return s + (f", forgot {self.pins} pin(s)" if self.pins else "")


def _own_files(d: Path, suffix: str) -> list[Path]:
    """The files directly in ``d`` (not those of models whose id continues below it)."""
    if not d.is_dir():
        return []
    return sorted(
        p
        for p in d.iterdir()
        if p.name.endswith(suffix) and not p.is_dir() and not p.name.startswith(".tmp-")
    )


def remove(model_id: str, home: Path | None = None, *, forget_pins: bool = False) -> RemoveResult:
    """Forget the cached files of one model: its refs, its named views, and the blobs no other ref
    uses. Pins stay (a later pull must still match them) unless ``forget_pins``.

    ZooError when nothing of that model is cached (nor pinned, with ``forget_pins``).
    """
    _check_model_id(model_id)
    h = _home(home)
    res = RemoveResult()
    refs = _own_files(h / "refs" / model_id, ".json")
    views = _own_files(h / "files" / model_id, "")
    pins = _own_files(h / "pins" / model_id, ".sha256") if forget_pins else []
    if not refs and not views and not pins:
        raise ZooError(
            f"{model_id} is not in the cache"
            + (" and has no pins" if forget_pins else "")
            + " ('zoo cache ls' lists what is)"
        )
    shas: set[str] = set()
    for p in refs:
        try:
            shas.add(str(json.loads(p.read_text(encoding="utf-8")).get("sha256") or ""))
        except (OSError, ValueError):
            pass
        p.unlink(missing_ok=True)
    res.files = len(refs)
    for p in views:
        p.unlink(missing_ok=True)
    for p in pins:
        p.unlink(missing_ok=True)
    res.pins = len(pins)
    used = {e.sha256 for e in list_entries(h)}
    for sha in sorted(shas - used - {""}):
        blob = blob_path(sha, h)
        try:
            size = blob.lstat().st_size
            blob.unlink()
        except FileNotFoundError:
            continue
        res.blobs += 1
        res.bytes += size
    for sub in ("refs", "files", "pins"):  # drop empty folders up to the family
        d = h / sub / model_id
        while d != h / sub and d.is_dir() and not any(d.iterdir()):
            d.rmdir()
            d = d.parent
    return res


@dataclass
class PruneResult:
    """What ``prune`` removed."""

    blobs: int = 0
    bytes: int = 0
    partials: int = 0
    other: int = 0
    features: int = 0  # feature entries (broken ones, or all) and leftover extraction folders
    feature_bytes: int = 0

    def __str__(self) -> str:
        s = (
            f"removed {self.blobs} unreferenced blob(s) ({self.bytes / 1e6:.1f} MB), "
            f"{self.partials} stale partial download(s), {self.other} leftover file(s)"
        )
        if self.features:
            s += f", {self.features} feature folder(s) ({self.feature_bytes / 1e6:.1f} MB)"
        return s


def prune(
    home: Path | None = None, *, partial_max_age_s: float = PARTIAL_MAX_AGE_S, all_features: bool = False
) -> PruneResult:
    """Drop blobs no ref points at, partial downloads not touched for ``partial_max_age_s``
    (and not being downloaded now), leftover temporary files and dangling views; feature entries
    whose index.json is unreadable (every entry with ``all_features``) and extraction folders left
    by a killed process (an hour old)."""
    from filelock import FileLock, Timeout

    h = _home(home)
    res = PruneResult()
    now = time.time()
    used = {e.sha256 for e in list_entries(h)}
    bdir = h / "blobs" / "sha256"
    if bdir.is_dir():
        for p in bdir.iterdir():
            try:
                st = p.lstat()
            except FileNotFoundError:
                continue
            if p.name.startswith(".tmp-"):
                if now - st.st_mtime > TMP_MAX_AGE_S:
                    p.unlink(missing_ok=True)
                    res.other += 1
                continue
            if p.name not in used and now - st.st_mtime > BLOB_GRACE_S:
                p.unlink(missing_ok=True)
                res.blobs += 1
                res.bytes += st.st_size
    pdir = h / "partial"
    if pdir.is_dir():
        for p in pdir.glob("*.part"):
            try:
                age = now - p.stat().st_mtime
            except FileNotFoundError:
                continue
            if age < partial_max_age_s:
                continue
            lock = FileLock(str(h / "locks" / (p.name[: -len(".part")] + ".lock")), timeout=0)
            try:
                with lock:
                    p.unlink(missing_ok=True)
                    p.with_suffix(".etag").unlink(missing_ok=True)  # its validator (zoo.fetch)
                    res.partials += 1
            except Timeout:
                pass  # someone is downloading it right now
    vdir = h / "files"
    if vdir.is_dir():
        for dirpath, _dirs, files in os.walk(vdir):
            for fn in files:
                p = Path(dirpath) / fn
                if p.is_symlink() and not p.exists():
                    p.unlink(missing_ok=True)
                    res.other += 1
    if (h / "features").is_dir():  # cached features (zoo.features): not blobs, pruned there
        from zoo.features import prune_features

        res.features, res.feature_bytes = prune_features(h, max_age_s=TMP_MAX_AGE_S, remove_all=all_features)
    return res
