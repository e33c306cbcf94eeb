"""``zoo demo``: the whole transfer-learning path, offline, in a few minutes on a laptop CPU.

1. scikit-learn's bundled digits (8x8) drawn at 28x28 and written as ImageFolders;
2. a small CNN (a Caffe deploy prototxt below; weights drawn by zoo's caffemodel writer) converted
   to a zoo model folder, trained on digits 0-4 by ``zoo finetune`` (nothing frozen), exported and
   registered in the catalogue as ``demo/digits-cnn``; found again with ``zoo search``;
3. transfer with few labels: digits 5-9, ten labelled images per class; the registered model's
   base cut at ``conv2``, frozen, stage 1 from cached features, then a short stage 2 unfrozen; the
   report; the ONNX export;
4. the control: the same head and schedule on the same CNN with its random initial weights frozen.

Everything lives under ``--out`` (its own ZOO_HOME: the user's cache and catalogue are not
touched). No network, no GPU needed.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoo.errors import ZooError

PROTOTXT = """name: "DigitsCNN"
input: "data"
input_shape { dim: 1 dim: 1 dim: 28 dim: 28 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 16 kernel_size: 5 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2"
  convolution_param { num_output: 32 kernel_size: 5 } }
layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }
layer { name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2"
  pooling_param { pool: AVE global_pooling: true } }
layer { name: "ip1" type: "InnerProduct" bottom: "pool2" top: "ip1"
  inner_product_param { num_output: 5 } }
layer { name: "prob" type: "Softmax" bottom: "ip1" top: "prob" }
"""
PREPROCESS = {"layout": "NCHW", "channel_order": "GRAY", "scale": 1 / 255, "input_size": [1, 28, 28]}
REGISTERED = "demo/digits-cnn"
MARKER = ".zoo-demo"
EPOCHS_PRE = 15
CUT = "conv2"  # its feature map, average-pooled: what the head (and the feature cache) reads


def _digit(im: Any) -> Any:
    """One 8x8 digit (0-16) as a 28x28 grey image: drawn 20x20 (bilinear) and centred."""
    import numpy as np
    from PIL import Image

    small = Image.fromarray((im * (255.0 / 16.0)).astype(np.uint8), "L").resize((20, 20), Image.BILINEAR)
    out = Image.new("L", (28, 28))
    out.paste(small, (4, 4))
    return out


def write_digits(root: Path, digits: list[int], *, train_per_class: int | None, seed: int) -> Path:
    """``root/{train,val}/<digit>/<i>.png`` of scikit-learn's digits ``digits``: a seeded stratified
    30 % to val; of the rest all to train, or ``train_per_class`` per class (few labels)."""
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    idx = np.flatnonzero(np.isin(d.target, digits))
    rest, held = train_test_split(idx, test_size=0.3, stratify=d.target[idx], random_state=seed)
    if train_per_class is not None:
        rng = np.random.default_rng(seed)
        rest = np.concatenate(
            [rng.choice(rest[d.target[rest] == c], train_per_class, replace=False) for c in digits]
        )
    for split, ids in (("train", rest), ("val", held)):
        for i in ids:
            p = root / split / str(d.target[i]) / f"{int(i):04d}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            _digit(d.images[i]).save(p)
    return root


@dataclass
class DemoResult:
    """What ``zoo demo`` measured."""

    out: Path
    pretrain_accuracy: float
    frozen_accuracy: float  # the transfer after stage 1 (base frozen), against the control
    transfer_accuracy: float
    control_accuracy: float
    report: Path
    onnx: Path
    search_hit: str
    seconds: float


def demo(out: Any = "zoo-demo", *, force: bool = False, echo: Any = print, seed: int = 0) -> DemoResult:
    """Run the demo into ``out`` (see the module docstring); ``echo`` prints each step."""
    t0 = time.perf_counter()
    out = Path(out).resolve()
    if out.exists() and not out.is_dir():
        raise ZooError(f"{out}: exists and is not a folder")
    if out.exists() and any(out.iterdir()):
        if not force:
            raise ZooError(f"{out}: not empty (give --force to run the demo again there)")
        if not (out / MARKER).is_file():  # --force replaces an earlier demo, never other files
            raise ZooError(f"{out}: not empty and not an earlier zoo demo: choose another --out")
        import shutil

        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("made by zoo demo; zoo demo --force replaces this folder\n")
    before = os.environ.get("ZOO_HOME")
    os.environ["ZOO_HOME"] = str(out / "zoo_home")  # the user's cache and catalogue stay as they are
    try:
        return _run(out, echo, seed, t0)
    finally:
        if before is None:
            os.environ.pop("ZOO_HOME", None)
        else:
            os.environ["ZOO_HOME"] = before


def _run(out: Path, echo: Any, seed: int, t0: float) -> DemoResult:
    import torch

    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))

    from converters.caffe.writer import write_random_caffemodel
    from zoo import api
    from zoo.convert import convert
    from zoo.export import export
    from zoo.finetune.run import finetune

    def step(text: str) -> None:
        echo(f"[{time.perf_counter() - t0:5.1f}s] {text}")

    step("writing scikit-learn's digits as ImageFolders (0-4 to pretrain; 5-9 with 10 labels per class)")
    pre = write_digits(out / "digits-0-4", [0, 1, 2, 3, 4], train_per_class=None, seed=seed)
    few = write_digits(out / "digits-5-9-few", [5, 6, 7, 8, 9], train_per_class=10, seed=seed)

    step("a small CNN (Caffe prototxt, random weights) -> zoo model folder")
    proto = out / "digits_cnn.prototxt"
    proto.write_text(PROTOTXT)
    weights = write_random_caffemodel(proto, out / "digits_cnn_random.caffemodel", seed=seed)
    random_cnn = convert(proto, out / "cnn-random", weights=weights, preprocess=PREPROCESS)
    common = {"workers": 0, "seed": seed, "batch_size": 32}

    step("pretraining it on digits 0-4 (zoo finetune, nothing frozen)")
    r_pre = finetune(
        random_cnn,
        pre,
        out / "run-pretrain",
        cut=CUT,
        freeze="none",
        epochs=EPOCHS_PRE,
        lr=3e-3,
        lr_mult=1.0,
        **common,
    )
    step(f"  held-out accuracy on digits 0-4: {r_pre.accuracy:.4f}")
    folder = export(r_pre.run_dir, out / "digits-cnn", to="torch")
    api.register(folder, REGISTERED, name="digits CNN (zoo demo, pretrained on digits 0-4)")
    hits = [c.id for c in api.search("digits cnn")]
    if REGISTERED not in hits:
        raise ZooError(f"zoo search 'digits cnn' did not find {REGISTERED} (found: {', '.join(hits[:5])})")
    step(f"registered {REGISTERED}; zoo search 'digits cnn' finds it")

    transfer = {
        "cut": CUT,
        "epochs": 30,  # 50 images, 5 steps an epoch: cheap on cached features
        "lr": 1e-2,
        "cache_features": True,
        "stage2_epochs": 5,
        "stage2_lr": 1e-3,
        "unfreeze": "2",
        **common,
        "batch_size": 10,
    }
    step("transfer to digits 5-9 with 10 labels per class: frozen base from cached features, then stage 2")
    r_tr = finetune(REGISTERED, few, out / "run-transfer", **transfer)
    onnx_dir = export(r_tr.run_dir, out / "digits-5-9-model", to="all")
    step(f"  held-out accuracy: {r_tr.accuracy:.4f}; exported with ONNX (verified) to {onnx_dir}")

    frozen = next(h["val_acc"] for h in reversed(r_tr.history) if h["stage"] == 1)
    step(f"  (after stage 1, base frozen: {frozen:.4f})")
    step("control: the same head and stage 1 on the CNN's random initial weights, frozen")
    r_ctl = finetune(random_cnn, few, out / "run-control", **{**transfer, "stage2_epochs": 0})
    res = DemoResult(
        out,
        r_pre.accuracy,
        frozen,
        r_tr.accuracy,
        r_ctl.accuracy,
        r_tr.run_dir / "report.html",
        onnx_dir / "model.onnx",
        REGISTERED,
        time.perf_counter() - t0,
    )
    echo("")
    echo(f"digits 5-9, 10 labels per class, {r_tr.metrics['final']['n']} held-out images:")
    echo(f"  pretrained base, frozen (stage 1)       {res.frozen_accuracy:.4f}")
    echo(f"  random base, frozen (control, stage 1)  {res.control_accuracy:.4f}")
    echo(f"  difference                              {res.frozen_accuracy - res.control_accuracy:+.4f}")
    echo(f"  pretrained base after stage 2           {res.transfer_accuracy:.4f}")
    echo(f"report: {res.report}")
    echo(f"ONNX:   {res.onnx}")
    echo(f"(everything under {out}; its own ZOO_HOME, {res.seconds:.0f} s)")
    return res
