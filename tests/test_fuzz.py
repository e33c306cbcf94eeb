"""Fuzzing (hypothesis) of the readers of untrusted input: the Caffe prototxt parser, the binary
caffemodel reader, the Keras HDF5 reader (+ the graph builder that reads its JSON model_config),
and the registry / catalogue validation.

The property everywhere: whatever the bytes, only the project's own errors (``zoo.errors``:
``ZooError`` subclasses) escape; no hang (a hypothesis deadline per example and a pytest timeout
per test); no crash. Seeds are small valid inputs made here (no test data needed); the strategies
mutate them (bytes, tokens, JSON trees, HDF5 attributes and datasets) or generate from scratch.

CI runs ``ZOO_FUZZ_EXAMPLES`` examples per target (default 300, derandomized: reproducible);
``bench/fuzz.py`` runs the same targets with 10,000 or more and records the counts in
bench/RESULTS.md. Every failure found is kept below as an explicit regression example.
"""

from __future__ import annotations

import atexit
import copy
import io
import json
import os
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zoo.errors import ZooError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = int(os.environ.get("ZOO_FUZZ_EXAMPLES", "300"))
DEADLINE_MS = int(os.environ.get("ZOO_FUZZ_DEADLINE_MS", "3000"))

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=DEADLINE_MS,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
    print_blob=True,
)

# What happened per target (bench/fuzz.py reports it): cases run, and how each ended.
OUTCOMES: dict[str, Counter[str]] = {}
_TMP = Path(tempfile.mkdtemp(prefix="zoo-fuzz-"))
atexit.register(shutil.rmtree, _TMP, ignore_errors=True)


def _record(target: str, outcome: str) -> None:
    OUTCOMES.setdefault(target, Counter())[outcome] += 1


# bench/fuzz.py sets this to a list: other exceptions are then collected there, not raised
COLLECT: list[tuple[str, str, str, Any]] | None = None


def _only_zoo_errors(target: str, fn: Any, *args: Any) -> Any:
    """Call ``fn``; a ZooError is fine (recorded by type), any other exception fails the test."""
    try:
        out = fn(*args)
    except ZooError as e:
        _record(target, type(e).__name__)
        return None
    except Exception as e:
        if COLLECT is None:
            raise
        import traceback

        tb = traceback.extract_tb(e.__traceback__)[-1]
        COLLECT.append((target, f"{type(e).__name__}: {str(e)[:120]}", f"{tb.filename}:{tb.lineno}", args))
        _record(target, "FAILURE")
        return None
    _record(target, out if isinstance(out, str) else "ok")
    return out


# ---------------------------------------------------------------------------------------------
# generic mutators


def byte_edits(size: int, max_ops: int = 6) -> Any:
    """1..max_ops byte-level edits of a seed of ``size`` bytes, as a short list (readable when a
    case fails): ``(op, position as a fraction of the length, value)``."""
    op = st.tuples(
        st.sampled_from(["flip", "set", "insert", "delete", "truncate", "dup"]),
        st.integers(0, max(size - 1, 0)),
        st.one_of(st.integers(0, 255), st.binary(min_size=1, max_size=16)),
    )
    return st.lists(op, min_size=1, max_size=max_ops)


def apply_edits(seed: bytes, edits: list[tuple[str, int, Any]]) -> bytes:
    b = bytearray(seed)
    for op, at, v in edits:
        n = len(b)
        at = min(at, max(n - 1, 0))
        num = v if isinstance(v, int) else v[0]
        if op == "insert" or n == 0:
            b[at:at] = v if isinstance(v, bytes) else bytes([v])
        elif op == "flip":
            b[at] ^= 1 << (num % 8)
        elif op == "set":
            b[at] = num
        elif op == "delete":
            del b[at : at + 1 + num % 64]
        elif op == "truncate":
            del b[at:]
        else:
            b[at:at] = b[at : at + 1 + num % 64]
    return bytes(b)


@st.composite
def mutated_bytes(draw: Any, seed: bytes, max_ops: int = 6) -> bytes:
    """``seed`` with 1..max_ops byte-level edits: flip / set / insert / delete / truncate / splice."""
    return apply_edits(seed, draw(byte_edits(len(seed), max_ops)))


JSON_LEAF = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**64), 2**64),
    st.sampled_from([0, -1, 1, 2**31, 2**63, -(2**63), 1e308, -1e308, float("nan"), float("inf")]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["", "..", "/etc/passwd", "a/../../b", "\x00", "null", "[]", "{}", "-1"]),
)
JSON_ANY = st.recursive(
    JSON_LEAF,
    lambda kids: st.one_of(
        st.lists(kids, max_size=4), st.dictionaries(st.text(max_size=8), kids, max_size=4)
    ),
    max_leaves=8,
)


@st.composite
def mutated_json(draw: Any, seed: Any, max_ops: int = 4) -> Any:
    """A deep copy of ``seed`` with 1..max_ops edits at random places of the tree: delete a key or
    item, replace a value (random JSON, a neighbour's value, another type), add a key, duplicate."""
    doc = copy.deepcopy(seed)
    for _ in range(draw(st.integers(1, max_ops))):
        # walk down to a container, then edit one of its slots
        parent: Any = None
        node: Any = doc
        key: Any = None
        while isinstance(node, (dict, list)) and node and draw(st.integers(0, 3)) > 0:
            keys = list(node) if isinstance(node, dict) else list(range(len(node)))
            parent, key = node, draw(st.sampled_from(keys))
            node = node[key]
        if parent is None:
            if isinstance(doc, dict) and doc:
                parent, key = doc, draw(st.sampled_from(list(doc)))
            else:
                return draw(JSON_ANY)
        op = draw(st.sampled_from(["delete", "replace", "retype", "add", "dup"]))
        if op == "delete":
            del parent[key]
        elif op == "replace":
            parent[key] = draw(JSON_ANY)
        elif op == "retype":
            v = parent[key]
            parent[key] = (
                str(v)
                if not isinstance(v, str)
                else draw(st.sampled_from([0, -5, 1e9, None, [v], {"v": v}, v * 50]))
            )
        elif op == "add":
            if isinstance(parent, dict):
                parent[draw(st.text(max_size=10))] = draw(JSON_ANY)
            else:
                parent.insert(draw(st.integers(0, len(parent))), draw(JSON_ANY))
        elif isinstance(parent, list):
            parent.insert(key, copy.deepcopy(parent[key]))
        else:
            parent[key] = [copy.deepcopy(parent[key])] * 2
    return doc


# ---------------------------------------------------------------------------------------------
# Caffe prototxt

PROTOTXT = """name: "FuzzNet"
input: "data"
input_shape { dim: 1 dim: 3 dim: 16 dim: 16 }
layer {
  name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 stride: 1 pad: 1 weight_filler { type: "xavier" } }
}
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" relu_param { negative_slope: 0.1 } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "drop" type: "Dropout" bottom: "pool1" top: "pool1" include { phase: TEST }
  dropout_param { dropout_ratio: 0.5 } }
layer { name: "fc" type: "InnerProduct" bottom: "pool1" top: "fc" inner_product_param { num_output: 10 } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
"""

PROTOTXT_V1 = """name: "OldNet"
input: "data"
input_dim: 1
input_dim: 1
input_dim: 8
input_dim: 8
layers { name: "c" type: CONVOLUTION bottom: "data" top: "c"
  blobs_lr: 1 convolution_param { num_output: 2 kernel_size: 3 } }
layers { name: "r" type: RELU bottom: "c" top: "c" }
"""

PROTOTXT_INPUT_LAYER = """layer { name: "in" type: "Input" top: "x"
  input_param { shape { dim: 1 dim: 3 dim: 4 dim: 4 } } }
layer { name: "s" type: "Scale" bottom: "x" top: "y" scale_param { bias_term: true } }
layer { name: "e" type: "Eltwise" bottom: "x" bottom: "y" top: "z"
  eltwise_param { operation: SUM coeff: [1, -1] } }
"""

TOKENS = [
    "layer", "layers", "{", "}", "<", ">", ":", ";", ",", "[", "]", "name", "type", "bottom", "top",
    "input", "input_dim", "input_shape", "dim", '"Convolution"', '"Input"', '"x"', "'y'", "CONVOLUTION",
    "convolution_param", "num_output", "kernel_size", "pad", "stride", "phase", "TEST", "TRAIN",
    "include", "exclude", "1", "-1", "0.5", "1e999", "-0", "0x10", "nan", "inf", "true", "false",
    "#", "\n", " ", "\\", '"', "\"\\x00\"", "'\\u1234'", "9" * 30, "pooling_param", "pool",
    "MAX", "round_mode", "input_param", "shape", "blobs", "data", "\u00e9", "\x00",
]  # fmt: skip


@st.composite
def prototxt_texts(draw: Any) -> str:
    kind = draw(st.integers(0, 3))
    if kind == 0:  # token soup
        return " ".join(draw(st.lists(st.sampled_from(TOKENS), max_size=60)))
    if kind == 1:  # a valid net with token-level edits
        seed = draw(st.sampled_from([PROTOTXT, PROTOTXT_V1, PROTOTXT_INPUT_LAYER]))
        toks = seed.split(" ")
        for _ in range(draw(st.integers(1, 6))):
            at = draw(st.integers(0, len(toks) - 1))
            op = draw(st.integers(0, 2))
            if op == 0:
                del toks[at]
            elif op == 1:
                toks.insert(at, draw(st.sampled_from(TOKENS)))
            else:
                toks[at] = draw(st.sampled_from(TOKENS))
        return " ".join(toks)
    if kind == 2:  # a valid net with byte-level edits (may not even be UTF-8: read from a file)
        seed = draw(st.sampled_from([PROTOTXT, PROTOTXT_V1, PROTOTXT_INPUT_LAYER])).encode()
        return draw(mutated_bytes(seed)).decode("utf-8", "surrogateescape")
    return draw(st.text(max_size=200))


def _read_prototxt_bytes(data: bytes, allow_unknown: bool) -> Any:
    from converters.caffe.reader import read_prototxt

    p = _TMP / "fuzz.prototxt"
    p.write_bytes(data)
    return read_prototxt(p, allow_unknown_fields=allow_unknown)


def _prototxt_case(text: str, allow_unknown: bool) -> None:
    data = text.encode("utf-8", "surrogateescape")
    net = _only_zoo_errors("prototxt", _read_prototxt_bytes, data, allow_unknown)
    if net is not None:
        assert net.inputs, "a parsed net always has an input"


def test_prototxt_seeds_parse() -> None:
    """The seeds are valid (so mutations start from something the parser accepts)."""
    from converters.caffe.reader import parse_prototxt_text

    for text in (PROTOTXT, PROTOTXT_V1, PROTOTXT_INPUT_LAYER):
        net = _read_prototxt_bytes(text.encode(), False)
        assert net.inputs and net.layers, text
        assert parse_prototxt_text(text, Path("x")) is not None


@pytest.mark.timeout(120)
@FUZZ
@given(text=prototxt_texts(), allow_unknown=st.booleans())
def test_fuzz_prototxt(text: str, allow_unknown: bool) -> None:
    _prototxt_case(text, allow_unknown)


# ---------------------------------------------------------------------------------------------
# binary caffemodel


def _caffemodel_seed() -> bytes:
    from converters.caffe.writer import write_caffemodel

    rng = np.random.default_rng(0)
    p = _TMP / "seed.caffemodel"
    write_caffemodel(
        p,
        {
            "conv1": [rng.standard_normal((4, 3, 3, 3)).astype(np.float32), np.zeros(4, np.float32)],
            "fc": [rng.standard_normal((10, 64)).astype(np.float32)],
            "bn": [np.ones(4, np.float32), np.ones(4, np.float32), np.ones(1, np.float32)],
        },
        types={"conv1": "Convolution", "fc": "InnerProduct", "bn": "BatchNorm"},
        name="seed",
    )
    return p.read_bytes()


CAFFEMODEL = _caffemodel_seed()


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


@st.composite
def wire_messages(draw: Any, depth: int = 0) -> bytes:
    """Random protobuf wire-format messages biased to the caffemodel's field numbers (layer 100,
    V1 layers 2, name 1/4, blobs 7/6, shape 7, data 5, double data 8, legacy dims 1-4)."""
    out = bytearray()
    for _ in range(draw(st.integers(0, 6))):
        num = draw(st.sampled_from([1, 2, 3, 4, 5, 6, 7, 8, 100, draw(st.integers(0, 2**29))]))
        wt = draw(st.sampled_from([0, 1, 2, 5, 2, 2, draw(st.integers(0, 7))]))
        out += _varint((num << 3) | wt)
        if wt == 0:
            out += _varint(draw(st.integers(0, 2**70)))
        elif wt == 1:
            out += draw(st.binary(min_size=8, max_size=8))
        elif wt == 5:
            out += draw(st.binary(min_size=4, max_size=4))
        elif wt == 2:
            body = (
                draw(wire_messages(depth + 1))
                if depth < 3 and draw(st.booleans())
                else draw(st.binary(max_size=40))
            )
            ln = len(body) + draw(st.sampled_from([0, 0, 0, 1, -1, 2**40]))
            out += _varint(max(ln, 0)) + body
    return bytes(out)


def _read_caffemodel_bytes(data: bytes) -> Any:
    from converters.caffe.reader import read_caffemodel

    p = _TMP / "fuzz.caffemodel"
    p.write_bytes(data)
    return read_caffemodel(p)


def test_caffemodel_seed_reads() -> None:
    out = _read_caffemodel_bytes(CAFFEMODEL)
    assert set(out) == {"conv1", "fc", "bn"} and out["conv1"][0].shape == (4, 3, 3, 3)


@pytest.mark.timeout(120)
@FUZZ
@given(data=st.one_of(mutated_bytes(CAFFEMODEL), wire_messages(), st.binary(max_size=300)))
def test_fuzz_caffemodel(data: bytes) -> None:
    out = _only_zoo_errors("caffemodel", _read_caffemodel_bytes, data)
    if out is not None:
        assert all(isinstance(a, np.ndarray) for blobs in out.values() for a in blobs)


# ---------------------------------------------------------------------------------------------
# Keras HDF5 (legacy full model: model_config JSON + model_weights)


def _keras_config() -> dict[str, Any]:
    def layer(cls: str, name: str, inbound: str | None, **cfg: Any) -> dict[str, Any]:
        return {
            "class_name": cls,
            "name": name,
            "config": {"name": name, "trainable": True, "dtype": "float32", **cfg},
            "inbound_nodes": [[[inbound, 0, 0, {}]]] if inbound else [],
        }

    layers = [
        layer("InputLayer", "input_1", None, batch_input_shape=[None, 8, 8, 3], sparse=False),
        layer(
            "Conv2D", "conv", "input_1", filters=4, kernel_size=[3, 3], strides=[1, 1], padding="same",
            data_format="channels_last", dilation_rate=[1, 1], groups=1, activation="relu", use_bias=True,
        ),
        layer("BatchNormalization", "bn", "conv", axis=[3], momentum=0.99, epsilon=0.001, center=True,
              scale=True),
        layer("MaxPooling2D", "pool", "bn", pool_size=[2, 2], strides=[2, 2], padding="valid",
              data_format="channels_last"),
        layer("GlobalAveragePooling2D", "gap", "pool", data_format="channels_last", keepdims=False),
        layer("Dense", "fc", "gap", units=2, activation="softmax", use_bias=True),
    ]  # fmt: skip
    return {
        "class_name": "Functional",
        "config": {
            "name": "fuzz",
            "layers": layers,
            "input_layers": [["input_1", 0, 0]],
            "output_layers": [["fc", 0, 0]],
        },
    }


KERAS_CONFIG = _keras_config()


def _keras_weights() -> dict[str, list[tuple[str, np.ndarray]]]:
    rng = np.random.default_rng(1)
    f = np.float32
    return {
        "conv": [
            ("conv/kernel:0", rng.standard_normal((3, 3, 3, 4)).astype(f)),
            ("conv/bias:0", np.zeros(4, f)),
        ],
        "bn": [
            ("bn/gamma:0", np.ones(4, f)),
            ("bn/beta:0", np.zeros(4, f)),
            ("bn/moving_mean:0", np.zeros(4, f)),
            ("bn/moving_variance:0", np.ones(4, f)),
        ],
        "fc": [("fc/kernel:0", rng.standard_normal((4, 2)).astype(f)), ("fc/bias:0", np.zeros(2, f))],
    }


KERAS_WEIGHTS = _keras_weights()
LAYER_NAMES = ["input_1", "conv", "bn", "pool", "gap", "fc"]


def write_keras_h5(
    path: Path | io.BytesIO,
    config: Any = KERAS_CONFIG,
    weights: dict[str, list[tuple[str, Any]]] | None = None,
    layer_names: Any = None,
    attrs: dict[str, Any] | None = None,
) -> None:
    """A legacy Keras (tf.keras 2) full-model HDF5 file, written with h5py alone."""
    weights = KERAS_WEIGHTS if weights is None else weights
    with h5py.File(path, "w") as h5:
        h5.attrs["keras_version"] = "2.13.1"
        h5.attrs["backend"] = "tensorflow"
        h5.attrs["model_config"] = config if isinstance(config, (str, bytes)) else json.dumps(config)
        for k, v in (attrs or {}).items():
            h5.attrs[k] = v
        g = h5.create_group("model_weights")
        names = LAYER_NAMES if layer_names is None else layer_names
        g.attrs["layer_names"] = [n.encode() if isinstance(n, str) else n for n in names]
        for lname in dict.fromkeys(n for n in names if isinstance(n, str) and n):
            lg = g.create_group(lname) if lname not in g else g[lname]
            ws = weights.get(lname, [])
            lg.attrs["weight_names"] = [wn.encode() for wn, _ in ws]
            for wn, arr in ws:
                if wn not in lg:
                    lg.create_dataset(wn, data=arr)


def _keras_seed_bytes() -> bytes:
    buf = io.BytesIO()
    write_keras_h5(buf)
    return buf.getvalue()


KERAS_H5 = _keras_seed_bytes()


def _read_keras_and_graph(path: Path) -> Any:
    from converters.keras.graph import build_graph
    from converters.keras.reader import read_keras

    src = read_keras(path)
    return build_graph(src, trust_code=False)


def test_keras_seed_builds() -> None:
    p = _TMP / "seed.h5"
    p.write_bytes(KERAS_H5)
    g = _read_keras_and_graph(p)
    assert g is not None and g.nodes


DTYPES = [np.float32, np.float64, np.float16, np.int8, np.int64, np.bool_, np.uint8]


@st.composite
def keras_weights(draw: Any) -> dict[str, list[tuple[str, Any]]]:
    """The seed weights with datasets of other shapes, dtypes, names, missing or extra ones."""
    ws = {k: list(v) for k, v in KERAS_WEIGHTS.items()}
    for _ in range(draw(st.integers(1, 3))):
        lname = draw(st.sampled_from([*ws, "gap", "input_1", "ghost"]))
        lst = ws.setdefault(lname, [])
        op = draw(st.sampled_from(["shape", "dtype", "drop", "add", "rename", "scalar", "string"]))
        if not lst or op == "add":
            shape = tuple(draw(st.lists(st.integers(0, 5), max_size=4)))
            lst.append((f"{lname}/extra{len(lst)}:0", np.zeros(shape, draw(st.sampled_from(DTYPES)))))
            continue
        i = draw(st.integers(0, len(lst) - 1))
        wn, arr = lst[i]
        if op == "shape":
            shape = tuple(draw(st.lists(st.integers(0, 6), max_size=5)))
            lst[i] = (wn, np.zeros(shape, np.float32))
        elif op == "dtype" and arr.dtype.kind in "fiub":
            with np.errstate(all="ignore"):
                lst[i] = (wn, arr.astype(draw(st.sampled_from(DTYPES))))
        elif op == "drop":
            del lst[i]
        elif op == "rename":
            lst[i] = (draw(st.sampled_from([wn[:-2], "x", wn + ":0", "a/b/c:1"])), arr)
        elif op == "scalar":
            lst[i] = (wn, np.float32(draw(st.floats(allow_nan=True, width=32))))
        elif op == "string":
            lst[i] = (wn, np.array([b"abc", b"de"]))
    return ws


@st.composite
def keras_files(draw: Any) -> Any:
    """A recipe for a Keras file (small, so a failing case reads well): ``("bytes", edits)`` of
    the valid file, or ``("h5", config, weights, layer_names, attrs)`` written by h5py."""
    kind = draw(st.integers(0, 4))
    if kind == 0:  # bytes of a valid file, mutated
        return ("bytes", draw(byte_edits(len(KERAS_H5), max_ops=3)))
    config: Any = KERAS_CONFIG
    weights: Any = None
    layer_names: Any = None
    attrs: dict[str, Any] = {}
    if kind in (1, 4):  # the JSON model_config, mutated as a tree
        config = draw(mutated_json(KERAS_CONFIG, max_ops=3))
    if kind == 2:  # the JSON as text, mutated
        text = json.dumps(KERAS_CONFIG).encode()
        config = draw(mutated_bytes(text, max_ops=3)).decode("utf-8", "replace")
    if kind in (3, 4):  # weights and HDF5 attributes
        weights = draw(keras_weights())
        if draw(st.booleans()):
            layer_names = draw(st.lists(st.sampled_from([*LAYER_NAMES, "ghost", ""]), max_size=8))
        if draw(st.booleans()):
            attrs[draw(st.sampled_from(["keras_version", "backend"]))] = draw(
                st.sampled_from(["", "3.0", "x.y", "1" * 40, np.int64(3)])
            )
    return ("h5", config, weights, layer_names, attrs)


def keras_bytes(recipe: Any) -> bytes | None:
    """The file a recipe describes (None when h5py itself cannot write it, e.g. a NUL in a name)."""
    if recipe[0] == "bytes":
        return apply_edits(KERAS_H5, recipe[1])
    buf = io.BytesIO()
    try:
        write_keras_h5(buf, *recipe[1:])
    except (ValueError, TypeError):
        return None
    return buf.getvalue()


def _keras_case(recipe: Any) -> None:
    data = keras_bytes(recipe)
    if data is None:
        _record("keras_h5", "unwritable")
        return
    p = _TMP / "fuzz.h5"
    p.write_bytes(data)
    _only_zoo_errors("keras_h5", lambda _recipe: _read_keras_and_graph(p), recipe)


@pytest.mark.timeout(180)
@FUZZ
@given(recipe=keras_files())
def test_fuzz_keras_h5(recipe: Any) -> None:
    _keras_case(recipe)


# ---------------------------------------------------------------------------------------------
# registry / catalogue validation


def _registry_seeds() -> list[dict[str, Any]]:
    """Cards from the bundled registry of every kind of entry (and file layout) it holds."""
    reg = json.loads((ROOT / "registry.json").read_text())
    picked: dict[tuple[Any, ...], dict[str, Any]] = {}
    for m in reg["models"]:
        arch = (m.get("architecture") or {}).get("kind")
        files = tuple(sorted({k for f in m.get("files", []) for k in f}))
        picked.setdefault((m.get("source"), arch, files), m)
    return list(picked.values())


REGISTRY_SEEDS = _registry_seeds()


def _registry_body(doc: Any) -> str:
    from zoo.cards import ModelCard
    from zoo.registry import RegistryError, read_sources, usable_entries, validate_entries

    try:
        validate_entries(doc, "fuzz.json")
        valid = True
    except RegistryError:
        valid = False
    try:
        cards, warnings = usable_entries(doc, "fuzz.json")
    except RegistryError:
        assert not valid
        return "not a registry"
    outcome = "valid" if valid else "invalid entries"
    if valid:  # a document the schema accepts gives a card for every entry, without a warning
        assert len(cards) == len(doc["models"]) and not warnings, warnings
        for entry in doc["models"]:
            card = ModelCard.from_dict(entry)
            assert card.id == entry["id"]
            json.dumps(card.to_dict())  # the card round-trips to JSON
    # the same document as a user catalogue beside an empty bundled registry: never an exception
    d = _TMP / "reg"
    d.mkdir(exist_ok=True)
    (d / "registry.json").write_text('{"schema_version": 1, "models": []}')
    try:
        text = json.dumps(doc)
    except (ValueError, TypeError):
        return outcome
    (d / "catalog.json").write_text(text)
    rows, _ = read_sources(d / "registry.json", d / "catalog.json")  # a bad catalogue: warnings
    assert len(rows) == len(cards)
    return outcome


def _registry_case(doc: Any) -> None:
    _only_zoo_errors("registry", _registry_body, doc)


@st.composite
def registry_docs(draw: Any) -> Any:
    cards = draw(st.lists(st.sampled_from(REGISTRY_SEEDS), min_size=1, max_size=3))
    doc: Any = {"schema_version": 1, "models": copy.deepcopy(cards)}
    kind = draw(st.integers(0, 5))
    if kind == 0:
        return draw(JSON_ANY)
    if kind == 1:  # mutate only one card deeply
        i = draw(st.integers(0, len(cards) - 1))
        doc["models"][i] = draw(mutated_json(cards[i], max_ops=6))
        return doc
    return draw(mutated_json(doc, max_ops=kind))


@pytest.mark.timeout(180)
@FUZZ
@given(doc=registry_docs())
def test_fuzz_registry(doc: Any) -> None:
    _registry_case(doc)


def test_registry_seeds_are_valid() -> None:
    from zoo.registry import validate_entries

    assert len(REGISTRY_SEEDS) >= 5
    validate_entries({"schema_version": 1, "models": REGISTRY_SEEDS}, "seeds")


# ---------------------------------------------------------------------------------------------
# regressions: every failure the fuzzers found, as a fixed example (each raised something other
# than a ZooError before the fix named in bench/RESULTS.md "Reliability")


def _cfg(edit: Any) -> dict[str, Any]:
    c = copy.deepcopy(KERAS_CONFIG)
    edit(c["config"]["layers"], c["config"])
    return c


def _weights(layer: str, arrays: list[tuple[str, Any]]) -> dict[str, list[tuple[str, Any]]]:
    return {**KERAS_WEIGHTS, layer: arrays}


KERAS_REGRESSIONS = {
    "config not JSON": ("h5", '{"class_name": "Functional", "config": {"layers": [', None, None, {}),
    "config null": ("h5", {"class_name": "Functional", "config": None}, None, None, {}),
    "config a number": ("h5", 5, None, None, {}),
    "layer without class_name": ("h5", _cfg(lambda ls, c: ls[1].pop("class_name")), None, None, {}),
    "conv without kernel_size": (
        "h5",
        _cfg(lambda ls, c: ls[1]["config"].pop("kernel_size")),
        None,
        None,
        {},
    ),
    "inbound node too short": (
        "h5",
        _cfg(lambda ls, c: ls[1].update(inbound_nodes=[[["input_1"]]])),
        None,
        None,
        {},
    ),
    "layer name a list": ("h5", _cfg(lambda ls, c: ls[3].update(name=["pool"])), None, None, {}),
    "input layer unknown": (
        "h5",
        _cfg(lambda ls, c: c.update(input_layers=[["nope", 0, 0]])),
        None,
        None,
        {},
    ),
    "kernel_size of one": ("h5", _cfg(lambda ls, c: ls[1]["config"].update(kernel_size=[3])), None, None, {}),
    "2-D conv kernel": (
        "h5",
        KERAS_CONFIG,
        _weights("conv", [("conv/kernel:0", np.zeros((3, 3), np.float32)), KERAS_WEIGHTS["conv"][1]]),
        None,
        {},
    ),
    "string dense kernel": (
        "h5",
        KERAS_CONFIG,
        _weights("fc", [("fc/kernel:0", np.array([b"abc", b"de"])), KERAS_WEIGHTS["fc"][1]]),
        None,
        {},
    ),
    # one byte of the valid file changed (h5py's own errors: OSError, KeyError, RuntimeError, ...)
    "h5 bytes: read past the buffer": ("bytes", [("set", 2988, 41)]),
    "h5 bytes: object past the end": ("bytes", [("flip", 17938, 170)]),
    "h5 bytes: local heap offset": ("bytes", [("flip", 17931, 147)]),
    "h5 bytes: datatype": ("bytes", [("set", 9433, 183)]),
    "h5 bytes: float precision": ("bytes", [("flip", 13619, 32)]),
}


def _layer_with_blob(blob: bytes) -> bytes:
    """A caffemodel of one layer "a" holding one BlobProto of these bytes."""
    layer = b"\x0a\x01a" + b"\x3a" + _varint(len(blob)) + blob
    return _varint((100 << 3) | 2) + _varint(len(layer)) + layer


CAFFEMODEL_REGRESSIONS = {
    "blob data as a varint": _layer_with_blob(b"\x28\x01"),  # field 5, wire type 0
    "blob double_data as fixed32": _layer_with_blob(b"\x45\x00\x00\x80\x3f"),  # field 8, wire type 5
    "blob shape as a varint": _layer_with_blob(b"\x38\x02"),  # field 7, wire type 0
    "shape dim as fixed32": _layer_with_blob(b"\x3a\x05\x0d\x01\x00\x00\x00" + b"\x2d\x00\x00\x80\x3f"),
}


@pytest.mark.parametrize("name", list(CAFFEMODEL_REGRESSIONS))
def test_caffemodel_regressions_raise_conversion_error(name: str) -> None:
    from zoo.errors import ConversionError

    with pytest.raises(ConversionError, match=r"corrupt or truncated caffemodel .*wire type"):
        _read_caffemodel_bytes(CAFFEMODEL_REGRESSIONS[name])


@pytest.mark.parametrize("name", list(KERAS_REGRESSIONS))
def test_keras_regressions_raise_conversion_error(name: str) -> None:
    from zoo.errors import ConversionError

    p = _TMP / "regression.h5"
    p.write_bytes(keras_bytes(KERAS_REGRESSIONS[name]) or b"")
    with pytest.raises(ConversionError) as ei:
        _read_keras_and_graph(p)
    msg = str(ei.value)
    assert "\n" not in msg and len(msg) < 400, msg
    if name.startswith("h5 bytes"):
        assert "regression.h5: damaged or malformed Keras file" in msg, msg
    elif name not in ("config null", "config a number"):
        assert msg.startswith("regression.h5: "), msg


@pytest.mark.timeout(60)
def test_keras_h5_that_hangs_libhdf5_is_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    """One byte of the seed set to 8 makes libhdf5 loop forever inside
    ``h5.attrs["keras_version"]`` (found by bench/fuzz.py at 10,000 cases). The read runs in
    converters.h5guard's worker: stopped at the time limit with one line, and the next read works."""
    from converters.keras.reader import read_keras
    from zoo.errors import ConversionError

    monkeypatch.setenv("ZOO_HDF5_TIMEOUT", "3")
    p = _TMP / "hangs.h5"
    p.write_bytes(apply_edits(KERAS_H5, [("set", 2785, 8)]))
    t0 = time.monotonic()
    with pytest.raises(
        ConversionError, match=r"^hangs\.h5: the HDF5 library did not finish reading it within 3 s"
    ):
        read_keras(p)
    assert time.monotonic() - t0 < 20
    good = _TMP / "good.h5"
    good.write_bytes(KERAS_H5)
    weights = {k: v for k, v in read_keras(good).weights.items() if v}
    assert sorted(weights) == sorted(KERAS_WEIGHTS)
    assert all(
        np.array_equal(a, b) for (_, a), (_, b) in zip(weights["conv"], KERAS_WEIGHTS["conv"], strict=True)
    )


def test_registry_regression_non_string_id() -> None:
    """An entry whose id is a list made the duplicate-id check raise TypeError (unhashable)."""
    from zoo.registry import RegistryError, usable_entries, validate_entries

    bad = {**copy.deepcopy(REGISTRY_SEEDS[0]), "id": ["a", "b"]}
    doc = {"schema_version": 1, "models": [bad, bad, copy.deepcopy(REGISTRY_SEEDS[1])]}
    with pytest.raises(RegistryError, match=r"entry 'models\[0\]': id: \['a', 'b'\] is not of type 'string'"):
        validate_entries(doc, "fuzz.json")
    cards, warnings = usable_entries(doc, "fuzz.json")
    assert [c.id for c, _ in cards] == [REGISTRY_SEEDS[1]["id"]]
    assert len(warnings) == 2 and all("entry skipped" in w for w in warnings), warnings
