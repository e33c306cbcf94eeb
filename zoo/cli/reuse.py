"""`zoo layers` and `zoo predict`: look inside a model and run it on images (zoo.api.layers /
zoo.api.predict; torch loads inside the commands)."""

from __future__ import annotations

import json
from typing import Any

import click

from zoo.cli._app import cli


def _shape(s: list[int] | None) -> str:
    return "-" if s is None else "x".join(str(d) for d in s)


def layer_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The ``zoo layers`` table: index, name, type, output shape, params, trainable, the default cut."""
    head = ("#", "name", "type", "output", "params", "trainable", "")
    cells = [
        (
            str(r["index"]),
            r["name"],
            r["type"],
            _shape(r["output_shape"]),
            f"{r['params']:,}",
            "yes" if r["trainable"] else ("no" if r["params"] else "-"),
            "<- default cut" if r["default_cut"] else "",
        )
        for r in rows
    ]
    right = {0, 3, 4}
    widths = [max(len(c[i]) for c in [head, *cells]) for i in range(len(head))]
    out = []
    for c in [head, *cells]:
        parts = [v.rjust(widths[i]) if i in right else v.ljust(widths[i]) for i, v in enumerate(c)]
        out.append("  ".join(parts).rstrip())
    return out


@cli.command()
@click.argument("model")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
@click.option("--mirror", "mirrors", multiple=True, help="Mirror base URL for registry ids.")
def layers(model: str, as_json: bool, mirrors: tuple[str, ...]) -> None:
    """The layers of MODEL (a registry id or a model folder): index, name (what --cut takes), type,
    output shape at the card's input size, parameters, trainable; the default cut is marked."""
    from zoo import api

    kw: dict[str, Any] = {"mirrors": list(mirrors)} if mirrors else {}
    rows = api.layers(model, **kw)
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    for line in layer_lines(rows):
        click.echo(line)


@cli.command()
@click.argument("model")
@click.argument("images", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--top-k", "top_k", default=5, show_default=True, type=click.IntRange(min=1))
@click.option("--json", "as_json", is_flag=True, help="Print the predictions as JSON.")
@click.option("--mirror", "mirrors", multiple=True, help="Mirror base URL for registry ids.")
def predict(model: str, images: tuple[str, ...], top_k: int, as_json: bool, mirrors: tuple[str, ...]) -> None:
    """The top classes of each IMAGE under MODEL, the card's preprocessing applied; names from
    the card's labels. Scores are probabilities (softmax, unless the net ends in one)."""
    from zoo import api
    from zoo.errors import ZooError

    kw: dict[str, Any] = {"mirrors": list(mirrors)} if mirrors else {}
    res = api.predict(model, list(images), top_k=top_k, **kw)
    skipped = [r for r in res if "skipped" in r]
    for r in skipped:
        click.echo(f"zoo: skipped {r['image']} ({r['skipped']})", err=True)
    if as_json:
        click.echo(json.dumps(res, indent=1))
    else:
        for r in res:
            if "top" not in r:
                continue
            click.echo(r["image"])
            width = max(len(t["label"]) for t in r["top"])
            for t in r["top"]:
                click.echo(f"  {t['label'].ljust(width)}  {t['score']:.4f}")
    if len(skipped) == len(res):
        raise ZooError("no image could be read")
