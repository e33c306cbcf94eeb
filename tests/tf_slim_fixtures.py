"""TF-slim test fixtures, built and run by TensorFlow in a subprocess (TensorFlow never enters
the pytest process):

    make_slim_checkpoint(OUT_DIR, "vgg_16")   # from a test
    python tests/tf_slim_fixtures.py slim-checkpoint OUT_DIR vgg_16 KWARGS_JSON H W

builds ``tf_slim.nets`` NAME (``is_training=False``, its arg scope) on an NHWC placeholder,
re-randomizes every variable (seeded: kernels with a fan-in scale, biases and BatchNorm terms
random, variances positive and small), adds ``global_step`` as slim checkpoints have it, saves a
V2 checkpoint as the slim zoo publishes it (``OUT_DIR/NAME.ckpt.index`` +
``.data-00000-of-00001``, no state file) and writes ``x.npy`` (2 random NHWC images) and
``ref.npy`` (TensorFlow's output on them).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve()
if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parents[1]))


def make_slim_checkpoint(out_dir: Path, name: str, kwargs: dict | None = None, size: int = 224) -> Path:
    import subprocess

    from converters.tf.slim import ROOT

    out_dir.mkdir(parents=True, exist_ok=True)
    import os

    env = dict(
        os.environ,
        PYTHONPATH=str(ROOT),
        TF_CPP_MIN_LOG_LEVEL="2",
        TF_USE_LEGACY_KERAS="1",
        CUDA_VISIBLE_DEVICES="-1",
    )
    args = ["slim-checkpoint", str(out_dir), name, json.dumps(kwargs or {}), str(size), str(size)]
    p = subprocess.run(
        [sys.executable, str(HERE), *args], env=env, capture_output=True, text=True, timeout=600
    )
    if p.returncode != 0:
        raise RuntimeError(f"slim fixture failed: {p.stderr[-3000:]}")
    return out_dir / f"{name}.ckpt"


def slim_checkpoint(out_dir: str, name: str, kwargs_json: str, h: str, w: str) -> None:
    import numpy as np

    from converters.tf._worker import build_slim, tf_modules

    tf, tf_slim = tf_modules()
    v1 = tf.compat.v1
    out = Path(out_dir)
    rng = np.random.default_rng(0)
    g = tf.Graph()
    with g.as_default():
        x, y, _ = build_slim(tf, tf_slim, name, json.loads(kwargs_json), int(h), int(w))
        v1.train.get_or_create_global_step()
        with v1.Session(graph=g) as sess:
            sess.run(v1.global_variables_initializer())
            for v in v1.global_variables():
                shape = v.shape.as_list()
                leaf = v.op.name.rsplit("/", 1)[-1]
                if leaf == "global_step":
                    continue
                if leaf == "weights":
                    fan_in = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
                    val = rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
                elif leaf in ("biases", "beta", "moving_mean"):
                    val = rng.standard_normal(shape) * 0.1
                elif leaf == "gamma":
                    val = rng.uniform(0.5, 1.5, shape)
                elif leaf == "moving_variance":
                    val = rng.uniform(1e-3, 1e-2, shape)  # small: TF's epsilon matters
                else:
                    val = rng.standard_normal(shape) * 0.1
                v.load(val.astype(np.float32), sess)
            saver = v1.train.Saver(write_version=v1.train.SaverDef.V2)
            saver.save(sess, str(out / f"{name}.ckpt"), write_meta_graph=False, write_state=False)
            xs = rng.standard_normal((2, int(h), int(w), 3)).astype(np.float32)
            ref = sess.run(y, {x: xs})
    np.save(out / "x.npy", xs)
    np.save(out / "ref.npy", np.asarray(ref, np.float32))


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    {"slim-checkpoint": slim_checkpoint}[cmd](*args)
