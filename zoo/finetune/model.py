"""The fine-tuned network: a zoo model cut at a layer (the base), a new head, and the freeze policy
(which layers train, which BatchNorm layers stay in eval mode with their statistics untouched).

Imports torch at module level: only the training commands import it (zoo.finetune loads it lazily).
"""

from __future__ import annotations

import difflib
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from zoo.errors import ZooError
from zoo.finetune.config import HeadSpec

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh, "leaky_relu": nn.LeakyReLU}
BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


# ------------------------------------------------------------------ the head
class _AvgMax(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)


class _Mean(nn.Module):
    """Global average pooling (N, C, H, W) -> (N, C), as the feature cache pools."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


class _Max(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.amax(dim=(2, 3))


class Head(nn.Module):
    """``pool`` (a feature map to a vector; identity for a vector) then ``mlp`` (the layers that
    train). ``mlp`` alone is what runs on cached (average-pooled) features."""

    def __init__(self, spec: HeadSpec, in_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        if len(in_shape) == 3:  # (C, H, W)
            c = in_shape[0]
            pool: nn.Module = {"avg": _Mean, "max": _Max, "avgmax": _AvgMax, "none": nn.Flatten}[spec.pool]()
            width = {"avg": c, "max": c, "avgmax": 2 * c, "none": int(torch.tensor(in_shape).prod())}[
                spec.pool
            ]
        elif len(in_shape) == 1:
            pool, width = nn.Identity(), in_shape[0]
        else:
            raise ZooError(
                f"the base's output has shape {tuple(in_shape)} per image: neither a feature map (C, H, W) "
                "nor a vector: cut at another layer"
            )
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        for i, h in enumerate(spec.hidden):
            layers[f"fc{i}"] = nn.Linear(width, h)
            layers[f"act{i}"] = ACTIVATIONS[spec.act]()
            if spec.dropout:
                layers[f"drop{i}"] = nn.Dropout(spec.dropout)
            width = h
        if spec.dropout:
            layers["drop"] = nn.Dropout(spec.dropout)
        layers["fc"] = nn.Linear(width, num_classes)
        self.pool = pool
        self.mlp = nn.Sequential(layers)
        self.in_features = width
        self.pools_like_cache = len(in_shape) == 1 or spec.pool == "avg"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.pool(x))


# ------------------------------------------------------------------ the layers of a zoo model
def layer_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(layer name, module)`` in forward order, one per row of ``model.layers()`` (the names
    ``--cut``, ``--freeze upto:`` and ``--unfreeze upto:`` take)."""
    own = getattr(model, "layer_modules", None)
    if callable(own):  # a fine-tuned model: its parent's layers up to the cut, then the head's
        return own()
    graph = getattr(model, "graph", None)
    if isinstance(graph, dict) and "nodes" in graph:  # a converted GraphModule: one module per node
        mods = dict(model.named_children())
        return [(n["name"], mods[n["module"]]) for n in graph["nodes"]]
    from zoo.models import _units

    return _units(model)


def _no_layer(what: str, name: str, names: list[str]) -> ZooError:
    close = difflib.get_close_matches(name, names, n=5)
    return ZooError(
        f"{what}: no layer {name!r} in this model" + (f" (close: {', '.join(close)})" if close else "")
    )


@dataclass
class Groups:
    """The base's parameters in blocks, bottom to top (timm's ``group_matcher``: the stem, then each
    block), with each block's layer names; the unit of ``--unfreeze TOP_K`` and of layer-wise
    learning rates."""

    names: list[list[str]] = field(default_factory=list)  # parameter names (of the full model) per block
    params: list[list[nn.Parameter]] = field(default_factory=list)


def base_groups(full: nn.Module, base: nn.Module) -> Groups:
    """``full``'s ``group_matcher()`` blocks restricted to the parameters ``base`` (a cut of
    ``full``, sharing its parameters) holds; a parameter no regex matches gets a block of its own."""
    in_base = {id(p) for p in base.parameters()}
    named = [(n, p) for n, p in full.named_parameters() if id(p) in in_base]
    try:
        gm = full.group_matcher()
    except (AttributeError, NotImplementedError):
        gm = None
    regexes: list[tuple[str, float]] = []
    if gm:
        stem = gm.get("stem")
        for r in [stem] if isinstance(stem, str) else list(stem or []):
            regexes.append((r if isinstance(r, str) else r[0], -1.0))
        blocks = gm.get("blocks") or []
        for i, b in enumerate([blocks] if isinstance(blocks, str) else blocks):
            r, suffix = (b, (i,)) if isinstance(b, str) else b
            order = float(suffix[0]) if suffix and suffix[0] is not None else float(i)
            regexes.append((r, order))
    by_order: dict[float, list[tuple[str, nn.Parameter]]] = {}
    loose = 1e9
    for n, p in named:
        order = next((o for r, o in regexes if re.match(r, n)), None)
        if order is None:
            order, loose = loose, loose + 1
        by_order.setdefault(order, []).append((n, p))
    g = Groups()
    for o in sorted(by_order):
        g.names.append([n for n, _ in by_order[o]])
        g.params.append([p for _, p in by_order[o]])
    return g


# ------------------------------------------------------------------ base + head, frozen or not
class FineTuneModel(nn.Module):
    """``head(base(x))``. The freeze policy is kept here: :meth:`set_frozen` marks base layers
    frozen (no gradient; in eval mode whatever ``train()`` says, so BatchNorm statistics and
    dropout do not move), except BatchNorm layers when ``train_bn``."""

    def __init__(self, base: nn.Module, head: Head, *, train_bn: bool = False) -> None:
        super().__init__()
        self.base = base
        self.head = head
        self.train_bn = train_bn
        self._frozen: list[nn.Module] = []  # not registered: plain list of submodules

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.base(x))

    def set_frozen(self, modules: list[nn.Module]) -> None:
        """Freeze exactly ``modules`` (base layers; everything else in the base trains)."""
        frozen_ids: set[int] = set()
        for m in modules:
            frozen_ids |= {id(q) for q in m.modules()}
        self._frozen = [m for m in self.base.modules() if id(m) in frozen_ids]
        for m in self.base.modules():
            frozen = id(m) in frozen_ids
            bn_trains = frozen and self.train_bn and isinstance(m, BATCHNORMS)
            for p in m.parameters(recurse=False):
                p.requires_grad_(not frozen or bn_trains)
        self.train(self.training)

    def train(self, mode: bool = True) -> FineTuneModel:
        super().train(mode)
        for m in self._frozen:  # each module's own flag (train(False) would recurse into BatchNorm)
            if not (self.train_bn and isinstance(m, BATCHNORMS)):
                m.training = False
        return self

    def frozen_parameter_names(self) -> list[str]:
        return [n for n, p in self.named_parameters() if not p.requires_grad]

    # -- the zoo model interface (zoo.models), so a fine-tuned model is reused like any other
    def attach(self, full: nn.Module, cut: str) -> FineTuneModel:
        """Remember the model the base was cut from (not a submodule: its parameters are the
        base's, shared) and the cut; :meth:`layers`, :meth:`cut` and :meth:`group_matcher` use it."""
        object.__setattr__(self, "_full", full)
        self.cut_layer = cut
        self.default_cut = cut  # the features the head reads
        self.classifier = "head.mlp.fc"
        return self

    def _parent(self) -> nn.Module:
        full = getattr(self, "_full", None)
        if full is None:
            raise ZooError("this fine-tuned model does not know the model it was cut from")
        return full

    def _head_rows(self) -> list[tuple[str, nn.Module]]:
        rows: list[tuple[str, nn.Module]] = []
        if not isinstance(self.head.pool, nn.Identity):
            rows.append(("head.pool", self.head.pool))
        rows += [(f"head.mlp.{n}", m) for n, m in self.head.mlp.named_children()]
        return rows

    def layer_modules(self) -> list[tuple[str, nn.Module]]:
        """The parent's layers up to the cut, then the head's."""
        rows = layer_modules(self._parent())
        names = [n for n, _ in rows]
        i = names.index(self.cut_layer)
        keep = [(n, m) for j, (n, m) in enumerate(rows) if j <= i or n.startswith(self.cut_layer + ".")]
        return keep + self._head_rows()

    def layers(self) -> list[Any]:
        """The parent's rows up to the cut (shapes at its input size), then one per head layer."""
        from zoo.models import LayerInfo

        parent = self._parent().layers()
        names = [r.name for r in parent]
        i = names.index(self.cut_layer)
        rows = [r for j, r in enumerate(parent) if j <= i or r.name.startswith(self.cut_layer + ".")]
        shapes: dict[str, tuple[int, ...]] = {}
        hooks = []
        for name, mod in self._head_rows():

            def hook(_m: Any, _i: Any, out: Any, name: str = name) -> None:
                shapes[name] = tuple(out.shape)

            hooks.append(mod.register_forward_hook(hook))
        modes = [(m, m.training) for m in self.modules()]
        try:
            self.eval()
            size = getattr(self, "input_size", None) or (3, 224, 224)
            with torch.no_grad():
                self(torch.zeros(1, *size))
        finally:
            for h in hooks:
                h.remove()
            for m, was in modes:
                m.training = was
        for name, mod in self._head_rows():
            ps = list(mod.parameters())
            rows.append(
                LayerInfo(
                    len(rows),
                    name,
                    type(mod).__name__,
                    shapes.get(name),
                    sum(p.numel() for p in ps),
                    any(p.requires_grad for p in ps),
                )
            )
        return rows

    def cut(self, name: str) -> nn.Module:
        """A base layer: the parent cut there (the fine-tuned weights, shared); a head layer: this
        network run up to it."""
        heads = [n for n, _ in self._head_rows()]
        if name in heads:
            from zoo.models import HookCut

            return HookCut(self, name)
        names = [n for n, _ in self.layer_modules()]
        if name not in names:
            raise _no_layer("cut", name, names)
        return self._parent().cut(name)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x)

    def get_classifier(self) -> nn.Module:
        return self.head.mlp.fc

    def reset_classifier(self, num_classes: int) -> None:
        old = self.head.mlp.fc
        self.head.mlp.fc = nn.Linear(old.in_features, int(num_classes)).to(old.weight.device)

    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """timm's format over this network's parameter names: the parent's blocks (restricted to
        the base), then the head as the top block."""
        g = base_groups(self._parent(), self.base)
        theirs = dict(self._parent().named_parameters())
        ours = {id(p): n for n, p in self.named_parameters()}
        blocks = [[ours[id(theirs[n])] for n in names if id(theirs[n]) in ours] for names in g.names]
        blocks = [b for b in blocks if b] + [[f"head.{n}" for n, _ in self.head.named_parameters()]]

        def rx(names: list[str]) -> str:
            return "^(?:" + "|".join(re.escape(n) for n in names) + ")$"

        return {"stem": rx(blocks[0]), "blocks": [(rx(b), (i,)) for i, b in enumerate(blocks[1:])]}


def head_input_shape(base: nn.Module, input_size: tuple[int, int, int]) -> tuple[int, ...]:
    """The base's output shape per image for one zero input (eval, no grad; modes restored)."""
    modes = [(m, m.training) for m in base.modules()]
    try:
        base.eval()
        with torch.no_grad():
            out = base(torch.zeros(1, *input_size))
    finally:
        for m, was in modes:
            m.training = was
    if isinstance(out, (tuple, list)) and len(out) == 1:
        out = out[0]
    if not isinstance(out, torch.Tensor) or not out.is_floating_point() or out.ndim not in (2, 4):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ZooError(
            f"the output at the cut is {shape}: not a feature map or vector (cut at another layer)"
        )
    return tuple(out.shape[1:])


def layers_upto(model: nn.Module, name: str, what: str) -> tuple[list[nn.Module], list[nn.Module]]:
    """(the layer modules up to and including ``name``, those after it) of ``model``."""
    rows = layer_modules(model)
    names = [n for n, _ in rows]
    if name not in names:
        raise _no_layer(what, name, names)
    i = names.index(name)
    # a container row (``layer1``) comes before its children (``layer1.0``): it is "up to" a child
    # only if all its children are
    later = names[i + 1 :]
    upto = [m for n, m in rows[: i + 1] if not any(k.startswith(n + ".") for k in later)]
    return upto, [m for _, m in rows[i + 1 :]]


def lowest_layer_of(model: nn.Module, params: list[nn.Parameter]) -> int | None:
    """The index (in :func:`layer_modules` order, containers ignored) of the first layer holding
    one of ``params``; None if none does."""
    want = {id(p) for p in params}
    rows = layer_modules(model)
    names = [n for n, _ in rows]
    for i, (n, m) in enumerate(rows):
        if any(k.startswith(n + ".") for k in names):
            continue  # a container: its children are rows of their own
        if any(id(p) in want for p in m.parameters()):
            return i
    return None
