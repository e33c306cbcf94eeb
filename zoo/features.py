"""Cached features: one pass of a model's frozen base (cut at a layer) over a data set's images,
stored under ``$ZOO_HOME/features/<key>/`` and reused (``zoo features`` / ``zoo.features``).

The layout (docs/cache.md, "Cached features", says the same for users)::

    $ZOO_HOME/features/<key>/
      index.json             format, key, the key document, classes, per split: count, shape,
                             per-class counts and each shard's file and sha256; skipped files
      <split>.x.npy          float32 (N, D) features, in the split's file order (memory-mapped)
      <split>.y.npy          int64 (N,) labels (indices into ``classes``)
    $ZOO_HOME/features/.<key>.<random>.tmp/   an entry being written (renamed into place)
    $ZOO_HOME/locks/features-<key>.lock       held while an entry is being written

``<key>``: the first 32 hex digits of the sha256 of the JSON key document: the weights' sha256
(a model folder's model.safetensors; a torchvision / timm id's pulled weights blob; a Caffe /
Keras id's converted folder's model.safetensors), the cut layer, the preprocessing (the card's
``preprocess`` but its free-text note, Caffe's crop rounding, a Caffe mean image's sha256), the
data (root, layout, split, seed, classes, every file with its label, size and mtime, the files
skipped at scan time), augmentation (always off) and the format version.

A feature map (N, C, H, W) is pooled by a global average to (N, C); a vector (N, D) is stored as
it is; any other output (a tuple, a non-float tensor, another rank, a batch size that differs
from the input's) is refused with one line, and nothing is written.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import sys
import time
import types
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from zoo.errors import ZooError

log = logging.getLogger("zoo.features")

FORMAT = 1
KEY_DIGITS = 32
TMP_SUFFIX = ".tmp"


@dataclass
class Features:
    """What :func:`features` returns: class names, per split the features ``X`` (float32 (N, D),
    memory-mapped read-only) and labels ``y`` (int64 (N,)); whether the cache was reused."""

    classes: list[str]
    X: dict[str, np.ndarray]
    y: dict[str, np.ndarray]
    reused: bool
    key: str
    path: Path
    cut: str
    index: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def splits(self) -> list[str]:
        return list(self.X)


def features_root(home: Path | str | None = None) -> Path:
    from zoo.paths import zoo_home

    return (Path(home) if home is not None else zoo_home()) / "features"


# ------------------------------------------------------------------ the key
def _file_sha(path: Path) -> str:
    from zoo.fileio import sha256_file

    return sha256_file(path)


def _weights_identity(model_ref: Any, card: Any, home: Any, pull_kw: dict[str, Any]) -> dict[str, Any]:
    """``{"sha256"}`` of the weights the model is built from (see the module docstring): a
    registry id and a model folder holding the same weights get the same identity."""
    from zoo import api
    from zoo.models import _blob_sha, _weights_file, converted_folder

    p = Path(str(model_ref))
    if p.is_dir():
        w = p / "model.safetensors"
        if not w.is_file():
            raise ZooError(f"{p}: not a zoo model folder (no model.safetensors)")
        return {"sha256": _file_sha(w)}
    kind = card.architecture.kind if card.architecture else None
    if kind in ("torchvision", "timm", "finetune"):  # built from the pulled weights as they are
        files = api.pull(card.id, home=home, **pull_kw)
        return {"sha256": _blob_sha(_weights_file(card, files))}

    folder = converted_folder(card.id, home=home, **pull_kw)  # raises for what zoo cannot load
    return {"sha256": _file_sha(Path(folder) / "model.safetensors")}


def _stat(p: Path) -> list[Any]:
    st = p.stat()
    return [st.st_size, st.st_mtime_ns]


def key_document(
    model_ref: Any,
    data: Any,
    *,
    cut: str | None = None,
    val_fraction: float | None = None,
    seed: int = 0,
    home: Any = None,
    **pull_kw: Any,
) -> tuple[dict[str, Any], Any, Any, Any]:
    """(key document, card, transform, scanned data) for these arguments; see the module docstring."""
    from zoo.api import _card_of
    from zoo.data import scan, transform_for

    card = _card_of(model_ref, home)
    layer = cut or card.default_cut
    if not layer:
        raise ZooError(
            f"{card.id}: the card names no default cut (feature layer): give --cut (see zoo layers)"
        )
    imgs = scan(data, val_fraction=val_fraction, seed=seed)
    transform = transform_for(model_ref, card=card, home=home, augment=None, **pull_kw)
    mean = transform.mean_image
    doc = {
        "format": FORMAT,
        "weights": _weights_identity(model_ref, card, home, pull_kw),
        "cut": layer,
        "preprocess": {
            **{k: v for k, v in dataclasses.asdict(card.preprocess).items() if k != "note"},
            # what the card's source changes in the pipeline: the crop's offset rounding (no crop
            # is taken without a resize or a mean image: the image is warped to the input size)
            "caffe_crop": transform.caffe_crop if card.preprocess.resize or mean is not None else None,
            "mean_image": None
            if mean is None
            else hashlib.sha256(np.ascontiguousarray(mean).tobytes()).hexdigest(),
        },
        "data": {
            "root": str(Path(imgs.root).resolve()),
            "layout": imgs.layout,
            "val_fraction": imgs.val_fraction,
            "seed": imgs.seed,
            "classes": imgs.classes,
            "splits": {s: [[str(p), y, *_stat(p)] for p, y in items] for s, items in imgs.splits.items()},
            "skipped": sorted([str(p), *_stat(p)] for p, _ in imgs.skipped),
            "augment": False,
        },
    }
    return doc, card, transform, imgs


def key_of(doc: dict[str, Any]) -> str:
    blob = json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:KEY_DIGITS]


def cache_key(model_ref: Any, data: Any, **kw: Any) -> str:
    """The cache key :func:`features` would use for these arguments (nothing is extracted)."""
    return key_of(key_document(model_ref, data, **kw)[0])


# ------------------------------------------------------------------ reading an entry
class _Damaged(Exception):
    pass


def _read_entry(path: Path, key: str) -> Features:
    """The entry at ``path`` with every shard's sha256 checked; _Damaged (why) if it is not intact."""
    try:
        index = json.loads((path / "index.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _Damaged("index.json is missing") from None
    except (OSError, ValueError) as e:
        raise _Damaged(f"index.json is unreadable ({type(e).__name__})") from None
    if index.get("format") != FORMAT or index.get("key") != key:
        raise _Damaged("index.json is of another format or key")
    X: dict[str, np.ndarray] = {}
    Y: dict[str, np.ndarray] = {}
    try:
        for split, s in index["splits"].items():
            for part in ("x", "y"):
                f = path / s[part]
                if not f.is_file():
                    raise _Damaged(f"{s[part]} is missing")
                actual = _file_sha(f)
                if actual != s[f"{part}_sha256"]:
                    raise _Damaged(
                        f"{s[part]} has sha256 {actual[:12]}, index.json says {s[f'{part}_sha256'][:12]}"
                    )
            x = np.load(path / s["x"], mmap_mode="r", allow_pickle=False)
            y = np.load(path / s["y"], mmap_mode="r", allow_pickle=False)
            if x.dtype != np.float32 or x.shape != tuple(s["shape"]) or y.shape != (s["count"],):
                raise _Damaged(f"{s['x']} has shape {x.shape}, index.json says {s['shape']}")
            X[split], Y[split] = x, y
    except (KeyError, TypeError, ValueError) as e:
        raise _Damaged(f"index.json or a shard is malformed ({type(e).__name__}: {e})") from None
    return Features(index["classes"], X, Y, True, key, path, index["cut"], index)


# ------------------------------------------------------------------ extraction
def _as_features(out: Any, n: int, layer: str) -> tuple[Any, str]:
    """The cut's output as float32 (n, D): a vector as it is, a feature map (n, C, H, W) averaged
    over H and W; else one ZooError line."""
    import torch

    if isinstance(out, (tuple, list)) and len(out) == 1:
        out = out[0]
    if not isinstance(out, torch.Tensor):
        raise ZooError(
            f"the output at --cut {layer} is a {type(out).__name__}, not a feature map or vector: "
            "cut at another layer"
        )
    if not out.is_floating_point():
        raise ZooError(
            f"the output at --cut {layer} is {out.dtype}, not float: not features (cut at another layer)"
        )
    if out.ndim == 0 or out.shape[0] != n:
        raise ZooError(
            f"the output at --cut {layer} has shape {tuple(out.shape)}: its first dimension is not the batch "
            f"of {n} images (cut at another layer)"
        )
    if out.ndim == 2:
        return out.float(), "vector"
    if out.ndim == 4:
        return out.float().mean(dim=(2, 3)), "feature map, global average pooled"
    raise ZooError(
        f"the output at --cut {layer} has shape {tuple(out.shape)}: neither a feature vector (N, D) nor a "
        "feature map (N, C, H, W) (cut at another layer)"
    )


def _compact(src: Path, dst: Path, rows: int) -> None:
    """The first ``rows`` rows of the .npy ``src`` into a new .npy ``dst`` (chunked), ``src`` removed."""
    full = np.load(src, mmap_mode="r")
    out = np.lib.format.open_memmap(dst, mode="w+", dtype=full.dtype, shape=(rows, *full.shape[1:]))
    step = 65536
    for i in range(0, rows, step):
        out[i : i + step] = full[i : i + step]
    out.flush()
    del out, full
    src.unlink()


def _concat(parts: list[Path], dst: Path, rows: int, dim: int) -> None:
    """The .npy ``parts`` (float32 (n_i, dim)) one after another into ``dst`` (chunked), removed."""
    out = np.lib.format.open_memmap(dst, mode="w+", dtype=np.float32, shape=(rows, dim))
    at, step = 0, 65536
    for p in parts:
        x = np.load(p, mmap_mode="r")
        for i in range(0, len(x), step):
            chunk = x[i : i + step]
            out[at : at + len(chunk)] = chunk
            at += len(chunk)
        del x
        p.unlink()
    out.flush()
    del out


def _chunk(items: list[Any], rank: int, world: int) -> list[Any]:
    """Rank ``rank``'s contiguous share of ``items`` (the shares, in rank order, are ``items``)."""
    n = len(items)
    return items[rank * n // world : (rank + 1) * n // world]


def _extract_part(
    tmp: Path,
    layer: str,
    model_ref: Any,
    transform: Any,
    imgs: Any,
    *,
    rank: int,
    world: int,
    device: Any,
    home: Any,
    batch_size: int,
    workers: int | None,
    progress: bool | None,
    pull_kw: dict[str, Any],
) -> dict[str, Any]:
    """This rank's share of every split through the cut model, into ``tmp/<split>.x.part<rank>.npy``
    and ``.y.part<rank>.npy``; returns what :func:`_finish` needs (rows, dim, files, skipped)."""
    import torch

    from zoo.data import Loader
    from zoo.dist import pick_device
    from zoo.models import load

    dev = pick_device(device)
    model = load(model_ref, home=home, **pull_kw)
    net = model.cut(layer).eval().to(dev)  # an unknown layer: ZooError naming the close ones
    if dev.type == "cuda":
        net = net.to(memory_format=torch.channels_last)
    out: dict[str, Any] = {"splits": {}, "skipped": [], "upscaled": 0, "output": None}
    for split, all_items in imgs.splits.items():
        items = _chunk(all_items, rank, world)
        loader = Loader(
            items,
            transform,
            batch_size=batch_size,
            workers=workers,
            progress=progress if rank == 0 else False,
            description=f"features {split}",
            pin_memory=dev.type == "cuda",
        )
        full = tmp / f"{split}.x.part{rank}.full.npy"
        xs = None
        ys = np.zeros(len(items), np.int64)
        row = 0
        with torch.no_grad():
            for b in loader:
                x = b["x"].to(dev, non_blocking=True)
                if dev.type == "cuda":
                    x = x.contiguous(memory_format=torch.channels_last)
                f, kind = _as_features(net(x), len(x), layer)
                out["output"] = out["output"] or kind
                f = f.cpu().numpy()
                if xs is None:
                    xs = np.lib.format.open_memmap(
                        full, mode="w+", dtype=np.float32, shape=(len(items), f.shape[1])
                    )
                xs[row : row + len(f)] = f
                ys[row : row + len(f)] = b["y"].numpy()
                row += len(f)
        out["skipped"] += [list(s) for s in loader.stats.skipped]
        out["upscaled"] += loader.stats.upscaled
        part: dict[str, Any] = {"rows": row, "dim": None, "x": None, "y": None}
        if xs is not None:
            part["dim"] = int(xs.shape[1])
            xs.flush()
            del xs
            part["x"] = f"{split}.x.part{rank}.npy"
            if row == len(items):
                os.replace(full, tmp / part["x"])
            else:
                _compact(full, tmp / part["x"], row)
            part["y"] = f"{split}.y.part{rank}.npy"
            np.save(tmp / part["y"], ys[:row])
        out["splits"][split] = part
    return out


def _finish(
    tmp: Path,
    key: str,
    doc: dict[str, Any],
    model_ref: Any,
    card: Any,
    imgs: Any,
    parts: list[dict[str, Any]],
) -> None:
    """Every rank's parts (in rank order) into one ``<split>.x.npy`` / ``<split>.y.npy`` per split,
    and index.json last."""
    splits: dict[str, Any] = {}
    for split in imgs.splits:
        got = [p["splits"][split] for p in parts]
        done = [g for g in got if g["x"] is not None and g["rows"]]
        rows = sum(g["rows"] for g in done)
        if not rows:
            raise ZooError(f"{imgs.root}: no image of the {split} split could be decoded")
        dim = done[0]["dim"]
        x_name, y_name = f"{split}.x.npy", f"{split}.y.npy"
        if len(done) == 1:
            os.replace(tmp / done[0]["x"], tmp / x_name)
        else:
            _concat([tmp / g["x"] for g in done], tmp / x_name, rows, dim)
        y = np.concatenate([np.load(tmp / g["y"], allow_pickle=False) for g in done])
        np.save(tmp / y_name, y)
        for g in got:
            for f in (g["y"], g["x"]):
                if f:
                    (tmp / f).unlink(missing_ok=True)
        splits[split] = {
            "count": rows,
            "shape": [rows, dim],
            "counts": {c: int((y == i).sum()) for i, c in enumerate(imgs.classes)},
            "x": x_name,
            "x_sha256": _file_sha(tmp / x_name),
            "y": y_name,
            "y_sha256": _file_sha(tmp / y_name),
        }
    index = {
        "format": FORMAT,
        "key": key,
        "model": str(model_ref),
        "model_id": card.id,
        "cut": doc["cut"],
        "output": next((p["output"] for p in parts if p["output"]), None),
        "classes": imgs.classes,
        "splits": splits,
        "skipped": [[str(p), why] for p, why in imgs.skipped] + [s for p in parts for s in p["skipped"]],
        "upscaled": sum(p["upscaled"] for p in parts),
        "ranks": len(parts),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "key_document": doc,
    }
    from zoo.fileio import atomic_write_json

    atomic_write_json(tmp / "index.json", index)


def _commit(tmp: Path, path: Path, root: Path, key: str) -> None:
    """The finished ``tmp`` renamed to ``path`` (a damaged entry there moved aside first)."""
    if path.exists():
        old = root / f".{key}.{uuid.uuid4().hex[:8]}.old{TMP_SUFFIX}"
        os.replace(path, old)
        shutil.rmtree(old, ignore_errors=True)
    os.replace(tmp, path)


def features(
    model: Any,
    data: Any,
    *,
    cut: str | None = None,
    val_fraction: float | None = None,
    seed: int = 0,
    home: Any = None,
    batch_size: int = 64,
    workers: int | None = None,
    progress: bool | None = None,
    device: Any = None,
    **pull_kw: Any,
) -> Features:
    """Features of every image of ``data`` (an ImageFolder or a ``path,label`` CSV; see
    zoo.data.scan) at layer ``cut`` (default: the card's ``default_cut``) of ``model`` (an id or a
    zoo model folder), frozen (eval, no grad, no augmentation), on ``device`` (default: CUDA when
    there is one). Extracted once into ``$ZOO_HOME/features/<key>/`` and reused afterwards
    (``reused``: no forward pass ran); a damaged entry is found by its shards' sha256 and extracted
    again, with one line on stderr.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) every rank extracts a contiguous share of each split
    into its own shard, and rank 0 joins them and writes the index: the same entry, under the
    same key, as one process makes. The ranks need one ``$ZOO_HOME`` (a shared file system)."""
    from filelock import FileLock

    doc, card, transform, imgs = key_document(
        model, data, cut=cut, val_fraction=val_fraction, seed=seed, home=home, **pull_kw
    )
    key = key_of(doc)
    root = features_root(home)
    path = root / key
    from zoo.dist import World

    procs = World()
    rank, world = procs.rank, procs.world
    dist = procs if world > 1 else None

    def cached(report: bool) -> Features | None:
        if not path.exists():
            return None
        try:
            return _read_entry(path, key)
        except _Damaged as why:
            if report:
                log.warning("zoo: the cached features %s are damaged: %s; extracting them again", path, why)
            return None

    def extract(tmp: Path) -> dict[str, Any]:
        return _extract_part(
            tmp,
            doc["cut"],
            model,
            transform,
            imgs,
            rank=rank,
            world=world,
            device=device,
            home=home,
            batch_size=batch_size,
            workers=workers,
            progress=progress,
            pull_kw=pull_kw,
        )

    locks = root.parent / "locks"
    lock = FileLock(str(locks / f"features-{key}.lock"))
    tmp: Path | None = None
    got = None
    if rank == 0:
        got = cached(False)
        if got is None:
            locks.mkdir(parents=True, exist_ok=True)
            lock.acquire()
            got = cached(True)
            if got is None:
                root.mkdir(parents=True, exist_ok=True)
                tmp = root / f".{key}.{uuid.uuid4().hex[:8]}{TMP_SUFFIX}"
                tmp.mkdir()
    try:
        if dist:
            told = dist.broadcast(None if tmp is None else str(tmp))
            tmp = Path(told) if told else None
        if tmp is None:  # reused
            return got if got is not None else _read_entry(path, key)
        if not dist:
            _finish(tmp, key, doc, model, card, imgs, [extract(tmp)])
            _commit(tmp, path, root, key)
            tmp = None
        else:
            # every rank's outcome reaches every rank, so one rank's error ends them all at once
            try:
                answer: tuple[Any, str | None] = (extract(tmp), None)
            except (ZooError, OSError, RuntimeError, ValueError) as e:
                answer = (None, f"rank {rank}: {e}")
            answers = dist.gather(answer)
            error = next((e for _, e in answers if e), None)
            if rank == 0 and error is None:
                try:
                    _finish(tmp, key, doc, model, card, imgs, [p for p, _ in answers])
                    _commit(tmp, path, root, key)
                    tmp = None
                except (ZooError, OSError, ValueError) as e:
                    error = f"rank 0: {e}"
            error = dist.broadcast(error)  # rank 0's index is written (or not) for every rank
            if error:
                raise ZooError(error)
    finally:
        if rank == 0:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
            if lock.is_locked:
                lock.release()
    out = _read_entry(path, key)
    out.reused = False
    return out


# ------------------------------------------------------------------ housekeeping (zoo cache ls / prune)
@dataclass
class FeatureEntry:
    """One cached feature entry (a row of ``zoo cache ls``)."""

    key: str
    model: str | None
    cut: str | None
    splits: dict[str, int]
    size: int
    path: str
    created: str | None
    ok: bool  # index.json readable


def _dir_size(d: Path) -> int:
    return sum(p.stat().st_size for p in d.rglob("*") if p.is_file())


def list_feature_entries(home: Any = None) -> list[FeatureEntry]:
    """Every entry under ``$ZOO_HOME/features/`` (temporaries not included), by key."""
    root = features_root(home)
    if not root.is_dir():
        return []
    rows = []
    for d in sorted(root.iterdir()):
        if d.name.startswith(".") or not d.is_dir():
            continue
        try:
            idx = json.loads((d / "index.json").read_text(encoding="utf-8"))
            ok = True
        except (OSError, ValueError):
            idx, ok = {}, False
        rows.append(
            FeatureEntry(
                key=d.name,
                model=idx.get("model"),
                cut=idx.get("cut"),
                splits={s: int(v.get("count", 0)) for s, v in (idx.get("splits") or {}).items()},
                size=_dir_size(d),
                path=str(d),
                created=idx.get("created"),
                ok=ok,
            )
        )
    return rows


def prune_features(
    home: Any = None, *, max_age_s: float = 3600.0, remove_all: bool = False
) -> tuple[int, int]:
    """Remove leftover temporaries (a killed extraction) older than ``max_age_s`` and entries whose
    index.json is unreadable (or every entry with ``remove_all``), each only while nobody holds its
    lock. Returns (entries and temporaries removed, bytes freed)."""
    from filelock import FileLock, Timeout

    root = features_root(home)
    if not root.is_dir():
        return 0, 0
    now = time.time()
    n = freed = 0
    (root.parent / "locks").mkdir(parents=True, exist_ok=True)
    for d in sorted(root.iterdir()):
        if not d.is_dir():
            continue
        if d.name.startswith("."):
            if not d.name.endswith(TMP_SUFFIX):
                continue
            key = d.name[1:].split(".")[0]
            try:
                if now - d.stat().st_mtime < max_age_s:
                    continue
            except FileNotFoundError:
                continue
        else:
            key = d.name
            if not remove_all and (d / "index.json").is_file():
                try:
                    json.loads((d / "index.json").read_text(encoding="utf-8"))
                    continue
                except (OSError, ValueError):
                    pass
        lock = FileLock(str(root.parent / "locks" / f"features-{key}.lock"), timeout=0)
        try:
            with lock:
                size = _dir_size(d)
                shutil.rmtree(d, ignore_errors=True)
                n += 1
                freed += size
        except Timeout:
            continue  # being extracted now
    return n, freed


class _CallableModule(types.ModuleType):
    """``zoo.features(...)`` calls :func:`features`: importing this module binds ``zoo.features`` to it."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return features(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
