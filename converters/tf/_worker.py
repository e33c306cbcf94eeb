"""Subprocess side of the TF-slim converter: the only code in ``converters.tf`` that imports
TensorFlow (and tf_slim). Run as ``python -m converters.tf._worker COMMAND ...`` (through
``converters.tf.slim.run_tf_worker``); never imported by a process that has torch loaded.

Commands:

- ``slim-graph NAME KWARGS_JSON H W OUT.json``: build ``tf_slim.nets`` NAME (e.g. ``vgg_16``) in a
  ``tf.compat.v1`` graph on an NHWC float32 placeholder ``[None, H, W, 3]`` with
  ``is_training=False`` (under the net's own arg scope), and write the op graph the output
  depends on: per op its type, name, inputs (producer op and output index, traced through
  ``Identity`` reads of variables), the variable each input reads, small constant inputs, the
  attributes that define the computation (strides, padding, ksize, data_format, dilations,
  squeeze_dims, epsilon, keep_dims, ...) and the output shapes; plus every variable (name,
  shape; also those the output does not read, such as inception's AuxLogits), slim's end points
  on the output's path (full scope -> op and output index) and the net's defaults
  (``dropout_keep_prob``).

Test fixtures (checkpoints saved by TensorFlow) live in ``tests/tf_slim_fixtures.py``.
"""

from __future__ import annotations

import inspect
import json
import os
import sys
from typing import Any

# net name -> (tf_slim.nets module, arg-scope function); tf_slim 1.1.0 ships no mobilenet
SLIM_NETS: dict[str, tuple[str, str]] = {
    "vgg_a": ("vgg", "vgg_arg_scope"),
    "vgg_16": ("vgg", "vgg_arg_scope"),
    "vgg_19": ("vgg", "vgg_arg_scope"),
    "resnet_v1_50": ("resnet_v1", "resnet_arg_scope"),
    "resnet_v1_101": ("resnet_v1", "resnet_arg_scope"),
    "resnet_v1_152": ("resnet_v1", "resnet_arg_scope"),
    "resnet_v2_50": ("resnet_v2", "resnet_arg_scope"),
    "resnet_v2_101": ("resnet_v2", "resnet_arg_scope"),
    "resnet_v2_152": ("resnet_v2", "resnet_arg_scope"),
    "inception_v1": ("inception_v1", "inception_v1_arg_scope"),
    "inception_v2": ("inception_v2", "inception_v2_arg_scope"),
    "inception_v3": ("inception_v3", "inception_v3_arg_scope"),
    "alexnet_v2": ("alexnet", "alexnet_v2_arg_scope"),
    "overfeat": ("overfeat", "overfeat_arg_scope"),
}

_ATTRS = (
    "strides",
    "padding",
    "explicit_paddings",
    "ksize",
    "data_format",
    "dilations",
    "squeeze_dims",
    "epsilon",
    "keep_dims",
    "is_training",
    "transpose_a",
    "transpose_b",
)


def tf_modules():  # noqa: ANN201
    """(tf, tf_slim) with tf-slim 1.1.0's module aliases under TensorFlow 2.21 (tf_keras keeps its
    legacy layers under ``tf_keras.src``)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")
    import tensorflow as tf

    try:
        import tf_keras.src.legacy_tf_layers as layers
        import tf_keras.src.legacy_tf_layers.normalization as normalization

        sys.modules.setdefault("tf_keras.legacy_tf_layers", layers)
        sys.modules.setdefault("tf_keras.legacy_tf_layers.normalization", normalization)
    except ImportError:
        pass
    import tf_slim

    return tf, tf_slim


def build_slim_net(
    tf: Any, tf_slim: Any, name: str, kwargs: dict[str, Any], h: int, w: int
) -> tuple[Any, Any, dict, dict[str, Any]]:
    """In the current default graph: (placeholder, output tensor, defaults, end points) of slim net
    ``name``. End points are slim's ``end_points`` dict with every key a full TF scope (inception's
    ``Mixed_5b`` becomes ``InceptionV3/Mixed_5b``)."""
    import importlib

    if name not in SLIM_NETS:
        raise SystemExit(
            f"ValueError: unknown slim net {name!r} (tf_slim.nets has: {', '.join(sorted(SLIM_NETS))}; "
            "no mobilenet: tf_slim does not ship it)"
        )
    mod_name, scope_fn = SLIM_NETS[name]
    mod = importlib.import_module(f"tf_slim.nets.{mod_name}")
    fn = getattr(mod, name)
    params = inspect.signature(fn).parameters
    defaults = {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}
    x = tf.compat.v1.placeholder(tf.float32, [None, h, w, 3], name="input")
    with tf_slim.arg_scope(getattr(mod, scope_fn)()):
        out, end_points = fn(x, is_training=False, **kwargs)
    info = {
        k: v
        for k, v in {**defaults, **kwargs, "is_training": False}.items()
        if isinstance(v, (int, float, bool, str))
    }
    vs = tf.compat.v1.global_variables()  # the variable scope (op names of a rebuild get "_1")
    top = (vs[0].op.name if vs else out.op.name).split("/")[0]
    eps = {(k if "/" in k else f"{top}/{k}"): t for k, t in end_points.items()}
    return x, out, info, eps


def build_slim(
    tf: Any, tf_slim: Any, name: str, kwargs: dict[str, Any], h: int, w: int
) -> tuple[Any, Any, dict]:
    """In the current default graph: (placeholder, output tensor, defaults) of slim net ``name``."""
    x, out, info, _ = build_slim_net(tf, tf_slim, name, kwargs, h, w)
    return x, out, info


def _attr(op: Any, key: str) -> Any:
    v = op.get_attr(key)
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, (list, tuple)):
        return [x.decode() if isinstance(x, bytes) else x for x in v]
    return v


def _shape(t: Any) -> list[int] | None:
    if t.shape.rank is None:
        return None
    return [-1 if d is None else int(d) for d in t.shape.as_list()]


def export_graph(tf: Any, x: Any, out: Any, end_points: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ops ``out`` depends on, from the placeholder ``x``, as plain data (see the module doc);
    ``end_points`` (name -> tensor) that are among those ops are exported as name -> [op, index]."""
    import numpy as np

    var_types = ("VarHandleOp", "VariableV2", "Variable")

    def variable_of(t: Any) -> str | None:
        op = t.op
        while op.type in ("ReadVariableOp", "Identity") and op.inputs:
            op = op.inputs[0].op
        return op.name if op.type in var_types else None

    needed: dict[str, Any] = {}
    stack = [out.op]
    while stack:
        op = stack.pop()
        if op.name in needed:
            continue
        needed[op.name] = op
        for t in op.inputs:
            if variable_of(t) is None and t.op.type != "Const":
                stack.append(t.op)
    ops = []
    for op in tf.compat.v1.get_default_graph().get_operations():  # topological (creation) order
        if op.name not in needed:
            continue
        ins, consts, variables = [], {}, {}
        for i, t in enumerate(op.inputs):
            v = variable_of(t)
            if v is not None:
                variables[str(i)] = v
            elif t.op.type == "Const":
                a = tf.get_static_value(t)
                if a is not None and np.size(a) <= 64:
                    consts[str(i)] = np.asarray(a).tolist()
            else:
                ins.append([t.op.name, t.value_index])
        attrs = {}
        for k in _ATTRS:
            try:
                attrs[k] = _attr(op, k)
            except ValueError:
                pass
        consumers = sorted({c.name for t in op.outputs for c in t.consumers() if c.name in needed})
        ops.append(
            {
                "type": op.type,
                "name": op.name,
                "inputs": ins,
                "variables": variables,
                "consts": consts,
                "attrs": attrs,
                "output_shapes": [_shape(t) for t in op.outputs],
                "consumers": consumers,
            }
        )
    variables = [
        {"name": v.op.name, "shape": [int(d) for d in v.shape.as_list()]}
        for v in tf.compat.v1.global_variables()
    ]
    return {
        "ops": ops,
        "input": x.op.name,
        "output": [out.op.name, out.value_index],
        "variables": variables,
        "end_points": {
            k: [t.op.name, t.value_index] for k, t in (end_points or {}).items() if t.op.name in needed
        },
        "tensorflow": tf.__version__,
    }


def slim_graph(name: str, kwargs_json: str, h: str, w: str, out_json: str) -> None:
    tf, tf_slim = tf_modules()
    g = tf.Graph()
    with g.as_default():
        x, out, info, eps = build_slim_net(tf, tf_slim, name, json.loads(kwargs_json), int(h), int(w))
        doc = export_graph(tf, x, out, eps)
    doc.update({"net": name, "net_args": info, "tf_slim": getattr(tf_slim, "__version__", "")})
    with open(out_json, "w") as fh:
        json.dump(doc, fh)


COMMANDS = {"slim-graph": slim_graph}

if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    COMMANDS[cmd](*args)
