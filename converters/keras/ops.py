"""PyTorch modules for the graph ops the Keras converter emits (NCHW, Keras semantics).

Each factory takes a graph node (``{"op", "attrs", ...}``) and returns an ``nn.Module`` whose
``forward(*inputs)`` computes the node. Modules with weights subclass the stock PyTorch layers
(``nn.Conv2d``, ``nn.BatchNorm2d``, ``nn.Linear``) so every Keras weight is a trainable
``nn.Parameter`` and BatchNorm stays BatchNorm (Keras's epsilon and momentum kept).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def tf_same_pads(size: int, k: int, s: int, d: int = 1) -> tuple[int, int]:
    """TensorFlow 'same' padding for one axis: (before, after), the odd pixel goes after."""
    eff = (k - 1) * d + 1
    out = -(-size // s)
    total = max((out - 1) * s + eff - size, 0)
    return total // 2, total - total // 2


def _same_pad_args(x: torch.Tensor, k: list[int], s: list[int], d: list[int]) -> list[int]:
    t, b = tf_same_pads(int(x.shape[-2]), k[0], s[0], d[0])
    left, r = tf_same_pads(int(x.shape[-1]), k[1], s[1], d[1])
    return [left, r, t, b]


def apply_activation(x: torch.Tensor, name: str, dim: int = -1) -> torch.Tensor:
    """A Keras activation by name (``dim``: the channel axis for softmax)."""
    if name == "linear":
        return x
    if name == "relu":
        return F.relu(x)
    if name == "relu6":
        return F.relu6(x)
    if name == "sigmoid":
        return torch.sigmoid(x)
    if name == "tanh":
        return torch.tanh(x)
    if name == "softmax":
        return torch.softmax(x, dim=dim)
    if name == "log_softmax":
        return torch.log_softmax(x, dim=dim)
    if name == "swish":
        return F.silu(x)
    if name == "elu":
        return F.elu(x)
    if name == "selu":
        return F.selu(x)
    if name == "softplus":
        return F.softplus(x)
    if name == "softsign":
        return F.softsign(x)
    if name == "gelu":
        return F.gelu(x)
    if name == "exponential":
        return torch.exp(x)
    if name == "hard_sigmoid_k2":
        return torch.clamp(0.2 * x + 0.5, 0.0, 1.0)
    if name == "hard_sigmoid_k3":
        return F.relu6(x + 3.0) / 6.0
    if name == "hard_swish":
        return x * F.relu6(x + 3.0) / 6.0
    if name == "leaky_relu":
        return F.leaky_relu(x, 0.2)
    if name == "mish":
        return F.mish(x)
    raise ValueError(f"unknown activation {name!r}")


def _channel_dim(x: torch.Tensor) -> int:
    return 1 if x.dim() == 4 else -1


class KerasConv2d(nn.Conv2d):
    """``nn.Conv2d`` with Keras padding ('valid' / TF 'same', asymmetric at stride 2) and the
    layer's fused activation. Depthwise convolutions are this with ``groups`` = channels."""

    def __init__(self, attrs: dict[str, Any]) -> None:
        k, s, d = attrs["kernel_size"], attrs["stride"], attrs["dilation"]
        self.keras_padding = attrs["padding"]
        sym = None
        if self.keras_padding == "same" and s == [1, 1]:
            pads = [(k[i] - 1) * d[i] for i in (0, 1)]
            if all(p % 2 == 0 for p in pads):
                sym = (pads[0] // 2, pads[1] // 2)
        self.dynamic_same = self.keras_padding == "same" and sym is None
        super().__init__(
            attrs["in_channels"],
            attrs["out_channels"],
            tuple(k),
            stride=tuple(s),
            padding=sym if sym is not None else 0,
            dilation=tuple(d),
            groups=attrs.get("groups", 1),
            bias=attrs.get("bias", True),
        )
        self.activation = attrs.get("activation", "linear")

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if self.dynamic_same:
            x = F.pad(x, _same_pad_args(x, list(self.kernel_size), list(self.stride), list(self.dilation)))
        return apply_activation(super().forward(x), self.activation, 1)


class KerasSeparableConv2d(nn.Module):
    """Keras SeparableConv2D: ``depthwise`` (groups = channels) then ``pointwise`` 1x1."""

    def __init__(self, attrs: dict[str, Any]) -> None:
        super().__init__()
        c, m = attrs["in_channels"], attrs["depth_multiplier"]
        self.depthwise = KerasConv2d(
            {**attrs, "out_channels": c * m, "groups": c, "bias": False, "activation": "linear"}
        )
        self.pointwise = nn.Conv2d(c * m, attrs["out_channels"], 1, bias=attrs.get("bias", True))
        self.activation = attrs.get("activation", "linear")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return apply_activation(self.pointwise(self.depthwise(x)), self.activation, 1)


def _batch_norm(attrs: dict[str, Any]) -> nn.Module:
    cls = nn.BatchNorm2d if attrs.get("rank", 3) == 3 else nn.BatchNorm1d
    bn = cls(attrs["num_features"], eps=attrs["eps"], momentum=1.0 - attrs["momentum"], affine=True)
    # Keras layers without gamma / beta: fixed at 1 / 0 and frozen (Keras has no such weight)
    if not attrs.get("scale", True):
        bn.weight.requires_grad_(False)
    if not attrs.get("center", True):
        bn.bias.requires_grad_(False)
    return bn


class KerasLinear(nn.Linear):
    """``nn.Linear`` plus the Dense layer's activation."""

    def __init__(self, attrs: dict[str, Any]) -> None:
        super().__init__(attrs["in_features"], attrs["out_features"], bias=attrs.get("bias", True))
        self.activation = attrs.get("activation", "linear")

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if x.dim() == 4:  # Dense on an NHWC image acts on channels: dim 1 here
            y = super().forward(x.permute(0, 2, 3, 1))
            return apply_activation(y, self.activation, -1).permute(0, 3, 1, 2)
        return apply_activation(super().forward(x), self.activation, -1)


class Flatten(nn.Module):
    """Keras Flatten: NCHW is put back in NHWC order first, so Dense weights stay Keras's."""

    def __init__(self, attrs: dict[str, Any]) -> None:
        super().__init__()
        self.channels_last = bool(attrs.get("channels_last", True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.dim() == 4:
            x = x.permute(0, 2, 3, 1)
        return x.reshape(x.shape[0], -1)


class Activation(nn.Module):
    def __init__(self, attrs: dict[str, Any]) -> None:
        super().__init__()
        self.activation = attrs["activation"]
        self.dim = attrs.get("dim")
        self.max_value = attrs.get("max_value")
        self.negative_slope = float(attrs.get("negative_slope", 0.0))
        self.threshold = float(attrs.get("threshold", 0.0))
        self.alpha = float(attrs.get("alpha", 1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.activation == "relu_ext":
            if self.threshold != 0.0:
                y = torch.where(x >= self.threshold, x, self.negative_slope * (x - self.threshold))
            elif self.negative_slope != 0.0:
                y = F.leaky_relu(x, self.negative_slope)
            else:
                y = F.relu(x)
            if self.max_value is not None:
                y = torch.clamp(y, max=self.max_value)
            return y
        if self.activation == "elu":
            return F.elu(x, self.alpha)
        dim = self.dim if self.dim is not None else _channel_dim(x)
        return apply_activation(x, self.activation, dim)


class Merge(nn.Module):
    def __init__(self, attrs: dict[str, Any], kind: str) -> None:
        super().__init__()
        self.kind = kind

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        y = xs[0]
        for x in xs[1:]:
            if self.kind in ("add", "mean"):
                y = y + x
            elif self.kind == "mul":
                y = y * x
            elif self.kind == "sub":
                y = y - x
            elif self.kind == "max":
                y = torch.maximum(y, x)
        if self.kind == "mean":
            y = y / len(xs)
        return y


class Concat(nn.Module):
    def __init__(self, attrs: dict[str, Any]) -> None:
        super().__init__()
        self.dim = int(attrs["dim"])

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.cat(xs, dim=self.dim)


class Pool2d(nn.Module):
    """Keras pooling: 'same' max pooling ignores the padding, 'same' average pooling divides by
    the number of real pixels in each window (TF semantics, asymmetric at stride 2)."""

    def __init__(self, attrs: dict[str, Any]) -> None:
        super().__init__()
        self.kind = attrs["kind"]
        self.k = list(attrs["kernel_size"])
        self.s = list(attrs["stride"])
        self.padding = attrs["padding"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = tuple(self.k), tuple(self.s)
        if self.padding == "valid":
            if self.kind == "max":
                return F.max_pool2d(x, k, s)
            return F.avg_pool2d(x, k, s)
        pads = _same_pad_args(x, self.k, self.s, [1, 1])
        if self.kind == "max":
            return F.max_pool2d(F.pad(x, pads, value=-math.inf), k, s)
        total = F.avg_pool2d(F.pad(x, pads), k, s, divisor_override=1)
        ones = torch.ones((1, 1, x.shape[-2], x.shape[-1]), dtype=x.dtype, device=x.device)
        count = F.avg_pool2d(F.pad(ones, pads), k, s, divisor_override=1)
        return total / count


class GlobalPool2d(nn.Module):
    def __init__(self, attrs: dict[str, Any]) -> None:
        super().__init__()
        self.kind = attrs["kind"]
        self.keepdims = bool(attrs.get("keepdims", False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "avg":
            return x.mean(dim=(2, 3), keepdim=self.keepdims)
        return x.amax(dim=(2, 3), keepdim=self.keepdims)


class Pad2d(nn.Module):
    def __init__(self, attrs: dict[str, Any]) -> None:
        super().__init__()
        t, b, left, r = attrs["pads"]
        self.pads = [int(left), int(r), int(t), int(b)]
        self.value = float(attrs.get("value", 0.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, self.pads, value=self.value)


def _to_keras(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 3, 1) if x.dim() == 4 else x


def _from_keras(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 3, 1, 2) if x.dim() == 4 else x


class Reshape(nn.Module):
    """Keras Reshape, done in Keras's channels-last order (image tensors converted both ways)."""

    def __init__(self, attrs: dict[str, Any]) -> None:
        super().__init__()
        self.target = [int(t) for t in attrs["target_shape"]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _from_keras(_to_keras(x).reshape(x.shape[0], *self.target)).contiguous()


class Permute(nn.Module):
    def __init__(self, attrs: dict[str, Any]) -> None:
        super().__init__()
        self.dims = [int(d) for d in attrs["dims"]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _from_keras(_to_keras(x).permute(0, *self.dims))


def _vec(v: Any, x: torch.Tensor) -> torch.Tensor | float:
    if isinstance(v, (int, float)):
        return float(v)
    t = torch.tensor(v, dtype=x.dtype, device=x.device)
    return t.view(1, -1, 1, 1) if x.dim() == 4 else t


class Rescale(nn.Module):
    """Keras Rescaling: ``x * scale + offset`` (scalars or one value per channel)."""

    def __init__(self, attrs: dict[str, Any]) -> None:
        super().__init__()
        self.scale = attrs["scale"]
        self.offset = attrs["offset"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * _vec(self.scale, x) + _vec(self.offset, x)


class Normalize(nn.Module):
    """Keras Normalization: ``(x - mean) / max(sqrt(var), 1e-7)`` (fixed statistics, buffers as in
    Keras where they are non-trainable)."""

    def __init__(self, attrs: dict[str, Any]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(attrs["channels"]))
        self.register_buffer("variance", torch.ones(attrs["channels"]))
        self.epsilon = float(attrs.get("epsilon", 1e-7))
        self.invert = bool(attrs.get("invert", False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1, 1, 1) if x.dim() == 4 else (1, -1)
        m = self.mean.view(shape)
        sd = torch.clamp(torch.sqrt(self.variance), min=self.epsilon).view(shape)
        return m + x * sd if self.invert else (x - m) / sd


class PReLU(nn.PReLU):
    def __init__(self, attrs: dict[str, Any]) -> None:
        super().__init__(num_parameters=attrs["num_parameters"])


class Identity(nn.Module):
    def __init__(self, attrs: dict[str, Any] | None = None) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class Dropout(nn.Dropout):
    def __init__(self, attrs: dict[str, Any]) -> None:
        super().__init__(p=float(attrs.get("p", 0.0)))


# op name (without the "keras." namespace) -> factory(attrs) -> nn.Module returning a tensor
KERAS_OPS: dict[str, Callable[[dict[str, Any]], nn.Module]] = {
    "conv2d": KerasConv2d,
    "separable_conv2d": KerasSeparableConv2d,
    "batch_norm": _batch_norm,
    "linear": KerasLinear,
    "flatten": Flatten,
    "activation": Activation,
    "add": lambda a: Merge(a, "add"),
    "mul": lambda a: Merge(a, "mul"),
    "sub": lambda a: Merge(a, "sub"),
    "mean": lambda a: Merge(a, "mean"),
    "max": lambda a: Merge(a, "max"),
    "concat": Concat,
    "pool2d": Pool2d,
    "global_pool2d": GlobalPool2d,
    "pad2d": Pad2d,
    "dropout": Dropout,
    "identity": Identity,
    "reshape": Reshape,
    "permute": Permute,
    "rescale": Rescale,
    "normalize": Normalize,
    "prelu": PReLU,
}

_LISTED: dict[type, type] = {}


def _listed(cls: type) -> type:
    """A subclass of ``cls`` whose forward returns ``[output]`` (the shared graph convention);
    same parameters and names, so ``isinstance(m, nn.Conv2d)`` etc. still hold."""
    if cls not in _LISTED:

        def forward(self: nn.Module, *xs: torch.Tensor) -> list[torch.Tensor]:
            return [cls.forward(self, *xs)]

        def __reduce_ex__(self: nn.Module, protocol: Any) -> Any:
            # made at run time, so pickle cannot find the class by name: rebuild it from ``cls``
            return (_rebuild_listed, (cls,), self.__dict__)

        body = {"forward": forward, "__reduce_ex__": __reduce_ex__, "__module__": cls.__module__}
        _LISTED[cls] = type(cls.__name__, (cls,), body)
    return _LISTED[cls]


def _rebuild_listed(cls: type) -> nn.Module:
    """An empty instance of ``_listed(cls)`` for unpickling (``torch.save(model)``, deepcopy)."""
    listed = _listed(cls)
    return listed.__new__(listed)


def _node_op(factory: Callable[[dict[str, Any]], nn.Module]) -> Callable[[dict[str, Any]], nn.Module]:
    def make(node: dict[str, Any]) -> nn.Module:
        mod = factory(node.get("attrs", {}))
        mod.__class__ = _listed(type(mod))
        return mod

    return make


def register(table: dict[str, Any] | None = None) -> dict[str, Any]:
    """Add the ``keras.*`` ops to the shared graph builder's op table (idempotent)."""
    if table is None:
        from converters.graph_torch import OPS as table  # noqa: N811
    for name, factory in KERAS_OPS.items():
        table.setdefault(f"keras.{name}", _node_op(factory))
    return table


register()
