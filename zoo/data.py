"""The data pipeline: image folders and CSVs -> the tensors a card's model takes (one implementation,
used by ``zoo predict`` / ``zoo layers`` and the reuse commands).

Data (:func:`scan`):

- an ImageFolder layout: class subfolders, either under ``train/`` + ``val/`` [+ ``test/``] or in
  one folder split with a seeded, stratified ``val_fraction``;
- a CSV of ``path,label`` rows (a ``path,label`` header is optional; relative paths are relative to
  the CSV's folder).

Files with an image extension whose header Pillow cannot read are skipped at scan time, truncated
ones when they are decoded; both are counted (``skipped``), never a crash. Bad input (an empty
folder, one class, a class folder with no readable image, a CSV naming missing files) is one
ZooError line.

Preprocessing (:class:`Transform`), the card's ``Preprocess`` applied as the source framework does:

- decode with Pillow; any mode (grey, RGBA, LA, CMYK, palette, 16-bit) converted to what the model
  takes: ``L`` for one channel (16-bit scaled to 8), ``RGB`` for three (alpha dropped, as
  torchvision's and timm's loaders do), then flipped to BGR where ``channel_order`` says so;
- geometry: with ``resize``, the shorter side to ``resize`` and a centre crop to ``crop`` (or the
  input size); with a Caffe mean image and no ``resize``, the image is warped to the mean image's
  size (the size Caffe's training LMDB held), the mean subtracted there, then centre-cropped as
  Caffe's DataTransformer does (offset floor((H - crop) / 2)); otherwise warped to the input size
  (Keras ``load_img(target_size=...)``);
- values: ``(x * scale - mean) / std`` with ``x`` 0-255 (``mean`` / ``std`` in the scaled units, per
  channel in ``channel_order``); a mean image is in raw 0-255 units: ``(x - mean_image) * scale``;
- resizing is Pillow's (antialiased, the card's interpolation, bilinear by default), as
  torchvision's ``weights.transforms()`` and timm's eval transforms do on a PIL image and Keras's
  ``load_img`` does; Caffe's tools resized with OpenCV, so there resizing differs by rounding;
- JPEG ``draft`` (DCT-domain downscaling) only when the decoded image stays at least twice the
  resize target on both sides, so the antialiased resize after it loses nothing visible;
- images smaller than the target are upscaled and counted (``upscaled``), with a note logged.

Augmentation (:class:`Augment`: random resized crop, horizontal flip) runs only when asked and
only on the training split. Output: float32 ``(C, H, W)`` tensors (zoo.load models take NCHW, also
for Keras sources); ``transpose_hw`` cards (MTCNN) get H and W swapped.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from zoo.errors import ZooError

log = logging.getLogger("zoo.data")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".pbm", ".bmp", ".tif", ".tiff", ".webp", ".gif")
SPLIT_DIRS = ("train", "val", "test")
_RESAMPLE = {"nearest": 0, "bilinear": 2, "bicubic": 3, "lanczos": 1, "box": 4, "hamming": 5}


# ------------------------------------------------------------------ data sets
@dataclass
class ImageData:
    """A scanned data set: class names (index = label) and each split's ``(path, label)`` list."""

    root: Path
    classes: list[str]
    splits: dict[str, list[tuple[Path, int]]]
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # (file, why) found at scan time
    layout: str = "folder"  # folder | split-folders | csv
    val_fraction: float | None = None
    seed: int = 0

    def __getitem__(self, split: str) -> list[tuple[Path, int]]:
        if split not in self.splits:
            raise ZooError(f"{self.root}: no {split!r} split (splits: {', '.join(self.splits)})")
        return self.splits[split]

    def counts(self, split: str) -> dict[str, int]:
        out = {c: 0 for c in self.classes}
        for _, y in self[split]:
            out[self.classes[y]] += 1
        return out


def _is_image_name(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")


def _header_ok(p: Path) -> str | None:
    """None when Pillow can open ``p``'s header, else why not (one short phrase)."""
    from PIL import Image

    try:
        with Image.open(p) as im:
            im.size  # noqa: B018 - the header is parsed on open
        return None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'unreadable'}"


def _class_dirs(root: Path) -> list[Path]:
    return sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))


def _scan_classes(root: Path, skipped: list[tuple[Path, str]]) -> dict[str, list[Path]]:
    """class name -> readable image files (sorted), for the class subfolders of ``root``."""
    out: dict[str, list[Path]] = {}
    for d in _class_dirs(root):
        files = sorted(p for p in d.rglob("*") if p.is_file() and _is_image_name(p))
        good = []
        for p in files:
            why = _header_ok(p)
            if why is None:
                good.append(p)
            else:
                skipped.append((p, why))
        if not good:
            what = f"{len(files)} image file(s), none readable" if files else "no image files"
            raise ZooError(f"{d}: class folder {d.name!r} has no readable image ({what})")
        out[d.name] = good
    return out


def _stratified(
    per_class: dict[str, list[Path]], classes: list[str], fraction: float, seed: int
) -> tuple[list[tuple[Path, int]], list[tuple[Path, int]]]:
    """(train, val): per class, a seeded shuffle of its sorted files, ``round(n * fraction)`` of
    them (at least one, leaving at least one) to val."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for y, c in enumerate(classes):
        files = per_class[c]
        order = rng.permutation(len(files))
        k = int(round(len(files) * fraction))
        if fraction > 0 and len(files) >= 2:
            k = min(max(k, 1), len(files) - 1)
        k = min(k, len(files) - 1) if len(files) >= 2 else 0
        val += [(files[i], y) for i in sorted(order[:k])]
        train += [(files[i], y) for i in sorted(order[k:])]
    return train, val


def scan(
    data: str | Path,
    *,
    val_fraction: float | None = None,
    seed: int = 0,
    min_classes: int = 2,
) -> ImageData:
    """Scan an ImageFolder (``train/`` + ``val/`` [+ ``test/``] or one folder of class folders,
    split by ``val_fraction``) or a ``path,label`` CSV. See the module docstring."""
    root = Path(data)
    if val_fraction is not None and not 0 <= val_fraction < 1:
        raise ZooError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    if root.is_file():
        return _scan_csv(root, val_fraction=val_fraction, seed=seed, min_classes=min_classes)
    if not root.is_dir():
        raise ZooError(f"{root}: no such data folder or CSV file")
    skipped: list[tuple[Path, str]] = []
    subdirs = {d.name for d in _class_dirs(root)}
    if {"train", "val"} <= subdirs:
        per_split = {s: _scan_classes(root / s, skipped) for s in SPLIT_DIRS if s in subdirs}
        classes = sorted(per_split["train"])
        _check_classes(root / "train", classes, min_classes)
        index = {c: i for i, c in enumerate(classes)}
        splits: dict[str, list[tuple[Path, int]]] = {}
        for s, per_class in per_split.items():
            extra = sorted(set(per_class) - set(classes))
            if extra:
                raise ZooError(f"{root / s}: classes not in train/: {', '.join(extra[:5])}")
            splits[s] = [(p, index[c]) for c in sorted(per_class) for p in per_class[c]]
        if val_fraction:
            log.info("zoo: %s has train/ and val/: --val-fraction is not used", root)
        return ImageData(root, classes, splits, skipped, "split-folders", None, seed)
    if not subdirs:
        loose = [p for p in root.iterdir() if p.is_file() and _is_image_name(p)]
        hint = f" ({len(loose)} images lie loose: put each class in its own subfolder)" if loose else ""
        raise ZooError(f"{root}: empty data folder: no class subfolders{hint}")
    per_class = _scan_classes(root, skipped)
    classes = sorted(per_class)
    _check_classes(root, classes, min_classes)
    frac = val_fraction or 0.0
    train, val = _stratified(per_class, classes, frac, seed)
    splits = {"train": train, **({"val": val} if frac else {})}
    return ImageData(root, classes, splits, skipped, "folder", val_fraction, seed)


def _check_classes(where: Path, classes: list[str], min_classes: int) -> None:
    if len(classes) < min_classes:
        got = f"only class {classes[0]!r}" if classes else "no classes"
        raise ZooError(f"{where}: {got}: at least {min_classes} class folders are needed")


def _scan_csv(path: Path, *, val_fraction: float | None, seed: int, min_classes: int) -> ImageData:
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = [r for r in csv.reader(fh) if r and any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError) as e:
        raise ZooError(f"{path}: cannot read the CSV ({e})") from None
    if rows and [c.strip().lower() for c in rows[0][:2]] == ["path", "label"]:
        rows = rows[1:]
    if not rows:
        raise ZooError(f"{path}: empty CSV: no path,label rows")
    base = path.parent
    items: list[tuple[Path, str]] = []
    missing: list[str] = []
    for n, r in enumerate(rows, 1):
        if len(r) < 2 or not r[0].strip() or not r[1].strip():
            raise ZooError(f"{path}: row {n}: expected path,label, got {','.join(r)!r}")
        p = Path(r[0].strip())
        p = p if p.is_absolute() else base / p
        if not p.is_file():
            missing.append(r[0].strip())
        items.append((p, r[1].strip()))
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise ZooError(f"{path}: names missing files: {missing[0]}{more}")
    skipped: list[tuple[Path, str]] = []
    per_class: dict[str, list[Path]] = {}
    for p, label in items:
        why = _header_ok(p)
        if why is None:
            per_class.setdefault(label, []).append(p)
        else:
            skipped.append((p, why))
    for label in sorted({lab for _, lab in items} - set(per_class)):
        raise ZooError(f"{path}: class {label!r} has no readable image")
    classes = sorted(per_class)
    _check_classes(path, classes, min_classes)
    for c in classes:
        per_class[c] = sorted(per_class[c])
    frac = val_fraction or 0.0
    train, val = _stratified(per_class, classes, frac, seed)
    splits = {"train": train, **({"val": val} if frac else {})}
    return ImageData(path, classes, splits, skipped, "csv", val_fraction, seed)


# ------------------------------------------------------------------ preprocessing
@dataclass(frozen=True)
class Augment:
    """Training-time augmentation: torchvision's RandomResizedCrop (scale, ratio) and a
    horizontal flip with probability ``flip``."""

    crop_scale: tuple[float, float] | None = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: float = 0.5


def channels_and_size(pre: Any) -> tuple[int, int, int]:
    """(C, H, W) the model takes, from the card's input_size (read by its layout) and crop."""
    c, h, w = (1 if pre.channel_order == "GRAY" else 3), None, None
    dims = list(pre.input_size or ())
    if len(dims) == 3:
        c, h, w = (dims[2], dims[0], dims[1]) if pre.layout == "NHWC" else dims
    elif len(dims) == 2:
        h, w = dims
    if pre.crop:
        h = w = int(pre.crop)
    if not h or not w:
        raise ZooError("the card gives no input size: preprocessing needs preprocess.input_size or crop")
    if c not in (1, 3):
        raise ZooError(f"the model takes {c} channels: zoo's image pipeline makes 1 (grey) or 3")
    return int(c), int(h), int(w)


def read_mean_image(path: str | Path) -> np.ndarray:
    """A Caffe mean image as float32 (C, H, W), in the net's channel order and 0-255 units:
    ``.npy`` (as BVLC's python/caffe/imagenet/ilsvrc_2012_mean.npy) or ``.binaryproto``
    (a BlobProto, as compute_image_mean writes)."""
    p = Path(path)
    try:
        if p.suffix == ".npy":
            m = np.load(p, allow_pickle=False)
        else:
            from converters.caffe.proto import BlobProto

            blob = BlobProto()
            blob.ParseFromString(p.read_bytes())
            if blob.HasField("shape") and len(blob.shape.dim):
                shape = tuple(int(d) for d in blob.shape.dim)
            else:
                shape = (blob.num, blob.channels, blob.height, blob.width)
            data = np.asarray(blob.data if len(blob.data) else blob.double_data, np.float32)
            m = data.reshape(shape)
    except Exception as e:  # noqa: BLE001 - numpy / protobuf raise many types
        raise ZooError(f"{p}: not a readable Caffe mean image ({type(e).__name__}: {e})") from None
    m = np.asarray(m, np.float32)
    if m.ndim == 4 and m.shape[0] == 1:
        m = m[0]
    if m.ndim == 2:
        m = m[None]
    if m.ndim != 3:
        raise ZooError(f"{p}: a mean image of shape {m.shape}, expected (C, H, W)")
    return m


def _crop_box(h: int, w: int, ch: int, cw: int, floor: bool) -> tuple[int, int]:
    """(top, left) of a centre crop: Caffe floors the offset, torchvision rounds it."""
    if floor:
        return (h - ch) // 2, (w - cw) // 2
    return int(round((h - ch) / 2.0)), int(round((w - cw) / 2.0))


class Transform:
    """The card's preprocessing: a file or PIL image -> float32 (C, H, W) torch tensor.

    Picklable (DataLoader workers). ``stats`` counts what :meth:`load` noticed in this process.
    """

    def __init__(
        self,
        preprocess: Any,
        *,
        source: str = "",
        mean_image: np.ndarray | None = None,
        augment: Augment | None = None,
        draft: bool = True,
    ) -> None:
        if preprocess.unknown:
            raise ZooError(
                "the card's preprocessing is unknown (nobody published it): give it when converting "
                "or registering (--preprocess)"
            )
        self.pre = preprocess
        self.channels, self.height, self.width = channels_and_size(preprocess)
        self.bgr = self.channels == 3 and preprocess.channel_order == "BGR"
        self.source = source
        self.caffe_crop = source == "caffe" or mean_image is not None
        self.resample = _RESAMPLE.get((preprocess.interpolation or "bilinear").lower(), 2)
        self.mean_image = None if mean_image is None else np.asarray(mean_image, np.float32)
        if self.mean_image is not None and self.mean_image.shape[0] != self.channels:
            raise ZooError(
                f"the mean image has {self.mean_image.shape[0]} channels, the model takes {self.channels}"
            )
        if self.mean_image is not None:
            mh, mw = self.mean_image.shape[1:]
            if mh < self.height or mw < self.width:
                raise ZooError(
                    f"the mean image ({mh}x{mw}) is smaller than the input ({self.height}x{self.width})"
                )
        self.augment = augment
        self.draft = draft
        n = self.channels
        self.scale = float(preprocess.scale if preprocess.scale is not None else 1.0)
        self.mean = self._per_channel(preprocess.mean, n, 0.0)
        self.std = self._per_channel(preprocess.std, n, 1.0)

    @staticmethod
    def _per_channel(v: Sequence[float] | None, n: int, default: float) -> np.ndarray:
        if not v:
            return np.full(n, default, np.float32)
        if len(v) == 1:
            return np.full(n, float(v[0]), np.float32)
        if len(v) != n:
            raise ZooError(f"the card gives {len(v)} mean/std values for a {n}-channel input")
        return np.asarray(v, np.float32)

    # -- geometry
    def resize_target(self, w: int, h: int) -> tuple[int, int]:
        """(width, height) the decoded image is resized to before the centre crop."""
        if self.pre.resize:
            size = int(self.pre.resize)
            short, long = (w, h) if w <= h else (h, w)
            new_long = int(size * long / short)  # torchvision's rule
            return (size, new_long) if w <= h else (new_long, size)
        if self.mean_image is not None:
            return int(self.mean_image.shape[2]), int(self.mean_image.shape[1])
        return self.width, self.height

    # -- decoding
    def open(self, path: str | Path) -> tuple[Any, dict[str, Any]]:
        """(PIL image in L / RGB, info) from a file: draft-decoded where exact enough, converted
        to the model's channels. Raises OSError (and friends) for an unreadable or truncated file."""
        from PIL import Image

        im = Image.open(path)
        info: dict[str, Any] = {"size": im.size, "mode": im.mode, "draft": False}
        tw, th = self.resize_target(*im.size)
        info["target"] = (tw, th)
        if self.draft and self.augment is None and im.format == "JPEG" and im.mode in ("RGB", "L"):
            want = (2 * tw, 2 * th)
            if im.size[0] >= 2 * want[0] and im.size[1] >= 2 * want[1]:
                im.draft(im.mode, want)
                info["draft"] = im.size != info["size"]
        im.load()
        return self.convert_mode(im), info

    def convert_mode(self, im: Any) -> Any:
        """Any Pillow mode -> ``L`` (one channel) or ``RGB`` (three)."""
        from PIL import Image

        mode = im.mode
        if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
            a = np.asarray(im, dtype=np.float64)
            hi = 65535.0 if mode.startswith("I;16") or a.max() > 255 else 255.0
            a = np.clip(np.rint(a * (255.0 / hi)), 0, 255).astype(np.uint8)
            im = Image.fromarray(a, "L")
        elif mode == "F":
            a = np.asarray(im, dtype=np.float64)
            scale = 255.0 if a.max() <= 1.0 else 1.0
            im = Image.fromarray(np.clip(np.rint(a * scale), 0, 255).astype(np.uint8), "L")
        if self.channels == 1:
            return im if im.mode == "L" else im.convert("L")
        return im if im.mode == "RGB" else im.convert("RGB")

    # -- the whole transform
    def __call__(self, im: Any, *, train: bool = False) -> Any:
        """A PIL image (already converted by :meth:`open`, or any mode) -> float32 (C, H, W)."""
        import torch

        if im.mode not in ("L", "RGB") or (im.mode == "L") != (self.channels == 1):
            im = self.convert_mode(im)
        aug = self.augment if train else None
        x = self._augmented(im, aug) if aug is not None else self._geometry(im)
        x = (x - self.mean[:, None, None]) / self.std[:, None, None]
        if self.pre.transpose_hw:
            x = x.transpose(0, 2, 1)
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))

    def _resize(self, im: Any, w: int, h: int) -> np.ndarray:
        """Resized to (w, h) as the card's source resizes; float32 (C, H, W) in the net's channel
        order, 0-255."""
        x = _chw(im if im.size == (w, h) else im.resize((w, h), resample=self.resample))
        x = x.astype(np.float32)
        return x[::-1] if self.bgr else x

    def _scaled(self, x: np.ndarray, mean_at_size: bool) -> np.ndarray:
        """``x * scale``, or ``(x - mean_image) * scale`` (the mean image at x's size, or its centre)."""
        if self.mean_image is None:
            return x * np.float32(self.scale)
        m = self.mean_image if mean_at_size else self._crop(self.mean_image, x.shape[1], x.shape[2])
        return (x - m) * np.float32(self.scale)

    def _geometry(self, im: Any) -> np.ndarray:
        tw, th = self.resize_target(*im.size)
        x = self._resize(im, tw, th)
        if self.mean_image is not None and x.shape[1:] == self.mean_image.shape[1:]:
            # Caffe: the mean is subtracted at the stored size, then the crop is taken
            return self._crop(self._scaled(x, True), self.height, self.width)
        return self._scaled(self._crop(x, self.height, self.width), False)

    def _crop(self, x: np.ndarray, ch: int, cw: int) -> np.ndarray:
        h, w = x.shape[1:]
        if (h, w) == (ch, cw):
            return x
        if h < ch or w < cw:
            raise ZooError(f"a {h}x{w} image is smaller than the crop {ch}x{cw}")
        top, left = _crop_box(h, w, ch, cw, self.caffe_crop)
        return x[:, top : top + ch, left : left + cw]

    def _augmented(self, im: Any, aug: Augment) -> np.ndarray:
        import torch
        from torchvision.transforms import RandomResizedCrop

        if aug.crop_scale is not None:
            i, j, h, w = RandomResizedCrop.get_params(im, list(aug.crop_scale), list(aug.crop_ratio))
            x = self._scaled(self._resize(im.crop((j, i, j + w, i + h)), self.width, self.height), False)
        else:
            x = self._geometry(im)
        if aug.flip and float(torch.rand(())) < aug.flip:
            x = x[:, :, ::-1]
        return x

    def load(self, path: str | Path, *, train: bool = False) -> tuple[Any, dict[str, Any]]:
        """(tensor, info) for one file; info has ``upscaled`` (the image was smaller than the target)."""
        im, info = self.open(path)
        tw, th = info["target"]
        w, h = info["size"]
        info["upscaled"] = w < tw or h < th
        return self(im, train=train), info


def _chw(im: Any) -> np.ndarray:
    a = np.asarray(im, dtype=np.uint8)
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def transform_for(
    ref: Any,
    *,
    card: Any = None,
    home: Any = None,
    augment: Augment | None = None,
    draft: bool = True,
    **pull_kw: Any,
) -> Transform:
    """The Transform of a registry / catalogue id or a zoo model folder (its card's preprocessing;
    a Caffe mean image file, role ``mean``, pulled and verified or found in the folder)."""
    from zoo import api

    folder = Path(str(ref)) if ref is not None and Path(str(ref)).is_dir() else None
    if folder is not None and (folder / "config.json").is_file() and (folder / "checkpoints").is_dir():
        from zoo.finetune.run import read_run, run_card  # a zoo finetune run: its parent's pipeline

        config = read_run(folder)
        card = card or run_card(config)
        ref = config["model"]
        folder = Path(str(ref)) if Path(str(ref)).is_dir() else None
    if card is None:
        if folder is not None:
            from converters.folder import read_card

            card = read_card(folder)
        else:
            card = api.info(str(ref), home=home)
    mean_image = None
    mean_files = [f for f in card.files if f.role == "mean"]
    if mean_files:
        f = mean_files[0]
        path = None
        if folder is not None:
            cand = [folder / f.name, *(folder / n for n in ("mean.npy", "mean.binaryproto"))]
            path = next((c for c in cand if c.is_file()), None)
        if path is None:
            try:
                got = api.pull(card.id, file=f.name, home=home, **pull_kw)
            except ZooError as e:
                raise ZooError(
                    f"{card.id}: the mean image {f.name} is needed and cannot be had: {e}"
                ) from None
            path = Path(got[0])
        mean_image = read_mean_image(path)
    return Transform(card.preprocess, source=card.source, mean_image=mean_image, augment=augment, draft=draft)


# ------------------------------------------------------------------ loading
class _Files:
    """A torch Dataset over ``(path, label)`` pairs: (tensor, label, index) or None for a file that
    cannot be decoded (the collate function drops and counts it)."""

    def __init__(
        self,
        items: Sequence[tuple[Path, int]],
        transform: Transform,
        train: bool,
        aug_seed: int | None = None,
    ) -> None:
        self.items = list(items)
        self.transform = transform
        self.train = train
        self.aug_seed = aug_seed

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Any:
        from PIL import Image

        path, y = self.items[i]
        try:
            if self.train and self.aug_seed is not None:
                import torch

                # the image's own draw: the same crop and flip whichever worker decodes it and
                # whenever (a resumed run), and the caller's torch RNG untouched
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed((self.aug_seed * 1_000_003 + i) % (2**63))
                    x, info = self.transform.load(path, train=True)
            else:
                x, info = self.transform.load(path, train=self.train)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            return ("skip", str(path), f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        return ("ok", x, y, i, bool(info["upscaled"]))


def _collate(batch: list[Any]) -> dict[str, Any]:
    import torch

    ok = [b for b in batch if b[0] == "ok"]
    out: dict[str, Any] = {
        "skipped": [(b[1], b[2]) for b in batch if b[0] == "skip"],
        "upscaled": sum(1 for b in ok if b[4]),
    }
    if ok:
        out["x"] = torch.stack([b[1] for b in ok])
        out["y"] = torch.tensor([b[2] for b in ok], dtype=torch.long)
        out["index"] = torch.tensor([b[3] for b in ok], dtype=torch.long)
    return out


@dataclass
class LoadStats:
    """What a pass over the files found: images used, files skipped (with why), images upscaled."""

    used: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    upscaled: int = 0


class Loader:
    """Batches of one split: iterate for ``{"x", "y", "index"}`` dicts (x: float32 NCHW); after a
    pass ``stats`` holds the counts. Decoding runs in DataLoader workers (``workers``) with a rich
    progress bar on a terminal. ``order``: the item indices to visit, in that order (a sampler);
    ``aug_seed``: each training image's augmentation drawn from its own seed (``aug_seed``, index),
    so it does not depend on the worker or on where a resumed run starts."""

    def __init__(
        self,
        items: Sequence[tuple[Path, int]],
        transform: Transform,
        *,
        batch_size: int = 64,
        workers: int | None = None,
        train: bool = False,
        shuffle: bool = False,
        progress: bool | None = None,
        description: str = "images",
        seed: int | None = None,
        pin_memory: bool = False,
        order: Sequence[int] | None = None,
        aug_seed: int | None = None,
    ) -> None:
        self.items = list(items)
        self.pin_memory = pin_memory
        self.order = None if order is None else list(order)
        self.aug_seed = aug_seed
        self.transform = transform
        self.batch_size = batch_size
        if workers is None:
            workers = 0 if len(self.items) < 4 * batch_size else min(8, max(1, (os.cpu_count() or 2) - 1))
        self.workers = workers
        self.train = train
        self.shuffle = shuffle
        self.progress = sys.stderr.isatty() if progress is None else progress
        self.description = description
        self.seed = seed
        self.stats = LoadStats()

    def __len__(self) -> int:
        n = len(self.items) if self.order is None else len(self.order)
        return math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        import torch
        from torch.utils.data import DataLoader

        # a generator of its own (the workers' seeds come from it), so iterating never draws from
        # the caller's torch RNG; only an unseeded shuffle draws its seed from there
        if self.seed is not None:
            gen = torch.Generator().manual_seed(self.seed)
        elif self.shuffle and self.order is None:
            gen = None
        else:
            gen = torch.Generator().manual_seed(0)
        dl = DataLoader(
            _Files(self.items, self.transform, self.train, self.aug_seed),
            batch_size=self.batch_size,
            shuffle=self.shuffle and self.order is None,
            sampler=self.order,
            num_workers=self.workers,
            collate_fn=_collate,
            generator=gen,
            persistent_workers=False,
            pin_memory=self.pin_memory,
        )
        self.stats = LoadStats()
        bar = None
        if self.progress and self.items:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

            bar = Progress(
                f"[bold]{self.description}",
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            task = bar.add_task(
                self.description, total=len(self.items) if self.order is None else len(self.order)
            )
            bar.start()
        try:
            for b in dl:
                self.stats.skipped += b["skipped"]
                self.stats.upscaled += b["upscaled"]
                n = len(b["x"]) if "x" in b else 0
                self.stats.used += n
                if bar is not None:
                    bar.advance(task, n + len(b["skipped"]))
                if n:
                    yield b
        finally:
            if bar is not None:
                bar.stop()
        for path, why in self.stats.skipped:
            log.warning("zoo: skipped %s (%s)", path, why)
        if self.stats.upscaled:
            log.warning(
                "zoo: note: %d image(s) smaller than the input (%dx%d) were upscaled",
                self.stats.upscaled,
                self.transform.height,
                self.transform.width,
            )


def load_images(
    paths: Iterable[str | Path], transform: Transform
) -> tuple[Any, list[Path], list[tuple[Path, str]], int]:
    """(N x C x H x W tensor, the paths used, the skipped ``(path, why)``, upscaled count) for a few
    files in this process (``zoo predict``)."""
    import torch
    from PIL import Image

    xs, used, skipped, up = [], [], [], 0
    for p in paths:
        p = Path(p)
        try:
            x, info = transform.load(p)
        except FileNotFoundError:
            raise ZooError(f"{p}: no such image file") from None
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            skipped.append((p, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"))
            continue
        xs.append(x)
        used.append(p)
        up += bool(info["upscaled"])
    if not xs:
        return torch.zeros(0, transform.channels, transform.height, transform.width), used, skipped, up
    return torch.stack(xs), used, skipped, up
