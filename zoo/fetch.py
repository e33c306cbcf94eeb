"""Verified downloads into the content-addressed cache (layout: ``zoo.cache`` and docs/cache.md).

``fetch_file(card, ref)`` returns a local path whose bytes match the checksum the publisher gave
(sha256, sha256 prefix, md5 or sha1, hashed while streaming) and the full sha256 pinned at the first
verified download. HTTP goes through ``requests``: resume with Range from ``partial/<key>.part``
(also after a killed process), retries with exponential backoff (a line on stderr for each wait) on
transient failures only (timeouts, connections broken mid-body, truncated bodies, 5xx, 429 with
``Retry-After`` honoured, capped); a host that does not resolve or a refused connection moves on to
the next source at once. One file lock per file identity so concurrent pulls download once, and
only atomic renames into ``blobs/`` and ``dest``. Bytes are written by the reading thread and hashed
by one worker thread per algorithm (hashlib releases the GIL), 1 MiB reads.

A cached copy is checked where it is used: its blob's size, mtime and inode are compared with those
recorded in its ref when it was last verified, and it is re-hashed when they differ (always with
``verify=True``). A damaged blob is never returned: online it is fetched again and replaced, offline
the pull fails with ``ChecksumError`` naming the blob, expected and actual sha256.

Sources are tried in order: each mirror (``<mirror>/<host>/<path>``), then the original URL.
``file://`` URLs are copied with the same checks. Archive members are extracted from the verified
archive blob. Hugging Face files go through ``huggingface_hub.hf_hub_download`` (its own cache and
``HF_ENDPOINT``); the verified file is then hard-linked (or copied) into our blob store.

Settings (keyword arguments win over the environment): ``ZOO_MIRROR`` (mirror URLs, comma or
space separated), ``ZOO_OFFLINE`` (1/true/yes), ``ZOO_RETRIES`` (default 5), ``ZOO_BACKOFF`` (base
seconds, default 0.5), ``ZOO_TIMEOUT`` (read timeout seconds, default 60),
``ZOO_MAX_RETRY_AFTER`` (cap on a server's Retry-After, default 60), ``ZOO_PROGRESS_INTERVAL``
(seconds between progress lines when stderr is not a terminal, default 5).
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import queue
import re
import shutil
import sys
import tarfile
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import IO, Any
from urllib.parse import quote, unquote, urlsplit

from zoo import cache
from zoo.cards import Checksum, FileRef, ModelCard
from zoo.errors import ChecksumError, DiskFullError, FetchError, OfflineError, ZooError

log = logging.getLogger("zoo.fetch")

CHUNK = 1 << 20  # the most one read hands over (it returns what has arrived, up to this)
HASH_QUEUE = 16  # chunks waiting for a hashing thread (bounded: memory stays at most ~16 MiB)
RACY_NS = 2_000_000_000  # a blob's mtime this close to now cannot prove it unchanged (coarse clocks)
DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}
_HASH_ALGOS = {"sha256": "sha256", "sha256-prefix": "sha256", "md5": "md5", "sha1": "sha1"}


# ---------------------------------------------------------------------------------------------
# options


def _env_list(name: str) -> list[str]:
    return [m for m in re.split(r"[\s,]+", os.environ.get(name, "")) if m]


def _env_bool(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes"}


def _env_num(name: str, default: float) -> float:
    v = os.environ.get(name)
    try:
        return float(v) if v not in (None, "") else default
    except ValueError as e:
        raise ZooError(f"{name}={v!r} is not a number") from e


@dataclass
class Options:
    """Resolved settings for one fetch."""

    home: Path
    mirrors: list[str] = field(default_factory=list)
    offline: bool = False
    require_checksum: bool = False
    progress: str = "off"  # "bar" (a terminal), "lines" (one line every progress_interval s), "off"
    retries: int = 5
    backoff: float = 0.5
    timeout: float = 60.0
    max_retry_after: float = 60.0
    verify: bool = False  # re-hash cached blobs on every use, not only when their stat changed
    progress_interval: float = 5.0

    @classmethod
    def resolve(
        cls,
        *,
        mirrors: Sequence[str] | None = None,
        offline: bool | None = None,
        require_checksum: bool = False,
        progress: bool | str | None = None,
        home: Path | None = None,
        retries: int | None = None,
        backoff: float | None = None,
        timeout: float | None = None,
        max_retry_after: float | None = None,
        verify: bool = False,
        progress_interval: float | None = None,
    ) -> Options:
        if mirrors is None:
            mirrors = _env_list("ZOO_MIRROR")
        else:
            mirrors = [x for m in mirrors for x in re.split(r"[\s,]+", m) if x]
        if progress is None:
            progress = "bar" if getattr(sys.stderr, "isatty", lambda: False)() else "lines"
        elif isinstance(progress, bool):
            progress = "bar" if progress else "off"
        if progress not in ("bar", "lines", "off"):
            raise ZooError(f"progress={progress!r}: expected 'bar', 'lines' or 'off'")
        return cls(
            home=Path(home) if home is not None else cache.zoo_home(),
            mirrors=list(mirrors),
            offline=_env_bool("ZOO_OFFLINE") if offline is None else bool(offline),
            require_checksum=require_checksum,
            progress=progress,
            verify=bool(verify),
            progress_interval=float(
                progress_interval if progress_interval is not None else _env_num("ZOO_PROGRESS_INTERVAL", 5)
            ),
            retries=int(retries if retries is not None else _env_num("ZOO_RETRIES", 5)),
            backoff=float(backoff if backoff is not None else _env_num("ZOO_BACKOFF", 0.5)),
            timeout=float(timeout if timeout is not None else _env_num("ZOO_TIMEOUT", 60)),
            max_retry_after=float(
                max_retry_after if max_retry_after is not None else _env_num("ZOO_MAX_RETRY_AFTER", 60)
            ),
        )


# ---------------------------------------------------------------------------------------------
# helpers


def file_key(ref: FileRef) -> str:
    """The name a file has in the cache: its card name, or the quoted member path."""
    return quote(ref.member, safe="") if ref.member else ref.name


def identity_key(ref: FileRef) -> str:
    """A stable key for one published file (its first URL or hub address + published checksum):
    names its partial download and its lock."""
    if ref.hf:
        src = f"hf:{ref.hf['repo_id']}/{ref.hf['filename']}@{ref.hf.get('revision') or 'main'}"
    else:
        src = ref.urls[0] if ref.urls else ref.name
    ident = f"{src}\n{ref.checksum.algo}:{ref.checksum.value}"
    return hashlib.sha256(ident.encode()).hexdigest()[:40]


def mirror_url(mirror: str, url: str) -> str:
    """``<mirror>/<original host>/<original path>`` (query kept)."""
    u = urlsplit(url)
    out = f"{mirror.rstrip('/')}/{u.netloc}{u.path}"
    return out + (f"?{u.query}" if u.query else "")


def candidate_urls(ref: FileRef, mirrors: Sequence[str]) -> list[str]:
    """Mirrors first (in order) for every http(s) URL, then the original URLs."""
    out: list[str] = []
    for url in ref.urls:
        if url.startswith(("http://", "https://")):
            out.extend(mirror_url(m, url) for m in mirrors)
    out.extend(ref.urls)
    seen: set[str] = set()
    return [u for u in out if not (u in seen or seen.add(u))]  # type: ignore[func-returns-value]


class Hashes:
    """sha256 plus the published algorithm, updated while bytes stream by."""

    def __init__(self, extra: str | None) -> None:
        self.sha256 = hashlib.sha256()
        self.extra = hashlib.new(extra) if extra and extra != "sha256" else None
        self.n = 0

    def reset(self, path: Path | None = None, prog: _Progress | None = None) -> None:
        """Start again from zero, or from the bytes already in ``path`` (shown on ``prog``)."""
        self.sha256 = hashlib.sha256()
        self.extra = hashlib.new(self.extra.name) if self.extra is not None else None
        self.n = 0
        if path is not None and path.exists():
            with open(path, "rb") as f:
                if prog is not None:
                    prog.phase("re-hashing the partial download", os.fstat(f.fileno()).st_size)
                with self.background() as feed:
                    for chunk in iter(lambda: f.read(CHUNK), b""):
                        feed(chunk)
                        if prog is not None:
                            prog.advance(len(chunk))

    @contextmanager
    def background(self) -> Iterator[Callable[[bytes], None]]:
        """A function that hands a chunk to hashing threads (one per algorithm) and returns at once
        unless HASH_QUEUE chunks are waiting; on exit every chunk handed over has been hashed."""
        objs = [o for o in (self.sha256, self.extra) if o is not None]
        queues: list[queue.Queue[bytes | None]] = [queue.Queue(HASH_QUEUE) for _ in objs]

        def work(o: Any, q: queue.Queue[bytes | None]) -> None:
            while (b := q.get()) is not None:
                o.update(b)

        threads = [
            threading.Thread(target=work, args=(o, q), name="zoo-hash", daemon=True)
            for o, q in zip(objs, queues, strict=True)
        ]
        for t in threads:
            t.start()

        def feed(b: bytes) -> None:
            for q in queues:
                q.put(b)
            self.n += len(b)

        try:
            yield feed
        finally:
            for q in queues:
                q.put(None)
            for t in threads:
                t.join()

    def update(self, b: bytes) -> None:
        self.sha256.update(b)
        if self.extra is not None:
            self.extra.update(b)
        self.n += len(b)

    def digest_for(self, algo: str | None) -> str:
        if algo in (None, "sha256", "sha256-prefix") or self.extra is None:
            return self.sha256.hexdigest()
        return self.extra.hexdigest()


def _new_hashes(ck: Checksum) -> Hashes:
    return Hashes(_HASH_ALGOS.get(ck.algo or "", None))


def _rehash(path: Path, ck: Checksum) -> Hashes:
    h = _new_hashes(ck)
    h.reset(path)
    return h


def checksum_matches(ck: Checksum, h: Hashes) -> bool:
    """Does the published checksum agree with what was hashed?"""
    if not ck.published:
        return True
    value = (ck.value or "").lower()
    actual = h.digest_for(ck.algo)
    if ck.algo == "sha256-prefix":
        return actual.startswith(value)
    return actual == value


def _disk_full(e: OSError) -> bool:
    return e.errno in DISK_FULL_ERRNOS


def _label(card: ModelCard, ref: FileRef) -> str:
    return f"{card.id}/{file_key(ref)}"


@contextmanager
def _file_lock(opts: Options, key: str) -> Iterator[None]:
    from filelock import FileLock

    lock_dir = opts.home / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock_dir / f"{key}.lock")):
        yield


def _notice(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f}"


class _Progress:
    """Progress on stderr: a rich bar on a terminal (``mode="bar"``); otherwise (``"lines"``) one line
    every ``interval`` seconds, so only transfers that last that long print anything; or nothing.
    ``note`` prints a line (retry waits) in every mode."""

    def __init__(self, mode: str | bool, label: str, interval: float = 5.0) -> None:
        self.mode = mode if isinstance(mode, str) else ("bar" if mode else "off")
        self.enabled = self.mode == "bar"
        self.label = label
        self.interval = interval
        self._p: Any = None
        self._task: Any = None
        self._phase_task: Any = None
        self._what = ""
        self._total: int | None = None
        self._done = 0
        self._t0 = self._t_last = time.monotonic()
        self._done_last = 0

    def note(self, line: str) -> None:
        """One line on stderr, above the bar if there is one."""
        if self._p is not None:
            self._p.console.print(line, markup=False, highlight=False)
        else:
            _notice(line)

    def _reset(self, what: str, total: int | None, done: int) -> None:
        self._what, self._total, self._done = what, total, done
        self._t0 = self._t_last = time.monotonic()
        self._done_last = done

    def phase(self, what: str, total: int | None) -> None:
        """A step before the transfer (re-hashing a partial download): its own bar or lines."""
        self._reset(what, total, 0)
        if self._p is not None:
            if self._phase_task is not None:
                self._p.remove_task(self._phase_task)
            self._phase_task = self._p.add_task(f"{self.label}: {what}", total=total)

    def _line(self, now: float) -> None:
        rate = (self._done - self._done_last) / max(now - self._t_last, 1e-9)
        what = f" {self._what}" if self._what else ""
        if self._total:
            amount = f"{_mb(self._done)}/{_mb(self._total)} MB ({100 * self._done // self._total}%)"
        else:
            amount = f"{_mb(self._done)} MB"
        speed = f"{rate / 1e6:.1f}" if rate < 10e6 else f"{rate / 1e6:.0f}"
        self.note(f"zoo: {self.label}{what} {amount} {speed} MB/s")
        self._t_last, self._done_last = now, self._done

    def __enter__(self) -> _Progress:
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self._p = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self._p.__enter__()
            self._task = self._p.add_task(self.label, total=None)
        return self

    def start(self, total: int | None, done: int) -> None:
        """The transfer starts (or resumes at ``done``) of ``total`` bytes."""
        self._reset("", total, done)
        if self._p is not None:
            if self._phase_task is not None:
                self._p.remove_task(self._phase_task)
                self._phase_task = None
            self._p.update(self._task, total=total, completed=done)

    def advance(self, n: int) -> None:
        self._done += n
        if self._p is not None:
            self._p.advance(self._phase_task if self._phase_task is not None else self._task, n)
        elif self.mode == "lines":
            now = time.monotonic()
            if now - self._t_last >= self.interval:
                self._line(now)

    def __exit__(self, *exc: object) -> None:
        if self._p is not None:
            self._p.__exit__(None, None, None)
            self._p = None


# ---------------------------------------------------------------------------------------------
# one HTTP / file source into the partial file


class _BadSource(FetchError):
    """The source sent something that is not the file (HTML, wrong length): drop the partial."""


class _Retry(Exception):
    """A transient failure: wait and try again (resuming)."""

    def __init__(self, reason: str, wait: float | None = None) -> None:
        super().__init__(reason)
        self.wait = wait


_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


def _retry_after(value: str | None, cap: float) -> float | None:
    if not value:
        return None
    try:
        wait = float(value)
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            wait = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return max(0.0, min(wait, cap))


def _looks_like_html(head: bytes) -> bool:
    s = head.lstrip()[:64].lower()
    return s.startswith((b"<!doctype html", b"<html"))


def _expects_html(ref: FileRef) -> bool:
    return ref.name.lower().endswith((".html", ".htm"))


def _write_stream(
    chunks: Iterator[bytes],
    part: Path,
    h: Hashes,
    prog: _Progress,
    *,
    sniff_html: bool,
    url: str,
    limit: int | None,
) -> None:
    """Append ``chunks`` to ``part``; hashing threads take each chunk once it is written, so reading
    and writing overlap with hashing. HTML sniffing on the first chunk. On any exit every written
    byte has been hashed (``h.n`` is the size the partial grew by)."""
    first = sniff_html
    try:
        with open(part, "ab", buffering=0) as f, h.background() as feed:
            for chunk in chunks:
                if not chunk:
                    continue
                if first:
                    first = False
                    if _looks_like_html(chunk):
                        raise _BadSource(f"{url} returned an HTML page, not the file")
                if limit is not None and h.n + len(chunk) > limit:
                    raise _BadSource(f"{url} sent more than the expected {limit} bytes")
                view = memoryview(chunk)
                while view:  # an unbuffered write may take less than everything
                    view = view[f.write(view) :]
                feed(chunk)
                prog.advance(len(chunk))
    except OSError as e:
        if _disk_full(e):
            part.unlink(missing_ok=True)
            raise DiskFullError(f"disk full while writing {part}: {e.strerror}") from e
        raise


def _validator_path(part: Path) -> Path:
    """``partial/<key>.etag``: the URL, ETag and Last-Modified the partial's first bytes came with."""
    return part.with_suffix(".etag")


def _read_validator(part: Path) -> dict[str, Any] | None:
    import json

    try:
        v = json.loads(_validator_path(part).read_text())
    except (OSError, ValueError):
        return None
    return v if isinstance(v, dict) else None


def _write_validator(part: Path, url: str, r: Any) -> None:
    """Record (atomically, before the first body byte) what identifies the version being written."""
    import json

    v = {"url": url, "etag": r.headers.get("ETag"), "last_modified": r.headers.get("Last-Modified")}
    vp = _validator_path(part)
    tmp = vp.with_name(f".{vp.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(v))
    os.replace(tmp, vp)


def _if_range(v: dict[str, Any]) -> str | None:
    """The If-Range value for a resume: a strong ETag, else the Last-Modified date (RFC 9110 13.1.5)."""
    etag = v.get("etag")
    if isinstance(etag, str) and etag and not etag.startswith("W/"):
        return etag
    lm = v.get("last_modified")
    return lm if isinstance(lm, str) and lm else None


def _changed(v: dict[str, Any], r: Any) -> str | None:
    """How a 206's validators contradict the partial's (the file changed on the server), or None."""
    for key, header in (("etag", "ETag"), ("last_modified", "Last-Modified")):
        old, new = v.get(key), r.headers.get(header)
        if old and new and old != new:
            return f"{header} {old} when the partial download began, now {new}"
        if old or new:
            return None  # the strongest validator both sides have decides
    return None


def _http_once(
    session: Any, url: str, part: Path, h: Hashes, ref: FileRef, opts: Options, prog: _Progress
) -> None:
    """One GET (resuming from the partial); raises _Retry on transient trouble.

    A resume sends ``If-Range`` with the ETag (or Last-Modified) the partial's first bytes came
    with, and a 206 whose ETag differs is refused: bytes of two versions of a file are never
    stitched together. A partial from another source is resumed only when the card publishes a
    checksum (which would catch a stitch); otherwise it starts again from zero."""
    import requests
    import urllib3

    have = part.stat().st_size if part.exists() else 0
    expected = ref.size
    validator = _read_validator(part) if have else None
    if have and (validator or {}).get("url") != url and not ref.checksum.published:
        part.unlink()
        have, validator = 0, None
    if expected is not None and have > expected:
        part.unlink()
        have = 0
    if h.n != have:
        h.reset(part, prog)
    if expected is not None and have == expected:
        return  # complete already (e.g. the body arrived but the connection broke afterwards)
    headers = {"Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
        if validator and validator.get("url") == url:
            cond = _if_range(validator)
            if cond:
                headers["If-Range"] = cond
        else:
            validator = None
    try:
        with session.get(
            url,
            headers=headers,
            stream=True,
            allow_redirects=True,
            timeout=(min(10.0, opts.timeout), opts.timeout),
        ) as r:
            code = r.status_code
            if code == 416 and have:
                part.unlink(missing_ok=True)
                h.reset()
                raise _Retry(f"HTTP 416 for a resume at byte {have}; restarting from zero", 0)
            if code == 429 or 500 <= code < 600:
                raise _Retry(f"HTTP {code}", _retry_after(r.headers.get("Retry-After"), opts.max_retry_after))
            if code >= 400:
                raise FetchError(f"{url}: HTTP {code} {r.reason or ''}".rstrip())
            ctype = r.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if ctype == "text/html" and not _expects_html(ref):
                raise _BadSource(f"{url} returned an HTML page (Content-Type text/html), not the file")
            start = 0
            total: int | None = None
            clen = r.headers.get("Content-Length")
            if code == 206:
                m = _CONTENT_RANGE.match(r.headers.get("Content-Range", ""))
                if not m or int(m.group(1)) != have:
                    raise _BadSource(
                        f"{url}: bad Content-Range {r.headers.get('Content-Range')!r} "
                        f"for a resume at byte {have}"
                    )
                why = _changed(validator, r) if validator else None
                if why:  # a server that ignored If-Range: never stitch two versions
                    part.unlink(missing_ok=True)
                    h.reset()
                    raise _Retry(f"the file changed on the server ({why}); restarting from zero", 0)
                start = have
                total = int(m.group(3)) if m.group(3) != "*" else None
            else:
                if have:  # the server ignored Range (or If-Range said the file changed): from zero
                    log.debug("%s answered a resume with the whole file; restarting from zero", url)
                    part.unlink(missing_ok=True)
                    h.reset()
                total = int(clen) if clen and clen.isdigit() else None
            if start == 0:
                _write_validator(part, url, r)
            if total is not None and expected is not None and total != expected:
                raise _BadSource(f"{url}: the server announces {total} bytes, the card says {expected}")
            prog.start(total or expected, start)
            if r.headers.get("Content-Encoding", "identity").lower() in ("", "identity"):
                # Raw reads hand over every byte that arrived before a connection broke (the
                # decoding reader drops its half-filled buffer), so a resume loses nothing.
                # read1: what has arrived, up to CHUNK (a slow server's bytes reach the disk at once).
                chunks: Iterator[bytes] = iter(lambda: r.raw.read1(CHUNK, decode_content=False), b"")
            else:
                chunks = r.iter_content(CHUNK)
            _write_stream(
                chunks,
                part,
                h,
                prog,
                url=url,
                sniff_html=start == 0 and not _expects_html(ref),
                limit=expected if expected is not None else total,
            )
    except (
        requests.ConnectionError,
        requests.Timeout,
        requests.exceptions.ChunkedEncodingError,
        urllib3.exceptions.HTTPError,
    ) as e:
        if _unreachable(e):  # not transient: waiting would not help, the next source might
            raise FetchError(f"{url}: {_describe(e)}") from None
        raise _Retry(_describe(e)) from e
    size = part.stat().st_size if part.exists() else 0
    want = expected if expected is not None else total
    if want is not None and size < want:
        raise _Retry(f"truncated body: {size} of {want} bytes")


_UNREACHABLE_ERRNOS = {errno.ECONNREFUSED, errno.ENETUNREACH, errno.EHOSTUNREACH}


def _causes(e: BaseException) -> Iterator[BaseException]:
    """``e`` and everything it wraps (``__cause__``, ``__context__``, urllib3's ``reason``, args)."""
    seen: set[int] = set()
    todo: list[BaseException] = [e]
    while todo:
        x = todo.pop()
        if id(x) in seen:
            continue
        seen.add(id(x))
        yield x
        more = [x.__cause__, x.__context__, getattr(x, "reason", None), *getattr(x, "args", ())]
        todo.extend(m for m in more if isinstance(m, BaseException))


def _unreachable(e: BaseException) -> bool:
    """A host name that does not resolve, a refused connection, no route: not transient."""
    import socket

    import urllib3

    for x in _causes(e):
        if isinstance(x, (socket.gaierror, urllib3.exceptions.NameResolutionError, ConnectionRefusedError)):
            return True
        if isinstance(x, OSError) and x.errno in _UNREACHABLE_ERRNOS:
            return True
    return False


def _describe(e: Exception) -> str:
    """A short reason for a network failure ("cannot connect: Connection refused", ...)."""
    import socket

    import requests
    import urllib3

    for x in _causes(e):
        if isinstance(x, (urllib3.exceptions.NameResolutionError, socket.gaierror)):
            host = getattr(x, "_host", None) or getattr(x, "host", None) or ""
            why = next((str(y.strerror or y) for y in _causes(x) if isinstance(y, socket.gaierror)), "")
            return f"cannot resolve the host name {host}".rstrip() + (f" ({why})" if why else "")
    proxy = any(isinstance(x, requests.exceptions.ProxyError) for x in _causes(e))
    text = str(e)
    if isinstance(e, requests.exceptions.ChunkedEncodingError) or "IncompleteRead" in text:
        return "connection broke before the body was complete"
    if isinstance(e, requests.Timeout) or "timed out" in text:
        return "timed out"
    m = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", text)
    if m:
        return f"cannot connect{' to the proxy' if proxy else ''}: {m.group(1).strip()}"
    if "NameResolution" in text or "getaddrinfo" in text:
        return "cannot resolve the host name"
    return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}"


def _http_download(url: str, part: Path, h: Hashes, ref: FileRef, opts: Options, prog: _Progress) -> None:
    """GET with resume and retries (exponential backoff; progress resets the count)."""
    import requests

    failures = 0
    best = part.stat().st_size if part.exists() else 0  # the furthest the partial ever got
    with requests.Session() as session:
        session.headers["User-Agent"] = "zoo-fetch (+requests)"
        while True:
            try:
                _http_once(session, url, part, h, ref, opts, prog)
                return
            except _Retry as e:
                after = part.stat().st_size if part.exists() else 0
                if after > best:
                    best = after
                    failures = 0  # new bytes arrived: keep resuming
                failures += 1
                if failures > opts.retries:
                    raise FetchError(f"{url}: {e} (gave up after {opts.retries} retries)") from None
                wait = e.wait if e.wait is not None else opts.backoff * (2 ** (failures - 1))
                prog.note(f"zoo: {url}: {e}; retry {failures}/{opts.retries} in {wait:.1f}s")
                time.sleep(wait)


def _file_download(url: str, part: Path, h: Hashes, ref: FileRef, prog: _Progress) -> None:
    """Copy a ``file://`` URL into the partial (from zero), hashing as it goes."""
    src = Path(unquote(urlsplit(url).path))
    part.unlink(missing_ok=True)
    h.reset()
    try:
        f = open(src, "rb")
    except OSError as e:
        raise FetchError(f"{url}: cannot read {src}: {e.strerror}") from e
    with f:
        prog.start(os.fstat(f.fileno()).st_size, 0)
        _write_stream(
            iter(lambda: f.read(1 << 20), b""), part, h, prog, url=url, sniff_html=False, limit=None
        )


# ---------------------------------------------------------------------------------------------
# the cache side


def _stat_record(st: os.stat_result) -> dict[str, int]:
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ino": st.st_ino}


def _settle(blob: Path) -> dict[str, int] | None:
    """The blob's stat to record in its ref right after its bytes were verified, or None when the
    stat could not prove it unchanged later. A fresh mtime is moved RACY_NS into the past first: a
    write in the same clock tick would otherwise leave size, mtime and inode as recorded."""
    st = blob.stat()
    now = time.time_ns()
    if now - st.st_mtime_ns < RACY_NS:
        past = (now - RACY_NS) // 1_000_000_000 * 1_000_000_000
        try:
            os.utime(blob, ns=(st.st_atime_ns, past))
        except OSError:
            return None  # not ours to touch: it is re-hashed at its next use
        st = blob.stat()
    return _stat_record(st)


def _intact(
    card: ModelCard, ref: FileRef, rec: dict[str, Any], blob: Path, opts: Options
) -> dict[str, Any] | None:
    """Is the cached blob of ``rec`` still the bytes its name says? Re-hashed when its size, mtime
    or inode differ from those recorded at its last verification (always with ``opts.verify``).
    Returns the ref (updated after a re-hash). Damaged: offline, ChecksumError naming it; online,
    the blob is removed and None returned (the caller downloads it again)."""
    try:
        st = blob.stat()
    except FileNotFoundError:
        return None
    if not opts.verify and rec.get("blob_stat") == _stat_record(st):
        return rec
    sha = rec["sha256"]
    actual = cache.sha256_file(blob)
    if actual == sha:
        rec = {**rec, "size": st.st_size, "blob_stat": _settle(blob)}
        cache.write_ref(card.id, file_key(ref), rec, opts.home)
        return rec
    msg = (
        f"{_label(card, ref)}: the cached copy is damaged: {blob} has sha256 {actual}, expected sha256 {sha}"
    )
    if opts.offline:
        raise ChecksumError(
            f"{msg} (offline: not fetched again; pull online, or run 'zoo cache verify --repair')"
        )
    try:  # drop it, unless another process replaced it meanwhile
        if _stat_record(blob.stat()) == _stat_record(st):
            blob.unlink()
    except FileNotFoundError:
        pass
    _notice(f"zoo: {msg}; fetching it again")
    return None


def _cached(card: ModelCard, ref: FileRef, opts: Options) -> Path | None:
    """The named view of a cached, pinned-consistent, intact copy, or None."""
    key = file_key(ref)
    rec = cache.read_ref(card.id, key, opts.home)
    if not rec or not rec.get("sha256"):
        return None
    sha = rec["sha256"]
    blob = cache.blob_path(sha, opts.home)
    pin = cache.read_pin(card.id, key, opts.home)
    if pin is not None and pin != sha:
        return None
    rec = _intact(card, ref, rec, blob, opts)
    if rec is None:
        return None
    if not ref.member and not ref.hf and ref.checksum.published:
        # The card may have changed since: the cached blob must satisfy today's published checksum.
        ck = rec.get("checksum") or {}
        if (ck.get("algo"), ck.get("value")) != (ref.checksum.algo, ref.checksum.value):
            if not checksum_matches(ref.checksum, _rehash(blob, ref.checksum)):
                return None
            cache.write_ref(card.id, key, {**rec, "checksum": ref.checksum.to_dict()}, opts.home)
    return cache.link_view(card.id, key, sha, opts.home)


def _commit(
    card: ModelCard,
    ref: FileRef,
    tmp: Path,
    sha: str,
    size: int,
    url: str,
    opts: Options,
    checksum: dict[str, Any] | None,
    readonly: bool = True,
) -> Path:
    """Rename the verified temp file into blobs/ (always: a damaged blob of that name is replaced),
    pin (first use), write the ref with the blob's stat, link the view."""
    key = file_key(ref)
    blob = cache.blob_path(sha, opts.home)
    blob.parent.mkdir(parents=True, exist_ok=True)
    if readonly:
        os.chmod(tmp, 0o444)
    os.replace(tmp, blob)
    stat = _settle(blob)
    if cache.read_pin(card.id, key, opts.home) is None:
        cache.write_pin(card.id, key, sha, opts.home)
    cache.write_ref(
        card.id,
        key,
        {"sha256": sha, "size": size, "url": url, "checksum": checksum, "blob_stat": stat},
        opts.home,
    )
    return cache.link_view(card.id, key, sha, opts.home)


def _check_pin(card: ModelCard, ref: FileRef, sha: str, url: str, opts: Options) -> None:
    pin = cache.read_pin(card.id, file_key(ref), opts.home)
    if pin is not None and pin != sha:
        raise ChecksumError(
            f"{_label(card, ref)}: the bytes from {url} changed since they were pinned: "
            f"expected sha256 {pin}, got sha256 {sha} (pin: "
            f"{cache.pin_path(card.id, file_key(ref), opts.home)})"
        )


def _verify(card: ModelCard, ref: FileRef, h: Hashes, size: int, url: str, opts: Options) -> None:
    """Size, published checksum and pin; ChecksumError shows expected and actual."""
    if ref.size is not None and size != ref.size:
        raise _SizeMismatch(f"{url}: got {size} bytes, the card says {ref.size}")
    ck = ref.checksum
    if not checksum_matches(ck, h):
        raise ChecksumError(
            f"{_label(card, ref)}: checksum mismatch for {url}: expected {ck.algo} "
            f"{ck.value}, got {ck.algo} {h.digest_for(ck.algo)}"
        )
    _check_pin(card, ref, h.sha256.hexdigest(), url, opts)


class _SizeMismatch(FetchError):
    pass


def _download_verified(card: ModelCard, ref: FileRef, opts: Options) -> Path:
    """Under the lock: try each source, resume, verify, retry once from zero on a mismatch."""
    key = identity_key(ref)
    pdir = opts.home / "partial"
    pdir.mkdir(parents=True, exist_ok=True)
    part = pdir / f"{key}.part"
    urls = candidate_urls(ref, opts.mirrors)
    if not urls:
        raise FetchError(f"{_label(card, ref)}: the card gives no URL")
    try:
        return _download_sources(card, ref, opts, part, urls)
    finally:
        if not part.exists():  # committed or dropped: its validator goes with it
            _validator_path(part).unlink(missing_ok=True)


def _download_sources(card: ModelCard, ref: FileRef, opts: Options, part: Path, urls: list[str]) -> Path:
    errors: list[FetchError] = []
    with _Progress(opts.progress, ref.name, opts.progress_interval) as prog:
        for url in urls:
            for attempt in (1, 2):
                h = _new_hashes(ref.checksum)
                try:
                    if url.startswith("file://"):
                        _file_download(url, part, h, ref, prog)
                    elif url.startswith(("http://", "https://")):
                        _http_download(url, part, h, ref, opts, prog)
                    else:
                        raise FetchError(f"{url}: unsupported URL scheme")
                    size = part.stat().st_size
                    _verify(card, ref, h, size, url, opts)
                except (ChecksumError, _SizeMismatch) as e:
                    # Bad bytes never enter the cache: drop them, try once more from zero.
                    part.unlink(missing_ok=True)
                    log.info("%s; retrying from zero", e)
                    if attempt == 2:
                        errors.append(e)
                    continue
                except DiskFullError:
                    part.unlink(missing_ok=True)
                    raise
                except FetchError as e:
                    if isinstance(e, _BadSource) or not part.exists() or part.stat().st_size == 0:
                        part.unlink(missing_ok=True)
                    errors.append(e)
                    break
                sha = h.sha256.hexdigest()
                ck = ref.checksum.to_dict() if ref.checksum.published else None
                try:
                    return _commit(card, ref, part, sha, size, url, opts, ck)
                except OSError as e:
                    if _disk_full(e):
                        part.unlink(missing_ok=True)
                        raise DiskFullError(
                            f"disk full while caching {_label(card, ref)}: {e.strerror}"
                        ) from e
                    raise
    _raise_all(card, ref, errors)


def _raise_all(card: ModelCard, ref: FileRef, errors: list[FetchError]) -> Any:
    if len(errors) == 1:
        raise errors[0]
    msg = f"{_label(card, ref)}: every source failed: " + "; ".join(str(e) for e in errors)
    if any(isinstance(e, ChecksumError) and not isinstance(e, _SizeMismatch) for e in errors):
        raise ChecksumError(msg)
    raise FetchError(msg)


def _no_checksum_policy(card: ModelCard, ref: FileRef, opts: Options) -> None:
    if ref.checksum.published:
        return
    if opts.require_checksum:
        raise ChecksumError(
            f"{_label(card, ref)}: its publisher gave no checksum and --require-checksum is set; refusing it"
        )
    if cache.read_pin(card.id, file_key(ref), opts.home) is None:
        log.warning(
            "%s: no published checksum; its sha256 is recorded on this first download and pinned from now on",
            _label(card, ref),
        )


# ---------------------------------------------------------------------------------------------
# archive members


def _safe_member(member: str) -> str:
    m = member.replace("\\", "/")
    p = PurePosixPath(m)
    if m.startswith("/") or re.match(r"^[A-Za-z]:", m) or ".." in p.parts:
        raise FetchError(f"refusing archive member {member!r}: absolute path or '..'")
    return m


def _open_member(archive: Path, member: str) -> tuple[IO[bytes], Callable[[], None]]:
    """An open stream of one regular member of a zip or tar archive (and a close function)."""
    want = _safe_member(member)
    if zipfile.is_zipfile(archive):
        zf = zipfile.ZipFile(archive)
        for info in zf.infolist():
            name = info.filename.replace("\\", "/")
            if name == want or name.removeprefix("./") == want.removeprefix("./"):
                _safe_member(info.filename)
                if info.is_dir():
                    break
                return zf.open(info), zf.close
        zf.close()
    elif tarfile.is_tarfile(archive):
        tf = tarfile.open(archive)
        for ti in tf:
            if ti.name == want or ti.name.removeprefix("./") == want.removeprefix("./"):
                _safe_member(ti.name)
                if not ti.isfile():
                    tf.close()
                    raise FetchError(
                        f"refusing archive member {member!r}: not a regular file (link or device)"
                    )
                fobj = tf.extractfile(ti)
                assert fobj is not None
                return fobj, tf.close
        tf.close()
    else:
        raise FetchError(f"{archive.name} is neither a zip nor a tar archive")
    raise FetchError(f"archive has no member {member!r}")


def _fetch_member(card: ModelCard, ref: FileRef, opts: Options) -> Path:
    assert ref.member is not None
    _safe_member(ref.member)
    hit = _cached(card, ref, opts)
    if hit is not None:
        return hit
    if opts.offline:
        raise OfflineError(f"offline and {_label(card, ref)} is not cached")
    archive_ref = replace(ref, member=None, role="archive")
    archive = fetch_file(card, archive_ref, _opts=opts)
    with _file_lock(opts, identity_key(ref) + "-member"):
        hit = _cached(card, ref, opts)
        if hit is not None:
            return hit
        stream, close = _open_member(Path(os.path.realpath(archive)), ref.member)
        bdir = cache.blob_path("x", opts.home).parent
        bdir.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", dir=bdir)
        os.close(fd)
        tmp = Path(tmp_name)
        h = Hashes(None)
        try:
            try:
                _write_stream(
                    iter(lambda: stream.read(1 << 20), b""),
                    tmp,
                    h,
                    _Progress(False, ""),
                    sniff_html=False,
                    url=f"{archive_ref.name}:{ref.member}",
                    limit=None,
                )
            finally:
                close()
            sha = h.sha256.hexdigest()
            _check_pin(card, ref, sha, f"{archive_ref.name}!{ref.member}", opts)
            rec = cache.read_ref(card.id, archive_ref.name, opts.home) or {}
            return _commit(
                card,
                ref,
                tmp,
                sha,
                h.n,
                f"{rec.get('url')}!{ref.member}",
                opts,
                {
                    "algo": "sha256",
                    "value": sha,
                    "source": f"extracted from the verified archive {archive_ref.name} ({rec.get('sha256')})",
                },
            )
        finally:
            tmp.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# Hugging Face hub


def _hf_cache_dir() -> str | None:
    """HF's cache folder as the environment says now (huggingface_hub reads it at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.path.expanduser(os.environ["HF_HOME"]), "hub")
    return None


def _fetch_hf(card: ModelCard, ref: FileRef, opts: Options) -> Path:
    assert ref.hf is not None
    repo_id, filename = ref.hf["repo_id"], ref.hf["filename"]
    revision = ref.hf.get("revision") or "main"
    where = f"{repo_id}/{filename}@{revision}"
    if opts.offline:
        hit = _cached(card, ref, opts)
        if hit is not None:
            return hit
        raise OfflineError(f"offline and {_label(card, ref)} is not cached")
    _no_checksum_policy(card, ref, opts)
    import huggingface_hub

    endpoint = os.environ.get("HF_ENDPOINT") or None
    url = huggingface_hub.hf_hub_url(repo_id, filename, revision=revision, endpoint=endpoint)
    kw: dict[str, Any] = {}
    if opts.progress != "bar":
        from huggingface_hub.utils.tqdm import tqdm as hf_tqdm

        class _Quiet(hf_tqdm):  # type: ignore[misc, valid-type]
            def __init__(self, *a: Any, **k: Any) -> None:
                k["disable"] = True
                super().__init__(*a, **k)

        kw["tqdm_class"] = _Quiet
    with _file_lock(opts, identity_key(ref)):
        for attempt in (1, 2):
            try:
                local = huggingface_hub.hf_hub_download(
                    repo_id,
                    filename,
                    revision=revision,
                    endpoint=endpoint,
                    cache_dir=_hf_cache_dir(),
                    force_download=attempt == 2,
                    **kw,
                )
            except Exception as e:  # the hub client raises many types (httpx, HfHubHTTPError, OSError)
                if isinstance(e, OSError) and _disk_full(e):
                    raise DiskFullError(f"disk full while downloading {where}: {e.strerror}") from e
                err = FetchError(
                    f"{where} from {endpoint or 'huggingface.co'}: "
                    f"{(str(e).splitlines() or [type(e).__name__])[0]}"
                )
                hit = _cached(card, ref, opts)
                if hit is None:
                    raise err from e
                log.warning("%s; using the cached pinned copy", err)
                return hit
            real = Path(os.path.realpath(local))
            etag = real.name  # HF names blobs by ETag: the file's sha256 for LFS files
            pin = cache.read_pin(card.id, file_key(ref), opts.home)
            rec = cache.read_ref(card.id, file_key(ref), opts.home)
            if pin is not None and etag == pin and rec and rec.get("sha256") == pin:
                hit = _cached(card, ref, opts)  # re-hashed if its stat changed; None if damaged
                if hit is not None:
                    return hit
            h = _rehash(real, ref.checksum)
            sha = h.sha256.hexdigest()
            if not re.fullmatch(r"[0-9a-f]{64}", etag) or etag == sha:
                break
            if attempt == 1:  # the hub client's cached copy went bad (our blob may be its hard link)
                _notice(
                    f"zoo: {where}: the hub cache's copy {real} has sha256 {sha}, its ETag says "
                    f"{etag}; downloading it again"
                )
                continue
            raise ChecksumError(
                f"{_label(card, ref)}: {where}: the hub's ETag says sha256 {etag}, "
                f"the downloaded file has sha256 {sha}"
            )
        if ref.size is not None and h.n != ref.size:
            raise FetchError(f"{where}: got {h.n} bytes, the card says {ref.size}")
        if not checksum_matches(ref.checksum, h):
            raise ChecksumError(
                f"{_label(card, ref)}: checksum mismatch for {where}: expected "
                f"{ref.checksum.algo} {ref.checksum.value}, got {ref.checksum.algo} "
                f"{h.digest_for(ref.checksum.algo)}"
            )
        _check_pin(card, ref, sha, url, opts)
        bdir = cache.blob_path(sha, opts.home).parent
        bdir.mkdir(parents=True, exist_ok=True)
        tmp = bdir / f".tmp-{os.getpid()}-{time.monotonic_ns()}"
        try:
            try:
                os.link(real, tmp)
            except OSError:
                shutil.copyfile(real, tmp)
            ck = (
                ref.checksum.to_dict()
                if ref.checksum.published
                else {"algo": "sha256", "value": etag, "source": "hub ETag"}
                if len(etag) == 64
                else None
            )
            return _commit(card, ref, tmp, sha, h.n, url, opts, ck, readonly=False)
        except OSError as e:
            if _disk_full(e):
                raise DiskFullError(f"disk full while caching {where}: {e.strerror}") from e
            raise
        finally:
            tmp.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# public API


def fetch_file(
    card: ModelCard,
    ref: FileRef,
    *,
    mirrors: Sequence[str] | None = None,
    offline: bool | None = None,
    require_checksum: bool = False,
    progress: bool | None = None,
    home: Path | None = None,
    retries: int | None = None,
    backoff: float | None = None,
    timeout: float | None = None,
    verify: bool = False,
    _opts: Options | None = None,
) -> Path:
    """Return the local path of one verified file of ``card`` (downloading it if needed).

    The path is ``$ZOO_HOME/files/<id>/<file>``, a symlink to the content-addressed blob; for an
    archive member, the extracted member. A cached blob is re-hashed when its size, mtime or inode
    changed since it was last verified, or always with ``verify``; a damaged one is downloaded
    again (offline: ChecksumError). Raises FetchError (and its subclasses ChecksumError,
    OfflineError, DiskFullError) with a one-line message.
    """
    opts = _opts or Options.resolve(
        mirrors=mirrors,
        offline=offline,
        require_checksum=require_checksum,
        progress=progress,
        home=home,
        retries=retries,
        backoff=backoff,
        timeout=timeout,
        verify=verify,
    )
    try:
        return _fetch_file(card, ref, opts)
    except OSError as e:  # the cache itself could not be written: one line, the right type
        if _disk_full(e):
            raise DiskFullError(f"disk full while caching {_label(card, ref)}: {e.strerror}") from e
        raise FetchError(
            f"{_label(card, ref)}: cannot use the cache at {opts.home}: "
            f"{e.strerror or e}" + (f" ({e.filename})" if e.filename else "")
        ) from e


def _fetch_file(card: ModelCard, ref: FileRef, opts: Options) -> Path:
    if ref.hf:
        return _fetch_hf(card, ref, opts)
    if ref.member:
        return _fetch_member(card, ref, opts)
    _no_checksum_policy(card, ref, opts)
    hit = _cached(card, ref, opts)
    if hit is not None:
        return hit
    if opts.offline:
        raise OfflineError(f"offline and {_label(card, ref)} is not cached")
    with _file_lock(opts, identity_key(ref)):
        hit = _cached(card, ref, opts)  # another process may have finished it meanwhile
        if hit is not None:
            return hit
        return _download_verified(card, ref, opts)


def _copy_atomic(src: Path, dest: Path) -> Path:
    """Copy ``src`` to ``dest`` through a temporary file in dest's folder and a rename."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        if _disk_full(e):
            raise DiskFullError(f"disk full while copying to {dest}: {e.strerror}") from e
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


def pull(card: ModelCard, file_name: str | None = None, dest: Path | None = None, **kw: Any) -> list[Path]:
    """Fetch every file of ``card`` (or only ``file_name``); copy into ``dest`` when given.

    Returns the cache paths, or the copies in ``dest`` (named after the file, or the member's
    base name). Keyword arguments are those of ``fetch_file``.
    """
    refs = list(card.files) if file_name is None else [card.file(file_name)]
    opts = Options.resolve(**{k: v for k, v in kw.items() if k != "_opts"})
    out: list[Path] = []
    for ref in refs:
        path = fetch_file(card, ref, _opts=opts)
        if dest is not None:
            name = PurePosixPath(ref.member).name if ref.member else ref.name
            path = _copy_atomic(Path(os.path.realpath(path)), Path(dest) / name)
        out.append(path)
    return out
