"""Read Keras files without Keras: legacy HDF5 (full model or weights only), Keras 3 ``.keras`` and
``.weights.h5``.

Only h5py and json are used; the stored model config is parsed by :mod:`converters.keras.graph`,
never by ``keras.models.load_model`` (which rejects real legacy files over version quirks).
"""

from __future__ import annotations

import json
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from converters import h5guard
from zoo.errors import ConversionError

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


@dataclass
class KerasSource:
    """A Keras model read from disk: its config (``{"class_name", "config"}``) and weights.

    ``weights`` maps a layer name to its variables in the layer's own order, each as
    ``(stored name, array)``; ``keras3_keys`` is True when the weights came from a Keras 3 store
    (keyed by class-derived paths, mapped back to layer names here).
    """

    path: Path
    fmt: str  # h5-full | h5-weights | keras3 | keras3-weights
    config: dict[str, Any] | None
    weights: dict[str, list[tuple[str, np.ndarray]]] = field(default_factory=dict)
    keras_version: str | None = None
    backend: str | None = None

    @property
    def keras_major(self) -> int:
        try:
            return int(str(self.keras_version).split(".")[0])
        except ValueError:
            return 3 if self.fmt.startswith("keras3") else 2


def _s(v: Any) -> str:
    return v.decode("utf8") if isinstance(v, (bytes, np.bytes_)) else str(v)


def _attr_json(attrs: Any, key: str) -> Any:
    raw = attrs.get(key)
    if raw is None:
        return None
    try:
        return json.loads(_s(raw))
    except (ValueError, TypeError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ConversionError(f"the {key!r} attribute is not valid JSON ({e})") from None


# what h5py, numpy and json raise for a damaged file or a malformed stored structure
_DAMAGED = (OSError, KeyError, RuntimeError, ValueError, TypeError, IndexError, AttributeError)


def is_hdf5(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(8)
    return head == HDF5_MAGIC


def _legacy_weights(group: Any, path: Path) -> dict[str, list[tuple[str, np.ndarray]]]:
    """Read the legacy ``layer_names`` / ``weight_names`` layout (with or without ``:0``)."""
    if "layer_names" not in group.attrs:
        raise ConversionError(f"{path.name}: HDF5 file holds no Keras weights (no 'layer_names')")
    out: dict[str, list[tuple[str, np.ndarray]]] = {}
    for lname in (_s(x) for x in group.attrs["layer_names"]):
        if lname not in group:
            raise ConversionError(f"{path.name}: layer {lname!r} listed in layer_names has no group")
        g = group[lname]
        names = [_s(x) for x in g.attrs.get("weight_names", [])]
        arrs = []
        for wn in names:
            if wn in g:
                ds = g[wn]
            elif wn.endswith(":0") and wn[:-2] in g:
                ds = g[wn[:-2]]
            elif wn + ":0" in g:
                ds = g[wn + ":0"]
            else:
                raise ConversionError(f"{path.name}: weight {wn!r} of layer {lname!r} is missing")
            arrs.append((wn, np.asarray(ds[()])))
        out[lname] = arrs
    return out


def _keras3_store(h5: Any) -> dict[str, list[np.ndarray]]:
    """Read a Keras 3 weights store: ``<path>/vars/<i>`` groups, keyed by the path."""
    out: dict[str, list[np.ndarray]] = {}

    def visit(name: str, obj: Any) -> None:
        if name.endswith("/vars") or name == "vars":
            keys = sorted(obj.keys(), key=int)
            out[name[: -len("/vars")] if name != "vars" else ""] = [np.asarray(obj[k][()]) for k in keys]

    h5.visititems(lambda n, o: visit(n, o) if hasattr(o, "keys") else None)
    return out


def snake_case(name: str) -> str:
    """Keras 3's ``naming.to_snake_case`` (used for weight-store paths)."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def keras3_layer_paths(config: dict[str, Any]) -> dict[str, str]:
    """Layer name -> Keras 3 store path (``layers/<snake class>[_<n>]``) for a flat model config."""
    cls = config.get("class_name")
    layers = config["config"]["layers"] if isinstance(config.get("config"), dict) else config["config"]
    if cls == "Sequential" and layers and layers[0].get("class_name") == "InputLayer":
        layers = layers[1:]
    used: dict[str, int] = {}
    paths: dict[str, str] = {}
    for layer in layers:
        base = snake_case(layer["class_name"])
        if base in used:
            used[base] += 1
            key = f"{base}_{used[base]}"
        else:
            used[base] = 0
            key = base
        paths[layer_name(layer)] = f"layers/{key}"
    return paths


def layer_name(layer: dict[str, Any]) -> str:
    return layer.get("name") or layer["config"]["name"]


def _keras3_collect(
    store: dict[str, list[np.ndarray]], config: dict[str, Any], prefix: str
) -> dict[str, list[tuple[str, np.ndarray]]]:
    """Layer name -> its variables for one (possibly nested) model in a Keras 3 store. A nested
    model's entry holds its layers' variables named ``<inner layer>/vars/<i>`` (the legacy
    HDF5 shape, so both formats inline the same way)."""
    cls = config.get("class_name")
    inner = config.get("config")
    layers = inner["layers"] if isinstance(inner, dict) else inner
    if cls == "Sequential" and layers and layers[0].get("class_name") == "InputLayer":
        layers = layers[1:]
    out: dict[str, list[tuple[str, np.ndarray]]] = {}
    for layer in layers:
        lname = layer_name(layer)
        p = prefix + keras3_layer_paths(config)[lname]
        if layer["class_name"] in ("Functional", "Model", "Sequential"):
            sub = _keras3_collect(store, layer, p + "/")
            group = [
                (f"{n}/{stored.rsplit('/', 2)[-2]}/{stored.rsplit('/', 1)[-1]}", a)
                for n, ws in sub.items()
                for stored, a in ws
            ]
            if group:
                out[lname] = group
            continue
        if p in store:
            out[lname] = [(f"{p}/vars/{i}", a) for i, a in enumerate(store[p])]
        deeper = [k for k in store if k.startswith(p + "/")]
        if deeper:
            raise ConversionError(f"layer {lname!r} holds sub-layers ({deeper[0]}); not supported")
    return out


def _keras3_weights(h5: Any, config: dict[str, Any], path: Path) -> dict[str, list[tuple[str, np.ndarray]]]:
    store = _keras3_store(h5)
    if not store:
        raise ConversionError(f"{path.name}: the Keras 3 weights store holds no variables")
    try:
        return _keras3_collect(store, config, "")
    except ConversionError as e:
        raise ConversionError(f"{path.name}: {e}") from None


APP_SPEC_PREFIXES = ("keras.applications:", "keras:")


def is_keras_app_spec(text: Any) -> bool:
    """True when ``text`` is a ``keras.applications:NAME?k=v&...`` spec string."""
    return isinstance(text, str) and text.startswith(APP_SPEC_PREFIXES)


def parse_keras_app_spec(text: str) -> tuple[str, dict[str, Any]]:
    """``keras.applications:NAME?k=v&...`` (or ``keras:NAME...``) -> ``(NAME, kwargs)``, read by
    the one architecture parser (:func:`zoo.arch.parse`); the inverse is :func:`format_keras_app_spec`."""
    from zoo.arch import ArchitectureError, parse

    if not is_keras_app_spec(text):
        raise ConversionError(f"{text!r} is not a keras.applications:NAME[?k=v&...] spec")
    spec = "keras.applications:" + text.split(":", 1)[1]
    try:
        a = parse(spec)
    except ArchitectureError as e:
        raise ConversionError(str(e)) from None
    if not a.name.isidentifier():
        raise ConversionError(f"{text!r}: {a.name!r} is not a keras.applications builder name")
    if any(not k.isidentifier() for k in a.kwargs):
        raise ConversionError(f"{text!r}: a key is not an identifier")
    return a.name, dict(a.kwargs)


def format_keras_app_spec(name: str, kwargs: dict[str, Any] | None = None) -> str:
    """``(NAME, kwargs)`` -> ``keras.applications:NAME?k=v&...`` (:attr:`zoo.arch.Architecture.spec`)."""
    from zoo.arch import Architecture

    return Architecture("keras.applications", name, kwargs or {}).spec


def app_spec(arch: Any) -> tuple[str, dict[str, Any]] | None:
    """``(NAME, kwargs)`` when ``arch`` names a keras.applications builder, else None. Accepts
    a spec string (:func:`parse_keras_app_spec`), ``keras.applications.NAME`` and a registry
    card's architecture ``{"builder": "keras.applications.NAME", "kwargs": {...}}``."""
    from zoo.arch import Architecture

    if isinstance(arch, Architecture) or (isinstance(arch, dict) and "kind" in arch):
        a = arch if isinstance(arch, Architecture) else Architecture.from_dict(arch)
        return (a.name, dict(a.kwargs)) if a.kind == "keras.applications" else None
    if isinstance(arch, dict):
        b = arch.get("builder")
        if isinstance(b, str) and b.startswith("keras.applications."):
            return b.rsplit(".", 1)[-1], dict(arch.get("kwargs") or {})
        return None
    if not isinstance(arch, str):
        return None
    if is_keras_app_spec(arch):
        return parse_keras_app_spec(arch)
    if arch.startswith("keras.applications.") and not Path(arch).exists():
        return arch.rsplit(".", 1)[-1], {}
    return None


def _load_arch(arch: str | Path | dict[str, Any] | None, path: Path) -> dict[str, Any] | None:
    """An architecture for a weights-only file: a Keras model config (dict or JSON file) or a
    keras.applications builder (see :func:`app_spec`; its config comes from Keras 3 on the torch
    backend in a subprocess)."""
    if arch is None:
        return None
    spec = app_spec(arch if not isinstance(arch, Path) else str(arch))
    if spec is not None:
        from converters.keras.subproc import keras_app_config

        return keras_app_config(*spec)
    if isinstance(arch, dict):
        if "class_name" in arch and isinstance(arch.get("config"), (dict, list)):
            return arch
        return None  # a registry card's descriptive record (e.g. "config": "model_config attribute")
    s = str(arch)
    p = Path(s)
    if p.is_file():
        try:
            return json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise ConversionError(f"{p.name}: architecture file is not JSON ({e.msg})") from None
    raise ConversionError(f"unknown architecture {s!r} (give a config JSON file or keras.applications:NAME)")


def read_keras(path: str | Path, arch: str | Path | dict[str, Any] | None = None) -> KerasSource:
    """Read any supported Keras file into a :class:`KerasSource` (config + weights by layer).

    A damaged or malformed file raises ConversionError naming it, whatever h5py, json or numpy
    raised underneath."""
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"{path}: no such file")
    arch_cfg = _load_arch(arch, path)
    try:
        return h5guard.call(_read_keras, path, arch_cfg, path=path)  # libhdf5 can hang on damage
    except ConversionError as e:
        msg = str(e)
        raise ConversionError(msg if msg.startswith(path.name) else f"{path.name}: {msg}") from None
    except _DAMAGED + (zipfile.BadZipFile,) as e:
        raise ConversionError(
            f"{path.name}: damaged or malformed Keras file ({type(e).__name__}: {str(e)[:200]})"
        ) from None


def is_full_model(path: str | Path) -> bool:
    """Does ``path`` hold a whole model (a ``.keras`` archive, or HDF5 with ``model_config``)?
    Read in the HDF5 worker; an unreadable file is not one."""
    path = Path(path)
    if path.suffix == ".keras":
        return True
    try:
        return bool(h5guard.call(_has_model_config, path, path=path))
    except (ConversionError, OSError):
        return False


def _has_model_config(path: Path) -> bool:
    import h5py

    try:
        with h5py.File(path, "r") as h5:
            return "model_config" in h5.attrs
    except _DAMAGED:
        return False


def _read_keras(path: Path, arch_cfg: dict[str, Any] | None) -> KerasSource:
    import h5py

    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            if "config.json" not in names or "model.weights.h5" not in names:
                raise ConversionError(f"{path.name}: zip file is not a Keras 3 .keras archive")
            config = arch_cfg or json.loads(zf.read("config.json"))
            meta = json.loads(zf.read("metadata.json")) if "metadata.json" in names else {}
            import io

            with h5py.File(io.BytesIO(zf.read("model.weights.h5")), "r") as h5:
                weights = _keras3_weights(h5, config, path)
        return KerasSource(path, "keras3", config, weights, meta.get("keras_version"), "keras3")
    if not is_hdf5(path):
        raise ConversionError(f"{path.name}: not an HDF5 file or a .keras archive")
    try:
        h5 = h5py.File(path, "r")
    except OSError as e:
        raise ConversionError(f"{path.name}: unreadable HDF5 file ({e})") from None
    with h5:
        version = _s(h5.attrs["keras_version"]) if "keras_version" in h5.attrs else None
        backend = _s(h5.attrs["backend"]) if "backend" in h5.attrs else None
        if "model_config" in h5.attrs:
            config = arch_cfg or _attr_json(h5.attrs, "model_config")
            if "model_weights" not in h5:
                raise ConversionError(
                    f"{path.name}: HDF5 model file holds no weights ('model_weights' missing)"
                )
            weights = _legacy_weights(h5["model_weights"], path)
            return KerasSource(path, "h5-full", config, weights, version, backend)
        if "layer_names" in h5.attrs:
            return KerasSource(path, "h5-weights", arch_cfg, _legacy_weights(h5, path), version, backend)
        if "layers" in h5 or "vars" in h5:
            if arch_cfg is None:
                raise ConversionError(
                    f"{path.name}: Keras 3 weights file without architecture (pass arch=config JSON "
                    "or keras.applications:NAME)"
                )
            return KerasSource(
                path, "keras3-weights", arch_cfg, _keras3_weights(h5, arch_cfg, path), "3", None
            )
        raise ConversionError(
            f"{path.name}: HDF5 file holds no Keras weights (no model_config, layer_names or layers)"
        )
