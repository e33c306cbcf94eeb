"""Keras Applications weights -> a torchvision architecture, through a LayerMap.

Only where the two are the same network: Keras VGG16 / VGG19 -> torchvision vgg16 / vgg19 (the
first Dense reads Keras's NHWC flatten order, so its columns are permuted to NCHW). Keras ResNet50
is v1 as in Caffe (stride 2 in the first 1x1 convolution of a stage) while torchvision's resnet50
strides in the 3x3: different networks, refused with that reason instead of wrong weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from converters.keras.graph import KerasGraph, build_graph
from converters.keras.reader import read_keras
from zoo.errors import ConversionError

SAME_NETWORK = {"vgg16": "VGG16", "vgg19": "VGG19"}
KNOWN_DIFFERENT = {
    "resnet50": "ResNet50",
    "resnet101": "ResNet101",
    "resnet152": "ResNet152",
}


def _resnet_reason(config: dict[str, Any], tv_name: str) -> str | None:
    """The evidence that a Keras ResNet is v1-Caffe style: a strided 1x1 conv on the main path."""
    inner = config.get("config", {})
    layers = inner.get("layers", []) if isinstance(inner, dict) else inner
    for layer in layers:
        c = layer.get("config", {})
        k, s = c.get("kernel_size"), c.get("strides")
        name = c.get("name", layer.get("name", "?"))
        if layer.get("class_name") == "Conv2D" and list(k or []) == [1, 1] and s and list(s) != [1, 1]:
            if not name.endswith("_0_conv"):  # _0_conv is the shortcut projection
                return (
                    f"Keras layer {name!r} strides {s[0]} in its 1x1 convolution (ResNet v1 as in Caffe); "
                    f"torchvision {tv_name} strides in the 3x3 convolution: not the same network"
                )
    return None


def _pairs(g: KerasGraph, model: Any) -> list[tuple[dict[str, Any], str, Any]]:
    """Keras weight nodes paired in order with torchvision Conv2d / Linear modules (kinds checked)."""
    from torch import nn

    k_nodes = [n for n in g.nodes if n["op"] in ("keras.conv2d", "keras.linear")]
    t_mods = [(name, m) for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    if len(k_nodes) != len(t_mods):
        raise ConversionError(
            f"layer counts differ: Keras has {len(k_nodes)} conv/dense layers, torchvision {len(t_mods)}"
        )
    out = []
    for n, (tname, m) in zip(k_nodes, t_mods, strict=True):
        kind = "keras.linear" if isinstance(m, nn.Linear) else "keras.conv2d"
        if n["op"] != kind:
            raise ConversionError(
                f"Keras layer {n['name']!r} ({n['type']}) lines up with torchvision {tname}"
            )
        if kind == "keras.conv2d":
            a = n["attrs"]
            if list(m.stride) != a["stride"] or list(m.kernel_size) != a["kernel_size"]:
                raise ConversionError(
                    f"Keras layer {n['name']!r} (kernel {a['kernel_size']}, stride {a['stride']}) differs "
                    f"from torchvision {tname} (kernel {list(m.kernel_size)}, stride {list(m.stride)})"
                )
        out.append((n, tname, m))
    return out


def keras_to_torchvision(
    path: str | Path, tv_name: str, arch: str | Path | dict[str, Any] | None = None
) -> tuple[dict[str, Any], Any]:
    """Keras weights file -> (torchvision ``tv_name`` state dict, LayerMap with every row).

    ``arch`` gives the Keras architecture for a weights-only file (default
    ``keras.applications:<Keras name>``). Raises ConversionError where the networks differ.
    """
    import torch
    import torchvision

    from converters.layermap import LayerMap, LayerMapError, LayerMapRow

    tv_name = tv_name.lower()
    if tv_name not in SAME_NETWORK and tv_name not in KNOWN_DIFFERENT:
        raise ConversionError(
            f"no verified Keras -> torchvision mapping for {tv_name!r} (supported: vgg16, vgg19)"
        )
    keras_name = SAME_NETWORK.get(tv_name) or KNOWN_DIFFERENT[tv_name]
    src = read_keras(path, arch=arch)
    if src.config is None:
        src = read_keras(path, arch=f"keras.applications:{keras_name}")
    assert src.config is not None
    if tv_name in KNOWN_DIFFERENT:  # decided on the architecture alone, before any weight
        reason = _resnet_reason(src.config, tv_name) or (
            f"Keras {keras_name} and torchvision {tv_name} are not the same network"
        )
        raise ConversionError(f"refusing Keras {keras_name} -> torchvision {tv_name}: {reason}")
    g = build_graph(src)
    model = torchvision.models.get_model(tv_name, weights=None)
    target = model.state_dict()
    rows: list[LayerMapRow] = []
    spatial_done = False
    shapes = {i["name"]: tuple(i["shape"][1:]) for i in g.inputs}
    shapes.update({n["name"]: tuple(n["output_shapes"][0][1:]) for n in g.nodes})  # NCHW, no batch
    by_name = {n["name"]: n for n in g.nodes}
    by_target = g.layermap.by_target()
    for n, tname, _m in _pairs(g, model):
        for pname in ("weight", "bias"):
            key = f"{n['module']}.{pname}"
            if key not in by_target:
                continue
            r = by_target[key]
            steps = r.steps
            if n["op"] == "keras.linear" and pname == "weight" and not spatial_done:
                prev = by_name.get(n["inputs"][0])
                flat_in = shapes.get(prev["inputs"][0]) if prev and prev["op"] == "keras.flatten" else None
                if flat_in is not None and len(flat_in) == 3:  # NHWC flatten -> NCHW flatten
                    c, h, w = flat_in
                    steps = (*steps, f"nhwc_to_nchw({h},{w},{c})")
            if n["op"] == "keras.linear":
                spatial_done = True
            tkey = f"{tname}.{pname}"
            try:  # the steps must give the torchvision tensor's shape
                row = LayerMapRow(r.source, r.blob, tkey, steps, r.source_shape, tuple(target[tkey].shape))
            except LayerMapError:
                raise ConversionError(
                    f"Keras {r.source} {pname} {r.shapes()[-1]} does not fit torchvision {tkey} "
                    f"{list(target[tkey].shape)}"
                ) from None
            rows.append(row)
    missing = [k for k in target if k not in {r.target for r in rows}]
    if missing:
        raise ConversionError(f"torchvision {tv_name}: no Keras weights for {', '.join(missing[:4])}")
    lm = LayerMap(rows, source_format="keras")
    state = {k: torch.from_numpy(v) for k, v in lm.to_target(g.sources).items()}
    return state, lm
