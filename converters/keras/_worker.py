"""Subprocess side of the Keras converter: the only code that imports TensorFlow / Keras.

Run as ``python -m converters.keras._worker COMMAND ...``; never imported by a process that has
torch loaded (importing TensorFlow beside torch segfaults). Commands:

- ``predict MODEL IN.npy OUT.npy``: tf-keras reference outputs (NHWC input).
- ``onnx MODEL OUT.onnx OPSET``: tf2onnx conversion from the tf-keras model (NHWC kept).
- ``app-config NAME KWARGS_JSON OUT.json``: a keras.applications config (KERAS_BACKEND=torch).
- ``app-predict NAME KWARGS_JSON WEIGHTS.h5 IN.npy OUT.npy``: keras.applications reference.
"""

from __future__ import annotations

import json
import os
import sys


def _tf_keras():  # noqa: ANN202
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")
    import tf_keras

    return tf_keras


def _load(path: str):  # noqa: ANN202
    keras = _tf_keras()
    return keras.models.load_model(path, compile=False)


def predict(model_path: str, in_npy: str, out_npy: str) -> None:
    import numpy as np

    model = _load(model_path)
    x = np.load(in_npy)
    y = model(x, training=False)
    ys = y if isinstance(y, (list, tuple)) else [y]
    np.save(out_npy, np.asarray(ys[0].numpy(), dtype=np.float32))


def to_onnx(model_path: str, out_path: str, opset: str) -> None:
    import tensorflow as tf
    import tf2onnx

    model = _load(model_path)
    spec = tuple(
        tf.TensorSpec((None, *t.shape[1:]), t.dtype, name=t.name.split(":")[0]) for t in model.inputs
    )
    tf2onnx.convert.from_keras(model, input_signature=spec, opset=int(opset), output_path=out_path)
    names = [t.name for t in spec]
    print(json.dumps({"inputs": names, "input_shapes": [list(t.shape[1:]) for t in model.inputs]}))


def _app(name: str, kwargs: str):  # noqa: ANN202
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    fn = getattr(keras.applications, name)
    return fn(weights=None, **json.loads(kwargs))


def app_config(name: str, kwargs: str, out_json: str) -> None:
    model = _app(name, kwargs)
    with open(out_json, "w") as fh:
        fh.write(model.to_json())


def app_predict(name: str, kwargs: str, weights: str, in_npy: str, out_npy: str) -> None:
    import h5py
    import numpy as np
    from keras.src.legacy.saving import legacy_h5_format

    model = _app(name, kwargs)
    with h5py.File(weights, "r") as f:
        legacy_h5_format.load_weights_from_hdf5_group(f, model)
    x = np.load(in_npy)
    y = model(x, training=False)
    np.save(out_npy, np.asarray(keras_to_numpy(y), dtype=np.float32))


def app_make(name: str, kwargs: str, out_dir: str, seed: str) -> None:
    """Test fixture: keras.applications.NAME(weights=None) with every variable re-randomized
    (BN moving variance small and positive so epsilon matters, biases non-zero), saved in the
    legacy HDF5 weights layout, plus random inputs and Keras's own outputs on them."""
    from pathlib import Path

    import h5py
    import numpy as np
    from keras.src.legacy.saving import legacy_h5_format

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


def keras_to_numpy(y):  # noqa: ANN001, ANN201
    import keras

    return keras.ops.convert_to_numpy(y)


def main(argv: list[str]) -> int:
    cmd, args = argv[0], argv[1:]
    fns = {
        "predict": predict,
        "onnx": to_onnx,
        "app-config": app_config,
        "app-predict": app_predict,
        "app-make": app_make,
    }
    fns[cmd](*args)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
