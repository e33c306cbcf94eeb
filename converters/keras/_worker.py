"""Subprocess side of the Keras converter: the only code that imports TensorFlow / Keras.

Run as ``python -m converters.keras._worker COMMAND ...``; never imported by a process that has
torch loaded (importing TensorFlow beside torch segfaults). Commands:

- ``predict MODEL IN.npy OUT.npy``: tf-keras reference outputs (NHWC input).
- ``onnx MODEL OUT.onnx OPSET``: tf2onnx conversion from the tf-keras model (NHWC kept).
- ``app-config NAME KWARGS_JSON OUT.json``: a keras.applications config (KERAS_BACKEND=torch).
- ``app-predict NAME KWARGS_JSON WEIGHTS.h5 IN.npy OUT.npy``: keras.applications reference.
- ``reference MODEL ARCH OUT.npz LAYERS IN.npy...``: the source Keras's outputs (``verify``).

Test fixtures (models built and saved by Keras) live in ``tests/keras_fixtures.py``, not here.
"""

from __future__ import annotations

import json
import os
import sys

from converters.keras.reader import is_keras_app_spec, parse_keras_app_spec


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


def _tf_keras_model(model_path: str, arch: str):  # noqa: ANN202
    """A tf-keras model: the full legacy file, or an architecture plus a legacy weights file."""
    if not arch:
        return _load(model_path)
    keras = _tf_keras()
    if is_keras_app_spec(arch):
        name, kwargs = parse_keras_app_spec(arch)
        model = getattr(keras.applications, name)(weights=None, **kwargs)
    else:
        with open(arch) as fh:
            model = keras.models.model_from_json(fh.read())
    model.load_weights(model_path)
    return model


def to_onnx(model_path: str, out_path: str, opset: str, arch: str = "") -> None:
    """tf2onnx from a tf-keras model (legacy files), or Keras 3's own ONNX export for .keras."""
    if model_path.endswith(".keras") and not arch:
        os.environ["KERAS_BACKEND"] = "tensorflow"
        import keras
        import tensorflow as tf
        import tf2onnx

        model = keras.saving.load_model(model_path, compile=False)
        spec = [
            tf.TensorSpec((None, *t.shape[1:]), tf.float32, name=t.name.split(":")[0]) for t in model.inputs
        ]

        @tf.function(input_signature=spec)
        def fn(*xs):  # noqa: ANN002, ANN202
            for layer in model.layers:  # Normalization caches its statistics as eager tensors:
                if type(layer).__name__ == "Normalization" and getattr(layer, "adapt_mean", None) is not None:
                    shape = layer._broadcast_shape  # re-read them from the variables (frozen)
                    layer.mean = tf.reshape(tf.convert_to_tensor(layer.adapt_mean), shape)
                    layer.variance = tf.reshape(tf.convert_to_tensor(layer.adapt_variance), shape)
            return model(list(xs) if len(xs) > 1 else xs[0], training=False)

        tf2onnx.convert.from_function(fn, input_signature=spec, opset=int(opset), output_path=out_path)
        print(
            json.dumps(
                {"inputs": [t.name for t in spec], "exporter": "tf2onnx (Keras 3, TensorFlow backend)"}
            )
        )
        return
    import tensorflow as tf
    import tf2onnx

    model = _tf_keras_model(model_path, arch)
    spec = tuple(
        tf.TensorSpec((None, *t.shape[1:]), t.dtype, name=t.name.split(":")[0]) for t in model.inputs
    )
    tf2onnx.convert.from_keras(model, input_signature=spec, opset=int(opset), output_path=out_path)
    names = [t.name for t in spec]
    print(
        json.dumps(
            {
                "inputs": names,
                "input_shapes": [list(t.shape[1:]) for t in model.inputs],
                "exporter": "tf2onnx (tf-keras)",
            }
        )
    )


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


def _keras3_model(model_path: str, arch: str):  # noqa: ANN202
    os.environ["KERAS_BACKEND"] = "tensorflow"
    import keras

    if model_path.endswith(".keras") and not arch:
        return keras.saving.load_model(model_path, compile=False)
    if is_keras_app_spec(arch):
        name, kwargs = parse_keras_app_spec(arch)
        model = getattr(keras.applications, name)(weights=None, **kwargs)
    else:
        with open(arch) as fh:
            model = keras.models.model_from_json(fh.read())
    if model_path.endswith(".weights.h5"):
        model.load_weights(model_path)
    else:
        import h5py
        from keras.src.legacy.saving import legacy_h5_format

        with h5py.File(model_path, "r") as f:
            legacy_h5_format.load_weights_from_hdf5_group(f.get("model_weights", f), model)
    return model


def reference(model_path: str, arch: str, out_npz: str, layers: str, *ins: str) -> None:
    """The source framework's outputs (and every layer's, when ``layers`` is "1")."""
    import numpy as np

    xs = [np.load(i) for i in ins]
    keras3 = model_path.endswith((".keras", ".weights.h5"))
    model = None
    if not keras3:
        try:
            model = _tf_keras_model(model_path, arch)
            keras = _tf_keras()
            label = f"tf-keras {keras.__version__}"
        except Exception:  # noqa: BLE001  (a Keras 3 config: fall back to Keras 3 on TensorFlow)
            if not arch:
                raise
    if model is None:
        model = _keras3_model(model_path, arch)
        import keras

        label = f"Keras {keras.__version__} (TensorFlow backend)"
    feed = xs if len(xs) > 1 else xs[0]
    outs = model(feed, training=False)
    outs = list(outs) if isinstance(outs, (list, tuple)) else [outs]
    arrays = {f"__out{i}": np.asarray(o) for i, o in enumerate(outs)}
    if layers == "1":
        import keras as k3  # noqa: F401  (only to pick the right Model class below)

        kmod = _tf_keras() if "tf-keras" in label else k3
        inner = [la for la in model.layers if type(la).__name__ != "InputLayer"]
        sub = kmod.Model(model.inputs, [la.output for la in inner])
        for la, o in zip(inner, sub(feed, training=False), strict=True):
            arrays[la.name] = np.asarray(o)
    meta = {"label": label, "outputs": [f"__out{i}" for i in range(len(outs))]}
    np.savez(out_npz, __meta__=np.array(json.dumps(meta)), **arrays)


def main(argv: list[str]) -> int:
    cmd, args = argv[0], argv[1:]
    fns = {
        "predict": predict,
        "onnx": to_onnx,
        "app-config": app_config,
        "app-predict": app_predict,
        "reference": reference,
    }
    fns[cmd](*args)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
