"""The fine-tuning runner's speed (issue 10): ``zoo.finetune`` against a hand-written PyTorch loop,
against tf-keras ``fit``, and with ``cache_features=True`` against without.

Usage: .venv/bin/python bench/finetune.py [--workdir /tmp/zoo-bench-finetune] [--threads 2]
       [--images 1000] [--size 112] [--epochs 3] [--batch-size 32] [--rounds 2] [--workers N]
       [--keras-images 2000] [--keras-size 96] [--keras-epochs 5]
       [--cache-images 2000] [--cache-epochs 10] [--uncached-epochs 2] [--cache-batch-size 64]
       [--skip-hand] [--skip-keras] [--skip-cache] [--gpu]

Nothing leaves the machine: generated JPEGs (smooth random colour fields with a class tint, as
bench/features.py makes them) in 10 class folders; a torchvision resnet18 with random weights
(bench/features.py's ``make_weights``) served on 127.0.0.1 behind a private registry
(``ZOO_REGISTRY``) and a private ``ZOO_HOME``; the download is never timed. Torch runs with
``--threads`` intra-op threads; every DataLoader has ``--workers`` workers (default: zoo's own
default for the data set, which both sides get).

1. Runner vs a hand loop. A registry card ``bench/resnet18-<size>``: the torchvision resnet18
   card with its preprocessing at ``--size`` px (resize to ``size * 8 / 7``, centre crop), images
   of 1-1.6x that size. Both sides: the base cut at ``avgpool`` (frozen, eval mode), a linear head
   (``nn.Linear(512, 10)``, initialized after ``torch.manual_seed(seed)``: the same initial
   weights on both sides), AdamW lr 1e-3 (weight decay 1e-4 on the weight, none on the bias, as
   the runner groups them), a cosine schedule stepped per batch over the run, cross-entropy,
   batches of ``--batch-size``, ``--epochs`` epochs of training + validation over the runner's
   own split (``zoo.data.scan``, val fraction 0.2, seed 0), no feature cache.

   - runner: ``zoo.finetune(card, data, out, cut="avgpool", head="pool=avg,dropout=0", ...)``.
     Two times: ``metrics["timing"]["train_seconds"]`` (the runner's ``Trainer.run``: the epochs,
     their validation, checkpoints and best-weight saves) and the whole call (also the scan, the
     model load + cut, the final evaluation of the best weights on the validation split and the
     report files). The time inside its checkpoints, best-weight saves, final evaluation and
     report is measured too (the functions wrapped from this script, no library change).
   - hand: torchvision ``resnet18`` with the same state dict and ``fc = Identity``, a torch
     ``DataLoader`` over the same files (PIL + ``Resize``, ``CenterCrop``, ``ToTensor``,
     ``Normalize``; shuffled by a seeded generator), base under ``no_grad``. Train time: the
     epochs; whole: also building the model and loading the state dict.

   ``--rounds`` rounds, the order alternating (hand first in even rounds), after a warm-up
   forward; the figures are the medians. Accuracy: the runner's final accuracy (its best epoch
   by validation loss, evaluated again) and the hand loop's validation accuracy at the same
   epoch and at the last one.

2. Runner vs tf-keras ``fit`` (TensorFlow only ever runs in a subprocess). tf-keras builds
   ``keras.applications.MobileNet(alpha=0.25, include_top=False, weights=None)`` at
   ``--keras-size`` px, random weights, its BatchNorm statistics set from one batch of 64
   training images (with Keras's initial statistics the random net's features are near constant
   and both sides stay at chance), saved as a full-model ``.h5``; ``zoo convert`` makes a
   model folder of it (``--preprocess scale=1/127.5 mean=1,1,1``: Keras's 'tf' mode). Images are
   generated at exactly that size (no resize on either side). The same split; ``--keras-epochs``
   epochs, batch ``--batch-size``:

   - tf-keras: the base frozen (``trainable = False``, called with ``training=False``), then
     ``GlobalAveragePooling2D`` + ``Dense(10)``, ``AdamW(CosineDecay(1e-3, all steps),
     weight_decay=1e-4)`` (bias excluded), sparse cross-entropy from logits, a ``tf.data``
     pipeline (read, decode_jpeg, x / 127.5 - 1, batch, prefetch; the training set reshuffled
     each epoch), ``model.fit(..., validation_data=val)``; intra-op threads ``--threads``.
     Timed: ``fit`` itself, and the subprocess from start to end (TensorFlow's import included).
   - runner: ``zoo.finetune(folder, cut="conv_pw_13_relu", head="pool=avg,dropout=0")``, timed as
     in 1; and, to tell the runner's cost from torch's, one bare pass of the converted base
     (``zoo.data.Loader`` + forward under ``no_grad``) over train + val, x the epochs.

3. ``cache_features=True`` vs without: the bundled resnet18 card at 224 px, ``--cache-images``
   images (256-480 px), cut ``avgpool``, the default head, batch ``--cache-batch-size``. Cached:
   a whole ``--cache-epochs`` run from a cold feature cache (the caching pass included; the
   final evaluation goes through the base, as it always does). Uncached: a whole run of
   ``--uncached-epochs`` epochs, measured; when fewer than ``--cache-epochs``, the uncached
   whole-run time is extrapolated as that call's time + the missing epochs x its train seconds
   per epoch (printed as extrapolated).

4. ``--gpu`` (only where ``torch.cuda.is_available()``): resnet50 (random weights) fully trained
   by the runner (``freeze="none"``, AMP auto, channels_last) in images/s against a bare
   forward/backward/step loop of torchvision resnet50 under the same autocast and memory format
   on a fixed batch.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bench_features", ROOT / "bench" / "features.py")
fb = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
_spec.loader.exec_module(fb)  # type: ignore[union-attr]

CLASSES = fb.CLASSES
CARD_ID = fb.CARD_ID  # the bundled torchvision resnet18 card (224 px)
KERAS_CUT = "conv_pw_13_relu"


# ------------------------------------------------------------------ set-up
def make_images(root: Path, n: int, lo: int, hi: int, seed: int = 0) -> Path:
    """``n`` JPEGs, sides in ``[lo, hi]`` px, in ``CLASSES`` class folders (bench/features.py's
    generator at other sizes); reused when complete."""
    from PIL import Image

    out = root / f"images-{n}-{lo}-{hi}"
    done = out / ".complete"
    if done.is_file():
        return out
    shutil.rmtree(out, ignore_errors=True)
    rng = np.random.default_rng(seed)
    tints = rng.uniform(0.6, 1.4, size=(CLASSES, 3))
    for i in range(n):
        c = i % CLASSES
        w, h = (int(v) for v in rng.integers(lo, hi + 1, size=2))
        low = rng.uniform(0, 255, size=(int(rng.integers(4, 17)), int(rng.integers(4, 17)), 3))
        im = Image.fromarray(np.clip(low * tints[c], 0, 255).astype(np.uint8)).resize((w, h), Image.BICUBIC)
        a = np.asarray(im, np.float32) + rng.normal(0, 8, size=(h, w, 3))
        d = out / f"class{c:02d}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(d / f"{i:05d}.jpg", quality=90)
    done.write_text("ok\n")
    return out


def small_card_id(size: int) -> str:
    return f"bench/resnet18-{size}"


def write_registry(path: Path, url: str, size: int, sha: str, small: int) -> None:
    """The resnet18 card with its file at ``url`` (bench/features.py's registry), plus a copy of it
    with the preprocessing at ``small`` px."""
    fb.write_registry(path, url, size, sha)
    reg = json.loads(path.read_text())
    card = json.loads(json.dumps(reg["models"][0]))
    card["id"] = small_card_id(small)
    card["name"] = f"resnet18 at {small} px (bench/finetune.py)"
    resize = round(small * 8 / 7)
    card["preprocess"].update({"input_size": [3, small, small], "resize": resize, "crop": small})
    reg["models"].append(card)
    path.write_text(json.dumps(reg, indent=1) + "\n")


class Timed:
    """Wraps ``module.name`` so each call's seconds add up in ``self.seconds``."""

    def __init__(self, module: Any, name: str) -> None:
        self.module, self.name = module, name
        self.orig = getattr(module, name)
        self.seconds, self.calls = 0.0, 0

        def wrapper(*a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return self.orig(*a, **k)
            finally:
                self.seconds += time.perf_counter() - t0
                self.calls += 1

        setattr(module, name, wrapper)

    def restore(self) -> None:
        setattr(self.module, self.name, self.orig)


def run_zoo(model: str, data: Path, out: Path, **options: Any) -> dict[str, Any]:
    """One ``zoo.finetune`` call, timed whole, with the time inside its checkpoints, best-weight
    saves, caching pass, final evaluation and report."""
    import zoo
    import zoo.features
    import zoo.finetune.loop as loop
    import zoo.finetune.run as run

    shutil.rmtree(out, ignore_errors=True)
    parts = {
        "checkpoints": Timed(loop.Trainer, "checkpoint"),
        "best weights": Timed(loop, "save_weights"),
        "caching pass": Timed(zoo.features, "features"),
        "final evaluation": Timed(run, "predict_split"),
        "report": Timed(run, "_write_report"),
    }
    t0 = time.perf_counter()
    try:
        res = zoo.finetune(model, data, out, **options)
    finally:
        whole = time.perf_counter() - t0
        for p in parts.values():
            p.restore()
    return {
        "whole": whole,
        "train": float(res.metrics["timing"]["train_seconds"]),
        "accuracy": res.accuracy,
        "best_epoch": res.best_epoch,
        "history": res.history,
        "cache": res.cache,
        "parts": {k: (p.seconds, p.calls) for k, p in parts.items()},
    }


# ------------------------------------------------------------------ 1. the hand loop
def hand_transform(size: int) -> Any:
    from torchvision import transforms as T

    return T.Compose(
        [
            T.Resize(round(size * 8 / 7)),
            T.CenterCrop(size),
            T.ToTensor(),
            T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ]
    )


class Files:
    def __init__(self, items: list[tuple[Path, int]], tf: Any) -> None:
        self.items, self.tf = items, tf

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Any:
        from PIL import Image

        p, y = self.items[i]
        with Image.open(p) as im:
            return self.tf(im.convert("RGB")), y


def hand_run(
    weights: Path,
    splits: dict[str, list[tuple[Path, int]]],
    size: int,
    epochs: int,
    bs: int,
    workers: int,
    seed: int,
) -> dict[str, Any]:
    """The plain loop: frozen torchvision resnet18 + nn.Linear head, AdamW + cosine, train + val
    each epoch."""
    import torch
    import torchvision
    from torch import nn
    from torch.utils.data import DataLoader

    t_whole = time.perf_counter()
    base = torchvision.models.resnet18(weights=None)
    base.load_state_dict(torch.load(weights, weights_only=True))
    base.fc = nn.Identity()
    base.eval().requires_grad_(False)
    torch.manual_seed(seed)
    head = nn.Linear(512, CLASSES)
    opt = torch.optim.AdamW(
        [
            {"params": [head.weight], "weight_decay": 1e-4},
            {"params": [head.bias], "weight_decay": 0.0},
        ],
        lr=1e-3,
    )
    tf = hand_transform(size)
    gen = torch.Generator().manual_seed(seed)
    train_dl = DataLoader(
        Files(splits["train"], tf), batch_size=bs, shuffle=True, num_workers=workers, generator=gen
    )
    val_dl = DataLoader(Files(splits["val"], tf), batch_size=bs, num_workers=workers)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * len(train_dl))
    lossf = nn.CrossEntropyLoss()
    history = []
    t_train = time.perf_counter()
    for epoch in range(epochs):
        head.train()
        tl, tc, tn = 0.0, 0, 0
        for x, y in train_dl:
            with torch.no_grad():
                f = base(x)
            out = head(f)
            loss = lossf(out, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tl += float(loss.detach()) * len(y)
            tc += int((out.detach().argmax(1) == y).sum())
            tn += len(y)
        head.eval()
        vl, vc, vn = 0.0, 0, 0
        with torch.no_grad():
            for x, y in val_dl:
                out = head(base(x))
                vl += float(nn.functional.cross_entropy(out, y, reduction="sum"))
                vc += int((out.argmax(1) == y).sum())
                vn += len(y)
        history.append(
            {
                "epoch": epoch + 1,
                "train_loss": tl / tn,
                "train_acc": tc / tn,
                "val_loss": vl / vn,
                "val_acc": vc / vn,
            }
        )
    end = time.perf_counter()
    return {"whole": end - t_whole, "train": end - t_train, "history": history}


def part_hand(args: argparse.Namespace, wd: Path, weights: Path, workers: int | None) -> dict[str, Any]:
    import torch
    import torchvision

    from zoo.data import Loader, scan

    size = args.size
    lo = round(size * 8 / 7)  # the resize: no image is upscaled
    data = make_images(wd, args.images, lo, round(size * 1.6), args.seed)
    imgs = scan(data, val_fraction=0.2, seed=0)
    splits = {s: list(imgs.splits[s]) for s in ("train", "val")}
    w = workers if workers is not None else Loader(splits["train"], None, batch_size=args.batch_size).workers  # type: ignore[arg-type]
    card = small_card_id(size)
    print(
        f"\n== 1. runner vs a hand loop: resnet18 (random weights) at {size} px, cut avgpool, linear head; "
        f"{len(splits['train'])} train + {len(splits['val'])} val images "
        f"({lo}-{round(size * 1.6)} px JPEGs); "
        f"{args.epochs} epochs, batch {args.batch_size}, DataLoader workers {w}, {args.rounds} round(s)"
    )
    m = torchvision.models.resnet18(weights=None).eval()
    with torch.no_grad():  # warm-up: oneDNN primitives, the allocator
        m(torch.randn(args.batch_size, 3, size, size))
    del m
    rows: list[dict[str, Any]] = []
    opts = {
        "cut": "avgpool",
        "head": "pool=avg,dropout=0",
        "epochs": args.epochs,
        "lr": 1e-3,
        "batch_size": args.batch_size,
        "workers": w,
        "seed": args.seed,
    }
    for r in range(args.rounds):
        for side in ("hand", "zoo") if r % 2 == 0 else ("zoo", "hand"):
            if side == "hand":
                res = hand_run(weights, splits, size, args.epochs, args.batch_size, w, args.seed)
            else:
                res = run_zoo(card, data, wd / "runs" / "hand-vs-zoo", **opts)
            res["side"], res["round"] = side, r
            rows.append(res)
            extra = ""
            if side == "zoo":
                extra = "; inside: " + ", ".join(
                    f"{k} {s:.2f} s ({n}x)" for k, (s, n) in res["parts"].items() if n
                )
            print(
                f"  round {r} {side:4s}: train {res['train']:7.2f} s, whole {res['whole']:7.2f} s; "
                "val acc per epoch " + ", ".join(f"{h['val_acc']:.4f}" for h in res["history"]) + extra,
                flush=True,
            )
    med = {
        side: {k: statistics.median(x[k] for x in rows if x["side"] == side) for k in ("train", "whole")}
        for side in ("hand", "zoo")
    }
    z = [x for x in rows if x["side"] == "zoo"][-1]
    h = [x for x in rows if x["side"] == "hand"][-1]
    best = z["best_epoch"]
    print(
        f"  medians: train hand {med['hand']['train']:.2f} s, runner {med['zoo']['train']:.2f} s "
        f"-> overhead {100 * (med['zoo']['train'] / med['hand']['train'] - 1):+.1f} %"
    )
    print(
        f"           whole hand {med['hand']['whole']:.2f} s, runner {med['zoo']['whole']:.2f} s "
        f"-> overhead {100 * (med['zoo']['whole'] / med['hand']['whole'] - 1):+.1f} %"
    )
    per_round = []
    for r in range(args.rounds):
        a = next(x for x in rows if x["round"] == r and x["side"] == "hand")
        b = next(x for x in rows if x["round"] == r and x["side"] == "zoo")
        per_round.append(
            f"round {r}: train {100 * (b['train'] / a['train'] - 1):+.1f} %, "
            f"whole {100 * (b['whole'] / a['whole'] - 1):+.1f} %"
        )
    print("  per round: " + "; ".join(per_round))
    print(
        f"  accuracy: runner final {z['accuracy']:.4f} (best epoch {best} by val loss, re-evaluated); "
        f"hand val acc at epoch {best} {h['history'][best - 1]['val_acc']:.4f}, at the last epoch "
        f"{h['history'][-1]['val_acc']:.4f}"
    )
    return {"rows": rows, "median": med}


# ------------------------------------------------------------------ 2. tf-keras
KERAS_SIDE = r"""
import json, os, sys, time
t_start = time.perf_counter()
cmd, cfg = sys.argv[1], json.loads(sys.argv[2])
import tensorflow as tf
import tf_keras as keras
tf.config.threading.set_intra_op_parallelism_threads(cfg["threads"])
tf.config.threading.set_inter_op_parallelism_threads(cfg["threads"])
keras.utils.set_random_seed(cfg["seed"])
S = cfg["size"]
if cmd == "make":
    m = keras.applications.MobileNet(weights=None, alpha=0.25, include_top=False, input_shape=(S, S, 3))
    # BatchNorm statistics from one batch of the training images (momentum 0 for one training-mode
    # call): with Keras's initial statistics (0, 1) the random net's features are near constant
    rows = json.loads(open(cfg["lists"]).read())["train"][:64]
    x = tf.stack([tf.cast(tf.io.decode_jpeg(tf.io.read_file(r[0]), channels=3), tf.float32) / 127.5 - 1.0
                  for r in rows])
    bns = [layer for layer in m.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in bns:
        layer.momentum = 0.0
    m(x, training=True)
    for layer in bns:
        layer.momentum = 0.99
    m.save(cfg["h5"], save_format="h5")
    made = {"output": m.layers[-1].name, "shape": list(m.output_shape), "params": m.count_params()}
    print(json.dumps(made))
    sys.exit(0)
lists = json.loads(open(cfg["lists"]).read())
B = cfg["batch_size"]

def load(p, y):
    x = tf.io.decode_jpeg(tf.io.read_file(p), channels=3)
    x = tf.cast(x, tf.float32) / 127.5 - 1.0
    x.set_shape((S, S, 3))
    return x, y

def dataset(rows, shuffle):
    d = tf.data.Dataset.from_tensor_slices(([r[0] for r in rows], [r[1] for r in rows]))
    if shuffle:
        d = d.shuffle(len(rows), seed=cfg["seed"], reshuffle_each_iteration=True)
    return d.map(load, num_parallel_calls=tf.data.AUTOTUNE).batch(B).prefetch(tf.data.AUTOTUNE)

train, val = dataset(lists["train"], True), dataset(lists["val"], False)
base = keras.models.load_model(cfg["h5"], compile=False)
base.trainable = False
inp = keras.Input((S, S, 3))
x = keras.layers.GlobalAveragePooling2D()(base(inp, training=False))
model = keras.Model(inp, keras.layers.Dense(cfg["classes"])(x))
steps = cfg["epochs"] * ((len(lists["train"]) + B - 1) // B)
opt = keras.optimizers.AdamW(keras.optimizers.schedules.CosineDecay(1e-3, steps), weight_decay=1e-4)
opt.exclude_from_weight_decay(var_names=["bias"])
model.compile(opt, keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
t0 = time.perf_counter()
h = model.fit(train, epochs=cfg["epochs"], validation_data=val, verbose=0)
fit = time.perf_counter() - t0
print(json.dumps({"fit": fit, "in_process": time.perf_counter() - t_start, "tf": tf.__version__,
                  "keras": keras.__version__, "val_acc": h.history["val_accuracy"],
                  "val_loss": h.history["val_loss"]}))
"""


def keras_call(wd: Path, cmd: str, cfg: dict[str, Any]) -> tuple[dict[str, Any], float]:
    script = wd / "keras_side.py"
    script.write_text(KERAS_SIDE)
    env = {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "CUDA_VISIBLE_DEVICES": "",
        "TF_USE_LEGACY_KERAS": "1",
        "PYTHONHASHSEED": "0",
    }
    t0 = time.perf_counter()
    p = subprocess.run(
        [sys.executable, str(script), cmd, json.dumps(cfg)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - t0
    if p.returncode:
        raise RuntimeError(f"tf-keras subprocess ({cmd}) failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1]), wall


def part_keras(args: argparse.Namespace, wd: Path, workers: int | None) -> dict[str, Any]:
    from zoo.data import Loader, scan

    S = args.keras_size
    data = make_images(wd, args.keras_images, S, S, args.seed)
    imgs = scan(data, val_fraction=0.2, seed=0)
    lists = {s: [[str(p), int(y)] for p, y in imgs.splits[s]] for s in ("train", "val")}
    (wd / "keras_lists.json").write_text(json.dumps(lists))
    w = (
        workers
        if workers is not None
        else Loader(imgs.splits["train"], None, batch_size=args.batch_size).workers
    )  # type: ignore[arg-type]
    cfg = {
        "threads": args.threads,
        "seed": args.seed,
        "size": S,
        "h5": str(wd / f"mobilenet025-{S}.h5"),
        "lists": str(wd / "keras_lists.json"),
        "batch_size": args.batch_size,
        "epochs": args.keras_epochs,
        "classes": CLASSES,
    }
    made, _ = keras_call(wd, "make", cfg)
    folder = wd / f"mobilenet025-{S}-zoo"
    t0 = time.perf_counter()
    subprocess.run(
        [
            str(Path(sys.executable).with_name("zoo")),
            "convert",
            cfg["h5"],
            "-o",
            str(folder),
            "--force",
            "--preprocess",
            "scale=1/127.5",
            "--preprocess",
            "mean=1,1,1",
            "--preprocess",
            f"input_size=3,{S},{S}",
        ],
        check=True,
        capture_output=True,
    )
    conv = time.perf_counter() - t0
    print(
        f"\n== 2. runner vs tf-keras fit: keras.applications.MobileNet(alpha=0.25) at {S} px "
        f"(random weights, {made['params']:,} parameters, output {made['output']} {made['shape']}), frozen, "
        f"GAP + Dense({CLASSES}); {len(lists['train'])} train + {len(lists['val'])} val images "
        f"({S} px JPEGs); {args.keras_epochs} epochs, "
        f"batch {args.batch_size}; zoo convert {conv:.1f} s (not in any figure)"
    )
    ker, wall = keras_call(wd, "fit", cfg)
    print(
        f"  tf-keras {ker['keras']} (TF {ker['tf']}), {args.threads} intra/inter-op threads: "
        f"fit {ker['fit']:.2f} s, "
        f"subprocess {wall:.2f} s (TF import included); val acc per epoch "
        + ", ".join(f"{a:.4f}" for a in ker["val_acc"]),
        flush=True,
    )
    z = run_zoo(
        str(folder),
        data,
        wd / "runs" / "keras-vs-zoo",
        cut=KERAS_CUT,
        head="pool=avg,dropout=0",
        epochs=args.keras_epochs,
        lr=1e-3,
        batch_size=args.batch_size,
        workers=w,
        seed=args.seed,
    )
    print(
        f"  runner (workers {w}): train {z['train']:.2f} s, whole {z['whole']:.2f} s; val acc per epoch "
        + ", ".join(f"{h['val_acc']:.4f}" for h in z["history"])
        + f"; final {z['accuracy']:.4f} (best epoch {z['best_epoch']}); inside: "
        + ", ".join(f"{k} {s:.2f} s ({n}x)" for k, (s, n) in z["parts"].items() if n)
    )
    bare = bare_forward(folder, imgs.splits, args.batch_size, w) * args.keras_epochs
    print(
        f"  bare torch forward of the converted base (zoo.data.Loader, no_grad, no head, no step): one pass "
        f"over train + val, measured, x {args.keras_epochs} epochs = {bare:.2f} s"
    )
    print(
        f"  runner train / keras fit = {z['train'] / ker['fit']:.2f}; runner whole call / keras subprocess = "
        f"{z['whole'] / wall:.2f}"
    )
    return {"keras": ker, "keras_wall": wall, "zoo": z}


def bare_forward(folder: Path, splits: dict[str, Any], bs: int, workers: int) -> float:
    """Seconds of one pass of the converted base over train + val in zoo's Loader, no_grad."""
    import torch

    from zoo.data import Loader, transform_for
    from zoo.models import load

    base = load(str(folder)).cut(KERAS_CUT).eval()
    tf = transform_for(str(folder))
    t0 = time.perf_counter()
    with torch.no_grad():
        for split in ("train", "val"):
            for b in Loader(splits[split], tf, batch_size=bs, workers=workers, progress=False):
                base(b["x"])
    return time.perf_counter() - t0


# ------------------------------------------------------------------ 3. the feature cache
def part_cache(args: argparse.Namespace, wd: Path, home: Path, workers: int | None) -> dict[str, Any]:
    data = fb.make_images(wd, args.cache_images, args.seed)
    common = {"cut": "avgpool", "batch_size": args.cache_batch_size, "seed": args.seed}
    if workers is not None:
        common["workers"] = workers
    print(
        f"\n== 3. cache_features=True vs without: resnet18 (random weights) at 224 px, "
        f"{args.cache_images} images "
        f"(256-480 px JPEGs, val fraction 0.2), cut avgpool, default head, batch {args.cache_batch_size}"
    )
    shutil.rmtree(home / "features", ignore_errors=True)  # a cold feature cache
    c = run_zoo(
        CARD_ID, data, wd / "runs" / "cached", epochs=args.cache_epochs, cache_features=True, **common
    )
    print(
        f"  cached, {args.cache_epochs} epochs (measured): whole {c['whole']:.2f} s, "
        f"train {c['train']:.2f} s; cache used {c['cache'].get('used')} (built {c['cache'].get('built')}); "
        f"final acc {c['accuracy']:.4f}; inside: "
        + ", ".join(f"{k} {s:.2f} s ({n}x)" for k, (s, n) in c["parts"].items() if n),
        flush=True,
    )
    u = run_zoo(CARD_ID, data, wd / "runs" / "uncached", epochs=args.uncached_epochs, **common)
    per_epoch = u["train"] / args.uncached_epochs
    print(
        f"  uncached, {args.uncached_epochs} epochs (measured): whole {u['whole']:.2f} s, "
        f"train {u['train']:.2f} s ({per_epoch:.2f} s an epoch); final acc {u['accuracy']:.4f}; inside: "
        + ", ".join(f"{k} {s:.2f} s ({n}x)" for k, (s, n) in u["parts"].items() if n)
    )
    missing = args.cache_epochs - args.uncached_epochs
    if missing > 0:
        total, how = (
            u["whole"] + missing * per_epoch,
            f"extrapolated: measured call + {missing} x {per_epoch:.2f} s",
        )
    else:
        total, how = u["whole"], "measured"
    print(f"  uncached, {args.cache_epochs} epochs: {total:.2f} s ({how})")
    print(f"  whole run: uncached / cached = {total / c['whole']:.2f}x")
    print(
        f"  train part only (the runner's train_seconds; cached: the head on the features, the caching "
        f"pass is before it): uncached {args.cache_epochs} x {per_epoch:.2f} s / cached {c['train']:.2f} s = "
        f"{args.cache_epochs * per_epoch / c['train']:.0f}x"
    )
    return {"cached": c, "uncached": u, "uncached_total": total}


# ------------------------------------------------------------------ 4. GPU (not run without CUDA)
def part_gpu(args: argparse.Namespace, wd: Path, weights_url_dir: Path) -> None:
    import torch
    import torchvision

    if not torch.cuda.is_available():
        print("\n== 4. GPU: no CUDA device here: resnet50 AMP + channels_last not measured")
        return
    dev = torch.device("cuda")
    bs, steps = 64, 30
    m = torchvision.models.resnet50(weights=None).to(dev).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-4)
    x = torch.randn(bs, 3, 224, 224, device=dev).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, CLASSES, (bs,), device=dev)
    dt = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    for i in range(steps + 5):
        if i == 5:
            torch.cuda.synchronize()
            t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=dt):
            loss = torch.nn.functional.cross_entropy(m(x).float(), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    bare = steps * bs / (time.perf_counter() - t0)
    torch.manual_seed(0)
    wfile = weights_url_dir / "resnet50-random.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), wfile)
    print(
        f"\n== 4. GPU {torch.cuda.get_device_name()}: bare resnet50 fwd/bwd/step {bare:.0f} images/s ({dt})"
    )
    print("  (the runner side needs a resnet50 card served like resnet18's: not wired in this script)")


# ------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/zoo-bench-finetune"))
    ap.add_argument("--threads", type=int, default=2, help="torch (and TF) intra-op threads")
    ap.add_argument("--images", type=int, default=1000, help="part 1: images")
    ap.add_argument("--size", type=int, default=112, help="part 1: input size (px)")
    ap.add_argument("--epochs", type=int, default=3, help="part 1: epochs")
    ap.add_argument("--batch-size", type=int, default=32, help="parts 1 and 2")
    ap.add_argument("--rounds", type=int, default=2, help="part 1: rounds (order alternating)")
    ap.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: zoo's)")
    ap.add_argument("--keras-images", type=int, default=2000)
    ap.add_argument("--keras-size", type=int, default=96)
    ap.add_argument("--keras-epochs", type=int, default=5)
    ap.add_argument("--cache-images", type=int, default=2000)
    ap.add_argument("--cache-epochs", type=int, default=10)
    ap.add_argument("--uncached-epochs", type=int, default=2, help="uncached epochs actually run")
    ap.add_argument("--cache-batch-size", type=int, default=64)
    ap.add_argument("--skip-hand", action="store_true")
    ap.add_argument("--skip-keras", action="store_true")
    ap.add_argument("--skip-cache", action="store_true")
    ap.add_argument("--gpu", action="store_true", help="part 4 (needs CUDA)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    wd: Path = args.workdir.resolve()
    (wd / "served").mkdir(parents=True, exist_ok=True)
    home = wd / "home"
    shutil.rmtree(home, ignore_errors=True)
    for k in [k for k in os.environ if k.startswith("ZOO_")]:
        del os.environ[k]
    os.environ.update(
        {
            "ZOO_HOME": str(home),
            "ZOO_REGISTRY": str(wd / "registry.json"),
            "ZOO_RETRIES": "1",
            "NO_PROXY": "127.0.0.1",
        }
    )
    logging.getLogger("zoo").setLevel(logging.WARNING)

    import torch
    import torchvision

    torch.set_num_threads(args.threads)
    wfile = wd / "served" / fb.WEIGHTS
    sha = fb.make_weights(wfile)
    srv = fb.serve(wd / "served")
    url = f"http://127.0.0.1:{srv.server_address[1]}/{fb.WEIGHTS}"
    write_registry(wd / "registry.json", url, wfile.stat().st_size, sha, args.size)
    from zoo import api

    api.pull(CARD_ID)  # the download is never timed
    api.pull(small_card_id(args.size))
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"torch {torch.__version__}, torchvision {torchvision.__version__}; "
        f"torch threads {torch.get_num_threads()}; CUDA {'yes' if torch.cuda.is_available() else 'no'}"
    )
    t0 = time.perf_counter()
    if not args.skip_hand:
        part_hand(args, wd, wfile, args.workers)
    if not args.skip_keras:
        part_keras(args, wd, args.workers)
    if not args.skip_cache:
        part_cache(args, wd, home, args.workers)
    if args.gpu:
        part_gpu(args, wd, wd / "served")
    elif not torch.cuda.is_available():
        print("\n== 4. GPU: no CUDA device here: resnet50 AMP + channels_last images/s not measured")
    print(f"\n(total {time.perf_counter() - t0:.0f} s)")
    srv.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
