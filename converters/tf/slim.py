"""``convert_slim``: a TF-slim checkpoint + its ``tf_slim.nets`` network -> the zoo model folder.

The network comes from tf_slim's own net definition: a TensorFlow subprocess
(``converters/tf/_worker.py``) builds it in a ``tf.compat.v1`` graph on an NHWC placeholder and
exports the op graph (types, names, attributes, the variable each op reads). Here, with no
TensorFlow, the ops become graph.json nodes (NCHW), the weights come from the checkpoint
(:mod:`converters.tf.checkpoint`) through the layer map (TF variable name -> module parameter,
``permute(3,2,0,1)`` for HWIO kernels), and the folder is written by ``write_folder``.

Op translation: Conv2D (+ its BiasAdd folded in) -> ``keras.conv2d`` (TF 'SAME' exact, also
asymmetric at stride 2); DepthwiseConv2dNative -> grouped ``keras.conv2d``; FusedBatchNorm(V3) ->
``keras.batch_norm`` (``nn.BatchNorm2d``, TF's epsilon); Relu / Relu6; MaxPool / AvgPool ->
``keras.pool2d`` (SAME / VALID); Identity (dropout at eval: ``dropout`` with the net's keep
probability, identity in eval mode); Squeeze -> ``tf.squeeze``; Pad -> ``tf.pad``; Mean over H, W
-> ``keras.global_pool2d``; AddV2 -> ``keras.add``; ConcatV2 -> ``keras.concat``; Softmax. Any
other op is an error naming it. Only the variables the output reads are needed (inception's
AuxLogits are not); ``num_classes`` defaults to the checkpoint's (``LOGITS_VARIABLE``).

Module names: a TF scope becomes its module name with each ``/`` written ``__``
(``vgg_16/conv1/conv1_1`` -> ``vgg_16__conv1__conv1_1``); :func:`scope_of` reverses it. That is
reversible for every name whose ``/``-separated parts are made of ``[A-Za-z0-9_]``, do not start
or end with ``_`` and hold no ``__`` (all slim scopes); other names fall back to ``_`` for every
other character plus a numeric suffix when taken (graph.json keeps the exact name in ``name``).
Activations, BatchNorm and dropout that are the only consumer of a layer's output rewrite that
layer's blob (in place, as slim's end points name the activated output by the layer scope), so
``cut("vgg_16/fc7")`` ends after fc7's ReLU and dropout. A scope TF doubled
(``InceptionV3/InceptionV3/...``) is written once. Slim's end points (exported by the worker)
are never rewritten in place except by dropout; a node takes the end point's name where it is
its scope (``InceptionV3/Mixed_5b`` for the concat) and further names of the same tensor become
``EndPoint`` identity nodes (``resnet_v2_50/block3``), so ``cut(end point)`` is slim's tensor.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from converters.folder import GRAPH_FORMAT, GRAPH_VERSION, check_output, parse_targets
from converters.layermap import LayerMap, LayerMapRow
from zoo.errors import ConversionError

CONVERTER = "zoo.converters.tf.slim"
CONVERTER_VERSION = "1"
ROOT = Path(__file__).resolve().parents[2]

# slim's default input sizes (net.default_image_size) where they are not 224
DEFAULT_SIZE = {"inception_v3": 299, "overfeat": 231}
SKIP_VARIABLES = ("global_step",)
# the logits kernel of each net ([1, 1, C, num_classes], vgg's [1, 1, 4096, num_classes]): where
# --arch gives no num_classes, it is read from the checkpoint (slim publishes 1001 for inception
# and resnet_v2, 1000 for vgg and resnet_v1; tf_slim's resnets default to no logits at all)
LOGITS_VARIABLE = {
    **{n: f"{n}/fc8/weights" for n in ("vgg_a", "vgg_16", "vgg_19", "alexnet_v2", "overfeat")},
    **{f"resnet_v{v}_{d}": f"resnet_v{v}_{d}/logits/weights" for v in (1, 2) for d in (50, 101, 152)},
    "inception_v1": "InceptionV1/Logits/Conv2d_0c_1x1/weights",
    "inception_v2": "InceptionV2/Logits/Conv2d_1c_1x1/weights",
    "inception_v3": "InceptionV3/Logits/Conv2d_1c_1x1/weights",
}

_PART = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_]*[A-Za-z0-9])?$")


def reversible(name: str) -> bool:
    """Whether ``name`` round-trips through ``module_name`` / ``scope_of``."""
    parts = name.split("/")
    return bool(parts) and all(_PART.match(p) and "__" not in p for p in parts) and not name[0].isdigit()


def module_name(name: str, taken: set[str]) -> str:
    """The module name of a TF scope: ``/`` -> ``__`` (reversible, see the module doc)."""
    if reversible(name) and name.replace("/", "__") not in taken:
        s = name.replace("/", "__")
    else:
        base = re.sub(r"[^0-9A-Za-z_]", "_", name) or "op"
        if base[0].isdigit():
            base = "l_" + base
        s, i = base + "_x", 2
        while s in taken:
            s = f"{base}_x{i}"
            i += 1
    taken.add(s)
    return s


def scope_of(module: str) -> str:
    """The TF scope of a module name made by :func:`module_name` (``__`` -> ``/``)."""
    return module.replace("__", "/")


def run_tf_worker(args: list[str], timeout: float = 1800, module: str = "converters.tf._worker") -> str:
    """``python -m MODULE ARGS`` (default converters.tf._worker) in a subprocess (TensorFlow never
    beside torch)."""
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT) + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
    e.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    e.setdefault("TF_USE_LEGACY_KERAS", "1")
    e.setdefault("CUDA_VISIBLE_DEVICES", "-1")
    try:
        p = subprocess.run(
            [sys.executable, "-m", module, *args],
            env=e,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        raise ConversionError(f"TensorFlow worker {args[0]} timed out") from None
    if p.returncode != 0:
        lines = [ln.strip() for ln in p.stderr.strip().splitlines() if ln.strip()]
        errs = [ln for ln in lines if re.match(r"^[\w.]*(Error|Exception)\b", ln)]
        last = (errs or lines or [f"exit code {p.returncode}"])[-1]
        if "ModuleNotFoundError" in last:
            last += " (install the zoo[keras] extra: tensorflow and tf-slim)"
        raise ConversionError(f"TensorFlow worker {args[0]} failed: {last}")
    return p.stdout


def slim_graph(name: str, kwargs: dict[str, Any] | None = None, size: tuple[int, int] | None = None) -> dict:
    """The exported op graph of ``tf_slim.nets`` ``name`` (built in a TensorFlow subprocess)."""
    h, w = size or (DEFAULT_SIZE.get(name, 224),) * 2
    with tempfile.TemporaryDirectory() as td:
        out = Path(td) / "graph.json"
        run_tf_worker(["slim-graph", name, json.dumps(kwargs or {}), str(h), str(w), str(out)])
        return json.loads(out.read_text())


def _nchw(shape: list[int] | None) -> list[int] | None:
    if shape is None:
        return None
    s = [1 if d == -1 else int(d) for d in shape]
    if len(s) == 4:
        return [s[0], s[3], s[1], s[2]]
    return s


_NHWC_TO_NCHW_AXIS = {0: 0, 1: 2, 2: 3, 3: 1}


class _Translator:
    """TF op graph (the worker's export) -> graph.json nodes + layer-map rows."""

    def __init__(self, doc: dict[str, Any], shapes: dict[str, tuple[int, ...]]) -> None:
        self.doc = doc
        self.ops = {o["name"]: o for o in doc["ops"]}
        self.shapes = shapes  # TF variable name -> shape (the graph's)
        self.blob: dict[tuple[str, int], str] = {}  # TF tensor -> blob name
        self.nodes: list[dict[str, Any]] = []
        self.rows: list[LayerMapRow] = []
        self.constants: dict[str, np.ndarray] = {}  # target -> value (no TF variable behind it)
        self.taken: set[str] = set()
        self.names: set[str] = set()
        self.done: set[str] = set()
        self.inputs: list[dict[str, Any]] = []
        self.keep_prob = float(doc.get("net_args", {}).get("dropout_keep_prob", 0.5))
        # slim's end points: TF tensor -> its end point names; blobs holding one are not rewritten
        self.aliases: dict[tuple[str, int], list[str]] = {}
        for ep, (op_name, idx) in sorted(doc.get("end_points", {}).items()):
            self.aliases.setdefault((op_name, int(idx)), []).append(ep)
        self.ep_blobs: set[str] = set()
        self.node_of: dict[str, dict[str, Any]] = {}  # node name -> node
        # a scope TF doubled by re-entering a variable scope (InceptionV3/InceptionV3/...)
        variables = [v["name"] for v in doc.get("variables", [])]
        self.doubled = {
            o["name"].split("/")[0]
            for o in doc["ops"]
            if o["name"].count("/") >= 2 and o["name"].split("/")[0] == o["name"].split("/")[1]
        }
        self.doubled -= {
            v.split("/")[0] for v in variables if v.count("/") >= 2 and v.split("/")[0] == v.split("/")[1]
        }

    def _canon(self, op_name: str) -> str:
        """An op name with a doubled leading scope written once (``A/A/b`` -> ``A/b``)."""
        parts = op_name.split("/")
        if len(parts) > 2 and parts[0] == parts[1] and parts[0] in self.doubled:
            return "/".join(parts[1:])
        return op_name

    def _name(self, preferred: str, fallback: str) -> str:
        n = preferred if preferred and preferred not in self.names else fallback
        self.names.add(n)
        return n

    def _in(self, op: dict[str, Any], i: int = 0) -> str:
        src = op["inputs"][i]
        try:
            return self.blob[(src[0], src[1])]
        except KeyError:
            raise ConversionError(f"TF op {op['name']}: input {src[0]}:{src[1]} was not translated") from None

    def _row(self, var: str, target: str, steps: tuple[str, ...], target_shape: list[int]) -> None:
        self.rows.append(LayerMapRow(var, 0, target, steps, tuple(self.shapes[var]), tuple(target_shape)))

    def _inplace_ok(self, op: dict[str, Any], eval_identity: bool = False) -> bool:
        """Whether ``op`` may rewrite its input blob: it is that tensor's only consumer and the blob
        is no slim end point (unless ``op`` is the identity at eval: dropout), so ``cut`` at an end
        point gives slim's tensor."""
        src = self.ops.get(op["inputs"][0][0])
        if src is None or src["consumers"] != [op["name"]] or src["type"] == "Placeholder":
            return False
        return eval_identity or self.blob.get(tuple(op["inputs"][0])) not in self.ep_blobs

    def _add(
        self,
        op: dict[str, Any],
        name: str,
        tf_type: str,
        zop: str,
        attrs: dict[str, Any],
        ins: list[str],
        params: dict[str, list[int]] | None = None,
        inplace: bool = False,
        also: Iterable[str] = (),
    ) -> dict[str, Any]:
        out = ins[0] if inplace else name
        aliases = [a for n in (op["name"], *also) for a in self.aliases.get((n, 0), [])]
        parent = name.rsplit("/", 1)[0]
        if name not in aliases and parent in aliases and parent not in self.names:
            self.names.discard(name)  # InceptionV3/Mixed_5b/concat -> the end point InceptionV3/Mixed_5b
            name = parent
            self.names.add(name)
            out = ins[0] if inplace else name
        node = {
            "name": name,
            "module": module_name(name, self.taken),
            "type": tf_type,
            "op": zop,
            "attrs": attrs,
            "inputs": ins,
            "outputs": [out],
            "params": params or {},
            "output_shapes": [_nchw(op["output_shapes"][0])],
            "tf_ops": [op["name"], *also],
        }
        self.nodes.append(node)
        self.node_of[name] = node
        for n in (op["name"], *also):
            self.blob[(n, 0)] = out
            self.done.add(n)
        if aliases:
            self.ep_blobs.add(out)
        for a in aliases:
            if a in self.names:
                continue  # a node of that name (same blob: in-place) or taken: cut() by its name
            # another end point name of the same tensor (resnet_v2_50/block3 = unit_6's output)
            self.names.add(a)
            alias_node = {
                "name": a,
                "module": module_name(a, self.taken),
                "type": "EndPoint",
                "op": "identity",
                "attrs": {"end_point": a},
                "inputs": [out],
                "outputs": [out],
                "params": {},
                "output_shapes": node["output_shapes"],
                "tf_ops": [],
            }
            self.nodes.append(alias_node)
            self.node_of[a] = alias_node
        return node

    def run(self) -> None:
        for op in self.doc["ops"]:
            if op["name"] in self.done:
                continue
            t = op["type"]
            fn = getattr(self, f"_op_{t}", None)
            if fn is None:
                raise ConversionError(f"TF op {op['name']}: type {t} is not supported by the slim converter")
            fn(op)

    # --- ops ----------------------------------------------------------------------------------

    def _op_Placeholder(self, op: dict[str, Any]) -> None:
        s = op["output_shapes"][0]
        self.inputs.append(
            {
                "name": op["name"],
                "shape": _nchw(s),
                "batch": "free",
                "layout": "NCHW",
                "shape_tf": s,
                "layout_tf": "NHWC",
            }
        )
        self.blob[(op["name"], 0)] = op["name"]
        self.names.add(op["name"])
        self.done.add(op["name"])

    def _check_nhwc(self, op: dict[str, Any]) -> None:
        if op["attrs"].get("data_format", "NHWC") != "NHWC":
            raise ConversionError(
                f"TF op {op['name']}: data_format {op['attrs']['data_format']} (NHWC expected)"
            )

    def _op_Conv2D(self, op: dict[str, Any], depthwise: bool = False) -> None:
        self._check_nhwc(op)
        a = op["attrs"]
        if a.get("padding") not in ("SAME", "VALID"):
            raise ConversionError(f"TF op {op['name']}: padding {a.get('padding')} is not supported")
        wvar = op["variables"].get("1")
        if wvar is None:
            raise ConversionError(f"TF op {op['name']}: the kernel is not a variable")
        kh, kw, cin, cout = self.shapes[wvar]
        scope = wvar.rsplit("/", 1)[0]
        bias_op = None
        if len(op["consumers"]) == 1:
            c = self.ops.get(op["consumers"][0])
            if c and c["type"] == "BiasAdd" and c["inputs"][0][0] == op["name"] and "1" in c["variables"]:
                bias_op = c
        name = self._name(scope, op["name"])
        oc = cin * cout if depthwise else cout
        params = {"weight": [oc, 1 if depthwise else cin, kh, kw]}
        if bias_op is not None:
            params["bias"] = [oc]
        attrs = {
            "in_channels": cin,
            "out_channels": oc,
            "kernel_size": [kh, kw],
            "stride": [int(a["strides"][1]), int(a["strides"][2])],
            "dilation": [int(a["dilations"][1]), int(a["dilations"][2])],
            "padding": a["padding"].lower(),
            "groups": cin if depthwise else 1,
            "bias": bias_op is not None,
            "activation": "linear",
        }
        also = [bias_op["name"]] if bias_op else []
        node = self._add(
            op,
            name,
            "DepthwiseConv2dNative" if depthwise else "Conv2D",
            "keras.conv2d",
            attrs,
            [self._in(op)],
            params,
            also=also,
        )
        if bias_op is not None:
            node["output_shapes"] = [_nchw(bias_op["output_shapes"][0])]
        m = node["module"]
        if depthwise:  # [kh, kw, cin, mult] -> [cin * mult, 1, kh, kw]
            self._row(
                wvar, f"{m}.weight", ("permute(2,3,0,1)", f"reshape({oc},1,{kh},{kw})"), params["weight"]
            )
        else:
            self._row(wvar, f"{m}.weight", ("permute(3,2,0,1)",), params["weight"])
        if bias_op is not None:
            self._row(bias_op["variables"]["1"], f"{m}.bias", (), [oc])

    def _op_DepthwiseConv2dNative(self, op: dict[str, Any]) -> None:
        self._op_Conv2D(op, depthwise=True)

    def _op_FusedBatchNormV3(self, op: dict[str, Any]) -> None:
        self._check_nhwc(op)
        a = op["attrs"]
        if a.get("is_training"):
            raise ConversionError(
                f"TF op {op['name']}: a training-mode BatchNorm (build with is_training=False)"
            )
        v = op["variables"]
        ref = next((v[k] for k in ("3", "4", "2", "1") if k in v), None)
        if ref is None:
            raise ConversionError(f"TF op {op['name']}: no BatchNorm variables")
        scope = ref.rsplit("/", 1)[0]
        c = int(op["output_shapes"][0][-1])
        name = self._name(scope, op["name"])
        attrs = {
            "num_features": c,
            "eps": float(a.get("epsilon", 1e-3)),
            "momentum": 0.997,  # slim's batch_norm_decay default; training only
            "rank": 3,
            "scale": "1" in v,
            "center": "2" in v,
        }
        node = self._add(
            op,
            name,
            op["type"],
            "keras.batch_norm",
            attrs,
            [self._in(op)],
            {k: [c] for k in ("weight", "bias", "running_mean", "running_var")},
            inplace=self._inplace_ok(op),
        )
        m = node["module"]
        for idx, tgt, const in (
            ("1", "weight", 1.0),
            ("2", "bias", 0.0),
            ("3", "running_mean", None),
            ("4", "running_var", None),
        ):
            if idx in v:
                self._row(v[idx], f"{m}.{tgt}", (), [c])
            elif const is not None:
                self.constants[f"{m}.{tgt}"] = np.full(c, const, np.float32)
            else:
                raise ConversionError(f"TF op {op['name']}: the BatchNorm statistics are not variables")

    _op_FusedBatchNorm = _op_FusedBatchNormV3
    _op_FusedBatchNormV2 = _op_FusedBatchNormV3

    def _op_Relu(self, op: dict[str, Any]) -> None:
        self._add(
            op,
            self._name(self._canon(op["name"]), op["name"]),
            op["type"],
            "relu",
            {},
            [self._in(op)],
            inplace=self._inplace_ok(op),
        )

    def _op_Relu6(self, op: dict[str, Any]) -> None:
        self._add(
            op,
            self._name(self._canon(op["name"]), op["name"]),
            op["type"],
            "keras.activation",
            {"activation": "relu6"},
            [self._in(op)],
            inplace=self._inplace_ok(op),
        )

    def _pool(self, op: dict[str, Any], kind: str) -> None:
        self._check_nhwc(op)
        a = op["attrs"]
        attrs = {
            "kind": kind,
            "kernel_size": [int(a["ksize"][1]), int(a["ksize"][2])],
            "stride": [int(a["strides"][1]), int(a["strides"][2])],
            "padding": a["padding"].lower(),
        }
        name = self._name(self._canon(op["name"]).rsplit("/", 1)[0], op["name"])
        self._add(op, name, op["type"], "keras.pool2d", attrs, [self._in(op)])

    def _op_MaxPool(self, op: dict[str, Any]) -> None:
        self._pool(op, "max")

    def _op_AvgPool(self, op: dict[str, Any]) -> None:
        self._pool(op, "avg")

    def _op_Identity(self, op: dict[str, Any]) -> None:
        scope = self._canon(op["name"]).rsplit("/", 1)[0]
        if "dropout" in scope.rsplit("/", 1)[-1].lower():
            zop, attrs, tf_type = "dropout", {"ratio": round(1.0 - self.keep_prob, 6)}, "Dropout"
        else:
            zop, attrs, tf_type = "identity", {}, "Identity"
        self._add(
            op,
            self._name(scope, op["name"]),
            tf_type,
            zop,
            attrs,
            [self._in(op)],
            inplace=self._inplace_ok(op, eval_identity=True),
        )

    def _op_Squeeze(self, op: dict[str, Any]) -> None:
        rank = len(self.ops[op["inputs"][0][0]]["output_shapes"][op["inputs"][0][1]] or [])
        dims = op["attrs"].get("squeeze_dims") or []
        if rank != 4 or not dims:
            raise ConversionError(f"TF op {op['name']}: Squeeze of a rank-{rank} tensor (dims {dims})")
        nchw = sorted(_NHWC_TO_NCHW_AXIS[d % 4] for d in dims)
        self._add(
            op,
            self._name(self._canon(op["name"]), op["name"]),
            "Squeeze",
            "tf.squeeze",
            {"dims": nchw},
            [self._in(op)],
        )

    def _op_Pad(self, op: dict[str, Any]) -> None:
        p = op["consts"].get("1")
        if p is None or len(p) != 4 or p[0] != [0, 0] or p[3] != [0, 0]:
            raise ConversionError(
                f"TF op {op['name']}: only constant H/W padding of an NHWC tensor is supported"
            )
        (t, b), (left, r) = p[1], p[2]
        self._add(
            op,
            self._name(self._canon(op["name"]), op["name"]),
            "Pad",
            "tf.pad",
            {"pads": [left, r, t, b]},
            [self._in(op)],
        )

    def _op_Mean(self, op: dict[str, Any]) -> None:
        axes = op["consts"].get("1")
        axes = sorted(int(x) % 4 for x in (axes if isinstance(axes, list) else [axes]))
        if axes != [1, 2]:
            raise ConversionError(f"TF op {op['name']}: Mean over axes {axes} (only spatial pooling)")
        attrs = {"kind": "avg", "keepdims": bool(op["attrs"].get("keep_dims"))}
        self._add(
            op,
            self._name(self._canon(op["name"]), op["name"]),
            "Mean",
            "keras.global_pool2d",
            attrs,
            [self._in(op)],
        )

    def _op_AddV2(self, op: dict[str, Any]) -> None:
        if len(op["inputs"]) != 2:
            raise ConversionError(f"TF op {op['name']}: Add with a constant is not supported")
        n = self._canon(op["name"])
        name = self._name(n.rsplit("/", 1)[0] if n.endswith("/add") else n, op["name"])
        self._add(op, name, "Add", "keras.add", {}, [self._in(op, 0), self._in(op, 1)])

    _op_Add = _op_AddV2

    def _op_Softmax(self, op: dict[str, Any]) -> None:
        n = self._canon(op["name"])
        self._add(op, self._name(n, op["name"]), "Softmax", "softmax", {"axis": 1}, [self._in(op)])

    def _op_ConcatV2(self, op: dict[str, Any]) -> None:
        n_in = len(op["inputs"])
        axis = op["consts"].get(str(op.get("num_inputs", n_in + 1) - 1))  # the last input
        rank = len(op["output_shapes"][0] or [])
        if not isinstance(axis, int) or rank != 4 or n_in < 1:
            raise ConversionError(
                f"TF op {op['name']}: only a concat of rank-4 tensors over a constant axis is supported"
            )
        ins = [self._in(op, i) for i in range(n_in)]
        name = self._name(self._canon(op["name"]), op["name"])
        attrs = {"dim": _NHWC_TO_NCHW_AXIS[axis % 4]}
        self._add(op, name, "Concat", "keras.concat", attrs, ins)


def build_slim_graph(
    doc: dict[str, Any], shapes: dict[str, tuple[int, ...]]
) -> tuple[dict[str, Any], LayerMap, dict[str, np.ndarray]]:
    """(graph.json document, layer map, constant tensors) from the worker's op-graph export."""
    tr = _Translator(doc, shapes)
    tr.run()
    out_name, out_idx = doc["output"]
    graph = {
        "format": GRAPH_FORMAT,
        "version": GRAPH_VERSION,
        "source": "tf",
        "source_framework": "tensorflow",
        "tensorflow_version": doc.get("tensorflow"),
        "tf_slim_version": doc.get("tf_slim"),
        "name": doc.get("net"),
        "net_args": doc.get("net_args", {}),
        "layout": "NCHW",
        "module_names": "TF scope with '/' written '__' (converters.tf.slim.scope_of reverses it)",
        "inputs": tr.inputs,
        "outputs": [tr.blob[(out_name, out_idx)]],
        "nodes": tr.nodes,
    }
    return graph, LayerMap(tr.rows, source_format="tensorflow"), tr.constants


def parse_slim_arch(arch: Any) -> tuple[str, dict[str, Any], tuple[int, int] | None]:
    """``slim:NAME?k=v`` -> (net name, net kwargs, input size or None); ``input_size=H,W`` or
    ``input_size=S`` sets the placeholder size."""
    from zoo.arch import parse

    a = parse(arch)
    if a.kind != "slim":
        raise ConversionError(f"a TensorFlow checkpoint needs --arch slim:NAME (got {a.spec})")
    kwargs = dict(a.kwargs)
    size = kwargs.pop("input_size", None)
    if size is not None:
        size = tuple(size) if isinstance(size, list) else (int(size), int(size))
        if len(size) != 2:
            raise ConversionError(f"--arch {a.spec}: input_size is H,W or one number")
    return a.name, kwargs, size  # type: ignore[return-value]


def _source_files(path: Path) -> list[Path]:
    from converters.tf.checkpoint import resolve_checkpoint

    kind, prefix, files = resolve_checkpoint(path)
    if kind == "v2":
        return [Path(str(prefix) + ".index"), *sorted(prefix.parent.glob(prefix.name + ".data-*"))]
    return list(files) or [prefix]


def _OneInput(model: Any) -> Any:  # noqa: N802
    """``model`` behind a one-argument ``forward`` (the ONNX exporter's dynamic batch needs it)."""
    import torch

    class OneInput(torch.nn.Module):
        def __init__(self, m: Any) -> None:
            super().__init__()
            self.m = m

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.m(x)

    return OneInput(model).eval()


def convert_slim(
    path: str | Path,
    out_dir: str | Path,
    arch: Any,
    to: str | Iterable[str] = ("torch",),
    preprocess: Any = None,
    card_extra: dict[str, Any] | None = None,
    force: bool = False,
    opset: int | None = None,
) -> Path:
    """Convert a TF-slim checkpoint (V2 prefix / ``.index`` / ``.data-*``, V1 file, or a folder
    with a ``checkpoint`` state file) with ``arch`` = ``slim:NAME[?kwargs]`` into ``out_dir``.

    ``to``: ``torch`` (graph.json + model.safetensors + layermap.json) and / or ``onnx``
    (model.onnx exported from the converted PyTorch model with the dynamo exporter, NCHW, checked
    against PyTorch with onnxruntime). The PyTorch files are always written (the ONNX comes from
    them). ``card_extra``: card fields (labels, head, ...; ``registry_id`` goes into provenance).
    """
    from converters.tf.checkpoint import list_variables, read_checkpoint
    from zoo.arch import parse as parse_architecture

    targets = parse_targets(to)
    path = Path(path)
    out_dir = Path(out_dir)
    check_output(out_dir, force)
    name, kwargs, size = parse_slim_arch(arch)
    files = _source_files(path)
    stored = {v.name: tuple(v.shape) for v in list_variables(path)}
    logits = stored.get(LOGITS_VARIABLE.get(name, ""))
    if "num_classes" not in kwargs and logits is not None and len(logits) == 4:
        kwargs["num_classes"] = int(logits[-1])  # as the checkpoint has it
    doc = slim_graph(name, kwargs, size)
    # the variables the output reads (inception's AuxLogits are built but not read at eval)
    read = {v for o in doc["ops"] for v in o["variables"].values()}
    shapes = {v["name"]: tuple(v["shape"]) for v in doc["variables"] if v["name"] in read}
    for var, shp in shapes.items():
        if var not in stored:
            raise ConversionError(
                f"{path.name}: the checkpoint has no variable {var!r} that slim {name} needs"
            )
        if stored[var] != shp:
            raise ConversionError(
                f"{path.name}: variable {var!r} has shape {list(stored[var])}, slim {name} needs {list(shp)} "
                "(set the net's arguments in --arch, e.g. slim:NAME?num_classes=1001)"
            )
    graph, lmap, constants = build_slim_graph(doc, shapes)
    used = {r.source for r in lmap.rows}
    unused = sorted(set(shapes) - used)
    if unused:
        raise ConversionError(f"slim {name}: variables the converted graph does not read: {unused[:3]}")
    values = read_checkpoint(path, names=sorted(used))
    state = lmap.to_target({k: [v] for k, v in values.items()})
    del values
    state.update(constants)
    ignored = sorted(set(stored) - used)
    spec = parse_architecture(arch).spec
    return write_tf_folder(
        out_dir,
        graph,
        state,
        lmap,
        files=files,
        targets=targets,
        stem=path.name.removesuffix(".index"),
        name=f"{name} ({path.name})",
        provenance={
            "source_format": "tf-checkpoint",
            "slim_arch": spec,
            "tensorflow_version": doc.get("tensorflow"),
            "tf_slim_version": doc.get("tf_slim"),
            "ignored_variables": ignored,
        },
        details={"slim": spec},
        preprocess=preprocess,
        no_preprocess_note="slim preprocessing is not in the checkpoint",
        params=int(sum(int(np.prod(s)) for s in shapes.values())),
        tags=("converted", "tensorflow", "slim"),
        card_extra=card_extra,
        force=force,
        opset=opset,
    )


def write_tf_folder(
    out_dir: Path,
    graph: dict[str, Any],
    state: dict[str, Any],
    lmap: LayerMap,
    *,
    files: list[Path],
    targets: set[str],
    stem: str,
    name: str,
    provenance: dict[str, Any],
    details: dict[str, Any],
    preprocess: Any,
    no_preprocess_note: str,
    params: int,
    tags: tuple[str, ...],
    card_extra: dict[str, Any] | None,
    force: bool,
    opset: int | None,
) -> Path:
    """The zoo model folder of a TensorFlow source (a checkpoint's or a GraphDef's translation):
    card.json (the source ``files`` with their sha256, ``provenance`` and the graph's ``details``
    added to the common fields), graph.json, model.safetensors, layermap.json and, with ``onnx``
    in ``targets``, model.onnx exported from the converted PyTorch model and checked against it
    with onnxruntime (one input). ``card_extra``: card fields (labels, head, ...;
    ``registry_id`` goes into provenance)."""
    import dataclasses

    from converters.folder import write_folder
    from zoo.arch import parse as parse_architecture
    from zoo.cards import Checksum, FileRef, ModelCard, Preprocess
    from zoo.fileio import sha256_file

    in_shapes = [i["shape"] for i in graph["inputs"]]
    if "onnx" in targets and len(in_shapes) != 1:
        raise ConversionError(f"{stem}: ONNX export takes one input ({len(in_shapes)} given)")
    onnx_info: dict[str, Any] = {}

    def extra(tmp: Path) -> None:
        if "onnx" in targets:
            from converters.folder import load_folder
            from converters.torch_onnx import DEFAULT_OPSET, export_onnx, verify_onnx

            model = _OneInput(load_folder(tmp))  # GraphModule.forward takes *inputs
            shape = tuple(in_shapes[0][1:])
            export_onnx(model, tmp / "model.onnx", shape, opset=opset or DEFAULT_OPSET)
            x = np.random.default_rng(0).standard_normal((2, *shape)).astype(np.float32)
            onnx_info.update(verify_onnx(model, tmp / "model.onnx", x))

    artifacts: dict[str, Any] = {
        "model.safetensors": {
            "framework": "pytorch",
            "layout": "NCHW",
            "input_shape": in_shapes[0],
            "graph": "graph.json",
        },
    }
    if "onnx" in targets:
        artifacts["model.onnx"] = {
            "framework": "onnx",
            "layout": "NCHW",
            "input_shape": in_shapes[0],
            "converter": "torch.onnx (dynamo) from the converted PyTorch model",
        }
    stem = re.sub(r"[^A-Za-z0-9_.+-]", "-", stem).strip("-.") or "model"
    extra_fields = dict(card_extra or {})
    registry_id = extra_fields.pop("registry_id", None)
    pre = (
        preprocess
        if isinstance(preprocess, Preprocess)
        else (Preprocess.from_dict(preprocess) if isinstance(preprocess, dict) else None)
    )
    sha = {f: sha256_file(f) for f in files}
    refs = tuple(
        FileRef(
            name=f.name,
            urls=(f.resolve().as_uri(),),
            size=f.stat().st_size,
            role="weights",
            checksum=Checksum("sha256", sha[f], "computed at conversion"),
        )
        for f in files
    )
    card = ModelCard(
        id=f"converted/{stem}",
        files=refs,
        name=name,
        source="user",
        framework="pytorch",
        format="safetensors",
        origin="tensorflow",
        provenance={
            "publisher": "local conversion",
            "converted_by": f"{CONVERTER} {CONVERTER_VERSION}",
            **provenance,
            "source_files": [{"path": str(f.resolve()), "sha256": sha[f], "role": "weights"} for f in files],
            **({"registry_id": registry_id} if registry_id else {}),
        },
        architecture=parse_architecture(
            {
                "kind": "graph",
                "name": "graph.json",
                "details": {
                    "inputs": graph["inputs"],
                    "outputs": graph["outputs"],
                    "artifacts": artifacts,
                    **details,
                },
            }
        ),
        preprocess=pre or Preprocess(layout="NCHW", unknown=True, note=no_preprocess_note),
        params=params,
        tags=tags,
    )
    card = dataclasses.replace(card, **extra_fields)
    write_folder(out_dir, card, graph, state, lmap, extra=extra, force=force)
    return out_dir
