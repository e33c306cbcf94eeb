"""``zoo finetune`` / ``zoo evaluate`` end to end: the run folder, config.json, resume checks,
the feature cache for stage 1, the final evaluation and the reports (zoo.report)."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zoo.dist import World, pick_device
from zoo.errors import ZooError
from zoo.finetune.config import HeadSpec, Options
from zoo.finetune.loop import (
    CHECKPOINT,
    Trainer,
    amp_dtype,
    build,
    load_checkpoint,
)
from zoo.finetune.model import BATCHNORMS, FineTuneModel, Head

log = logging.getLogger("zoo.finetune")

RUN_FORMAT = 1


@dataclass
class RunResult:
    """What :func:`finetune` returns (metrics.json holds the same and more)."""

    run_dir: Path
    accuracy: float
    best_epoch: int
    history: list[dict[str, Any]]
    cache: dict[str, Any]
    metrics: dict[str, Any] = field(repr=False, default_factory=dict)


def _data_doc(imgs: Any) -> dict[str, Any]:
    def stat(p: Path) -> list[Any]:
        st = p.stat()
        return [st.st_size, st.st_mtime_ns]

    return {
        "root": str(Path(imgs.root).resolve()),
        "layout": imgs.layout,
        "val_fraction": imgs.val_fraction,
        "seed": imgs.seed,
        "classes": list(imgs.classes),
        "splits": {s: [[str(p), y, *stat(p)] for p, y in items] for s, items in imgs.splits.items()},
    }


def _data_changes(old: dict[str, Any], new: dict[str, Any]) -> str | None:
    """What changed between two data documents, in words; None if nothing did."""
    if old.get("classes") != new.get("classes"):
        return f"the classes changed ({', '.join(old.get('classes', []))} -> {', '.join(new['classes'])})"
    a = {r[0]: r for s in old.get("splits", {}).values() for r in s}
    b = {r[0]: r for s in new["splits"].values() for r in s}
    added, removed = sorted(set(b) - set(a)), sorted(set(a) - set(b))
    changed = sorted(k for k in set(a) & set(b) if a[k] != b[k])
    moved = sorted(
        k
        for s, rows in new["splits"].items()
        for k in (r[0] for r in rows)
        if k in a and k not in {r[0] for r in old["splits"].get(s, [])}
    )
    parts = []
    for what, items in (
        ("added", added),
        ("removed", removed),
        ("changed", changed),
        ("moved to another split", moved),
    ):
        if items:
            parts.append(f"{len(items)} file(s) {what} (first: {items[0]})")
    return "; ".join(parts) or None


def _check_out(run_dir: Path, force: bool) -> None:
    if run_dir.exists() and not run_dir.is_dir():
        raise ZooError(f"--out {run_dir}: exists and is not a folder")
    if run_dir.is_dir() and any(run_dir.iterdir()):
        if (run_dir / "config.json").is_file():
            raise ZooError(
                f"--out {run_dir}: a run is already there "
                f"(--resume {run_dir} continues it, --force replaces it)"
            )
        if not force:
            raise ZooError(f"--out {run_dir}: the folder is not empty (give --force to write into it)")


def _input_size(transform: Any) -> tuple[int, int, int]:
    return (int(transform.channels), int(transform.height), int(transform.width))


def _cache_for_stage1(
    model: Any, data: Any, opts: Options, built: Any, home: Any, world: World, device: torch.device
) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """(the cached features as tensors, what the report says about the cache)."""
    if not opts.cache_features:
        return None, {"used": False, "why": "not asked (--cache-features)"}
    if opts.epochs == 0:
        return None, {"used": False, "why": "no stage 1 epochs"}
    why = None
    if opts.augment:
        why = "augmentation is on (cached features are of unaugmented images)"
    elif opts.freeze != "all":
        why = f"--freeze {opts.freeze}: part of the base trains in stage 1"
    elif opts.train_bn and any(isinstance(m, BATCHNORMS) for m in built.net.base.modules()):
        why = "--train-bn: the base's BatchNorm layers train in stage 1"
    elif not built.net.head.pools_like_cache:
        why = (
            f"the head pools with {HeadSpec.parse(opts.head).pool!r}; the cache holds average-pooled features"
        )
    if why:
        return None, {"used": False, "why": why}
    from zoo.features import features

    kw: dict[str, Any] = {"mirrors": opts.mirrors} if opts.mirrors else {}
    f = features(
        model,
        data,
        cut=built.cut,
        val_fraction=opts.val_fraction,
        seed=opts.seed,
        home=home,
        batch_size=max(opts.batch_size, 64),
        workers=opts.workers,
        device=device,
        **kw,
    )
    if f.index.get("skipped"):
        n = len(f.index["skipped"])
        return None, {
            "used": False,
            "why": f"{n} file(s) could not be decoded: the cache rows would not match",
        }
    tensors = {
        "X": {s: torch.from_numpy(np.array(f.X[s])).to(device) for s in ("train", "val")},
        "y": {s: torch.from_numpy(np.array(f.y[s])).to(device) for s in ("train", "val")},
    }
    return tensors, {
        "used": True,
        "reused": f.reused,
        "built": not f.reused,
        "key": f.key,
        "path": str(f.path),
    }


def _bn_policy(opts: Options, net: FineTuneModel) -> str:
    n = sum(1 for m in net.base.modules() if isinstance(m, BATCHNORMS))
    if not n:
        return "the base has no BatchNorm layer"
    if opts.train_bn:
        return (
            f"--train-bn: the {n} BatchNorm layer(s) of the frozen part train "
            "(batch statistics; running statistics updated; affine trainable)"
        )
    return f"the {n} BatchNorm layer(s) of the frozen part stay in eval mode (statistics, affine untouched)"


@torch.no_grad()
def predict_split(
    net: FineTuneModel,
    items: list[tuple[Path, int]],
    transform: Any,
    *,
    device: torch.device,
    batch_size: int,
    workers: int | None,
    amp: str = "off",
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(labels, softmax probabilities, paths) of the decodable ``items``."""
    from zoo.data import Loader

    net.eval()
    ys, ps, paths = [], [], []
    dt = amp_dtype(amp, device)
    for b in Loader(items, transform, batch_size=batch_size, workers=workers, description="evaluate"):
        x = b["x"].to(device)
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        if dt is not None:
            with torch.autocast(device.type, dtype=dt):
                out = net(x)
        else:
            out = net(x)
        ps.append(torch.softmax(out.float(), 1).cpu().numpy())
        ys.append(b["y"].numpy())
        paths += [str(items[i][0]) for i in b["index"].tolist()]
    if not ps:
        raise ZooError("no image to evaluate could be decoded")
    return np.concatenate(ys), np.concatenate(ps), paths


def _write_report(
    out: Path,
    classes: list[str],
    y: np.ndarray,
    p: np.ndarray,
    paths: list[str],
    history: Any,
    title: str,
    config: dict[str, Any],
) -> dict[str, Any]:
    from zoo.report import write_report

    return write_report(
        out, classes=classes, y_true=y, probs=p, paths=paths, history=history, title=title, config=config
    )


def finetune(
    model: Any = None,
    data: Any = None,
    out: Any = None,
    *,
    resume: Any = None,
    force: bool = False,
    home: Any = None,
    **options: Any,
) -> RunResult:
    """Fine-tune ``model`` (a registry / catalogue id or a zoo model folder) on ``data`` (an
    ImageFolder or CSV) into the run folder ``out``: stage 1 trains a new head on the frozen base,
    stage 2 (``stage2_epochs``) the top of the base too. ``resume=RUN_DIR`` continues a run after
    a crash or a kill, from its config.json and last checkpoint. ``options``: the fields of
    :class:`zoo.finetune.config.Options` (the CLI's flags)."""
    from zoo.api import _card_of
    from zoo.data import Augment, scan, transform_for
    from zoo.fileio import atomic_write_json

    world = World()
    if resume is not None:
        run_dir = Path(resume)
        cfg_path = run_dir / "config.json"
        if not cfg_path.is_file():
            raise ZooError(f"--resume {run_dir}: not a fine-tuning run (no config.json)")
        try:
            config = json.loads(cfg_path.read_text(encoding="utf-8"))
            opts = Options.from_dict(config["options"])
            model, data = config["model"], config["data"]["source"]
        except (ValueError, KeyError, TypeError) as e:
            raise ZooError(
                f"--resume {run_dir}: config.json is unreadable ({type(e).__name__}: {e})"
            ) from None
    else:
        if model is None or data is None or out is None:
            raise ZooError("zoo finetune needs MODEL, --data and --out (or --resume RUN_DIR)")
        run_dir = Path(out)
        opts = Options(**options).check()
        if world.main:
            _check_out(run_dir, force)
        config = {}
    card = _card_of(model, home)
    pull_kw = {"mirrors": opts.mirrors} if opts.mirrors else {}
    transform = transform_for(
        model, card=card, home=home, augment=Augment() if opts.augment else None, **pull_kw
    )
    imgs = scan(data, val_fraction=opts.val_fraction, seed=opts.seed)
    if "val" not in imgs.splits or not imgs.splits["val"]:
        raise ZooError(f"{data}: no validation images: give --val-fraction or a val/ folder")
    data_doc = _data_doc(imgs)
    if resume is not None:
        what = _data_changes(config["data"], data_doc)
        if what:
            raise ZooError(f"--resume {run_dir}: the data changed since the run started: {what}")
    device = pick_device(opts.device)
    built = build(model, card, opts, len(imgs.classes), _input_size(transform), home)
    net = built.net.to(device)
    if device.type == "cuda":
        net.to(memory_format=torch.channels_last)
    cached, cache_info = _cache_for_stage1(model, data, opts, built, home, world, device)
    dt = amp_dtype(opts.amp, device)
    if resume is None:
        config = {
            "format": RUN_FORMAT,
            "model": str(model),
            "model_id": card.id,
            "card": card.to_dict(),
            "data": {**data_doc, "source": str(data)},
            "options": opts.to_dict(),
            "cut": built.cut,
            "head": HeadSpec.parse(opts.head).to_dict(),
            "base_output_shape": list(built.in_shape),
            "input_size": list(built.input_size),
            "classes": list(imgs.classes),
            "world_size": world.world,
            "device": str(device),
            "amp": str(dt).replace("torch.", "") if dt else "off",
            "bn_policy": _bn_policy(opts, net),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        if world.main:
            run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_json(run_dir / "config.json", config)
    trainer = Trainer(opts, run_dir, built, transform, imgs, list(imgs.classes), world, device, cached)
    ck_path = run_dir / CHECKPOINT
    if resume is not None and ck_path.is_file():
        trainer.restore(load_checkpoint(ck_path))
    else:
        if resume is not None:
            log.warning("zoo: %s has no checkpoint yet: starting the run from the beginning", run_dir)
        # dropout's stream starts here, from the seed, whatever building the model or the feature
        # cache drew before (so a cached stage 1 draws the masks training through the base draws)
        torch.manual_seed(opts.seed)
    t0 = time.perf_counter()
    try:
        trainer.run()
    except torch.OutOfMemoryError:
        raise ZooError(
            f"CUDA ran out of memory at --batch-size {opts.batch_size}: lower --batch-size "
            f"(--accumulate K keeps the effective batch at K x the batch size)"
        ) from None
    seconds = time.perf_counter() - t0
    st = trainer.state
    metrics: dict[str, Any] = {}
    if world.main:
        from safetensors.torch import load_file

        best = run_dir / "model.safetensors"
        net.load_state_dict(load_file(str(best), device=str(device)))
        best_stage = next((r["stage"] for r in st.history if r["epoch"] == st.best_epoch), 2)
        if cached is not None and best_stage == 1:
            # the best weights' base is the frozen one the cache was made with: its val features
            # (one row per val image, in order: the cache is only used when every file decoded)
            with torch.no_grad():
                net.eval()
                out = net.head.mlp(cached["X"]["val"])
            y = cached["y"]["val"].cpu().numpy()
            p = torch.softmax(out.float(), 1).cpu().numpy()
            paths = [str(q) for q, _ in imgs.splits["val"]]
        else:
            y, p, paths = predict_split(
                net,
                imgs.splits["val"],
                transform,
                device=device,
                batch_size=opts.batch_size,
                workers=opts.workers,
                amp=opts.amp,
            )
        title = f"{card.id} fine-tuned on {Path(str(data)).name} (cut {built.cut})"
        final = _write_report(run_dir, list(imgs.classes), y, p, paths, st.history, title, config)
        stages = {}
        for s in (1, 2):
            rows = [r for r in st.history if r["stage"] == s]
            if rows:
                stages[f"stage{s}"] = {
                    "epochs": len(rows),
                    "stopped_early_at": st.stopped_early.get(str(s)),
                    "last_val_acc": rows[-1]["val_acc"],
                    "frozen": "base"
                    if s == 1 and opts.freeze == "all"
                    else (opts.freeze if s == 1 else f"unfreeze {opts.unfreeze}"),
                }
        metrics = {
            "format": RUN_FORMAT,
            "model_id": card.id,
            "cut": built.cut,
            "epochs": st.history,
            "best_epoch": st.best_epoch,
            "best_val_loss": st.best_loss,
            "final": final,
            **stages,
            "cache": cache_info,
            "bn_policy": config.get("bn_policy"),
            "device": str(device),
            "amp": config.get("amp"),
            "world_size": world.world,
            "timing": {"train_seconds": round(seconds, 3)},
        }
        atomic_write_json(run_dir / "metrics.json", metrics)
    world.broadcast(None)  # the others wait for rank 0's report
    return RunResult(
        run_dir,
        float(metrics.get("final", {}).get("accuracy", float("nan"))),
        st.best_epoch,
        st.history,
        cache_info,
        metrics,
    )


# ------------------------------------------------------------------ a finished run as a model
def read_run(run_dir: Any) -> dict[str, Any]:
    """config.json of a run folder that has best weights; one ZooError line otherwise."""
    d = Path(str(run_dir))
    try:
        config = json.loads((d / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ZooError(f"{d}: not a fine-tuning run (no config.json)") from None
    except ValueError as e:
        raise ZooError(f"{d}: config.json is unreadable ({e})") from None
    if not (d / "model.safetensors").is_file():
        raise ZooError(
            f"{d}: the run has no weights yet (no model.safetensors: it ended before its first epoch)"
        )
    return config


def run_card(config: dict[str, Any]) -> Any:
    """The card of a run's model: the parent's (preprocessing, files such as a Caffe mean image)
    with the run's labels, classifier and feature layer."""
    import dataclasses

    from zoo.cards import ModelCard

    parent = ModelCard.from_dict(config["card"])
    classes = list(config["classes"])
    return dataclasses.replace(
        parent,
        labels={"names": classes, "count": len(classes)},
        num_classes=len(classes),
        default_cut=config["cut"],
        classifier="head.mlp.fc",
    )


def is_run(path: Any) -> bool:
    p = Path(str(path))
    return (p / "config.json").is_file() and (p / "checkpoints").is_dir()


def load_run(run_dir: Any, *, home: Any = None, device: Any = "cpu") -> tuple[FineTuneModel, dict[str, Any]]:
    """(the fine-tuned network, eval mode, with the run's best weights; config.json)."""
    from safetensors.torch import load_file

    from zoo.models import load

    config = read_run(run_dir)
    opts = Options.from_dict(config["options"])
    kw = {"mirrors": opts.mirrors} if opts.mirrors else {}
    full = load(config["model"], home=home, **kw)
    base = full.cut(config["cut"])
    head = Head(
        HeadSpec(**{**config["head"], "hidden": tuple(config["head"]["hidden"])}),
        tuple(config["base_output_shape"]),
        len(config["classes"]),
    )
    net = FineTuneModel(base, head, train_bn=opts.train_bn).attach(full, config["cut"])
    net.input_size = tuple(config["input_size"])
    net.load_state_dict(load_file(str(Path(str(run_dir)) / "model.safetensors")))
    return net.to(device).eval(), config


def run_transform(config: dict[str, Any], home: Any = None) -> Any:
    from zoo.cards import ModelCard
    from zoo.data import transform_for

    card = ModelCard.from_dict(config["card"])
    return transform_for(config["model"], card=card, home=home)


def evaluate(
    run_dir: Any,
    data: Any,
    *,
    out: Any = None,
    split: str | None = None,
    home: Any = None,
    batch_size: int = 64,
    workers: int | None = None,
    device: Any = None,
) -> dict[str, Any]:
    """The run's best model on ``data`` (its ``test`` split, else ``val``, else every image; or
    ``split``): the same report files, in ``out`` (default ``RUN_DIR/eval-<data name>``)."""
    from zoo.data import scan

    net, config = load_run(run_dir, home=home, device=pick_device(device))
    dev = next(net.parameters()).device
    imgs = scan(data, val_fraction=None)
    names = config["classes"]
    unknown = [c for c in imgs.classes if c not in names]
    if unknown:
        raise ZooError(f"{data}: classes the run was not trained on: {', '.join(unknown[:5])}")
    which = split or next((s for s in ("test", "val") if s in imgs.splits), "train")
    items = [(p, names.index(imgs.classes[y])) for p, y in imgs[which]]
    y, p, paths = predict_split(
        net, items, run_transform(config, home), device=dev, batch_size=batch_size, workers=workers
    )
    dest = Path(out) if out is not None else Path(str(run_dir)) / f"eval-{Path(str(data)).name}"
    title = f"{config['model_id']} fine-tuned, evaluated on {Path(str(data)).name} ({which})"
    final = _write_report(dest, names, y, p, paths, None, title, config)
    from zoo.fileio import atomic_write_json

    atomic_write_json(
        dest / "metrics.json",
        {"format": RUN_FORMAT, "run": str(run_dir), "data": str(data), "split": which, "final": final},
    )
    return final
