"""`zoo pull` and `zoo cache ...`: verified downloads and the cache."""

from __future__ import annotations

import json
import sys

import click

from zoo.cli._app import cli


@cli.command()
@click.argument("model_ids", metavar="MODEL_ID...", nargs=-1, required=True)
@click.option("--file", "file_name", help="Only this file of the card (with a single MODEL_ID).")
@click.option("--dest", type=click.Path(file_okay=False), help="Copy the files here too.")
@click.option(
    "--mirror",
    "mirrors",
    multiple=True,
    help="Mirror base URL (repeatable; tried in order). Default: $ZOO_MIRROR.",
)
@click.option("--offline", is_flag=True, default=None, help="Use only the cache ($ZOO_OFFLINE).")
@click.option("--require-checksum", is_flag=True, help="Refuse files whose publisher gave no checksum.")
@click.option(
    "--verify", is_flag=True, help="Re-hash cached files even when their size, mtime and inode are unchanged."
)
def pull(
    model_ids: tuple[str, ...],
    file_name: str | None,
    dest: str | None,
    mirrors: tuple[str, ...],
    offline: bool | None,
    require_checksum: bool,
    verify: bool,
) -> None:
    """Download models' files into the cache, verifying checksums; print their paths.

    A cached copy whose bytes changed is fetched again (offline: an error naming the damage).
    """
    from zoo import api

    if file_name is not None and len(model_ids) > 1:
        raise click.UsageError("--file names a file of one model: give a single MODEL_ID with it")
    for model_id in model_ids:  # every id known before anything is downloaded
        api.info(model_id)
    for model_id in model_ids:
        paths = api.pull(
            model_id,
            file_name,
            dest,
            mirrors=list(mirrors) or None,
            offline=offline or None,
            require_checksum=require_checksum,
            verify=verify,
        )
        for p in paths:
            click.echo(str(p))


@cli.group()
def cache() -> None:
    """Inspect and manage the download cache ($ZOO_HOME)."""


def _columns(table: list[tuple[str, ...]], right: tuple[int, ...] = ()) -> None:
    """Print ``table`` (a header row first) in aligned columns, the last one as it is."""
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]) - 1)]
    for row in table:
        cells = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(row[:-1], widths, strict=True))
        ]
        click.echo("  ".join([*cells, row[-1]]))


@cache.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable, sizes in bytes.")
@click.option(
    "--features", "only_features", is_flag=True, help="List the cached features (zoo features) only."
)
def cache_ls(as_json: bool, only_features: bool) -> None:
    """List cached files per model (model, file, size, sha256 (first 12), path), then the cached
    features (key, model, cut, images per split, size)."""
    from zoo import cache as zcache
    from zoo.features import list_feature_entries

    rows = [] if only_features else zcache.list_entries()
    feats = list_feature_entries()
    if as_json:
        out = feats if only_features else rows
        click.echo(json.dumps([r if isinstance(r, dict) else r.__dict__ for r in out], indent=1, default=str))
        return
    if not rows and not feats:
        click.echo("the cache is empty" if not only_features else "no cached features", err=True)
        return
    if rows:
        table = [("MODEL", "FILE", "SIZE", "SHA256", "PATH")]
        for r in rows:
            d = r if isinstance(r, dict) else r.__dict__
            path = str(d.get("path")) + ("" if d.get("present", True) else "  (blob missing)")
            table.append(
                (
                    str(d.get("model_id")),
                    str(d.get("file_name")),
                    zcache.human_size(d.get("size")),
                    str(d.get("sha256"))[:12],
                    path,
                )
            )
        _columns(table, right=(2,))
    if feats:
        if rows:
            click.echo("")
        table = [("FEATURES", "MODEL", "CUT", "IMAGES", "SIZE", "PATH")]
        for f in feats:
            images = ", ".join(f"{s} {n}" for s, n in f.splits.items()) if f.ok else "(unreadable index)"
            table.append((f.key[:12], str(f.model), str(f.cut), images, zcache.human_size(f.size), f.path))
        _columns(table, right=(4,))


@cache.command("verify")
@click.option(
    "--repair",
    is_flag=True,
    help="Fetch again (from the registry's URLs, verified) every damaged or missing file.",
)
def cache_verify(repair: bool) -> None:
    """Re-hash every cached blob; exit non-zero if anything is (still) wrong."""
    from zoo import cache as zcache

    if not repair:
        problems = zcache.verify_cache()
        for p in problems:
            click.echo(str(p), err=True)
        if problems:
            sys.exit(5)
        click.echo("cache ok")
        return
    res = zcache.repair_cache()
    for p in res.found:
        click.echo(f"found: {p}", err=True)
    for label in res.repaired:
        click.echo(f"repaired {label}")
    for line in res.failed:
        click.echo(f"could not repair {line}", err=True)
    for p in res.problems:
        click.echo(f"still wrong: {p}", err=True)
    if not res.ok:
        sys.exit(5)
    click.echo(f"cache ok ({len(res.repaired)} file(s) repaired)" if res.found else "cache ok")


@cache.command("rm")
@click.argument("model_id")
@click.option(
    "--forget-pins",
    is_flag=True,
    help="Also forget the pinned sha256 (a later pull may then get different bytes).",
)
def cache_rm(model_id: str, forget_pins: bool) -> None:
    """Forget a model's cached files and delete the blobs no other model uses (pins stay)."""
    from zoo import cache as zcache

    res = zcache.remove(model_id, forget_pins=forget_pins)
    click.echo(f"{model_id}: {res}")


@cache.command("prune")
@click.option(
    "--features",
    "all_features",
    is_flag=True,
    help="Also delete every cached feature entry (they are rebuilt by the next zoo features).",
)
def cache_prune(all_features: bool) -> None:
    """Delete blobs no model refers to, stale partial downloads and broken or leftover feature
    folders (with --features: every feature entry not being written now)."""
    from zoo import cache as zcache

    res = zcache.prune(all_features=all_features)
    if res is not None:
        click.echo(str(res))
