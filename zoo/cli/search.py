"""`zoo search` and `zoo info`: the registry and your catalogue."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from typing import Any

import click

from zoo.cli._app import Count, cli
from zoo.cli._format import (
    _SEARCH_COLUMNS,
    _SEARCH_DEFAULT,
    _fmt_num,
    _input_str,
    _kv,
    _metric_str,
    _out_width,
    _table,
)


@cli.command()
@click.argument("query", nargs=-1)
@click.option(
    "--source", "--framework-source", "source", help="torchvision, keras, caffe, timm, testdata or user."
)
@click.option("--framework", help="pytorch, keras, caffe, onnx.")
@click.option("--origin", help="Where the weights came from, e.g. 'caffe' for converted ones.")
@click.option("--task", help="e.g. image-classification.")
@click.option("--dataset", help="Training dataset (substring match, e.g. imagenet).")
@click.option("--min-top1", type=float, help="Minimum published top-1 accuracy (%).")
@click.option("--max-params", type=Count(), help="Maximum parameters (25000000, 25e6 or 25M).")
@click.option("--max-gflops", type=float, help="Maximum GFLOPs per image.")
@click.option("--input-size", type=int, help="Input height/width, e.g. 224.")
@click.option("--license", "license_", help="Licence (substring match).")
@click.option("--tag", help="A tag, e.g. imagenet or mobile.")
@click.option(
    "--sort",
    type=click.Choice(["relevance", "top1", "params", "gflops", "name"]),
    default="relevance",
    show_default=True,
)
@click.option("--limit", type=int, default=50, show_default=True, help="0 for no limit.")
@click.option("--json", "as_json", is_flag=True, help="Print the matching cards as JSON.")
@click.option("--wide", is_flag=True, help="Every column, whatever the width.")
@click.option("--columns", help=f"Comma-separated columns to show, from {','.join(_SEARCH_COLUMNS)}.")
@click.option("--remote", metavar="URL", help="Search the registry a `zoo serve` at URL serves instead.")
def search(
    query: tuple[str, ...],
    source: str | None,
    framework: str | None,
    origin: str | None,
    task: str | None,
    dataset: str | None,
    min_top1: float | None,
    max_params: float | None,
    max_gflops: float | None,
    input_size: int | None,
    license_: str | None,
    tag: str | None,
    sort: str,
    limit: int,
    as_json: bool,
    wide: bool,
    columns: str | None,
    remote: str | None,
) -> None:
    """Search the registry and your catalogue (ranked match on id, name, family, tags)."""
    from zoo import api

    cols = _SEARCH_DEFAULT
    if columns:
        cols = tuple(c.strip().lower().replace("-", "") for c in columns.split(",") if c.strip())
        bad = [c for c in cols if c not in _SEARCH_COLUMNS]
        if bad:
            raise click.BadParameter(
                f"unknown column {bad[0]!r} (choose from {', '.join(_SEARCH_COLUMNS)})",
                param_hint="--columns",
            )
    filters = dict(
        source=source,
        framework=framework,
        origin=origin,
        task=task,
        dataset=dataset,
        min_top1=min_top1,
        max_params=max_params,
        max_gflops=max_gflops,
        input_size=input_size,
        license=license_,
        tag=tag,
        sort=sort,
    )
    if remote:
        rows, cards = _remote_search(remote, " ".join(query) or None, filters, limit)
    else:
        cards = api.search(" ".join(query) or None, **filters, limit=limit or None)
        rows = None
    if as_json:
        click.echo(json.dumps(json_rows(cards) if rows is None else rows, indent=1))
        if not cards:
            click.echo("no models match", err=True)
            sys.exit(1)
        return
    if not cards:
        click.echo("no models match", err=True)
        sys.exit(1)
    for line in _table(cards, cols, None if wide or columns else _out_width()):
        click.echo(line)
    if cards.total > len(cards):
        click.echo(f"showing {len(cards)} of {cards.total} (--limit 0 for all)", err=True)


def json_rows(cards: Iterable[Any]) -> list[dict[str, Any]]:
    """The rows ``zoo search --json`` prints: one card dict each (``zoo serve``'s /api/models
    answers the same list)."""
    return [c.to_dict() for c in cards]


class _RemoteResults(list):  # type: ignore[type-arg]
    """Cards from a remote search, with ``total`` (every match before the limit) as locally."""

    total = 0


def _remote_search(
    url: str, text: str | None, filters: dict[str, Any], limit: int
) -> tuple[list[dict[str, Any]], _RemoteResults]:
    """GET ``<url>/api/models`` with the same filters; the rows as sent and their cards."""
    import requests

    from zoo.cards import ModelCard
    from zoo.errors import ZooError

    params = {k: v for k, v in filters.items() if v is not None}
    if text:
        params["q"] = text
    params["limit"] = limit
    api_url = url.rstrip("/") + "/api/models"
    try:
        r = requests.get(api_url, params=params, timeout=60, headers={"Accept": "application/json"})
    except requests.RequestException as e:
        raise ZooError(f"{api_url}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e
    try:
        body = r.json()
    except ValueError:
        body = None
    if r.status_code != 200:
        why = body.get("error") if isinstance(body, dict) else None
        raise ZooError(f"{api_url}: HTTP {r.status_code}" + (f": {why}" if why else ""))
    if not isinstance(body, list):
        raise ZooError(f"{api_url}: not a zoo search answer (expected a JSON list)")
    cards = _RemoteResults(ModelCard.from_dict(d) for d in body)
    total = r.headers.get("X-Total-Count", "")
    cards.total = int(total) if total.isdigit() else len(cards)
    return body, cards


def _render_card(card: Any) -> None:
    """The whole card as plain text: nothing read as markup, no padding, hashes and URLs whole."""
    width = _out_width()
    title = f"{card.id}  {card.name}"
    click.echo(click.style(title, bold=True) if sys.stdout.isatty() else title)
    prov = card.provenance
    rows = [
        ("source", f"{card.source} ({card.framework}, {card.format})"),
        (
            "origin",
            card.origin
            + (" (weights converted from Caffe by the publisher)" if card.origin == "caffe" else ""),
        ),
        ("task / dataset", f"{card.task} / {card.dataset or 'unknown'}"),
        ("publisher", prov.get("publisher", "-")),
        ("page", prov.get("page", "-")),
        ("params", "-" if card.params is None else f"{card.params:,}"),
        ("GFLOPs", _fmt_num(card.gflops)),
        ("input", _input_str(card)),
        ("licence", card.license or "not stated"),
        ("tags", ", ".join(card.tags) or "-"),
        ("default cut", card.default_cut or "-"),
        ("architecture", card.architecture.spec if card.architecture else "-"),
        ("classifier", f"{card.classifier or '-'} ({card.num_classes or '?'} classes)"),
    ]
    if card.labels:
        lab = card.labels
        rows.append(("labels", f"{lab.get('set', 'custom')} ({lab.get('count', '?')} classes)"))
    for m in card.metrics:
        rows.append((m.name, _metric_str(m)))
        if m.source:
            rows.append(("", f"source: {m.source}"))
    p = card.preprocess
    if p.unknown:
        rows.append(("preprocessing", "unknown" + (f" ({p.note})" if p.note else "")))
    else:
        pre = f"{p.layout}, {p.channel_order}, x*{p.scale:.6g}"
        if p.mean:
            pre += f", minus mean {list(p.mean)}"
        if p.std:
            pre += f", divided by std {list(p.std)}"
        if p.resize:
            pre += f", resize {p.resize}"
        if p.crop:
            pre += f", crop {p.crop}"
        if p.interpolation:
            pre += f", {p.interpolation}"
        if p.transpose_hw:
            pre += ", image transposed (W x H)"
        if p.mode:
            pre += f" (mode '{p.mode}')"
        rows.append(("preprocessing", pre))
        if p.note:
            rows.append(("", p.note))
    for line in _kv(rows, width):
        click.echo(line)
    click.echo("files")
    for f in card.files:
        ck = f.checksum
        cks = f"{ck.algo}:{ck.value}" if ck.published else (ck.source or "no checksum published")
        if f.pin and ck.published:
            cks += f" (sha256 pinned on {f.pin})"
        elif f.pin and "pin" not in cks:
            cks += f" (sha256 pinned on {f.pin})"
        name = f.name + (f" :: {f.member}" if f.member else "")
        size = "" if f.size is None else f", {f.size:,} bytes"
        click.echo(f"  {name}  ({f.role}{size})")
        click.echo(f"    {cks}")
        for url in f.urls:
            click.echo(f"    {url}")
        if f.hf:
            click.echo(f"    hf://{f.hf['repo_id']}/{f.hf['filename']}@{f.hf.get('revision') or 'main'}")
    if card.notes:
        click.echo("")
        for line in _kv([("notes", card.notes)], width):
            click.echo(line)


@cli.command()
@click.argument("model_id")
@click.option("--json", "as_json", is_flag=True, help="Print the card as JSON.")
def info(model_id: str, as_json: bool) -> None:
    """Show a model's whole card: files and checksums, preprocessing, metrics, provenance."""
    from zoo import api

    card = api.info(model_id)
    if as_json:
        click.echo(json.dumps(card.to_dict(), indent=1))
    else:
        _render_card(card)
