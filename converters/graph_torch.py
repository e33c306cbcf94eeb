"""Rebuild an ``nn.Module`` from a zoo graph (graph.json) with no source framework present.

Every node becomes a submodule named ``node["module"]`` (the sanitized source layer name; the
original stays in ``node["name"]``). Nodes rebuild as the stock PyTorch layers wherever one exists
(``nn.Conv2d`` with groups and dilation, ``nn.ConvTranspose2d``, ``nn.Linear``, ``nn.BatchNorm2d``
/ 1d / 3d, ``nn.PReLU``, ``nn.Dropout``, ``nn.ReLU``, ``nn.Softmax``, ...: subclasses built from a
node, so ``isinstance(m, nn.BatchNorm2d)`` finds them and ``train()`` / ``eval()`` mean what they
mean in Caffe's TRAIN / TEST phases). Ops keep the source framework's numerics where they differ
from PyTorch's (Caffe's ceil-mode pooling with its clipped last window and its average divisor,
LRN alpha / local_size): those stay custom ops. A node's module returns a tensor (one output) or
a list of tensors; eval-mode outputs reproduce the source net. Nothing here executes code from
the file: the graph is plain data.

graph.json (format "zoo-graph", version 2)::

    {"format": "zoo-graph", "version": 2, "source": "caffe", "name": "LeNet",
     "inputs": [{"name": "data", "shape": [64, 1, 28, 28]}],   # declared shapes (batch is free)
     "outputs": ["prob"],                                        # blob names, forward() order
     "nodes": [{"name": "conv1",          # the source layer name, unchanged
                "module": "conv1",        # submodule / state-dict prefix (sanitized name)
                "type": "Convolution",    # the source layer type
                "op": "conv2d", "attrs": {...},
                "inputs": ["data"], "outputs": ["conv1"],   # blob names; in-place = same name
                "params": {"weight": [20, 1, 5, 5], "bias": [20]},  # torch-layout shapes
                "output_shapes": [[64, 20, 24, 24]]}, ...]}

Ops: conv2d, conv_transpose2d, pool2d (Caffe sizes), linear (axis), relu, prelu, sigmoid, tanh,
identity, dropout (ratio), lrn, batch_norm (buffers running_mean / running_var; eps,
moving_average_fraction), scale (an affine module), eltwise, concat, slice, split, softmax,
flatten, reshape, permute. Other converters register more in ``OPS``.
"""

from __future__ import annotations

import copy
import difflib
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from converters.caffe.shapes import caffe_pool_out, reshape_shape


class Op(nn.Module):
    """Base of the ops with no stock PyTorch layer: one graph node; ``forward(*inputs)`` returns a
    list of outputs (a module may also return a single tensor: GraphModule wraps it)."""

    def __init__(self, node: dict[str, Any]) -> None:
        super().__init__()
        self.attrs = node.get("attrs", {})
        self.n_out = len(node.get("outputs", [None]))
        for pname, shape in node.get("params", {}).items():
            self.register_parameter(pname, nn.Parameter(torch.zeros(shape), requires_grad=True))

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.attrs.items() if v is not None)


# --- stock PyTorch layers, built from a node (Caffe semantics where they differ) ---------------


class Conv2d(nn.Conv2d):
    """Caffe Convolution: ``nn.Conv2d`` (groups, dilation; Caffe pads symmetrically)."""

    def __init__(self, node: dict[str, Any]) -> None:
        a, w = node["attrs"], node["params"]["weight"]
        g = int(a.get("groups", 1))
        super().__init__(
            w[1] * g,
            w[0],
            (w[2], w[3]),
            stride=tuple(a["stride"]),
            padding=tuple(a["padding"]),
            dilation=tuple(a["dilation"]),
            groups=g,
            bias="bias" in node["params"],
        )


class ConvTranspose2d(nn.ConvTranspose2d):
    """Caffe Deconvolution: ``nn.ConvTranspose2d`` (weight [in, out / groups, kh, kw])."""

    def __init__(self, node: dict[str, Any]) -> None:
        a, w = node["attrs"], node["params"]["weight"]
        g = int(a.get("groups", 1))
        super().__init__(
            w[0],
            w[1] * g,
            (w[2], w[3]),
            stride=tuple(a["stride"]),
            padding=tuple(a["padding"]),
            groups=g,
            bias="bias" in node["params"],
            dilation=tuple(a["dilation"]),
        )


class Linear(nn.Linear):
    """Caffe InnerProduct: ``nn.Linear`` on the input flattened from Caffe's ``axis`` on."""

    def __init__(self, node: dict[str, Any]) -> None:
        w = node["params"]["weight"]
        super().__init__(w[1], w[0], bias="bias" in node["params"])
        self.axis = int(node.get("attrs", {}).get("axis", 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.reshape(*x.shape[: self.axis], -1))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, axis={self.axis}"


class _CaffeBatchNorm:
    """Caffe BatchNorm as ``nn.BatchNorm{1,2,3}d(affine=False)`` (Caffe's BatchNorm has no affine
    part: a Scale layer follows it).

    - eval: normalizes with ``running_mean`` / ``running_var``, the real statistics (the layer map
      divided Caffe's stored sums by its scale-factor blob at conversion), with Caffe's ``eps``.
    - train: normalizes with the batch mean and the biased batch variance over (N, spatial), as
      Caffe's TRAIN phase does, and updates the running statistics with
      ``momentum = 1 - moving_average_fraction``: ``running = f * running + (1 - f) * batch``,
      the variance term taken unbiased (m / (m - 1), m = N * spatial), as Caffe's
      batch_norm_layer.cpp does. Caffe keeps un-normalized sums and a scale factor
      ``s <- f * s + 1``; its effective statistic weighs a new batch by ``1 / (f * s + 1)``, which
      is ``1 - f`` once ``s`` has converged to ``1 / (1 - f)`` (any net trained for more than a
      few hundred iterations): that converged rule is the one used here.
    - ``use_global_stats`` in the prototxt is recorded in the node's attrs, not applied: train()
      / eval() choose the statistics (deploy files set it for inference).
    - ``num_batches_tracked`` is a non-persistent buffer: the state dict holds exactly the layer
      map's keys, and a folder's model.safetensors loads strictly.
    """

    def _setup(self, node: dict[str, Any]) -> None:
        a = node.get("attrs", {})
        c = node["params"]["running_mean"][0]
        frac = float(a.get("moving_average_fraction", 0.999))
        super().__init__(c, eps=float(a["eps"]), momentum=1.0 - frac, affine=False)  # type: ignore[call-arg]
        self.register_buffer("num_batches_tracked", self.num_batches_tracked, persistent=False)  # type: ignore[attr-defined]

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, *args, **kw):  # type: ignore[no-untyped-def]
        # version 2 (torch's current one): no num_batches_tracked key is added for old files
        meta = {**local_metadata, "version": 2}
        super()._load_from_state_dict(state_dict, prefix, meta, *args, **kw)  # type: ignore[misc]


class BatchNorm1d(_CaffeBatchNorm, nn.BatchNorm1d):
    __doc__ = _CaffeBatchNorm.__doc__

    def __init__(self, node: dict[str, Any]) -> None:
        self._setup(node)


class BatchNorm2d(_CaffeBatchNorm, nn.BatchNorm2d):
    __doc__ = _CaffeBatchNorm.__doc__

    def __init__(self, node: dict[str, Any]) -> None:
        self._setup(node)


class BatchNorm3d(_CaffeBatchNorm, nn.BatchNorm3d):
    __doc__ = _CaffeBatchNorm.__doc__

    def __init__(self, node: dict[str, Any]) -> None:
        self._setup(node)


def batch_norm(node: dict[str, Any]) -> nn.Module:
    """BatchNorm1d for (N, C) / (N, C, L) input, 2d for images, 3d for volumes."""
    shapes = node.get("output_shapes") or [[0, 0, 0, 0]]
    rank = len(shapes[0])
    cls = {2: BatchNorm1d, 3: BatchNorm1d, 4: BatchNorm2d, 5: BatchNorm3d}.get(rank)
    if cls is None:
        raise ValueError(f"graph node {node['name']!r}: BatchNorm on a {rank}-D input")
    return cls(node)


class PReLU(nn.PReLU):
    """Caffe PReLU: ``nn.PReLU`` (one slope per channel of axis 1, or one shared)."""

    def __init__(self, node: dict[str, Any]) -> None:
        super().__init__(num_parameters=int(node["params"]["weight"][0]))


class Dropout(nn.Dropout):
    """Caffe Dropout: ``nn.Dropout(p=dropout_ratio)``; in train mode it zeroes each unit with
    probability p and scales the kept ones by 1 / (1 - p), as Caffe's TRAIN phase; identity in eval."""

    def __init__(self, node: dict[str, Any]) -> None:
        super().__init__(p=float(node.get("attrs", {}).get("ratio", 0.5)))


class Scale(nn.Module):
    """Caffe Scale as an affine module: ``x * weight [+ bias]``, the parameters (shape
    ``attrs["shape"]``) broadcast from Caffe's ``axis``. With a second input, that input is the
    scale and only ``bias`` (if any) is a parameter."""

    def __init__(self, node: dict[str, Any]) -> None:
        super().__init__()
        a = node.get("attrs", {})
        self.axis = int(a.get("axis", 1))
        self.shape = list(a["shape"])
        params = node.get("params", {})
        self.weight = nn.Parameter(torch.ones(params["weight"])) if "weight" in params else None
        self.bias = nn.Parameter(torch.zeros(params["bias"])) if "bias" in params else None

    def forward(self, x: torch.Tensor, *other: torch.Tensor) -> torch.Tensor:
        def fit(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(*self.shape, *([1] * (x.dim() - self.axis - len(self.shape))))

        y = x * fit(other[0] if other else self.weight)
        if self.bias is not None:
            y = y + fit(self.bias)
        return y

    def extra_repr(self) -> str:
        return f"shape={self.shape}, axis={self.axis}, bias={self.bias is not None}"


def _relu(node: dict[str, Any]) -> nn.Module:
    s = float(node.get("attrs", {}).get("negative_slope", 0.0))
    return nn.LeakyReLU(s) if s else nn.ReLU()


def _flatten(node: dict[str, Any]) -> nn.Module:
    return nn.Flatten(node["attrs"]["axis"], node["attrs"]["end_axis"])


def _softmax(node: dict[str, Any]) -> nn.Module:
    return nn.Softmax(dim=node["attrs"]["axis"])


# --- Caffe numerics with no stock layer --------------------------------------------------------


class Pool2d(Op):
    """Caffe pooling: ceil-mode size, clipped last window; AVE divides by the window clipped to
    the padded input (padding counts, the part past the padding does not)."""

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        a = self.attrs
        h, w = int(x.shape[-2]), int(x.shape[-1])
        if a.get("global"):
            if a["method"] == "max":
                return [x.amax(dim=(-2, -1), keepdim=True)]
            return [x.mean(dim=(-2, -1), keepdim=True)]
        (kh, kw), (sh, sw), (ph, pw) = a["kernel"], a["stride"], a["padding"]
        oh, ow = caffe_pool_out(h, kh, ph, sh), caffe_pool_out(w, kw, pw, sw)
        eh = max((oh - 1) * sh + kh - (h + 2 * ph), 0)
        ew = max((ow - 1) * sw + kw - (w + 2 * pw), 0)
        if a["method"] == "max":
            if ph or pw or eh or ew:
                x = F.pad(x, (pw, pw + ew, ph, ph + eh), value=float("-inf"))
            y = F.max_pool2d(x, (kh, kw), (sh, sw))
            return [y[..., :oh, :ow]]
        if ph or pw or eh or ew:
            x = F.pad(x, (pw, pw + ew, ph, ph + eh))
        y = F.avg_pool2d(x, (kh, kw), (sh, sw))[..., :oh, :ow]
        ch = [min(i * sh - ph + kh, h + ph) - (i * sh - ph) for i in range(oh)]
        cw = [min(j * sw - pw + kw, w + pw) - (j * sw - pw) for j in range(ow)]
        if any(c != kh for c in ch) or any(c != kw for c in cw):
            fix = np.outer(kh / np.array(ch, np.float64), kw / np.array(cw, np.float64))
            y = y * torch.tensor(fix, dtype=y.dtype, device=y.device)
        return [y]


class LRN(Op):
    """Caffe LRN. ACROSS_CHANNELS: x / (k + alpha/n * sum of squares over n channels)^beta.
    WITHIN_CHANNEL: x / (1 + alpha * mean of squares over an n x n window, padding counted)^beta."""

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        a = self.attrs
        n, alpha, beta = a["size"], a["alpha"], a["beta"]
        sq = x * x
        if a["region"] == "across_channels":
            pre = (n - 1) // 2
            sq = F.pad(sq.unsqueeze(1), (0, 0, 0, 0, pre, n - 1 - pre))
            avg = F.avg_pool3d(sq, (n, 1, 1), stride=1).squeeze(1)
            scale = a.get("k", 1.0) + alpha * avg
        else:
            pad = (n - 1) // 2
            avg = F.avg_pool2d(F.pad(sq, (pad, n - 1 - pad, pad, n - 1 - pad)), n, stride=1)
            scale = 1.0 + alpha * avg
        return [x * torch.pow(scale, -beta)]


class Eltwise(Op):
    def forward(self, *xs: torch.Tensor) -> list[torch.Tensor]:
        a = self.attrs
        opn = a["operation"]
        if opn == "sum":
            c = a.get("coeffs")
            y = xs[0] * c[0] if c and c[0] != 1 else xs[0]
            for i, t in enumerate(xs[1:], 1):
                y = y + (t * c[i] if c and c[i] != 1 else t)
        elif opn == "prod":
            y = xs[0]
            for t in xs[1:]:
                y = y * t
        else:
            y = xs[0]
            for t in xs[1:]:
                y = torch.maximum(y, t)
        return [y]


class Concat(Op):
    def forward(self, *xs: torch.Tensor) -> list[torch.Tensor]:
        return [torch.cat(xs, dim=self.attrs["axis"])]


class Slice(Op):
    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(torch.split(x, self.attrs["sizes"], dim=self.attrs["axis"]))


class Split(Op):
    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [x] * self.n_out


class Reshape(Op):
    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        a = self.attrs
        return [x.reshape(reshape_shape(list(x.shape), a["shape"], a["axis"], a["num_axes"]))]


class Permute(Op):
    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [x.permute(*self.attrs["order"])]


# op name -> factory(node) -> nn.Module; other converters register namespaced ops ("keras.conv2d")
OPS: dict[str, Callable[[dict[str, Any]], nn.Module]] = {
    "conv2d": Conv2d,
    "conv_transpose2d": ConvTranspose2d,
    "pool2d": Pool2d,
    "linear": Linear,
    "relu": _relu,
    "prelu": PReLU,
    "sigmoid": lambda node: nn.Sigmoid(),
    "tanh": lambda node: nn.Tanh(),
    "identity": lambda node: nn.Identity(),
    "dropout": Dropout,
    "lrn": LRN,
    "batch_norm": batch_norm,
    "scale": Scale,
    "eltwise": Eltwise,
    "concat": Concat,
    "slice": Slice,
    "split": Split,
    "softmax": _softmax,
    "flatten": _flatten,
    "reshape": Reshape,
    "permute": Permute,
}

# ops whose output has its input's shape (reset_classifier updates them after a new head)
_SAME_SHAPE = {"relu", "sigmoid", "tanh", "identity", "dropout", "softmax", "lrn"}


def run_node(mod: nn.Module, xs: list[torch.Tensor]) -> list[torch.Tensor]:
    """Call one node's module; a single tensor becomes a one-element list."""
    outs = mod(*xs)
    return [outs] if isinstance(outs, torch.Tensor) else list(outs)


def _stage(name: str) -> str:
    """A Caffe layer name's stage prefix: up to the first '/', '_', '-' or '.' (``conv2_1`` ->
    ``conv2``, ``inception_3a/1x1`` -> ``inception``, ``conv6-1`` -> ``conv6``)."""
    return re.split(r"[/_.\-]", name, maxsplit=1)[0]


class GraphModule(nn.Module):
    """The network of a graph.json; ``forward(*inputs)`` returns the net output(s).

    It answers the zoo model interface (zoo/models.py): ``layers()``, ``cut(name)``,
    ``forward_features(x)``, ``get_classifier()``, ``reset_classifier(n)``, ``group_matcher()``,
    with the attributes ``default_cut`` and ``classifier`` (source layer names or None; from
    graph.json's keys of those names when present, set from the model card by zoo's loader).
    """

    def __init__(self, graph: dict[str, Any], modules: dict[str, nn.Module] | None = None) -> None:
        """``modules`` (module name -> nn.Module) reuses existing modules instead of building them
        (``cut`` shares its parent's)."""
        super().__init__()
        self.graph = copy.deepcopy(graph)
        self.input_names = [i["name"] for i in graph["inputs"]]
        self.output_names = list(graph["outputs"])
        self.default_cut: str | None = graph.get("default_cut")
        self.classifier: str | None = graph.get("classifier")
        self.num_classes: int | None = graph.get("num_classes")
        for node in self.graph["nodes"]:
            if modules is not None:
                self.add_module(node["module"], modules[node["module"]])
                continue
            cls = OPS.get(node["op"])
            if cls is None and "." in node["op"]:  # namespaced ops ("keras.conv2d") register on import
                import importlib

                importlib.import_module(f"converters.{node['op'].split('.')[0]}.ops")
                cls = OPS.get(node["op"])
            if cls is None:
                raise ValueError(f"graph node {node['name']!r}: unknown op {node['op']!r}")
            self.add_module(node["module"], cls(node))

    def _run(self, xs: tuple[torch.Tensor, ...], trace: dict[str, list[torch.Tensor]] | None):
        if len(xs) != len(self.input_names):
            raise TypeError(f"expected {len(self.input_names)} input(s) {self.input_names}, got {len(xs)}")
        env = dict(zip(self.input_names, xs, strict=True))
        mods = dict(self.named_children())
        for node in self.graph["nodes"]:
            outs = run_node(mods[node["module"]], [env[b] for b in node["inputs"]])
            for name, t in zip(node["outputs"], outs, strict=True):
                env[name] = t
            if trace is not None:
                trace[node["name"]] = list(outs)
        return env

    def forward(self, *xs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        env = self._run(xs, None)
        outs = tuple(env[o] for o in self.output_names)
        return outs[0] if len(outs) == 1 else outs

    @torch.no_grad()
    def run_layers(self, *xs: torch.Tensor) -> dict[str, list[torch.Tensor]]:
        """Every node's outputs, keyed by the source layer name (for per-layer comparisons)."""
        trace: dict[str, list[torch.Tensor]] = {}
        self._run(xs, trace)
        return trace

    def layer_names(self) -> dict[str, str]:
        """Module name -> source layer name."""
        return {n["module"]: n["name"] for n in self.graph["nodes"]}

    # --- the model interface (zoo/models.py) ---------------------------------------------------

    def _node_index(self, name: str) -> int:
        """Index of the node with this source layer name (or module name)."""
        nodes = self.graph["nodes"]
        for i, n in enumerate(nodes):
            if n["name"] == name:
                return i
        for i, n in enumerate(nodes):
            if n["module"] == name:
                return i
        from zoo.errors import ConversionError

        names = [n["name"] for n in nodes]
        close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
        hint = f"; close: {', '.join(close)}" if close else f"; layers: {', '.join(names[:12])}"
        raise ConversionError(f"{self.graph.get('name') or 'graph'}: no layer {name!r}{hint}")

    def layers(self) -> list[Any]:  # list[zoo.models.LayerInfo]
        """One LayerInfo per node: the source layer name and type, the first output's shape from
        the graph with the batch axis set to 1, the node's parameter count (nn.Parameters only:
        BatchNorm's running statistics are buffers) and whether any of them requires grad."""
        from zoo.models import LayerInfo

        mods = dict(self.named_children())
        rows = []
        for i, node in enumerate(self.graph["nodes"]):
            ps = list(mods[node["module"]].parameters())
            shapes = node.get("output_shapes") or [None]
            shape = None if shapes[0] is None else tuple([1, *shapes[0][1:]] if shapes[0] else [])
            rows.append(
                LayerInfo(
                    index=i,
                    name=node["name"],
                    type=node.get("type", node["op"]),
                    output_shape=shape,
                    params=sum(p.numel() for p in ps),
                    trainable=any(p.requires_grad for p in ps),
                )
            )
        return rows

    def cut(self, name: str) -> GraphModule:
        """A GraphModule ending at layer ``name``: its output is that layer's first output blob.

        Caffe's blob semantics: in-place layers after it that rewrite the same blob (ReLU,
        Dropout, BatchNorm, Scale, PReLU with top == bottom) are included, so cutting at "fc7"
        gives the blob fc7 after relu7 and drop7, as Caffe's net.blobs["fc7"] holds it. Nodes the
        output does not depend on are dropped; the inputs stay those of the whole net. The cut
        shares this module's submodules (no copy): training it trains this model.
        """
        nodes = self.graph["nodes"]
        idx = self._node_index(name)
        blob = nodes[idx]["outputs"][0]
        keep = list(range(idx + 1))
        for j in range(idx + 1, len(nodes)):
            n = nodes[j]
            if blob in n["outputs"]:
                if list(n["inputs"]) == [blob] and list(n["outputs"]) == [blob]:
                    keep.append(j)
                else:
                    break  # the blob name is reused for another value: stop there
        needed, used = {blob}, []
        for j in reversed(keep):
            n = nodes[j]
            if needed & set(n["outputs"]):
                used.append(j)
                needed = (needed - set(n["outputs"])) | set(n["inputs"])
        sub = {
            k: v for k, v in self.graph.items() if k not in ("nodes", "outputs", "default_cut", "classifier")
        }
        sub["nodes"] = [nodes[j] for j in reversed(used)]
        sub["outputs"] = [blob]
        mods = dict(self.named_children())
        m = GraphModule(sub, {n["module"]: mods[n["module"]] for n in sub["nodes"]})
        m.training = self.training
        return m

    def forward_features(self, *xs: torch.Tensor) -> torch.Tensor:
        """The output of the feature layer ``default_cut`` (see ``cut``)."""
        if not self.default_cut:
            from zoo.errors import ConversionError

            raise ConversionError(
                f"{self.graph.get('name') or 'graph'}: no default_cut set (the feature layer): "
                "set model.default_cut to a layer name (see model.layers())"
            )
        return self.cut(self.default_cut)(*xs)

    def _classifier_index(self) -> int:
        if self.classifier:
            return self._node_index(self.classifier)
        mods = dict(self.named_children())
        for i in range(len(self.graph["nodes"]) - 1, -1, -1):
            m = mods[self.graph["nodes"][i]["module"]]
            if isinstance(m, (nn.Linear, nn.Conv2d)) and any(True for _ in m.parameters()):
                return i
        from zoo.errors import ConversionError

        raise ConversionError(f"{self.graph.get('name') or 'graph'}: no linear or convolution layer")

    def get_classifier(self) -> nn.Module:
        """The classifier: the layer named by ``self.classifier``, by default the last linear or
        convolution layer."""
        return getattr(self, self.graph["nodes"][self._classifier_index()]["module"])

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier by a fresh layer of the same kind (same class, input size,
        kernel, stride...; groups 1) with ``num_classes`` outputs, and update graph.json's
        parameter and output shapes of it and of the nodes after it whose shape follows
        (activations, dropout, softmax, pooling; flatten)."""
        from zoo.errors import ConversionError

        i = self._classifier_index()
        node = self.graph["nodes"][i]
        old = getattr(self, node["module"])
        n = int(num_classes)
        new = copy.deepcopy(old)
        bias = old.bias is not None
        with torch.no_grad():
            if isinstance(old, nn.Linear):
                new.out_features = n
                new.weight = nn.Parameter(torch.empty(n, old.in_features, dtype=old.weight.dtype))
                axis = -1
            elif isinstance(old, nn.Conv2d):
                new.out_channels, new.groups = n, 1
                shape = (n, old.in_channels, *old.kernel_size)
                new.weight = nn.Parameter(torch.empty(shape, dtype=old.weight.dtype))
                axis = 1
            else:
                raise ConversionError(
                    f"layer {node['name']!r} ({type(old).__name__}) is not a linear or convolution layer"
                )
            new.bias = nn.Parameter(torch.empty(n, dtype=old.weight.dtype)) if bias else None
            new.reset_parameters()
        new.to(old.weight.device)
        new.train(old.training)
        setattr(self, node["module"], new)
        self.num_classes = n
        params = node.get("params")
        if params is not None:
            params["weight"] = list(new.weight.shape)
            if "bias" in params:
                params["bias"] = [n]
            if "attrs" in node and "groups" in node["attrs"]:
                node["attrs"]["groups"] = 1
        if not node.get("output_shapes"):
            return
        s = list(node["output_shapes"][0])
        s[axis] = n
        node["output_shapes"][0] = s
        changed = {node["outputs"][0]: s}  # blob -> its new shape
        for nd in self.graph["nodes"][i + 1 :]:
            hit = [b for b in nd["inputs"] if b in changed]
            if not hit or not nd.get("output_shapes"):
                continue
            x = changed[hit[0]]
            if nd["op"] in _SAME_SHAPE:
                o = list(x)
            elif nd["op"] == "pool2d":  # channels follow, the spatial size is the pooling's
                o = [x[0], x[1], *nd["output_shapes"][0][2:]]
            elif nd["op"] == "flatten":
                a, e = nd["attrs"]["axis"], nd["attrs"]["end_axis"]
                o = x[:a] + [int(np.prod(x[a : e + 1]))] + x[e + 1 :]
            else:
                continue
            nd["output_shapes"][0] = o
            changed[nd["outputs"][0]] = o

    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """timm's parameter groups: ``{"stem": regex, "blocks": [(regex, (ordinal,)), ...]}`` over
        module names (state-dict prefixes), covering every parameter exactly once.

        The stem is the first node with parameters; each later one is its own block, or with
        ``coarse`` consecutive layers sharing a Caffe stage prefix (conv2_1, conv2_2 -> conv2) form
        one block, and parameter-bearing in-place layers (Scale, PReLU, BatchNorm rewriting a
        blob) join the block of the layer that wrote that blob. Blocks carry their ordinal as
        timm's suffix tuple: with ``None`` suffixes and no capture groups in the regexes timm
        would put every block in one group.
        """
        mods = dict(self.named_children())
        groups: list[list[str]] = []  # module names per group, in graph order
        stage: list[str | None] = []
        owner: dict[str, int] = {}  # blob -> group that last wrote it (coarse)
        for node in self.graph["nodes"]:
            ins, outs = list(node["inputs"]), list(node["outputs"])
            if not any(True for _ in mods[node["module"]].parameters()):
                if ins != outs:
                    for b in outs:
                        owner.pop(b, None)
                continue
            g: int | None = None
            st = _stage(node["name"])
            if coarse and groups:
                if ins == outs and len(ins) == 1 and ins[0] in owner:
                    g = owner[ins[0]]
                elif len(groups) > 1 and st != node["name"] and stage[-1] == st:
                    g = len(groups) - 1
            if g is None:
                groups.append([])
                stage.append(st if st != node["name"] else None)
                g = len(groups) - 1
            groups[g].append(node["module"])
            for b in outs:
                owner[b] = g

        def rx(names: list[str]) -> str:
            return r"^(?:" + "|".join(re.escape(m) for m in names) + r")\."

        if not groups:
            return {"stem": r"^$", "blocks": []}
        return {"stem": rx(groups[0]), "blocks": [(rx(g), (i,)) for i, g in enumerate(groups[1:])]}


def build_module(graph: dict[str, Any], state: dict[str, Any] | None = None) -> GraphModule:
    """GraphModule from a graph dict, with weights loaded strictly when ``state`` is given."""
    m = GraphModule(graph)
    if state is not None:
        tensors = {
            k: torch.tensor(np.asarray(v)) if not isinstance(v, torch.Tensor) else v for k, v in state.items()
        }
        m.load_state_dict(tensors, strict=True)
    return m.eval()
