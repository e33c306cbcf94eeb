"""TF-slim test fixtures, built and run by TensorFlow in a subprocess (TensorFlow never enters
the pytest process).

``make_slim_checkpoint(OUT_DIR, "vgg_16")`` (``slim-checkpoint``): one net, a V2 save
``OUT_DIR/NAME.ckpt.index`` + ``.data-00000-of-00001``, ``x.npy`` and ``ref.npy``.

``make_slim_nets(OUT_DIR, {NAME: spec, ...})`` (``slim-nets``): several nets in one TensorFlow
process. Per net, in ``OUT_DIR/NAME/``: a V2 save ``v2/model.ckpt.index`` + ``.data-*``, a V1 save
``v1/NAME.ckpt`` (``Saver(write_version=V1)``), the slim zoo's ``.tar.gz`` of either (``spec
["archive"]``: V1 archives hold ``NAME.ckpt``, V2 ones ``model.ckpt.index`` / ``.data-*``),
``x.npy`` (2 random NHWC images), ``ref.npy`` (TensorFlow's output), ``end_points.npz`` (the
end points named in ``spec["end_points"]``, full scopes) and, with ``spec["bad"]``, two small V2
checkpoints: ``bad_missing/model.ckpt`` (only the net's first variable) and
``bad_shape/model.ckpt`` (the first variable with its last axis halved).

``make_slim_archive(OUT_DIR, NAME, version)``: one net's slim-zoo ``.tar.gz`` and its reference
arrays (for tests that serve the archive, e.g. through a mirror).

Every net is built as ``tf_slim.nets`` defines it (``is_training=False``, its arg scope) with its
variables created at slim's published input size where they depend on it (inception's
AuxLogits kernel) and then run, variables shared, at ``spec["size"]``; every variable is
re-randomized (seeded: kernels with a fan-in scale, biases, beta and moving means random, gamma
in [0.5, 1.5], moving variances in [1e-3, 1e-2] so TF's epsilon matters; see ``_randomize``) and
``global_step`` is added, as in slim's checkpoints.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parents[1]))

# the slim zoo's archives of the nets tested here (all three are V1 checkpoints there)
ARCHIVES = {
    "inception_v3": "inception_v3_2016_08_28.tar.gz",
    "resnet_v1_50": "resnet_v1_50_2016_08_28.tar.gz",
    "resnet_v2_50": "resnet_v2_50_2017_04_14.tar.gz",
}
# num_classes as slim publishes them
NUM_CLASSES = {"inception_v3": 1001, "resnet_v1_50": 1000, "resnet_v2_50": 1001}


def tf_env() -> dict[str, str]:
    """The environment of a TensorFlow fixture subprocess: the project on its path, tf-keras as
    Keras, no GPU, quiet."""
    return dict(
        os.environ,
        PYTHONPATH=str(HERE.parents[1]),
        TF_CPP_MIN_LOG_LEVEL="2",
        TF_USE_LEGACY_KERAS="1",
        CUDA_VISIBLE_DEVICES="-1",
    )


def _run(args: list[str], timeout: float = 900) -> None:
    p = subprocess.run(
        [sys.executable, str(HERE), *args], env=tf_env(), capture_output=True, text=True, timeout=timeout
    )
    if p.returncode != 0:
        raise RuntimeError(f"slim fixture failed: {p.stderr[-3000:]}")


def make_slim_checkpoint(out_dir: Path, name: str, kwargs: dict | None = None, size: int = 224) -> Path:
    """One net's V2 checkpoint ``OUT_DIR/NAME.ckpt`` (+ ``x.npy``, ``ref.npy``); its prefix."""
    out_dir.mkdir(parents=True, exist_ok=True)
    _run(["slim-checkpoint", str(out_dir), name, json.dumps(kwargs or {}), str(size), str(size)])
    return out_dir / f"{name}.ckpt"


def make_slim_nets(out_dir: Path, specs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Build, randomize and save every net of ``specs`` (name -> {"size", "kwargs",
    "archive": "v1"|"v2"|["v1", "v2"]|None, "end_points": [...], "bad": bool}) in one TensorFlow
    process. Returns per net: ``dir``, ``v2`` (prefix), ``v1`` (file), ``archives`` (version ->
    .tar.gz), ``archive`` (the first or None), ``x``,
    ``ref``, ``end_points`` (name -> array) and, with ``bad``, ``bad_missing`` / ``bad_shape``."""
    import numpy as np

    out_dir.mkdir(parents=True, exist_ok=True)
    _run(["slim-nets", str(out_dir), json.dumps(specs)])
    res: dict[str, dict[str, Any]] = {}
    for name, spec in specs.items():
        d = out_dir / name
        versions = _versions(spec.get("archive"))
        archives = {v: d / archive_name(name, v) for v in versions}
        with np.load(d / "end_points.npz") as z:
            eps = {k.replace("__", "/"): z[k] for k in z.files}
        res[name] = {
            "dir": d,
            "v2": d / "v2" / "model.ckpt",
            "v1": d / "v1" / f"{name}.ckpt",
            "archive": archives[versions[0]] if versions else None,
            "archives": archives,
            "x": np.load(d / "x.npy"),
            "ref": np.load(d / "ref.npy"),
            "end_points": eps,
        }
        if spec.get("bad"):
            res[name]["bad_missing"] = d / "bad_missing" / "model.ckpt"
            res[name]["bad_shape"] = d / "bad_shape" / "model.ckpt"
    return res


def make_slim_archive(
    out_dir: Path, name: str, version: str = "v1", size: int | None = None, kwargs: dict | None = None
) -> tuple[Path, dict[str, Any]]:
    """The slim zoo's ``.tar.gz`` of net ``name`` (``version`` v1: ``NAME.ckpt`` inside; v2:
    ``model.ckpt.index`` + ``.data-00000-of-00001``) with re-randomized weights, and its
    reference: {"x": NHWC images, "ref": TensorFlow's output, "size": input size, "kwargs": net
    arguments}. ``size`` defaults to a small one (150 for inception_v3, 112 for the resnets)."""
    size = size or (150 if name.startswith("inception") else 112)
    kwargs = {"num_classes": NUM_CLASSES.get(name, 1000), **(kwargs or {})}
    spec = {"size": size, "kwargs": kwargs, "archive": version}
    r = make_slim_nets(out_dir, {name: spec})[name]
    return r["archive"], {"x": r["x"], "ref": r["ref"], "size": size, "kwargs": kwargs}


def _randomize(v1: Any, sess: Any, rng: Any) -> None:
    """Initialize every variable with random values (one session run: each variable's initializer
    fed its value; ``global_step`` gets its own initial value)."""
    import numpy as np

    feed, inits = {}, []
    names = {v.op.name for v in v1.global_variables()}
    # moving variances ~5e-3 would blow the activations up ~14x per BatchNorm over 50 layers:
    # a kernel whose output a BatchNorm normalizes, and the gamma of a BatchNorm on no kernel
    # (resnet_v2's preact / postnorm), are scaled by sqrt(E[var]) so each layer keeps the scale
    bn_scale = np.sqrt(5.5e-3)
    for v in v1.global_variables():
        inits.append(v.initializer)
        scope = v.op.name.rsplit("/", 1)[0]
        shape = v.shape.as_list()
        leaf = v.op.name.rsplit("/", 1)[-1]
        if leaf == "global_step":
            continue
        if leaf == "weights":
            fan_in = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
            val = rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
            if f"{scope}/BatchNorm/moving_variance" in names:
                val *= bn_scale
        elif leaf in ("biases", "beta"):
            val = rng.standard_normal(shape) * 0.1
        elif leaf == "moving_mean":  # on a kernel's output: of that output's scale
            val = rng.standard_normal(shape) * 0.1 * (bn_scale if scope.endswith("/BatchNorm") else 1.0)
        elif leaf == "gamma":
            val = rng.uniform(0.5, 1.5, shape) * (1.0 if scope.endswith("/BatchNorm") else bn_scale)
        elif leaf == "moving_variance":
            val = rng.uniform(1e-3, 1e-2, shape)  # small: TF's epsilon matters
        else:
            val = rng.standard_normal(shape) * 0.1
        feed[v.initial_value] = val.astype(np.float32)
    sess.run(inits, feed)


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
            _randomize(v1, sess, rng)
            saver = v1.train.Saver(write_version=v1.train.SaverDef.V2)
            saver.save(sess, str(out / f"{name}.ckpt"), write_meta_graph=False, write_state=False)
            xs = rng.standard_normal((2, int(h), int(w), 3)).astype(np.float32)
            ref = sess.run(y, {x: xs})
    np.save(out / "x.npy", xs)
    np.save(out / "ref.npy", np.asarray(ref, np.float32))


def _small_checkpoint(tf: Any, path: Path, tensors: dict[str, Any]) -> None:
    """A V2 checkpoint holding exactly ``tensors`` (name -> array) and ``global_step``."""
    v1 = tf.compat.v1
    g = tf.Graph()
    with g.as_default():
        vs = [v1.get_variable(k, initializer=a) for k, a in tensors.items()]
        vs.append(v1.train.get_or_create_global_step())
        with v1.Session(graph=g) as sess:
            sess.run(v1.global_variables_initializer())
            path.parent.mkdir(parents=True, exist_ok=True)
            v1.train.Saver(vs).save(sess, str(path), write_meta_graph=False, write_state=False)


def slim_nets(out_dir: str, specs_json: str) -> None:
    import importlib
    import inspect

    import numpy as np

    from converters.tf._worker import SLIM_NETS, build_slim_net, tf_modules
    from converters.tf.slim import DEFAULT_SIZE

    tf, tf_slim = tf_modules()
    v1 = tf.compat.v1
    import time

    for name, spec in json.loads(specs_json).items():
        t0 = time.time()
        out = Path(out_dir) / name
        out.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        size, kwargs = int(spec["size"]), dict(spec.get("kwargs", {}))
        g = tf.Graph()
        with g.as_default():
            fn = getattr(importlib.import_module(f"tf_slim.nets.{SLIM_NETS[name][0]}"), name)
            full = DEFAULT_SIZE.get(name, 224)
            if size != full and "create_aux_logits" in inspect.signature(fn).parameters:
                # AuxLogits' kernel depends on the input size: create the variables at slim's
                # size, then run the main path (variables shared) at the test size
                build_slim_net(tf, tf_slim, name, kwargs, full, full)
                kwargs = {**kwargs, "reuse": True, "create_aux_logits": False}
            x, y, _, eps = build_slim_net(tf, tf_slim, name, kwargs, size, size)
            variables = [(v.op.name, v.shape.as_list()) for v in v1.global_variables()]
            v1.train.get_or_create_global_step()
            with v1.Session(graph=g) as sess:
                _randomize(v1, sess, rng)
                for version, path in (
                    (v1.train.SaverDef.V2, out / "v2" / "model.ckpt"),
                    (v1.train.SaverDef.V1, out / "v1" / f"{name}.ckpt"),
                ):
                    path.parent.mkdir(parents=True, exist_ok=True)
                    v1.train.Saver(write_version=version).save(
                        sess, str(path), write_meta_graph=False, write_state=False
                    )
                xs = rng.standard_normal((2, size, size, 3)).astype(np.float32)
                want = list(spec.get("end_points", []))
                got = sess.run([y, *[eps[k] for k in want]], {x: xs})
        np.save(out / "x.npy", xs)
        np.save(out / "ref.npy", np.asarray(got[0], np.float32))
        np.savez(
            out / "end_points.npz", **{k.replace("/", "__"): a for k, a in zip(want, got[1:], strict=True)}
        )
        for version in _versions(spec.get("archive")):
            write_archive(out, name, version)
        if spec.get("bad"):
            first, shape = variables[0]
            a = rng.standard_normal(shape).astype(np.float32)
            _small_checkpoint(tf, out / "bad_missing" / "model.ckpt", {first: a})
            bad = [*shape[:-1], max(1, shape[-1] // 2)]
            _small_checkpoint(tf, out / "bad_shape" / "model.ckpt", {first: a[..., : bad[-1]]})
        print(f"{name}: {time.time() - t0:.1f} s", file=sys.stderr)


def _versions(archive: str | list[str] | None) -> list[str]:
    return [] if not archive else [archive] if isinstance(archive, str) else list(archive)


def archive_name(name: str, version: str) -> str:
    """The slim zoo's archive name (V1, as published), ``..._v2.tar.gz`` for the V2 layout."""
    a = ARCHIVES.get(name, f"{name}.tar.gz")
    return a if version == "v1" else a.replace(".tar.gz", "_v2.tar.gz")


def write_archive(out: Path, name: str, version: str) -> Path:
    """``OUT/archive_name(...)``: the V1 save as ``NAME.ckpt`` or the V2 one as ``model.ckpt.*``."""
    tar = out / archive_name(name, version)
    with tarfile.open(tar, "w:gz", compresslevel=0) as t:  # random weights do not compress
        if version == "v1":
            t.add(out / "v1" / f"{name}.ckpt", arcname=f"{name}.ckpt")
        else:
            for f in sorted((out / "v2").glob("model.ckpt.*")):
                t.add(f, arcname=f.name)
    return tar


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    {"slim-checkpoint": slim_checkpoint, "slim-nets": slim_nets}[cmd](*args)
