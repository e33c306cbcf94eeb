"""`zoo convert` and `zoo verify`: model folders from foreign weights."""

from __future__ import annotations

from typing import Any

import click

from zoo.cli._app import cli


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


def _names_opt(values: tuple[str, ...]) -> list[str] | None:
    """Repeated and / or comma-separated tensor names (commas inside ``[...]`` shapes kept)."""
    import re

    out = [p.strip() for v in values for p in re.findall(r"[^,\[]+(?:\[[^\]]*\])?", v) if p.strip()]
    return out or None


@cli.command()
@click.argument("source")
@click.argument("out_arg", metavar="[OUT]", required=False, type=click.Path(file_okay=False))
@click.option(
    "--weights",
    type=click.Path(exists=True, dir_okay=False),
    help="Caffe .caffemodel / .caffemodel.h5 for a prototxt SOURCE.",
)
@click.option(
    "--to", "to", type=click.Choice(["torch", "pytorch", "onnx", "all"]), default="torch", show_default=True
)
@click.option(
    "-o",
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    help="The zoo model folder to write (must not exist or be empty, unless --force); or give OUT.",
)
@click.option("--arch", help="Architecture for weights-only files, e.g. torchvision:resnet50.")
@click.option(
    "--preprocess",
    "preprocess",
    multiple=True,
    help="KEY=VALUE (channel_order=BGR, scale=1/255, mean=104,117,123, std=..., layout=NCHW).",
)
@click.option("--trust-code", is_flag=True, help="Allow Keras Lambda layers (runs their code).")
@click.option(
    "--allow-unknown-fields",
    is_flag=True,
    help="Caffe: skip prototxt fields unknown to Caffe (from a Caffe fork), each named on stderr.",
)
@click.option("--force", is_flag=True, help="Replace a non-empty output folder (else it is refused).")
@click.option("--mirror", "mirrors", multiple=True, help="Mirror base URL for registry ids.")
@click.option(
    "--inputs",
    "inputs",
    multiple=True,
    help="Frozen GraphDef (.pb): input tensor(s), e.g. input:0 or Mul:0[1,299,299,3] (NHWC shape); "
    "repeat or comma-separate. Default: the graph's Placeholder(s).",
)
@click.option(
    "--outputs",
    "outputs",
    multiple=True,
    help="Frozen GraphDef (.pb): output tensor(s), e.g. vgg_16/fc8/squeezed:0; repeat or "
    "comma-separate. Default: the graph's sinks.",
)
def convert(
    source: str,
    out_arg: str | None,
    weights: str | None,
    to: str,
    out_dir: str | None,
    arch: str | None,
    preprocess: tuple[str, ...],
    trust_code: bool,
    allow_unknown_fields: bool,
    force: bool,
    mirrors: tuple[str, ...],
    inputs: tuple[str, ...],
    outputs: tuple[str, ...],
) -> None:
    """Convert SOURCE (a file or a registry id) into the zoo model folder OUT (or -o OUT), PyTorch
    and/or ONNX."""
    from zoo import convert as zconvert

    if (out_arg is None) == (out_dir is None):
        raise click.UsageError("give the output folder once: OUT or -o OUT")
    out_dir = out_dir or out_arg
    to = "torch" if to == "pytorch" else to
    kw: dict[str, Any] = {"mirrors": list(mirrors)} if mirrors else {}
    if inputs:
        kw["inputs"] = _names_opt(inputs)
    if outputs:
        kw["outputs"] = _names_opt(outputs)
    if allow_unknown_fields:
        kw["allow_unknown_fields"] = True
    out = zconvert.convert(
        source,
        out_dir,
        to=to,
        weights=weights,
        arch=arch,
        preprocess=_preprocess_opt(preprocess),
        trust_code=trust_code,
        force=force,
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
    help="source: the source framework (tf-keras, TensorFlow, torch); opencv: OpenCV dnn for Caffe.",
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
    if res.get("errors"):
        raise VerificationError(f"{out_dir}: {res['errors'][0]}")
    if not res.get("passed", False):
        raise VerificationError(
            f"{out_dir}: outputs differ beyond tolerance {atol} (rel {res.get('rel')}, "
            f"first diverging layer {res.get('first_diverging_layer')})"
        )
    click.echo("passed")


@cli.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Rows and the match report as JSON.")
def layermap(folder: str, as_json: bool) -> None:
    """Show FOLDER's layer map: source tensor -> module parameter, steps, shape -> shape, and how it
    matches the folder's model (matched / in the map only / in the model only / shape-mismatched)."""
    import json

    from converters.folder import LAYERMAP, load_folder
    from converters.layermap import LayerMap

    lm = LayerMap.load(f"{folder}/{LAYERMAP}")
    model = load_folder(folder)
    report = lm.match(model.state_dict())
    if as_json:
        rows = [r.to_dict() for r in lm.rows]
        click.echo(
            json.dumps({"source_format": lm.source_format, "rows": rows, "match": report.to_dict()}, indent=1)
        )
    else:
        table = lm.table()
        widths = [max(len(r[i]) for r in table) if table else 0 for i in range(3)]
        for src, tgt, steps, shapes in table:
            click.echo(f"{src:<{widths[0]}} -> {tgt:<{widths[1]}}  {steps:<{widths[2]}}  {shapes}")
        for line in report.lines():
            click.echo(line)
    if report.unmatched or report.shape_mismatched:
        raise SystemExit(1)
