"""The one model interface every model zoo loads answers, as timm's models do.

Every ``nn.Module`` :func:`zoo.load` returns has these methods (native on converted graphs, timm's
own plus two for timm models, a thin adapter for torchvision):

- ``layers()`` -> list of :class:`LayerInfo`: index, name, type, output shape at the card's input
  size (batch 1), parameter count, trainable. Names are the source layer names for converted
  models, module paths (``layer4``, ``avgpool``) for torchvision and timm; ``cut`` takes them.
- ``cut(name)`` -> an ``nn.Module`` that ends at that layer (sharing the parameters).
- ``forward_features(x)`` -> the output of the feature layer (``default_cut``); timm models keep
  timm's own (the unpooled feature map its ``forward`` goes through, which ``forward`` needs), so
  for them ``cut(default_cut)`` is the card's feature layer.
- ``get_classifier()`` -> the classifier module; ``reset_classifier(num_classes)`` replaces it.
- ``group_matcher(coarse=False)`` -> timm's ``{"stem": regex, "blocks": [(regex, (i,)), ...]}``
  covering every parameter exactly once (for layer-wise learning rates).
- ``default_cut``: the feature layer's name.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from dataclasses import asdict, dataclass
from typing import Any

log = logging.getLogger("zoo.models")


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


# ------------------------------------------------------------------ library models (torchvision, timm)
class _Stop(Exception):
    pass


def _units(model: Any) -> list[tuple[str, Any]]:
    """Top-level children, with sequential containers opened one level (``layer1.0``,
    ``features.3``): the rows ``layers()`` lists and the units ``group_matcher`` groups."""
    from torch import nn

    out = []
    for name, child in model.named_children():
        if isinstance(child, (nn.Sequential, nn.ModuleList)) and len(child):
            out.append((name, child))
            out += [(f"{name}.{n}", c) for n, c in child.named_children()]
        else:
            out.append((name, child))
    return out


def _input_size(model: Any) -> tuple[int, ...]:
    size = getattr(model, "zoo_input_size", None)
    return tuple(size) if size else (3, 224, 224)


class ZooInterface:
    """The model interface for library models (a mixin put on their class by :func:`adapt`)."""

    default_cut: str | None = None
    classifier_name: str | None = None  # not ``classifier``: torchvision models have such a submodule
    zoo_input_size: tuple[int, ...] | None = None

    def __reduce_ex__(self, protocol: Any) -> Any:
        """Pickled (``torch.save(model)``, ``copy.deepcopy``) as its library class + state: the
        adapted class is made at run time, so pickle could not find it by name."""
        return (_rebuild, (type(self).__bases__[0],), self.__dict__)

    def layers(self) -> list[LayerInfo]:
        import torch

        units = _units(self)
        shapes: dict[str, tuple[int, ...]] = {}
        hooks = []
        for name, mod in units:

            def hook(_m: Any, _i: Any, out: Any, name: str = name) -> None:
                t = out[0] if isinstance(out, (tuple, list)) else out
                if isinstance(t, torch.Tensor) and name not in shapes:
                    shapes[name] = tuple(t.shape)

            hooks.append(mod.register_forward_hook(hook))
        # each module's own mode comes back (a BatchNorm frozen in eval inside a training model
        # stays frozen), and the shape pass in eval mode moves no running statistics
        modes = [(m, m.training) for m in self.modules()]  # type: ignore[attr-defined]
        try:
            self.eval()  # type: ignore[attr-defined]
            with torch.no_grad():
                self(torch.zeros(1, *_input_size(self)))  # type: ignore[operator]
        finally:
            for h in hooks:
                h.remove()
            for m, was in modes:
                m.training = was
        rows = []
        for i, (name, mod) in enumerate(units):
            ps = list(mod.parameters())
            rows.append(
                LayerInfo(
                    i,
                    name,
                    type(mod).__name__,
                    shapes.get(name),
                    int(sum(p.numel() for p in ps)),
                    any(p.requires_grad for p in ps),
                )
            )
        return rows

    def cut(self, name: str) -> Any:
        """A module that ends at ``name`` (a module path), sharing this model's parameters."""
        modules = dict(self.named_modules())  # type: ignore[attr-defined]
        if name not in modules or not name:
            import difflib

            close = difflib.get_close_matches(name, [n for n, _ in _units(self)], n=5)
            from zoo.errors import ZooError

            raise ZooError(
                f"no layer {name!r} in this model" + (f" (close: {', '.join(close)})" if close else "")
            )
        return cut_module(self, name)

    def forward_features(self, x: Any) -> Any:
        if not self.default_cut:
            from zoo.errors import ZooError

            raise ZooError("this model has no default_cut (the feature layer): use cut(name)")
        return HookCut(self, self.default_cut)(x)  # no tracing per call

    def get_classifier(self) -> Any:
        return self.get_submodule(self._classifier_path())  # type: ignore[attr-defined]

    def _classifier_path(self) -> str:
        if self.classifier_name:
            return self.classifier_name
        from torch import nn

        last = None
        for n, m in self.named_modules():  # type: ignore[attr-defined]
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                last = n
        if last is None:
            from zoo.errors import ZooError

            raise ZooError("this model has no classifier layer")
        return last

    def reset_classifier(self, num_classes: int) -> None:
        from torch import nn

        path = self._classifier_path()
        old = self.get_submodule(path)  # type: ignore[attr-defined]
        bias = old.bias is not None
        if isinstance(old, nn.Linear):
            new: nn.Module = nn.Linear(old.in_features, num_classes, bias=bias)
        elif isinstance(old, nn.Conv2d):
            new = nn.Conv2d(
                old.in_channels,
                num_classes,
                old.kernel_size,
                old.stride,
                old.padding,
                old.dilation,
                bias=bias,
                padding_mode=old.padding_mode,
            )
        else:
            from zoo.errors import ZooError

            raise ZooError(f"classifier {path!r} is a {type(old).__name__}: cannot resize it")
        parent_path, _, leaf = path.rpartition(".")
        parent = self.get_submodule(parent_path) if parent_path else self  # type: ignore[attr-defined]
        w = old.weight
        new = new.to(device=w.device, dtype=w.dtype).train(old.training)
        setattr(parent, leaf, new)
        if hasattr(self, "num_classes"):
            self.num_classes = num_classes

    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """timm's format: the stem (units before the first block container), then one block per
        unit (``coarse``: per top-level container); every parameter in exactly one group."""
        import re

        from torch import nn

        top = [(n, c) for n, c in self.named_children() if any(True for _ in c.parameters())]  # type: ignore[attr-defined]
        stem: list[str] = []
        blocks: list[str] = []
        seen_container = False
        for n, c in top:
            container = isinstance(c, (nn.Sequential, nn.ModuleList))
            if container and not coarse:
                kids = [f"{n}.{k}" for k, m in c.named_children() if any(True for _ in m.parameters())]
                if not seen_container and not stem and kids:
                    stem.append(kids.pop(0))
                blocks += kids
            elif not seen_container and not container and not blocks:
                stem.append(n)
            else:
                blocks.append(n)
            seen_container = seen_container or container
        if not stem and blocks:
            stem.append(blocks.pop(0))
        alt = "|".join(re.escape(s) for s in stem)
        return {
            "stem": rf"^(?:{alt})\.",
            "blocks": [(rf"^{re.escape(b)}\.", (i,)) for i, b in enumerate(blocks)],
        }


@functools.cache
def _single_cls() -> type:
    from torch import nn

    class _Single(nn.Module):
        """The FX extractor's ``{"out": tensor}`` as the tensor."""

        def __init__(self, fx: Any) -> None:
            super().__init__()
            self.fx = fx

        def forward(self, *xs: Any) -> Any:
            return self.fx(*xs)["out"]

    return _Single


@functools.cache
def _hook_cut_cls() -> type:
    from torch import nn

    class _HookCut(nn.Module):
        """Runs the model up to module ``name`` and returns its output (the rest is not computed)."""

        def __init__(self, model: Any, name: str) -> None:
            super().__init__()
            self.model = model
            self.name = name

        def forward(self, *xs: Any) -> Any:
            got: list[Any] = []

            def hook(_m: Any, _i: Any, out: Any) -> None:
                got.append(out)
                raise _Stop

            h = self.model.get_submodule(self.name).register_forward_hook(hook)
            try:
                self.model(*xs)
            except _Stop:
                pass
            finally:
                h.remove()
            return got[0]

    return _HookCut


def HookCut(model: Any, name: str) -> Any:  # noqa: N802 - builds the nn.Module class on first use
    """Runs ``model`` up to module ``name`` and returns that module's output."""
    return _hook_cut_cls()(model, name)


def cut_module(model: Any, name: str) -> Any:
    """``model`` cut after module ``name``: torchvision's (timm's) FX feature extractor, which holds
    only the modules up to the cut, sharing their parameters; a forward-hook cut where FX cannot
    trace the model."""
    try:
        if type(model).__module__.startswith("timm.") or any(
            c.__module__.startswith("timm.") for c in type(model).__mro__
        ):
            from timm.models import create_feature_extractor
        else:
            from torchvision.models.feature_extraction import create_feature_extractor
        fx = create_feature_extractor(model, return_nodes={name: "out"})
    except Exception as e:  # noqa: BLE001 - FX raises many types on untraceable code
        log.debug("FX cannot cut %s at %s (%s): a forward-hook cut instead", type(model).__name__, name, e)
        return HookCut(model, name)
    return _single_cls()(fx)


@functools.cache
def _adapted(cls: type) -> type:
    """``cls`` with :class:`ZooInterface` mixed in (one class per library class)."""
    return type(cls.__name__, (cls, ZooInterface), {"__module__": cls.__module__})


def _rebuild(cls: type) -> Any:
    """Unpickling an adapted model: an empty instance of the adapted class (state follows)."""
    obj = cls.__new__(cls)
    obj.__class__ = _adapted(cls)
    return obj


def adapt(model: Any, card: Any = None) -> Any:
    """Give a library model the zoo interface (its class gains :class:`ZooInterface`; timm's own
    methods win where it has them) and the card's head fields."""
    if not isinstance(model, ZooInterface):
        model.__class__ = _adapted(type(model))
    if card is not None:
        model.default_cut = card.default_cut
        if card.classifier:
            model.classifier_name = card.classifier
        if card.preprocess is not None and card.preprocess.input_size:
            model.zoo_input_size = tuple(card.preprocess.input_size)
    return model


def build_library(card: Any, state: dict[str, Any], where: str = "") -> Any:
    """A torchvision / timm model for the card's architecture holding ``state`` (strict)."""
    from zoo.errors import ConversionError, require

    arch = card.architecture
    if arch is None or arch.kind not in ("torchvision", "timm"):
        raise ConversionError(f"{where or card.id}: not a torchvision or timm architecture ({arch})")
    if arch.kind == "torchvision":
        require("torch", "torchvision", what="loading a torchvision model")
        import torchvision.models as tvm

        from converters.torch_onnx import torchvision_kwargs

        kw = {**torchvision_kwargs(arch.name, state), **arch.kwargs}
        if card.num_classes and "num_classes" not in kw:
            kw["num_classes"] = card.num_classes
        try:
            model = tvm.get_model(arch.name, weights=None, **kw)
        except ValueError as e:
            raise ConversionError(
                f"{where or card.id}: unknown torchvision architecture {arch.name!r}"
            ) from e
    else:
        require("torch", "timm", what="loading a timm model")
        import timm

        kw = dict(arch.kwargs)
        if card.num_classes and "num_classes" not in kw:
            kw["num_classes"] = card.num_classes
        try:
            model = timm.create_model(arch.name, pretrained=False, **kw)
        except RuntimeError as e:
            raise ConversionError(f"{where or card.id}: unknown timm architecture {arch.name!r}") from e
    import torch

    if not card.num_classes and "num_classes" not in arch.kwargs:  # a user's file: its own head size
        head = adapt(model)._classifier_path()
        w = state.get(f"{head}.weight")
        default = model.get_submodule(head).weight.shape[0]
        if w is not None and tuple(w.shape)[0] != default:
            return build_library(dataclasses.replace(card, num_classes=int(w.shape[0])), state, where)
    try:
        model.load_state_dict({k: torch.as_tensor(v) for k, v in state.items()}, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise ConversionError(
            f"{where or card.id}: the weights do not fit {arch.spec}: {' '.join(first[:2])[:300]}"
        ) from None
    return adapt(model.eval(), card)


# ------------------------------------------------------------------ zoo.load
def _weights_file(card: Any, files: list[Any]) -> Any:
    from zoo.errors import ZooError

    names = {f.name for f in card.files if f.role.startswith("weights")}
    for p in files:
        if p.name in names:
            return p
    raise ZooError(f"{card.id}: the card lists no weights file")


def read_state(path: Any) -> dict[str, Any]:
    """A state dict from ``.safetensors`` or ``.pth`` (``weights_only``: no pickled code runs)."""
    from converters.torch_onnx import load_state_dict

    return load_state_dict(path)


def _blob_sha(path: Any) -> str:
    """The sha256 of a pulled file: the name of the cache blob it links to (else hashed)."""
    import os
    import re

    from zoo.fileio import sha256_file

    real = os.path.realpath(path)
    name = os.path.basename(real)
    return name if re.fullmatch(r"[0-9a-f]{64}", name) else sha256_file(real)


def converted_folder(model_id: str, *, home: Any = None, **pull_kw: Any) -> Any:
    """The zoo model folder of a Caffe / Keras / TensorFlow registry entry, converted on first use into
    ``$ZOO_HOME/converted/<id>-<key>/`` (key: the source files' sha256, the converter version and the
    card's architecture) and reused afterwards."""
    import hashlib
    import json
    from pathlib import Path

    from filelock import FileLock

    from converters.folder import GRAPH_VERSION, read_folder
    from converters.layermap import LAYERMAP_VERSION
    from zoo import __version__, api
    from zoo.convert import convert
    from zoo.errors import ConversionError
    from zoo.paths import zoo_home

    card = api.info(model_id, home=home)
    files = api.pull(card.id, home=home, **pull_kw)
    key_doc = {
        "id": card.id,
        "files": sorted((Path(p).name, _blob_sha(p)) for p in files),
        "converter": [__version__, GRAPH_VERSION, LAYERMAP_VERSION],
        "architecture": card.architecture.spec if card.architecture else None,
    }
    key = hashlib.sha256(json.dumps(key_doc, sort_keys=True).encode()).hexdigest()[:24]
    root = Path(home) if home else zoo_home()
    out = root / "converted" / f"{card.id.replace('/', '--')}-{key}"

    def usable() -> bool:
        try:
            read_folder(out)  # a valid card, weights and a graph of this version
        except ConversionError:
            return False
        return True

    if usable():
        return out
    (root / "locks").mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / "locks" / f"converted-{key}.lock")):
        if not usable():
            convert(card.id, out, to="torch", home=home, force=True, **pull_kw)
    return out


def load(ref: Any, *, home: Any = None, **pull_kw: Any) -> Any:
    """``nn.Module`` (eval mode, with the zoo model interface) for a registry / catalogue id or a
    zoo model folder; the card's weights are pulled and verified first."""
    from pathlib import Path

    from converters.folder import load_folder
    from zoo import api
    from zoo.errors import ZooError, require

    require("torch", "torch", "safetensors", what="zoo.load")
    p = Path(str(ref))
    if p.is_dir():
        if (p / "config.json").is_file() and (p / "checkpoints").is_dir():  # a zoo finetune run
            from zoo.finetune.run import load_run

            return load_run(p, home=home)[0]
        return load_folder(p)
    card = api.info(str(ref), home=home)
    arch = card.architecture
    kind = arch.kind if arch else None
    if kind in ("torchvision", "timm"):
        files = api.pull(card.id, home=home, **pull_kw)
        return build_library(card, read_state(_weights_file(card, files)), where=card.id)
    if kind in ("caffe", "keras", "keras.applications", "graph", "slim") or card.framework == "tensorflow":
        return load_folder(converted_folder(card.id, home=home, **pull_kw))
    if kind == "finetune":  # a registered zoo export: its files are the folder (the card is the catalogue's)
        import json

        from zoo.export import load_exported

        files = {Path(f).name: Path(f) for f in api.pull(card.id, home=home, **pull_kw)}
        graph = json.loads(files["graph.json"].read_text()) if "graph.json" in files else None
        return load_exported(files["model.safetensors"].parent, card, graph)
    if kind == "detectron":
        raise ZooError(f"{card.id}: a Detectron pickle: loading it would run code, so zoo does not load it")
    raise ZooError(f"{card.id}: the card has no architecture zoo can build (register it with --arch)")
