"""The on-disk download cache under ``$ZOO_HOME``: blobs, refs, pins, named views, partials.

The layout (the contract; docs/cache.md says the same for users)::

    $ZOO_HOME/
      blobs/sha256/<hex>             verified file contents, named by their full sha256; written only
                                     by an atomic rename after every check passed
      refs/<model id>/<file>.json    what is cached for one file of one model: sha256, size, the url
                                     it came from, the published checksum it was verified against,
                                     the time; removed by ``remove`` (``zoo cache rm``)
      pins/<model id>/<file>.sha256  trust on first use: the full sha256 recorded after the first
                                     verified download; every later download must match it. Pins
                                     survive ``remove`` unless ``forget_pins=True``
      files/<model id>/<file>        a relative symlink to the blob, so callers get a path that keeps
                                     the file's own name and suffix (what ``fetch_file`` returns)
      partial/<key>.part             an interrupted download, resumed with HTTP Range; ``<key>`` is a
                                     hash of the file's identity (first URL + published checksum)
      locks/<key>.lock               one file lock per file identity (threads and processes)

``<file>`` is the file's name in the card; for a member of an archive it is the member path with
``/`` quoted (``urllib.parse.quote(member, safe="")``).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoo.errors import ZooError
from zoo.fileio import atomic_write_text, sha256_file  # noqa: F401 - re-exported
from zoo.paths import zoo_home

__all__ = [
    "CacheEntry", "PruneResult", "zoo_home", "blob_path", "ref_path", "pin_path", "view_path",
    "read_ref", "write_ref", "read_pin", "write_pin", "link_view", "list_entries", "verify_cache",
    "remove", "prune", "sha256_file", "atomic_write_text",
]

CHUNK = 1 << 20
PARTIAL_MAX_AGE_S = 24 * 3600  # prune drops partial downloads untouched for this long
TMP_MAX_AGE_S = 3600  # and leftover temporary files (a killed process) this old
BLOB_GRACE_S = 60  # prune never drops a blob younger than this (a pull may be committing it)


def _home(home: Path | None) -> Path:
    return Path(home) if home is not None else zoo_home()


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
        rows.append(CacheEntry(
            model_id=model_id, file_name=key, sha256=sha, size=rec.get("size"),
            path=str(view_path(model_id, key, h)), blob=str(blob), url=rec.get("url"),
            verified_with=f"{ck.get('algo')}:{ck.get('value')}" if ck.get("algo") else None,
            pinned=read_pin(model_id, key, h) == sha, present=blob.is_file(), time=rec.get("time"),
        ))
    rows.sort(key=lambda r: (r.model_id, r.file_name))
    return rows


def verify_cache(home: Path | None = None, *, repair: bool = False) -> list[str]:
    """Re-hash every blob and compare it with its name; check every ref points at a blob.

    Returns one line per problem (empty: all good). ``repair`` deletes damaged blobs (the next
    pull downloads them again).
    """
    h = _home(home)
    problems: list[str] = []
    bdir = h / "blobs" / "sha256"
    if bdir.is_dir():
        for p in sorted(bdir.iterdir()):
            if p.name.startswith(".tmp-") or not p.is_file():
                continue
            actual = sha256_file(p)
            if actual != p.name:
                problems.append(f"damaged blob {p}: sha256 is {actual}, expected {p.name}")
                if repair:
                    p.unlink(missing_ok=True)
    for e in list_entries(h):
        if not Path(e.blob).is_file():
            problems.append(f"{e.model_id}/{e.file_name}: blob {e.sha256} is missing")
        elif e.size is not None and Path(e.blob).stat().st_size != e.size:
            problems.append(f"{e.model_id}/{e.file_name}: size {Path(e.blob).stat().st_size}, "
                            f"recorded {e.size}")
        pin = read_pin(e.model_id, e.file_name, h)
        if pin is not None and pin != e.sha256:
            problems.append(f"{e.model_id}/{e.file_name}: cached sha256 {e.sha256} differs from "
                            f"the pin {pin}")
    return problems


def remove(model_id: str, home: Path | None = None, *, forget_pins: bool = False) -> int:
    """Forget the cached files of one model (refs and named views); blobs go at the next prune.

    Pins stay (a later pull must still match them) unless ``forget_pins``. Returns how many files
    were forgotten.
    """
    _check_model_id(model_id)
    h = _home(home)
    n = 0
    refs = h / "refs" / model_id
    if refs.is_dir():
        n = sum(1 for p in refs.iterdir() if p.suffix == ".json" and p.is_file())
        shutil.rmtree(refs)
    views = h / "files" / model_id
    if views.is_dir():
        shutil.rmtree(views)
    if forget_pins and (h / "pins" / model_id).is_dir():
        shutil.rmtree(h / "pins" / model_id)
    for sub in ("refs", "files", "pins"):  # drop empty family folders
        parent = (h / sub / model_id).parent
        while parent != h / sub and parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent
    return n


@dataclass
class PruneResult:
    """What ``prune`` removed."""

    blobs: int = 0
    bytes: int = 0
    partials: int = 0
    other: int = 0

    def __str__(self) -> str:
        return (f"removed {self.blobs} unreferenced blob(s) ({self.bytes / 1e6:.1f} MB), "
                f"{self.partials} stale partial download(s), {self.other} leftover file(s)")


def prune(home: Path | None = None, *, partial_max_age_s: float = PARTIAL_MAX_AGE_S) -> PruneResult:
    """Drop blobs no ref points at, partial downloads not touched for ``partial_max_age_s``
    (and not being downloaded now), leftover temporary files and dangling views."""
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
    return res
