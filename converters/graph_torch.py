"""Rebuild an ``nn.Module`` from a zoo graph (graph.json) with no source framework present.

Every node becomes a submodule named ``node["module"]`` (the sanitized source layer name; the
original stays in ``node["name"]``). Ops keep the source framework's numerics where they differ
from PyTorch's defaults (Caffe's ceil-mode pooling with its clipped last window and its average
divisor, LRN alpha / local_size, BatchNorm eps), so a rebuilt module reproduces the source net.
Nothing here executes code from the file: the graph is plain data.

graph.json (format "zoo-graph", version 1)::

    {"format": "zoo-graph", "version": 1, "source": "caffe", "name": "LeNet",
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
identity, lrn, batch_norm (buffers running_mean / running_var), scale, eltwise, concat, slice,
split, softmax, flatten, reshape, permute. Other converters register more in ``OPS``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from converters.caffe.shapes import caffe_pool_out, reshape_shape


class Op(nn.Module):
    """Base: one graph node; ``forward(*inputs) -> list of outputs``."""

    def __init__(self, node: dict[str, Any]) -> None:
        super().__init__()
        self.attrs = node.get("attrs", {})
        self.n_out = len(node.get("outputs", [None]))
        for pname, shape in node.get("params", {}).items():
            self.register_parameter(pname, nn.Parameter(torch.zeros(shape), requires_grad=True))

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.attrs.items() if v is not None)


class Conv2d(Op):
    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        a = self.attrs
        return [
            F.conv2d(
                x,
                self.weight,
                getattr(self, "bias", None),
                a["stride"],
                a["padding"],
                a["dilation"],
                a["groups"],
            )
        ]


class ConvTranspose2d(Op):
    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        a = self.attrs
        return [
            F.conv_transpose2d(
                x,
                self.weight,
                getattr(self, "bias", None),
                a["stride"],
                a["padding"],
                0,
                a["groups"],
                a["dilation"],
            )
        ]


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


class Linear(Op):
    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        ax = self.attrs.get("axis", 1)
        x = x.reshape(*x.shape[:ax], -1)
        return [F.linear(x, self.weight, getattr(self, "bias", None))]


class ReLU(Op):
    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        s = self.attrs.get("negative_slope", 0.0)
        return [F.leaky_relu(x, s) if s else F.relu(x)]


class PReLU(Op):
    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        w = self.weight.reshape(1, -1, *([1] * (x.dim() - 2)))
        return [torch.where(x > 0, x, x * w)]


class Sigmoid(Op):
    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [torch.sigmoid(x)]


class Tanh(Op):
    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [torch.tanh(x)]


class Identity(Op):
    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [x]


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


class BatchNorm(Op):
    """Inference batch norm from stored statistics (already divided by Caffe's scale factor)."""

    def __init__(self, node: dict[str, Any]) -> None:
        nn.Module.__init__(self)
        self.attrs = node.get("attrs", {})
        self.n_out = 1
        for pname, shape in node.get("params", {}).items():
            self.register_buffer(pname, torch.zeros(shape))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        eps = self.attrs["eps"]
        return [F.batch_norm(x, self.running_mean, self.running_var, None, None, False, 0.0, eps)]


class Scale(Op):
    def forward(self, x: torch.Tensor, *other: torch.Tensor) -> list[torch.Tensor]:
        a = self.attrs
        ax = a.get("axis", 1)
        shape = a["shape"]

        def fit(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(*shape, *([1] * (x.dim() - ax - len(shape))))

        y = x * fit(other[0] if other else self.weight)
        if a.get("bias"):
            y = y + fit(self.bias)
        return [y]


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


class Softmax(Op):
    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [torch.softmax(x, dim=self.attrs["axis"])]


class Flatten(Op):
    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [x.flatten(self.attrs["axis"], self.attrs["end_axis"])]


class Reshape(Op):
    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        a = self.attrs
        return [x.reshape(reshape_shape(list(x.shape), a["shape"], a["axis"], a["num_axes"]))]


class Permute(Op):
    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [x.permute(*self.attrs["order"])]


OPS: dict[str, type[Op]] = {
    "conv2d": Conv2d,
    "conv_transpose2d": ConvTranspose2d,
    "pool2d": Pool2d,
    "linear": Linear,
    "relu": ReLU,
    "prelu": PReLU,
    "sigmoid": Sigmoid,
    "tanh": Tanh,
    "identity": Identity,
    "lrn": LRN,
    "batch_norm": BatchNorm,
    "scale": Scale,
    "eltwise": Eltwise,
    "concat": Concat,
    "slice": Slice,
    "split": Split,
    "softmax": Softmax,
    "flatten": Flatten,
    "reshape": Reshape,
    "permute": Permute,
}


class GraphModule(nn.Module):
    """The network of a graph.json; ``forward(*inputs)`` returns the net output(s)."""

    def __init__(self, graph: dict[str, Any]) -> None:
        super().__init__()
        self.graph = graph
        self.input_names = [i["name"] for i in graph["inputs"]]
        self.output_names = list(graph["outputs"])
        for node in graph["nodes"]:
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
            outs = mods[node["module"]](*[env[b] for b in node["inputs"]])
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


def build_module(graph: dict[str, Any], state: dict[str, Any] | None = None) -> GraphModule:
    """GraphModule from a graph dict, with weights loaded strictly when ``state`` is given."""
    m = GraphModule(graph)
    if state is not None:
        tensors = {
            k: torch.tensor(np.asarray(v)) if not isinstance(v, torch.Tensor) else v for k, v in state.items()
        }
        m.load_state_dict(tensors, strict=True)
    return m.eval()
