"""LayerMap: which source tensor becomes which target parameter, how, and with which shapes.

Rows are ``source`` (layer name), ``blob`` (index in that layer), ``target`` (module parameter,
or None for a tensor folded into others such as Caffe BatchNorm's scale factor), ``transform``
and both shapes. Saved as layermap.json beside the weights; applies both ways and reports how a
state dict matches it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

TRANSFORMS = (
    "none",
    "reshape",
    "transpose",
    "reshape+transpose",
    "divide_by_blob2",
    "reshape+divide_by_blob2",
    "scale_factor",
    "rename",
)


@dataclass
class LayerMapRow:
    source: str
    blob: int
    target: str | None
    transform: str = "none"
    source_shape: list[int] | None = None
    target_shape: list[int] | None = None


@dataclass
class MatchReport:
    """How a state dict lines up with a layer map (names are target keys)."""

    matched: list[str] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)  # in the map, absent from the state dict
    unexpected: list[str] = field(default_factory=list)  # in the state dict, absent from the map
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


class LayerMap:
    """An ordered list of :class:`LayerMapRow`."""

    def __init__(
        self, rows: list[LayerMapRow] | list[dict[str, Any]] | None = None, source_format: str = "caffe"
    ) -> None:
        self.rows = [r if isinstance(r, LayerMapRow) else LayerMapRow(**r) for r in (rows or [])]
        self.source_format = source_format

    def __len__(self) -> int:
        return len(self.rows)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "zoo-layermap",
            "version": 1,
            "source_format": self.source_format,
            "rows": [asdict(r) for r in self.rows],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LayerMap:
        return cls(d.get("rows", []), d.get("source_format", "caffe"))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_json(cls, text: str) -> LayerMap:
        return cls.from_dict(json.loads(text))

    @classmethod
    def load(cls, path: str | Path) -> LayerMap:
        return cls.from_json(Path(path).read_text())

    def by_target(self) -> dict[str, LayerMapRow]:
        return {r.target: r for r in self.rows if r.target}

    def renamed(self, rename: dict[str, str]) -> LayerMap:
        """The same map pointing at other target names (e.g. a torchvision architecture's keys)."""
        rows = [
            LayerMapRow(**{**asdict(r), "target": rename.get(r.target, r.target) if r.target else None})
            for r in self.rows
        ]
        return LayerMap(rows, self.source_format)

    # ------------------------------------------------------------------ applying
    def to_target(self, blobs: dict[str, list[np.ndarray]]) -> dict[str, np.ndarray]:
        """Source blobs ({layer: [arrays]}) -> target state dict."""
        out: dict[str, np.ndarray] = {}
        for r in self.rows:
            if not r.target:
                continue
            a = np.asarray(blobs[r.source][r.blob], dtype=np.float32)
            if "transpose" in r.transform:
                a = (a.reshape(r.target_shape[::-1]) if r.target_shape else a).T
            if "divide_by_blob2" in r.transform:
                f = float(np.asarray(blobs[r.source][2]).reshape(-1)[0])
                a = a * np.float32(0.0 if f == 0 else 1.0 / f)
            out[r.target] = np.ascontiguousarray(a.reshape(r.target_shape) if r.target_shape else a)
        return out

    def to_source(
        self, state: dict[str, Any], scale_factors: dict[str, float] | None = None
    ) -> dict[str, list[np.ndarray]]:
        """Target state dict -> source blobs; folded scale factors are ``scale_factors[layer]`` (1)."""
        sf = scale_factors or {}
        out: dict[str, dict[int, np.ndarray]] = {}
        for r in self.rows:
            f = float(sf.get(r.source, 1.0))
            if r.target is None:
                a = np.full(r.source_shape or [1], f, np.float32)
            else:
                a = np.asarray(state[r.target], dtype=np.float32)
                if "divide_by_blob2" in r.transform:
                    a = a * np.float32(f)
                if "transpose" in r.transform:
                    a = a.reshape(r.target_shape or a.shape).T
                if r.source_shape:
                    a = a.reshape(r.source_shape)
            out.setdefault(r.source, {})[r.blob] = np.ascontiguousarray(a, dtype=np.float32)
        return {k: [v[i] for i in sorted(v)] for k, v in out.items()}

    def match(self, state: dict[str, Any]) -> MatchReport:
        """Compare a state dict's keys and shapes with the map's targets."""
        rep = MatchReport()
        targets = self.by_target()
        for name, r in targets.items():
            if name not in state:
                rep.unmatched.append(name)
                continue
            shape = list(getattr(state[name], "shape", np.shape(state[name])))
            if r.target_shape is not None and shape != list(r.target_shape):
                rep.shape_mismatched.append((name, list(r.target_shape), shape))
            else:
                rep.matched.append(name)
        rep.unexpected = [k for k in state if k not in targets]
        return rep
