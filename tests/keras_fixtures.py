"""Keras test fixtures: models built by Keras itself, saved in every file format, with Keras's
own outputs on random inputs. Run in a subprocess (TensorFlow never enters the pytest process):

    make_app(NAME, KWARGS, OUT_DIR)      # keras.applications.NAME re-randomized, legacy HDF5 weights
    make_apps(NAMES, KWARGS, tmp_path_factory)   # several of those from ONE subprocess, once a session
    make_coverage("tf_keras" | "keras3", OUT_DIR)   # every supported layer type, every format
    coverage_once("tf_keras" | "keras3", tmp_path_factory)   # that, once a session (read-only use)

from a test; or ``python tests/keras_fixtures.py app-make NAME KWARGS_JSON OUT_DIR SEED`` /
``python tests/keras_fixtures.py apps-make JOBS_JSON`` / ``... predict-many JOBS_JSON`` /
``python tests/keras_fixtures.py coverage FLAVOR OUT_DIR``. The TensorFlow / Keras side reuses the
shipped worker's loaders (:mod:`converters.keras._worker`).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
if __name__ == "__main__":  # run as a script: the project root on the path (as the worker has it)
    sys.path.insert(0, str(HERE.parents[1]))


def _run(args: list[str], env: dict[str, str]) -> None:
    from converters.keras.subproc import run_worker

    run_worker(args, env=env, script=HERE)


def make_app(name: str, kwargs: dict[str, Any], out_dir: Path, seed: int = 0) -> Path:
    """keras.applications.NAME(weights=None, **kwargs) re-randomized (Keras 3, torch backend):
    ``weights.h5`` (legacy weights-only layout), ``config.json``, ``x.npy``, ``y.npy``."""
    _run(["app-make", name, json.dumps(kwargs), str(out_dir), str(seed)], {"KERAS_BACKEND": "torch"})
    return Path(out_dir)


# Fixture folders already written in this pytest session, by what they were made from. The
# fixtures are deterministic (fixed seeds), so every test that asks for the same one gets the
# same bytes it would have got by building its own; tests only read them.
_MADE: dict[str, Path] = {}


def _key(*parts: Any) -> str:
    return json.dumps(parts, sort_keys=True)


def make_apps(
    names: list[str], kwargs: dict[str, Any], tmp_path_factory: Any, seed: int = 0
) -> dict[str, Path]:
    """:func:`make_app` for each of ``names`` (same kwargs and seed), the ones not yet made in
    this session built in ONE subprocess (one Keras import, not one per model; the session is
    cleared before each model, as a fresh process has it). Returns name -> folder (read-only)."""
    todo = [n for n in dict.fromkeys(names) if _key("app", n, kwargs, seed) not in _MADE]
    if todo:
        base = Path(tmp_path_factory.mktemp("keras_apps"))
        jobs = []
        for n in todo:
            d = base / f"{n}-{hashlib.sha1(_key(n, kwargs, seed).encode()).hexdigest()[:8]}"
            d.mkdir()
            jobs.append([n, kwargs, str(d), seed])
        _run(["apps-make", json.dumps(jobs)], {"KERAS_BACKEND": "torch"})
        for n, _, d, _ in jobs:
            _MADE[_key("app", n, kwargs, seed)] = Path(d)
    return {n: _MADE[_key("app", n, kwargs, seed)] for n in names}


def coverage_once(flavor: str, tmp_path_factory: Any) -> Path:
    """:func:`make_coverage` made once per session (the folder is shared: read it only)."""
    key = _key("coverage", flavor)
    if key not in _MADE:
        _MADE[key] = make_coverage(flavor, Path(tmp_path_factory.mktemp(f"cov_{flavor}")))
    return _MADE[key]


def selected(request: Any, param: str, values: list[str]) -> list[str]:
    """The ``values`` of parametrize argument ``param`` that this module's selected tests use (in
    ``values``' order): a module fixture builds what its tests will use, not more under ``-k``."""
    seen = {
        item.callspec.params[param]
        for item in request.session.items
        if getattr(item, "module", None) is request.module
        and param in getattr(getattr(item, "callspec", None), "params", {})
    }
    return [v for v in values if v in seen]


def tf_keras_predict_many(jobs: list[tuple[Path, Any]]) -> list[Any]:
    """tf-keras's output for each ``(model file, NHWC input)``, as
    :func:`converters.keras.subproc.tf_keras_predict` computes it, all in ONE subprocess."""
    import tempfile

    import numpy as np

    with tempfile.TemporaryDirectory() as td:
        triples = []
        for i, (model, x) in enumerate(jobs):
            xi, yo = Path(td) / f"x{i}.npy", Path(td) / f"y{i}.npy"
            np.save(xi, np.asarray(x, dtype=np.float32))
            triples.append([str(model), str(xi), str(yo)])
        _run(["predict-many", json.dumps(triples)], {"TF_USE_LEGACY_KERAS": "1"})
        return [np.load(yo) for _, _, yo in triples]


def make_coverage(flavor: str, out_dir: Path) -> Path:
    """The coverage models saved by tf-keras (``tf_keras``) or Keras 3 on TensorFlow (``keras3``)."""
    env = {"TF_USE_LEGACY_KERAS": "1"} if flavor == "tf_keras" else {"KERAS_BACKEND": "tensorflow"}
    _run(["coverage", flavor, str(out_dir)], env)
    return Path(out_dir)


# --- the subprocess side (imports Keras) -----------------------------------------------------


def app_make(name: str, kwargs: str, out_dir: str, seed: str) -> None:
    """Test fixture: keras.applications.NAME(weights=None) with every variable re-randomized
    (BN moving variance small and positive so epsilon matters, biases non-zero), saved in the
    legacy HDF5 weights layout, plus random inputs and Keras's own outputs on them."""
    import h5py
    import numpy as np
    from keras.src.legacy.saving import legacy_h5_format

    from converters.keras._worker import _app, keras_to_numpy

    model = _app(name, kwargs)
    rng = np.random.default_rng(int(seed))
    for layer in model.layers:
        names = {v.path.split("/")[-1] for v in layer.weights}
        # without gamma (scale=False, e.g. InceptionV3) a tiny variance would blow activations up
        var_range = (5e-4, 2e-3) if "gamma" in names or "moving_variance" not in names else (0.5, 1.5)
        for v in layer.weights:
            shape = tuple(v.shape)
            vname = v.path.split("/")[-1]
            if vname == "moving_variance" or vname == "variance":
                a = rng.uniform(*var_range, shape)
            elif vname == "moving_mean" or vname == "mean":
                a = rng.normal(0.0, 0.05, shape)
            elif vname == "gamma":
                a = rng.uniform(0.02, 0.05, shape)
            elif vname in ("beta", "bias"):
                a = rng.normal(0.0, 0.1, shape)
            elif vname == "count":
                continue
            else:  # kernels: variance-preserving scale
                fan_in = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
                if "depthwise" in vname:
                    fan_in = int(np.prod(shape[:2]))
                a = rng.normal(0.0, np.sqrt(1.0 / max(fan_in, 1)), shape)
            v.assign(a.astype("float32"))
    out = Path(out_dir)
    with h5py.File(out / "weights.h5", "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)
    (out / "config.json").write_text(model.to_json())
    shape = tuple(int(s) for s in model.inputs[0].shape[1:])
    x = rng.uniform(-1.0, 1.0, (2, *shape)).astype("float32")
    np.save(out / "x.npy", x)
    np.save(out / "y.npy", np.asarray(keras_to_numpy(model(x, training=False)), dtype=np.float32))


def apps_make(jobs: str) -> None:
    """:func:`app_make` for each ``[name, kwargs, out_dir, seed]`` of the JSON list, one process."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    for name, kwargs, out_dir, seed in json.loads(jobs):
        keras.backend.clear_session()  # layer-name counters from zero, as in a fresh process
        app_make(name, json.dumps(kwargs), out_dir, str(seed))


def predict_many(jobs: str) -> None:
    """The worker's ``predict MODEL IN_NPY OUT_NPY`` for each triple of the JSON list, one process."""
    from converters.keras._worker import _tf_keras, predict

    for model, in_npy, out_npy in json.loads(jobs):
        _tf_keras().backend.clear_session()
        predict(model, in_npy, out_npy)


def _coverage_models(keras, np):  # noqa: ANN001, ANN202
    """Test fixture: a Functional model touching every supported layer type (odd sizes so 'same'
    padding is asymmetric) and a small Sequential model."""
    L = keras.layers  # noqa: N806
    rng = np.random.default_rng(0)
    inp = keras.Input((33, 30, 3), name="image")
    x = L.Rescaling(1.0 / 127.5, offset=-1.0, name="rescale")(inp)
    norm = L.Normalization(axis=-1, name="norm")
    norm.adapt(rng.uniform(-1, 1, (16, 33, 30, 3)).astype("float32") * [1.0, 2.0, 0.5] + [0.1, -0.2, 0.3])
    x = norm(x)
    x = L.ZeroPadding2D(((1, 2), (0, 1)), name="zpad")(x)
    x = L.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="conv_s2")(x)
    a = L.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw")(x)
    a = L.BatchNormalization(epsilon=1e-3, momentum=0.9, name="bn_dw")(a)
    a = L.ReLU(max_value=6.0, name="relu6")(a)
    b = L.SeparableConv2D(16, 3, padding="same", name="sep")(x)
    b = L.BatchNormalization(name="bn_sep", center=False)(b)
    b = L.ReLU(negative_slope=0.1, name="leaky")(b)
    c = L.Conv2D(16, 3, dilation_rate=2, padding="same", activation="sigmoid", name="conv_dil")(x)
    d = L.DepthwiseConv2D(3, strides=2, padding="same", name="dw_s2")(x)
    x = L.Add(name="add")([a, b])
    x = L.Multiply(name="mul")([x, c])
    x = L.Concatenate(name="cat")([x, a])
    x = L.MaxPooling2D(3, strides=2, padding="same", name="maxpool")(x)
    x = L.Concatenate(name="cat2")([x, d, d])
    x = L.AveragePooling2D(3, strides=2, padding="same", name="avgpool")(x)
    x = L.Activation("tanh", name="tanh")(x)
    g1 = L.GlobalAveragePooling2D(name="gap")(x)
    g2 = L.GlobalMaxPooling2D(name="gmp")(x)
    px = L.Dense(8, activation="relu", name="dense_px")(x)  # Dense on an image: per pixel
    g3 = L.GlobalAveragePooling2D(name="gap_px")(px)
    y = L.Concatenate(name="cat_vec")([g1, g2, g3])
    y = L.Reshape((8, 13), name="reshape_seq")(y)
    y = L.Dense(6, name="dense_seq")(y)  # Dense on a sequence (rank 3)
    y = L.Reshape((2, 4, 6), name="reshape")(y)
    y = L.Flatten(name="flatten")(y)
    y = L.Dense(10, name="dense")(y)
    y = L.Dropout(0.5, name="drop")(y)
    out = L.Softmax(name="softmax")(y)
    func = keras.Model(inp, out, name="coverage")
    seq = keras.Sequential(
        [
            keras.Input((12, 12, 2)),
            L.Conv2D(4, 3, strides=2, padding="same", name="c1"),
            L.BatchNormalization(name="b1"),
            L.Activation("relu", name="r1"),
            L.MaxPooling2D(2, name="p1"),
            L.Flatten(name="f1"),
            L.Dense(5, activation="softmax", name="d1"),
        ],
        name="seq",
    )
    for m in (func, seq):
        for layer in m.layers:
            for v in layer.weights:
                vn = v.name.split("/")[-1].split(":")[0]
                if vn == "count" or layer.name == "norm":  # adapted statistics stay as adapted
                    continue
                shape = tuple(v.shape)
                if "variance" in vn:
                    a_ = rng.uniform(0.2, 2.0, shape)
                else:  # the classifier gets small weights so the softmax is not saturated
                    a_ = rng.normal(0.0, 0.2 if layer.name == "dense" else 0.5, shape)
                v.assign(a_.astype("float32"))
    return func, seq


def coverage(flavor: str, out_dir: str) -> None:
    """Save the coverage models with tf-keras (legacy .h5 full + weights-only) or Keras 3
    (.keras + .weights.h5 + config), with inputs and that Keras's outputs."""
    import numpy as np

    from converters.keras._worker import _tf_keras, keras_to_numpy

    out = Path(out_dir)
    if flavor == "tf_keras":
        keras = _tf_keras()
    else:  # Keras 3; the TensorFlow backend pools like TF ('same' averages exclude the padding)
        os.environ.setdefault("KERAS_BACKEND", "tensorflow")
        import keras
    func, seq = _coverage_models(keras, np)
    rng = np.random.default_rng(1)
    xf = rng.uniform(0, 255, (3, 33, 30, 3)).astype("float32")
    xs = rng.normal(0, 1, (3, 12, 12, 2)).astype("float32")
    np.save(out / "x_func.npy", xf)
    np.save(out / "x_seq.npy", xs)
    models = [("func", func, xf), ("seq", seq, xs)]
    if flavor == "tf_keras":  # a Lambda layer: only convertible to ONNX, and only when trusted
        inp = keras.Input((33, 30, 3))
        t = keras.layers.Conv2D(4, 3, name="c")(inp)
        t = keras.layers.Lambda(lambda v: v * 0.5 + 1.0, name="lam")(t)
        t = keras.layers.GlobalAveragePooling2D(name="g")(t)
        lam = keras.Model(inp, keras.layers.Dense(3, activation="softmax", name="d")(t))
        np.save(out / "x_lambda.npy", xf / 255.0)
        models.append(("lambda", lam, xf / 255.0))

    # transfer learning as people write it: a base model used as a layer (names clash)
    binp = keras.Input((33, 30, 3))
    t = keras.layers.Conv2D(6, 3, strides=2, padding="same", name="conv")(binp)
    t = keras.layers.BatchNormalization(name="bn")(t)
    t = keras.layers.ReLU(name="relu")(t)
    base = keras.Model(binp, keras.layers.DepthwiseConv2D(3, name="dense")(t), name="base")
    oinp = keras.Input((33, 30, 3), name="img")
    t = base(oinp)
    t = keras.layers.GlobalAveragePooling2D(name="gap")(t)
    nested = keras.Model(oinp, keras.layers.Dense(4, activation="softmax", name="dense")(t), name="outer")
    seq_nested = keras.Sequential(
        [
            keras.Input((33, 30, 3)),
            base,
            keras.layers.Flatten(name="flat"),
            keras.layers.Dense(3, activation="softmax", name="head"),
        ],
        name="seqn",
    )
    for m in (nested, seq_nested):
        for layer in m.layers:
            for v in layer.weights:
                if "variance" in v.name:
                    v.assign(rng.uniform(0.5, 1.5, tuple(v.shape)).astype("float32"))
                else:
                    v.assign(rng.normal(0.0, 0.3, tuple(v.shape)).astype("float32"))
    np.save(out / "x_nested.npy", xf / 255.0)
    np.save(out / "x_seq_nested.npy", xf / 255.0)
    models += [("nested", nested, xf / 255.0), ("seq_nested", seq_nested, xf / 255.0)]
    for name, m, x in models:
        y = m(x, training=False)
        np.save(out / f"y_{name}.npy", np.asarray(keras_to_numpy(y) if flavor != "tf_keras" else y.numpy()))
        (out / f"{name}.json").write_text(m.to_json())
        if flavor == "tf_keras":
            m.save(out / f"{name}.h5", save_format="h5")
            m.save_weights(str(out / f"{name}_weights.h5"), save_format="h5")
        else:
            m.save(out / f"{name}.keras")
            m.save_weights(out / f"{name}.weights.h5")


def main(argv: list[str]) -> int:
    cmd, args = argv[0], argv[1:]
    {"app-make": app_make, "apps-make": apps_make, "predict-many": predict_many, "coverage": coverage}[cmd](
        *args
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
