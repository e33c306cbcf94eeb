"""`zoo demo`: the README's main job (zoo.demo), offline, a few minutes on a CPU."""

from __future__ import annotations

import click

from zoo.cli._app import cli


@cli.command()
@click.option(
    "--out",
    default="zoo-demo",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Folder for everything the demo makes (its own ZOO_HOME inside).",
)
@click.option("--force", is_flag=True, help="Replace --out if it is not empty.")
def demo(out: str, force: bool) -> None:
    """Pretrain a small CNN on digits 0-4, register it, find it, transfer it to digits 5-9 with 10
    labels per class (frozen base from cached features, then a short unfrozen stage), report,
    export to ONNX, and compare with the same head on a random frozen base."""
    from zoo.demo import demo as run

    run(out, force=force, echo=click.echo)
