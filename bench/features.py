"""Cached features: a linear head on zoo's cached features against the same head trained through
the frozen base, and zoo's extraction throughput against a hand-written torchvision loop.

Usage: .venv/bin/python bench/features.py [--images 2000] [--epochs 10] [--base-epochs 3]
       [--workdir /tmp/zoo-bench-features] [--threads 2] [--batch-size 64] [--stage-images 512]
       [--stage-rounds 3] [--workers0]

Set-up (nothing leaves the machine): ``--images`` generated JPEGs (smooth random colour fields with
a class tint, sizes 256-480 px a side) in 10 class folders; a torchvision resnet18 with random
weights (``torch.manual_seed(0)``, BatchNorm statistics randomized) saved as a state-dict ``.pth``
and served on 127.0.0.1; a one-model registry (``ZOO_REGISTRY``) holding the bundled
``torchvision/resnet18.imagenet1k_v1`` card with its file pointed at that URL and pinned to the
file's sha256; a private ``ZOO_HOME``. Torch runs with ``--threads`` intra-op threads everywhere.

1. Extraction throughput, images/s over the whole data set, each timed from a cold feature cache:

   - ``zoo`` : ``zoo.features.features(id, data, cut="avgpool", batch_size=B)`` (what
     ``zoo features`` runs; its default DataLoader workers) -- wall time of the call: scan, cache
     key, model load, extraction, shards written and checksummed;
   - ``hand``: torchvision ``resnet18`` with the same state dict and ``fc = Identity``, a torch
     ``DataLoader`` over the same files (PIL ``open().convert("RGB")`` + ``Resize(256)``,
     ``CenterCrop(224)``, ``ToTensor()``, ``Normalize``), the same batch size and workers,
     forward under ``no_grad``; with ``--workers0`` the same pair with no workers as well.

   Then where the time goes: on ``--stage-images`` files, in this process, one stage at a time,
   for the hand pipeline and for zoo's (``zoo.data.Transform.open`` / ``Transform.__call__`` /
   the model ``zoo.models.load`` cut at ``avgpool``): decode, preprocess and batch stack at one
   torch thread (as in a DataLoader worker), the median of ``--stage-rounds`` rounds with the
   pipelines alternating; forward at ``--threads``, the two models alternating batch by batch.
   The inputs and features of both pipelines are compared (max abs difference).

2. Training a linear head (``nn.Linear(512, 10)``, AdamW lr 1e-3, cross-entropy, batches of B,
   shuffled) for ``--epochs`` epochs: on zoo's cached features (a torch tensor made from the
   memory-mapped ``X``; at one torch thread: on 2 shared cores a 512 x 10 head at 2 threads spends
   most of its time in threads waiting on each other), and through the frozen base (each epoch
   decodes + preprocesses every image with the hand pipeline's DataLoader, forwards it through the
   frozen resnet18 under ``no_grad`` in eval mode, then takes the head's step). Only
   ``--base-epochs`` through-base epochs are run; the whole-run figure multiplies their median by
   ``--epochs`` (printed as extrapolated when the two differ). Whole run, cached: the caching pass
   (the ``zoo`` extraction above) + the tensor copy + every cached epoch.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import sys
import threading
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CARD_ID = "torchvision/resnet18.imagenet1k_v1"
CUT = "avgpool"
CLASSES = 10
WEIGHTS = "resnet18-random.pth"


# ------------------------------------------------------------------ set-up
def make_images(root: Path, n: int, seed: int = 0) -> Path:
    """``n`` JPEGs in ``CLASSES`` class folders under ``root/images-<n>`` (reused when complete)."""
    from PIL import Image

    out = root / f"images-{n}"
    done = out / ".complete"
    if done.is_file():
        return out
    shutil.rmtree(out, ignore_errors=True)
    rng = np.random.default_rng(seed)
    tints = rng.uniform(0.6, 1.4, size=(CLASSES, 3))
    for i in range(n):
        c = i % CLASSES
        w, h = (int(v) for v in rng.integers(256, 481, size=2))
        low = rng.uniform(0, 255, size=(int(rng.integers(4, 17)), int(rng.integers(4, 17)), 3))
        im = Image.fromarray(np.clip(low * tints[c], 0, 255).astype(np.uint8)).resize((w, h), Image.BICUBIC)
        a = np.asarray(im, np.float32) + rng.normal(0, 8, size=(h, w, 3))
        d = out / f"class{c:02d}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(d / f"{i:05d}.jpg", quality=90)
    done.write_text("ok\n")
    return out


def make_weights(path: Path) -> str:
    """A random torchvision resnet18 state dict at ``path``; returns its sha256."""
    import torch
    import torchvision

    if not path.is_file():
        torch.manual_seed(0)
        m = torchvision.models.resnet18(weights=None)
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.1, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
        torch.save(m.state_dict(), path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_registry(path: Path, url: str, size: int, sha: str) -> None:
    reg = json.loads((ROOT / "registry.json").read_text())
    card = next(m for m in reg["models"] if m["id"] == CARD_ID)
    card["files"] = [
        {
            "name": WEIGHTS,
            "role": "weights",
            "urls": [url],
            "size": size,
            "checksum": {"algo": "sha256", "value": sha, "source": "bench/features.py (random weights)"},
        }
    ]
    path.write_text(json.dumps({"schema_version": reg["schema_version"], "models": [card]}, indent=1) + "\n")


def serve(folder: Path) -> ThreadingHTTPServer:
    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(folder)))
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return srv


# ------------------------------------------------------------------ the hand pipeline
def hand_transform() -> Any:
    from torchvision import transforms as T

    return T.Compose(
        [
            T.Resize(256),
            T.CenterCrop(224),
            T.ToTensor(),
            T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ]
    )


class HandFiles:
    """(tensor, label) per file: PIL decode + torchvision transforms."""

    def __init__(self, items: list[tuple[Path, int]]) -> None:
        self.items = items
        self.tf = hand_transform()

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Any:
        from PIL import Image

        p, y = self.items[i]
        with Image.open(p) as im:
            return self.tf(im.convert("RGB")), y


def hand_model(weights: Path) -> Any:
    import torch
    import torchvision

    m = torchvision.models.resnet18(weights=None)
    m.load_state_dict(torch.load(weights, weights_only=True))
    m.fc = torch.nn.Identity()
    return m.eval()


def hand_loader(items: list[tuple[Path, int]], batch_size: int, workers: int, shuffle: bool = False) -> Any:
    from torch.utils.data import DataLoader

    return DataLoader(HandFiles(items), batch_size=batch_size, shuffle=shuffle, num_workers=workers)


def hand_extract(model: Any, items: list[tuple[Path, int]], batch_size: int, workers: int) -> np.ndarray:
    import torch

    out = []
    with torch.no_grad():
        for x, _ in hand_loader(items, batch_size, workers):
            out.append(model(x).numpy())
    return np.concatenate(out)


# ------------------------------------------------------------------ stages
def stage_times(
    items: list[tuple[Path, int]], batch_size: int, zoo_net: Any, zoo_tf: Any, model: Any, rounds: int
) -> dict[str, Any]:
    """Seconds per stage over ``items`` in this process, one stage at a time, for both pipelines:
    decode / preprocess / stack as the median of ``rounds`` rounds (the pipelines alternating),
    forward once, the two models alternating batch by batch (the same load on both)."""
    import torch
    from PIL import Image

    tf = hand_transform()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a DataLoader worker
    runs: dict[str, dict[str, list[float]]] = {"hand": {}, "zoo": {}}
    batches: dict[str, list[Any]] = {}
    for r in range(rounds):
        for name in ("hand", "zoo") if r % 2 == 0 else ("zoo", "hand"):
            t = runs[name]
            t0 = time.perf_counter()
            if name == "hand":
                ims = []
                for p, _ in items:
                    with Image.open(p) as im:
                        ims.append(im.convert("RGB"))
            else:
                ims = [zoo_tf.open(p)[0] for p, _ in items]
            t.setdefault("decode", []).append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            xs = [tf(im) for im in ims] if name == "hand" else [zoo_tf(im) for im in ims]
            t.setdefault("preprocess", []).append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            batches[name] = [torch.stack(xs[i : i + batch_size]) for i in range(0, len(xs), batch_size)]
            t.setdefault("stack", []).append(time.perf_counter() - t0)
            del ims, xs
    res: dict[str, Any] = {k: {s: statistics.median(v) for s, v in t.items()} for k, t in runs.items()}
    torch.set_num_threads(threads)
    outs: dict[str, list[Any]] = {"hand": [], "zoo": []}
    fwd = {"hand": 0.0, "zoo": 0.0}
    with torch.no_grad():
        for i in range(len(batches["hand"])):
            for name in ("hand", "zoo") if i % 2 == 0 else ("zoo", "hand"):
                net = model if name == "hand" else zoo_net
                t0 = time.perf_counter()
                o = net(batches[name][i])
                fwd[name] += time.perf_counter() - t0
                outs[name].append(o.float().mean(dim=(2, 3)) if o.ndim == 4 else o)
    for name in fwd:
        res[name]["forward"] = fwd[name]
    res["max_abs_diff"] = float((torch.cat(outs["hand"]) - torch.cat(outs["zoo"])).abs().max())
    res["max_abs_input_diff"] = max(
        float((a - b).abs().max()) for a, b in zip(batches["hand"], batches["zoo"], strict=True)
    )
    return res


# ------------------------------------------------------------------ head training
def train_cached(
    X: np.ndarray, y: np.ndarray, epochs: int, batch_size: int, seed: int
) -> tuple[float, list[float], float]:
    """(tensor copy seconds, seconds per epoch, final epoch's mean loss)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 512 x 10 head: more threads only wait on each other
    t0 = time.perf_counter()
    xt = torch.from_numpy(np.array(X, dtype=np.float32))
    yt = torch.from_numpy(np.array(y, dtype=np.int64))
    copy = time.perf_counter() - t0
    torch.manual_seed(seed)
    head = torch.nn.Linear(xt.shape[1], CLASSES)
    opt = torch.optim.AdamW(head.parameters(), lr=1e-3)
    lossf = torch.nn.CrossEntropyLoss()
    times, loss_sum = [], 0.0
    for _ in range(epochs):
        t0 = time.perf_counter()
        perm = torch.randperm(len(xt))
        loss_sum, n = 0.0, 0
        for i in range(0, len(xt), batch_size):
            idx = perm[i : i + batch_size]
            loss = lossf(head(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss_sum += float(loss.detach()) * len(idx)
            n += len(idx)
        times.append(time.perf_counter() - t0)
        loss_sum /= n
    torch.set_num_threads(threads)
    return copy, times, loss_sum


def train_through_base(
    model: Any, items: list[tuple[Path, int]], epochs: int, batch_size: int, workers: int, seed: int
) -> tuple[list[float], float]:
    import torch

    torch.manual_seed(seed)
    head = torch.nn.Linear(512, CLASSES)
    opt = torch.optim.AdamW(head.parameters(), lr=1e-3)
    lossf = torch.nn.CrossEntropyLoss()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    times, loss_sum = [], 0.0
    for _ in range(epochs):
        t0 = time.perf_counter()
        loss_sum, n = 0.0, 0
        for x, yb in hand_loader(items, batch_size, workers, shuffle=True):
            with torch.no_grad():
                f = model(x)
            loss = lossf(head(f), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss_sum += float(loss.detach()) * len(yb)
            n += len(yb)
        times.append(time.perf_counter() - t0)
        loss_sum /= n
    return times, loss_sum


# ------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--base-epochs", type=int, default=3, help="through-base epochs actually run")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/zoo-bench-features"))
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--stage-images", type=int, default=512, help="files for the per-stage timing")
    ap.add_argument("--stage-rounds", type=int, default=3, help="rounds of decode/preprocess timing")
    ap.add_argument(
        "--workers0", action="store_true", help="also time both pipelines with no DataLoader workers"
    )
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

    import torch
    import torchvision
    from PIL import __version__ as pil_version

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    data = make_images(wd, args.images, args.seed)
    print(f"images: {args.images} JPEGs in {CLASSES} classes at {data} ({time.perf_counter() - t0:.1f} s)")
    wfile = wd / "served" / WEIGHTS
    sha = make_weights(wfile)
    srv = serve(wd / "served")
    url = f"http://127.0.0.1:{srv.server_address[1]}/{WEIGHTS}"
    write_registry(wd / "registry.json", url, wfile.stat().st_size, sha)

    from zoo import api
    from zoo.data import Loader, scan, transform_for
    from zoo.features import features
    from zoo.models import load

    api.pull(CARD_ID)  # the download is not part of any timing
    items = scan(data)["train"]
    zoo_workers = Loader(items, None, batch_size=args.batch_size).workers  # type: ignore[arg-type]
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, Pillow {pil_version}, "
        f"numpy {np.__version__}; torch threads {torch.get_num_threads()}"
    )
    print(f"model: {CARD_ID} (random weights, sha256 {sha[:12]}) cut at {CUT}; batch {args.batch_size}")
    print(f"zoo's default DataLoader workers for {len(items)} files: {zoo_workers}")

    model = hand_model(wfile)
    zoo_tf = transform_for(CARD_ID)
    zoo_net = load(CARD_ID).cut(CUT).eval()
    with torch.no_grad():  # warm-up (oneDNN primitives, allocator)
        warm = torch.randn(args.batch_size, 3, 224, 224)
        model(warm)
        zoo_net(warm)

    # -- 1. extraction throughput
    n = len(items)
    cached: list[Any] = []

    def run_zoo(workers: int | None) -> float:
        shutil.rmtree(home / "features", ignore_errors=True)
        t0 = time.perf_counter()
        f = features(CARD_ID, data, cut=CUT, batch_size=args.batch_size, workers=workers, progress=False)
        dt = time.perf_counter() - t0
        assert not f.reused and f.X["train"].shape == (n, 512)
        if workers is None:
            cached.append(f)
        return dt

    def run_hand(workers: int) -> float:
        t0 = time.perf_counter()
        out = hand_extract(model, items, args.batch_size, workers)
        dt = time.perf_counter() - t0
        assert out.shape == (n, 512)
        return dt

    runs = [("zoo", zoo_workers, lambda: run_zoo(None)), ("hand", zoo_workers, lambda: run_hand(zoo_workers))]
    if zoo_workers and args.workers0:  # the same pair in the main process only, in the reverse order
        runs += [("hand", 0, lambda: run_hand(0)), ("zoo", 0, lambda: run_zoo(0))]
    print(f"\n== extraction, {n} images (zoo: from a cold feature cache, scan + key + load + write included)")
    ext: dict[tuple[str, int], float] = {}
    for name, w, fn in runs:
        dt = fn()
        ext[name, w] = dt
        default = ", zoo's default" if w == zoo_workers else ""
        print(f"  {name:4s} workers {w}{default:15s} {dt:7.2f} s  {n / dt:6.1f} images/s")
    for w in sorted({w for _, w, _ in runs}, reverse=True):
        print(f"  zoo / hand throughput, workers {w}: {ext['hand', w] / ext['zoo', w]:.3f}")

    m = min(args.stage_images, n)
    print(
        f"\n== stages, {m} files, this process, one stage at a time (decode, preprocess, stack at 1 torch "
        f"thread; forward at {torch.get_num_threads()})"
    )
    st = stage_times(items[:m], args.batch_size, zoo_net, zoo_tf, model, args.stage_rounds)
    for name in ("hand", "zoo"):
        t = st[name]
        total = sum(t.values())
        parts = "  ".join(f"{k} {v:6.2f} s ({1000 * v / m:5.2f} ms/img)" for k, v in t.items())
        print(f"  {name:4s}: {parts}  sum {total:6.2f} s ({m / total:.1f} images/s)")
    print(
        f"  hand vs zoo: inputs max abs difference {st['max_abs_input_diff']:.2e}, "
        f"features {st['max_abs_diff']:.2e}"
    )

    # -- 2. the linear head
    feats = cached[0]
    print(f"\n== linear head, {args.epochs} epochs, batch {args.batch_size}")
    copy, ct, closs = train_cached(
        feats.X["train"], feats.y["train"], args.epochs, args.batch_size, args.seed
    )
    bt, bloss = train_through_base(model, items, args.base_epochs, args.batch_size, zoo_workers, args.seed)
    c_med, b_med = statistics.median(ct), statistics.median(bt)
    print(
        f"  cached:       epochs {', '.join(f'{1000 * t:.1f}' for t in ct)} ms; "
        f"median {1000 * c_med:.2f} ms; tensor copy {1000 * copy:.1f} ms; last-epoch loss {closs:.3f}"
    )
    print(
        f"  through base: {len(bt)} epoch(s) run (workers {zoo_workers}): "
        f"{', '.join(f'{t:.2f}' for t in bt)} s; median {b_med:.2f} s; last-epoch loss {bloss:.3f}"
    )
    print(f"  per epoch: through base / cached = {b_med / c_med:,.0f}x (medians)")
    zoo_pass = ext["zoo", zoo_workers]
    cached_total = zoo_pass + copy + sum(ct)
    if len(bt) == args.epochs:
        base_total, how = sum(bt), "measured"
    else:
        base_total, how = args.epochs * b_med, f"{args.epochs} x the median of {len(bt)}: extrapolated"
    print(
        f"  whole run, cached: caching pass {zoo_pass:.2f} s + copy + {args.epochs} epochs "
        f"= {cached_total:.2f} s"
    )
    print(f"  whole run, through base: {base_total:.2f} s ({how})")
    print(f"  whole run: through base / cached = {base_total / cached_total:.2f}x")
    srv.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
