"""Read Caffe nets: text prototxt, binary .caffemodel, HDF5 .caffemodel.h5, legacy V1 files.

``read_prototxt`` gives a :class:`CaffeNet` (inputs with shapes, TEST-phase layers in order, every
layer upgraded to the current ``LayerParameter`` form). ``read_weights`` gives ``{layer name:
[float32 arrays]}``; the binary reader walks the protobuf wire format itself so each packed float
array is a zero-copy view into the file's bytes (the only copy of the weights in memory).
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf import text_format

from zoo.errors import ConversionError

from ..wire import fields, varint
from . import proto

# V1 enum -> current type string (Caffe's UpgradeV1LayerType).
V1_TYPES = {
    "ABSVAL": "AbsVal",
    "ACCURACY": "Accuracy",
    "ARGMAX": "ArgMax",
    "BNLL": "BNLL",
    "CONCAT": "Concat",
    "CONTRASTIVE_LOSS": "ContrastiveLoss",
    "CONVOLUTION": "Convolution",
    "DATA": "Data",
    "DECONVOLUTION": "Deconvolution",
    "DROPOUT": "Dropout",
    "DUMMY_DATA": "DummyData",
    "EUCLIDEAN_LOSS": "EuclideanLoss",
    "ELTWISE": "Eltwise",
    "EXP": "Exp",
    "FLATTEN": "Flatten",
    "HDF5_DATA": "HDF5Data",
    "HDF5_OUTPUT": "HDF5Output",
    "HINGE_LOSS": "HingeLoss",
    "IM2COL": "Im2col",
    "IMAGE_DATA": "ImageData",
    "INFOGAIN_LOSS": "InfogainLoss",
    "INNER_PRODUCT": "InnerProduct",
    "LRN": "LRN",
    "MEMORY_DATA": "MemoryData",
    "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss",
    "MVN": "MVN",
    "POOLING": "Pooling",
    "POWER": "Power",
    "RELU": "ReLU",
    "SIGMOID": "Sigmoid",
    "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss",
    "SILENCE": "Silence",
    "SOFTMAX": "Softmax",
    "SOFTMAX_LOSS": "SoftmaxWithLoss",
    "SPLIT": "Split",
    "SLICE": "Slice",
    "TANH": "TanH",
    "WINDOW_DATA": "WindowData",
    "THRESHOLD": "Threshold",
}
_V1_PARAMS = (
    "concat_param",
    "convolution_param",
    "dropout_param",
    "eltwise_param",
    "inner_product_param",
    "lrn_param",
    "pooling_param",
    "relu_param",
    "sigmoid_param",
    "softmax_param",
    "slice_param",
    "tanh_param",
    "transform_param",
)
# Layers a deploy conversion leaves out: data sources, losses, metrics, sinks.
IGNORED_TYPES = {
    "Data",
    "ImageData",
    "HDF5Data",
    "HDF5Output",
    "MemoryData",
    "WindowData",
    "DummyData",
    "AnnotatedData",
    "Python",
    "Accuracy",
    "Silence",
    "SoftmaxWithLoss",
    "EuclideanLoss",
    "HingeLoss",
    "InfogainLoss",
    "MultinomialLogisticLoss",
    "SigmoidCrossEntropyLoss",
    "ContrastiveLoss",
}


@dataclass
class CaffeNet:
    """A deploy net: declared inputs, then the layers that run at TEST time, in file order."""

    name: str
    inputs: list[tuple[str, list[int]]]
    layers: list[Any]  # proto.LayerParameter
    path: Path
    transform: Any | None = None  # a TransformationParameter where the prototxt had one
    v1: bool = False
    ignored: list[str] = field(default_factory=list)
    unknown_fields: list[str] = field(default_factory=list)


def _upgrade_v1(v1: Any) -> Any:
    """One V1LayerParameter -> LayerParameter (type enum -> string, params copied, blobs kept)."""
    layer = proto.LayerParameter()
    layer.name = v1.name
    tname = proto.V1LayerParameter.DESCRIPTOR.enum_types_by_name["LayerType"].values_by_number[v1.type].name
    layer.type = V1_TYPES.get(tname, tname)
    layer.bottom.extend(v1.bottom)
    layer.top.extend(v1.top)
    layer.include.extend(v1.include)
    layer.exclude.extend(v1.exclude)
    for name in _V1_PARAMS:
        if v1.HasField(name):
            getattr(layer, name).CopyFrom(getattr(v1, name))
    layer.blobs.extend(v1.blobs)
    return layer


def _in_test_phase(layer: Any) -> bool:
    """Caffe's StateMeetsRule for the TEST phase (levels and stages left at their defaults)."""

    def meets(rule: Any) -> bool:
        if rule.HasField("phase") and rule.phase != 1:
            return False
        return not list(rule.stage) and not (rule.HasField("min_level") and rule.min_level > 0)

    if layer.include:
        return any(meets(r) for r in layer.include)
    return not any(meets(r) for r in layer.exclude)


# Fork-only options that change numerics: refuse them rather than silently use BVLC semantics.
_FORK_OPTIONS = re.compile(r"^\s*[^#\n]*?\b(round_mode|ceil_mode)\s*:", re.M)


_UNKNOWN_FIELD = re.compile(r'Message type "caffe\.([\w.]+)" has no field named "([^"]+)"')
_TEXT_TOKEN = re.compile(
    r"""\s+|\#[^\n]*|"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'"""
    r"""|[-+]?\d[\d.]*(?:[eE][-+]?\d+)?\w*|[-+]?[\w.]+|[{}<>\[\]:;,]|."""
)


def unknown_fields(text: str) -> list[tuple[int, int, str, str]]:
    """Every field of a (syntactically valid) text-format NetParameter that the schema does not
    know, as (line, column, message type, field name); lines and columns count from 1, as
    protobuf's own errors do. Unknown fields holding a message are skipped as a whole."""
    toks = [(m.group(), m.start()) for m in _TEXT_TOKEN.finditer(text) if not m.group()[0].isspace()]
    toks = [(t, o) for t, o in toks if not t.startswith("#")]
    starts = [0] + [m.end() for m in re.finditer(r"\n", text)]
    found: list[tuple[int, int, str, str]] = []

    def where(off: int) -> tuple[int, int]:
        line = bisect.bisect_right(starts, off)
        return line, off - starts[line - 1] + 1

    def tok(i: int) -> str:
        return toks[i][0] if i < len(toks) else ""

    def skip_block(i: int) -> int:  # at "{" or "<": past its closing bracket
        depth = 0
        while i < len(toks):
            t = tok(i)
            depth += t in "{<" and len(t) == 1
            depth -= t in "}>" and len(t) == 1
            i += 1
            if depth == 0:
                break
        return i

    def value(i: int, desc: Any) -> int:  # one value: a message block or a scalar (strings concatenate)
        if tok(i) in ("{", "<"):
            return walk(desc, i + 1) if desc is not None else skip_block(i)
        i += 1
        while tok(i - 1)[:1] in "\"'" and tok(i)[:1] in "\"'" and tok(i):
            i += 1
        return i

    def walk(desc: Any, i: int) -> int:
        while i < len(toks):
            t = tok(i)
            if t in ("}", ">"):
                return i + 1
            if t in (";", ","):
                i += 1
                continue
            off = toks[i][1]
            f = desc.fields_by_name.get(t)
            if f is None:
                found.append((*where(off), desc.name, t))
            sub = f.message_type if f is not None else None
            i += 1
            if tok(i) == ":":
                i += 1
            if tok(i) == "[":  # a list of values
                i += 1
                while i < len(toks) and tok(i) != "]":
                    i = i + 1 if tok(i) == "," else value(i, sub)
                i += 1
            else:
                i = value(i, sub)
        return i

    walk(proto.NetParameter.DESCRIPTOR, 0)
    return found


def parse_prototxt_text(
    text: str, path: Path, unknown: list[str] | None = None, allow_unknown: bool = False
) -> Any:
    """Text format -> NetParameter; errors become a one-line ConversionError with line and column.

    A field Caffe's schema does not know is refused, as Caffe's own parser refuses it (a
    misspelled ``alpah`` would otherwise leave the default alpha: another network). Only with
    ``allow_unknown`` (fields from a Caffe fork) are such fields skipped; each is then appended
    to ``unknown`` as ``"line L, column C: Message.field"``.
    """
    m = _FORK_OPTIONS.search(text)
    if m:
        line = text.count("\n", 0, m.start(1)) + 1
        raise ConversionError(
            f"{path}: line {line}: option {m.group(1)!r} comes from a Caffe fork "
            "(BVLC pooling always rounds up); not supported"
        )
    net = proto.NetParameter()
    try:
        try:
            text_format.Parse(text, net)
            return net
        except text_format.ParseError as e:
            bad = _UNKNOWN_FIELD.search(str(e))
            if bad is None:
                raise
            if not allow_unknown:
                raise ConversionError(
                    f"{path}: line {e.GetLine()}, column {e.GetColumn()}: unknown field "
                    f"{bad.group(2)!r} in {bad.group(1)} (Caffe refuses it; for fields from a Caffe "
                    "fork, --allow-unknown-fields / allow_unknown_fields=True skips them)"
                ) from None
            first = (e.GetLine(), e.GetColumn(), bad.group(1).rsplit(".", 1)[-1], bad.group(2))
        net = proto.NetParameter()
        text_format.Parse(text, net, allow_unknown_field=True)
    except text_format.ParseError as e:
        line, col = e.GetLine(), e.GetColumn()
        msg = str(e).split("\n")[0]
        if line is not None and msg.startswith(f"{line}:{col}"):
            msg = msg[len(f"{line}:{col}") :].lstrip(" :")
        raise ConversionError(f"{path}: syntax error at line {line}, column {col}: {msg}") from None
    found = unknown_fields(text)
    if first[:2] not in {f[:2] for f in found}:
        found.insert(0, first)
    if unknown is not None:
        unknown.extend(f"line {ln}, column {col}: {msg}.{name}" for ln, col, msg, name in found)
    return net


def net_from_param(net: Any, path: Path) -> CaffeNet:
    """Normalize a NetParameter: V1 upgrade, TEST phase, inputs in all three declaration styles."""
    v1 = len(net.layers) > 0
    if v1 and len(net.layer) > 0:
        raise ConversionError(f"{path}: mixes V1 'layers' and current 'layer' entries")
    layers = [_upgrade_v1(v) for v in net.layers] if v1 else list(net.layer)
    inputs: list[tuple[str, list[int]]] = []
    names = list(net.input)
    if names:
        if len(net.input_shape) == len(names):
            shapes = [list(s.dim) for s in net.input_shape]
        elif len(net.input_dim) == 4 * len(names):
            dims = list(net.input_dim)
            shapes = [dims[4 * i : 4 * i + 4] for i in range(len(names))]
        elif len(net.input_dim) == len(names) == 0:
            shapes = []
        else:
            raise ConversionError(
                f"{path}: {len(names)} input(s) need one input_shape or 4 input_dim each "
                f"(got {len(net.input_shape)} input_shape, {len(net.input_dim)} input_dim)"
            )
        inputs.extend(zip(names, shapes, strict=True))
    kept, ignored, transform = [], [], None
    for layer in layers:
        if not _in_test_phase(layer):
            continue
        if layer.HasField("transform_param") and transform is None:
            transform = layer.transform_param
        if layer.type == "Input":
            shapes = [list(s.dim) for s in layer.input_param.shape]
            if len(shapes) not in (1, len(layer.top)):
                n = len(layer.top)
                raise ConversionError(f"{path}: Input layer {layer.name!r} needs 1 or {n} shapes")
            for i, top in enumerate(layer.top):
                inputs.append((top, shapes[i] if len(shapes) > 1 else shapes[0]))
            continue
        if layer.type in IGNORED_TYPES:
            ignored.append(layer.name)
            continue
        kept.append(layer)
    if not inputs:
        raise ConversionError(f"{path}: no input declared (input + input_dim, input_shape or an Input layer)")
    return CaffeNet(net.name, inputs, kept, path, transform, v1, ignored)


def read_prototxt(path: str | Path, allow_unknown_fields: bool = False) -> CaffeNet:
    """Read a deploy prototxt (current or V1 format). Fields unknown to Caffe's schema are refused
    unless ``allow_unknown_fields`` (then skipped and listed in ``unknown_fields``)."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ConversionError(f"{path}: cannot read prototxt ({e})") from None
    unknown: list[str] = []
    net = net_from_param(parse_prototxt_text(text, path, unknown, allow_unknown_fields), path)
    net.unknown_fields = unknown
    return net


# ---------------------------------------------------------------- binary caffemodel, wire level
_varint, _fields = varint, fields  # the wire format: converters/wire.py


# (field, wire type) pairs a BlobProto cannot hold: shape is a message, data float, double_data double
_BAD_BLOB_WIRE = {(7, 0), (7, 1), (7, 5), (5, 0), (5, 1), (8, 0), (8, 5)}


def _blob(buf: memoryview) -> np.ndarray:
    """BlobProto bytes -> float32 array shaped by ``shape`` (or legacy num/channels/height/width)."""
    shape: list[int] | None = None
    legacy = {1: 0, 2: 0, 3: 0, 4: 0}
    chunks: list[np.ndarray] = []
    dchunks: list[np.ndarray] = []
    for num, wt, val in _fields(buf):
        if (num, wt) in _BAD_BLOB_WIRE:
            raise ValueError(f"blob field {num} has wire type {wt}")
        if num == 7:
            shape = []
            for n2, w2, v2 in _fields(val):
                if n2 == 1 and w2 == 2:
                    j = 0
                    while j < len(v2):
                        d, j = _varint(v2, j)
                        shape.append(d)
                elif n2 == 1 and w2 == 0:
                    shape.append(v2)
                elif n2 == 1:
                    raise ValueError(f"shape dim has wire type {w2}")
        elif num == 5:
            chunks.append(np.frombuffer(val, dtype="<f4"))  # packed run, or one unpacked float
        elif num == 8:
            dchunks.append(np.frombuffer(val, dtype="<f8"))
        elif num in legacy and wt == 0:
            legacy[num] = val
    if chunks:
        data = chunks[0] if len(chunks) == 1 else np.concatenate(chunks)
    elif dchunks:
        data = np.concatenate(dchunks).astype(np.float32)
    else:
        data = np.zeros(0, np.float32)
    if shape is None:
        shape = [legacy[1], legacy[2], legacy[3], legacy[4]]
        if int(np.prod(shape)) != data.size:
            shape = [data.size]
    if int(np.prod(shape)) != data.size:
        raise ValueError(f"blob shape {shape} holds {int(np.prod(shape))} values, data has {data.size}")
    return data.reshape(shape)


def read_caffemodel(path: str | Path) -> dict[str, list[np.ndarray]]:
    """Binary caffemodel -> {layer name: blobs}; layers without blobs are left out."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ConversionError(f"{path}: cannot read weights ({e})") from None
    if not raw:
        raise ConversionError(f"{path}: the caffemodel is empty (0 bytes)")
    out: dict[str, list[np.ndarray]] = {}
    layer = "?"
    seen = 0
    try:
        for num, wt, val in _fields(memoryview(raw)):
            if wt != 2 or num not in (100, 2):
                continue
            v1 = num == 2
            seen += 1
            name, blobs = None, []
            for n2, w2, v2 in _fields(val):
                if w2 != 2:
                    continue
                if n2 == (4 if v1 else 1):
                    name = bytes(v2).decode("utf-8", "replace")
                elif n2 == (6 if v1 else 7):
                    blobs.append(_blob(v2))
            if name is not None and blobs:
                out[name] = blobs
            layer = name or layer
    except (IndexError, ValueError) as e:
        where = f"after layer {layer!r}" if layer != "?" else "in its first layer"
        raise ConversionError(f"{path}: corrupt or truncated caffemodel {where} ({e})") from None
    if not seen:
        raise ConversionError(f"{path}: no layers found (not a caffemodel?)")
    return out


def read_caffemodel_h5(path: str | Path) -> dict[str, list[np.ndarray]]:
    """HDF5 snapshot (datasets ``data/<layer>/<i>``) -> {layer name: blobs}, read in the HDF5
    worker (:mod:`converters.h5guard`: libhdf5 can hang on a damaged file)."""
    from converters import h5guard

    return h5guard.call(_read_caffemodel_h5, Path(path), path=path)


def _read_caffemodel_h5(path: Path) -> dict[str, list[np.ndarray]]:
    import h5py

    out: dict[str, list[np.ndarray]] = {}
    try:
        with h5py.File(path, "r") as f:
            if "data" not in f:
                raise ConversionError(f"{path}: no 'data' group (not a Caffe HDF5 snapshot)")
            for name, grp in f["data"].items():
                keys = sorted(grp.keys(), key=int)
                if keys:
                    out[name] = [np.asarray(grp[k], dtype=np.float32) for k in keys]
    except (OSError, KeyError, RuntimeError, ValueError, TypeError) as e:
        raise ConversionError(f"{path}: cannot read HDF5 weights ({type(e).__name__}: {e})") from None
    return out


def read_weights(path: str | Path) -> dict[str, list[np.ndarray]]:
    """Dispatch on content: HDF5 signature -> snapshot reader, otherwise binary protobuf."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as e:
        raise ConversionError(f"{path}: cannot read weights ({e})") from None
    if head == b"\x89HDF\r\n\x1a\n":
        return read_caffemodel_h5(path)
    return read_caffemodel(path)
