"""``zoo mirror push DEST``: write the local cache into the mirror layout that ``ZOO_MIRROR`` reads.

A pull through a mirror asks for ``<mirror>/<original host>/<original path>`` (``zoo.fetch.
mirror_url``), so every cached file is written at the key ``<host>/<path>`` of its card's URL, with
the blob's bytes, into a folder (served by any static HTTP server: nginx, ``python -m
http.server``, a CDN in front) or an S3-compatible bucket (served by its HTTP endpoint, path-style
``http://endpoint/<bucket>/<prefix>``, or by any front on it). docs/mirror.md is the user's page.

- Which URL: the first ``http(s)`` URL of the file in its card that has no query string (a static
  front cannot tell ``/download?id=1`` from ``/download?id=2``); that is the first place a pull
  through the mirror looks. For an archive member the archive itself is pushed: that is what a
  pull downloads (and verifies) before extracting the member. Hugging Face hub files are not
  mirrored this way (``HF_ENDPOINT`` is the hub's mirror mechanism), nor ``file://`` files.
- The content-hash: S3 objects carry user metadata ``sha256=<hex>`` (``x-amz-meta-sha256``; ETags
  of multipart uploads are not content hashes); a folder needs no sidecar, its files are hashed.
- Idempotent: a key already holding the same size and sha256 is skipped (S3: ``head_object``;
  folder: size, then a hash of the file). Every blob written is hashed as it is read (a folder copy)
  or just before the upload (S3): a damaged cache blob is never published (ChecksumError).
- Atomic: a folder file is written to ``.<name>.<random>.zoo-tmp`` beside it, fsynced and renamed;
  an error or an interrupt removes the temporary. An S3 object appears only when its upload
  completes (boto3 aborts a failed multipart upload).

boto3 is imported only for ``s3://`` destinations (the ``s3`` extra).
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from zoo import cache
from zoo.errors import ChecksumError, DiskFullError, ZooError, require
from zoo.paths import zoo_home

__all__ = ["MirrorError", "PushItem", "PushResult", "mirror_key", "plan", "push"]

CHUNK = 1 << 20
MULTIPART_THRESHOLD = 64 * 1024 * 1024  # S3: files this large go up in parts (boto3 TransferConfig)
MIN_PART = 8 * 1024 * 1024  # S3's minimum part is 5 MiB; boto3's default part is 8 MiB
_DISK_FULL = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


class MirrorError(ZooError):
    """A mirror destination that cannot be used: bad DEST, no bucket, no credentials, no endpoint."""


@dataclass
class PushItem:
    """One object of the mirror: ``key`` (``<host>/<path>``, without the destination's prefix)
    holds the blob ``sha256`` of ``size`` bytes; ``label`` is ``<model id>/<file>``."""

    key: str
    sha256: str
    size: int
    blob: Path
    label: str


@dataclass
class PushResult:
    """What ``push`` did: ``uploaded`` and ``skipped`` (already there with the same sha256) items,
    and ``notes``: one line per cached file that cannot be mirrored (hub files, no http(s) URL,
    not in the registry, not cached)."""

    dest: str
    uploaded: list[PushItem] = field(default_factory=list)
    skipped: list[PushItem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def bytes_uploaded(self) -> int:
        return sum(i.size for i in self.uploaded)


def mirror_key(url: str) -> str | None:
    """The key a mirror holds ``url`` at (``<host>/<path>``, percent-decoded as an HTTP server
    or S3 decodes a request path), or None when a static mirror cannot serve it (not http(s), a
    query string, an empty, ``.`` or ``..`` path segment)."""
    u = urlsplit(url)
    if u.scheme not in ("http", "https") or not u.netloc or u.query:
        return None
    parts = unquote(u.path).split("/")[1:]
    if not parts or any(p in ("", ".", "..") for p in parts) or "\\" in u.path or "\0" in u.path:
        return None
    return "/".join([u.netloc, *parts])


def plan(models: Sequence[str] | None = None, home: Path | None = None) -> tuple[list[PushItem], list[str]]:
    """The objects a push writes (one per key, sorted) and the notes on what cannot be pushed.

    ``models``: these ids (UnknownModelError for an unknown one, MirrorError for one with nothing
    cached); default every model with something in the cache."""
    from zoo.registry import Registry

    h = Path(home) if home is not None else zoo_home()
    cached_ids = sorted({e.model_id for e in cache.list_entries(h)})
    reg = Registry.load(home=h)
    notes: list[str] = []
    if models is None:
        ids = cached_ids
    else:
        ids = list(dict.fromkeys(models))
        for model_id in ids:
            reg.get(model_id)  # UnknownModelError with suggestions
            if model_id not in cached_ids:
                raise MirrorError(f"nothing of {model_id} is cached: run 'zoo pull {model_id}' first")
    by_key: dict[str, PushItem] = {}
    for model_id in ids:
        if model_id not in reg:
            notes.append(f"{model_id}: not in the registry or the catalogue (its URLs are unknown); skipped")
            continue
        card = reg.get(model_id)
        for ref in card.files:
            label = f"{model_id}/{ref.name}" + (f" ({ref.member})" if ref.member else "")
            if ref.hf:
                notes.append(f"{label}: a Hugging Face hub file (mirrors do not apply; see HF_ENDPOINT)")
                continue
            # an archive member is pulled by downloading its archive: the archive's ref and URLs
            rec = cache.read_ref(model_id, ref.name, h)
            if not rec or not rec.get("sha256"):
                notes.append(f"{label}: not cached; skipped")
                continue
            key = next((k for k in map(mirror_key, ref.urls) if k), None)
            if key is None:
                notes.append(
                    f"{label}: no http(s) URL without a query string (a static mirror cannot serve it)"
                )
                continue
            sha = str(rec["sha256"])
            pin = cache.read_pin(model_id, ref.name, h)
            if pin is not None and pin != sha:
                notes.append(
                    f"{label}: the cached copy disagrees with its pin (run 'zoo cache verify'); skipped"
                )
                continue
            blob = cache.blob_path(sha, h)
            try:
                size = blob.stat().st_size
            except FileNotFoundError:
                raise MirrorError(
                    f"{model_id}/{ref.name}: the cached blob {blob} is missing "
                    "(run 'zoo cache verify --repair')"
                ) from None
            item = PushItem(key, sha, size, blob, f"{model_id}/{ref.name}")
            seen = by_key.get(key)
            if seen is not None and seen.sha256 != sha:
                raise MirrorError(
                    f"{key}: {seen.label} (sha256 {seen.sha256}) and {item.label} (sha256 {sha}) "
                    "have the same URL but other bytes; push them with separate --model runs"
                )
            by_key.setdefault(key, item)
    return [by_key[k] for k in sorted(by_key)], sorted(set(notes), key=notes.index)


# ---------------------------------------------------------------------------------------------
# destinations


def _damaged(item: PushItem, actual: str) -> ChecksumError:
    return ChecksumError(
        f"{item.label}: the cached blob {item.blob} has sha256 {actual}, expected sha256 "
        f"{item.sha256}; not pushed (run 'zoo cache verify --repair')"
    )


class _Folder:
    def __init__(self, root: Path) -> None:
        self.root = root
        if root.exists() and not root.is_dir():
            raise MirrorError(f"{root} is not a folder")

    def describe(self) -> str:
        return str(self.root)

    def open(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise MirrorError(f"cannot create the folder {self.root}: {e.strerror or e}") from e

    def present(self, item: PushItem) -> bool:
        p = self.root / item.key
        try:
            if not p.is_file() or p.stat().st_size != item.size:
                return False
        except OSError:
            return False
        return cache.sha256_file(p) == item.sha256

    def put(self, item: PushItem) -> None:
        p = self.root / item.key
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".zoo-tmp", dir=p.parent)
        try:
            h = hashlib.sha256()
            with os.fdopen(fd, "wb") as out, open(item.blob, "rb") as src:
                for chunk in iter(lambda: src.read(CHUNK), b""):
                    h.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            if h.hexdigest() != item.sha256:
                raise _damaged(item, h.hexdigest())
            os.chmod(tmp, 0o644)  # mkstemp makes 0600; a web server must read it
            os.replace(tmp, p)
        except BaseException as e:
            Path(tmp).unlink(missing_ok=True)
            if isinstance(e, OSError) and e.errno in _DISK_FULL:
                raise DiskFullError(f"disk full while writing {p}: {e.strerror}") from e
            raise


class _S3:
    def __init__(self, bucket: str, prefix: str, endpoint_url: str | None, multipart_threshold: int) -> None:
        self.bucket, self.prefix = bucket, prefix
        self.endpoint_url = (
            endpoint_url
            or os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL")
            or None
        )
        self.threshold = int(multipart_threshold)
        self.client: Any = None

    def describe(self) -> str:
        where = f"s3://{self.bucket}" + (f"/{self.prefix}" if self.prefix else "")
        return where + (f" at {self.endpoint_url}" if self.endpoint_url else "")

    def _object_key(self, item: PushItem) -> str:
        return f"{self.prefix}/{item.key}" if self.prefix else item.key

    def _fail(self, what: str, e: BaseException) -> MirrorError:
        """One line for a botocore / boto3 error."""
        import botocore.exceptions as bx

        if isinstance(e, bx.NoCredentialsError):
            return MirrorError(_NO_CREDENTIALS)
        if isinstance(e, bx.EndpointConnectionError):
            return MirrorError(
                f"{what}: cannot connect to the S3 endpoint {e.kwargs.get('endpoint_url', '')}"
            )
        if isinstance(e, bx.ClientError):
            err = e.response.get("Error", {})
            code = str(err.get("Code", ""))
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("404", "NoSuchBucket"):
                return MirrorError(f"{what}: no bucket named {self.bucket!r} at {self._where()}")
            if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                return MirrorError(
                    f"{what}: access denied to bucket {self.bucket!r} (HTTP {status}; check the credentials)"
                )
            return MirrorError(f"{what}: {code or status}: {err.get('Message') or e}")
        text = str(e).splitlines()[0] if str(e) else type(e).__name__
        return MirrorError(f"{what}: {text}")

    def _where(self) -> str:
        return self.endpoint_url or "AWS S3"

    def open(self) -> None:
        require("s3", what="zoo mirror push to an s3:// bucket")
        import boto3
        import botocore.exceptions as bx
        from botocore.config import Config

        try:
            session = boto3.session.Session()
            if session.get_credentials() is None:
                raise MirrorError(_NO_CREDENTIALS)
            kw: dict[str, Any] = {
                "region_name": session.region_name or "us-east-1",
                "retries": {"max_attempts": 3, "mode": "standard"},
                "connect_timeout": 10,
                "read_timeout": 60,
            }
            if self.endpoint_url:
                kw["s3"] = {"addressing_style": "path"}
            self.client = session.client("s3", endpoint_url=self.endpoint_url, config=Config(**kw))
        except (bx.BotoCoreError, ValueError) as e:
            raise self._fail(f"s3://{self.bucket}", e) from None
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except (bx.BotoCoreError, bx.ClientError) as e:
            raise self._fail(f"s3://{self.bucket}", e) from None

    def present(self, item: PushItem) -> bool:
        import botocore.exceptions as bx

        key = self._object_key(item)
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=key)
        except bx.ClientError as e:
            if str(e.response.get("Error", {}).get("Code")) in ("404", "NoSuchKey", "NotFound"):
                return False
            raise self._fail(f"s3://{self.bucket}/{key}", e) from None
        except bx.BotoCoreError as e:
            raise self._fail(f"s3://{self.bucket}/{key}", e) from None
        return (
            head.get("Metadata", {}).get("sha256") == item.sha256 and head.get("ContentLength") == item.size
        )

    def put(self, item: PushItem) -> None:
        import boto3.exceptions
        import botocore.exceptions as bx
        from boto3.s3.transfer import TransferConfig

        actual = cache.sha256_file(item.blob)  # a damaged blob is never published
        if actual != item.sha256:
            raise _damaged(item, actual)
        key = self._object_key(item)
        cfg = TransferConfig(
            multipart_threshold=self.threshold, multipart_chunksize=max(self.threshold, MIN_PART)
        )
        try:
            self.client.upload_file(
                str(item.blob),
                self.bucket,
                key,
                ExtraArgs={"Metadata": {"sha256": item.sha256}, "ContentType": "application/octet-stream"},
                Config=cfg,
            )
        except boto3.exceptions.S3UploadFailedError as e:
            cause = e.__cause__ or e.__context__
            if isinstance(cause, (bx.BotoCoreError, bx.ClientError)):
                raise self._fail(f"upload of {key}", cause) from None
            raise MirrorError(f"upload of {key}: {str(e).splitlines()[0]}") from None
        except (bx.BotoCoreError, bx.ClientError) as e:
            raise self._fail(f"upload of {key}", e) from None


_NO_CREDENTIALS = (
    "no S3 credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE "
    "(a profile in ~/.aws/credentials)"
)


def destination(
    dest: str, endpoint_url: str | None = None, multipart_threshold: int = MULTIPART_THRESHOLD
) -> Any:
    """``_Folder`` for a path or ``file://`` URL, ``_S3`` for ``s3://bucket[/prefix]``."""
    m = _SCHEME.match(dest)
    scheme = m.group(1).lower() if m else None
    if scheme == "s3":
        rest = dest[m.end() :] if m else ""
        bucket, _, prefix = rest.partition("/")
        if not bucket:
            raise MirrorError(f"{dest}: no bucket name (expected s3://bucket[/prefix])")
        return _S3(bucket, prefix.strip("/"), endpoint_url, multipart_threshold)
    if endpoint_url:
        raise MirrorError("--endpoint-url is for s3:// destinations")
    if scheme == "file":
        return _Folder(Path(unquote(urlsplit(dest).path)))
    if scheme is not None:
        raise MirrorError(
            f"{dest}: unknown scheme {scheme}:// (expected a folder path or s3://bucket[/prefix])"
        )
    if not dest:
        raise MirrorError("no destination given")
    return _Folder(Path(dest).expanduser())


def push(
    dest: str | Path,
    *,
    models: Sequence[str] | None = None,
    endpoint_url: str | None = None,
    home: Path | None = None,
    multipart_threshold: int = MULTIPART_THRESHOLD,
    on_item: Callable[[str, PushItem], None] | None = None,
) -> PushResult:
    """Write the cache (every cached file, or those of ``models``) into the mirror layout at
    ``dest``: a folder, or ``s3://bucket[/prefix]`` (``endpoint_url`` for S3-compatible stores;
    credentials and region from the usual AWS environment / profile, region default us-east-1).

    Keys already holding the same bytes are skipped, so a second push uploads nothing.
    ``on_item(action, item)`` is called with ``"uploaded"`` or ``"skipped"`` after each file.
    Raises MirrorError (bad destination), UnknownModelError, ChecksumError (a damaged cache blob)."""
    target = destination(str(dest), endpoint_url, multipart_threshold)
    items, notes = plan(models, home)
    target.open()
    result = PushResult(dest=target.describe(), notes=notes)
    for item in items:
        if target.present(item):
            result.skipped.append(item)
            action = "skipped"
        else:
            target.put(item)
            result.uploaded.append(item)
            action = "uploaded"
        if on_item is not None:
            on_item(action, item)
    return result
