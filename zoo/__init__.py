"""zoo: one index of pretrained models (Keras, torchvision, Caffe, timm), verified downloads,
conversion to PyTorch / ONNX with layer maps, and the tools to reuse them.

Importing ``zoo`` is cheap: torch and friends load only when a function needs them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from zoo.errors import ZooError

if TYPE_CHECKING:
    from zoo.api import info, layers, predict, pull, register, registry, search
    from zoo.cards import Checksum, FileRef, Metric, ModelCard, Preprocess
    from zoo.features import features
    from zoo.finetune import evaluate, finetune
    from zoo.probe import probe

# Loaded on first use, so `zoo --help` starts without parsing the card and registry modules.
_LAZY = {
    "info": "zoo.api",
    "layers": "zoo.api",
    "predict": "zoo.api",
    "pull": "zoo.api",
    "register": "zoo.api",
    "registry": "zoo.api",
    "search": "zoo.api",
    "features": "zoo.features",
    "finetune": "zoo.finetune",
    "evaluate": "zoo.finetune",
    "probe": "zoo.probe",
    "Checksum": "zoo.cards",
    "FileRef": "zoo.cards",
    "Metric": "zoo.cards",
    "ModelCard": "zoo.cards",
    "Preprocess": "zoo.cards",
}


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'zoo' has no attribute {name!r}")
    import importlib

    module = importlib.import_module(mod)
    # zoo.features / zoo.probe / zoo.finetune: the module itself, callable as its function
    # (importing a submodule binds its name on the package anyway, so the two must be one object)
    value = module if mod == f"zoo.{name}" else getattr(module, name)
    globals()[name] = value
    return value


__version__ = "0.1.0"

__all__ = [
    "Checksum",
    "FileRef",
    "Metric",
    "ModelCard",
    "Preprocess",
    "ZooError",
    "evaluate",
    "features",
    "finetune",
    "info",
    "layers",
    "load",
    "predict",
    "probe",
    "pull",
    "register",
    "registry",
    "search",
    "__version__",
]


def load(ref: Any, **kw: Any) -> Any:
    """The ``nn.Module`` of a registry / catalogue id or a zoo model folder, with the zoo model
    interface (``layers``, ``cut``, ``reset_classifier``, ...; see ``zoo.models``). Needs torch."""
    from zoo.models import load as _load

    return _load(ref, **kw)
