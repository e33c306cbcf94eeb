"""What a fine-tuning run is asked to do (``config.json``'s ``options``): every ``zoo finetune``
option, checked once, JSON both ways. No torch here."""

from __future__ import annotations

import dataclasses
import difflib
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from zoo.errors import ZooError

OPTIMIZERS = ("sgd", "adamw", "rmsprop")
SCHEDULES = ("cosine", "onecycle", "plateau", "none")
AMP = ("auto", "bf16", "fp16", "off")
POOLS = ("avg", "max", "avgmax", "none")
ACTIVATIONS = ("relu", "gelu", "silu", "tanh", "leaky_relu")


@dataclass(frozen=True)
class HeadSpec:
    """``--head`` as ``key=value`` pairs joined by commas, e.g. ``pool=avg,hidden=256x128,act=gelu,
    dropout=0.3``: pooling of a feature map (avg | max | avgmax: both concatenated | none: flatten),
    hidden linear layers (each followed by the activation and dropout), the dropout before the
    final linear layer. The default: ``pool=avg,dropout=0.2`` (pooling + dropout + linear)."""

    pool: str = "avg"
    hidden: tuple[int, ...] = ()
    act: str = "relu"
    dropout: float = 0.2

    @classmethod
    def parse(cls, text: str | None) -> HeadSpec:
        if text is None or not text.strip():
            return cls()
        kw: dict[str, Any] = {}
        for part in text.split(","):
            key, eq, value = part.strip().partition("=")
            key, value = key.strip(), value.strip()
            if not eq or not value:
                raise ZooError(
                    f"--head {text!r}: {part.strip()!r} is not key=value (keys: pool, hidden, act, dropout)"
                )
            if key == "pool":
                if value not in POOLS:
                    raise ZooError(f"--head: pool={value!r}: one of {', '.join(POOLS)}")
                kw["pool"] = value
            elif key == "hidden":
                try:
                    sizes = (
                        tuple(int(v) for v in re.split(r"[x-]", value)) if value not in ("0", "none") else ()
                    )
                except ValueError:
                    raise ZooError(f"--head: hidden={value!r}: sizes like 512 or 512x256") from None
                if any(s <= 0 for s in sizes):
                    raise ZooError(f"--head: hidden={value!r}: sizes must be positive")
                kw["hidden"] = sizes
            elif key == "act":
                if value not in ACTIVATIONS:
                    raise ZooError(f"--head: act={value!r}: one of {', '.join(ACTIVATIONS)}")
                kw["act"] = value
            elif key == "dropout":
                try:
                    p = float(value)
                except ValueError:
                    raise ZooError(f"--head: dropout={value!r}: a number in [0, 1)") from None
                if not 0.0 <= p < 1.0:
                    raise ZooError(f"--head: dropout={value!r}: a number in [0, 1)")
                kw["dropout"] = p
            else:
                close = difflib.get_close_matches(key, ["pool", "hidden", "act", "dropout"], n=1)
                raise ZooError(
                    f"--head: unknown key {key!r}"
                    + (f" (did you mean {close[0]}?)" if close else "")
                    + " (keys: pool, hidden, act, dropout)"
                )
        return cls(**kw)

    def text(self) -> str:
        hidden = "x".join(str(h) for h in self.hidden) or "0"
        return f"pool={self.pool},hidden={hidden},act={self.act},dropout={self.dropout:g}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        return d


@dataclass
class Options:
    """The options of ``zoo finetune`` (the CLI's flags, same names with ``_``)."""

    cut: str | None = None
    drop_top: int | None = None
    freeze: str = "all"  # all | none | upto:LAYER
    head: str | None = None  # HeadSpec text
    train_bn: bool = False
    epochs: int = 5
    lr: float = 1e-3
    cache_features: bool = False
    unfreeze: str = "all"  # all | TOP_K | upto:LAYER
    stage2_epochs: int = 0
    stage2_lr: float | None = None  # default lr / 10
    lr_mult: float = 0.1
    layer_decay: float = 1.0
    opt: str = "adamw"
    momentum: float = 0.9
    weight_decay: float = 1e-4
    sched: str = "cosine"
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    class_weights: bool = False
    balanced_sampler: bool = False
    accumulate: int = 1
    early_stop: int | None = None  # patience in epochs on validation loss
    batch_size: int = 32
    workers: int | None = None
    augment: bool = False
    val_fraction: float | None = 0.2
    seed: int = 0
    device: str | None = None
    amp: str = "auto"
    compile: bool = False
    checkpoint_every: int | None = None
    mirrors: list[str] = field(default_factory=list)

    def check(self) -> Options:
        """One ZooError line for the first option out of range."""
        if self.cut and self.drop_top is not None:
            raise ZooError("give --cut or --drop-top, not both")
        if self.drop_top is not None and self.drop_top < 0:
            raise ZooError("--drop-top: a count >= 0")
        if not (self.freeze in ("all", "none") or self.freeze.startswith("upto:")):
            raise ZooError(f"--freeze {self.freeze!r}: all, none or upto:LAYER")
        u = self.unfreeze
        if not (u in ("all",) or u.startswith("upto:") or (u.isdigit() and int(u) > 0)):
            raise ZooError(f"--unfreeze {u!r}: all, a number of top blocks (>= 1) or upto:LAYER")
        for name in ("epochs", "stage2_epochs"):
            if getattr(self, name) < 0:
                raise ZooError(f"--{name.replace('_', '-')}: a count >= 0")
        if self.epochs + self.stage2_epochs == 0:
            raise ZooError("nothing to train: --epochs and --stage2-epochs are both 0")
        for name in ("lr", "lr_mult", "layer_decay"):
            if not getattr(self, name) > 0:
                raise ZooError(f"--{name.replace('_', '-')}: a number > 0")
        if self.stage2_lr is not None and not self.stage2_lr > 0:
            raise ZooError("--stage2-lr: a number > 0")
        if self.opt not in OPTIMIZERS:
            raise ZooError(f"--opt {self.opt!r}: one of {', '.join(OPTIMIZERS)}")
        if self.sched not in SCHEDULES:
            raise ZooError(f"--sched {self.sched!r}: one of {', '.join(SCHEDULES)}")
        if self.amp not in AMP:
            raise ZooError(f"--amp {self.amp!r}: one of {', '.join(AMP)}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ZooError("--label-smoothing: a number in [0, 1)")
        if self.accumulate < 1 or self.batch_size < 1:
            raise ZooError("--accumulate and --batch-size: counts >= 1")
        if self.checkpoint_every is not None and self.checkpoint_every < 1:
            raise ZooError("--checkpoint-every: a count of steps >= 1")
        if self.early_stop is not None and self.early_stop < 1:
            raise ZooError("--early-stop: a patience of epochs >= 1")
        if self.warmup_epochs < 0:
            raise ZooError("--warmup-epochs: a number >= 0")
        if self.val_fraction is not None and not 0.0 < self.val_fraction < 1.0:
            raise ZooError("--val-fraction: a fraction in (0, 1)")
        HeadSpec.parse(self.head)  # a head spec that does not parse: one line now
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Options:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ZooError(f"config.json: unknown options {', '.join(unknown)} (a run of a newer zoo?)")
        return cls(**d)

    @property
    def stage2_lr_value(self) -> float:
        return self.stage2_lr if self.stage2_lr is not None else self.lr / 10
