"""Core data types: ModelCard, FileRef, Checksum, Preprocess, Metric.

Every registry entry, catalogue entry and converted model folder is described by these; they
round-trip through plain JSON dicts (``to_dict`` / ``from_dict``) so the registry file stays data.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from zoo.arch import Architecture, parse_optional

CHECKSUM_ALGOS = ("sha256", "sha256-prefix", "md5", "sha1")


def _prune(d: dict[str, Any]) -> dict[str, Any]:
    """Drop keys whose value is None so JSON stays short and stable."""
    return {k: v for k, v in d.items() if v is not None}


@dataclass(frozen=True)
class Checksum:
    """The checksum a publisher published for a file (``algo`` none: nobody published one)."""

    algo: str | None
    value: str | None = None
    source: str | None = None  # where the value comes from (code, page), for provenance

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Checksum:
        d = d or {}
        return cls(algo=d.get("algo"), value=d.get("value"), source=d.get("source"))

    def to_dict(self) -> dict[str, Any]:
        # "algo" stays even when None: the schema requires it (null = nobody published one).
        return {"algo": self.algo, **_prune({"value": self.value, "source": self.source})}

    @property
    def published(self) -> bool:
        return self.algo is not None and bool(self.value)


@dataclass(frozen=True)
class FileRef:
    """One file of a model: where it lives, how big, and what checksum its publisher gave.

    ``member`` names a file inside a published archive (``name`` is then the archive's file).
    ``hf`` is set for files hosted on the Hugging Face hub: ``{repo_id, filename, revision}``.
    """

    name: str
    urls: tuple[str, ...] = ()
    size: int | None = None
    checksum: Checksum = field(default_factory=lambda: Checksum(None))
    role: str = "weights"  # weights | weights-notop | definition | labels | mean | archive
    member: str | None = None
    hf: dict[str, str] | None = None
    pin: str | None = None  # "first-use" when the sha256 is recorded on the first pull

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FileRef:
        return cls(
            name=d["name"],
            urls=tuple(d.get("urls", ())),
            size=d.get("size"),
            checksum=Checksum.from_dict(d.get("checksum")),
            role=d.get("role", "weights"),
            member=d.get("member"),
            hf=d.get("hf"),
            pin=d.get("pin"),
        )

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": self.name,
            "role": self.role,
            "urls": list(self.urls),
            "size": self.size,
            "checksum": self.checksum.to_dict(),
            "member": self.member,
            "hf": self.hf,
            "pin": self.pin,
        }
        return _prune(d)


@dataclass(frozen=True)
class Preprocess:
    """How to turn an image into the model's input tensor.

    ``scale`` multiplies raw 0-255 pixels first, then ``mean`` is subtracted and the result divided
    by ``std`` (both in the units after scaling, in ``channel_order``). ``unknown`` is True where
    nobody published the preprocessing.
    """

    layout: str = "NCHW"  # NCHW | NHWC
    channel_order: str = "RGB"  # RGB | BGR | GRAY
    scale: float = 1.0 / 255.0
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    input_size: tuple[int, ...] | None = None  # (C, H, W) or (H, W, C) as layout says
    resize: int | None = None
    crop: int | None = None
    interpolation: str | None = None
    transpose_hw: bool = False  # MTCNN feeds images transposed
    mode: str | None = None  # the framework's name for it, e.g. keras 'caffe' / 'tf' / 'torch'
    unknown: bool = False
    note: str | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Preprocess:
        if not d or d.get("unknown") is True and len(d) <= 2:
            return cls(unknown=True, note=(d or {}).get("note"))
        kw: dict[str, Any] = {}
        for f in fields(cls):
            if f.name in d:
                v = d[f.name]
                kw[f.name] = tuple(v) if isinstance(v, list) else v
        return cls(**kw)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        if not d["transpose_hw"]:
            d.pop("transpose_hw")
        if not d["unknown"]:
            d.pop("unknown")
        return _prune(d)


@dataclass(frozen=True)
class Metric:
    """One published number with the dataset it was measured on and where it was read.

    ``resolution`` is the image side length fed to the network when the number was measured and
    ``crop_pct`` the centre-crop fraction used then (crop / resize); None where the source does not
    say. They can differ from the card's own preprocessing (timm measures some weights at a larger
    size than their default crop).
    """

    name: str  # top1 | top5 | ...
    value: float
    dataset: str
    source: str | None = None
    resolution: int | None = None
    crop_pct: float | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Metric:
        res = d.get("resolution")
        pct = d.get("crop_pct")
        return cls(
            d["name"],
            float(d["value"]),
            d["dataset"],
            d.get("source"),
            int(res) if res is not None else None,
            float(pct) if pct is not None else None,
        )

    def to_dict(self) -> dict[str, Any]:
        return _prune(asdict(self))


@dataclass(frozen=True)
class ModelCard:
    """Everything zoo knows about one model (a registry entry, a catalogue entry or a conversion)."""

    id: str  # family/name, e.g. torchvision/resnet50.imagenet1k_v2
    name: str
    source: str  # torchvision | keras | caffe | timm | tf-slim | tensorflow | testdata | user
    framework: str  # pytorch | keras | caffe | onnx | tensorflow
    format: str  # pth | h5 | keras | caffemodel | caffemodel.h5 | safetensors | onnx | ckpt | pb
    task: str = "image-classification"
    dataset: str | None = None
    family: str | None = None
    origin: str = "native"  # "caffe" for weights someone converted from Caffe
    provenance: dict[str, Any] = field(default_factory=dict)
    labels: dict[str, Any] | None = None  # {"set": "imagenet-1k", "count": 1000} or {"names": [...]}
    files: tuple[FileRef, ...] = ()
    architecture: Architecture | None = None
    preprocess: Preprocess = field(default_factory=lambda: Preprocess(unknown=True))
    metrics: tuple[Metric, ...] = ()
    params: int | None = None
    gflops: float | None = None
    license: str | None = None
    tags: tuple[str, ...] = ()
    default_cut: str | None = None  # the feature layer (where the head starts)
    classifier: str | None = None  # the classifier module / layer, as timm's pretrained cfgs name it
    num_classes: int | None = None  # the classifier's outputs
    notes: str | None = None
    # a graph format's tensors (TensorFlow ``op:index`` names of a frozen GraphDef): fed / kept by convert
    inputs: tuple[str, ...] | None = None
    outputs: tuple[str, ...] | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelCard:
        return cls(
            id=d["id"],
            name=d.get("name", d["id"]),
            source=d["source"],
            framework=d["framework"],
            format=d["format"],
            task=d.get("task", "image-classification"),
            dataset=d.get("dataset"),
            family=d.get("family"),
            origin=d.get("origin", "native"),
            provenance=dict(d.get("provenance", {})),
            labels=d.get("labels"),
            files=tuple(FileRef.from_dict(f) for f in d.get("files", ())),
            architecture=parse_optional(d.get("architecture")),
            preprocess=Preprocess.from_dict(d.get("preprocess")),
            metrics=tuple(Metric.from_dict(m) for m in d.get("metrics", ())),
            params=d.get("params"),
            gflops=d.get("gflops"),
            license=d.get("license"),
            tags=tuple(d.get("tags", ())),
            default_cut=d.get("default_cut"),
            classifier=d.get("classifier"),
            num_classes=d.get("num_classes"),
            notes=d.get("notes"),
            inputs=tuple(d["inputs"]) if d.get("inputs") else None,
            outputs=tuple(d["outputs"]) if d.get("outputs") else None,
        )

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "family": self.family,
            "source": self.source,
            "framework": self.framework,
            "format": self.format,
            "origin": self.origin,
            "task": self.task,
            "dataset": self.dataset,
            "provenance": self.provenance,
            "labels": self.labels,
            "files": [f.to_dict() for f in self.files],
            "architecture": self.architecture.to_dict() if self.architecture else None,
            "preprocess": self.preprocess.to_dict(),
            "metrics": [m.to_dict() for m in self.metrics],
            "params": self.params,
            "gflops": self.gflops,
            "license": self.license,
            "tags": list(self.tags),
            "default_cut": self.default_cut,
            "classifier": self.classifier,
            "num_classes": self.num_classes,
            "notes": self.notes,
            "inputs": list(self.inputs) if self.inputs else None,
            "outputs": list(self.outputs) if self.outputs else None,
        }
        # Keys every entry carries even when unknown (null says "not published").
        keep = {"dataset", "labels", "params", "license", "default_cut", "classifier", "num_classes"}
        keep.add("architecture")
        return {k: v for k, v in d.items() if v is not None or k in keep}

    def metric(self, name: str) -> float | None:
        for m in self.metrics:
            if m.name == name:
                return m.value
        return None

    @property
    def top1(self) -> float | None:
        return self.metric("top1")

    def file(self, name: str | None = None) -> FileRef:
        """The file called ``name`` (or the first weights file)."""
        from zoo.errors import ZooError

        if name is None:
            for f in self.files:
                if f.role.startswith("weights"):
                    return f
            if self.files:
                return self.files[0]
            raise ZooError(f"{self.id}: the card lists no files")
        for f in self.files:
            if f.name == name or f.member == name:
                return f
        names = ", ".join(f.name for f in self.files)
        raise ZooError(f"{self.id}: no file named {name!r} (files: {names})")
