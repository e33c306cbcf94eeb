"""`zoo finetune` and `zoo evaluate` (zoo.finetune; torch loads inside the commands)."""

from __future__ import annotations

import os
from typing import Any

import click

from zoo.cli._app import cli

_HELP = {
    "cut": "Layer to cut at (a name from `zoo layers`; default: the card's feature layer).",
    "drop_top": "Cut below the top K layers instead of naming one.",
    "freeze": "Stage 1's frozen part: all (the base), none, or upto:LAYER.",
    "head": "The new head: pool=avg|max|avgmax|none,hidden=512x256,act=relu|gelu|silu|tanh,dropout=0.2.",
    "train_bn": "Let the frozen part's BatchNorm layers train (batch statistics, affine).",
    "epochs": "Stage 1 epochs (the head on the frozen base).",
    "lr": "Stage 1 learning rate (the head's).",
    "cache_features": "Stage 1 from cached frozen features (zoo features) when it can (augmentation off).",
    "unfreeze": "Stage 2's unfrozen part: all, the top K blocks (group_matcher), or upto:LAYER.",
    "stage2_epochs": "Stage 2 epochs (0: no stage 2).",
    "stage2_lr": "Stage 2 learning rate of the head [default: --lr / 10].",
    "lr_mult": "The base's learning rate as a multiple of the head's.",
    "layer_decay": "Each block below the top one: this x the rate of the block above.",
    "opt": "Optimizer.",
    "momentum": "Momentum (SGD, RMSprop).",
    "weight_decay": "Weight decay (not on biases and norm weights).",
    "sched": "Learning-rate schedule per stage (stepped per optimizer step; plateau per epoch).",
    "warmup_epochs": "Linear warm-up (cosine and none schedules), in epochs (fractions allowed).",
    "label_smoothing": "Label smoothing of the cross-entropy.",
    "class_weights": "Weight the loss by inverse class frequency (imbalanced data).",
    "balanced_sampler": "Draw training images class-balanced, with replacement (imbalanced data).",
    "accumulate": "Gradient accumulation: one optimizer step per K batches.",
    "early_stop": "Stop a stage after this many epochs without a lower validation loss.",
    "batch_size": "Images per batch (per process under torchrun).",
    "workers": "DataLoader workers decoding images.",
    "augment": "Random resized crop + horizontal flip on training images.",
    "val_fraction": "Held out of one folder as validation (stratified, seeded).",
    "seed": "Seed of the split, the head's initialization, the order and the augmentation.",
    "device": "cpu, cuda or cuda:N [default: CUDA when there is one].",
    "amp": "Mixed precision: auto (bf16 / fp16 on CUDA, off on CPU), bf16 (also on CPU), fp16, off.",
    "compile": "torch.compile the network.",
    "checkpoint_every": "Also checkpoint every N optimizer steps inside an epoch.",
}


def _options(f: Any) -> Any:
    from zoo.finetune.config import AMP, OPTIMIZERS, SCHEDULES

    opts = [
        click.option("--cut", default=None, help=_HELP["cut"]),
        click.option("--drop-top", type=int, default=None, help=_HELP["drop_top"]),
        click.option("--freeze", default="all", show_default=True, help=_HELP["freeze"]),
        click.option("--head", default=None, help=_HELP["head"]),
        click.option("--train-bn", is_flag=True, help=_HELP["train_bn"]),
        click.option("--epochs", type=int, default=5, show_default=True, help=_HELP["epochs"]),
        click.option("--lr", type=float, default=1e-3, show_default=True, help=_HELP["lr"]),
        click.option("--cache-features", is_flag=True, help=_HELP["cache_features"]),
        click.option("--unfreeze", default="all", show_default=True, help=_HELP["unfreeze"]),
        click.option("--stage2-epochs", type=int, default=0, show_default=True, help=_HELP["stage2_epochs"]),
        click.option("--stage2-lr", type=float, default=None, help=_HELP["stage2_lr"]),
        click.option("--lr-mult", type=float, default=0.1, show_default=True, help=_HELP["lr_mult"]),
        click.option("--layer-decay", type=float, default=1.0, show_default=True, help=_HELP["layer_decay"]),
        click.option(
            "--opt", type=click.Choice(OPTIMIZERS), default="adamw", show_default=True, help=_HELP["opt"]
        ),
        click.option("--momentum", type=float, default=0.9, show_default=True, help=_HELP["momentum"]),
        click.option(
            "--weight-decay", type=float, default=1e-4, show_default=True, help=_HELP["weight_decay"]
        ),
        click.option(
            "--sched", type=click.Choice(SCHEDULES), default="cosine", show_default=True, help=_HELP["sched"]
        ),
        click.option(
            "--warmup-epochs", type=float, default=0.0, show_default=True, help=_HELP["warmup_epochs"]
        ),
        click.option(
            "--label-smoothing", type=float, default=0.0, show_default=True, help=_HELP["label_smoothing"]
        ),
        click.option("--class-weights", is_flag=True, help=_HELP["class_weights"]),
        click.option("--balanced-sampler", is_flag=True, help=_HELP["balanced_sampler"]),
        click.option("--accumulate", type=int, default=1, show_default=True, help=_HELP["accumulate"]),
        click.option("--early-stop", type=int, default=None, help=_HELP["early_stop"]),
        click.option("--batch-size", type=int, default=32, show_default=True, help=_HELP["batch_size"]),
        click.option("--workers", type=click.IntRange(min=0), default=None, help=_HELP["workers"]),
        click.option("--augment", is_flag=True, help=_HELP["augment"]),
        click.option(
            "--val-fraction", type=float, default=0.2, show_default=True, help=_HELP["val_fraction"]
        ),
        click.option("--seed", type=int, default=0, show_default=True, help=_HELP["seed"]),
        click.option("--device", default=None, help=_HELP["device"]),
        click.option("--amp", type=click.Choice(AMP), default="auto", show_default=True, help=_HELP["amp"]),
        click.option("--compile", "compile_", is_flag=True, help=_HELP["compile"]),
        click.option("--checkpoint-every", type=int, default=None, help=_HELP["checkpoint_every"]),
        click.option("--mirror", "mirrors", multiple=True, help="Mirror base URL for registry ids."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


@cli.command()
@click.argument("model", required=False)
@click.option(
    "--data", default=None, type=click.Path(), help="An ImageFolder (class folders; or train/ + val/) or CSV."
)
@click.option("--out", default=None, type=click.Path(file_okay=False), help="The run folder.")
@click.option(
    "--resume", default=None, type=click.Path(file_okay=False), help="Continue the run in this folder."
)
@click.option("--force", is_flag=True, help="Write into a non-empty --out folder.")
@_options
def finetune(
    model: str | None, data: str | None, out: str | None, resume: str | None, force: bool, **kw: Any
) -> None:
    """Fine-tune MODEL on --data into --out: stage 1 trains a new head on the frozen base (cut at
    --cut), stage 2 (--stage2-epochs) the top of the base too; checkpoints, reports and the best
    weights in --out. Under torchrun: DistributedDataParallel, rank 0 writes."""
    import logging

    from zoo.finetune import finetune as run

    kw["compile"] = kw.pop("compile_")
    kw["mirrors"] = list(kw.pop("mirrors"))
    main = os.environ.get("RANK", "0") == "0"
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    lg = logging.getLogger("zoo.finetune")
    if main and not lg.handlers:
        lg.addHandler(handler)
        lg.setLevel(logging.INFO)
    if resume is not None:
        given = [k for k, v in (("MODEL", model), ("--data", data), ("--out", out)) if v is not None]
        if given:
            from zoo.errors import ZooError

            raise ZooError(f"--resume takes the run's own settings: drop {', '.join(given)}")
        res = run(resume=resume)
    else:
        if not model or not data or not out:
            from zoo.errors import ZooError

            raise ZooError("zoo finetune MODEL --data DIR --out RUN_DIR (or --resume RUN_DIR)")
        res = run(model, data, out, force=force, **kw)
    if not main:
        return
    m = res.metrics
    c = res.cache
    if c.get("used"):
        click.echo(f"stage 1 from cached features ({'reused' if c.get('reused') else 'built'}: {c['path']})")
    elif kw.get("cache_features") or (resume and c.get("why") and "not asked" not in c["why"]):
        click.echo(f"stage 1 through the frozen base: the feature cache was not used ({c.get('why')})")
    click.echo(f"BatchNorm: {m.get('bn_policy')}")
    click.echo(
        f"held-out accuracy {res.accuracy:.4f} (best epoch {res.best_epoch} of {len(res.history)}, "
        f"{m['final']['n']} validation images)"
    )
    click.echo(f"report: {res.run_dir / 'report.html'}")


@cli.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option(
    "--data", required=True, type=click.Path(), help="An ImageFolder or CSV with the run's classes."
)
@click.option("--split", default=None, help="Which split (default: test, else val, else every image).")
@click.option("--out", default=None, type=click.Path(file_okay=False), help="[default: RUN_DIR/eval-<data>]")
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--workers", type=click.IntRange(min=0), default=None)
@click.option("--device", default=None)
def evaluate(
    run_dir: str,
    data: str,
    split: str | None,
    out: str | None,
    batch_size: int,
    workers: int | None,
    device: str | None,
) -> None:
    """The run's best model on --data: accuracy and the same report files as the run's."""
    from pathlib import Path

    from zoo.finetune import evaluate as ev

    final = ev(run_dir, data, out=out, split=split, batch_size=batch_size, workers=workers, device=device)
    dest = Path(out) if out else Path(run_dir) / f"eval-{Path(data).name}"
    click.echo(f"accuracy {final['accuracy']:.4f} on {final['n']} images")
    click.echo(f"report: {dest / 'report.html'}")


@cli.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option(
    "-o", "--out", required=True, type=click.Path(file_okay=False), help="The model folder to write."
)
@click.option(
    "--to",
    "to",
    type=click.Choice(["torch", "onnx", "all"]),
    default="all",
    show_default=True,
    help="Targets.",
)
@click.option("--force", is_flag=True, help="Replace a non-empty --out folder.")
def export(run_dir: str, out: str, to: str, force: bool) -> None:
    """The run's best model as a zoo model folder (card with labels, preprocessing, the parent model,
    metrics and the training config; model.onnx checked against torch with --to onnx|all).
    `zoo register OUT --id me/NAME` then puts it in your catalogue."""
    from zoo.export import export as run

    folder = run(run_dir, out, to=to, force=force)
    click.echo(f"exported {folder}")
    click.echo(f"next: zoo register {folder} --id me/NAME")
