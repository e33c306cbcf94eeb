"""Caffe nets that are the same network as a torchvision architecture, loaded through a LayerMap.

VGG16 (the authors' Caffe release) -> ``torchvision.models.vgg16`` and SqueezeNet 1.1 ->
``torchvision.models.squeezenet1_1`` are the same layers in the same order, so their weights map
one to one. Caffe AlexNet / CaffeNet are not torchvision's alexnet (see ``NOT_THE_SAME``).
Note the output: the Caffe nets end in Softmax ("prob"); torchvision returns the logits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from zoo.errors import ConversionError

from ..layermap import LayerMap, MatchReport

NOT_THE_SAME = {
    "alexnet": (
        "Caffe AlexNet / CaffeNet are not torchvision's alexnet: they have LRN layers after conv1 and "
        "conv2 (CaffeNet: after pool1 and pool2), grouped convolutions (group 2 in conv2, conv4, conv5) "
        "and widths 96-256-384-384-256, where torchvision's alexnet (the 'one weird trick' variant) has "
        "no LRN, no groups and widths 64-192-384-256-256; no layer map can make one the other"
    ),
}


def _vgg16_names() -> dict[str, str]:
    convs = [
        "conv1_1",
        "conv1_2",
        "conv2_1",
        "conv2_2",
        "conv3_1",
        "conv3_2",
        "conv3_3",
        "conv4_1",
        "conv4_2",
        "conv4_3",
        "conv5_1",
        "conv5_2",
        "conv5_3",
    ]
    idx = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
    out = {c: f"features.{i}" for c, i in zip(convs, idx, strict=True)}
    out.update({"fc6": "classifier.0", "fc7": "classifier.3", "fc8": "classifier.6"})
    return out


def _squeezenet11_names() -> dict[str, str]:
    out = {"conv1": "features.0", "conv10": "classifier.1"}
    for fire, i in zip(range(2, 10), [3, 4, 6, 7, 9, 10, 11, 12], strict=True):
        for part in ("squeeze1x1", "expand1x1", "expand3x3"):
            tv = "squeeze" if part == "squeeze1x1" else part
            out[f"fire{fire}_{part}"] = f"features.{i}.{tv}"
    return out


ARCHS = {"vgg16": _vgg16_names, "squeezenet1_1": _squeezenet11_names}


def torchvision_layermap(layermap: LayerMap, arch: str) -> LayerMap:
    """The folder's layer map re-targeted at torchvision's parameter names for ``arch``."""
    if arch in NOT_THE_SAME:
        raise ConversionError(NOT_THE_SAME[arch])
    if arch not in ARCHS:
        raise ConversionError(f"no torchvision mapping for {arch!r} (known: {', '.join(sorted(ARCHS))})")
    names = ARCHS[arch]()
    rename = {}
    for r in layermap.rows:
        if r.target:
            module, _, param = r.target.rpartition(".")
            if module in names:
                rename[r.target] = f"{names[module]}.{param}"
    return layermap.renamed(rename)


def load_into_torchvision(folder: str | Path, arch: str) -> tuple[Any, MatchReport]:
    """A torchvision ``arch`` model holding the converted Caffe weights, and the match report.

    Raises ConversionError when any key is unmatched or shape-mismatched (the report says which).
    """
    import torch
    import torchvision
    from safetensors.torch import load_file

    folder = Path(folder)
    own = LayerMap.load(folder / "layermap.json")
    lm = torchvision_layermap(own, arch)
    ours = load_file(str(folder / "model.safetensors"))
    model = getattr(torchvision.models, arch)(weights=None).eval()
    target = model.state_dict()
    report = lm.match(target)
    if report.unmatched or report.shape_mismatched or report.unexpected:
        raise ConversionError(
            f"{folder}: not loadable as torchvision {arch}: unmatched {report.unmatched[:5]}, "
            f"unexpected {report.unexpected[:5]}, shape-mismatched {report.shape_mismatched[:5]}"
        )
    state = {new.target: ours[old.target] for old, new in zip(own.rows, lm.rows, strict=True) if new.target}
    model.load_state_dict({k: torch.as_tensor(v) for k, v in state.items()}, strict=True)
    return model, report
