"""The ``zoo serve`` Starlette app: the registry's search API and a caching mirror of the cache.

Routes (docs/serve.md):

- ``GET /api/models?q=...&source=...`` the rows ``zoo search --json`` prints, the total before the
  limit in ``X-Total-Count``; ``GET /api/models/<id>`` the card (``zoo info --json``);
  ``GET /api/health``.
- ``GET|HEAD /files/<id>/<file>`` and ``GET|HEAD /<original host>/<original path>`` (the layout
  ``ZOO_MIRROR`` asks for, ``zoo.fetch.mirror_url``): a cached blob of this server's ``$ZOO_HOME``,
  with Range (single, suffix, several: multipart/byteranges), ``ETag`` = the blob's sha256
  (quoted), ``If-None-Match`` (304) and ``If-Range``. A miss is pulled through ``zoo.fetch`` (the
  verified fetcher, into this server's cache) when upstream is allowed, once however many
  requests wait for it; otherwise it is a 404.
- ``GET|HEAD /<org>/<name>/resolve/<revision>/<file>``: the Hugging Face ``resolve`` route for the
  hub files cards list (``HF_ENDPOINT`` clients), the same blobs with the hub's headers.

Only blobs are served: a request names a card and one of its files (or one of their URLs), never
a path; the file served is the real path of the cached view, refused unless it is a regular file
directly in ``<home>/blobs/sha256``. Requests with ``..``, ``.`` or empty path segments, encoded
slashes or backslashes get 400; bodies 413; long paths or queries 414. One access-log line per
request on the ``zoo.serve.access`` logger.

Page routes (the web page) go in :data:`PAGE_ROUTES` (or ``create_app(page_routes=...)``): they
are tried after the API and file routes and before the mirror layout's catch-all.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import stat
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from zoo import api, fetch
from zoo.cards import FileRef, ModelCard
from zoo.cli._app import Count
from zoo.cli.search import json_rows
from zoo.errors import ChecksumError, OfflineError, UnknownModelError, ZooError
from zoo.paths import zoo_home

log = logging.getLogger("zoo.serve")
access_log = logging.getLogger("zoo.serve.access")

MAX_QUERY = 2048  # bytes of query string
MAX_PATH = 4096  # bytes of request path
MAX_CONCURRENCY = 64  # requests handled at once (more wait)
MAX_FETCHES = 4  # upstream pulls at once (different files; one file is pulled once)
SEARCH_LIMIT = 50  # as `zoo search`; limit=0 for every match

# Routes of the web page (Jinja2 templates, another module): create_app puts them after the API
# and file routes and before the mirror catch-all. A route for "/" replaces the placeholder.
PAGE_ROUTES: list[BaseRoute] = []

_SHA256 = re.compile(r"[0-9a-f]{64}")
_SEARCH_TYPES: dict[str, Any] = {
    "source": str,
    "framework": str,
    "origin": str,
    "task": str,
    "dataset": str,
    "license": str,
    "tag": str,
    "sort": str,
    "min_top1": float,
    "max_gflops": float,
    "max_params": Count(),
    "input_size": int,
    "limit": int,
}


def search_args(params: Any) -> tuple[str | None, dict[str, Any]]:
    """``(text, keyword arguments of zoo.api.search)`` from query parameters (the options of
    ``zoo search``, ``-`` or ``_``; ``q`` the query words, repeatable). ValueError names a bad one."""
    words: list[str] = []
    kw: dict[str, Any] = {}
    limit = SEARCH_LIMIT
    items = params.multi_items() if hasattr(params, "multi_items") else list(params.items())
    for raw_key, value in items:
        key = raw_key.replace("-", "_")
        if key == "q":
            words.extend(value.split())
            continue
        typ = _SEARCH_TYPES.get(key)
        if typ is None:
            raise ValueError(f"unknown parameter {raw_key!r} (q, {', '.join(_SEARCH_TYPES)})")
        if key in kw:
            raise ValueError(f"{raw_key!r} given twice")
        try:
            v = typ.convert(value, None, None) if isinstance(typ, Count) else typ(value)
        except Exception as e:  # click's BadParameter from Count, ValueError from float/int
            raise ValueError(f"{raw_key}={value!r}: not a valid {getattr(typ, '__name__', 'count')}") from e
        if key == "limit":
            limit = v
        kw[key] = v
    if limit < 0:
        raise ValueError("limit must be 0 (every match) or more")
    kw["limit"] = limit or None
    return " ".join(words) or None, kw


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _etag_matches(header: str, sha: str) -> bool:
    """Does an If-None-Match value name this blob (weak comparison, as RFC 9110 says)?"""
    if header.strip() == "*":
        return True
    tags = {t.strip().removeprefix("W/") for t in header.split(",")}
    return f'"{sha}"' in tags


class ZooServer:
    """The state behind the routes: the cache, the mirror map, in-flight upstream pulls."""

    def __init__(
        self,
        home: Path | None,
        upstream: bool,
        mirrors: Sequence[str] | None,
        max_fetches: int,
        fetch_kw: Mapping[str, Any] | None,
    ) -> None:
        self.home = Path(home) if home is not None else zoo_home()
        self.upstream = upstream
        self.mirrors = list(mirrors) if mirrors is not None else None
        self.fetch_kw = dict(fetch_kw or {})
        self.blob_root = Path(os.path.realpath(self.home)) / "blobs" / "sha256"
        self.fetches = 0  # upstream pulls started (each may find the file cached meanwhile)
        self._fetch_sem = asyncio.Semaphore(max_fetches)
        self._inflight: dict[tuple[str, str], asyncio.Future[Any]] = {}
        self._map_lock = threading.Lock()
        self._map_stamp: str | None = None
        self._by_url: dict[str, list[tuple[ModelCard, FileRef]]] = {}
        self._by_hf: dict[tuple[str, str], list[tuple[ModelCard, FileRef]]] = {}

    # -- the registry

    def mirror_entries(self, key: str) -> list[tuple[ModelCard, FileRef]]:
        """The (card, file) pairs whose URL is ``<host>/<path>[?query]`` (rebuilt when the
        registry or the catalogue changed)."""
        self._refresh_maps()
        return list(self._by_url.get(key, ()))

    def hf_entries(self, repo_id: str, filename: str) -> list[tuple[ModelCard, FileRef]]:
        """The (card, file) pairs of Hugging Face file ``repo_id/filename``."""
        self._refresh_maps()
        return list(self._by_hf.get((repo_id, filename), ()))

    def _refresh_maps(self) -> None:
        idx = api.index(self.home)
        stamp = json.dumps(idx.meta, sort_keys=True)
        with self._map_lock:
            if stamp != self._map_stamp:
                from zoo.registry import SearchQuery

                by_url: dict[str, list[tuple[ModelCard, FileRef]]] = {}
                by_hf: dict[tuple[str, str], list[tuple[ModelCard, FileRef]]] = {}
                for card in idx.search(SearchQuery()):
                    for ref in card.files:
                        if ref.hf:  # hub files: the resolve route, not the mirror layout
                            by_hf.setdefault((ref.hf["repo_id"], ref.hf["filename"]), []).append((card, ref))
                            continue
                        whole = replace(ref, member=None, role="archive") if ref.member else ref
                        for url in ref.urls:
                            if url.startswith(("http://", "https://")):
                                k = fetch.mirror_url("", url).lstrip("/")
                                pairs = by_url.setdefault(k, [])
                                if not any(c.id == card.id and r.name == whole.name for c, r in pairs):
                                    pairs.append((card, whole))
                self._by_url, self._by_hf, self._map_stamp = by_url, by_hf, stamp

    # -- the cache

    def _blob(self, view: Path) -> tuple[Path, os.stat_result] | None:
        """The blob behind a cached view, only when it is a regular file in blobs/sha256."""
        real = Path(os.path.realpath(view))
        if real.parent != self.blob_root or not _SHA256.fullmatch(real.name):
            log.warning("zoo serve: refusing %s: resolves to %s, outside %s", view, real, self.blob_root)
            return None
        try:
            st = os.stat(real, follow_symlinks=False)
        except OSError:
            return None
        return (real, st) if stat.S_ISREG(st.st_mode) else None

    def local(self, card: ModelCard, ref: FileRef) -> tuple[Path, os.stat_result] | None:
        """The verified cached blob of one file, or None (not cached, or damaged)."""
        try:
            view = fetch.fetch_file(card, ref, home=self.home, offline=True, progress=False)
        except OfflineError:
            return None
        except ChecksumError as e:  # damaged: a miss (pulled again when upstream is allowed)
            log.warning("zoo serve: %s", e)
            return None
        return self._blob(view)

    def pull(self, card: ModelCard, ref: FileRef) -> tuple[Path, os.stat_result] | None:
        """Fetch one file into this server's cache through zoo.fetch (verified), then its blob."""
        self.fetches += 1
        kw = {"mirrors": self.mirrors, **self.fetch_kw}
        view = fetch.fetch_file(card, ref, home=self.home, offline=False, progress=False, **kw)
        return self._blob(view)

    async def pull_once(self, card: ModelCard, ref: FileRef) -> tuple[Path, os.stat_result] | None:
        """``pull`` in a worker thread, shared by every request for the same file meanwhile."""
        key = (card.id, fetch.file_key(ref))
        fut = self._inflight.get(key)
        if fut is None:

            async def run() -> tuple[Path, os.stat_result] | None:
                async with self._fetch_sem:
                    return await run_in_threadpool(self.pull, card, ref)

            fut = asyncio.ensure_future(run())
            self._inflight[key] = fut

            def done(f: asyncio.Future[Any]) -> None:
                if self._inflight.get(key) is f:
                    del self._inflight[key]
                if not f.cancelled():
                    f.exception()  # retrieved, even when every waiting request went away

            fut.add_done_callback(done)
        # shield: a client hanging up does not cancel the pull the others wait for
        return await asyncio.shield(fut)

    # -- responses

    async def serve(
        self,
        request: Request,
        card: ModelCard,
        ref: FileRef,
        extra: Callable[[str, int], dict[str, str]] | None = None,
    ) -> Response:
        """The cached blob of ``ref`` (pulled on a miss when upstream is allowed), with Range,
        ETag = sha256, If-None-Match and If-Range; ``extra(sha, size)`` adds headers."""
        hit = await run_in_threadpool(self.local, card, ref)
        if hit is None:
            if not self.upstream:
                return PlainTextResponse(f"{card.id}/{fetch.file_key(ref)} is not cached here\n", 404)
            try:
                hit = await self.pull_once(card, ref)
            except ZooError as e:
                log.warning("zoo serve: upstream: %s", e)
                return PlainTextResponse(f"upstream: {str(e).splitlines()[0]}\n", 502)
            if hit is None:
                return PlainTextResponse("not found\n", 404)
        real, st = hit
        sha = real.name
        headers = {"etag": f'"{sha}"', "x-zoo-sha256": sha, **(extra(sha, st.st_size) if extra else {})}
        inm = request.headers.get("if-none-match")
        if inm is not None and _etag_matches(inm, sha):
            return Response(status_code=304, headers=headers)
        # FileResponse keeps our ETag (it only sets one when absent) and compares If-Range with it
        return FileResponse(real, headers=headers, media_type="application/octet-stream", stat_result=st)


def _mirror_key(request: Request) -> str:
    """``<host>/<path>[?query]`` of a mirror-layout request, as sent."""
    raw = request.scope.get("raw_path") or request.scope["path"].encode()
    key = raw.decode("latin-1").lstrip("/")
    qs = request.scope.get("query_string", b"")
    return key + "?" + qs.decode("latin-1") if qs else key


def hf_commit(repo_id: str, revision: str) -> str:
    """The ``X-Repo-Commit`` of a hub file served here: the card's revision when it is a commit
    hash; otherwise a stable 40-hex id made from the repo and revision (zoo does not learn the
    hub's commit for a branch name; huggingface_hub only uses it to name its snapshot folder)."""
    if re.fullmatch(r"[0-9a-f]{40}", revision):
        return revision
    return hashlib.sha1(f"zoo:{repo_id}@{revision}".encode(), usedforsecurity=False).hexdigest()


def _file_of(card: ModelCard, filename: str) -> FileRef | None:
    """The card's file whose cache name is ``filename`` (an archive by its own name), or None."""
    for ref in card.files:
        if fetch.file_key(ref) == filename:
            return ref
    for ref in card.files:
        if ref.member and ref.name == filename:
            return replace(ref, member=None, role="archive")
    return None


def _api_routes(srv: ZooServer) -> list[BaseRoute]:
    async def health(request: Request) -> Response:
        def count() -> int:
            return len(api.index(srv.home))

        return JSONResponse(
            {"status": "ok", "models": await run_in_threadpool(count), "upstream": srv.upstream}
        )

    async def models(request: Request) -> Response:
        try:
            text, kw = search_args(request.query_params)
        except ValueError as e:
            return _error(400, str(e))

        def run() -> tuple[list[dict[str, Any]], int]:
            cards = api.search(text, home=srv.home, **kw)
            return json_rows(cards), cards.total

        try:
            rows, total = await run_in_threadpool(run)
        except ZooError as e:  # an unknown --source value, a bad sort key
            return _error(400, str(e))
        return JSONResponse(rows, headers={"X-Total-Count": str(total)})

    async def model(request: Request) -> Response:
        model_id = request.path_params["model_id"]
        try:
            card = await run_in_threadpool(api.info, model_id, home=srv.home)
        except UnknownModelError as e:
            return _error(404, str(e))
        except ZooError as e:
            return _error(400, str(e))
        return JSONResponse(card.to_dict())

    return [
        Route("/api/health", health, methods=["GET"]),
        Route("/api/models", models, methods=["GET"]),
        Route("/api/models/{model_id:path}", model, methods=["GET"]),
    ]


def _file_routes(srv: ZooServer) -> tuple[list[BaseRoute], list[BaseRoute]]:
    """The /files/ route and the mirror layout's catch-all (to go last)."""

    async def by_card(request: Request) -> Response:
        p = request.path_params
        model_id = f"{p['family']}/{p['name']}"
        try:
            card = await run_in_threadpool(api.info, model_id, home=srv.home)
        except ZooError:
            return PlainTextResponse(f"unknown model {model_id!r}\n", 404)
        ref = _file_of(card, p["filename"])
        if ref is None:
            return PlainTextResponse(f"{model_id} has no file {p['filename']!r}\n", 404)
        return await srv.serve(request, card, ref)

    async def by_url(request: Request) -> Response:
        pairs = await run_in_threadpool(srv.mirror_entries, _mirror_key(request))
        if not pairs:
            return PlainTextResponse("no model file has this URL\n", 404)
        for card, ref in pairs:  # one cached already wins; else the first card's
            if await run_in_threadpool(srv.local, card, ref) is not None:
                return await srv.serve(request, card, ref)
        return await srv.serve(request, *pairs[0])

    async def hf_resolve(request: Request) -> Response:
        p = request.path_params
        repo_id, rev, filename = f"{p['org']}/{p['name']}", p["rev"], p["filename"]
        pairs = await run_in_threadpool(srv.hf_entries, repo_id, filename)
        if not pairs:
            if await run_in_threadpool(srv.mirror_entries, _mirror_key(request)):
                return await by_url(request)  # a mirror-layout URL that looks like a resolve path
            return PlainTextResponse(
                f"no model file is {repo_id}/{filename}\n", 404, headers={"x-error-code": "EntryNotFound"}
            )
        revs = {(r.hf or {}).get("revision") or "main" for _, r in pairs}
        if rev not in revs and rev != "main":
            return PlainTextResponse(
                f"{repo_id}: revision {rev!r} is not on a card here\n",
                404,
                headers={"x-error-code": "RevisionNotFound"},
            )
        card, ref = next(
            ((c, r) for c, r in pairs if ((r.hf or {}).get("revision") or "main") == rev), pairs[0]
        )
        card_rev = (ref.hf or {}).get("revision") or "main"

        def hub_headers(sha: str, size: int) -> dict[str, str]:
            return {
                "x-repo-commit": hf_commit(repo_id, card_rev),
                "x-linked-etag": f'"{sha}"',
                "x-linked-size": str(size),
            }

        return await srv.serve(request, card, ref, extra=hub_headers)

    first = [
        Route("/files/{family}/{name}/{filename}", by_card, methods=["GET"]),
        Route("/{org}/{name}/resolve/{rev}/{filename:path}", hf_resolve, methods=["GET"]),
    ]
    last = [Route("/{host}/{rest:path}", by_url, methods=["GET"])]
    return first, last


async def _placeholder(request: Request) -> Response:
    return PlainTextResponse("zoo registry server: /api/models, /api/models/<id>, /api/health, /files/\n")


class Guard:
    """ASGI middleware: request limits, path checks, bounded concurrency and the access log."""

    def __init__(
        self,
        app: ASGIApp,
        max_concurrency: int = MAX_CONCURRENCY,
        max_query: int = MAX_QUERY,
        max_path: int = MAX_PATH,
    ) -> None:
        self.app = app
        self.sem = asyncio.Semaphore(max_concurrency)
        self.max_query, self.max_path = max_query, max_path

    def problem(self, scope: Scope) -> tuple[int, str] | None:
        """Why a request is refused before routing (status, reason), or None."""
        if scope["method"] not in ("GET", "HEAD"):
            return 405, "only GET and HEAD"
        headers = dict(scope.get("headers") or [])
        if headers.get(b"content-length", b"0").strip() not in (b"0", b"") or b"transfer-encoding" in headers:
            return 413, "no request body is accepted"
        raw: bytes = scope.get("raw_path") or scope["path"].encode()
        if len(raw) > self.max_path:
            return 414, "path too long"
        if len(scope.get("query_string", b"")) > self.max_query:
            return 414, "query too long"
        low = raw.lower()
        if any(bad in low for bad in (b"%2f", b"%5c", b"\\", b"%00", b"\x00")):
            return 400, "encoded slashes, backslashes and NUL are refused"
        path: str = scope["path"]
        if not path.startswith("/") or "\\" in path or "\x00" in path:
            return 400, "bad path"
        segs = path.split("/")[1:]
        if any(s in ("..", ".") for s in segs) or any(s == "" for s in segs[:-1]):
            return 400, "'..', '.' and empty path segments are refused"
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        status, sent = 0, 0

        async def send_counted(msg: Message) -> None:
            nonlocal status, sent
            if msg["type"] == "http.response.start":
                status = msg["status"]
            elif msg["type"] == "http.response.body":
                sent += len(msg.get("body", b""))
            await send(msg)

        try:
            why = self.problem(scope)
            if why is not None:
                hdr = {"Allow": "GET, HEAD"} if why[0] == 405 else None
                await PlainTextResponse(why[1] + "\n", why[0], headers=hdr)(scope, receive, send_counted)
            else:
                async with self.sem:
                    await self.app(scope, receive, send_counted)
        finally:
            client = scope.get("client") or ("-", 0)
            target = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
            if scope.get("query_string"):
                target += "?" + scope["query_string"].decode("latin-1")
            target = "".join(c if c.isprintable() else "?" for c in target[:512])
            access_log.info(
                '%s "%s %s HTTP/%s" %d %d %.1fms',
                client[0],
                scope["method"],
                target,
                scope.get("http_version", "1.1"),
                status,
                sent,
                (time.perf_counter() - t0) * 1000,
            )


def create_app(
    home: Path | None = None,
    upstream: bool = True,
    *,
    mirrors: Sequence[str] | None = None,
    page_routes: Sequence[BaseRoute] | None = None,
    max_concurrency: int = MAX_CONCURRENCY,
    max_fetches: int = MAX_FETCHES,
    max_query: int = MAX_QUERY,
    fetch_kw: Mapping[str, Any] | None = None,
) -> Starlette:
    """The ASGI app serving the registry and cache of ``home`` (default ``$ZOO_HOME``).

    ``upstream``: pull misses through zoo.fetch (its sources: ``mirrors``, default
    ``$ZOO_MIRROR``, then the cards' URLs; ``fetch_kw``: more fetch_file arguments such as
    retries or timeout); otherwise a miss is a 404. ``page_routes`` (default
    :data:`PAGE_ROUTES`): the web page's routes. ``app.state.zoo`` is the :class:`ZooServer`.
    """
    srv = ZooServer(home, upstream, mirrors, max_fetches, fetch_kw)
    if page_routes is None:
        from zoo.serve.pages import routes as web_page  # the web page (zoo/serve/pages.py)

        page_routes = [*PAGE_ROUTES, *web_page()]
    pages = list(page_routes)
    files_first, files_last = _file_routes(srv)
    routes: list[BaseRoute] = [*_api_routes(srv), *files_first, *pages]
    if not any(getattr(r, "path", None) == "/" for r in pages):
        routes.append(Route("/", _placeholder, methods=["GET"]))
    routes.extend(files_last)
    app = Starlette(routes=routes)
    app.state.zoo = srv
    app.add_middleware(Guard, max_concurrency=max_concurrency, max_query=max_query)
    return app


def build_server(
    app: ASGIApp, *, max_connections: int = 256, log_level: str = "warning", **config: Any
) -> Any:
    """A uvicorn.Server for ``app`` (run it with ``server.run(sockets=[sock])``): no uvicorn
    access log (the app logs each request), 503 past ``max_connections`` connections."""
    import uvicorn

    cfg = uvicorn.Config(
        app,
        log_config=None,
        log_level=log_level,
        access_log=False,
        lifespan="off",
        http="h11",
        limit_concurrency=max_connections,
        timeout_keep_alive=5,
        timeout_graceful_shutdown=5,
        h11_max_incomplete_event_size=16 * 1024,
        **config,
    )
    return uvicorn.Server(cfg)
