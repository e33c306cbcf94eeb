"""Write binary caffemodels: random weights of the right shapes for a prototxt, or given blobs.

Random weights leave nothing at a default value that could hide a mistake: BatchNorm means
non-zero, variances positive and small enough that eps matters, the scale-factor blob not 1,
Scale gammas and betas non-zero, PReLU slopes away from 0.25, every bias non-zero. Weights are
calibrated layer by layer on a random input so activations neither vanish nor saturate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..layermap import LayerMap, LayerMapRow, Step
from .graph import build_graph
from .reader import CaffeNet, read_prototxt


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _key(num: int, wt: int) -> bytes:
    return _varint(num << 3 | wt)


def _ld(num: int, payload_len: int) -> bytes:
    return _key(num, 2) + _varint(payload_len)


def _blob_parts(a: np.ndarray) -> list[bytes | memoryview]:
    """BlobProto {shape {dim...}, data [packed]} as byte chunks (the float data is not copied)."""
    dims = b"".join(_varint(int(d)) for d in a.shape)
    shape = _ld(1, len(dims)) + dims if a.shape else b""
    a = np.ascontiguousarray(a, dtype="<f4").reshape(-1)
    data = memoryview(a).cast("B")
    head = _ld(7, len(shape)) + shape + _ld(5, len(data))
    return [head, data]


def write_caffemodel(
    path: str | Path,
    blobs: dict[str, list[np.ndarray]],
    types: dict[str, str] | None = None,
    name: str = "",
) -> Path:
    """A binary NetParameter with one ``layer`` (name, type, blobs) per entry of ``blobs``."""
    path = Path(path)
    types = types or {}
    with open(path, "wb") as f:
        if name:
            nb = name.encode()
            f.write(_ld(1, len(nb)) + nb)
        for lname, arrs in blobs.items():
            parts: list[Any] = []
            nb = lname.encode()
            parts.append(_ld(1, len(nb)) + nb)
            tb = types.get(lname, "").encode()
            if tb:
                parts.append(_ld(2, len(tb)) + tb)
            for a in arrs:
                bp = _blob_parts(a)
                size = sum(len(p) for p in bp)
                parts.append(_ld(7, size))
                parts.extend(bp)
            total = sum(len(p) for p in parts)
            f.write(_ld(100, total))
            for p in parts:
                f.write(p)
    return path


def random_weights(net: CaffeNet | str | Path, seed: int = 0) -> dict[str, list[np.ndarray]]:
    """Random blobs ({layer: [arrays in Caffe layout]}) for every layer of a deploy prototxt."""
    import torch

    from ..graph_torch import GraphModule, run_node

    if not isinstance(net, CaffeNet):
        net = read_prototxt(net)
    graph, _, lmap = build_graph(net, None)
    rng = np.random.default_rng(seed)
    model = GraphModule(graph).eval()
    mods = dict(model.named_children())
    consumers: dict[str, list[str]] = {}
    for node in graph["nodes"]:
        for b in node["inputs"]:
            consumers.setdefault(b, []).append(node["op"])
    env: dict[str, torch.Tensor] = {}
    for inp in graph["inputs"]:
        shape = list(inp["shape"])
        env[inp["name"]] = torch.from_numpy(rng.standard_normal(shape).astype(np.float32))
    state: dict[str, np.ndarray] = {}
    factors: dict[str, float] = {}

    def nonzero_uniform(lo: float, hi: float, shape: list[int]) -> np.ndarray:
        v = rng.uniform(lo, hi, shape) * rng.choice([-1.0, 1.0], shape)
        return v.astype(np.float32)

    with torch.no_grad():
        for node in graph["nodes"]:
            mod, op, params = mods[node["module"]], node["op"], node["params"]
            xs = [env[b] for b in node["inputs"]]
            feeds_bn = any(o == "batch_norm" for t in node["outputs"] for o in consumers.get(t, []))
            vals: dict[str, np.ndarray] = {}
            if op in ("conv2d", "conv_transpose2d", "linear"):
                w = params["weight"]
                if op == "conv2d":
                    fan_in = int(np.prod(w[1:]))
                elif op == "conv_transpose2d":
                    st = node["attrs"]["stride"]
                    fan_in = max(1, int(w[0] // node["attrs"]["groups"] * w[2] * w[3] / (st[0] * st[1])))
                else:
                    fan_in = w[1]
                gain = 0.05 if feeds_bn else 1.0
                vals["weight"] = (rng.standard_normal(w) * gain * np.sqrt(2.0 / fan_in)).astype(np.float32)
                if "bias" in params:
                    vals["bias"] = nonzero_uniform(0.02 * gain, 0.2 * gain, params["bias"])
            elif op == "prelu":
                vals["weight"] = rng.uniform(0.02, 0.2, params["weight"]).astype(np.float32)
            elif op == "batch_norm":
                x = xs[0].double()
                dims = [d for d in range(x.dim()) if d != 1]
                mean = x.mean(dim=dims).numpy()
                var = x.var(dim=dims).numpy()
                std = np.sqrt(var)
                vals["running_mean"] = (mean + 0.3 * std * rng.standard_normal(mean.shape)).astype(np.float32)
                vals["running_var"] = (var * rng.uniform(0.7, 1.4, var.shape) + 1e-6).astype(np.float32)
                factors[node["name"]] = float(rng.uniform(2.0, 999.0))
            elif op == "scale":
                for p in ("weight", "bias"):
                    if p in params:
                        lo, hi = (0.5, 1.5) if p == "weight" else (0.05, 0.3)
                        vals[p] = nonzero_uniform(lo, hi, params[p])
            for p, v in vals.items():
                getattr(mod, p).copy_(torch.from_numpy(v))
                state[f"{node['module']}.{p}"] = v
            outs = run_node(mod, xs)
            for name, t in zip(node["outputs"], outs, strict=True):
                env[name] = t

    def with_factor(r: LayerMapRow) -> LayerMapRow:
        f = factors.get(r.source)
        if f is None:
            return r
        st = [Step(s.name, (f,)) if s.name in ("moving_average", "fold") else s for s in r.steps]
        return LayerMapRow(r.source, r.blob, r.target, tuple(st), r.source_shape, r.target_shape)

    return LayerMap([with_factor(r) for r in lmap.rows], lmap.source_format).to_source(state)


def write_random_caffemodel(prototxt: str | Path, path: str | Path, seed: int = 0) -> Path:
    """Random weights for ``prototxt`` written as a binary caffemodel at ``path``."""
    net = read_prototxt(prototxt)
    rand = random_weights(net, seed)
    blobs = {layer.name: rand.get(layer.name, []) for layer in net.layers}
    types = {layer.name: layer.type for layer in net.layers}
    return write_caffemodel(path, blobs, types, net.name)
