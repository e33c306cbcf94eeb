"""`zoo mirror push DEST`: publish the cache in the mirror layout (a folder or an S3 bucket)."""

from __future__ import annotations

import click

from zoo.cli._app import Count, cli


@cli.group()
def mirror() -> None:
    """Publish the cache as a mirror that ZOO_MIRROR points at (docs/mirror.md)."""


@mirror.command("push")
@click.argument("dest")
@click.option(
    "--model", "models", multiple=True, metavar="ID", help="Only this model's cached files (repeatable)."
)
@click.option(
    "--endpoint-url",
    metavar="URL",
    help="An S3-compatible endpoint (MinIO, Ceph, R2, ...). Default: $AWS_ENDPOINT_URL_S3, AWS S3.",
)
@click.option(
    "--multipart-threshold",
    type=Count(),
    default=None,
    help="S3: files this large (bytes; K/M/G suffixes) go up as multipart uploads [default: 64 MiB].",
)
def push(
    dest: str, models: tuple[str, ...], endpoint_url: str | None, multipart_threshold: float | None
) -> None:
    """Write every cached file (or --model's) to DEST at <host>/<path> of its URL, as ZOO_MIRROR reads.

    DEST is a folder (serve it with any static HTTP server) or s3://bucket[/prefix] (credentials
    and region from the AWS environment or profile; region default us-east-1), each object with
    metadata sha256=<hex>. Files already there with the same sha256 are skipped.
    """
    from zoo import cache, mirror

    def show(action: str, item: mirror.PushItem) -> None:
        if action == "uploaded":
            click.echo(f"uploaded {item.key} ({cache.human_size(item.size)})")

    result = mirror.push(
        dest,
        models=list(models) or None,
        endpoint_url=endpoint_url,
        multipart_threshold=int(multipart_threshold) if multipart_threshold else mirror.MULTIPART_THRESHOLD,
        on_item=show,
    )
    for line in result.notes:
        click.echo(f"zoo: note: {line}", err=True)
    click.echo(
        f"{result.dest}: {len(result.uploaded)} uploaded ({cache.human_size(result.bytes_uploaded)}), "
        f"{len(result.skipped)} skipped (already there with the same sha256)"
    )
