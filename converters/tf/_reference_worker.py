"""Subprocess side of ``zoo verify``'s TensorFlow reference (converters/tf/reference.py): TensorFlow
itself runs the source on the same inputs. Imports TensorFlow: only ever run as
``python -m converters.tf._reference_worker ...``, never imported beside torch.

Commands (inputs and outputs are NHWC ``.npz`` files, arrays ``x0, x1, ...`` / ``y0, y1, ...``):

- ``slim NAME KWARGS_JSON H W CHECKPOINT IN.npz OUT.npz``: build ``tf_slim.nets`` NAME as the
  converter does (``converters.tf._worker.build_slim_net``), restore every variable it has from
  CHECKPOINT (a V2 prefix or a V1 file) with ``tf.compat.v1.train.Saver`` and run the output.
- ``graphdef GRAPH.pb INPUTS_JSON OUTPUTS_JSON IN.npz OUT.npz``: import the frozen GraphDef and run
  the named output tensors with the named input tensors fed.
"""

from __future__ import annotations

import json
import sys

import numpy as np


def _load(path: str) -> list[np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return [z[f"x{i}"] for i in range(len(z.files))]


def _save(path: str, ys: list[np.ndarray], label: str) -> None:
    np.savez(path, **{f"y{i}": y for i, y in enumerate(ys)}, __label__=np.array(label))


def slim(name: str, kwargs_json: str, h: str, w: str, ckpt: str, inp: str, out: str) -> None:
    from converters.tf._worker import build_slim_net, tf_modules

    tf, tf_slim = tf_modules()
    xs = _load(inp)
    with tf.Graph().as_default():
        built = build_slim_net(tf, tf_slim, name, json.loads(kwargs_json), int(h), int(w))
        x, y = built[0], built[1]
        saver = tf.compat.v1.train.Saver(var_list=tf.compat.v1.global_variables())
        with tf.compat.v1.Session() as sess:
            saver.restore(sess, ckpt)
            ys = [sess.run(y, {x: xs[0]})]
    _save(out, ys, f"TensorFlow {tf.__version__} + tf_slim {getattr(tf_slim, '__version__', '?')} ({name})")


def graphdef(pb: str, inputs_json: str, outputs_json: str, inp: str, out: str) -> None:
    from converters.tf._worker import tf_modules

    tf, _ = tf_modules()
    xs = _load(inp)
    gd = tf.compat.v1.GraphDef()
    with open(pb, "rb") as f:
        gd.ParseFromString(f.read())
    with tf.Graph().as_default() as g:
        tf.compat.v1.import_graph_def(gd, name="")
        ins = [g.get_tensor_by_name(n if ":" in n else n + ":0") for n in json.loads(inputs_json)]
        outs = [g.get_tensor_by_name(n if ":" in n else n + ":0") for n in json.loads(outputs_json)]
        with tf.compat.v1.Session() as sess:
            ys = sess.run(outs, dict(zip(ins, xs, strict=True)))
    _save(out, list(ys), f"TensorFlow {tf.__version__} (frozen GraphDef)")


COMMANDS = {"slim": slim, "graphdef": graphdef}

if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    COMMANDS[cmd](*args)
