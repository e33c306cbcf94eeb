"""``convert_graphdef``: a frozen TensorFlow GraphDef (``.pb``) -> the zoo model folder, no TensorFlow.

The ``.pb`` is decoded from the protobuf wire format (:mod:`converters.wire`): GraphDef (nodes,
producer version), NodeDef (name, op, inputs, attrs), AttrValue (s, i, f, b, type, shape, tensor,
lists) and TensorProto (dtype, shape and values through the checkpoint reader's V1 decoder,
:func:`converters.tf.checkpoint._tensor_proto_values`). The subgraph between the inputs and the
outputs becomes the op-graph document the slim translator consumes
(:class:`converters.tf.slim._Translator`, the same layout ``converters/tf/_worker.py`` exports):
a Const an op reads, directly or through ``Identity`` (``.../read``), is that op's *variable*,
named after the Const (so a frozen slim net gives the variable names, module names and layer map
of its checkpoint); small constants (shapes, axes, paddings) are the op's ``consts``. Output
shapes are inferred here (NHWC) because a GraphDef carries none.

Ops beyond the slim set, for non-slim and old graphs (the 2015 Inception-v3 image-retraining
graph): Reshape (``keras.reshape``, NHWC order), Concat (axis first) / ConcatV2 (``keras.concat``),
MatMul (+ BiasAdd / Add of a constant vector) -> ``keras.linear``, BatchNormWithGlobalNormalization
(``variance_epsilon``, ``scale_after_normalization``) -> ``keras.batch_norm``.
"""

from __future__ import annotations

import dataclasses
import heapq
import re
import struct
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from converters.tf.checkpoint import CheckpointError, _np_dtype, _shape, _tensor_proto_values
from converters.tf.slim import (
    _NHWC_TO_NCHW_AXIS,
    CONVERTER_VERSION,
    _nchw,
    _Translator,
    write_tf_folder,
)
from converters.wire import WireError, fields, varint
from zoo.errors import ConversionError

__all__ = ["GraphDefError", "GraphNode", "convert_graphdef", "graphdef_document", "read_graphdef"]

CONVERTER = "zoo.converters.tf.graphdef"
DEFAULT_SIZE = 224  # H and W of an input whose size neither the graph nor the caller gives
SMALL_CONST = 64  # constants up to this many elements are also given to ops as plain values
FLOAT_DTYPES = (1, 2, 14, 19)  # float32, float64, bfloat16, float16
_NODE_NAME = re.compile(r"^[A-Za-z0-9.][A-Za-z0-9_./>-]*$")
_TENSOR = re.compile(r"^(?P<name>[^\[\]:]+)(?::(?P<idx>\d+))?(?:\[(?P<shape>[^\]]*)\])?$")
# sinks that are not outputs (defaults for --outputs)
_NOT_OUTPUTS = {"Const", "NoOp", "Placeholder", "PlaceholderWithDefault", "Assert", "SaveV2", "RestoreV2"}
_PASS_SHAPE = {
    "BiasAdd", "Relu", "Relu6", "Identity", "Softmax", "Sigmoid", "Tanh", "Elu", "LRN", "Cast",
    "FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3", "BatchNormWithGlobalNormalization",
    "CheckNumerics", "StopGradient",
}  # fmt: skip
_BINARY = {"Add", "AddV2", "Sub", "Mul", "RealDiv", "Maximum", "Minimum"}


class GraphDefError(ConversionError):
    """The ``.pb`` is not a readable GraphDef, or its inputs / outputs / ops cannot be converted."""


@dataclasses.dataclass
class GraphNode:
    """One NodeDef: name, op type, data inputs as (producer, output index), decoded attrs."""

    name: str
    op: str
    inputs: list[tuple[str, int]]
    attrs: dict[str, Any]
    control: list[str] = dataclasses.field(default_factory=list)


# ---------------------------------------------------------------- wire-format decoding
def _str(v: Any, what: str) -> str:
    try:
        return bytes(v).decode("utf-8")
    except UnicodeDecodeError:
        raise GraphDefError(f"{what} is not UTF-8: not a GraphDef") from None


def _tensor_shape(buf: Any) -> list[int] | None:
    """TensorShapeProto (dim = 2 {size = 1}, unknown_rank = 3) -> dims (-1 unknown) or None."""
    dims: list[int] = []
    for num, wt, val in fields(buf):
        if num == 2 and wt == 2:
            size = 0
            for n2, w2, v2 in fields(val):
                if n2 == 1 and w2 == 0:
                    size = v2 - (1 << 64) if v2 >= 1 << 63 else v2
            dims.append(size)
        elif num == 3 and wt == 0 and val:
            return None
    return dims


def read_tensor(buf: Any, where: str) -> np.ndarray:
    """A TensorProto -> numpy array (dtype 1, shape 2, values as the V1 checkpoint reader reads them)."""
    dt, shape = 1, ()
    for num, wt, val in fields(buf):
        if num == 1 and wt == 0:
            dt = val
        elif num == 2 and wt == 2:
            shape = _shape(val)
    n = int(np.prod(shape, dtype=np.int64))
    try:
        _np_dtype(dt, where)
        return _tensor_proto_values(buf, dt, n, where).reshape(shape).copy()
    except CheckpointError as e:
        raise GraphDefError(str(e)) from None


def _list_value(buf: Any, where: str) -> list[Any]:
    out: list[Any] = []
    for num, wt, val in fields(buf):
        if num == 2 and wt == 2:
            out.append(bytes(val).decode("utf-8", "replace"))
        elif num in (3, 5, 6):  # i, b, type: packed or not
            vals = [val] if wt == 0 else _varints(val)
            out.extend(bool(v) if num == 5 else (v - (1 << 64) if v >= 1 << 63 else v) for v in vals)
        elif num == 4:
            out.extend(struct.unpack(f"<{len(val) // 4}f", val))
        elif num == 7 and wt == 2:
            out.append(_tensor_shape(val))
        elif num == 8 and wt == 2:
            out.append(read_tensor(val, where))
    return out


def _varints(buf: Any) -> list[int]:
    out, i = [], 0
    while i < len(buf):
        v, i = varint(buf, i)
        out.append(v)
    return out


def _attr_value(buf: Any, where: str) -> Any:
    """AttrValue: list 1, s 2, i 3, f 4, b 5, type 6, shape 7, tensor 8, placeholder 9, func 10."""
    for num, wt, val in fields(buf):
        if num == 1 and wt == 2:
            return _list_value(val, where)
        if num == 2 and wt == 2:
            return bytes(val).decode("utf-8", "replace")
        if num == 3 and wt == 0:
            return val - (1 << 64) if val >= 1 << 63 else val
        if num == 4 and wt == 5:
            return struct.unpack("<f", val)[0]
        if num == 5 and wt == 0:
            return bool(val)
        if num == 6 and wt == 0:
            return ("dtype", val)
        if num == 7 and wt == 2:
            return ("shape", _tensor_shape(val))
        if num == 8 and wt == 2:
            return read_tensor(val, where)
    return None


def _node(buf: Any) -> GraphNode:
    name, op, ins, control, attrs = "", "", [], [], {}
    for num, wt, val in fields(buf):
        if wt != 2:
            raise GraphDefError(f"NodeDef field {num} of wire type {wt}: not a GraphDef")
        if num == 1:
            name = _str(val, "a node name")
        elif num == 2:
            op = _str(val, "an op type")
        elif num == 3:
            s = _str(val, "a node input")
            if s.startswith("^"):
                control.append(s[1:])
            else:
                src, _, idx = s.partition(":")
                ins.append((src, int(idx) if idx.isdigit() else 0))
        elif num == 5:
            key, value = "", None
            for n2, w2, v2 in fields(val):
                if n2 == 1 and w2 == 2:
                    key = _str(v2, "an attr name")
                elif n2 == 2 and w2 == 2:
                    value = v2
            if key and value is not None:
                attrs[key] = _attr_value(value, f"node {name!r} attr {key!r}")
    if not _NODE_NAME.match(name) or not re.match(r"^[A-Za-z][A-Za-z0-9_]*$", op):
        raise GraphDefError(f"a node named {name[:40]!r} of op {op[:40]!r}: not a GraphDef")
    return GraphNode(name, op, ins, attrs, control)


def read_graphdef(path: str | Path) -> tuple[dict[str, GraphNode], int | None]:
    """(name -> node, in file order; producer version) of a binary GraphDef file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise GraphDefError(f"{path}: cannot read ({e.strerror or e})") from None
    nodes: dict[str, GraphNode] = {}
    producer = None
    try:
        for num, wt, val in fields(data):
            if num == 1 and wt == 2:
                n = _node(val)
                if n.name in nodes:
                    raise GraphDefError(f"two nodes named {n.name!r}")
                nodes[n.name] = n
            elif num == 4 and wt == 2:
                for n2, w2, v2 in fields(val):
                    if n2 == 1 and w2 == 0:
                        producer = v2
            elif (num, wt) not in ((2, 2), (3, 0)):
                raise GraphDefError(f"top-level field {num} of wire type {wt}")
    except (WireError, ValueError, struct.error, IndexError, OverflowError) as e:
        raise GraphDefError(f"{path.name}: not a binary TensorFlow GraphDef ({e})") from None
    except GraphDefError as e:
        raise GraphDefError(f"{path.name}: not a binary TensorFlow GraphDef ({e})") from None
    if not nodes:
        raise GraphDefError(f"{path.name}: not a binary TensorFlow GraphDef (no nodes)")
    for n in nodes.values():
        for src, _ in n.inputs:
            if src not in nodes:
                raise GraphDefError(f"{path.name}: node {n.name!r} reads {src!r}, which is not in the graph")
    return nodes, producer


# ---------------------------------------------------------------- tensor names and shapes
def parse_tensor_names(specs: Iterable[str] | str | None) -> list[tuple[str, int, list[int] | None]]:
    """``name[:idx][[d0,d1,...]]`` items (repeated or comma-separated; the optional NHWC shape in
    brackets, tf2onnx style, ``-1`` or ``?`` unknown) -> (op name, output index, shape or None)."""
    if specs is None:
        return []
    items = [specs] if isinstance(specs, str) else list(specs)
    out = []
    for item in items:
        for part in re.findall(r"[^,\[]+(?:\[[^\]]*\])?", item):
            part = part.strip()
            if not part:
                continue
            m = _TENSOR.match(part)
            if not m:
                raise GraphDefError(f"{part!r}: not a tensor name (NAME:0, or NAME:0[1,299,299,3])")
            shape = None
            if m.group("shape") is not None:
                try:
                    shape = [
                        -1 if d.strip() in ("?", "-1", "") else int(d) for d in m.group("shape").split(",")
                    ]
                except ValueError:
                    raise GraphDefError(f"{part!r}: the shape in brackets is not a list of sizes") from None
            out.append((m.group("name"), int(m.group("idx") or 0), shape))
    return out


def _conv_out(size: int, k: int, s: int, d: int, padding: str) -> int:
    if size < 0:
        return -1
    eff = (k - 1) * d + 1
    return -(-size // s) if padding == "SAME" else max((size - eff) // s + 1, 0)


def _broadcast(a: list[int], b: list[int]) -> list[int]:
    n = max(len(a), len(b))
    a, b = [1] * (n - len(a)) + a, [1] * (n - len(b)) + b
    return [y if x in (1, -1) and y != 1 else x for x, y in zip(a, b, strict=True)]


class _Shapes:
    """NHWC output shapes (-1 unknown, None unknown rank) of the ops the converter knows."""

    def __init__(self, nodes: dict[str, GraphNode], consts: dict[str, np.ndarray]) -> None:
        self.nodes, self.consts = nodes, consts
        self.known: dict[tuple[str, int], list[int] | None] = {}
        self.done: set[str] = set()
        self.reads: dict[str, set[int]] = {}
        for n in nodes.values():
            for src, i in n.inputs:
                self.reads.setdefault(src, set()).add(i)

    def of(self, name: str, idx: int = 0) -> list[int] | None:
        if (name, idx) not in self.known and name not in self.done:
            order: list[str] = []
            stack: list[tuple[str, bool]] = [(name, False)]
            seen: set[str] = set()
            while stack:  # iterative post-order: deep graphs must not hit the recursion limit
                n, finished = stack.pop()
                if finished:
                    order.append(n)
                    continue
                if n in seen or n in self.done:
                    continue
                seen.add(n)
                stack.append((n, True))
                stack.extend(
                    (s, False) for s, _ in self.nodes[n].inputs if s not in seen and s not in self.done
                )
            for n in order:
                self.done.add(n)
                for k in sorted(self.reads.get(n, set()) | {0}):
                    if (n, k) not in self.known:
                        try:
                            self.known[(n, k)] = self._infer(self.nodes[n], k)
                        except GraphDefError as e:
                            raise GraphDefError(f"TF op {n}: {e}") from None
        if (name, idx) not in self.known:
            self.known[(name, idx)] = self._infer(self.nodes[name], idx)
        s = self.known[(name, idx)]
        return None if s is None else list(s)

    def _const(self, node: GraphNode, i: int) -> np.ndarray | None:
        src = node.inputs[i][0] if i < len(node.inputs) else None
        while src is not None and self.nodes[src].op == "Identity" and self.nodes[src].inputs:
            src = self.nodes[src].inputs[0][0]
        return self.consts.get(src) if src else None

    def _infer(self, n: GraphNode, idx: int) -> list[int] | None:
        a = n.attrs
        outs = a.get("_output_shapes")
        if isinstance(outs, list) and idx < len(outs) and outs[idx] is not None:
            return outs[idx]
        ins = [self.known.get(i) if i in self.known else None for i in n.inputs]
        x = ins[0] if ins else None
        t = n.op
        if t == "Const":
            v = self.consts.get(n.name)
            return None if v is None else list(v.shape)
        if t in ("Placeholder", "PlaceholderWithDefault"):
            s = a.get("shape")
            return s[1] if isinstance(s, tuple) else None
        if t in _PASS_SHAPE:
            if t.startswith("FusedBatchNorm") and idx > 0:
                return None if x is None else [x[-1]]
            return x
        if t in _BINARY:
            return None if None in ins[:2] or len(ins) < 2 else _broadcast(ins[0], ins[1])
        if x is None:
            return None
        if t in ("Conv2D", "DepthwiseConv2dNative", "MaxPool", "AvgPool") and len(x) == 4:
            st, dl = a.get("strides", [1] * 4), a.get("dilations", [1] * 4)
            if t in ("MaxPool", "AvgPool"):
                k, c = a.get("ksize", [1] * 4)[1:3], x[3]
            else:
                w = self.of(*n.inputs[1])
                if w is None:
                    return None
                k, c = w[:2], w[3] if t == "Conv2D" else (w[2] * w[3])
            pad = a.get("padding", "VALID")
            return [x[0], *(_conv_out(x[i + 1], k[i], st[i + 1], dl[i + 1], pad) for i in (0, 1)), c]
        if t == "MatMul" and len(x) == 2:
            w = self.of(*n.inputs[1])
            if w is None:
                return None
            rows = x[1] if a.get("transpose_a") else x[0]
            return [rows, w[0] if a.get("transpose_b") else w[1]]
        if t == "Squeeze":
            dims = [d % len(x) for d in a.get("squeeze_dims") or []]
            return [s for i, s in enumerate(x) if (i not in dims if dims else s != 1)]
        if t == "Reshape":
            shape = self._const(n, 1)
            return None if shape is None else _reshape(x, [int(s) for s in shape.reshape(-1)])
        if t in ("ConcatV2", "Concat"):
            ax_i = len(n.inputs) - 1 if t == "ConcatV2" else 0
            ax = self._const(n, ax_i)
            parts = [s for j, s in enumerate(ins) if j != ax_i]
            if ax is None or any(p is None for p in parts):
                return None
            d = int(ax) % len(x if t == "ConcatV2" else parts[0])
            y = list(parts[0])
            y[d] = -1 if any(p[d] < 0 for p in parts) else sum(p[d] for p in parts)
            return y
        if t == "Mean":
            axes = self._const(n, 1)
            if axes is None:
                return None
            ax = {int(v) % len(x) for v in axes.reshape(-1)}
            keep = a.get("keep_dims", False)
            return [1 if i in ax else s for i, s in enumerate(x) if keep or i not in ax]
        if t == "Pad":
            p = self._const(n, 1)
            if p is None:
                return None
            return [s if s < 0 else s + int(p[i][0]) + int(p[i][1]) for i, s in enumerate(x)]
        if t == "ExpandDims":
            d = self._const(n, 1)
            if d is None:
                return None
            d = int(d) % (len(x) + 1)
            return [*x[:d], 1, *x[d:]]
        if t in ("ResizeBilinear", "ResizeNearestNeighbor", "ResizeBicubic"):
            size = self._const(n, 1)
            return None if size is None or len(x) != 4 else [x[0], int(size[0]), int(size[1]), x[3]]
        if t in ("DecodeJpeg", "DecodePng"):
            return [-1, -1, int(a.get("channels", 0)) or -1]
        return None


def _reshape(x: list[int], target: list[int]) -> list[int]:
    if target.count(-1) > 1:
        raise GraphDefError(f"Reshape to {target}: more than one -1")
    if -1 not in target:
        if all(s >= 0 for s in x[1:]) and target and int(np.prod(x[1:])) != int(np.prod(target[1:])):
            raise GraphDefError(f"Reshape of {x} to {target}: the sizes do not match")
        return target
    rest = [s for s in target if s != -1]
    total = int(np.prod(x)) if all(s >= 0 for s in x) else None
    if total is None:  # the batch is free: a -1 in front keeps it
        if target[0] == -1 and all(s >= 0 for s in x[1:]):
            if int(np.prod(x[1:])) != int(np.prod(target[1:])):
                raise GraphDefError(f"Reshape of {x} to {target}: the sizes do not match")
            return [-1, *target[1:]]
        known = int(np.prod(x[1:])) if all(s >= 0 for s in x[1:]) else None
        if known is None or x[0] != -1 or not target or target[0] < 0:
            return [-1 if s == -1 else s for s in target]
        inner = int(np.prod([s for s in target[1:] if s != -1]))
        return [target[0], *(known // max(inner, 1) if s == -1 else s for s in target[1:])]
    return [total // max(int(np.prod(rest)), 1) if s == -1 else s for s in target]


# ---------------------------------------------------------------- GraphDef -> op-graph document
def _resolve_const(nodes: dict[str, GraphNode], src: str) -> tuple[str | None, bool]:
    """(the Const ``src`` reads, through Identity ops, or None; whether an Identity was in between)."""
    through = False
    seen = 0
    while nodes[src].op == "Identity" and nodes[src].inputs and seen < 64:
        src = nodes[src].inputs[0][0]
        through, seen = True, seen + 1
    return (src if nodes[src].op == "Const" else None), through


def graphdef_document(
    nodes: dict[str, GraphNode],
    inputs: Sequence[str] | str | None = None,
    outputs: Sequence[str] | str | None = None,
    input_size: tuple[int, int] | None = None,
    where: str = "graph",
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(op-graph document for the slim translator, Const name -> value) of the subgraph of
    ``nodes`` between ``inputs`` and ``outputs`` (defaults: the graph's Placeholders and sinks)."""
    consts = {
        n.name: v
        for n in nodes.values()
        if n.op == "Const" and isinstance(v := n.attrs.get("value"), np.ndarray)
    }
    for n in nodes.values():
        if n.op == "Const" and n.name not in consts:
            raise GraphDefError(f"{where}: Const {n.name!r} has no tensor value")
    consumers: dict[str, set[str]] = {k: set() for k in nodes}
    for n in nodes.values():
        for src, _ in n.inputs:
            consumers[src].add(n.name)
    # outputs
    outs = parse_tensor_names(outputs)
    if not outs:
        sinks = [
            n.name
            for n in nodes.values()
            if not consumers[n.name]
            and n.op not in _NOT_OUTPUTS
            and not all(_resolve_const(nodes, s)[0] for s, _ in n.inputs)
        ]
        if not sinks:
            raise GraphDefError(f"{where}: the graph has no output op (pass --outputs)")
        outs = [(s, 0, None) for s in sinks]
    for name, idx, _ in outs:
        if name not in nodes:
            raise GraphDefError(f"{where}: --outputs {name}:{idx}: no op {name!r} in the graph")
        if nodes[name].op in ("Const", "NoOp"):
            raise GraphDefError(
                f"{where}: --outputs {name}:{idx} is a {nodes[name].op}, not a computed tensor"
            )
    # inputs
    ins = parse_tensor_names(inputs)
    for name, idx, _ in ins:
        if name not in nodes:
            raise GraphDefError(f"{where}: --inputs {name}:{idx}: no op {name!r} in the graph")
        if nodes[name].op in ("Const", "NoOp") or _resolve_const(nodes, name)[0]:
            raise GraphDefError(
                f"{where}: --inputs {name}:{idx} is a constant ({nodes[name].op}), "
                "not a Placeholder or a computed tensor"
            )
    cut = {name for name, _, _ in ins}
    # the subgraph: walk back from the outputs, stopping at the inputs and at constants
    needed: set[str] = set()
    stack = [name for name, _, _ in outs]
    while stack:
        name = stack.pop()
        if name in needed:
            continue
        needed.add(name)
        if name in cut:
            continue
        for src, _ in nodes[name].inputs:
            if _resolve_const(nodes, src)[0] is None:
                stack.append(src)
    placeholders = [n for n in needed if nodes[n].op in ("Placeholder", "PlaceholderWithDefault")]
    if not ins:
        if not placeholders:
            raise GraphDefError(f"{where}: the outputs depend on no Placeholder (pass --inputs)")
        order = list(nodes)
        ins = [(p, 0, None) for p in sorted(placeholders, key=order.index)]
        cut = set(placeholders)
    else:
        stray = sorted(p for p in placeholders if p not in cut)
        if stray:
            raise GraphDefError(
                f"{where}: the outputs depend on Placeholder {stray[0]!r}, which is not in --inputs"
            )
        for name, idx, _ in ins:
            if name not in needed:
                raise GraphDefError(f"{where}: --inputs {name}:{idx}: the outputs do not depend on it")
    # shapes
    shapes = _Shapes(nodes, consts)
    size = tuple(input_size) if input_size else (DEFAULT_SIZE, DEFAULT_SIZE)
    for name, idx, given in ins:
        s = given
        if s is None:
            s = (
                shapes.of(name, idx)
                if nodes[name].op.startswith("Placeholder")
                else _above_shape(shapes, name, idx)
            )
        if s is None:
            s = [-1, -1, -1, -1]
        if len(s) == 4:
            s = [-1, s[1] if s[1] > 0 else size[0], s[2] if s[2] > 0 else size[1], s[3] if s[3] > 0 else 3]
        elif any(d < 0 for d in s[1:]):
            raise GraphDefError(
                f"{where}: input {name}:{idx} has shape {s}: give it as {name}:{idx}[-1,...] in --inputs"
            )
        else:
            s = [-1, *s[1:]]
        shapes.known[(name, idx)] = s
    # the document, in topological order (inputs first)
    order = _topo(nodes, needed, cut)
    in_key = {name: idx for name, idx, _ in ins}
    out_keys = {(name, idx) for name, idx, _ in outs}
    ops: list[dict[str, Any]] = []
    for name in order:
        n = nodes[name]
        if name in cut:
            ops.append(
                {
                    "type": "Placeholder",
                    "name": name,
                    "index": in_key[name],
                    "inputs": [],
                    "variables": {},
                    "consts": {},
                    "attrs": {},
                    "output_shapes": [shapes.of(name, in_key[name])],
                    "consumers": sorted(consumers[name] & needed),
                }
            )
            continue
        op_ins: list[list[Any]] = []
        variables: dict[str, str] = {}
        small: dict[str, Any] = {}
        for i, (src, idx) in enumerate(n.inputs):
            c, through = _resolve_const(nodes, src)
            if c is None:
                op_ins.append([src, idx])
                continue
            v = consts[c]
            bn_default = (
                n.op.startswith("FusedBatchNorm")
                and not through
                and ((i == 1 and np.all(v == 1)) or (i == 2 and np.all(v == 0)))
            )  # slim's batch_norm(scale=False / center=False) feeds ones / zeros, not variables
            if v.dtype.kind == "f" and not bn_default:
                variables[str(i)] = c
            if v.size <= SMALL_CONST:
                small[str(i)] = v.tolist()
        n_out = max(shapes.reads.get(name, set()) | {0}) + 1
        attrs = {k: v for k, v in n.attrs.items() if not k.startswith("_") and not isinstance(v, np.ndarray)}
        if n.op in ("Conv2D", "DepthwiseConv2dNative"):
            attrs.setdefault("dilations", [1, 1, 1, 1])  # 2015 graphs have none
        ops.append(
            {
                "type": n.op,
                "name": name,
                "inputs": op_ins,
                "variables": variables,
                "consts": small,
                "attrs": attrs,
                "num_inputs": len(n.inputs),
                "output_shapes": [shapes.of(name, k) for k in range(n_out)],
                "consumers": sorted(consumers[name] & needed)
                + (["<output>"] if any(o[0] == name for o in out_keys) else []),
            }
        )
    used = sorted({v for op in ops for v in op["variables"].values()})
    doc = {
        "ops": ops,
        "inputs": [[name, idx] for name, idx, _ in ins],
        "outputs": [[name, idx] for name, idx, _ in outs],
        "variables": [{"name": v, "shape": list(consts[v].shape)} for v in used],
        "net_args": {},
        "end_points": {},  # slim's end points are not in a frozen graph
        "input": ins[0][0],  # the worker export's single-input / single-output keys
        "output": [outs[0][0], outs[0][1]],
    }
    return doc, {v: consts[v] for v in used}


def _above_shape(shapes: _Shapes, name: str, idx: int) -> list[int] | None:
    try:
        return shapes.of(name, idx)
    except (KeyError, IndexError, TypeError, ValueError, GraphDefError):  # above the cut: best effort
        return None


def _topo(nodes: dict[str, GraphNode], needed: set[str], cut: set[str]) -> list[str]:
    """``needed`` in a topological order (file order where free), the cut inputs as sources."""
    pos = {k: i for i, k in enumerate(nodes)}
    deps = {n: ({s for s, _ in nodes[n].inputs if s in needed} if n not in cut else set()) for n in needed}
    users: dict[str, list[str]] = {n: [] for n in needed}
    for n, ds in deps.items():
        for d in ds:
            users[d].append(n)
    ready = [(pos[n], n) for n, ds in deps.items() if not ds]
    heapq.heapify(ready)
    left = {n: len(ds) for n, ds in deps.items()}
    out = []
    while ready:
        _, n = heapq.heappop(ready)
        out.append(n)
        for u in users[n]:
            left[u] -= 1
            if not left[u]:
                heapq.heappush(ready, (pos[u], u))
    if len(out) != len(needed):
        raise GraphDefError("the graph has a cycle between the inputs and the outputs")
    return out


# ---------------------------------------------------------------- the translator, extended
class _GraphTranslator(_Translator):
    """The slim translator plus the ops of non-slim and old (2015) graphs."""

    def __init__(self, doc: dict[str, Any], shapes: dict[str, tuple[int, ...]]) -> None:
        super().__init__(doc, shapes)
        self.current: dict[str, Any] = {}  # the op being translated

    def _name(self, preferred: str, fallback: str) -> str:
        """``preferred`` (a scope) unless taken or the name of another op of the graph (the 2015
        graphs name the Relu after the scope, ``conv``, and its Conv2D ``conv/Conv2D``)."""
        cur = self.current
        other_op = (
            preferred in self.ops
            and preferred != cur.get("name")
            and preferred not in cur.get("consumers", [])
        )
        n = preferred if preferred and preferred not in self.names and not other_op else fallback
        k = 2
        while n in self.names:
            n, k = f"{fallback}_{k}", k + 1
        self.names.add(n)
        return n

    def _unsupported(self, op: dict[str, Any], why: str = "") -> ConversionError:
        return GraphDefError(f"TF op {op['name']}: type {op['type']} is not supported{why}")

    def run(self) -> None:
        for op in self.doc["ops"]:
            if op["name"] in self.done:
                continue
            fn = getattr(self, f"_op_{op['type']}", None)
            if fn is None:
                raise self._unsupported(op, " by the GraphDef converter")
            self.current = op
            fn(op)

    def _op_Placeholder(self, op: dict[str, Any]) -> None:
        super()._op_Placeholder(op)
        idx = op.get("index", 0)
        if idx:
            self.blob[(op["name"], idx)] = self.blob.pop((op["name"], 0))

    def _op_BiasAdd(self, op: dict[str, Any]) -> None:
        raise self._unsupported(op, " unless it follows a Conv2D or MatMul whose only consumer it is")

    def _rank(self, src: list[Any]) -> int:
        return len(self.ops[src[0]]["output_shapes"][src[1]] or [])

    def _op_Reshape(self, op: dict[str, Any]) -> None:
        out = op["output_shapes"][0]
        x = self.ops[op["inputs"][0][0]]["output_shapes"][op["inputs"][0][1]]
        if out is None or x is None or len(op["inputs"]) != 1:
            raise GraphDefError(f"TF op {op['name']}: Reshape to a shape that is not a constant")
        if not out or (out[0] not in (-1, x[0]) and x[0] != -1) or (x[0] == -1 and out[0] not in (-1, 1)):
            raise GraphDefError(f"TF op {op['name']}: Reshape of {x} to {out} changes the batch axis")
        if any(d < 0 for d in out[1:]):
            raise GraphDefError(f"TF op {op['name']}: Reshape to {out}: sizes unknown")
        self._add(
            op, self._name(op["name"], op["name"]), "Reshape", "keras.reshape", {"target_shape": out[1:]},
            [self._in(op)],
        )  # fmt: skip

    def _op_ConcatV2(self, op: dict[str, Any]) -> None:
        base = getattr(_Translator, f"_op_{op['type']}", None)
        if base is not None:  # the slim translator's own (its names for slim's end points)
            base(self, op)
            return
        ax_i = "0" if op["type"] == "Concat" else str(op["num_inputs"] - 1)
        if op["variables"] or ax_i not in op["consts"]:
            raise GraphDefError(f"TF op {op['name']}: Concat of constants or on a computed axis")
        rank = self._rank(op["inputs"][0])
        axis = int(op["consts"][ax_i]) % rank
        dim = _NHWC_TO_NCHW_AXIS[axis] if rank == 4 else axis
        ins = [self._in(op, i) for i in range(len(op["inputs"]))]
        self._add(op, self._name(op["name"], op["name"]), op["type"], "keras.concat", {"dim": dim}, ins)

    _op_Concat = _op_ConcatV2

    def _op_MatMul(self, op: dict[str, Any]) -> None:
        a = op["attrs"]
        wvar = op["variables"].get("1")
        if wvar is None or a.get("transpose_a") or self._rank(op["inputs"][0]) != 2:
            raise GraphDefError(
                f"TF op {op['name']}: only MatMul of a 2-D tensor by a constant matrix is supported"
            )
        rows, cols = self.shapes[wvar]
        fin, fout = (cols, rows) if a.get("transpose_b") else (rows, cols)
        bias_op = None
        if len(op["consumers"]) == 1:
            c = self.ops.get(op["consumers"][0])
            if (
                c
                and c["type"] in ("BiasAdd", "Add", "AddV2")
                and len(c["inputs"]) == 1
                and c["inputs"][0][0] == op["name"]
                and len(c["variables"]) == 1
                and tuple(self.shapes[next(iter(c["variables"].values()))]) == (fout,)
            ):
                bias_op = c
        name = self._name(
            wvar.rsplit("/", 1)[0] if "/" in wvar else op["name"], bias_op["name"] if bias_op else op["name"]
        )
        params = {"weight": [fout, fin]}
        if bias_op:
            params["bias"] = [fout]
        attrs = {
            "in_features": fin,
            "out_features": fout,
            "bias": bias_op is not None,
            "activation": "linear",
        }
        also = [bias_op["name"]] if bias_op else []
        node = self._add(op, name, "MatMul", "keras.linear", attrs, [self._in(op)], params, also=also)
        if bias_op:
            node["output_shapes"] = [_nchw(bias_op["output_shapes"][0])]
        m = node["module"]
        self._row(wvar, f"{m}.weight", () if a.get("transpose_b") else ("transpose",), params["weight"])
        if bias_op:
            self._row(next(iter(bias_op["variables"].values())), f"{m}.bias", (), [fout])

    def _op_AddV2(self, op: dict[str, Any]) -> None:
        if op["variables"]:
            raise self._unsupported(op, " with a constant operand unless it follows a MatMul")
        super()._op_AddV2(op)

    _op_Add = _op_AddV2

    def _op_BatchNormWithGlobalNormalization(self, op: dict[str, Any]) -> None:
        # inputs: t, mean 1, variance 2, beta 3, gamma 4 (2015 graphs: producer version < 9)
        a, v = op["attrs"], op["variables"]
        if self._rank(op["inputs"][0]) != 4 or not all(k in v for k in "123"):
            raise GraphDefError(f"TF op {op['name']}: BatchNorm statistics that are not constants")
        c = int(op["output_shapes"][0][-1])
        scale = bool(a.get("scale_after_normalization", False))
        name = self._name(v["1"].rsplit("/", 1)[0] if "/" in v["1"] else op["name"], op["name"])
        attrs = {
            "num_features": c,
            "eps": float(a.get("variance_epsilon", 1e-3)),
            "momentum": 0.997,  # training only
            "rank": 3,
            "scale": scale,
            "center": True,
        }
        node = self._add(
            op, name, op["type"], "keras.batch_norm", attrs, [self._in(op)],
            {k: [c] for k in ("weight", "bias", "running_mean", "running_var")},
            inplace=self._inplace_ok(op),
        )  # fmt: skip
        m = node["module"]
        self._row(v["1"], f"{m}.running_mean", (), [c])
        self._row(v["2"], f"{m}.running_var", (), [c])
        self._row(v["3"], f"{m}.bias", (), [c])
        if scale and "4" in v:
            self._row(v["4"], f"{m}.weight", (), [c])
        else:
            self.constants[f"{m}.weight"] = np.ones(c, np.float32)


def build_graphdef_graph(
    doc: dict[str, Any], shapes: dict[str, tuple[int, ...]]
) -> tuple[dict[str, Any], Any, dict[str, np.ndarray]]:
    """(graph.json document, layer map, constant tensors) of :func:`graphdef_document`'s output."""
    from converters.folder import GRAPH_FORMAT, GRAPH_VERSION
    from converters.layermap import LayerMap

    tr = _GraphTranslator(doc, shapes)
    try:
        tr.run()
    except (KeyError, TypeError, IndexError, ValueError, ZeroDivisionError) as e:  # an odd attr / shape
        op = tr.current
        raise GraphDefError(
            f"TF op {op.get('name')}: {op.get('type')} cannot be translated ({type(e).__name__}: {e})"
        ) from None
    missing = [f"{n}:{i}" for n, i in doc["outputs"] if (n, i) not in tr.blob]
    if missing:
        raise GraphDefError(f"output {missing[0]} was not translated (an op with one output expected)")
    graph = {
        "format": GRAPH_FORMAT,
        "version": GRAPH_VERSION,
        "source": "tf",
        "source_framework": "tensorflow",
        "tensorflow_version": None,
        "name": doc.get("net"),
        "layout": "NCHW",
        "module_names": "TF scope with '/' written '__' (converters.tf.slim.scope_of reverses it)",
        "inputs": tr.inputs,
        "outputs": [tr.blob[(n, i)] for n, i in doc["outputs"]],
        "nodes": tr.nodes,
    }
    return graph, LayerMap(tr.rows, source_format="tensorflow"), tr.constants


def _input_size(size: Any, preprocess: Any) -> tuple[int, int] | None:
    if size is not None:
        s = [int(size)] * 2 if isinstance(size, int) else [int(v) for v in size]
        if len(s) != 2:
            raise GraphDefError(f"input_size {size}: H,W or one number")
        return s[0], s[1]
    ins = getattr(preprocess, "input_size", None)
    if ins and len(ins) == 3:
        return (ins[1], ins[2]) if getattr(preprocess, "layout", "NCHW") == "NCHW" else (ins[0], ins[1])
    return None


def convert_graphdef(
    src: str | Path,
    out_dir: str | Path,
    inputs: Sequence[str] | str | None = None,
    outputs: Sequence[str] | str | None = None,
    to: str | Iterable[str] = ("torch",),
    preprocess: Any = None,
    force: bool = False,
    input_size: int | Sequence[int] | None = None,
    card_extra: dict[str, Any] | None = None,
    opset: int | None = None,
) -> Path:
    """Convert the frozen GraphDef ``src`` into the zoo model folder ``out_dir``.

    ``inputs`` / ``outputs``: tensor names (``input:0``, ``vgg_16/fc8/squeezed:0``; an input may
    carry its NHWC shape, ``Mul:0[1,299,299,3]``); default: the graph's Placeholders and its sinks.
    Only the subgraph between them is converted. An input's unknown H, W come from
    ``input_size`` (H, W), else ``preprocess.input_size``, else 224; unknown channels are 3.
    ``to``: ``torch`` and / or ``onnx`` (exported from the converted PyTorch model, one input only).
    """
    from converters.folder import check_output, parse_targets
    from zoo.cards import Preprocess

    targets = parse_targets(to)
    src, out_dir = Path(src), Path(out_dir)
    check_output(out_dir, force)
    pre = (
        preprocess
        if isinstance(preprocess, Preprocess)
        else (Preprocess.from_dict(preprocess) if isinstance(preprocess, dict) else None)
    )
    nodes, producer = read_graphdef(src)
    doc, weights = graphdef_document(nodes, inputs, outputs, _input_size(input_size, pre), where=src.name)
    shapes = {k: tuple(v.shape) for k, v in weights.items()}
    graph, lmap, constants = build_graphdef_graph(doc, shapes)
    used = {r.source for r in lmap.rows}
    state = lmap.to_target({k: [np.ascontiguousarray(weights[k], np.float32)] for k in sorted(used)})
    state.update(constants)
    graph["tf_graph_producer"] = producer
    ins_s = [f"{n}:{i}" for n, i in doc["inputs"]]
    outs_s = [f"{n}:{i}" for n, i in doc["outputs"]]
    return write_tf_folder(
        out_dir,
        graph,
        state,
        lmap,
        files=[src],
        targets=targets,
        stem=src.name,
        name=f"{src.name} (frozen GraphDef)",
        provenance={
            "converted_by": f"{CONVERTER} {CONVERTER_VERSION}",
            "source_format": "tf-graphdef",
            "graphdef_producer": producer,
            "inputs": ins_s,
            "outputs": outs_s,
        },
        details={"tf_inputs": ins_s, "tf_outputs": outs_s},
        preprocess=pre,
        no_preprocess_note="preprocessing is not in the GraphDef",
        params=int(sum(int(np.prod(s)) for s in shapes.values())),
        tags=("converted", "tensorflow", "graphdef"),
        card_extra=card_extra,
        force=force,
        opset=opset,
    )
