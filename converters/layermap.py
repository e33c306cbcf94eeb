"""The layer map: which source tensor becomes which module parameter, through which named steps.

One vocabulary for every converter. A row is ``source`` (the source layer name), ``blob`` (the
tensor's index in that layer), ``target`` (the module parameter or buffer; None for a tensor
folded into others, such as Caffe BatchNorm's moving-average factor), ``steps`` and both shapes.
Converters write ``model.safetensors`` by applying the map (:meth:`LayerMap.to_target`), so each
step has exactly one implementation, here; :meth:`LayerMap.to_source` inverts it.

Steps (written ``name(args)`` in layermap.json; an unknown step is an error):

- ``reshape(d0,d1,...)``: to that shape (``-1`` inferred); the inverse goes back to the shape before.
- ``transpose``: a 2-D transpose.
- ``permute(p0,p1,...)``: axes reordered (numpy ``transpose``); the inverse uses the inverse order.
- ``scale(f)``: multiplied by ``f`` (float32); the inverse divides.
- ``moving_average(f)``: Caffe's stored BatchNorm statistic divided by its moving-average
  factor ``f`` (blob 2); a factor of 0 gives 0, as in Caffe. The inverse multiplies by ``f``.
- ``nhwc_to_nchw(h,w,c)``: the columns of a 2-D kernel that reads an NHWC flatten, reordered for
  an NCHW flatten of the same ``h x w x c`` tensor.
- ``fold(f)``: the tensor is no parameter of its own (its value ``f`` is folded into other rows'
  steps); only for rows without a target; the inverse rebuilds it filled with ``f``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from zoo.errors import ConversionError

LAYERMAP_FORMAT = "zoo-layermap"
LAYERMAP_VERSION = 2

_STEP = re.compile(r"^\s*([a-z_0-9]+)\s*(?:\(([^()]*)\))?\s*$")
_ARITY = {  # name -> (argument type, count or None for any)
    "reshape": (int, None),
    "transpose": (int, 0),
    "permute": (int, None),
    "scale": (float, 1),
    "moving_average": (float, 1),
    "nhwc_to_nchw": (int, 3),
    "fold": (float, 1),
}
STEPS = tuple(_ARITY)


class LayerMapError(ConversionError):
    """A layer map that cannot be read or applied (unknown step, wrong shapes, missing tensor)."""


@dataclass(frozen=True)
class Step:
    """One named, invertible step."""

    name: str
    args: tuple[float, ...] = ()

    @classmethod
    def parse(cls, text: str) -> Step:
        m = _STEP.match(text)
        if m is None or m.group(1) not in _ARITY:
            raise LayerMapError(f"unknown layer-map step {text!r} (known: {', '.join(STEPS)})")
        name, raw = m.group(1), m.group(2)
        kind, n = _ARITY[name]
        parts = [p.strip() for p in (raw or "").split(",") if p.strip()]
        try:
            args = tuple(kind(float(p)) if kind is int and float(p).is_integer() else kind(p) for p in parts)
        except ValueError:
            raise LayerMapError(f"layer-map step {text!r}: arguments must be numbers") from None
        if any(kind is int and not isinstance(a, int) for a in args) or (n is not None and len(args) != n):
            raise LayerMapError(f"layer-map step {text!r}: wrong arguments for {name}")
        return cls(name, args)

    def __str__(self) -> str:
        if not self.args and self.name == "transpose":
            return self.name
        return f"{self.name}({','.join(repr(a) if isinstance(a, float) else str(a) for a in self.args)})"

    def shape_after(self, shape: Sequence[int]) -> list[int]:
        """The shape this step gives a tensor of ``shape``."""
        if self.name == "reshape":
            out = [int(d) for d in self.args]
            if -1 in out:
                known = int(np.prod([d for d in out if d != -1]))
                out[out.index(-1)] = int(np.prod(shape)) // max(known, 1)
            if int(np.prod(out)) != int(np.prod(shape)):
                raise LayerMapError(f"{self}: cannot reshape {list(shape)}")
            return out
        if self.name == "transpose":
            if len(shape) != 2:
                raise LayerMapError(f"transpose needs a 2-D tensor, got {list(shape)}")
            return [shape[1], shape[0]]
        if self.name == "permute":
            if sorted(self.args) != list(range(len(shape))):
                raise LayerMapError(f"{self}: not an order of the axes of {list(shape)}")
            return [shape[int(i)] for i in self.args]
        if self.name == "nhwc_to_nchw":
            h, w, c = (int(a) for a in self.args)
            if len(shape) != 2 or shape[1] != h * w * c:
                raise LayerMapError(f"{self}: needs [n, {h * w * c}], got {list(shape)}")
        return list(shape)

    def forward(self, a: np.ndarray) -> np.ndarray:
        """Source direction -> target direction."""
        if self.name == "reshape":
            return a.reshape(self.shape_after(a.shape))
        if self.name == "transpose":
            self.shape_after(a.shape)
            return a.T
        if self.name == "permute":
            self.shape_after(a.shape)
            return a.transpose(*[int(i) for i in self.args])
        if self.name == "scale":
            return a * np.float32(self.args[0])
        if self.name == "moving_average":
            f = self.args[0]
            return a * np.float32(0.0 if f == 0 else 1.0 / f)
        if self.name == "nhwc_to_nchw":
            self.shape_after(a.shape)
            h, w, c = (int(x) for x in self.args)
            return a.reshape(a.shape[0], h, w, c).transpose(0, 3, 1, 2).reshape(a.shape[0], -1)
        raise LayerMapError(f"{self}: only for rows without a target")  # fold

    def inverse(self, a: np.ndarray, before: Sequence[int]) -> np.ndarray:
        """Target direction -> source direction; ``before`` is the shape this step was given."""
        if self.name == "reshape":
            return a.reshape(before)
        if self.name == "transpose":
            return a.T
        if self.name == "permute":
            return a.transpose(*np.argsort([int(i) for i in self.args]))
        if self.name == "scale":
            return a / np.float32(self.args[0])
        if self.name == "moving_average":
            return a * np.float32(self.args[0])
        if self.name == "nhwc_to_nchw":
            h, w, c = (int(x) for x in self.args)
            return a.reshape(a.shape[0], c, h, w).transpose(0, 2, 3, 1).reshape(a.shape[0], -1)
        raise LayerMapError(f"{self}: only for rows without a target")  # fold


def steps(*texts: str | Step) -> tuple[Step, ...]:
    """``steps("permute(3,2,0,1)", "reshape(64,-1)")`` -> parsed steps."""
    return tuple(t if isinstance(t, Step) else Step.parse(t) for t in texts)


@dataclass(frozen=True)
class LayerMapRow:
    """One source tensor and where it goes."""

    source: str
    blob: int
    target: str | None
    steps: tuple[Step, ...] = ()
    source_shape: tuple[int, ...] = ()
    target_shape: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", steps(*self.steps))
        object.__setattr__(self, "source_shape", tuple(int(d) for d in self.source_shape))
        if self.target_shape is not None:
            object.__setattr__(self, "target_shape", tuple(int(d) for d in self.target_shape))
        folds = [s for s in self.steps if s.name == "fold"]
        if folds and (self.target is not None or len(self.steps) != 1):
            raise LayerMapError(f"{self.source}[{self.blob}]: fold() is a row's only step, without a target")
        if self.target is not None and not folds:
            got = self.shapes()[-1]
            if self.target_shape is not None and list(got) != list(self.target_shape):
                raise LayerMapError(
                    f"{self.source}[{self.blob}] -> {self.target}: steps {self.steps_str()} give "
                    f"{list(got)}, the row says {list(self.target_shape)}"
                )

    def shapes(self) -> list[list[int]]:
        """The tensor's shape before each step and after the last."""
        out = [list(self.source_shape)]
        for s in self.steps:
            if s.name != "fold":
                out.append(s.shape_after(out[-1]))
        return out

    def steps_str(self) -> str:
        return " > ".join(str(s) for s in self.steps) or "-"

    def to_target(self, a: np.ndarray) -> np.ndarray:
        a = np.asarray(a, dtype=np.float32)
        if list(a.shape) != list(self.source_shape):
            raise LayerMapError(
                f"{self.source}[{self.blob}]: source tensor has shape {list(a.shape)}, "
                f"the map says {list(self.source_shape)}"
            )
        for s in self.steps:
            a = s.forward(a)
        return np.ascontiguousarray(a, dtype=np.float32)

    def to_source(self, a: np.ndarray | None) -> np.ndarray:
        if self.target is None:
            f = self.steps[0].args[0] if self.steps else 0.0
            return np.full(self.source_shape, f, np.float32)
        a = np.asarray(a, dtype=np.float32)
        shapes = self.shapes()
        for s, before in zip(reversed(self.steps), reversed(shapes[:-1]), strict=True):
            a = s.inverse(a, before)
        return np.ascontiguousarray(a.reshape(self.source_shape), dtype=np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "blob": self.blob,
            "target": self.target,
            "steps": [str(s) for s in self.steps],
            "source_shape": list(self.source_shape),
            "target_shape": None if self.target_shape is None else list(self.target_shape),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LayerMapRow:
        unknown = set(d) - {"source", "blob", "target", "steps", "source_shape", "target_shape"}
        if unknown:
            raise LayerMapError(f"layer-map row {d.get('source')!r}: unknown keys {sorted(unknown)}")
        return cls(
            source=str(d["source"]),
            blob=int(d["blob"]),
            target=d.get("target"),
            steps=tuple(d.get("steps") or ()),
            source_shape=tuple(d.get("source_shape") or ()),
            target_shape=None if d.get("target_shape") is None else tuple(d["target_shape"]),
        )


def _group(keys: Iterable[str]) -> list[str]:
    """``["a.weight", "a.bias", "b.weight"]`` -> ``["a.{weight, bias}", "b.weight"]`` (detectron2's style)."""
    groups: dict[str, list[str]] = {}
    for k in keys:
        head, _, tail = k.rpartition(".")
        groups.setdefault(head, []).append(tail)
    out = []
    for head, tails in groups.items():
        inner = tails[0] if len(tails) == 1 else "{" + ", ".join(tails) + "}"
        out.append(f"{head}.{inner}" if head else inner)
    return out


@dataclass
class MatchReport:
    """How a state dict (of the model the weights go into) lines up with a layer map."""

    matched: list[str] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)  # in the map, absent from the model
    unexpected: list[str] = field(default_factory=list)  # in the model, absent from the map
    shape_mismatched: list[tuple[str, list[int], list[int]]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.unmatched or self.unexpected or self.shape_mismatched)

    def to_dict(self) -> dict[str, Any]:
        return {
            "matched": self.matched,
            "unmatched": self.unmatched,
            "unexpected": self.unexpected,
            "shape_mismatched": [list(x) for x in self.shape_mismatched],
        }

    def lines(self) -> list[str]:
        """The report in readable lines (grouped keys, as detectron2's checkpointer prints them)."""
        out = [f"matched: {len(self.matched)} tensors"]
        if self.unmatched:
            out.append("in the map but not in the model:")
            out += [f"  {k}" for k in _group(self.unmatched)]
        if self.unexpected:
            out.append("in the model but not in the map (left as initialized):")
            out += [f"  {k}" for k in _group(self.unexpected)]
        for name, want, got in self.shape_mismatched:
            out.append(f"shape mismatch: {name}: {want} in the map, {got} in the model")
        return out


class LayerMap:
    """An ordered list of :class:`LayerMapRow` with the source format it reads."""

    def __init__(
        self, rows: Iterable[LayerMapRow | dict[str, Any]] = (), source_format: str = "caffe"
    ) -> None:
        self.rows = [r if isinstance(r, LayerMapRow) else LayerMapRow.from_dict(r) for r in rows]
        self.source_format = source_format

    def __len__(self) -> int:
        return len(self.rows)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": LAYERMAP_FORMAT,
            "version": LAYERMAP_VERSION,
            "source_format": self.source_format,
            "rows": [r.to_dict() for r in self.rows],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LayerMap:
        if d.get("format") != LAYERMAP_FORMAT:
            raise LayerMapError(f"not a zoo layer map (format {d.get('format')!r})")
        if d.get("version") != LAYERMAP_VERSION:
            raise LayerMapError(
                f"layer map version {d.get('version')!r}, this zoo reads {LAYERMAP_VERSION}: convert again"
            )
        return cls(d.get("rows", []), d.get("source_format", ""))

    @classmethod
    def load(cls, path: str | Path) -> LayerMap:
        p = Path(path)
        try:
            d = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise LayerMapError(f"{p}: cannot read the layer map ({e})") from None
        try:
            return cls.from_dict(d)
        except (KeyError, TypeError, ValueError) as e:
            raise LayerMapError(f"{p}: bad layer map ({e})") from None
        except LayerMapError as e:
            raise LayerMapError(f"{p}: {e}") from None

    def by_target(self) -> dict[str, LayerMapRow]:
        return {r.target: r for r in self.rows if r.target}

    def renamed(self, rename: dict[str, str]) -> LayerMap:
        """The same map pointing at other target names (e.g. a torchvision architecture's keys)."""
        rows = [
            LayerMapRow(
                r.source,
                r.blob,
                rename.get(r.target, r.target) if r.target else None,
                r.steps,
                r.source_shape,
                r.target_shape,
            )
            for r in self.rows
        ]
        return LayerMap(rows, self.source_format)

    def to_target(self, tensors: dict[str, Sequence[np.ndarray]]) -> dict[str, np.ndarray]:
        """Source tensors (``{layer: [arrays]}``) -> the target state dict, in row order."""
        out: dict[str, np.ndarray] = {}
        for r in self.rows:
            if r.target is None:
                continue
            try:
                a = tensors[r.source][r.blob]
            except (KeyError, IndexError):
                raise LayerMapError(f"source tensor {r.source}[{r.blob}] is missing") from None
            out[r.target] = r.to_target(a)
        return out

    def to_source(self, state: dict[str, Any]) -> dict[str, list[np.ndarray]]:
        """A target state dict -> source tensors ``{layer: [arrays in source order]}``."""
        out: dict[str, dict[int, np.ndarray]] = {}
        for r in self.rows:
            a = None
            if r.target is not None:
                t = state[r.target]
                a = t.detach().cpu().numpy() if hasattr(t, "detach") else np.asarray(t)
            out.setdefault(r.source, {})[r.blob] = r.to_source(a)
        return {k: [v[i] for i in sorted(v)] for k, v in out.items()}

    def match(self, state: dict[str, Any]) -> MatchReport:
        """Compare a model's state dict keys and shapes with the map's targets."""
        rep = MatchReport()
        targets = self.by_target()
        for name, r in targets.items():
            if name not in state:
                rep.unmatched.append(name)
                continue
            shape = list(getattr(state[name], "shape", np.shape(state[name])))
            want = list(r.target_shape) if r.target_shape is not None else r.shapes()[-1]
            if shape != want:
                rep.shape_mismatched.append((name, want, shape))
            else:
                rep.matched.append(name)
        rep.unexpected = [k for k in state if k not in targets]
        return rep

    def table(self) -> list[tuple[str, str, str, str]]:
        """``(source tensor, module parameter, steps, shape -> shape)`` per row, for printing."""
        out = []
        for r in self.rows:
            tgt = r.target or "(folded)"
            shp = f"{list(r.source_shape)} -> {list(r.target_shape) if r.target_shape else '-'}"
            out.append((f"{r.source}[{r.blob}]", tgt, r.steps_str(), shp))
        return out
