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


def keras_to_numpy(y):  # noqa: ANN001, ANN201
    import keras

    return keras.ops.convert_to_numpy(y)


def main(argv: list[str]) -> int:
    cmd, args = argv[0], argv[1:]
    fns = {"predict": predict, "onnx": to_onnx, "app-config": app_config, "app-predict": app_predict}
    fns[cmd](*args)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
