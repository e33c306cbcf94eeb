"""Keras Applications preprocessing modes as zoo ``Preprocess`` records (carried unchanged into
the converted card; never baked into the graph)."""

from __future__ import annotations

from typing import Any

from converters.keras.reader import is_keras_app_spec, parse_keras_app_spec
from zoo.cards import Preprocess

# keras.applications.imagenet_utils.preprocess_input modes
MODES: dict[str, dict[str, Any]] = {
    "caffe": {
        "channel_order": "BGR",
        "scale": 1.0,
        "mean": (103.939, 116.779, 123.68),
        "std": None,
        "note": "Keras 'caffe' mode: RGB->BGR, 0-255, ImageNet mean subtracted, no scaling",
    },
    "tf": {
        "channel_order": "RGB",
        "scale": 1.0 / 127.5,
        "mean": (1.0, 1.0, 1.0),
        "std": None,
        "note": "Keras 'tf' mode: x / 127.5 - 1, range [-1, 1]",
    },
    "torch": {
        "channel_order": "RGB",
        "scale": 1.0 / 255.0,
        "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225),
        "note": "Keras 'torch' mode: x / 255, ImageNet mean / std",
    },
    "raw": {
        "channel_order": "RGB",
        "scale": 1.0,
        "mean": None,
        "std": None,
        "note": "0-255 RGB; the network rescales and normalizes inside (e.g. EfficientNet)",
    },
}

# keras.applications name -> (mode, input size)
APPLICATIONS: dict[str, tuple[str, int]] = {
    "VGG16": ("caffe", 224),
    "VGG19": ("caffe", 224),
    "ResNet50": ("caffe", 224),
    "ResNet101": ("caffe", 224),
    "ResNet152": ("caffe", 224),
    "ResNet50V2": ("tf", 224),
    "ResNet101V2": ("tf", 224),
    "ResNet152V2": ("tf", 224),
    "MobileNet": ("tf", 224),
    "MobileNetV2": ("tf", 224),
    "InceptionV3": ("tf", 299),
    "InceptionResNetV2": ("tf", 299),
    "Xception": ("tf", 299),
    "NASNetMobile": ("tf", 224),
    "NASNetLarge": ("tf", 331),
    "DenseNet121": ("torch", 224),
    "DenseNet169": ("torch", 224),
    "DenseNet201": ("torch", 224),
    **{f"EfficientNetB{i}": ("raw", s) for i, s in enumerate((224, 240, 260, 300, 380, 456, 528, 600))},
}


def keras_preprocess(mode: str, layout: str = "NCHW", size: int | None = None) -> Preprocess:
    """The Preprocess record of a Keras mode ('caffe', 'tf', 'torch', 'raw')."""
    if mode not in MODES:
        raise ValueError(f"unknown Keras preprocessing mode {mode!r} ({', '.join(MODES)})")
    m = MODES[mode]
    shape = None if size is None else ((3, size, size) if layout == "NCHW" else (size, size, 3))
    return Preprocess(
        layout=layout,
        channel_order=m["channel_order"],
        scale=m["scale"],
        mean=m["mean"],
        std=m["std"],
        input_size=shape,
        mode=mode,
        note=m["note"],
    )


def application_preprocess(name: str, layout: str = "NCHW") -> Preprocess | None:
    """Preprocess for the keras.applications builder ``name`` (or its ``keras.applications:NAME?..``
    spec); None for an unknown application."""
    if is_keras_app_spec(name):
        name = parse_keras_app_spec(name)[0]
    if name not in APPLICATIONS:
        return None
    mode, size = APPLICATIONS[name]
    return keras_preprocess(mode, layout, size)
