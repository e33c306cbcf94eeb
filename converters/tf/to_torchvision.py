"""TF-slim weights (a folder converted by ``converters.tf.slim``) -> a torchvision architecture.

Only where the two compute the same function: slim vgg_16 / vgg_19 -> torchvision vgg16 / vgg19.
slim's fc6 / fc7 / fc8 are convolutions (7x7 VALID, 1x1, 1x1) whose kernels, reshaped to
``(out, in * kh * kw)``, are torchvision's Linear layers (slim's NCHW-converted 7x7 window is read in
the order of torchvision's flatten of ``(512, 7, 7)``; ``AdaptiveAvgPool2d(7)`` is the identity at
224x224). A 1001-class head (index 0: background) loses row 0 to become torchvision's 1000 classes;
the result says so (``dropped``).

Refused, with the reason:

* slim inception_v3 -> torchvision inception_v3: torchvision's InceptionA / C / E pool branches call
  ``avg_pool2d(x, 3, 1, padding=1)`` with ``count_include_pad=True`` (the zero padding is averaged
  in) where slim's 'SAME' AvgPool excludes it, so every border pixel of those branches differs.
  The refusal measures it: on a constant map, and, for a converted folder, on the whole network
  (:func:`inception_v3_differences`: torchvision's Inception3 with the folder's weights against the
  folder, then again with torchvision's pools excluding the padding, which makes them agree).
* slim resnet_v1_N -> torchvision resnetN (decided on the architecture, no weight read): slim
  ResNet v1 strides in the last unit of each block (``block1/unit_3``) and pads explicitly before
  strided convolutions; torchvision strides in the first block of each stage (its 3x3
  convolution, ResNet v1.5) with symmetric padding.

Use :func:`slim_to_torchvision` like ``converters.keras.to_torchvision.keras_to_torchvision``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

from zoo.errors import ConversionError

SAME_NETWORK = {"vgg16": "vgg_16", "vgg19": "vgg_19"}
KNOWN_DIFFERENT = {
    "inception_v3": "inception_v3",
    "resnet50": "resnet_v1_50",
    "resnet101": "resnet_v1_101",
    "resnet152": "resnet_v1_152",
}


class TorchvisionWeights(NamedTuple):
    """A torchvision state dict, the layer map from the TF variables, and what was dropped."""

    state: dict[str, Any]
    layermap: Any
    dropped: list[str]


def measured_avgpool_difference() -> float:
    """max |torchvision's branch avg_pool2d - TF 'SAME' AvgPool| on a constant map of ones (3x3,
    stride 1): torchvision counts the padding (count_include_pad=True), TF does not."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    x = torch.ones(1, 1, 8, 8)
    tv = F.avg_pool2d(x, 3, stride=1, padding=1)  # torchvision InceptionA/C/E branch_pool
    tf_same = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
    return float((tv - tf_same).abs().max())


class _ExcludePadF:
    """``torch.nn.functional`` with ``avg_pool2d`` leaving the padding out (TF 'SAME'), for the
    measurement only: what torchvision's Inception3 would compute if it pooled as slim does."""

    def __getattr__(self, name: str) -> Any:
        import torch.nn.functional as F  # noqa: N812

        return getattr(F, name)

    @staticmethod
    def avg_pool2d(x: Any, *args: Any, **kw: Any) -> Any:
        import torch.nn.functional as F  # noqa: N812

        return F.avg_pool2d(x, *args, **{**kw, "count_include_pad": False})


def inception_v3_differences(folder: str | Path, seed: int = 0) -> dict[str, float]:
    """Load a converted slim inception_v3 folder's weights into torchvision's Inception3
    (``transform_input=False``, no aux head; convolutions and BatchNorms paired in order, the
    1001-class logits without row 0) and measure on 2 random 299x299 inputs: max |torchvision -
    slim| as torchvision computes, and with torchvision's branch pools excluding the padding."""
    import numpy as np
    import torch
    import torchvision.models.inception as tvi
    from safetensors.torch import load_file
    from torch import nn

    from converters.folder import load_folder

    folder = Path(folder)
    graph = json.loads((folder / "graph.json").read_text())
    state = load_file(str(folder / "model.safetensors"))
    slim = load_folder(folder).eval()
    tv = tvi.Inception3(num_classes=1000, aux_logits=False, transform_input=False, init_weights=False).eval()
    keep = [n for n in graph["nodes"] if "/AuxLogits/" not in n["name"]]
    convs = [n["module"] for n in keep if n["op"] == "keras.conv2d"]
    bns = [n["module"] for n in keep if n["op"] == "keras.batch_norm"]
    t_convs = [m for m in tv.modules() if isinstance(m, nn.Conv2d)]
    t_bns = [m for m in tv.modules() if isinstance(m, nn.BatchNorm2d)]
    if len(convs) != len(t_convs) + 1 or len(bns) != len(t_bns):
        raise ConversionError(
            f"slim inception_v3 has {len(convs)} convolutions / {len(bns)} BatchNorms, torchvision "
            f"Inception3 {len(t_convs)} + fc / {len(t_bns)}"
        )
    with torch.no_grad():
        for name, m in zip(convs[:-1], t_convs, strict=True):
            m.weight.copy_(state[f"{name}.weight"])
        for name, m in zip(bns, t_bns, strict=True):
            for k in ("weight", "bias", "running_mean", "running_var"):
                getattr(m, k).copy_(state[f"{name}.{k}"])
        w, b = state[f"{convs[-1]}.weight"], state[f"{convs[-1]}.bias"]
        drop = 1 if w.shape[0] == 1001 else 0
        tv.fc.weight.copy_(w.reshape(w.shape[0], -1)[drop:])
        tv.fc.bias.copy_(b[drop:])
        x = torch.from_numpy(np.random.default_rng(seed).standard_normal((2, 3, 299, 299)).astype(np.float32))
        ref = slim(x)[:, drop:]
        got = tv(x)
        saved = tvi.F
        tvi.F = _ExcludePadF()  # type: ignore[assignment]
        try:
            got_ex = tv(x)
        finally:
            tvi.F = saved
    scale = max(1.0, float(ref.abs().max()))
    return {
        "max_abs_diff": float((got - ref).abs().max()),
        "max_abs_diff_padding_excluded": float((got_ex - ref).abs().max()),
        "scale": scale,
    }


def _refusal(tv_name: str, graph: dict[str, Any] | None, folder: Path | None = None) -> str:
    if tv_name == "inception_v3":
        d = measured_avgpool_difference()
        full = ""
        if folder is not None and (folder / "model.safetensors").is_file():
            m = inception_v3_differences(folder)
            full = (
                f"; with this folder's weights torchvision's Inception3 differs from slim by max "
                f"{m['max_abs_diff']:.4g} (outputs up to {m['scale']:.4g}), and by "
                f"{m['max_abs_diff_padding_excluded']:.2g} once its pools exclude the padding"
            )
        return (
            "torchvision Inception3's pool branches (Mixed_5b..Mixed_7c) average with "
            "count_include_pad=True while slim's 'SAME' AvgPool excludes the padding: measured "
            f"max |difference| {d:.4f} on a constant map of ones (corner 4/9 instead of 1)"
            f"{full}; transform_input=False and eps 0.001 match, the pooling cannot: not the same network"
        )
    evidence = ""
    for n in (graph or {}).get("nodes", []):
        if n.get("op") == "keras.conv2d" and "/block1/" in n["name"] and n["attrs"]["stride"] != [1, 1]:
            evidence = f" (here: {n['name']} has stride {n['attrs']['stride']})"
            break
    return (
        "slim ResNet v1 strides in the last unit of each block" + evidence + " and pads explicitly "
        f"before strided convolutions, torchvision {tv_name} strides in the first block of each "
        "stage (its 3x3 convolution) with symmetric padding: not the same network"
    )


def slim_to_torchvision(folder: str | Path, tv_name: str) -> TorchvisionWeights:
    """A converted slim folder (``zoo convert X.ckpt --arch slim:vgg_16``) -> torchvision ``tv_name``
    weights (``vgg16`` / ``vgg19``); a ConversionError with the reason where the networks differ."""
    import numpy as np
    import torch
    import torchvision
    from safetensors.numpy import load_file
    from torch import nn

    from converters.layermap import LayerMap, LayerMapError, LayerMapRow

    folder = Path(folder)
    tv_name = tv_name.lower()
    if tv_name not in SAME_NETWORK and tv_name not in KNOWN_DIFFERENT:
        raise ConversionError(
            f"no verified TF-slim -> torchvision mapping for {tv_name!r} (supported: vgg16, vgg19)"
        )
    gpath = folder / "graph.json"
    if not gpath.is_file():
        raise ConversionError(f"{folder}: no graph.json (convert the slim checkpoint first)")
    graph = json.loads(gpath.read_text())
    net = graph.get("name")
    want = SAME_NETWORK.get(tv_name) or KNOWN_DIFFERENT[tv_name]
    if net != want:
        raise ConversionError(f"{folder}: slim {net} is not slim {want} (torchvision {tv_name})")
    if tv_name in KNOWN_DIFFERENT:  # decided on the architecture alone, before any weight
        reason = _refusal(tv_name, graph, folder)
        raise ConversionError(f"refusing slim {net} -> torchvision {tv_name}: {reason}")
    h, w = graph["inputs"][0]["shape"][2:]
    if [h, w] != [224, 224]:
        raise ConversionError(f"slim {net} at {h}x{w}: torchvision {tv_name}'s Linear head needs 224x224")
    flm = LayerMap.load(folder / "layermap.json")
    src = flm.to_source(load_file(str(folder / "model.safetensors")))
    by_target = flm.by_target()
    model = torchvision.models.get_model(tv_name, weights=None)
    target = model.state_dict()
    convs = [n for n in graph["nodes"] if n["op"] == "keras.conv2d"]
    mods = [(k, m) for k, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    if len(convs) != len(mods):
        raise ConversionError(f"layer counts differ: slim {len(convs)} convolutions, torchvision {len(mods)}")
    rows: list[LayerMapRow] = []
    dropped: list[str] = []
    for n, (tname, m) in zip(convs, mods, strict=True):
        a = n["attrs"]
        if isinstance(m, nn.Conv2d) and (
            list(m.kernel_size) != a["kernel_size"] or list(m.stride) != a["stride"] or a["padding"] != "same"
        ):
            raise ConversionError(f"slim {n['name']} {a['kernel_size']}/{a['stride']} differs from {tname}")
        if isinstance(m, nn.Linear) and a["stride"] != [1, 1]:
            raise ConversionError(f"slim {n['name']} (stride {a['stride']}) lines up with Linear {tname}")
        for p in ("weight", "bias"):
            r = by_target.get(f"{n['module']}.{p}")
            if r is None:
                continue
            steps = tuple(str(s) for s in r.steps)
            shape = tuple(target[f"{tname}.{p}"].shape)
            out = r.target_shape[0]
            if isinstance(m, nn.Linear) and p == "weight":
                steps = (*steps, f"reshape({out},-1)")
            if out == shape[0] + 1 and out == 1001:  # the background class: row 0 goes after the map
                shape = (out, *shape[1:])
                dropped.append(f"{tname}.{p}[0] (slim {r.source} row 0: the background class)")
            try:
                rows.append(LayerMapRow(r.source, r.blob, f"{tname}.{p}", steps, r.source_shape, shape))
            except LayerMapError:
                raise ConversionError(
                    f"slim {r.source} {list(r.source_shape)} does not fit torchvision {tname}.{p} "
                    f"{list(target[f'{tname}.{p}'].shape)}"
                ) from None
    missing = [k for k in target if k not in {r.target for r in rows}]
    if missing:
        raise ConversionError(f"torchvision {tv_name}: no slim weights for {', '.join(missing[:4])}")
    lm = LayerMap(rows, source_format="tensorflow")
    values = lm.to_target(src)
    for d in dropped:
        k = d.split("[", 1)[0]
        values[k] = values[k][1:]
    state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in values.items()}
    return TorchvisionWeights(state, lm, dropped)


def load_into_torchvision(folder: str | Path, tv_name: str) -> Any:
    """torchvision ``tv_name`` (eval mode) with the weights of a converted slim folder."""
    import torchvision

    model = torchvision.models.get_model(tv_name.lower(), weights=None)
    model.load_state_dict(slim_to_torchvision(folder, tv_name).state, strict=True)
    return model.eval()
