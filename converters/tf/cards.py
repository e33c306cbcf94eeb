"""``convert_card``: a pulled TensorFlow registry entry -> the zoo model folder.

Two kinds of TensorFlow cards (tools/registry_sources/tf_slim.json):

* TF-slim checkpoints (``format: ckpt``, ``architecture: slim:NAME?num_classes=...&input_size=...``):
  the pulled archive member(s), a V1 ``NAME.ckpt`` or a V2 ``NAME.ckpt.index`` + ``.data-*``, go to
  :func:`converters.tf.slim.convert_slim` with the card's architecture. A net that ``tf_slim.nets``
  does not ship (MobileNet v1 / v2, Inception v4, Inception-ResNet-v2 in tf_slim 1.1.0) is refused
  before TensorFlow starts, saying so.
* frozen GraphDefs (``format: pb``, ``architecture: graphdef:FILE.pb``, the card's ``inputs`` /
  ``outputs`` tensor names): the ``.pb``
  member goes to :func:`converters.tf.graphdef.convert_graphdef` with those tensors (``--inputs`` /
  ``--outputs`` override them); a ``default_cut`` tensor ``op:0`` becomes the folder's layer ``op``.

The folder's card keeps the registry card's labels, head, licence and registry id (``card_extra``)
and its preprocessing, turned from the checkpoint's NHWC to the converted model's NCHW.
"""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import Any

from zoo.cards import ModelCard, Preprocess
from zoo.errors import ConversionError


def nchw_preprocess(pre: Preprocess | None) -> Preprocess | None:
    """``pre`` for the converted (NCHW) model: an NHWC ``input_size`` (H, W, C) becomes (C, H, W)."""
    if pre is None or pre.unknown or pre.layout != "NHWC":
        return pre
    size = pre.input_size
    if size is not None and len(size) == 3:
        size = (size[2], size[0], size[1])
    return dataclasses.replace(pre, layout="NCHW", input_size=size)


def _checkpoint(card: ModelCard, files: list[Path]) -> Path:
    """The checkpoint path among the pulled files: a V2 prefix (its ``.index`` pulled beside the
    ``.data-*`` shards) or a V1 ``.ckpt`` file."""
    for p in files:
        if p.name.endswith(".index"):
            prefix = p.with_name(p.name.removesuffix(".index"))
            if not list(p.parent.glob(prefix.name + ".data-*")):
                raise ConversionError(f"{card.id}: {p.name} was pulled without its .data-* shard")
            return prefix
    for p in files:
        if p.name.endswith(".ckpt") or ".ckpt-" in p.name:
            return p
    names = ", ".join(p.name for p in files) or "none"
    raise ConversionError(f"{card.id}: no TensorFlow checkpoint among the pulled files ({names})")


def _slim_net_check(card: ModelCard, name: str) -> None:
    from converters.tf._worker import SLIM_NETS

    if name not in SLIM_NETS:
        raise ConversionError(
            f"{card.id}: tf_slim ships no {name} net (tf_slim.nets has {', '.join(sorted(SLIM_NETS))}); "
            "the checkpoint can be pulled (zoo pull) but zoo cannot build its network to convert it"
        )


def precheck(card: ModelCard, arch: str | None = None) -> None:
    """Refuse, before anything is pulled, a slim card whose net tf_slim does not ship."""
    from zoo.arch import parse

    a = parse(arch) if arch else card.architecture
    if a is not None and a.kind == "slim":
        _slim_net_check(card, a.name)


def convert_card(
    card: ModelCard,
    files: list[Path],
    out_dir: str | Path,
    *,
    to: str = "torch",
    arch: str | None = None,
    inputs: list[str] | None = None,
    outputs: list[str] | None = None,
    preprocess: Preprocess | None = None,
    card_extra: dict[str, Any] | None = None,
    force: bool = False,
) -> Path:
    """Convert the pulled ``files`` of a TensorFlow registry ``card`` into ``out_dir``.

    ``arch`` (``slim:NAME?k=v``) replaces the card's architecture; ``inputs`` / ``outputs`` replace a
    GraphDef card's tensors; ``preprocess`` (default: the card's) is written to the folder's card.
    """
    from zoo.arch import parse

    files = [Path(p) for p in files]
    pre = nchw_preprocess(preprocess if preprocess is not None else card.preprocess)
    extra = dict(card_extra or {})
    graphdef = card.architecture is not None and card.architecture.kind == "graphdef"
    if card.format == "pb" or graphdef or (arch is None and card.architecture is None):
        pb = next((p for p in files if p.name.endswith(".pb")), None)
        if pb is None:
            raise ConversionError(f"{card.id}: no frozen GraphDef (.pb) among the pulled files")
        from converters.tf.graphdef import convert_graphdef

        kw: dict[str, Any] = {
            "inputs": list(inputs or card.inputs or ()) or None,
            "outputs": list(outputs or card.outputs or ()) or None,
            "to": to,
            "preprocess": pre,
            "force": force,
        }
        cut = extra.get("default_cut")
        if isinstance(cut, str) and cut.endswith(":0"):  # a tensor name; the folder's layer is its op
            extra["default_cut"] = cut[:-2]
        params = inspect.signature(convert_graphdef).parameters
        if "card_extra" in params:
            kw["card_extra"] = extra
        if "input_size" in params and pre is not None and pre.input_size and len(pre.input_size) == 3:
            kw["input_size"] = tuple(pre.input_size[1:])  # (C, H, W) after nchw_preprocess
        return Path(convert_graphdef(pb, Path(out_dir), **kw))
    a = parse(arch) if arch else card.architecture
    if a is None or a.kind != "slim":
        raise ConversionError(
            f"{card.id}: a TensorFlow checkpoint needs a slim:NAME architecture (got {a.spec if a else None})"
        )
    if inputs or outputs:
        raise ConversionError(f"{card.id}: --inputs / --outputs are for frozen GraphDefs, not checkpoints")
    _slim_net_check(card, a.name)
    from converters.tf.slim import convert_slim

    if a.kwargs.get("num_classes") is not None:
        extra["num_classes"] = int(a.kwargs["num_classes"])
    return Path(
        convert_slim(
            _checkpoint(card, files), Path(out_dir), a, to=to, preprocess=pre, card_extra=extra, force=force
        )
    )
