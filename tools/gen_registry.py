#!/usr/bin/env python
"""Generate ``registry.json`` from the installed libraries' own metadata (plus curated cards).

Sections, each read from a source that can be named:

* torchvision: every classification weight enum member the installed torchvision publishes
  (URL, the sha256 prefix torch.hub checks in the file name, num_params, acc@1/acc@5, GFLOPS,
  the transforms' resize/crop/mean/std, the category list).
* Keras Applications: every application constructor and weight file the installed keras knows,
  recorded by intercepting ``keras.src.utils.file_utils.get_file`` (URL, file name and the hash keras
  checks); preprocessing read from each module's own ``preprocess_input`` and checked numerically;
  accuracy from the Keras docs table (``registry_sources/keras_docs_table.json``).
* timm on the Hugging Face hub: the installed timm's pretrained configs for the VGG, ResNet,
  Inception, MobileNet, DenseNet and EfficientNet families that are ImageNet-1k classifiers hosted
  under ``timm/``; top-1/top-5 from timm's results CSV (``registry_sources/timm_results_imagenet.csv``).
* TF-slim: the slim classification checkpoints (archive URL + checkpoint members, top-1/top-5
  from tensorflow/models research/slim/README.md at a pinned commit, slim's per-family
  preprocessing) and TensorFlow's frozen Inception v3 graph of the retraining tutorial
  (``registry_sources/tf_slim.json``); no checksums are published, so every file pins on first use.
* curated: every ``registry_sources/curated/*.json`` (a JSON list of card dicts), copied verbatim.

The output is deterministic (sorted ids, no timestamps): running the script twice gives the same
bytes. Run with ``.venv/bin/python tools/gen_registry.py`` (``--out PATH`` to write elsewhere,
``--check`` to compare with the existing file). TensorFlow is never imported (Keras runs on torch).
"""

from __future__ import annotations

import argparse
import csv
import importlib
import inspect
import json
import math
import os
import pkgutil
import re
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

os.environ["KERAS_BACKEND"] = "torch"  # before keras is imported anywhere in this process
warnings.filterwarnings("ignore")  # library deprecation chatter; the output is the JSON file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from converters.tf._worker import SLIM_NETS  # noqa: E402  (names only; TensorFlow is not imported)
from zoo.arch import Architecture  # noqa: E402
from zoo.cards import Checksum, FileRef, Metric, ModelCard, Preprocess  # noqa: E402

SOURCES = ROOT / "tools" / "registry_sources"
CURATED_DIR = SOURCES / "curated"
KERAS_TABLE = SOURCES / "keras_docs_table.json"
TIMM_RESULTS = SOURCES / "timm_results_imagenet.csv"
TF_SLIM = SOURCES / "tf_slim.json"
LABELS_DIR = ROOT / "zoo" / "data" / "labels"
SCHEMA = ROOT / "zoo" / "data" / "registry.schema.json"
DEFAULT_OUT = ROOT / "registry.json"

IMAGENET = "imagenet-1k"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)

# Family names, longest first so "inception_resnet" wins over "inception".
FAMILIES = (
    "inception_resnet",
    "inceptionresnet",
    "inception_next",
    "inception",
    "efficientnetv2",
    "efficientnet_v2",
    "efficientnet",
    "mobilenet",
    "densenet",
    "wide_resnet",
    "resnext",
    "resnetv2",
    "resnet",
    "vgg",
    "convnext",
    "regnet",
    "shufflenet",
    "squeezenet",
    "mnasnet",
    "alexnet",
    "googlenet",
    "vit",
    "swin",
    "maxvit",
    "nasnet",
    "xception",
)


def family_of(name: str) -> str:
    """The model family of an architecture name (``tf_`` prefixes ignored)."""
    n = name.lower()
    n = n[3:] if n.startswith("tf_") else n
    for fam in FAMILIES:
        if n.startswith(fam):
            return fam.replace("_", "") if fam in ("efficientnet_v2", "inception_resnet") else fam
    m = re.match(r"[a-z]+", n)
    return m.group(0) if m else n


# Architectures built for phones and edge devices, by (lower-case, ``tf_``-less) name prefix: MobileNet
# v1-v4 (and MobileNet-EdgeTPU), MnasNet, ShuffleNet, SqueezeNet, GhostNet, MobileViT, LCNet, MobileOne,
# FBNet, EfficientNet-Lite, EfficientNet-B0, EfficientNet-EdgeTPU-S and Keras's NASNetMobile.
MOBILE_PREFIXES = (
    "mobilenet",
    "mnasnet",
    "semnasnet",
    "shufflenet",
    "squeezenet",
    "ghostnet",
    "mobilevit",
    "lcnet",
    "mobileone",
    "fbnet",
    "efficientnet_lite",
    "efficientnet_b0",
    "efficientnetb0",
    "efficientnet_es",
    "nasnetmobile",
)


def is_mobile(name: str) -> bool:
    """Whether an architecture name is of a mobile-class family (gets the ``mobile`` tag)."""
    n = name.lower()
    n = n[3:] if n.startswith("tf_") else n
    return n.startswith(MOBILE_PREFIXES)


def _skip_module(mod: Any) -> bool:
    """Modules that carry no features of their own (dropout, flatten, identity)."""
    import torch.nn as nn

    return isinstance(mod, (nn.Dropout, nn.Flatten, nn.Identity))


def cut_before(model: Any, classifier: str) -> str | None:
    """Name of the module that feeds ``classifier`` (a dotted path), skipping dropout/flatten.

    Looks at the siblings registered before the classifier in its parent; when there are none,
    moves one level up and repeats.
    """
    path = classifier.split(".")
    while path:
        parent_path, last = path[:-1], path[-1]
        parent = model.get_submodule(".".join(parent_path)) if parent_path else model
        names = [n for n, _ in parent.named_children()]
        if last in names:
            for n in reversed(names[: names.index(last)]):
                if not _skip_module(getattr(parent, n)):
                    return ".".join([*parent_path, n])
        path = parent_path
    return None


def last_layer(model: Any, path: str) -> str:
    """The dotted path of the last Linear / Conv2d inside ``path`` (the classifier proper)."""
    import torch.nn as nn

    found = path
    for name, mod in model.get_submodule(path).named_modules():
        if isinstance(mod, (nn.Linear, nn.Conv2d)):
            found = f"{path}.{name}" if name else path
    return found


def _structure_only(build: Callable[[], Any]) -> Any:
    """Build a torch module for its structure and parameter count only: on the meta device
    (no memory, no init), or on the CPU with weight init skipped where meta tensors fail."""
    import torch
    import torch.nn.init as init

    try:
        with torch.device("meta"):
            return build()
    except (NotImplementedError, RuntimeError):
        pass
    saved = {}
    for fname in dir(init):
        f = getattr(init, fname)
        if fname.endswith("_") and not fname.startswith("_") and callable(f):
            saved[fname] = f
            setattr(init, fname, lambda t, *a, **k: t)
    try:
        with torch.no_grad():
            return build()
    finally:
        for fname, f in saved.items():
            setattr(init, fname, f)


def _write_labels(set_name: str, names: list[str], labels_dir: Path) -> None:
    """Write a label list once; refuse to overwrite a different list under the same name."""
    path = labels_dir / f"{set_name}.json"
    text = json.dumps(names, indent=1, ensure_ascii=False) + "\n"
    if path.exists():
        existing = json.loads(path.read_text(encoding="utf-8"))
        if existing != names:
            raise SystemExit(f"{path} exists with a different label list; not overwriting")
        return
    labels_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


# --------------------------------------------------------------------------------------------
# torchvision
# --------------------------------------------------------------------------------------------

TV_CLASSIFIER_ATTRS = ("fc", "classifier", "heads", "head")


def torchvision_cards(labels_dir: Path) -> Iterator[ModelCard]:
    """One card per classification weight enum member of the installed torchvision."""
    import torch
    import torch.hub
    import torchvision
    import torchvision.models as tvm

    version = torchvision.__version__.split("+")[0]
    categories: list[str] | None = None
    for name in tvm.list_models(module=tvm):
        model = _structure_only(lambda n=name: tvm.get_model(n, weights=None))
        cut = head = None
        for attr in TV_CLASSIFIER_ATTRS:
            if attr in dict(model.named_children()):
                cut = cut_before(model, attr)
                head = last_layer(model, attr)
                break
        enum = tvm.get_model_weights(name)
        for w in enum:  # iteration skips aliases such as DEFAULT
            meta = w.meta
            metrics_src = meta.get("_metrics", {})
            ((ds_key, accs),) = metrics_src.items()
            dataset = ds_key.lower()
            cats = list(meta["categories"] or [])
            if cats and dataset == IMAGENET:
                if categories is None:
                    categories = cats
                    _write_labels(IMAGENET, cats, labels_dir)
                elif cats != categories:
                    raise SystemExit(f"{name}.{w.name}: categories differ from the other ImageNet weights")
            fname = w.url.rsplit("/", 1)[-1]
            m = torch.hub.HASH_REGEX.search(fname)
            if m and m.group(1):
                checksum = Checksum(
                    "sha256-prefix", m.group(1), "torchvision file name (torch.hub HASH_REGEX)"
                )
                pin = None
            else:
                checksum = Checksum(None, source="torchvision publishes no hash for this file")
                pin = "first-use"
            t = w.transforms()
            pre = Preprocess(
                layout="NCHW",
                channel_order="RGB",
                scale=1.0 / 255.0,
                mean=tuple(float(x) for x in t.mean),
                std=tuple(float(x) for x in t.std),
                input_size=(3, int(t.crop_size[0]), int(t.crop_size[0])),
                resize=int(t.resize_size[0]),
                crop=int(t.crop_size[0]),
                interpolation=t.interpolation.value,
                note="torchvision ImageClassification transforms: resize shorter side, center crop",
            )
            src = f"torchvision {version} {type(w).__name__}.{w.name}.meta['_metrics']"
            # torchvision measures its metrics with the weights' own transforms.
            crop, resize = int(t.crop_size[0]), int(t.resize_size[0])
            metrics = tuple(
                Metric(key, float(accs[k]), dataset, src, resolution=crop, crop_pct=crop / resize)
                for k, key in (("acc@1", "top1"), ("acc@5", "top5"))
                if k in accs and not math.isnan(accs[k])
            )
            # Weights without categories (VGG16 IMAGENET1K_FEATURES) are feature extractors only.
            classifier_ok = bool(cats)
            fam = family_of(name)
            lic_url = meta.get("license")
            docs = " ".join(str(meta.get("_docs", "")).split())
            docs = re.sub(r"`([^`<]*?)\s*<([^>]+)>`_", r"\1 (\2)", docs).replace("`", "")
            notes = (
                (docs + " " if docs else "")
                + f"File size {meta['_file_size']} MB per torchvision's metadata. Code licence BSD-3-Clause"
                " (torchvision); the weights may also carry the training data set's terms."
            )
            if lic_url:
                notes += f" These weights name their own licence: {lic_url}."
            tags = [fam, "imagenet", "torchvision", "classification", w.name.lower()]
            if "_bn" in name:
                tags.append("batchnorm")
            if is_mobile(name):
                tags.append("mobile")
            yield ModelCard(
                id=f"torchvision/{name}.{w.name.lower()}",
                name=f"{name} ({w.name})",
                source="torchvision",
                framework="pytorch",
                format="pth",
                task="image-classification" if classifier_ok else "feature-extraction",
                dataset=dataset,
                family=fam,
                origin="native",
                provenance={
                    "publisher": "PyTorch (torchvision)",
                    "page": meta.get("recipe", "https://pytorch.org/vision/stable/models.html"),
                    "generated_from": f"torchvision {version} models API",
                },
                labels={"set": dataset, "count": len(cats)} if classifier_ok else None,
                files=(FileRef(name=fname, urls=(w.url,), checksum=checksum, role="weights", pin=pin),),
                architecture=Architecture(
                    "torchvision",
                    name,
                    details={
                        "weights": f"{type(w).__name__}.{w.name}",
                        "min_size": list(meta.get("min_size", ())),
                    },
                ),
                preprocess=pre,
                metrics=metrics,
                params=int(meta["num_params"]),
                gflops=float(meta["_ops"]) if "_ops" in meta else None,
                license=f"see {lic_url}" if lic_url else "BSD-3-Clause",
                tags=tuple(tags),
                default_cut=cut if classifier_ok else "features",
                classifier=head if classifier_ok else None,
                num_classes=len(cats) if classifier_ok else None,
                notes=notes,
            )


# --------------------------------------------------------------------------------------------
# Keras Applications
# --------------------------------------------------------------------------------------------


class _GetFileCalled(Exception):
    """Raised by the get_file stand-in once the URL and hash are recorded."""

    def __init__(self, record: dict[str, Any], model: Any) -> None:
        super().__init__(record.get("origin"))
        self.record = record
        self.model = model


def _fake_get_file(
    fname: str | None = None,
    origin: str | None = None,
    untar: bool = False,
    md5_hash: str | None = None,
    file_hash: str | None = None,
    cache_subdir: str = "datasets",
    hash_algorithm: str = "auto",
    **_: Any,
) -> str:
    """Record what keras would download and check, then stop the constructor."""
    from keras.src.utils import file_utils

    if md5_hash is not None and file_hash is None:  # keras's own deprecated alias
        file_hash, hash_algorithm = md5_hash, "md5"
    algo = file_utils.resolve_hasher(hash_algorithm, file_hash).name if file_hash else None
    record = {"fname": fname, "origin": origin, "file_hash": file_hash, "algo": algo}
    caller = inspect.currentframe().f_back  # the application function: its `model` is built
    model = caller.f_locals.get("model") if caller is not None else None
    raise _GetFileCalled(record, model)


def _patch_keras_get_file() -> dict[str, Any]:
    """Point every keras.applications module's ``file_utils.get_file`` at the recorder."""
    import keras.src.applications as apps
    from keras.src.utils import file_utils

    mods: dict[str, Any] = {}
    for info in pkgutil.iter_modules(apps.__path__):
        if info.name.endswith("_test"):
            continue
        mod = importlib.import_module(f"keras.src.applications.{info.name}")
        mods[info.name] = mod
        if getattr(mod, "get_file", None) is not None:
            mod.get_file = _fake_get_file
    file_utils.get_file = _fake_get_file
    return mods


class _BackendShim:
    """Stands in for ``keras.src.backend`` inside one application module, naming another backend.

    NASNetMobile refuses to run on the torch backend (a known keras bug in *running* it); building
    it only to read its weight URL and parameter count is unaffected.
    """

    def __init__(self, real: Any) -> None:
        self._real = real

    def backend(self) -> str:
        return "jax"

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def _fast_keras_init() -> None:
    """Make keras's random initializers return uninitialized tensors: only structure, URLs and
    counts are needed, never the values (``torch.empty`` leaves big kernels untouched, where
    filling them with zeros cost more than building the layers)."""
    import torch
    from keras.src.backend.torch import random as krandom
    from keras.src.backend.torch.core import to_torch_dtype

    def empty(shape: Any, *a: Any, dtype: Any = None, **k: Any) -> Any:
        return torch.empty(tuple(shape), dtype=to_torch_dtype(dtype or "float32"))

    for fname in ("normal", "uniform", "truncated_normal"):
        setattr(krandom, fname, empty)


def _clear_keras_session() -> None:
    """Reset keras's global state (automatic layer-name counters: stable names) without the
    full ``gc.collect()`` keras runs by default, which cost more than a third of the whole run;
    Python's own collector still frees the dropped models."""
    import keras

    keras.backend.clear_session(free_memory=False)


def _keras_call(fn: Callable[..., Any], **kw: Any) -> tuple[dict[str, Any] | None, Any]:
    """Run an application constructor until it asks for its weights file."""
    mod = sys.modules[fn.__module__]
    real_backend = getattr(mod, "backend", None)
    if real_backend is not None and "torch backend" in (inspect.getsource(fn)):
        mod.backend = _BackendShim(real_backend)
    _clear_keras_session()
    try:
        model = fn(weights="imagenet", **kw)
    except _GetFileCalled as stop:
        return stop.record, stop.model
    except ValueError:
        return None, None  # the constructor refuses this combination with imagenet weights
    finally:
        if real_backend is not None:
            mod.backend = real_backend
    return None, model


def _keras_preprocess(mod: Any, input_size: tuple[int, ...]) -> Preprocess:
    """Expand a module's ``preprocess_input`` into explicit numbers and check them numerically."""
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, size=(2, 5, 5, 3)).astype("float32")
    y = np.asarray(mod.preprocess_input(x.copy()))
    candidates = {
        "caffe": Preprocess("NHWC", "BGR", 1.0, CAFFE_MEAN_BGR, None, input_size, mode="caffe"),
        "tf": Preprocess("NHWC", "RGB", 1.0 / 127.5, (1.0, 1.0, 1.0), (1.0, 1.0, 1.0), input_size, mode="tf"),
        "torch": Preprocess(
            "NHWC", "RGB", 1.0 / 255.0, IMAGENET_MEAN, IMAGENET_STD, input_size, mode="torch"
        ),
        "none": Preprocess(
            "NHWC",
            "RGB",
            1.0,
            None,
            None,
            input_size,
            mode="none",
            note="rescaling/normalization is part of the model graph: feed 0-255 RGB "
            "(the module's preprocess_input is a pass-through)",
        ),
    }
    for pre in candidates.values():
        z = x[..., ::-1] if pre.channel_order == "BGR" else x
        z = z * pre.scale
        if pre.mean is not None:
            z = z - np.asarray(pre.mean, dtype="float32")
        if pre.std is not None:
            z = z / np.asarray(pre.std, dtype="float32")
        if np.allclose(z, y, rtol=1e-5, atol=1e-4):
            return pre
    raise SystemExit(f"{mod.__name__}.preprocess_input matches none of caffe/tf/torch/pass-through")


def _keras_cut(model: Any, classes: int = 1000) -> str | None:
    """The layer feeding the classifier head of a built (include_top) Keras model."""
    layer = model.layers[-1]
    found = False
    while True:
        cls = type(layer).__name__
        is_head = cls == "Dense" or (cls == "Conv2D" and getattr(layer, "filters", None) == classes)
        if is_head or (found and cls == "Dense"):
            found = True
        elif cls in ("Dropout", "Flatten", "Reshape") or (cls in ("Activation", "Softmax") and not found):
            pass
        else:
            return layer.name
        inp = layer.input
        if isinstance(inp, (list, tuple)):
            return layer.name
        layer = inp._keras_history[0]


def _keras_head(model: Any, classes: int = 1000) -> str:
    """The classifier layer of a built (include_top) Keras model: the last Dense, or the 1x1
    Conv2D with ``classes`` filters (MobileNet's conv_preds)."""
    for layer in reversed(model.layers):
        cls = type(layer).__name__
        if cls == "Dense" or (cls == "Conv2D" and getattr(layer, "filters", None) == classes):
            return layer.name
    raise SystemExit(f"{model.name}: no classifier layer found")


def _keras_v3_table(mod: Any) -> dict[str, float]:
    """Top-1 per checkpoint from the table in keras's mobilenet_v3 docstring (BASE_DOCSTRING)."""
    out: dict[str, float] = {}
    for line in inspect.getsource(mod).splitlines():
        m = re.match(r"\|\s*(mobilenet_v3_\S+)\s*\|\s*[\d.]+\s*\|\s*[\d.]+\s*\|\s*([\d.]+)\s*\|", line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def _keras_variants(app: str) -> list[tuple[str, dict[str, Any]]]:
    """(id suffix, constructor kwargs) for the variants a constructor may have weights for.

    A superset is tried; the constructor itself rejects the ones keras publishes no weights for.
    """
    if app == "MobileNet":
        return [
            ("" if (a, r) == (1.0, 224) else f"_{a}_{r}", {"alpha": a, "input_shape": (r, r, 3)})
            for a in (0.25, 0.5, 0.75, 1.0)
            for r in (96, 128, 160, 192, 224)
        ]
    if app == "MobileNetV2":
        return [
            ("" if (a, r) == (1.0, 224) else f"_{a}_{r}", {"alpha": a, "input_shape": (r, r, 3)})
            for a in (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
            for r in (96, 128, 160, 192, 224)
        ]
    if app.startswith("MobileNetV3"):
        out = []
        for mini in (False, True):
            for a in (0.75, 1.0):
                suffix = ("_minimalistic" if mini else "") + ("" if a == 1.0 else f"_{a}")
                out.append((suffix, {"alpha": a, "minimalistic": mini}))
        return out
    return [("", {})]


def keras_cards() -> Iterator[ModelCard]:
    """One card per Keras application (and per published variant) with top and no-top files."""
    import keras

    version = keras.__version__
    mods = _patch_keras_get_file()
    _fast_keras_init()
    table_doc = json.loads(KERAS_TABLE.read_text(encoding="utf-8"))
    table = table_doc["table"]
    table_src = table_doc["source"]["file"]
    weight_lic = table_doc["weights_licences"]
    v3_top1 = _keras_v3_table(mods["mobilenet_v3"])
    apps = sorted(n for n in dir(keras.applications) if n[:1].isupper())
    for app in apps:
        fn = getattr(keras.applications, app)
        modname = fn.__module__.rsplit(".", 1)[-1]
        mod = mods[modname]
        for suffix, kw in _keras_variants(app):
            top, model = _keras_call(fn, include_top=True, **kw)
            if top is None:
                continue
            notop, _ = _keras_call(fn, include_top=False, **kw)
            if model is None:  # the constructor built no `model` local: build it without weights
                _clear_keras_session()
                model = fn(weights=None, include_top=True, **kw)
            dims = model.input_shape[1:]
            flexible = None in dims
            # Flexible-size models (MobileNetV3) load the 224x224 weights by default (keras warns so).
            input_size = tuple(224 if d is None else int(d) for d in dims)
            pre = _keras_preprocess(mod, input_size)
            files = []
            for rec, role in ((top, "weights"), (notop, "weights-notop")):
                if rec is None:
                    continue
                fname = rec["fname"] or rec["origin"].rsplit("/", 1)[-1]
                if rec["algo"]:
                    cs = Checksum(
                        rec["algo"], rec["file_hash"], f"keras {version} {fn.__module__} (get_file file_hash)"
                    )
                    pin = None
                else:
                    cs = Checksum(
                        None, source=f"keras {version} {fn.__module__} passes no file_hash to get_file"
                    )
                    pin = "first-use"
                files.append(FileRef(name=fname, urls=(rec["origin"],), checksum=cs, role=role, pin=pin))
            metrics: list[Metric] = []
            notes: list[str] = []
            row = table.get(app) if not suffix else None
            if row is not None:
                # The table gives no input size: its figures are for the application's default
                # input size (the one keras builds and loads the weights for); no crop is stated.
                for key in ("top1", "top5"):
                    if row.get(key) is not None:
                        metrics.append(
                            Metric(
                                key,
                                float(row[key]),
                                IMAGENET,
                                f"Keras docs table ({table_src})",
                                resolution=input_size[0],
                            )
                        )
                notes.append(
                    f"Keras docs: size {row['size_mb']} MB, params {row['params']}"
                    + (f", depth {row['depth']}" if row.get("depth") is not None else "")
                    + "."
                )
            if app.startswith("MobileNetV3"):
                ck = "mobilenet_v3_{}{}_{}_224".format(
                    "large" if "Large" in app else "small",
                    "_minimalistic" if kw.get("minimalistic") else "",
                    kw.get("alpha", 1.0),
                )
                if ck in v3_top1:
                    metrics.append(
                        Metric(
                            "top1",
                            v3_top1[ck],
                            IMAGENET,
                            f"keras {version} {fn.__module__} BASE_DOCSTRING table",
                            resolution=int(ck.rsplit("_", 1)[1]),  # the checkpoint name ends in its size
                        )
                    )
            origin = "native"
            lic = "Apache-2.0"
            wl = weight_lic["models"].get(app) if not suffix else None
            if wl is not None:
                origin = wl["origin"]
                lic = wl["licence"].split(" ")[0]
                notes.append(f"{wl['text']} ({weight_lic['source']})")
                if origin == "caffe":
                    notes.append("The weights were converted from Caffe: BGR, 0-255, mean-subtracted input.")
            else:
                notes.append(
                    "Licence: Keras code is Apache-2.0; keras does not state a separate weights licence."
                )
            if flexible:
                notes.append("The model accepts any input size; keras's default weights are for 224x224.")
            fam = family_of(app)
            arch_kw = {k: (list(v) if isinstance(v, tuple) else v) for k, v in kw.items()}
            tags = [fam, "imagenet", "keras", "classification", modname]
            if origin == "caffe":
                tags.append("caffe")
            if is_mobile(app):
                tags.append("mobile")
            yield ModelCard(
                id=f"keras/{app.lower()}{suffix}",
                name=f"Keras {app}"
                + (" " + " ".join(f"{k}={v}" for k, v in arch_kw.items()) if suffix else ""),
                source="keras",
                framework="keras",
                format="h5",
                task="image-classification",
                dataset=IMAGENET,
                family=fam,
                origin=origin,
                provenance={
                    "publisher": "Keras team (keras.applications)",
                    "page": "https://keras.io/api/applications/",
                    "generated_from": f"keras {version} keras.applications ({fn.__module__})",
                },
                labels={"set": IMAGENET, "count": 1000},
                files=tuple(files),
                architecture=Architecture("keras.applications", app, arch_kw),
                preprocess=pre,
                metrics=tuple(metrics),
                params=int(model.count_params()),
                gflops=None,
                license=lic,
                tags=tuple(tags),
                default_cut=_keras_cut(model),
                classifier=_keras_head(model),
                num_classes=1000,
                notes=" ".join(notes) or None,
            )
    if "tensorflow" in sys.modules:
        raise SystemExit("tensorflow got imported while generating Keras entries (it must not be)")


# --------------------------------------------------------------------------------------------
# timm (Hugging Face hub)
# --------------------------------------------------------------------------------------------

TIMM_FAMILY = re.compile(r"^(tf_)?(vgg|resnet|inception|mobilenet|densenet|efficientnet)")


def _timm_results() -> tuple[dict[str, dict[str, str]], str]:
    """Rows of the copied results CSV by model name, and the source named in its header."""
    lines = TIMM_RESULTS.read_text(encoding="utf-8").splitlines()
    header = [ln[1:].strip() for ln in lines if ln.startswith("#")]
    src = next((h for h in header if h.startswith("https://")), "timm results-imagenet.csv")
    rows = {r["model"]: r for r in csv.DictReader(ln for ln in lines if not ln.startswith("#"))}
    return rows, src


def timm_cards() -> Iterator[ModelCard]:
    """ImageNet-1k classifiers of the chosen families that timm hosts under ``timm/`` on the hub."""
    import timm
    from timm.models import _hub, get_pretrained_cfg

    version = timm.__version__
    rows, results_src = _timm_results()
    weights_name = _hub.HF_SAFE_WEIGHTS_NAME
    params_cache: dict[str, tuple[int, str | None]] = {}
    names = []
    for full in timm.list_pretrained():
        arch, _, tag = full.partition(".")
        if not TIMM_FAMILY.match(arch):
            continue
        cfg = get_pretrained_cfg(full)
        if not (cfg.hf_hub_id or "").startswith("timm/"):
            continue
        if cfg.num_classes != 1000 or "in1k" not in tag:
            continue
        names.append(full)
    unknown = sorted(set(rows) - set(names))
    if unknown:
        raise SystemExit(f"{TIMM_RESULTS.name} has rows for models not enumerated: {unknown[:5]}")
    for full in sorted(names):
        arch, _, tag = full.partition(".")
        cfg = get_pretrained_cfg(full)
        if arch not in params_cache:
            model = _structure_only(lambda a=arch: timm.create_model(a, pretrained=False))
            n = sum(p.numel() for p in model.parameters())
            params_cache[arch] = (int(n), cut_before(model, cfg.classifier) if cfg.classifier else None)
        params, cut = params_cache[arch]
        c, h, w = cfg.input_size
        crop_pct = cfg.crop_pct if cfg.crop_pct is not None else 0.875
        resize = math.floor(h / crop_pct)
        pre = Preprocess(
            layout="NCHW",
            channel_order="RGB",
            scale=1.0 / 255.0,
            mean=tuple(float(x) for x in cfg.mean),
            std=tuple(float(x) for x in cfg.std),
            input_size=(int(c), int(h), int(w)),
            resize=int(resize),
            crop=int(h),
            interpolation=cfg.interpolation,
            note=f"timm pretrained cfg: crop_pct {crop_pct}, crop_mode {cfg.crop_mode}",
        )
        metrics: tuple[Metric, ...] = ()
        row = rows.get(full)
        if row is not None:
            # Measured at the row's img_size/crop_pct, which can differ from the card's default crop.
            at = {"resolution": int(row["img_size"]), "crop_pct": float(row["crop_pct"])}
            metrics = (
                Metric("top1", float(row["top1"]), IMAGENET, results_src, **at),
                Metric("top5", float(row["top5"]), IMAGENET, results_src, **at),
            )
        fam = family_of(arch)
        prov: dict[str, Any] = {
            "publisher": "timm (Hugging Face)",
            "page": f"https://huggingface.co/{cfg.hf_hub_id}",
            "generated_from": f"timm {version} pretrained configs",
        }
        if cfg.paper_ids:
            prov["paper"] = cfg.paper_ids if isinstance(cfg.paper_ids, str) else ", ".join(cfg.paper_ids)
        if cfg.origin_url:
            prov["note"] = f"weights originally from {cfg.origin_url}"
        origin = "tensorflow" if arch.startswith("tf_") or tag.startswith(("tf_", "goog")) else "native"
        yield ModelCard(
            id=f"timm/{full}",
            name=f"timm {full}",
            source="timm",
            framework="pytorch",
            format="safetensors",
            task="image-classification",
            dataset=IMAGENET,
            family=fam,
            origin=origin,
            provenance=prov,
            labels={"set": IMAGENET, "count": int(cfg.num_classes)},
            files=(
                FileRef(
                    name=weights_name,
                    role="weights",
                    checksum=Checksum(
                        None, source="not published; the hub ETag (sha256) is pinned on first pull"
                    ),
                    hf={"repo_id": cfg.hf_hub_id, "filename": weights_name, "revision": "main"},
                    pin="first-use",
                ),
            ),
            architecture=Architecture("timm", full, details={"base": arch}),
            preprocess=pre,
            metrics=metrics,
            params=params,
            gflops=None,
            license=cfg.license,
            tags=(fam, "imagenet", "timm", "huggingface", "classification", tag)
            + (("mobile",) if is_mobile(arch) else ()),
            default_cut=cut,
            classifier=cfg.classifier,
            num_classes=int(cfg.num_classes),
            notes=(
                f"Pulled through huggingface_hub from {cfg.hf_hub_id}; timm {version} loads "
                f"{weights_name} (falling back to {_hub.HF_WEIGHTS_NAME} where a repo has no safetensors)."
            ),
        )


# --------------------------------------------------------------------------------------------
# TF-slim (tensorflow/models research/slim) and TensorFlow's frozen Inception v3 graph
# --------------------------------------------------------------------------------------------

SLIM_DOWNLOAD = "http://download.tensorflow.org/models/"
IMAGENET_1001 = "imagenet-1001"
SLIM_VGG_MEAN = (123.68, 116.78, 103.94)  # slim vgg_preprocessing _R_MEAN, _G_MEAN, _B_MEAN


def _slim_preprocess(kind: str, size: int) -> Preprocess:
    """slim's eval preprocessing: 'inception' (central 87.5 % crop, bilinear resize, [-1, 1]) or
    'vgg' (aspect-preserving resize of the shorter side to 256, central crop, RGB mean subtracted,
    0-255). NHWC, as the checkpoint's net takes it."""
    if kind == "inception":
        return Preprocess(
            layout="NHWC",
            channel_order="RGB",
            scale=1.0 / 127.5,
            mean=(1.0, 1.0, 1.0),
            std=(1.0, 1.0, 1.0),
            input_size=(size, size, 3),
            resize=math.floor(size / 0.875),
            crop=size,
            interpolation="bilinear",
            mode="inception",
            note=(
                "slim inception_preprocessing (eval): central crop of 87.5 % of the image, bilinear "
                f"resize to {size}x{size}, then x / 127.5 - 1 (values in [-1, 1])"
            ),
        )
    return Preprocess(
        layout="NHWC",
        channel_order="RGB",
        scale=1.0,
        mean=SLIM_VGG_MEAN,
        input_size=(size, size, 3),
        resize=256,
        crop=size,
        interpolation="bilinear",
        mode="vgg",
        note=(
            "slim vgg_preprocessing (eval): shorter side resized to 256 (aspect kept), central crop "
            f"{size}x{size}, RGB 0-255 minus the means {list(SLIM_VGG_MEAN)}; no scaling"
        ),
    )


def _pinned(src: dict[str, str]) -> str:
    return f"{src['repo']}@{src['commit']} {src['path']}"


def tf_slim_cards(labels_dir: Path = LABELS_DIR, source: Path = TF_SLIM) -> Iterator[ModelCard]:
    """The TF-slim classification checkpoints and TensorFlow's frozen Inception v3 graph, from
    ``registry_sources/tf_slim.json`` (rows copied from the READMEs at pinned commits). Writes
    the ``imagenet-1001`` label set: "background", then the imagenet-1k names (slim's 1001-class
    heads put a background class at index 0)."""
    doc = json.loads(source.read_text(encoding="utf-8"))
    imagenet = json.loads((labels_dir / f"{IMAGENET}.json").read_text(encoding="utf-8"))
    _write_labels(IMAGENET_1001, ["background", *imagenet], labels_dir)
    first_use = "not published; the archive's sha256 is pinned on first pull"
    for row in doc["models"]:
        net = row["net"]
        table = doc[row.get("table", "readme")]
        url = row.get("url") or SLIM_DOWNLOAD + row["archive"]
        archive = url.rsplit("/", 1)[-1]
        size, n_cls = int(row["size"]), int(row["num_classes"])
        kwargs: dict[str, Any] = {"num_classes": n_cls, **row.get("kwargs", {}), "input_size": size}
        metric_src = f"{_pinned(table)} ({table['section']})"
        metrics = tuple(
            Metric(k, float(row[k]), IMAGENET, metric_src, resolution=size) for k in ("top1", "top5")
        )
        background = n_cls == 1001
        files = tuple(
            FileRef(
                name=archive,
                urls=(url,),
                role="weights",
                member=m,
                checksum=Checksum(None, source=first_use),
                pin="first-use",
            )
            for m in row["members"]
        )
        fam = family_of(net)
        ckpt_kind = "V2 (.index + .data)" if any(m.endswith(".index") for m in row["members"]) else "V1"
        caffe = row["trained"] == "caffe"
        trained = "weights converted from Caffe by the slim authors" if caffe else "trained at Google"
        notes = [
            f"TF-slim {row['title']} checkpoint ({ckpt_kind}) in {archive}; {trained}.",
            (
                "1001 classes: index 0 is a background class, index i is imagenet-1k class i-1 "
                "(labels imagenet-1001)."
                if background
                else "1000 classes, in the imagenet-1k order."
            ),
            doc["members_note"],
        ]
        if net not in SLIM_NETS:
            notes.append(
                f"tf_slim's tf_slim.nets has no {net} (it is in tensorflow/models research/slim/nets "
                "only): zoo pull works, zoo convert refuses it saying so."
            )
        yield ModelCard(
            id=f"tf-slim/{row.get('id', net)}",
            name=f"TF-slim {row['title']}",
            source="tf-slim",
            framework="tensorflow",
            format="ckpt",
            task="image-classification",
            dataset=IMAGENET,
            family=fam,
            origin="caffe" if row["trained"] == "caffe" else "native",
            provenance={
                "publisher": "TensorFlow-Slim image classification model library (tensorflow/models)",
                "page": f"https://github.com/{table['repo']}/blob/{table['commit']}/{table['path']}",
                "paper": row["paper"],
                "generated_from": f"registry_sources/tf_slim.json ({_pinned(table)})",
                **({"params_source": doc["params_source"]} if row.get("params") else {}),
            },
            labels={"set": IMAGENET_1001 if background else IMAGENET, "count": n_cls},
            files=files,
            architecture=Architecture("slim", net, kwargs),
            preprocess=_slim_preprocess(row["preprocessing"], size),
            metrics=metrics,
            params=row.get("params"),
            license="Apache-2.0",
            tags=tuple(
                dict.fromkeys(
                    [fam, "imagenet", "tf-slim", "tensorflow", "classification"]
                    + (["caffe"] if row["trained"] == "caffe" else [])
                    + (["mobile"] if is_mobile(net) else [])
                )
            ),
            default_cut=row.get("default_cut"),
            classifier=row.get("classifier"),
            num_classes=n_cls,
            notes=" ".join(notes),
        )
    for g in doc["graphs"]:
        src = g["source"]
        size = int(g["size"])
        mean, std = float(g["input_mean"]), float(g["input_std"])
        archive = g["url"].rsplit("/", 1)[-1]
        yield ModelCard(
            id=f"tensorflow/{g['id']}",
            name=g["title"],
            source="tensorflow",
            framework="tensorflow",
            format="pb",
            task="image-classification",
            dataset=IMAGENET,
            family="inception",
            origin="native",
            provenance={
                "publisher": "TensorFlow (image retraining tutorial, classify_image)",
                "page": f"https://github.com/{src['repo']}/blob/{src['commit']}/{src['path']}",
                "generated_from": f"registry_sources/tf_slim.json ({_pinned(src)}: {src['section']})",
            },
            labels={"count": int(g["num_classes"])},
            files=(
                FileRef(
                    name=archive,
                    urls=(g["url"],),
                    role="model",
                    member=g["member"],
                    checksum=Checksum(None, source=first_use),
                    pin="first-use",
                ),
            ),
            architecture=Architecture("graphdef", g["member"]),
            preprocess=Preprocess(
                layout="NHWC",
                channel_order="RGB",
                scale=1.0,
                mean=(mean,) * 3,
                std=(std,) * 3,
                input_size=(size, size, 3),
                resize=size,
                crop=size,
                interpolation="bilinear",
                note=(
                    f"retrain.py add_jpeg_decoding: the whole image bilinear-resized to {size}x{size} "
                    f"(no crop), minus {g['input_mean']}, divided by {g['input_std']}, "
                    f"fed to {g['inputs'][0]}"
                ),
            ),
            metrics=(),
            params=None,
            license="Apache-2.0",
            tags=("inception", "imagenet", "tensorflow", "classification", "frozen-graph"),
            default_cut=g["default_cut"],
            num_classes=int(g["num_classes"]),
            notes=(
                f"A frozen GraphDef ({g['member']} in {archive}); {g['outputs'][0]} has "
                f"{g['num_classes']} outputs whose names come from the archive's "
                "imagenet_2012_challenge_label_map_proto.pbtxt and imagenet_synset_to_human_label_map.txt "
                "(zoo bundles no list for them). The retraining tutorial's bottleneck is "
                f"{g['default_cut']} (2048 values). No accuracy is published with it."
            ),
            inputs=tuple(g["inputs"]),
            outputs=tuple(g["outputs"]),
        )


# --------------------------------------------------------------------------------------------
# curated + assembly
# --------------------------------------------------------------------------------------------


def curated_cards(curated_dir: Path = CURATED_DIR) -> list[dict[str, Any]]:
    """Card dicts from every ``curated/*.json`` (each a JSON list), unchanged, in file order."""
    out: list[dict[str, Any]] = []
    for path in sorted(curated_dir.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, list):
            raise SystemExit(f"{path}: expected a JSON list of card dicts")
        out.extend(data)
    return out


def build(
    labels_dir: Path = LABELS_DIR, sections: tuple[str, ...] = ("torchvision", "keras", "timm", "tf_slim")
) -> dict:
    """The whole registry document (validated against the schema)."""
    import jsonschema

    gens: dict[str, Callable[[], Iterator[ModelCard]]] = {
        "torchvision": lambda: torchvision_cards(labels_dir),
        "keras": keras_cards,
        "timm": timm_cards,
        "tf_slim": lambda: tf_slim_cards(labels_dir),
    }
    versions: dict[str, str] = {}
    entries: dict[str, dict[str, Any]] = {}
    for sec in sections:
        for card in gens[sec]():
            if card.id in entries:
                raise SystemExit(f"duplicate id {card.id}")
            entries[card.id] = card.to_dict()
    for d in curated_cards():
        if d.get("id") in entries:
            raise SystemExit(f"curated card {d.get('id')} collides with a generated one")
        entries[d["id"]] = d
    import keras
    import timm
    import torchvision

    versions = {
        "script": "tools/gen_registry.py",
        "torchvision": torchvision.__version__.split("+")[0],
        "keras": keras.__version__,
        "timm": timm.__version__,
    }
    doc = {"schema_version": 1, "generator": versions, "models": [entries[k] for k in sorted(entries)]}
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    if errors:
        msgs = []
        for e in errors[:10]:
            p = list(e.absolute_path)
            ident = doc["models"][p[1]]["id"] if len(p) > 1 and p[0] == "models" else "(top)"
            msgs.append(f"{ident}: /{'/'.join(map(str, p[2:]))}: {e.message}")
        raise SystemExit("generated registry does not validate:\n" + "\n".join(msgs))
    return doc


def dumps(doc: dict) -> str:
    """The one serialization used for registry.json."""
    return json.dumps(doc, indent=1, sort_keys=False, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write (default: registry.json)")
    ap.add_argument("--check", action="store_true", help="compare with --out instead of writing it")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    doc = build()
    text = dumps(doc)
    n = len(doc["models"])
    if args.check:
        same = args.out.is_file() and args.out.read_text(encoding="utf-8") == text
        state = "up to date" if same else "DIFFERS"
        print(f"{args.out}: {state} ({n} entries, {time.perf_counter() - t0:.1f}s)")
        return 0 if same else 1
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(args.out)
    print(f"wrote {args.out} ({n} entries, {time.perf_counter() - t0:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
