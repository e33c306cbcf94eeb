"""The one model interface every model zoo loads answers, as timm's models do.

Every ``nn.Module`` :func:`zoo.load` returns has these methods (native on converted graphs, timm's
own plus two for timm models, a thin adapter for torchvision):

- ``layers()`` -> list of :class:`LayerInfo`: index, name, type, output shape at the card's input
  size (batch 1), parameter count, trainable. Names are the source layer names for converted
  models, module paths (``layer4``, ``avgpool``) for torchvision and timm; ``cut`` takes them.
- ``cut(name)`` -> an ``nn.Module`` that ends at that layer (sharing the parameters).
- ``forward_features(x)`` -> the output of the feature layer (``default_cut``).
- ``get_classifier()`` -> the classifier module; ``reset_classifier(num_classes)`` replaces it.
- ``group_matcher(coarse=False)`` -> timm's ``{"stem": regex, "blocks": [(regex, None), ...]}``
  covering every parameter exactly once (for layer-wise learning rates).
- ``default_cut``: the feature layer's name.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class LayerInfo:
    """One row of ``model.layers()``."""

    index: int
    name: str
    type: str
    output_shape: tuple[int, ...] | None
    params: int
    trainable: bool

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["output_shape"] = None if self.output_shape is None else list(self.output_shape)
        return d
