"""`zoo register` and `zoo registry validate`: your catalogue."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from zoo.cli._app import cli


@cli.command()
@click.argument("path", metavar="PATH_OR_URL")
@click.option("--id", "model_id", required=True, help="Catalogue id, e.g. me/cats-resnet50.")
@click.option("--sha256", help="The file's sha256 (required for a URL; checked against a local file).")
@click.option("--size", type=click.IntRange(min=0), help="The file's size in bytes (optional).")
@click.option("--name")
@click.option("--framework", type=click.Choice(["pytorch", "keras", "caffe", "onnx"]))
@click.option("--format", "fmt")
@click.option("--task", default="image-classification", show_default=True)
@click.option("--dataset")
@click.option("--labels", help="Comma-separated class names.")
@click.option("--license", "license_")
@click.option("--tag", "tags", multiple=True)
@click.option(
    "--arch", help="How to build it: torchvision:NAME, timm:NAME, keras.applications:NAME?k=v, caffe:FILE."
)
@click.option(
    "--definition",
    type=click.Path(exists=True, dir_okay=False),
    multiple=True,
    help="Extra files such as a deploy prototxt.",
)
@click.option("--top1", type=float)
@click.option("--params", type=int)
@click.option(
    "--default-cut", help="The feature layer (default: the bundled cards' for a torchvision/timm --arch)."
)
@click.option("--classifier", help="The classifier module / layer (default as for --default-cut).")
@click.option("--replace", is_flag=True, help="Overwrite an existing catalogue entry.")
def register(
    path: str,
    model_id: str,
    sha256: str | None,
    size: int | None,
    name: str | None,
    framework: str | None,
    fmt: str | None,
    task: str,
    dataset: str | None,
    labels: str | None,
    license_: str | None,
    tags: tuple[str, ...],
    arch: str | None,
    definition: tuple[str, ...],
    top1: float | None,
    params: int | None,
    default_cut: str | None,
    classifier: str | None,
    replace: bool,
) -> None:
    """Add a model to your catalogue ($ZOO_HOME/catalog.json).

    PATH_OR_URL is a local file (hashed now), a zoo model folder (from zoo export or zoo convert:
    its card and files) or an http(s) URL on your own server, which needs --sha256 (nothing is
    downloaded until `zoo pull` fetches and verifies it).
    """
    from zoo import api
    from zoo.catalog import is_url

    if not is_url(path):  # a local file: checked exactly as click.Path(exists=True) would
        ctx = click.get_current_context()
        param = next(p for p in ctx.command.params if p.name == "path")
        path = click.Path(exists=True, dir_okay=True).convert(path, param, ctx)
    card = api.register(
        path,
        model_id,
        replace=replace,
        sha256=sha256,
        size=size,
        name=name,
        framework=framework,
        fmt=fmt,
        task=task,
        dataset=dataset,
        labels=[s.strip() for s in labels.split(",")] if labels else None,
        license=license_,
        tags=tags,
        architecture=arch,
        top1=top1,
        params=params,
        default_cut=default_cut,
        classifier=classifier,
        extra_files=tuple(Path(d) for d in definition),
    )
    click.echo(f"registered {card.id}")


@cli.group("registry")
def registry_group() -> None:
    """Check the bundled registry and your catalogue."""


@registry_group.command("validate")
@click.argument("path", required=False, type=click.Path(dir_okay=False))
def registry_validate(path: str | None) -> None:
    """Validate registry.json (or PATH) against the schema; every problem on its own line."""
    from zoo.errors import RegistryError
    from zoo.registry import _read_json, bundled_registry_path, catalog_path, validate_entries

    targets = [Path(path)] if path else [bundled_registry_path(), catalog_path()]
    bad = False
    for t in targets:
        if not t.is_file() and not path:
            continue
        try:
            data = _read_json(t, "registry")
            validate_entries(data, str(t))
            n = len(data["models"])
            click.echo(f"{t}: {n} entries ok")
        except RegistryError as e:
            bad = True
            for line in getattr(e, "problems", [str(e)]):
                click.echo(line, err=True)
    if bad:
        sys.exit(3)
