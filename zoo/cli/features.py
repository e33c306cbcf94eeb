"""`zoo features` and `zoo probe`: cached features of a frozen base and the logistic-regression
baseline on them (zoo.features.features / zoo.probe.probe; torch loads inside the commands)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import click

from zoo.cli._app import cli


def _data_options(f: Any) -> Any:
    f = click.option(
        "--device",
        default=None,
        help="torch device for the base (default: CUDA when there is one, else cpu).",
    )(f)
    f = click.option("--mirror", "mirrors", multiple=True, help="Mirror base URL for registry ids.")(f)
    f = click.option("--workers", type=click.IntRange(min=0), default=None, help="DataLoader workers.")(f)
    f = click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)(f)
    f = click.option("--seed", type=int, default=0, show_default=True, help="Seed of the stratified split.")(
        f
    )
    f = click.option(
        "--cut", default=None, help="Layer to cut at (a name from `zoo layers`; default: the card's)."
    )(f)
    f = click.option(
        "--data",
        required=True,
        type=click.Path(exists=False),
        help="An ImageFolder (class folders; or train/ + val/) or a path,label CSV.",
    )(f)
    return f


def _kw(mirrors: tuple[str, ...], workers: int | None, batch_size: int, device: str | None) -> dict[str, Any]:
    kw: dict[str, Any] = {"batch_size": batch_size, "workers": workers, "device": device}
    if mirrors:
        kw["mirrors"] = list(mirrors)
    return kw


def _shape(s: list[int]) -> str:
    return "x".join(str(d) for d in s)


@cli.command()
@click.argument("model")
@_data_options
@click.option(
    "--val-fraction",
    type=float,
    default=None,
    help="Split one folder: this stratified fraction of each class to val (seeded).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the entry's index as JSON.")
def features(
    model: str,
    data: str,
    cut: str | None,
    seed: int,
    batch_size: int,
    workers: int | None,
    mirrors: tuple[str, ...],
    device: str | None,
    val_fraction: float | None,
    as_json: bool,
) -> None:
    """Run DATA's images once through MODEL's frozen base, cut at --cut, and cache the features
    under $ZOO_HOME/features/ (reused when nothing changed). Under torchrun every rank extracts
    a share and rank 0 writes the entry."""
    from zoo.features import features as extract

    f = extract(
        model,
        data,
        cut=cut,
        val_fraction=val_fraction,
        seed=seed,
        **_kw(mirrors, workers, batch_size, device),
    )
    if os.environ.get("RANK", "0") != "0":
        return  # under torchrun: rank 0 reports
    if as_json:
        click.echo(json.dumps({k: v for k, v in f.index.items() if k != "key_document"}, indent=1))
    what = "reused the cached features (no forward pass)" if f.reused else "extracted features"
    click.echo(f"{what}: {f.path}", err=as_json)
    if as_json:
        return
    click.echo(f"cut {f.cut} ({f.index.get('output')}), {len(f.classes)} classes")
    for split, s in f.index["splits"].items():
        click.echo(f"  {split}: {s['count']} images, features {_shape(s['shape'])}")
    if f.index.get("skipped"):
        click.echo(f"  skipped {len(f.index['skipped'])} unreadable file(s)")


@cli.command()
@click.argument("model")
@_data_options
@click.option(
    "--val-fraction",
    type=float,
    default=0.3,
    show_default=True,
    help="Held out of one folder (stratified, seeded); not used with train/ + val/ folders.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder for metrics.json, report.txt, confusion.png [default: ./probe-<model>-<cut>].",
)
def probe(
    model: str,
    data: str,
    cut: str | None,
    seed: int,
    batch_size: int,
    workers: int | None,
    mirrors: tuple[str, ...],
    device: str | None,
    val_fraction: float,
    out: str | None,
) -> None:
    """The baseline every fine-tune must beat: logistic regression (C by cross-validation on the
    training split) on MODEL's cached frozen features of DATA; prints the held-out accuracy and
    the classification report, and writes them with the confusion matrix into --out."""
    from zoo.api import _card_of
    from zoo.probe import probe as run

    if out is None:
        card = _card_of(model, None)
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{Path(card.id).name}-{cut or card.default_cut}").strip("-")
        out = f"probe-{slug}"
    res = run(
        model,
        data,
        cut=cut,
        val_fraction=val_fraction,
        seed=seed,
        out=out,
        **_kw(mirrors, workers, batch_size, device),
    )
    if res.reused:
        click.echo("reused the cached features (no forward pass)", err=True)
    click.echo(res.text().rstrip())
    click.echo(f"\nwrote {Path(out) / 'metrics.json'}, report.txt, confusion.png")
