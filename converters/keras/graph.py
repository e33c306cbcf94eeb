"""Keras model config + weights -> zoo graph nodes, the layer map, and PyTorch-layout tensors.

Shapes are tracked in Keras's channels-last layout (without the batch axis) while building; in the
PyTorch graph every rank-3 (image) tensor is NCHW, so ops that care about axes (flatten, reshape,
concat, softmax, normalization) convert explicitly, and graph.json records each node's
``output_shapes`` in that NCHW layout with the batch axis (the shared zoo-graph node schema).
Weights are never transformed here: each handler records a layer-map row (numeric steps from
:mod:`converters.layermap`: conv kernels HWIO -> OIHW ``permute(3,2,0,1)``, depthwise HW(C,M) ->
(C*M)1HW ``reshape(kh,kw,C*M,1) > permute(2,3,0,1)``, Dense kernels ``transpose``) and the tensors
are the map applied to the Keras weights (:meth:`LayerMap.to_target`), once, never at run time.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from converters.keras.reader import KerasSource, layer_name
from converters.layermap import LayerMap, LayerMapRow
from zoo.errors import ConversionError

Shape = tuple  # Keras layout, no batch axis; entries may be None


@dataclass
class KerasGraph:
    """What :func:`build_graph` produces: nodes, the tensors by parameter key (the layer map applied
    to ``sources``, plus ``constants``), the layer map, and the Keras weights it reads
    (``{layer: [arrays]}``, nested models inlined: the layer names the map's rows use)."""

    nodes: list[dict[str, Any]]
    inputs: list[dict[str, Any]]
    outputs: list[str]
    tensors: dict[str, np.ndarray] = field(default_factory=dict)
    layermap: LayerMap = field(default_factory=lambda: LayerMap([], source_format="keras"))
    sources: dict[str, list[np.ndarray]] = field(default_factory=dict)
    constants: dict[str, np.ndarray] = field(default_factory=dict)


def sanitize(name: str, used: set[str]) -> str:
    """A Python-identifier module name for a Keras layer name (graph.json keeps the original)."""
    s = re.sub(r"[^0-9A-Za-z_]", "_", name)
    if not s or s[0].isdigit():
        s = "l_" + s
    base, i = s, 1
    while s in used:
        i += 1
        s = f"{base}_{i}"
    used.add(s)
    return s


# --- reading the config ---------------------------------------------------------------------


def _unwrap_model(config: dict[str, Any]) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
    if not isinstance(config, dict):
        raise ConversionError(f"the model config is a {type(config).__name__}, not a JSON object")
    cls = config.get("class_name")
    inner = config.get("config")
    if cls not in ("Sequential", "Functional", "Model"):
        raise ConversionError(f"model class {cls!r} is not supported (Sequential or Functional only)")
    if isinstance(inner, list):  # Keras <= 2.2 Sequential
        return cls, inner, {}
    if not isinstance(inner, dict) or not isinstance(inner.get("layers"), list):
        raise ConversionError(f"the {cls} model config holds no 'layers' list")
    return cls, inner["layers"], inner


def _keras3_history(obj: Any, out: list[tuple[str, int, int]]) -> None:
    if isinstance(obj, dict):
        if obj.get("class_name") == "__keras_tensor__":
            h = obj["config"]["keras_history"]
            out.append((h[0], int(h[1]), int(h[2])))
            return
        for v in obj.values():
            _keras3_history(v, out)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _keras3_history(v, out)


def _inbound(layer: dict[str, Any]) -> list[tuple[str, int, int]]:
    nodes = layer.get("inbound_nodes") or []
    if len(nodes) > 1:
        raise ConversionError(
            f"layer {layer_name(layer)!r} ({layer['class_name']}) is called {len(nodes)} times; "
            "shared layers are not supported"
        )
    if not nodes:
        return []
    node = nodes[0]
    out: list[tuple[str, int, int]] = []
    if isinstance(node, dict):  # Keras 3
        _keras3_history(node.get("args", []), out)
        return out
    if isinstance(node, list) and node and isinstance(node[0], str):  # flat form
        node = [node]
    for item in node:
        if isinstance(item, dict):
            _keras3_history(item, out)
        else:
            out.append((item[0], int(item[1]), int(item[2])))
    return out


def _refs(spec: Any) -> list[tuple[str, int, int]]:
    if not spec:
        return []
    if isinstance(spec[0], str):
        return [(spec[0], int(spec[1]), int(spec[2]))]
    return [(s[0], int(s[1]), int(s[2])) for s in spec]


def _tname(ref: tuple[str, int, int]) -> str:
    name, node, idx = ref
    if node != 0:
        raise ConversionError(f"layer {name!r}: node index {node} (shared layer) is not supported")
    return name if idx == 0 else f"{name}:{idx}"


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    return (int(v[0]), int(v[1]))


def _input_shape(cfg: dict[str, Any]) -> Shape | None:
    for k in ("batch_shape", "batch_input_shape"):
        if cfg.get(k) is not None:
            return tuple(cfg[k][1:])
    if cfg.get("input_shape") is not None:
        return tuple(cfg["input_shape"])
    return None


def _input_batch(cfg: dict[str, Any]) -> int | None:
    """The batch size an input layer declares (None: left free, as Keras usually does)."""
    for k in ("batch_shape", "batch_input_shape"):
        if cfg.get(k) is not None:
            b = cfg[k][0]
            return None if b is None else int(b)
    b = cfg.get("batch_size")
    return None if b is None else int(b)


# --- activations ------------------------------------------------------------------------------

ACTIVATIONS = {
    "linear",
    "relu",
    "relu6",
    "sigmoid",
    "tanh",
    "softmax",
    "swish",
    "silu",
    "elu",
    "selu",
    "softplus",
    "softsign",
    "gelu",
    "exponential",
    "hard_sigmoid",
    "hard_swish",
    "hard_silu",
    "leaky_relu",
    "log_softmax",
    "mish",
}


def _activation(value: Any, lname: str, keras_major: int) -> str:
    if value is None:
        return "linear"
    if isinstance(value, dict):  # Keras 3 may serialize {"class_name": "function", "config": "relu"}
        value = value.get("config", value.get("class_name"))
        if isinstance(value, dict):
            value = value.get("name")
    v = str(value)
    if v not in ACTIVATIONS:
        raise ConversionError(f"layer {lname!r}: activation {v!r} is not supported")
    if v == "hard_sigmoid":  # Keras 2: clip(0.2x + 0.5); Keras 3: relu6(x + 3) / 6
        return "hard_sigmoid_k3" if keras_major >= 3 else "hard_sigmoid_k2"
    if v == "silu":
        return "swish"
    if v == "hard_silu":
        return "hard_swish"
    return v


# --- weights ----------------------------------------------------------------------------------


def _expected(cls: str, cfg: dict[str, Any]) -> list[str]:
    """The variable names a layer stores, in Keras's order."""
    bias = ["bias"] if cfg.get("use_bias", True) else []
    if cls == "Conv2D":
        return ["kernel", *bias]
    if cls == "DepthwiseConv2D":
        return ["depthwise_kernel", *bias]
    if cls == "SeparableConv2D":
        return ["depthwise_kernel", "pointwise_kernel", *bias]
    if cls == "Dense":
        return ["kernel", *bias]
    if cls == "BatchNormalization":
        return (
            (["gamma"] if cfg.get("scale", True) else [])
            + (["beta"] if cfg.get("center", True) else [])
            + [
                "moving_mean",
                "moving_variance",
            ]
        )
    if cls == "Normalization":
        if cfg.get("mean") is not None:
            return []
        return ["mean", "variance", "count"]
    if cls == "PReLU":
        return ["alpha"]
    return []


def _short(stored: str) -> str:
    s = stored.split("/")[-1]
    return s[:-2] if s.endswith(":0") else s


def _layer_weights(
    src: KerasSource, lname: str, cls: str, cfg: dict[str, Any]
) -> dict[str, tuple[str, np.ndarray]]:
    want = _expected(cls, cfg)
    have = src.weights.get(lname, [])
    if len(have) != len(want):
        if not have and want:
            raise ConversionError(f"{src.path.name}: no weights stored for layer {lname!r} ({cls})")
        raise ConversionError(
            f"{src.path.name}: layer {lname!r} ({cls}) expects {len(want)} weights "
            f"({', '.join(want) or 'none'}), the file has {len(have)}"
        )
    out: dict[str, tuple[str, np.ndarray]] = {}
    named = {_short(n): (n, a) for n, a in have}
    if all(w in named for w in want):
        for w in want:
            out[w] = named[w]
    else:  # Keras 3 stores vars/0..n: positional, in the layer's own order
        for w, (n, a) in zip(want, have, strict=True):
            out[w] = (n, a)
    return out


# --- the builder ------------------------------------------------------------------------------


def _same_pads(size: int | None, k: int, s: int, d: int) -> tuple[int, int] | None:
    if size is None:
        return None
    eff = (k - 1) * d + 1
    out = -(-size // s)
    total = max((out - 1) * s + eff - size, 0)
    return (total // 2, total - total // 2)


def _conv_out(size: int | None, k: int, s: int, d: int, padding: str) -> int | None:
    if size is None:
        return None
    eff = (k - 1) * d + 1
    if padding == "same":
        return -(-size // s)
    return (size - eff) // s + 1


def _axis4(axis: int, rank: int) -> int:
    """A Keras axis (with batch = 0) -> the PyTorch axis, given the Keras tensor rank (no batch)."""
    if axis < 0:
        axis += rank + 1
    if rank == 3:
        return {0: 0, 1: 2, 2: 3, 3: 1}[axis]
    return axis


class _Builder:
    def __init__(self, src: KerasSource, trust_code: bool) -> None:
        self.src = src
        self.trust = trust_code
        self.shapes: dict[str, Shape] = {}
        self.nodes: list[dict[str, Any]] = []
        self.rows: list[LayerMapRow] = []
        self.constants: dict[str, np.ndarray] = {}
        self.keys: list[str] = []  # state-dict keys in module order (mapped and constant)
        self.batches: dict[str, int | None] = {}
        self.used: set[str] = set()
        self.mod2layer: dict[str, str] = {}
        self.input_names: list[str] = []
        self.k3 = src.keras_major

    def _blob(self, mod: str, stored: tuple[str, np.ndarray]) -> tuple[str, int]:
        lname = self.mod2layer[mod]
        names = [n for n, _ in self.src.weights.get(lname, [])]
        return lname, names.index(stored[0])

    def param(self, mod: str, pname: str, stored: tuple[str, np.ndarray], *steps: str) -> None:
        """Record the layer-map row: Keras tensor ``stored`` -> ``mod.pname`` through ``steps``
        (numeric, in the :mod:`converters.layermap` vocabulary); the tensor itself comes from
        applying the map."""
        key = f"{mod}.{pname}"
        lname, blob = self._blob(mod, stored)
        row = LayerMapRow(lname, blob, key, tuple(steps), tuple(np.shape(stored[1])))
        row = dataclasses.replace(row, target_shape=tuple(row.shapes()[-1]))
        self.rows.append(row)
        self.keys.append(key)
        self.nodes[-1]["params"][pname] = list(row.target_shape or ())

    def unused(self, mod: str, stored: tuple[str, np.ndarray]) -> None:
        """A stored Keras tensor the module does not need (Normalization's sample ``count``): a
        row without a target, so the inverse map still rebuilds it."""
        lname, blob = self._blob(mod, stored)
        a = np.asarray(stored[1])
        self.rows.append(LayerMapRow(lname, blob, None, (f"fold({float(a.reshape(-1)[0])!r})",), a.shape))

    def add(
        self, lname: str, cls: str, op: str, attrs: dict[str, Any], inputs: list[str], out_shape: Shape
    ) -> str:
        mod = sanitize(lname, self.used)
        self.mod2layer[mod] = lname
        self.shapes[lname] = tuple(out_shape)
        if op == "input":  # graph inputs are listed in graph["inputs"], not as nodes
            return mod
        self.nodes.append(
            {
                "name": lname,
                "module": mod,
                "type": cls,
                "op": "keras." + op,
                "attrs": attrs,
                "inputs": inputs,
                "outputs": [lname],
                "params": {},
                "keras_shape": list(out_shape),  # replaced by output_shapes (NCHW, batch) at the end
            }
        )
        return mod

    def extra_state(self, mod: str, pname: str, arr: np.ndarray) -> None:
        """A tensor the module needs that the Keras file does not store (gamma=1 when scale=False,
        a Normalization's statistics given in its config): no layer-map row, a constant."""
        key = f"{mod}.{pname}"
        self.constants[key] = np.ascontiguousarray(np.asarray(arr, np.float32))
        self.keys.append(key)
        self.nodes[-1]["params"][pname] = list(self.constants[key].shape)

    def layer(self, layer: dict[str, Any], inputs: list[str]) -> None:
        cls = layer["class_name"]
        cfg = layer.get("config", {})
        lname = layer_name(layer)
        shapes = [self.shapes[t] for t in inputs]
        handler = getattr(self, "op_" + cls, None)
        if cls == "Lambda":
            if not self.trust:
                raise ConversionError(
                    f"layer {lname!r} is a Lambda layer (arbitrary code); refused without trust_code"
                )
            raise ConversionError(
                f"layer {lname!r}: a Lambda layer's Python code cannot become a PyTorch graph (use to='onnx')"
            )
        if handler is None:
            raise ConversionError(f"layer {lname!r} of type {cls} is not supported by the Keras converter")
        if cfg.get("data_format", "channels_last") != "channels_last":
            raise ConversionError(
                f"layer {lname!r} ({cls}): data_format {cfg['data_format']!r} is not supported"
            )
        handler(lname, cls, cfg, inputs, shapes)

    # one method per Keras class ----------------------------------------------------------------

    def _conv_common(self, lname: str, cfg: dict[str, Any], shp: Shape) -> dict[str, Any]:
        if len(shp) != 3:
            raise ConversionError(f"layer {lname!r}: only 2-D convolutions on images are supported")
        k = _pair(cfg["kernel_size"])
        s = _pair(cfg.get("strides", 1))
        d = _pair(cfg.get("dilation_rate", 1))
        pad = cfg.get("padding", "valid")
        if pad not in ("valid", "same"):
            raise ConversionError(f"layer {lname!r}: padding {pad!r} is not supported")
        return {
            "kernel_size": list(k),
            "stride": list(s),
            "dilation": list(d),
            "padding": pad,
            "activation": _activation(cfg.get("activation"), lname, self.k3),
        }

    def _spatial(self, shp: Shape, a: dict[str, Any]) -> tuple[Any, Any]:
        return tuple(
            _conv_out(shp[i], a["kernel_size"][i], a["stride"][i], a["dilation"][i], a["padding"])
            for i in (0, 1)
        )

    def op_InputLayer(
        self, lname: str, cls: str, cfg: dict[str, Any], inputs: list[str], shapes: list[Shape]
    ) -> None:
        shp = _input_shape(cfg)
        if shp is None:
            raise ConversionError(f"input layer {lname!r} has no shape")
        self.add(lname, cls, "input", {"shape": list(shp)}, [], shp)
        self.input_names.append(lname)
        self.batches[lname] = _input_batch(cfg)

    def op_Conv2D(
        self, lname: str, cls: str, cfg: dict[str, Any], inputs: list[str], shapes: list[Shape]
    ) -> None:
        a = self._conv_common(lname, cfg, shapes[0])
        w = _layer_weights(self.src, lname, cls, cfg)
        kernel = w["kernel"][1]
        groups = int(cfg.get("groups", 1) or 1)
        a.update(
            in_channels=int(kernel.shape[2]) * groups,
            out_channels=int(kernel.shape[3]),
            groups=groups,
            bias="bias" in w,
        )
        h, wd = self._spatial(shapes[0], a)
        mod = self.add(lname, cls, "conv2d", a, inputs, (h, wd, a["out_channels"]))
        self.param(mod, "weight", w["kernel"], "permute(3,2,0,1)")
        if "bias" in w:
            self.param(mod, "bias", w["bias"])

    def op_DepthwiseConv2D(
        self, lname: str, cls: str, cfg: dict[str, Any], inputs: list[str], shapes: list[Shape]
    ) -> None:
        a = self._conv_common(lname, cfg, shapes[0])
        w = _layer_weights(self.src, lname, cls, cfg)
        k = w["depthwise_kernel"][1]  # (kh, kw, C, M)
        c, m = int(k.shape[2]), int(k.shape[3])
        a.update(in_channels=c, out_channels=c * m, groups=c, bias="bias" in w, depth_multiplier=m)
        h, wd = self._spatial(shapes[0], a)
        mod = self.add(lname, cls, "conv2d", a, inputs, (h, wd, c * m))
        kh, kw = int(k.shape[0]), int(k.shape[1])
        self.param(mod, "weight", w["depthwise_kernel"], f"reshape({kh},{kw},{c * m},1)", "permute(2,3,0,1)")
        if "bias" in w:
            self.param(mod, "bias", w["bias"])

    def op_SeparableConv2D(
        self, lname: str, cls: str, cfg: dict[str, Any], inputs: list[str], shapes: list[Shape]
    ) -> None:
        a = self._conv_common(lname, cfg, shapes[0])
        w = _layer_weights(self.src, lname, cls, cfg)
        k = w["depthwise_kernel"][1]
        p = w["pointwise_kernel"][1]  # (1, 1, C*M, F)
        c, m, f = int(k.shape[2]), int(k.shape[3]), int(p.shape[3])
        a.update(in_channels=c, depth_multiplier=m, out_channels=f, bias="bias" in w)
        h, wd = self._spatial(shapes[0], a)
        mod = self.add(lname, cls, "separable_conv2d", a, inputs, (h, wd, f))
        kh, kw = int(k.shape[0]), int(k.shape[1])
        self.param(
            mod,
            "depthwise.weight",
            w["depthwise_kernel"],
            f"reshape({kh},{kw},{c * m},1)",
            "permute(2,3,0,1)",
        )
        self.param(mod, "pointwise.weight", w["pointwise_kernel"], "permute(3,2,0,1)")
        if "bias" in w:
            self.param(mod, "pointwise.bias", w["bias"])

    def op_BatchNormalization(
        self, lname: str, cls: str, cfg: dict[str, Any], inputs: list[str], shapes: list[Shape]
    ) -> None:
        shp = shapes[0]
        axis = cfg.get("axis", -1)
        axis = axis[0] if isinstance(axis, list) else axis
        if len(shp) == 0 or (axis % (len(shp) + 1)) != len(shp):
            raise ConversionError(f"layer {lname!r}: BatchNormalization over axis {axis} is not supported")
        w = _layer_weights(self.src, lname, cls, cfg)
        ch = int(w["moving_mean"][1].shape[0])
        if cfg.get("renorm") or cfg.get("virtual_batch_size"):
            raise ConversionError(f"layer {lname!r}: batch renormalization is not supported")
        a = {
            "num_features": ch,
            "eps": float(cfg.get("epsilon", 1e-3)),
            "momentum": float(cfg.get("momentum", 0.99)),
            "rank": len(shp),
            "scale": "gamma" in w,
            "center": "beta" in w,
        }
        mod = self.add(lname, cls, "batch_norm", a, inputs, shp)
        if "gamma" in w:
            self.param(mod, "weight", w["gamma"])
        else:  # scale=False: gamma fixed at 1 (frozen in the module)
            self.extra_state(mod, "weight", np.ones(ch))
        if "beta" in w:
            self.param(mod, "bias", w["beta"])
        else:
            self.extra_state(mod, "bias", np.zeros(ch))
        self.param(mod, "running_mean", w["moving_mean"])
        self.param(mod, "running_var", w["moving_variance"])

    def op_Dense(
        self, lname: str, cls: str, cfg: dict[str, Any], inputs: list[str], shapes: list[Shape]
    ) -> None:
        shp = shapes[0]
        w = _layer_weights(self.src, lname, cls, cfg)
        kern = w["kernel"][1]
        if len(shp) == 0:
            raise ConversionError(f"layer {lname!r}: Dense on a scalar is not supported")
        a = {
            "in_features": int(kern.shape[0]),
            "out_features": int(kern.shape[1]),
            "bias": "bias" in w,
            "activation": _activation(cfg.get("activation"), lname, self.k3),
        }
        a["rank"] = len(shp)  # on image tensors (rank 3 in Keras) it acts on the channel axis
        mod = self.add(lname, cls, "linear", a, inputs, (*shp[:-1], a["out_features"]))
        self.param(mod, "weight", w["kernel"], "transpose")
        if "bias" in w:
            self.param(mod, "bias", w["bias"])

    def op_Flatten(
        self, lname: str, cls: str, cfg: dict[str, Any], inputs: list[str], shapes: list[Shape]
    ) -> None:
        shp = shapes[0]
        n = None if any(s is None for s in shp) else int(np.prod(shp)) if shp else 1
        self.add(lname, cls, "flatten", {"channels_last": len(shp) == 3}, inputs, (n,))

    def _act(self, lname: str, cls: str, inputs: list[str], shapes: list[Shape], act: str, **kw: Any) -> None:
        self.add(
            lname, cls, "activation", {"activation": act, "rank": len(shapes[0]), **kw}, inputs, shapes[0]
        )

    def op_Activation(
        self, lname: str, cls: str, cfg: dict[str, Any], inputs: list[str], shapes: list[Shape]
    ) -> None:
        self._act(lname, cls, inputs, shapes, _activation(cfg.get("activation"), lname, self.k3))

    def op_ReLU(
        self, lname: str, cls: str, cfg: dict[str, Any], inputs: list[str], shapes: list[Shape]
    ) -> None:
        mv = cfg.get("max_value")
        self._act(
            lname,
            cls,
            inputs,
            shapes,
            "relu_ext",
            max_value=None if mv is None else float(mv),
            negative_slope=float(cfg.get("negative_slope", 0.0) or 0.0),
            threshold=float(cfg.get("threshold", 0.0) or 0.0),
        )

    def op_LeakyReLU(
        self, lname: str, cls: str, cfg: dict[str, Any], inputs: list[str], shapes: list[Shape]
    ) -> None:
        slope = cfg.get("negative_slope", cfg.get("alpha", 0.3))
        self._act(
            lname, cls, inputs, shapes, "relu_ext", max_value=None, negative_slope=float(slope), threshold=0.0
        )

    def op_ELU(
        self, lname: str, cls: str, cfg: dict[str, Any], inputs: list[str], shapes: list[Shape]
    ) -> None:
        self._act(lname, cls, inputs, shapes, "elu", alpha=float(cfg.get("alpha", 1.0)))

    def op_Softmax(
        self, lname: str, cls: str, cfg: dict[str, Any], inputs: list[str], shapes: list[Shape]
    ) -> None:
        axis = cfg.get("axis", -1)
        if isinstance(axis, list):
            if len(axis) != 1:
                raise ConversionError(f"layer {lname!r}: softmax over several axes is not supported")
            axis = axis[0]
        self._act(lname, cls, inputs, shapes, "softmax", dim=_axis4(int(axis), len(shapes[0])))

    def _merge(
        self, lname: str, cls: str, op: str, inputs: list[str], shapes: list[Shape], **attrs: Any
    ) -> None:
        if len(inputs) < 2:
            raise ConversionError(f"layer {lname!r} ({cls}) needs at least two inputs")
        out = tuple(
            max((s[i] for s in shapes if s[i] is not None), default=None) for i in range(len(shapes[0]))
        )
        self.add(lname, cls, op, {"rank": len(shapes[0]), **attrs}, inputs, out)

    def op_Add(
        self, lname: str, cls: str, cfg: dict[str, Any], inputs: list[str], shapes: list[Shape]
    ) -> None:
        self._merge(lname, cls, "add", inputs, shapes)

    def op_Multiply(
        self, lname: str, cls: str, cfg: dict[str, Any], inputs: list[str], shapes: list[Shape]
    ) -> None:
        self._merge(lname, cls, "mul", inputs, shapes)

    def op_Subtract(
        self, lname: str, cls: str, cfg: dict[str, Any], inputs: list[str], shapes: list[Shape]
    ) -> None:
        self._merge(lname, cls, "sub", inputs, shapes)

    def op_Average(
        self, lname: str, cls: str, cfg: dict[str, Any], inputs: list[str], shapes: list[Shape]
    ) -> None:
        self._merge(lname, cls, "mean", inputs, shapes)

    def op_Maximum(
        self, lname: str, cls: str, cfg: dict[str, Any], inputs: list[str], shapes: list[Shape]
    ) -> None:
        self._merge(lname, cls, "max", inputs, shapes)

    def op_Concatenate(
        self, lname: str, cls: str, cfg: dict[str, Any], inputs: list[str], shapes: list[Shape]
    ) -> None:
        rank = len(shapes[0])
        axis = int(cfg.get("axis", -1))
        ax = axis + rank + 1 if axis < 0 else axis
        out = list(shapes[0])
        parts = [s[ax - 1] for s in shapes]
        out[ax - 1] = None if any(p is None for p in parts) else sum(parts)
        self.add(lname, cls, "concat", {"dim": _axis4(axis, rank), "rank": rank}, inputs, tuple(out))

    def _pool(
        self, lname: str, cls: str, cfg: dict[str, Any], inputs: list[str], shapes: list[Shape], kind: str
    ) -> None:
        k = _pair(cfg.get("pool_size", 2))
        s = _pair(cfg.get("strides") or k)
        pad = cfg.get("padding", "valid")
        a = {"kind": kind, "kernel_size": list(k), "stride": list(s), "dilation": [1, 1], "padding": pad}
        h, wd = self._spatial(shapes[0], a)
        a.pop("dilation")
        self.add(lname, cls, "pool2d", a, inputs, (h, wd, shapes[0][2]))

    def op_MaxPooling2D(
        self, lname: str, cls: str, cfg: dict[str, Any], inputs: list[str], shapes: list[Shape]
    ) -> None:
        self._pool(lname, cls, cfg, inputs, shapes, "max")

    def op_AveragePooling2D(
        self, lname: str, cls: str, cfg: dict[str, Any], inputs: list[str], shapes: list[Shape]
    ) -> None:
        self._pool(lname, cls, cfg, inputs, shapes, "avg")

    op_MaxPool2D = op_MaxPooling2D
    op_AvgPool2D = op_AveragePooling2D

    def _gpool(
        self, lname: str, cls: str, cfg: dict[str, Any], inputs: list[str], shapes: list[Shape], kind: str
    ) -> None:
        keep = bool(cfg.get("keepdims", False))
        c = shapes[0][2]
        self.add(
            lname, cls, "global_pool2d", {"kind": kind, "keepdims": keep}, inputs, (1, 1, c) if keep else (c,)
        )

    def op_GlobalAveragePooling2D(
        self, lname: str, cls: str, cfg: dict[str, Any], inputs: list[str], shapes: list[Shape]
    ) -> None:
        self._gpool(lname, cls, cfg, inputs, shapes, "avg")

    def op_GlobalMaxPooling2D(
        self, lname: str, cls: str, cfg: dict[str, Any], inputs: list[str], shapes: list[Shape]
    ) -> None:
        self._gpool(lname, cls, cfg, inputs, shapes, "max")

    op_GlobalAvgPool2D = op_GlobalAveragePooling2D
    op_GlobalMaxPool2D = op_GlobalMaxPooling2D

    def op_ZeroPadding2D(
        self, lname: str, cls: str, cfg: dict[str, Any], inputs: list[str], shapes: list[Shape]
    ) -> None:
        p = cfg.get("padding", 1)
        if isinstance(p, int):
            (t, b), (left, r) = (p, p), (p, p)
        else:
            t, b = _pair(p[0])
            left, r = _pair(p[1])
        h, w, c = shapes[0]
        self.add(
            lname,
            cls,
            "pad2d",
            {"pads": [t, b, left, r], "value": 0.0},
            inputs,
            (None if h is None else h + t + b, None if w is None else w + left + r, c),
        )

    def op_Dropout(
        self, lname: str, cls: str, cfg: dict[str, Any], inputs: list[str], shapes: list[Shape]
    ) -> None:
        self.add(lname, cls, "dropout", {"p": float(cfg.get("rate", 0.0))}, inputs, shapes[0])

    op_SpatialDropout2D = op_Dropout
    op_GaussianDropout = op_Dropout
    op_AlphaDropout = op_Dropout

    def op_GaussianNoise(
        self, lname: str, cls: str, cfg: dict[str, Any], inputs: list[str], shapes: list[Shape]
    ) -> None:
        self.add(lname, cls, "identity", {}, inputs, shapes[0])

    op_ActivityRegularization = op_GaussianNoise

    def op_Reshape(
        self, lname: str, cls: str, cfg: dict[str, Any], inputs: list[str], shapes: list[Shape]
    ) -> None:
        shp = shapes[0]
        tgt = [int(x) for x in cfg["target_shape"]]
        if -1 in tgt and all(s is not None for s in shp):
            known = int(np.prod([x for x in tgt if x != -1]))
            tgt[tgt.index(-1)] = int(np.prod(shp)) // known
        self.add(lname, cls, "reshape", {"target_shape": tgt, "in_rank": len(shp)}, inputs, tuple(tgt))

    def op_Permute(
        self, lname: str, cls: str, cfg: dict[str, Any], inputs: list[str], shapes: list[Shape]
    ) -> None:
        dims = [int(d) for d in cfg["dims"]]
        self.add(
            lname,
            cls,
            "permute",
            {"dims": dims, "in_rank": len(shapes[0])},
            inputs,
            tuple(shapes[0][d - 1] for d in dims),
        )

    def _channel_vec(self, v: Any, lname: str, rank: int) -> list[float] | float:
        if isinstance(v, (int, float)):
            return float(v)
        arr = np.asarray(v, dtype=np.float64).reshape(-1)
        if arr.size == 1:
            return float(arr[0])
        return [float(x) for x in arr]

    def op_Rescaling(
        self, lname: str, cls: str, cfg: dict[str, Any], inputs: list[str], shapes: list[Shape]
    ) -> None:
        rank = len(shapes[0])
        self.add(
            lname,
            cls,
            "rescale",
            {
                "scale": self._channel_vec(cfg.get("scale", 1.0), lname, rank),
                "offset": self._channel_vec(cfg.get("offset", 0.0), lname, rank),
                "rank": rank,
            },
            inputs,
            shapes[0],
        )

    def op_Normalization(
        self, lname: str, cls: str, cfg: dict[str, Any], inputs: list[str], shapes: list[Shape]
    ) -> None:
        rank = len(shapes[0])
        axis = cfg.get("axis", -1)
        axis = tuple(axis) if isinstance(axis, list) else (axis,)
        if len(axis) != 1 or (axis[0] % (rank + 1)) != rank:
            raise ConversionError(f"layer {lname!r}: Normalization over axis {axis} is not supported")
        w = {}
        if cfg.get("mean") is not None:  # statistics in the config, not stored as weights
            mean = np.asarray(cfg["mean"], np.float64).reshape(-1)
            var = np.asarray(cfg["variance"], np.float64).reshape(-1)
        else:
            w = _layer_weights(self.src, lname, cls, cfg)
            mean = np.asarray(w["mean"][1]).reshape(-1)
        # Keras: (x - mean) / max(sqrt(var), 1e-7); buffers, as they are non-trainable in Keras
        mod = self.add(
            lname,
            cls,
            "normalize",
            {
                "channels": int(mean.size),
                "epsilon": 1e-7,
                "invert": bool(cfg.get("invert", False)),
                "rank": rank,
            },
            inputs,
            shapes[0],
        )
        if w:
            self.param(mod, "mean", w["mean"], "reshape(-1)")
            self.param(mod, "variance", w["variance"], "reshape(-1)")
            self.unused(mod, w["count"])
        else:
            self.extra_state(mod, "mean", mean)
            self.extra_state(mod, "variance", var)

    def op_PReLU(
        self, lname: str, cls: str, cfg: dict[str, Any], inputs: list[str], shapes: list[Shape]
    ) -> None:
        w = _layer_weights(self.src, lname, cls, cfg)
        alpha = w["alpha"][1]
        rank = len(shapes[0])
        if rank == 3 and (alpha.shape[0] != 1 or alpha.shape[1] != 1):
            raise ConversionError(f"layer {lname!r}: PReLU with per-pixel slopes is not supported")
        mod = self.add(
            lname, cls, "prelu", {"num_parameters": int(alpha.size), "rank": rank}, inputs, shapes[0]
        )
        self.param(mod, "weight", w["alpha"], "reshape(-1)")


def _remap_by_order(
    src: KerasSource, layers: list[dict[str, Any]]
) -> dict[str, list[tuple[str, np.ndarray]]] | None:
    """File layers with weights -> config layers with weights, in order (as Keras's legacy
    ``load_weights`` does), when counts and every shape-free weight count agree."""
    want = [(layer_name(la), la) for la in layers if _expected(la["class_name"], la.get("config", {}))]
    have = [(n, ws) for n, ws in src.weights.items() if ws]
    if len(want) != len(have):
        return None
    out: dict[str, list[tuple[str, np.ndarray]]] = {}
    for (name, la), (_, ws) in zip(want, have, strict=True):
        if len(ws) != len(_expected(la["class_name"], la.get("config", {}))):
            return None
        out[name] = ws
    return out


MODEL_CLASSES = ("Functional", "Model", "Sequential")


def _flatten(
    config: dict[str, Any],
    weights: dict[str, list[tuple[str, np.ndarray]]],
    used: set[str],
    ext_inputs: list[str] | None = None,
    scope: str = "",
) -> tuple[list[tuple[dict[str, Any], list[str]]], list[str], list[str]]:
    """A model config -> ``[(layer, input tensor names)]`` in order, its input and output tensor
    names. Sequential becomes a chain; nested models (called once) are inlined, their layers
    keeping their Keras names (``outer/inner`` on a clash) and their weights regrouped by layer."""
    cls, layers, inner = _unwrap_model(config)
    out: list[tuple[dict[str, Any], list[str]]] = []
    local: dict[str, str] = {}

    if not scope:  # the outer model's layers keep their names; nested ones yield on a clash
        used.update(layer_name(la) for la in layers if la["class_name"] not in MODEL_CLASSES)

    def rename(layer: dict[str, Any]) -> dict[str, Any]:
        name = layer_name(layer)
        if not scope:
            local[name] = name
            return layer
        g = name if name not in used else f"{scope}/{name}"
        k = 2
        while g in used:
            g, k = f"{scope}/{name}_{k}", k + 1
        used.add(g)
        local[name] = g
        if g == name:
            return layer
        return {**layer, "name": g, "config": {**layer.get("config", {}), "name": g}}

    def add(layer: dict[str, Any], ins: list[str]) -> list[str]:
        lname = layer_name(layer)
        if layer["class_name"] in MODEL_CLASSES:
            group = weights.pop(f"\0{scope}/{lname}", None) if scope else weights.pop(lname, None)
            if group:  # legacy HDF5: the nested model's weights sit in one group, named by inner layer
                for stored, arr in group:
                    weights.setdefault(f"\0{lname}/" + stored.split("/")[0], []).append((stored, arr))
            sub, _, outs = _flatten(layer, weights, used, ins, lname)
            out.extend(sub)
            for k, t in enumerate(outs):
                local[lname if k == 0 else f"{lname}:{k}"] = t
            return outs
        renamed = rename(layer)
        g = layer_name(renamed)
        pending = weights.pop(f"\0{scope}/{lname}", None) if scope else None
        if pending is not None:
            weights[g] = pending
        out.append((renamed, ins))
        return [g]

    if cls == "Sequential":
        seq = list(layers)
        prev: str | None = None
        if ext_inputs:
            prev = ext_inputs[0]
            seq = [la for la in seq if la["class_name"] != "InputLayer"]
        elif not seq:
            raise ConversionError("empty Sequential model")
        elif seq[0]["class_name"] != "InputLayer":
            shp = _input_shape(seq[0].get("config", {}))
            if shp is None:
                raise ConversionError("Sequential model without an input shape")
            seq.insert(
                0,
                {
                    "class_name": "InputLayer",
                    "name": "input",
                    "config": {"name": "input", "batch_input_shape": [None, *shp]},
                },
            )
        in_names: list[str] = []
        for la in seq:
            (t,) = add(la, [prev] if prev else [])[:1]
            if la["class_name"] == "InputLayer":
                in_names.append(t)
            prev = t
        return out, (ext_inputs or in_names), [prev] if prev else []
    in_refs = [_tname(r) for r in _refs(inner.get("input_layers"))]
    models = {layer_name(la) for la in layers if la["class_name"] in MODEL_CLASSES}

    def tname(r: tuple[str, int, int]) -> str:  # a model used as a layer counts its calls from 1
        return _tname((r[0], 0, r[2])) if r[0] in models else _tname(r)

    for la in layers:
        lname = layer_name(la)
        if la["class_name"] == "InputLayer" and ext_inputs is not None:
            local[lname] = ext_inputs[in_refs.index(lname)] if lname in in_refs else ext_inputs[0]
            continue
        ins = []
        for r in _inbound(la):
            t = tname(r)
            base, _, k = t.partition(":")
            key = t if t in local else base
            if key not in local:
                raise ConversionError(f"layer {lname!r}: input {t!r} is not defined before it")
            ins.append(local[t] if t in local else local[base] + (f":{k}" if k else ""))
        if la["class_name"] != "InputLayer" and not ins:
            raise ConversionError(f"layer {lname!r} has no inbound node")
        add(la, ins)
    outs = [local[t] if t in local else t for t in (tname(r) for r in _refs(inner.get("output_layers")))]
    return out, (ext_inputs or [local[t] for t in in_refs]), outs


# what a malformed model config or weight array makes the builder's lookups raise
_MALFORMED = (KeyError, IndexError, TypeError, AttributeError, ValueError)


def build_graph(src: KerasSource, trust_code: bool = False) -> KerasGraph:
    """Turn a Keras config + weights into graph nodes (PyTorch NCHW semantics) and tensors.

    A malformed config (a missing key, a value of the wrong type or length) or weight array
    raises ConversionError naming the file and, where known, the layer."""
    where: list[str] = []
    try:
        return _build_graph(src, trust_code, where)
    except _MALFORMED as e:
        at = f"layer {where[-1]!r}: " if where else ""
        raise ConversionError(
            f"{src.path.name}: {at}malformed model config or weights ({type(e).__name__}: {str(e)[:200]})"
        ) from None


def _build_graph(src: KerasSource, trust_code: bool, where: list[str]) -> KerasGraph:
    if src.config is None:
        raise ConversionError(
            f"{src.path.name}: weights-only file; give its architecture "
            "(arch=config JSON or keras.applications:NAME)"
        )
    _unwrap_model(src.config)  # validates the model class
    weights = dict(src.weights)
    flat, in_names, outputs = _flatten(src.config, weights, set())
    layers = [la for la, _ in flat]
    stray = [k for k in weights if k.startswith("\0")]
    if stray:
        raise ConversionError(
            f"{src.path.name}: nested model weights {stray[0][1:]!r} belong to no inner layer"
        )
    names = {layer_name(la) for la in layers}
    extra = [n for n, ws in weights.items() if ws and n not in names]
    if extra and src.fmt == "h5-weights":
        # Keras itself loads legacy weights files by order, not by name (old Applications files
        # use other layer names): do the same when the weight-bearing layers line up one to one
        remapped = _remap_by_order(KerasSource(src.path, src.fmt, None, weights), layers)
        if remapped is not None:
            weights = remapped
            extra = []
    if extra:
        raise ConversionError(
            f"{src.path.name}: weights for layer(s) not in the model: {', '.join(extra[:5])} "
            "(layer/weight count mismatch)"
        )
    flat_src = KerasSource(src.path, src.fmt, src.config, weights, src.keras_version, src.backend)
    b = _Builder(flat_src, trust_code)
    for la, ins in flat:
        where.append(str(layer_name(la)))
        missing = [t for t in ins if t not in b.shapes]
        if missing:
            raise ConversionError(f"layer {layer_name(la)!r}: input {missing[0]!r} is not defined before it")
        b.layer(la, ins)
    return _finish(b, in_names, outputs)


def _nchw(shape: Shape) -> list[Any]:
    """A Keras shape (no batch axis) in the PyTorch graph's layout: images (rank 3) NCHW."""
    s = list(shape)
    if len(s) == 3:
        return [s[2], s[0], s[1]]
    return s


def _finish(b: _Builder, in_names: list[str], outputs: list[str]) -> KerasGraph:
    """Graph inputs, node ``output_shapes`` (NCHW with the batch axis: the declared batch, or 1
    where Keras leaves it free, as graph ``inputs[*].batch`` says) and the tensors: the layer map
    applied to the Keras weights, plus the constants, in module order."""
    declared = [b.batches.get(n) for n in in_names]
    batch = next((d for d in declared if d is not None), None)
    n = 1 if batch is None else batch
    inputs = [
        {
            "name": name,
            "shape": [n, *_nchw(b.shapes[name])],
            "shape_keras": [n, *b.shapes[name]],  # the source's own layout (NHWC images)
            "layout": "NCHW" if len(b.shapes[name]) == 3 else "N...",
            "batch": "free" if d is None else "declared",  # free: shape[0] is 1, any size runs
        }
        for name, d in zip(in_names, declared, strict=True)
    ]
    for node in b.nodes:
        node["output_shapes"] = [[n, *_nchw(node.pop("keras_shape"))]]
    lm = LayerMap(b.rows, source_format="keras")
    sources = {name: [a for _, a in ws] for name, ws in b.src.weights.items()}
    mapped = lm.to_target(sources)
    tensors = {k: mapped[k] if k in mapped else b.constants[k] for k in b.keys}
    return KerasGraph(b.nodes, inputs, outputs, tensors, lm, sources, dict(b.constants))


def same_pads(size: int, k: int, s: int, d: int = 1) -> tuple[int, int]:
    """TensorFlow 'same' padding (before, after) for one axis (after gets the extra pixel)."""
    p = _same_pads(size, k, s, d)
    assert p is not None
    return p


__all__ = ["KerasGraph", "build_graph", "sanitize", "same_pads", "math"]


def has_lambda(config: dict[str, Any] | None) -> bool:
    """True when the model config holds a Lambda layer (arbitrary Python code)."""
    if not config:
        return False
    _, layers, _ = _unwrap_model(config)
    return any(layer.get("class_name") == "Lambda" for layer in layers)


def inputs_only(src: KerasSource) -> KerasGraph:
    """A graph with just the model's inputs (for an ONNX-only conversion of a trusted Lambda model)."""
    _, layers, _ = _unwrap_model(src.config or {})
    b = _Builder(src, trust_code=True)
    for layer in layers:
        if layer["class_name"] == "InputLayer":
            b.layer(layer, [])
    if not b.input_names and layers:
        shp = _input_shape(layers[0].get("config", {}))
        if shp is not None:
            b.op_InputLayer("input", "InputLayer", {"batch_input_shape": [None, *shp]}, [], [])
    return _finish(b, b.input_names, [])
