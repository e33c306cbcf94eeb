"""The data pipeline (zoo/data.py): the card's preprocessing against each source framework's own
(torchvision's ``weights.transforms()``, numpy for a Caffe mean image, Keras ``preprocess_input``
in a subprocess), image modes and broken files, the seeded stratified split, and bad input."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import zoo
from zoo.cards import Preprocess
from zoo.data import Augment, Loader, Transform, read_mean_image, scan
from zoo.errors import ZooError


def _rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth image with noise (JPEG-friendly, every channel different)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) * 127 / (w + h)], -1)
    return np.clip(base + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)


# --- fidelity -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("card_id", "weights"),
    [
        ("torchvision/resnet18.imagenet1k_v1", "ResNet18_Weights.IMAGENET1K_V1"),  # 256 -> 224 bilinear
        ("torchvision/convnext_tiny.imagenet1k_v1", "ConvNeXt_Tiny_Weights.IMAGENET1K_V1"),  # 236 -> 224
        ("torchvision/vit_b_16.imagenet1k_v1", "ViT_B_16_Weights.IMAGENET1K_V1"),  # bilinear 256 -> 224
        ("torchvision/efficientnet_b3.imagenet1k_v1", "EfficientNet_B3_Weights.IMAGENET1K_V1"),  # bicubic
    ],
)
def test_torchvision_card_equals_weights_transforms(card_id: str, weights: str, tmp_path: Path) -> None:
    import torchvision.models as tvm

    card = zoo.info(card_id)
    enum_name, member = weights.split(".")
    ref_t = getattr(getattr(tvm, enum_name), member).transforms()  # no download: transforms only
    assert card.preprocess.resize == ref_t.resize_size[0] and card.preprocess.crop == ref_t.crop_size[0]
    f = tmp_path / "x.png"
    Image.fromarray(_rgb(301, 377)).save(f)
    t = Transform(card.preprocess, source=card.source)
    ours, _ = t.load(f)
    ref = ref_t(Image.open(f).convert("RGB"))
    assert ours.shape == ref.shape
    assert float((ours - ref).abs().max()) <= 1e-6


def test_caffe_mean_image_equals_numpy(tmp_path: Path) -> None:
    """caffe/bvlc_alexnet's card (BGR 0-255, crop 227, the 3x256x256 mean image) on a 256x256
    image: Caffe subtracts the mean at the stored size and crops at floor((256 - 227) / 2)."""
    card = zoo.info("caffe/bvlc_alexnet")
    assert [f.name for f in card.files if f.role == "mean"] == ["ilsvrc_2012_mean.npy"]
    rng = np.random.default_rng(1)
    mean = rng.uniform(90, 140, (3, 256, 256)).astype(np.float32)
    np.save(tmp_path / "ilsvrc_2012_mean.npy", mean)
    img = _rgb(256, 256, seed=2)
    Image.fromarray(img).save(tmp_path / "x.png")
    t = Transform(
        card.preprocess, source=card.source, mean_image=read_mean_image(tmp_path / "ilsvrc_2012_mean.npy")
    )
    ours, _ = t.load(tmp_path / "x.png")
    bgr = img[:, :, ::-1].transpose(2, 0, 1).astype(np.float32)
    ref = (bgr - mean)[:, 14:241, 14:241]
    assert ours.shape == (3, 227, 227)
    np.testing.assert_allclose(ours.numpy(), ref, rtol=0, atol=1e-6)


def test_caffe_binaryproto_mean_after_resize_and_crop(tmp_path: Path) -> None:
    """caffe/resnet50_msra's card (shorter side 256, crop 224) with a 224x224 mean written as a
    BlobProto (as ResNet_mean.binaryproto): crop first, then the mean; a 256x300 image needs no resize."""
    from converters.caffe.proto import BlobProto

    card = zoo.info("caffe/resnet50_msra")
    rng = np.random.default_rng(3)
    mean = rng.uniform(90, 140, (3, 224, 224)).astype(np.float32)
    blob = BlobProto(num=1, channels=3, height=224, width=224)
    blob.data.extend(mean.ravel().tolist())
    (tmp_path / "ResNet_mean.binaryproto").write_bytes(blob.SerializeToString())
    img = _rgb(256, 300, seed=4)
    Image.fromarray(img).save(tmp_path / "x.png")
    t = Transform(
        card.preprocess, source=card.source, mean_image=read_mean_image(tmp_path / "ResNet_mean.binaryproto")
    )
    ours, _ = t.load(tmp_path / "x.png")
    bgr = img[:, :, ::-1].transpose(2, 0, 1).astype(np.float32)
    ref = bgr[:, 16:240, 38:262] - mean
    np.testing.assert_allclose(ours.numpy(), ref, rtol=0, atol=1e-6)


KERAS_SCRIPT = """
import sys
import numpy as np
from keras.applications import vgg16
x = np.load(sys.argv[1]).astype("float32")
np.save(sys.argv[2], vgg16.preprocess_input(x))
"""


@pytest.mark.slow  # Keras 3 starts in a subprocess (about 10 s)
def test_keras_caffe_mode_equals_preprocess_input(tmp_path: Path) -> None:
    from converters.keras.subproc import run_worker

    card = zoo.info("keras/vgg16")
    assert card.preprocess.mode == "caffe" and card.preprocess.layout == "NHWC"
    img = _rgb(224, 224, seed=5)  # the card's size: compared with no resize in between
    Image.fromarray(img).save(tmp_path / "x.png")
    ours, _ = Transform(card.preprocess, source=card.source).load(tmp_path / "x.png")
    np.save(tmp_path / "in.npy", img[None].astype(np.float32))
    (tmp_path / "pre.py").write_text(KERAS_SCRIPT)
    run_worker(
        [str(tmp_path / "in.npy"), str(tmp_path / "out.npy")],
        env={"KERAS_BACKEND": "torch"},
        script=tmp_path / "pre.py",
        timeout=300,
    )
    ref = np.load(tmp_path / "out.npy")[0].transpose(2, 0, 1)  # NHWC -> CHW (zoo.load models take NCHW)
    np.testing.assert_allclose(ours.numpy(), ref, rtol=0, atol=1e-6)


def test_grey_card_and_transpose_hw() -> None:
    lenet = zoo.info("testdata/lenet_mnist").preprocess
    a = _rgb(28, 28, seed=6)
    x = Transform(lenet, source="testdata")(Image.fromarray(a))
    grey = np.asarray(Image.fromarray(a).convert("L"), np.float32)
    assert x.shape == (1, 28, 28)
    np.testing.assert_allclose(x.numpy()[0], grey * 0.00390625, atol=1e-7)
    det = zoo.info("testdata/mtcnn_det1").preprocess  # RGB, (x - 127.5) / 128, fed transposed
    b = _rgb(12, 12, seed=7)
    y = Transform(det, source="testdata")(Image.fromarray(b)).numpy()
    np.testing.assert_allclose(y, ((b.astype(np.float32) - 127.5) / 128).transpose(2, 1, 0), atol=1e-6)


def test_jpeg_draft_only_when_far_larger(tmp_path: Path) -> None:
    pre = zoo.info("torchvision/resnet18.imagenet1k_v1").preprocess
    Image.fromarray(_rgb(1200, 1100, seed=8)).save(tmp_path / "big.jpg", quality=95)
    Image.fromarray(_rgb(600, 700, seed=9)).save(tmp_path / "mid.jpg", quality=95)
    t = Transform(pre, source="torchvision")
    full = Transform(pre, source="torchvision", draft=False)
    big, info = t.load(tmp_path / "big.jpg")
    assert info["draft"]  # 1100 >= 4 x 256: decoded at half size, still >= 2x the resize target
    ref, info_full = full.load(tmp_path / "big.jpg")
    assert not info_full["draft"]
    level = 1 / 255 / 0.225  # one 8-bit step after normalisation
    # exact enough: measured at most 4 8-bit steps on this noisy image, 0.6 of a step on average
    assert float((big - ref).abs().max()) <= 5 * level
    assert float((big - ref).abs().mean()) < 0.7 * level
    _, info = t.load(tmp_path / "mid.jpg")
    assert not info["draft"]  # 600 < 4 x 256: decoded at full size


def test_augmentation_only_on_training_images(tmp_path: Path) -> None:
    pre = zoo.info("torchvision/resnet18.imagenet1k_v1").preprocess
    Image.fromarray(_rgb(300, 320, seed=10)).save(tmp_path / "x.png")
    t = Transform(pre, source="torchvision", augment=Augment())
    plain = Transform(pre, source="torchvision")
    evals = [t.load(tmp_path / "x.png")[0] for _ in range(3)]
    assert all(torch.equal(e, plain.load(tmp_path / "x.png")[0]) for e in evals)
    torch.manual_seed(0)
    trains = [t.load(tmp_path / "x.png", train=True)[0] for _ in range(3)]
    assert all(x.shape == (3, 224, 224) for x in trains)
    assert not torch.equal(trains[0], trains[1]) and not torch.equal(trains[0], evals[0])


# --- image modes, broken files, the split -----------------------------------------------------------


def _folder(root: Path) -> None:
    """Two classes: PNG, JPEG, grey, RGBA, CMYK, palette, 16-bit grey, a small image, a truncated
    JPEG (its header reads) and a file that is not an image at all."""
    a, b = root / "cat", root / "dog"
    a.mkdir(parents=True)
    b.mkdir()
    Image.fromarray(_rgb(64, 80, 1)).save(a / "rgb.png")
    Image.fromarray(_rgb(70, 60, 2)).save(a / "photo.jpg", quality=90)
    Image.fromarray(_rgb(64, 64, 3)).convert("L").save(a / "grey.png")
    rgba = np.dstack([_rgb(50, 50, 4), np.full((50, 50), 128, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(b / "rgba.png")
    Image.fromarray(_rgb(60, 60, 5)).convert("CMYK").save(b / "cmyk.jpg")
    Image.fromarray(_rgb(40, 40, 6)).convert("P").save(b / "palette.png")
    deep = (np.arange(48 * 48, dtype=np.uint16).reshape(48, 48) * 28).astype(np.uint16)
    Image.fromarray(deep).save(b / "deep16.png")
    Image.fromarray(_rgb(10, 12, 7)).save(b / "tiny.png")
    full = a / "truncated.jpg"
    Image.fromarray(_rgb(64, 64, 8)).save(full, quality=90)
    full.write_bytes(full.read_bytes()[: len(full.read_bytes()) * 2 // 3])  # the header still reads
    (a / "notes.jpg").write_bytes(b"this is not a JPEG")
    (a / "README.txt").write_text("ignored: not an image extension")


def test_image_folder_uses_every_usable_image(tmp_path: Path) -> None:
    _folder(tmp_path / "data")
    data = scan(tmp_path / "data")
    assert data.classes == ["cat", "dog"] and data.layout == "folder"
    assert [p.name for p, _ in data.skipped] == ["notes.jpg"]  # unreadable header: skipped at scan
    assert len(data["train"]) == 9
    pre = dataclasses.replace(zoo.info("torchvision/resnet18.imagenet1k_v1").preprocess, resize=36, crop=32)
    loader = Loader(
        data["train"], Transform(pre, source="torchvision"), batch_size=4, workers=2, progress=False
    )
    batches = list(loader)
    xs = torch.cat([b["x"] for b in batches])
    names = [data["train"][i][0].name for b in batches for i in b["index"].tolist()]
    assert sorted(names) == sorted(
        ["rgb.png", "photo.jpg", "grey.png", "rgba.png", "cmyk.jpg", "palette.png", "deep16.png", "tiny.png"]
    )
    assert xs.shape == (8, 3, 32, 32) and torch.isfinite(xs).all()
    assert [Path(p).name for p, _ in loader.stats.skipped] == ["truncated.jpg"]
    assert "truncated" in loader.stats.skipped[0][1]
    assert loader.stats.used == 8 and loader.stats.upscaled == 1  # tiny.png (10x12) -> 36
    grey = xs[names.index("grey.png")]
    assert torch.allclose(grey[0] * 0.229 + 0.485, grey[1] * 0.224 + 0.456, atol=1e-5)  # R == G
    deep = xs[names.index("deep16.png")]
    assert float(deep.max() * 0.229 + 0.485) > 0.9  # 16-bit values scaled to 8 bits, not clipped
    labels = torch.cat([b["y"] for b in batches]).tolist()
    assert sorted(labels) == [0, 0, 0, 1, 1, 1, 1, 1]


def _classes(root: Path, counts: dict[str, int]) -> None:
    for c, n in counts.items():
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(_rgb(8, 8, i)).save(root / c / f"{i:03d}.png")


def test_split_is_stratified_and_seeded(tmp_path: Path) -> None:
    _classes(tmp_path / "d", {"a": 20, "b": 10, "c": 7})
    one = scan(tmp_path / "d", val_fraction=0.3, seed=1)
    again = scan(tmp_path / "d", val_fraction=0.3, seed=1)
    other = scan(tmp_path / "d", val_fraction=0.3, seed=2)
    assert one.counts("val") == {"a": 6, "b": 3, "c": 2}  # round(n * 0.3) of each class
    assert one.counts("train") == {"a": 14, "b": 7, "c": 5}
    assert one.splits == again.splits
    assert one["val"] != other["val"] and other.counts("val") == one.counts("val")
    assert not {p for p, _ in one["train"]} & {p for p, _ in one["val"]}
    assert len({p for p, _ in one["train"]} | {p for p, _ in one["val"]}) == 37


def test_train_val_test_folders_and_csv(tmp_path: Path) -> None:
    for s, n in (("train", 4), ("val", 2), ("test", 1)):
        _classes(tmp_path / "tv" / s, {"x": n, "y": n})
    data = scan(tmp_path / "tv", val_fraction=0.5)
    assert data.layout == "split-folders" and set(data.splits) == {"train", "val", "test"}
    assert data.counts("train") == {"x": 4, "y": 4} and data.counts("test") == {"x": 1, "y": 1}
    rows = ["path,label"] + [f"train/{c}/{i:03d}.png,{c}" for c in "xy" for i in range(4)]
    (tmp_path / "tv" / "list.csv").write_text("\n".join(rows) + "\n")
    csv_data = scan(tmp_path / "tv" / "list.csv", val_fraction=0.25, seed=0)
    assert csv_data.layout == "csv" and csv_data.classes == ["x", "y"]
    assert csv_data.counts("val") == {"x": 1, "y": 1}


def _one_line(exc: pytest.ExceptionInfo[ZooError]) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and msg
    return msg


def test_bad_input_is_one_clear_line(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ZooError) as e:
        scan(tmp_path / "empty")
    assert "empty data folder" in _one_line(e)
    _classes(tmp_path / "single", {"only": 3})
    with pytest.raises(ZooError) as e:
        scan(tmp_path / "single")
    assert "only class 'only'" in _one_line(e)
    _classes(tmp_path / "dead", {"good": 2})
    (tmp_path / "dead" / "bad").mkdir()
    (tmp_path / "dead" / "bad" / "a.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(ZooError) as e:
        scan(tmp_path / "dead")
    assert "class folder 'bad' has no readable image" in _one_line(e)
    _classes(tmp_path / "c", {"a": 2, "b": 2})
    (tmp_path / "c.csv").write_text("c/a/000.png,a\nc/a/gone.png,a\nc/b/000.png,b\nc/b/lost.png,b\n")
    with pytest.raises(ZooError) as e:
        scan(tmp_path / "c.csv")
    assert "names missing files: c/a/gone.png and 1 more" in _one_line(e)
    with pytest.raises(ZooError) as e:
        scan(tmp_path / "nowhere")
    assert "no such data folder" in _one_line(e)
    with pytest.raises(ZooError) as e:
        Transform(Preprocess(unknown=True))
    assert "unknown" in _one_line(e)
    assert not any(tmp_path.rglob("*.tmp*"))  # scanning writes nothing


def test_labels_from_card_sets() -> None:
    from zoo.api import label_names

    alex = zoo.info("caffe/bvlc_alexnet")
    names = label_names(alex, 1000)
    labels = Path(zoo.__file__).parent / "data" / "labels" / "imagenet-1k.json"
    assert names == json.loads(labels.read_text()) and names[1] == "goldfish"
    assert label_names(zoo.info("testdata/vww_96"), 2) == ["non_person", "person"]
