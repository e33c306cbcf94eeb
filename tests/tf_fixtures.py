"""TensorFlow test fixtures: checkpoints written by TensorFlow itself, with TensorFlow's own
reading of them. Run in a subprocess (TensorFlow never enters the pytest process):

    make_checkpoints(OUT_DIR)   # from a test
    python tests/tf_fixtures.py checkpoints OUT_DIR

writes ``OUT_DIR/{v2,v1,v1s,tf2}/`` (a ``tf.compat.v1.train.Saver`` V2, V1 and sharded V1 save
of one graph, and a TF2 ``tf.train.Checkpoint``), and beside each checkpoint ``ref.npz`` +
``ref.json``: every variable as ``tf.train.load_checkpoint`` reads it (``a{i}`` in the npz;
names, TF dtypes, shapes and the checkpoint path in the JSON; strings pickled as object
arrays; ``tf_error`` where TF's own reader fails on a tensor: its V1 reader reads no float16
and no partitioned tensor).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve()
if __name__ == "__main__":  # run as a script: the project root on the path
    sys.path.insert(0, str(HERE.parents[1]))


def make_checkpoints(out_dir: Path) -> Path:
    from converters.keras.subproc import run_worker

    run_worker(["checkpoints", str(out_dir)], env={"TF_USE_LEGACY_KERAS": "1"}, timeout=600, script=HERE)
    return Path(out_dir)


# --- the subprocess side (imports TensorFlow) ------------------------------------------------


def _dump_reference(tf, path: str, out: Path) -> None:  # noqa: ANN001
    import numpy as np

    reader = tf.train.load_checkpoint(path)
    shapes = reader.get_variable_to_shape_map()
    dtypes = reader.get_variable_to_dtype_map()
    arrays, meta = {}, []
    for i, name in enumerate(sorted(shapes)):
        m = {"name": name, "dtype": dtypes[name].name, "shape": list(shapes[name])}
        try:
            v = reader.get_tensor(name)
        except tf.errors.OpError as e:  # TF's V1 reader: no float16, no partitioned tensors
            m["tf_error"] = f"{type(e).__name__}: {e.message}"
        else:
            arrays[f"a{i}"] = np.asarray(v, dtype=object) if dtypes[name] == tf.string else np.asarray(v)
        meta.append(m)
    np.savez(out / "ref.npz", **arrays)
    (out / "ref.json").write_text(json.dumps({"path": path, "tensors": meta}, indent=1))


def _graph_variables(tf, np_rng) -> None:  # noqa: ANN001
    """The variables of the V1/V2 graph: several dtypes and shapes, a conv kernel, a BatchNorm
    set, a 600 KB tensor, a partitioned variable, and enough small
    variables (and long enough names) that the index spans several table blocks and restart
    points."""
    import numpy as np

    v1 = tf.compat.v1

    def var(name, value, **kw):  # noqa: ANN001, ANN202
        return v1.Variable(value, name=name, **kw)

    var("scalar", np.float32(np_rng.standard_normal()))
    var("counts", np.array([0, 1, -2, 2**40, -(2**62)], np.int64))
    var("global_step", np.int64(12345))
    var("conv1/weights", np_rng.standard_normal((3, 3, 3, 8)).astype(np.float32))
    var("conv1/biases", np_rng.standard_normal(8).astype(np.float32))
    for k, v in {
        "gamma": np_rng.uniform(0.5, 1.5, 8),
        "beta": np_rng.standard_normal(8),
        "moving_mean": np_rng.standard_normal(8),
        "moving_variance": np_rng.uniform(1e-4, 1e-2, 8),
    }.items():
        var(f"conv1/BatchNorm/{k}", v.astype(np.float32))
    var("fc/weights", np_rng.standard_normal((300, 500)).astype(np.float32))  # 600 KB
    var("dbl", np_rng.standard_normal((2, 3)))
    var("i32", np.array([7, -7, 2**31 - 1, -(2**31)], np.int32))
    var("flags", np.array([True, False, True]))
    var("half", np_rng.standard_normal(5).astype(np.float16))
    var("u8", np.arange(250, 256, dtype=np.uint8))
    var("i8", np.array([-128, 0, 127], np.int8))
    var("names", np.array([b"alpha", b"", b"\x00\xffbytes"], dtype=object), dtype=tf.string)
    v1.get_variable(
        "part/embedding",
        shape=[10, 4],
        initializer=v1.random_normal_initializer(seed=1),
        partitioner=v1.fixed_size_partitioner(3),
    )
    for i in range(300):
        var(f"many/layer_{i:03d}/bias", np.full(2, i, np.float32))
    for i in range(80):  # long keys that share little: the index outgrows TF's 256 KiB table block
        var(f"long/v{i:02d}/" + "w" * 4000, np.full(1, i, np.int32))


def checkpoints(out_dir: str) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf

    out = Path(out_dir)
    v1 = tf.compat.v1
    V1, V2 = v1.train.SaverDef.V1, v1.train.SaverDef.V2
    for version, sub, sharded in ((V2, "v2", False), (V1, "v1", False), (V1, "v1s", True)):
        d = out / sub
        d.mkdir(parents=True, exist_ok=True)
        g = tf.Graph()
        with g.as_default():
            _graph_variables(tf, np.random.default_rng(0))
            saver = v1.train.Saver(write_version=version, sharded=sharded)
            with v1.Session(graph=g) as sess:
                sess.run(v1.global_variables_initializer())
                path = saver.save(sess, str(d / "model.ckpt"), write_meta_graph=False)
        _dump_reference(tf, path, d)

    d = out / "tf2"
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)

    class Net(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.kernel = tf.Variable(rng.standard_normal((3, 3, 4, 2)).astype(np.float32))
            self.bias = tf.Variable(np.zeros(2, np.float32))
            self.steps = tf.Variable(np.int64(3))

    ckpt = tf.train.Checkpoint(net=Net(), extra=tf.Variable(rng.standard_normal((2, 2))))
    path = ckpt.save(str(d / "ckpt"))
    _dump_reference(tf, path, d)


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    {"checkpoints": checkpoints}[cmd](*args)
