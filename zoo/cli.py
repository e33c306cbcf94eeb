"""The `zoo` command: a thin click layer over zoo.api. No heavy imports at module level."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from zoo.errors import ZooError


def _out_width() -> int | None:
    """Columns to fit: $COLUMNS, else the terminal's; None when piped with no $COLUMNS."""
    import os
    import shutil

    env = os.environ.get("COLUMNS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    if sys.stdout.isatty():
        return shutil.get_terminal_size((80, 24)).columns
    return None


def _fmt_params(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.1f}M"


def _fmt_num(v: float | None, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _input_str(card: Any) -> str:
    """The input shape one way for every source: channels x height x width (``3x224x224``)."""
    p = card.preprocess
    chans = 1 if p.channel_order == "GRAY" else 3
    h = w = None
    if p.input_size:
        dims = list(p.input_size)
        if len(dims) == 3:
            c, h, w = (dims[2], dims[0], dims[1]) if p.layout == "NHWC" else dims
            chans = c or chans
        elif len(dims) == 2:
            h, w = dims
    if p.crop:
        h = w = p.crop
    if not h or not w:
        return "-"
    return f"{chans}x{h}x{w}"


# (header, right-aligned, value) for the search table, in the order dropped last-to-first.
_SEARCH_COLUMNS: dict[str, tuple[str, bool, Any]] = {
    "id": ("id", False, lambda c: c.id),
    "top1": ("top-1", True, lambda c: _fmt_num(c.top1)),
    "params": ("params", True, lambda c: _fmt_params(c.params)),
    "source": ("source", False, lambda c: c.source),
    "input": ("input", True, _input_str),
    "gflops": ("GFLOPs", True, lambda c: _fmt_num(c.gflops)),
    "origin": ("origin", False, lambda c: c.origin),
    "license": ("license", False, lambda c: c.license or "-"),
}
_SEARCH_DEFAULT = ("id", "source", "origin", "top1", "params", "gflops", "input", "license")
_DROP_ORDER = ("license", "origin", "gflops", "input", "source")  # first dropped first


def _table(cards: Any, columns: Sequence[str], width: int | None) -> list[str]:
    """Plain-text table lines. Fits ``width`` by dropping columns (``_DROP_ORDER``), then
    shortening the licence; ids and numbers are never cut. Lines carry no trailing spaces."""
    cols = list(columns)
    cells = {k: [_SEARCH_COLUMNS[k][2](c) for c in cards] for k in cols}
    widths = {k: max([len(_SEARCH_COLUMNS[k][0])] + [len(v) for v in cells[k]]) for k in cols}

    def total() -> int:
        return sum(widths[k] for k in cols) + 2 * (len(cols) - 1)

    if width is not None:
        for k in _DROP_ORDER:
            if total() <= width:
                break
            if k in cols and len(cols) > 1 and k != "id":
                if k == "license" and cols[-1] == k:
                    room = width - (total() - widths[k])
                    if room >= 10:  # keep a shortened licence rather than dropping it
                        widths[k] = room
                        cells[k] = [v if len(v) <= room else v[: room - 1] + "~" for v in cells[k]]
                        break
                cols.remove(k)
    lines = []
    for row in [None, *range(len(cards))]:
        parts = []
        for k in cols:
            head, right, _ = _SEARCH_COLUMNS[k]
            v = head if row is None else cells[k][row]
            parts.append(v.rjust(widths[k]) if right else v.ljust(widths[k]))
        lines.append("  ".join(parts).rstrip())
    return lines


class Count(click.ParamType):
    """A number with an optional K/M/G suffix (``25M`` = 25,000,000)."""

    name = "count"
    _mult = {"k": 1e3, "m": 1e6, "g": 1e9}

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        if isinstance(value, (int, float)):
            return float(value)
        s = str(value).strip().lower()
        try:
            if s and s[-1] in self._mult:
                return float(s[:-1]) * self._mult[s[-1]]
            return float(s)
        except ValueError:
            self.fail(f"{value!r} is not a number like 25e6 or 25M", param, ctx)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.version_option(package_name="zoo", prog_name="zoo")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """zoo: find, download, convert and reuse pretrained models.

    One index of Keras Applications, torchvision, Caffe (and Caffe-converted) and timm models;
    checksums always verified; conversion to PyTorch / ONNX with explicit layer maps.
    """
    ctx.obj = {"debug": debug}


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
    cards = api.search(
        " ".join(query) or None,
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
        limit=limit or None,
    )
    if as_json:
        click.echo(json.dumps([c.to_dict() for c in cards], indent=1))
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


def _kv(rows: list[tuple[str, str]], width: int | None) -> list[str]:
    """``label  value`` lines; prose wraps at ``width`` (never inside a word, URL or hash)."""
    import textwrap

    pad = max(len(k) for k, _ in rows) + 2
    out = []
    for k, v in rows:
        if width and len(v) > width - pad and " " in v:
            wrapped = textwrap.wrap(
                v, max(20, width - pad), break_long_words=False, break_on_hyphens=False
            ) or [v]
        else:
            wrapped = [v]
        out.append((k.ljust(pad) + wrapped[0]).rstrip())
        out.extend(" " * pad + w for w in wrapped[1:])
    return out


def _metric_str(m: Any) -> str:
    text = f"{m.value:g} on {m.dataset}"
    res, crop = getattr(m, "resolution", None), getattr(m, "crop_pct", None)
    if res:
        text += f" at {res} px"
    if crop:
        text += f", crop {crop:.3g}"
    return text


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
        ("architecture", json.dumps(card.architecture)),
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


@cache.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable, sizes in bytes.")
def cache_ls(as_json: bool) -> None:
    """List cached files per model: model, file, size, sha256 (first 12), path."""
    from zoo import cache as zcache

    rows = zcache.list_entries()
    if as_json:
        click.echo(
            json.dumps([r if isinstance(r, dict) else r.__dict__ for r in rows], indent=1, default=str)
        )
        return
    if not rows:
        click.echo("the cache is empty", err=True)
        return
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
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    for row in table:
        cells = [
            row[0].ljust(widths[0]),
            row[1].ljust(widths[1]),
            row[2].rjust(widths[2]),
            row[3].ljust(widths[3]),
            row[4],
        ]
        click.echo("  ".join(cells))


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
def cache_prune() -> None:
    """Delete blobs no model refers to and stale partial downloads."""
    from zoo import cache as zcache

    res = zcache.prune()
    if res is not None:
        click.echo(str(res))


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
@click.option("--arch", help="How to build it, e.g. torchvision:resnet50.")
@click.option(
    "--definition",
    type=click.Path(exists=True, dir_okay=False),
    multiple=True,
    help="Extra files such as a deploy prototxt.",
)
@click.option("--top1", type=float)
@click.option("--params", type=int)
@click.option("--default-cut")
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
    replace: bool,
) -> None:
    """Add a model to your catalogue ($ZOO_HOME/catalog.json).

    PATH_OR_URL is a local file (hashed now) or an http(s) URL on your own server, which needs
    --sha256 (nothing is downloaded until `zoo pull` fetches and verifies it).
    """
    from zoo import api
    from zoo.catalog import is_url

    if not is_url(path):  # a local file: checked exactly as click.Path(exists=True) would
        ctx = click.get_current_context()
        param = next(p for p in ctx.command.params if p.name == "path")
        path = click.Path(exists=True, dir_okay=False).convert(path, param, ctx)
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
        architecture={"builder": arch} if arch else None,
        top1=top1,
        params=params,
        default_cut=default_cut,
        extra_files=tuple(Path(d) for d in definition),
    )
    click.echo(f"registered {card.id}")


def _preprocess_opt(values: tuple[str, ...]) -> dict[str, Any] | None:
    """``--preprocess key=value`` pairs -> a Preprocess dict (lists comma-separated)."""
    if not values:
        return None
    out: dict[str, Any] = {}
    for item in values:
        if "=" not in item:
            raise click.BadParameter(
                f"{item!r}: expected KEY=VALUE, e.g. mean=104,117,123", param_hint="--preprocess"
            )
        k, v = item.split("=", 1)
        if k in ("mean", "std", "input_size"):
            conv = int if k == "input_size" else float
            out[k] = [conv(x) for x in v.split(",")]
        elif k in ("scale",):
            out[k] = float(eval_fraction(v))
        elif k in ("resize", "crop"):
            out[k] = int(v)
        elif k == "transpose_hw":
            out[k] = v.lower() in ("1", "true", "yes")
        else:
            out[k] = v
    return out


def eval_fraction(v: str) -> float:
    """'1/255' or '0.0039' -> float."""
    if "/" in v:
        a, b = v.split("/", 1)
        return float(a) / float(b)
    return float(v)


@cli.command()
@click.argument("source")
@click.option(
    "--weights",
    type=click.Path(exists=True, dir_okay=False),
    help="Caffe .caffemodel / .caffemodel.h5 for a prototxt SOURCE.",
)
@click.option("--to", "to", type=click.Choice(["torch", "onnx", "all"]), default="torch", show_default=True)
@click.option(
    "-o",
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="The zoo model folder to write (must not exist or be empty).",
)
@click.option("--arch", help="Architecture for weights-only files, e.g. torchvision:resnet50.")
@click.option(
    "--preprocess",
    "preprocess",
    multiple=True,
    help="KEY=VALUE (channel_order=BGR, scale=1/255, mean=104,117,123, std=..., layout=NCHW).",
)
@click.option("--trust-code", is_flag=True, help="Allow Keras Lambda layers (runs their code).")
@click.option("--mirror", "mirrors", multiple=True, help="Mirror base URL for registry ids.")
def convert(
    source: str,
    weights: str | None,
    to: str,
    out_dir: str,
    arch: str | None,
    preprocess: tuple[str, ...],
    trust_code: bool,
    mirrors: tuple[str, ...],
) -> None:
    """Convert SOURCE (a file or a registry id) into a zoo model folder (PyTorch and/or ONNX)."""
    from zoo import convert as zconvert

    kw: dict[str, Any] = {"mirrors": list(mirrors)} if mirrors else {}
    out = zconvert.convert(
        source,
        out_dir,
        to=to,
        weights=weights,
        arch=arch,
        preprocess=_preprocess_opt(preprocess),
        trust_code=trust_code,
        **kw,
    )
    click.echo(str(out))


@cli.command()
@click.argument("out_dir", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--reference",
    type=click.Choice(["source", "opencv"]),
    default="source",
    show_default=True,
    help="source: the source framework (tf-keras, torch); opencv: OpenCV dnn for Caffe.",
)
@click.option(
    "--atol", type=float, default=1e-4, show_default=True, help="Tolerance on max|diff| / max(1, max|ref|)."
)
@click.option(
    "--inputs", default="random", show_default=True, help="'random' or comma-separated .npy/image files."
)
@click.option("--batch", type=int, default=2, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def verify(out_dir: str, reference: str, atol: float, inputs: str, batch: int, seed: int) -> None:
    """Run the same inputs through the converted model and an independent reference."""
    from zoo import convert as zconvert
    from zoo.errors import VerificationError

    ins: str | list[str] = inputs if inputs == "random" else inputs.split(",")
    res = zconvert.verify(out_dir, reference=reference, atol=atol, inputs=ins, batch=batch, seed=seed)
    for k in ("reference", "max_abs_diff", "rel", "argmax_agreement", "first_diverging_layer"):
        if k in res:
            click.echo(f"{k}: {res[k]}")
    for name, r in (res.get("outputs") or {}).items():
        click.echo(f"  {name}: {r}")
    if not res.get("passed", False):
        raise VerificationError(
            f"{out_dir}: outputs differ beyond tolerance {atol} (rel {res.get('rel')}, "
            f"first diverging layer {res.get('first_diverging_layer')})"
        )
    click.echo("passed")


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


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning ZooError into one line on stderr and an exit code."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        cli.main(args=argv, prog_name="zoo", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("zoo: aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except ZooError as e:
        if debug:
            raise
        click.echo(f"zoo: error: {e}", err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("zoo: interrupted", err=True)
        sys.exit(130)
    except OSError as e:
        if debug:
            raise
        click.echo(f"zoo: error: {e.strerror or e}" + (f": {e.filename}" if e.filename else ""), err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
