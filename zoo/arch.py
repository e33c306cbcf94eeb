"""The architecture reference on a card: how to build the network the weights belong to.

One type and one parser for every spelling (used by the registry generator, ``zoo register
--arch``, ``zoo convert``, ``zoo.load`` and the Keras worker)::

    torchvision:resnet50                          torchvision.models.resnet50 (also accepted)
    timm:resnet50.a1_in1k                         timm.create_model(name, pretrained=False)
    keras.applications:MobileNet?alpha=0.25&include_top=false&input_shape=128,128,3
    keras:Functional                              a Keras model whose config is inside the file
    caffe:deploy.prototxt                         (or any path ending in .prototxt)
    graph:graph.json                              a zoo graph (or any path ending in graph.json)
    detectron:resnet50                            Detectron's Caffe2 pickles (not loadable: pickle)
    finetune:PARENT_ID                            a zoo finetune run exported (zoo.export): the parent cut
                                                  at kwargs.cut + a new head
    slim:vgg_16?num_classes=1001                  a tf_slim.nets network (TF-slim checkpoints; built by
                                                  TensorFlow in a subprocess, converters/tf/slim.py)
    graphdef:classify_image_graph_def.pb          a frozen TensorFlow GraphDef: the network is the file
                                                  (converters/tf/graphdef.py)

On a card it is written ``{"kind": ..., "name": ..., "kwargs": {...}, "details": {...}}``; the older
dict spellings of registry entries (``builder``/``model_name``/``prototxt``) are read too.
No torch, no TensorFlow.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote

from zoo.errors import ZooError

KINDS = (
    "torchvision",
    "timm",
    "keras.applications",
    "keras",
    "caffe",
    "graph",
    "detectron",
    "finetune",
    "slim",
    "graphdef",
)
_EXAMPLES = "torchvision:NAME, timm:NAME, keras.applications:NAME?k=v, caffe:FILE.prototxt, graph:graph.json"
_PREFIXES = (("torchvision.models.", "torchvision"), ("keras.applications.", "keras.applications"))


class ArchitectureError(ZooError):
    """An architecture reference that cannot be read."""

    exit_code = 2


_SAFE = "[]{},:\"'+-._~()*!$;/@"  # kept as is in a ?k=v value (the rest is percent-escaped)


def _value(text: str) -> Any:
    """``true`` -> True, ``0.25`` -> 0.25, ``[96,96,3]`` / ``96,96,3`` -> [96, 96, 3], ``avg`` -> "avg"."""
    t = text.strip()
    if t.lower() in ("none", "null"):
        return None
    if t.lower() in ("true", "false"):
        return t.lower() == "true"
    try:
        return json.loads(t)
    except ValueError:
        pass
    if "," in t:
        return [_value(p) for p in t.split(",") if p.strip()]
    return t


def _text(v: Any) -> str:
    """The inverse of :func:`_value` (flat number lists comma-joined, plain words bare, else JSON)."""
    if (
        isinstance(v, (list, tuple))
        and len(v) > 1
        and all(x is None or isinstance(x, (bool, int, float)) for x in v)
    ):
        return ",".join(_text(x) for x in v)
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str) and _value(v) == v and v == v.strip():
        return v
    return json.dumps(v, separators=(",", ":"))


@dataclass(frozen=True)
class Architecture:
    """A typed reference to a network definition."""

    kind: str
    name: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    details: Mapping[str, Any] = field(default_factory=dict)  # informational (weights enum, versions, ...)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ArchitectureError(f"unknown architecture kind {self.kind!r} (expected {_EXAMPLES})")
        if not self.name:
            raise ArchitectureError(f"architecture {self.kind}: needs a name ({_EXAMPLES})")
        object.__setattr__(self, "kwargs", dict(self.kwargs))
        object.__setattr__(self, "details", dict(self.details))

    @property
    def spec(self) -> str:
        """The canonical one-line spelling (what ``parse`` reads back)."""
        q = "&".join(f"{k}={quote(_text(v), safe=_SAFE)}" for k, v in self.kwargs.items())
        return f"{self.kind}:{self.name}" + (f"?{q}" if q else "")

    def __str__(self) -> str:
        return self.spec

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind, "name": self.name}
        if self.kwargs:
            d["kwargs"] = dict(self.kwargs)
        if self.details:
            d["details"] = dict(self.details)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Architecture:
        return parse(d)


def _from_text(text: str) -> Architecture:
    s = text.strip()
    low = s.lower()
    if low.endswith((".prototxt", ".pbtxt")) and not low.startswith("caffe:"):
        return Architecture("caffe", s)
    if low.endswith("graph.json") and not low.startswith("graph:"):
        return Architecture("graph", s)
    for prefix, kind in _PREFIXES:
        if s.startswith(prefix):
            s = f"{kind}:{s[len(prefix) :]}"
            break
    kind, sep, rest = s.partition(":")
    if not sep or kind not in KINDS:
        raise ArchitectureError(f"architecture {text!r}: expected {_EXAMPLES}")
    name, _, query = rest.partition("?")
    kwargs: dict[str, Any] = {}
    for part in filter(None, query.split("&")):
        k, eq, v = part.partition("=")
        if not eq or not k.strip():
            raise ArchitectureError(f"architecture {text!r}: {part!r} is not key=value")
        kwargs[k.strip()] = _value(unquote(v))
    return Architecture(kind, name.strip(), kwargs)


def _from_mapping(d: Mapping[str, Any]) -> Architecture:
    if "kind" in d:
        unknown = set(d) - {"kind", "name", "kwargs", "details"}
        if unknown:
            raise ArchitectureError(f"architecture: unknown keys {sorted(unknown)}")
        return Architecture(d["kind"], d.get("name", ""), d.get("kwargs") or {}, d.get("details") or {})
    rest = {k: v for k, v in d.items()}
    if "builder" in rest:  # the registry's older spelling
        builder = str(rest.pop("builder"))
        kwargs = rest.pop("kwargs", None) or {}
        if builder == "timm.create_model":
            name = rest.pop("model_name", None) or rest.get("architecture")
            base = rest.pop("architecture", None)
            details = {**({"base": base} if base else {}), **rest}
            return Architecture("timm", str(name or ""), kwargs, details)
        a = _from_text(builder)
        return Architecture(a.kind, a.name, {**a.kwargs, **kwargs}, rest)
    if "prototxt" in rest:
        return Architecture("caffe", str(rest.pop("prototxt")), {}, rest)
    if "graph" in rest:
        return Architecture("graph", str(rest.pop("graph")), {}, rest)
    if "class_name" in rest:
        return Architecture("keras", str(rest.pop("class_name")), {}, rest)
    if "family" in rest:
        return Architecture("detectron", str(rest.pop("family")), {}, rest)
    raise ArchitectureError(f"architecture {dict(d)!r}: expected {_EXAMPLES}")


def parse(value: str | Mapping[str, Any] | Architecture) -> Architecture:
    """Any spelling (string, card dict, older registry dict) -> :class:`Architecture`."""
    if isinstance(value, Architecture):
        return value
    if isinstance(value, str):
        return _from_text(value)
    if isinstance(value, Mapping):
        return _from_mapping(value)
    raise ArchitectureError(f"architecture {value!r}: expected a string or a mapping")


def parse_optional(value: str | Mapping[str, Any] | Architecture | None) -> Architecture | None:
    """:func:`parse`, with None and ``{}`` meaning "no architecture recorded"."""
    if value is None or (isinstance(value, Mapping) and not value):
        return None
    return parse(value)
