"""Caffe net -> zoo graph (nodes with op, attributes, parameter shapes) plus weight placement.

Shape inference follows Caffe's own rules (ceil-mode pooling with the clipped last window,
deconvolution size, InnerProduct axis, Reshape 0/-1), so parameter shapes are known before any
weights are read; blobs that contradict them are reported, never silently reshaped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from zoo.errors import ConversionError

from ..folder import GRAPH_FORMAT, GRAPH_VERSION
from ..layermap import LayerMap, LayerMapRow
from .reader import CaffeNet
from .shapes import caffe_pool_out, reshape_shape


def sanitize(name: str, taken: set[str]) -> str:
    """A module name for a Caffe layer name (graph.json keeps the original beside it)."""
    s = re.sub(r"[^0-9A-Za-z_]", "_", name) or "layer"
    if s[0].isdigit():
        s = "l_" + s
    base, i = s, 2
    while s in taken:
        s = f"{base}_{i}"
        i += 1
    taken.add(s)
    return s


def _f32(v: float) -> float:
    """A float32 prototxt value as the decimal it was written as (0.999, not 0.99900001)."""
    return float(str(np.float32(v)))


def _axis(a: int, ndim: int) -> int:
    return a + ndim if a < 0 else a


def _hw(rep: Any, h: Any, w: Any, has_h: bool, default: int) -> list[int]:
    if has_h:
        return [int(h), int(w)]
    vals = list(rep) if hasattr(rep, "__len__") else [rep]
    if not vals:
        return [default, default]
    return [int(vals[0]), int(vals[-1] if len(vals) > 1 else vals[0])]


@dataclass
class NodeSpec:
    """One graph node before serialization."""

    op: str
    attrs: dict[str, Any]
    params: dict[str, list[int]]  # torch parameter name -> shape
    out_shapes: list[list[int]]
    blobs: list[tuple[list[int], str | None, str]]  # per Caffe blob: expected shape, param, transform


def _layer_spec(layer: Any, ins: list[list[int]]) -> NodeSpec:  # noqa: C901 - one case per layer type
    t = layer.type
    x = ins[0] if ins else []
    if t in ("Convolution", "Deconvolution"):
        p = layer.convolution_param
        k = _hw(p.kernel_size, p.kernel_h, p.kernel_w, p.HasField("kernel_h"), 1)
        pad = _hw(p.pad, p.pad_h, p.pad_w, p.HasField("pad_h") or p.HasField("pad_w"), 0)
        st = _hw(p.stride, p.stride_h, p.stride_w, p.HasField("stride_h") or p.HasField("stride_w"), 1)
        dil = _hw(p.dilation, 0, 0, False, 1)
        g, o, c = int(p.group), int(p.num_output), x[1]
        if t == "Convolution":
            oh = [(x[2 + i] + 2 * pad[i] - (dil[i] * (k[i] - 1) + 1)) // st[i] + 1 for i in range(2)]
            wshape = [o, c // g, k[0], k[1]]
            op = "conv2d"
        else:
            oh = [st[i] * (x[2 + i] - 1) + dil[i] * (k[i] - 1) + 1 - 2 * pad[i] for i in range(2)]
            wshape = [c, o // g, k[0], k[1]]
            op = "conv_transpose2d"
        params = {"weight": wshape}
        blobs: list[tuple[list[int], str | None, str]] = [(wshape, "weight", "none")]
        if p.bias_term:
            params["bias"] = [o]
            blobs.append(([o], "bias", "none"))
        attrs = {"stride": st, "padding": pad, "dilation": dil, "groups": g, "bias": bool(p.bias_term)}
        return NodeSpec(op, attrs, params, [[x[0], o, *oh]], blobs)
    if t == "Pooling":
        p = layer.pooling_param
        method = {0: "max", 1: "ave"}.get(p.pool)
        if method is None:
            raise ValueError("STOCHASTIC pooling is a training-time method; not supported")
        if p.global_pooling:
            k, pad, st = [x[2], x[3]], [0, 0], [1, 1]
        else:
            k = _hw(
                [p.kernel_size] if p.HasField("kernel_size") else [],
                p.kernel_h,
                p.kernel_w,
                p.HasField("kernel_h"),
                0,
            )
            pad = _hw([p.pad], p.pad_h, p.pad_w, p.HasField("pad_h") or p.HasField("pad_w"), 0)
            st = _hw([p.stride], p.stride_h, p.stride_w, p.HasField("stride_h") or p.HasField("stride_w"), 1)
        oh = [caffe_pool_out(x[2 + i], k[i], pad[i], st[i]) for i in range(2)]
        attrs = {
            "method": method,
            "kernel": k,
            "stride": st,
            "padding": pad,
            "global": bool(p.global_pooling),
        }
        return NodeSpec("pool2d", attrs, {}, [[x[0], x[1], *oh]], [])
    if t == "InnerProduct":
        p = layer.inner_product_param
        ax = _axis(int(p.axis), len(x))
        kdim, n = int(np.prod(x[ax:])), int(p.num_output)
        cshape = [kdim, n] if p.transpose else [n, kdim]
        params = {"weight": [n, kdim]}
        blobs = [(cshape, "weight", "transpose" if p.transpose else "none")]
        if p.bias_term:
            params["bias"] = [n]
            blobs.append(([n], "bias", "none"))
        return NodeSpec("linear", {"axis": ax, "bias": bool(p.bias_term)}, params, [x[:ax] + [n]], blobs)
    if t == "ReLU":
        return NodeSpec("relu", {"negative_slope": float(layer.relu_param.negative_slope)}, {}, [x], [])
    if t == "PReLU":
        c = 1 if layer.prelu_param.channel_shared else x[1]
        return NodeSpec(
            "prelu",
            {"channel_shared": bool(layer.prelu_param.channel_shared)},
            {"weight": [c]},
            [x],
            [([c], "weight", "none")],
        )
    if t in ("Sigmoid", "TanH"):
        return NodeSpec(t.lower(), {}, {}, [x], [])
    if t == "Dropout":  # nn.Dropout: zeroes and rescales by 1 / (1 - ratio) in train mode only
        return NodeSpec("dropout", {"ratio": _f32(layer.dropout_param.dropout_ratio)}, {}, [x], [])
    if t == "LRN":
        p = layer.lrn_param
        region = "across_channels" if p.norm_region == 0 else "within_channel"
        attrs = {
            "region": region,
            "size": int(p.local_size),
            "alpha": float(p.alpha),
            "beta": float(p.beta),
            "k": float(p.k),
        }
        return NodeSpec("lrn", attrs, {}, [x], [])
    if t == "BatchNorm":
        c = x[1]
        blobs = [
            ([c], "running_mean", "divide_by_blob2"),
            ([c], "running_var", "divide_by_blob2"),
            ([1], None, "scale_factor"),
        ]
        p = layer.batch_norm_param
        attrs = {
            "eps": float(p.eps),
            # train mode: torch momentum = 1 - moving_average_fraction (graph_torch.BatchNorm2d)
            "moving_average_fraction": _f32(p.moving_average_fraction),
        }
        if p.HasField("use_global_stats"):
            attrs["use_global_stats"] = bool(p.use_global_stats)  # recorded; train()/eval() decide
        return NodeSpec(
            "batch_norm",
            attrs,
            {"running_mean": [c], "running_var": [c]},
            [x],
            blobs,
        )
    if t == "Scale":
        p = layer.scale_param
        ax = _axis(int(p.axis), len(x))
        if len(ins) == 2:
            sshape = list(ins[1])
        else:
            sshape = list(x[ax:]) if p.num_axes == -1 else list(x[ax : ax + int(p.num_axes)])
        params: dict[str, list[int]] = {}
        blobs = []
        if len(ins) == 1:
            params["weight"] = sshape
            blobs.append((sshape, "weight", "none"))
        if p.bias_term:
            params["bias"] = sshape
            blobs.append((sshape, "bias", "none"))
        attrs = {"axis": ax, "bias": bool(p.bias_term), "shape": sshape}
        return NodeSpec("scale", attrs, params, [x], blobs)
    if t == "Eltwise":
        p = layer.eltwise_param
        opn = {0: "prod", 1: "sum", 2: "max"}[p.operation]
        coeffs = [float(c) for c in p.coeff] or None
        if any(list(s) != list(x) for s in ins):
            raise ValueError(f"Eltwise inputs differ in shape: {ins}")
        if coeffs is not None and len(coeffs) != len(ins):
            raise ValueError(f"Eltwise has {len(coeffs)} coeff for {len(ins)} bottoms")
        return NodeSpec("eltwise", {"operation": opn, "coeffs": coeffs}, {}, [x], [])
    if t == "Concat":
        p = layer.concat_param
        ax = _axis(
            int(p.axis) if p.HasField("axis") or not p.HasField("concat_dim") else int(p.concat_dim), len(x)
        )
        out = list(x)
        out[ax] = sum(s[ax] for s in ins)
        return NodeSpec("concat", {"axis": ax}, {}, [out], [])
    if t == "Slice":
        p = layer.slice_param
        ax = _axis(
            int(p.axis) if p.HasField("axis") or not p.HasField("slice_dim") else int(p.slice_dim), len(x)
        )
        n = len(layer.top)
        points = [int(v) for v in p.slice_point]
        if not points:
            if x[ax] % n:
                raise ValueError(f"cannot split axis of size {x[ax]} into {n} equal slices")
            points = [x[ax] // n * i for i in range(1, n)]
        if len(points) != n - 1:
            raise ValueError(f"{len(points)} slice_point for {n} tops")
        bounds = [0, *points, x[ax]]
        sizes = [bounds[i + 1] - bounds[i] for i in range(n)]
        outs = []
        for s in sizes:
            o = list(x)
            o[ax] = s
            outs.append(o)
        return NodeSpec("slice", {"axis": ax, "sizes": sizes}, {}, outs, [])
    if t == "Split":
        return NodeSpec("split", {}, {}, [x] * len(layer.top), [])
    if t == "Softmax":
        ax = _axis(int(layer.softmax_param.axis), len(x))
        return NodeSpec("softmax", {"axis": ax}, {}, [x], [])
    if t == "Flatten":
        p = layer.flatten_param
        a, e = _axis(int(p.axis), len(x)), _axis(int(p.end_axis), len(x))
        out = x[:a] + [int(np.prod(x[a : e + 1]))] + x[e + 1 :]
        return NodeSpec("flatten", {"axis": a, "end_axis": e}, {}, [out], [])
    if t == "Reshape":
        p = layer.reshape_param
        dims = [int(d) for d in p.shape.dim]
        out = reshape_shape(x, dims, int(p.axis), int(p.num_axes))
        if int(np.prod(out)) != int(np.prod(x)) or min(out, default=1) < 1:
            raise ValueError(f"cannot reshape {x} to {dims} (axis {p.axis}, num_axes {p.num_axes})")
        attrs = {"shape": dims, "axis": int(p.axis), "num_axes": int(p.num_axes)}
        return NodeSpec("reshape", attrs, {}, [out], [])
    if t == "Permute":
        order = [int(v) for v in layer.permute_param.order]
        full = order + [i for i in range(len(x)) if i not in order]
        return NodeSpec("permute", {"order": full}, {}, [[x[i] for i in full]], [])
    raise KeyError(t)


def _blob_steps(
    blob_shape: list[int], expected: list[int], transform: str, target: list[int] | None
) -> list[str] | None:
    """Layer-map steps for one Caffe blob (legacy 4-D shapes with leading ones allowed);
    None if the blob contradicts the prototxt."""
    out: list[str] = []
    if blob_shape != expected:
        n = int(np.prod(expected))
        legacy = len(blob_shape) == 4 and all(d == 1 for d in blob_shape[: 4 - len(expected)])
        if int(np.prod(blob_shape)) != n or not (legacy or len(blob_shape) <= 1):
            return None
        out.append(f"reshape({','.join(str(d) for d in expected)})")
    shape = expected
    if transform == "transpose":
        out.append("transpose")
        shape = shape[::-1]
    if target is not None and list(shape) != list(target):
        out.append(f"reshape({','.join(str(d) for d in target)})")
    return out


def build_graph(
    net: CaffeNet,
    weights: dict[str, list[np.ndarray]] | None,
    weights_path: Path | None = None,
) -> tuple[dict[str, Any], dict[str, np.ndarray], LayerMap]:
    """Graph dict, torch state dict (module.param -> array, made by applying the layer map) and
    the layer map.

    ``weights`` None builds the graph alone (parameter shapes only), as the random-weight writer does.
    """
    shapes: dict[str, list[int]] = {name: list(s) for name, s in net.inputs}
    nodes: list[dict[str, Any]] = []
    state: dict[str, np.ndarray] = {}
    rows: list[LayerMapRow] = []
    taken: set[str] = set()
    last_writer: dict[str, int] = {}
    consumed: set[str] = set()
    wsrc = weights_path or net.path
    for layer in net.layers:
        for b in layer.bottom:
            if b not in shapes:
                raise ConversionError(
                    f"{net.path}: layer {layer.name!r} ({layer.type}) reads blob {b!r}, "
                    "which no earlier layer or input produces"
                )
        ins = [shapes[b] for b in layer.bottom]
        try:
            spec = _layer_spec(layer, ins)
        except KeyError:
            raise ConversionError(
                f"{net.path}: layer {layer.name!r} has unsupported type {layer.type!r}"
            ) from None
        except (ValueError, IndexError, ZeroDivisionError) as e:
            raise ConversionError(f"{net.path}: layer {layer.name!r} ({layer.type}): {e}") from None
        module = sanitize(layer.name, taken)
        if weights is not None and spec.blobs:
            blobs = weights.get(layer.name)
            if blobs is None:
                raise ConversionError(f"{wsrc}: weights for layer {layer.name!r} ({layer.type}) are missing")
            if len(blobs) < len(spec.blobs):
                raise ConversionError(
                    f"{wsrc}: layer {layer.name!r} ({layer.type}) has {len(blobs)} blobs, "
                    f"the prototxt needs {len(spec.blobs)}"
                )
            factor = None
            if spec.op == "batch_norm":
                factor = float(np.asarray(blobs[2], np.float32).reshape(-1)[0])
            for i, (exp, pname, tr) in enumerate(spec.blobs):
                target_shape = None if pname is None else spec.params[pname]
                st = _blob_steps(list(blobs[i].shape), exp, tr, target_shape)
                if st is None:
                    raise ConversionError(
                        f"{wsrc}: layer {layer.name!r} ({layer.type}) blob {i} has shape "
                        f"{list(blobs[i].shape)}, the prototxt implies {exp}"
                    )
                if tr == "divide_by_blob2":
                    st.append(f"moving_average({factor!r})")
                elif tr == "scale_factor":
                    st = [f"fold({factor!r})"]
                rows.append(
                    LayerMapRow(
                        layer.name,
                        i,
                        None if pname is None else f"{module}.{pname}",
                        tuple(st),
                        tuple(blobs[i].shape),
                        None if target_shape is None else tuple(target_shape),
                    )
                )
        elif weights is None:
            for i, (exp, pname, tr) in enumerate(spec.blobs):
                target_shape = None if pname is None else spec.params[pname]
                st = _blob_steps(exp, exp, tr, target_shape) or []
                if tr == "divide_by_blob2":
                    st.append("moving_average(1.0)")
                elif tr == "scale_factor":
                    st = ["fold(1.0)"]
                rows.append(
                    LayerMapRow(
                        layer.name,
                        i,
                        None if pname is None else f"{module}.{pname}",
                        tuple(st),
                        tuple(exp),
                        None if target_shape is None else tuple(target_shape),
                    )
                )
        for b in layer.bottom:
            consumed.add(b)
        for top, s in zip(layer.top, spec.out_shapes, strict=False):
            shapes[top] = s
            last_writer[top] = len(nodes)
            consumed.discard(top)
        nodes.append(
            {
                "name": layer.name,
                "module": module,
                "type": layer.type,
                "op": spec.op,
                "attrs": spec.attrs,
                "inputs": list(layer.bottom),
                "outputs": list(layer.top),
                "params": spec.params,
                "output_shapes": spec.out_shapes,
            }
        )
    outputs = sorted((b for b in last_writer if b not in consumed), key=lambda b: last_writer[b])
    graph = {
        "format": GRAPH_FORMAT,
        "version": GRAPH_VERSION,
        "source": "caffe",
        "name": net.name,
        "inputs": [{"name": n, "shape": list(s)} for n, s in net.inputs],
        "outputs": outputs,
        "nodes": nodes,
    }
    lmap = LayerMap(rows, source_format="caffe")
    if weights is not None:
        state = lmap.to_target(weights)
    return graph, state, lmap
