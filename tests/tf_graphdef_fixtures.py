"""Frozen-GraphDef test fixtures, built and run by TensorFlow in one subprocess (TensorFlow never
enters the pytest process):

    make_graphdef_fixtures(OUT_DIR)                     # from a test
    python tests/tf_graphdef_fixtures.py all OUT_DIR NET

writes, each with ``*_x.npy`` (random NHWC batch of 3) and TensorFlow's outputs on it:

- ``slim/NET.ckpt`` (V2) and ``slim.pb``: tf_slim's NET (``is_training=False``, its arg scope,
  every variable re-randomized), saved and frozen with ``convert_variables_to_constants``;
  ``slim_ref.npy``.
- ``bn.pb``: a few ``slim.conv2d`` + ``slim.batch_norm`` (fused, one with ``scale=False``) layers
  with random moving statistics, frozen; ``bn_ref.npy``.
- ``cut.pb``: a non-slim graph (Mul / Sub preprocessing, ``tf.nn.conv2d``, ConcatV2, Reshape,
  MatMul + BiasAdd, MatMul + Add, Softmax) to be cut at ``pre:0`` .. ``fc2/logits:0`` and
  ``concat:0``; ``cut_ref_logits.npy``, ``cut_ref_concat.npy`` (TF fed at ``pre:0``).
- ``old.pb``: a GraphDef of producer version 8 written node by node (TensorFlow no longer builds
  ``BatchNormWithGlobalNormalization`` at current versions, but still imports and runs such
  graphs): DecodeJpeg preprocessing up to ``Mul``, then Conv2D on Consts,
  BatchNormWithGlobalNormalization (with and without ``scale_after_normalization``), old Concat
  (axis first), AvgPool, Reshape, MatMul + Add, Softmax; ``old_ref.npy`` (TF fed at ``Mul:0``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve()
if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parents[1]))

SLIM_KWARGS = {"num_classes": 10}
SIZE = 224


def make_graphdef_fixtures(out_dir: Path, net: str = "alexnet_v2") -> Path:
    import subprocess

    from tf_slim_fixtures import tf_env

    out_dir.mkdir(parents=True, exist_ok=True)
    p = subprocess.run(
        [sys.executable, str(HERE), "all", str(out_dir), net],
        env=tf_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    if p.returncode != 0:
        raise RuntimeError(f"graphdef fixture failed: {p.stderr[-3000:]}")
    return out_dir


def _randomize(v1, sess, rng, small_variance: bool = True) -> None:  # noqa: ANN001
    """Every variable random (seeded); ``small_variance``: moving variances in [1e-3, 1e-2] so TF's
    epsilon matters (a shallow net), else in [0.5, 1.5] (deep BN nets stay finite)."""
    import numpy as np

    for v in v1.global_variables():
        shape = v.shape.as_list()
        leaf = v.op.name.rsplit("/", 1)[-1]
        if leaf == "global_step":
            continue
        if leaf in ("weights", "kernel", "w"):
            fan_in = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
            val = rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
        elif leaf == "gamma":
            val = rng.uniform(0.5, 1.5, shape)
        elif leaf == "moving_variance":
            val = rng.uniform(1e-3, 1e-2, shape) if small_variance else rng.uniform(0.5, 1.5, shape)
        else:
            val = rng.standard_normal(shape) * 0.1
        v.load(val.astype(np.float32), sess)


def _freeze(v1, sess, outputs: list[str], path: Path) -> None:  # noqa: ANN001
    gd = v1.graph_util.convert_variables_to_constants(sess, sess.graph.as_graph_def(), outputs)
    path.write_bytes(gd.SerializeToString())


def _slim(tf, tf_slim, out: Path, net: str, rng) -> None:  # noqa: ANN001
    import numpy as np

    from converters.tf._worker import build_slim

    v1 = tf.compat.v1
    g = tf.Graph()
    with g.as_default():
        x, y, _ = build_slim(tf, tf_slim, net, SLIM_KWARGS, SIZE, SIZE)
        v1.train.get_or_create_global_step()
        with v1.Session(graph=g) as sess:
            sess.run(v1.global_variables_initializer())
            _randomize(v1, sess, rng, small_variance=False)
            (out / "slim").mkdir(exist_ok=True)
            saver = v1.train.Saver(write_version=v1.train.SaverDef.V2)
            saver.save(sess, str(out / "slim" / f"{net}.ckpt"), write_meta_graph=False, write_state=False)
            _freeze(v1, sess, [y.op.name], out / "slim.pb")
            xs = rng.standard_normal((3, SIZE, SIZE, 3)).astype(np.float32)
            np.save(out / "slim_x.npy", xs)
            np.save(out / "slim_ref.npy", sess.run(y, {x: xs}))
    (out / "slim.json").write_text(json.dumps({"net": net, "kwargs": SLIM_KWARGS, "output": y.name}))


def _bn(tf, tf_slim, out: Path, rng) -> None:  # noqa: ANN001
    import numpy as np

    v1 = tf.compat.v1
    slim = tf_slim
    g = tf.Graph()
    with g.as_default():
        x = v1.placeholder(tf.float32, [None, 32, 32, 3], name="images")
        with slim.arg_scope(
            [slim.conv2d], normalizer_fn=slim.batch_norm, normalizer_params={"is_training": False}
        ):
            h = slim.conv2d(x, 8, [3, 3], scope="net/conv1")
            h = slim.conv2d(h, 16, [3, 3], stride=2, scope="net/conv2")
            h = slim.conv2d(
                h, 16, [1, 1], scope="net/conv3", normalizer_params={"is_training": False, "scale": False}
            )
        h = slim.batch_norm(h, is_training=False, center=False, scale=True, scope="net/bn_only")
        h = slim.max_pool2d(h, [2, 2], scope="net/pool")
        y = tf.reduce_mean(h, [1, 2], name="net/gap")
        with v1.Session(graph=g) as sess:
            sess.run(v1.global_variables_initializer())
            _randomize(v1, sess, rng)
            _freeze(v1, sess, [y.op.name], out / "bn.pb")
            xs = rng.standard_normal((3, 32, 32, 3)).astype(np.float32)
            np.save(out / "bn_x.npy", xs)
            np.save(out / "bn_ref.npy", sess.run(y, {x: xs}))


def _cut(tf, out: Path, rng) -> None:  # noqa: ANN001
    import numpy as np

    v1 = tf.compat.v1
    g = tf.Graph()

    def var(name: str, shape: list[int], scale: float) -> object:
        return v1.get_variable(name, initializer=(rng.standard_normal(shape) * scale).astype(np.float32))

    with g.as_default():
        raw = v1.placeholder(tf.float32, [None, 12, 10, 3], name="raw")
        pre = tf.subtract(raw * 2.0, 1.0, name="pre")
        with v1.variable_scope("stem"):
            h = tf.nn.relu(tf.nn.conv2d(pre, var("w", [3, 3, 3, 6], 0.3), [1, 2, 2, 1], "SAME"))
        with v1.variable_scope("left"):
            a = tf.nn.relu(tf.nn.conv2d(h, var("w", [1, 1, 6, 4], 0.4), [1, 1, 1, 1], "SAME"))
        with v1.variable_scope("right"):
            b = tf.nn.conv2d(h, var("w", [3, 3, 6, 5], 0.3), [1, 1, 1, 1], "SAME")
            b = tf.nn.bias_add(b, var("b", [5], 0.1))
        cat = tf.concat([a, b], axis=3, name="concat")
        flat = tf.reshape(cat, [-1, 6 * 5 * 9], name="flatten")
        with v1.variable_scope("fc1"):
            f = tf.nn.relu(
                tf.nn.bias_add(tf.matmul(flat, var("weights", [270, 16], 0.1)), var("biases", [16], 0.1))
            )
        with v1.variable_scope("fc2"):
            logits = tf.add(
                tf.matmul(f, var("weights", [16, 7], 0.3)), var("biases", [7], 0.1), name="logits"
            )
        prob = tf.nn.softmax(logits, name="prob")
        with v1.Session(graph=g) as sess:
            sess.run(v1.global_variables_initializer())
            _freeze(v1, sess, [prob.op.name], out / "cut.pb")
            xs = rng.standard_normal((3, 12, 10, 3)).astype(np.float32)
            np.save(out / "cut_x.npy", xs)
            lo, ca = sess.run([logits, cat], {pre: xs})
            np.save(out / "cut_ref_logits.npy", lo)
            np.save(out / "cut_ref_concat.npy", ca)


def _old(tf, out: Path, rng) -> None:  # noqa: ANN001
    import numpy as np

    v1 = tf.compat.v1
    gd = v1.GraphDef()
    gd.versions.producer = 8  # BatchNormWithGlobalNormalization was removed at version 9

    def node(name: str, op: str, inputs: tuple[str, ...] = (), **attrs: object) -> None:
        n = gd.node.add()
        n.name, n.op = name, op
        n.input.extend(inputs)
        for k, v in attrs.items():
            if isinstance(v, bool):
                n.attr[k].b = v
            elif isinstance(v, float):
                n.attr[k].f = v
            elif isinstance(v, int):
                n.attr[k].i = v
            elif isinstance(v, str):
                n.attr[k].s = v.encode()
            elif isinstance(v, list):
                n.attr[k].list.i.extend(v)
            elif isinstance(v, tf.DType):
                n.attr[k].type = v.as_datatype_enum
            else:
                n.attr[k].tensor.CopyFrom(tf.make_tensor_proto(v))

    def const(name: str, value: object) -> str:
        a = np.asarray(value)
        node(name, "Const", dtype=tf.as_dtype(a.dtype), value=a)
        return name

    def rand(name: str, shape: list[int], scale: float = 0.1, low: float | None = None) -> str:
        a = rng.uniform(low, low + 1.0, shape) if low is not None else rng.standard_normal(shape) * scale
        return const(name, a.astype(np.float32))

    s = 20
    node("DecodeJpeg/contents", "Const", dtype=tf.string, value=np.array(b"not a jpeg", dtype=object))
    node("DecodeJpeg", "DecodeJpeg", ("DecodeJpeg/contents",), channels=3)
    node("Cast", "Cast", ("DecodeJpeg",), SrcT=tf.uint8, DstT=tf.float32)
    node(
        "ExpandDims",
        "ExpandDims",
        ("Cast", const("ExpandDims/dim", np.int32(0))),
        T=tf.float32,
        Tdim=tf.int32,
    )
    node(
        "ResizeBilinear",
        "ResizeBilinear",
        ("ExpandDims", const("ResizeBilinear/size", np.array([s, s], np.int32))),
        T=tf.float32,
    )
    node("Sub", "Sub", ("ResizeBilinear", const("Sub/y", np.float32(128))), T=tf.float32)
    node("Mul", "Mul", ("Sub", const("Mul/y", np.float32(1 / 128))), T=tf.float32)

    def conv_bn(scope: str, x: str, cin: int, cout: int, k: int, stride: int, pad: str, scale: bool) -> str:
        w = rand(f"{scope}/conv2d_params", [k, k, cin, cout], np.sqrt(2.0 / (k * k * cin)))
        node(
            f"{scope}/Conv2D",
            "Conv2D",
            (x, w),
            T=tf.float32,
            strides=[1, stride, stride, 1],
            padding=pad,
            use_cudnn_on_gpu=True,
        )
        m, v = (
            rand(f"{scope}/batchnorm/moving_mean", [cout]),
            rand(f"{scope}/batchnorm/moving_variance", [cout], low=0.001),
        )
        b, g = rand(f"{scope}/batchnorm/beta", [cout]), rand(f"{scope}/batchnorm/gamma", [cout], low=0.5)
        node(f"{scope}/batchnorm", "BatchNormWithGlobalNormalization", (f"{scope}/Conv2D", m, v, b, g),
             T=tf.float32, variance_epsilon=0.001, scale_after_normalization=scale)  # fmt: skip
        node(scope, "Relu", (f"{scope}/batchnorm",), T=tf.float32)
        return scope

    h = conv_bn("conv", "Mul", 3, 8, 3, 2, "VALID", True)  # 20 -> 9
    a = conv_bn("mixed/conv", h, 8, 4, 1, 1, "SAME", False)
    b = conv_bn("mixed/tower/conv", h, 8, 6, 3, 1, "SAME", True)
    node("mixed/join", "Concat", (const("mixed/join/concat_dim", np.int32(3)), a, b), N=2, T=tf.float32)
    node(
        "pool_3",
        "AvgPool",
        ("mixed/join",),
        T=tf.float32,
        ksize=[1, 9, 9, 1],
        strides=[1, 1, 1, 1],
        padding="VALID",
    )
    node(
        "pool_3/_reshape",
        "Reshape",
        ("pool_3", const("pool_3/_reshape/shape", np.array([-1, 10], np.int32))),
        T=tf.float32,
    )
    w, bias = rand("softmax/weights", [10, 5], 0.5), rand("softmax/biases", [5])
    node(
        "softmax/logits/MatMul",
        "MatMul",
        ("pool_3/_reshape", w),
        T=tf.float32,
        transpose_a=False,
        transpose_b=False,
    )
    node("softmax/logits", "Add", ("softmax/logits/MatMul", bias), T=tf.float32)
    node("softmax", "Softmax", ("softmax/logits",), T=tf.float32)
    (out / "old.pb").write_bytes(gd.SerializeToString())
    g = tf.Graph()
    with g.as_default():
        tf.graph_util.import_graph_def(gd, name="")
        with v1.Session(graph=g) as sess:
            xs = rng.standard_normal((3, s, s, 3)).astype(np.float32)
            np.save(out / "old_x.npy", xs)
            # Mul:0 has the static shape [1, s, s, 3] (as in the 2015 graph): one image per run
            for name, fetch in (("old_ref", "softmax:0"), ("old_ref_logits", "softmax/logits:0")):
                ys = [sess.run(fetch, {"Mul:0": xs[i : i + 1]}) for i in range(len(xs))]
                np.save(out / f"{name}.npy", np.concatenate(ys))


def all_fixtures(out_dir: str, net: str) -> None:
    import numpy as np

    from converters.tf._worker import tf_modules

    tf, tf_slim = tf_modules()
    out = Path(out_dir)
    rng = np.random.default_rng(0)
    _old(tf, out, rng)
    _cut(tf, out, rng)
    _bn(tf, tf_slim, out, rng)
    _slim(tf, tf_slim, out, net, rng)


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    {"all": all_fixtures}[cmd](*args)
