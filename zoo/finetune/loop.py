"""The fine-tuning runner: two stages (the head on a frozen base, then the top of the base too),
exact checkpoints and resume, CPU / CUDA (autocast, channels_last, pinned memory), torchrun (DDP).

Imports torch at module level: only the training commands import it.

Exactness: every source of randomness is owned here and saved in each checkpoint. The epoch's
order is a permutation drawn from ``(seed, epoch)``; each training image's augmentation is drawn
from ``(seed, epoch, index)`` (zoo.data.Loader's ``aug_seed``), so no DataLoader worker state
matters; dropout draws from torch's global generators, whose states a checkpoint holds; the
DataLoader has a generator of its own. A checkpoint is taken at an optimizer step (never inside
a gradient accumulation) and holds the model, optimizer, scheduler, scaler, every RNG state, the
stage, epoch and batch reached and the epoch's running sums, so a resumed run adds the same
numbers in the same order as one that never stopped.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from zoo.dist import World
from zoo.errors import ZooError
from zoo.finetune.config import HeadSpec, Options
from zoo.finetune.model import (
    FineTuneModel,
    Head,
    base_groups,
    head_input_shape,
    layer_modules,
    layers_upto,
    lowest_layer_of,
)

log = logging.getLogger("zoo.finetune")

CHECKPOINT = "checkpoints/last.pt"
CHECKPOINT_FORMAT = 1


# ------------------------------------------------------------------ processes and devices
def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype: ``auto`` is bf16 on a CUDA device that supports it, else fp16 (with a
    gradient scaler); off on the CPU. ``bf16`` also runs on the CPU."""
    if amp == "off":
        return None
    if amp == "bf16":
        return torch.bfloat16
    if amp == "fp16":
        if device.type != "cuda":
            raise ZooError("--amp fp16 needs a CUDA device (on the CPU use --amp bf16)")
        return torch.float16
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


# ------------------------------------------------------------------ checkpoints
def _fsync_dir(d: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def save_atomic(obj: Any, path: Path) -> None:
    """``torch.save`` into a temporary file beside ``path``, fsync, rename, fsync the folder: a kill
    at any moment leaves the old file or the new one, never a torn one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def save_weights(state: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    """A state dict as safetensors (contiguous CPU copies), atomically."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_file({k: v.detach().cpu().contiguous().clone() for k, v in state.items()}, str(tmp), metadata)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)  # no pickled code runs
    except Exception as e:  # noqa: BLE001 - torch raises many types for a bad file
        raise ZooError(f"{path}: not a readable checkpoint ({type(e).__name__}: {str(e)[:200]})") from None
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        raise ZooError(f"{path}: not a zoo fine-tuning checkpoint")
    return ck


def rng_state() -> dict[str, Any]:
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": list(random.getstate()[1]),
        "python_version": random.getstate()[0],
        "python_gauss": random.getstate()[2],
    }


def set_rng_state(s: dict[str, Any]) -> None:
    torch.set_rng_state(s["torch"])
    if s.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])
    random.setstate((s["python_version"], tuple(s["python"]), s["python_gauss"]))


# ------------------------------------------------------------------ the built network
@dataclass
class Built:
    """The network and what the runner needs to know about it."""

    net: FineTuneModel
    full: nn.Module  # the loaded zoo model (the base is a cut of it, sharing its parameters)
    cut: str
    in_shape: tuple[int, ...]
    input_size: tuple[int, int, int]


def resolve_cut(full: nn.Module, card: Any, opts: Options) -> str:
    names = [r.name for r in full.layers()]
    if opts.drop_top is not None:
        rows = [n for n, _ in layer_modules(full)]
        tops = [n for n in rows if not any(k.startswith(n + ".") for k in rows)]
        if opts.drop_top >= len(tops):
            raise ZooError(f"--drop-top {opts.drop_top}: the model has {len(tops)} layers")
        return tops[len(tops) - 1 - opts.drop_top]
    layer = opts.cut or card.default_cut
    if not layer:
        raise ZooError(f"{card.id}: the card names no default cut: give --cut (see zoo layers)")
    if layer not in names:
        import difflib

        close = difflib.get_close_matches(layer, names, n=5)
        raise ZooError(
            f"--cut: no layer {layer!r} in this model" + (f" (close: {', '.join(close)})" if close else "")
        )
    return layer


def build(
    model_ref: Any, card: Any, opts: Options, num_classes: int, input_size: tuple[int, int, int], home: Any
) -> Built:
    """The loaded model cut at the resolved layer, a new head for ``num_classes`` (initialized from
    ``opts.seed``), stage 1's freeze policy applied."""
    from zoo.models import load

    kw = {"mirrors": opts.mirrors} if opts.mirrors else {}
    full = load(model_ref, home=home, **kw)
    layer = resolve_cut(full, card, opts)
    base = full.cut(layer)
    in_shape = head_input_shape(base, input_size)
    torch.manual_seed(opts.seed)
    head = Head(HeadSpec.parse(opts.head), in_shape, num_classes)
    net = FineTuneModel(base, head, train_bn=opts.train_bn).attach(full, layer)
    net.input_size = input_size
    built = Built(net, full, layer, in_shape, input_size)
    if opts.unfreeze.startswith("upto:"):  # checked now, not when stage 2 begins
        layers_upto(full, opts.unfreeze[5:], "--unfreeze")
    apply_stage(built, opts, 1)
    return built


def apply_stage(b: Built, opts: Options, stage: int) -> None:
    """Stage 1: ``--freeze``; stage 2: ``--unfreeze`` (from what stage 1 froze)."""
    net, full = b.net, b.full
    if stage == 1:
        if opts.freeze == "all":
            net.set_frozen([net.base])
        elif opts.freeze == "none":
            net.set_frozen([])
        else:
            net.set_frozen(layers_upto(full, opts.freeze[5:], "--freeze")[0])
        return
    u = opts.unfreeze
    if u == "all":
        net.set_frozen([])
    elif u.startswith("upto:"):
        rows = [n for n, _ in layer_modules(full)]
        name = u[5:]
        if name not in rows:
            layers_upto(full, name, "--unfreeze")  # raises, naming the close ones
        i = rows.index(name)
        net.set_frozen(layers_upto(full, rows[i - 1], "--unfreeze")[0] if i > 0 else [])
    else:
        g = base_groups(full, net.base)
        k = int(u)
        if k >= len(g.params):
            net.set_frozen([])
        else:
            top = [p for ps in g.params[-k:] for p in ps]
            j = lowest_layer_of(full, top)
            rows = [n for n, _ in layer_modules(full)]
            net.set_frozen(layers_upto(full, rows[j - 1], "--unfreeze")[0] if j else [])


def param_groups(b: Built, opts: Options, stage: int) -> list[dict[str, Any]]:
    """The optimizer's groups: the head at the stage's learning rate; each trainable block of the
    base at that rate x ``lr_mult``, x ``layer_decay`` per block below the top one; no weight decay
    on biases and norm weights (1-d parameters)."""
    lr = opts.lr if stage == 1 else opts.stage2_lr_value
    groups: list[dict[str, Any]] = []

    def add(params: list[nn.Parameter], group_lr: float, name: str) -> None:
        live = [p for p in params if p.requires_grad]
        decay = [p for p in live if p.ndim > 1]
        flat = [p for p in live if p.ndim <= 1]
        if decay:
            groups.append({"params": decay, "lr": group_lr, "weight_decay": opts.weight_decay, "name": name})
        if flat:
            groups.append({"params": flat, "lr": group_lr, "weight_decay": 0.0, "name": f"{name}.no_decay"})

    add(list(b.net.head.parameters()), lr, "head")
    g = base_groups(b.full, b.net.base)
    trainable = [i for i, ps in enumerate(g.params) if any(p.requires_grad for p in ps)]
    for depth, i in enumerate(reversed(trainable)):
        add(g.params[i], lr * opts.lr_mult * opts.layer_decay**depth, f"base.{i}")
    return groups


def make_optimizer(groups: list[dict[str, Any]], opts: Options) -> torch.optim.Optimizer:
    clean = [{k: v for k, v in gr.items() if k != "name"} for gr in groups]
    if opts.opt == "sgd":
        return torch.optim.SGD(clean, lr=clean[0]["lr"], momentum=opts.momentum)
    if opts.opt == "rmsprop":
        return torch.optim.RMSprop(clean, lr=clean[0]["lr"], momentum=opts.momentum, alpha=0.9, eps=1e-3)
    return torch.optim.AdamW(clean, lr=clean[0]["lr"])


def make_schedule(opt: torch.optim.Optimizer, opts: Options, epochs: int, steps_per_epoch: int) -> Any:
    """Stepped once per optimizer step (plateau: once per epoch on the validation loss)."""
    total = max(1, epochs * steps_per_epoch)
    warm = min(total - 1, int(round(opts.warmup_epochs * steps_per_epoch)))
    if opts.sched == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=[g["lr"] for g in opt.param_groups], total_steps=total, pct_start=0.25
        )
    if opts.sched == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.1, patience=2)

    def factor(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        if opts.sched == "none":
            return 1.0
        t = (step - warm) / max(1, total - warm)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


# ------------------------------------------------------------------ the run
@dataclass
class RunState:
    """Where a run is: what a checkpoint restores."""

    stage: int = 1
    epoch: int = 0  # epochs finished in this stage
    batch: int = 0  # batches of the current epoch done
    sums: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])  # loss x n, correct, n
    history: list[dict[str, Any]] = field(default_factory=list)
    best_loss: float = math.inf
    best_epoch: int = 0
    bad_epochs: int = 0
    done: bool = False
    stopped_early: dict[str, int] = field(default_factory=dict)
    epoch_lr: float = 0.0  # the head's learning rate as the current epoch began

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "epoch": self.epoch,
            "batch": self.batch,
            "sums": list(self.sums),
            "history": self.history,
            "best_loss": self.best_loss,
            "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs,
            "done": self.done,
            "stopped_early": self.stopped_early,
            "epoch_lr": self.epoch_lr,
        }


def epoch_order(n: int, seed: int, epoch: int, weights: torch.Tensor | None = None) -> list[int]:
    """The epoch's sample order: a permutation of ``range(n)`` from ``(seed, epoch)``, or with
    ``weights`` (the balanced sampler) ``n`` draws with replacement."""
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    if weights is not None:
        return torch.multinomial(weights, n, replacement=True, generator=g).tolist()
    return torch.randperm(n, generator=g).tolist()


def shard(order: list[int], rank: int, world: int) -> list[int]:
    """This rank's samples (DistributedSampler's rule: padded by repeating the start, then every
    ``world``-th): every rank takes as many steps."""
    if world == 1:
        return order
    per = math.ceil(len(order) / world)
    padded = order + order[: per * world - len(order)]
    return padded[rank::world]


@dataclass
class Trainer:
    """One run: the data, the network, its optimizer and schedule, and the state it is in."""

    opts: Options
    run_dir: Path
    built: Built
    transform: Any
    imgs: Any
    classes: list[str]
    world: World
    device: torch.device
    cached: dict[str, Any] | None  # {"X": {split: tensor}, "y": {...}} when stage 1 reads the cache
    state: RunState = field(default_factory=RunState)
    optimizer: Any = None
    schedule: Any = None
    scaler: Any = None
    on_progress: Any = None

    # -- setup per stage
    def stage_epochs(self, stage: int) -> int:
        return self.opts.epochs if stage == 1 else self.opts.stage2_epochs

    def uses_cache(self, stage: int) -> bool:
        return stage == 1 and self.cached is not None

    def n_train(self, stage: int) -> int:
        if self.uses_cache(stage):
            return int(self.cached["y"]["train"].shape[0])  # type: ignore[index]
        return len(self.imgs.splits["train"])

    def steps_per_epoch(self, stage: int) -> int:
        n = len(shard(list(range(self.n_train(stage))), self.world.rank, self.world.world))
        batches = math.ceil(n / self.opts.batch_size)
        return math.ceil(batches / self.opts.accumulate)

    def setup_stage(self, stage: int) -> None:
        apply_stage(self.built, self.opts, stage)
        self.optimizer = make_optimizer(param_groups(self.built, self.opts, stage), self.opts)
        self.schedule = make_schedule(
            self.optimizer, self.opts, self.stage_epochs(stage), self.steps_per_epoch(stage)
        )
        dt = amp_dtype(self.opts.amp, self.device)
        self.scaler = torch.amp.GradScaler("cuda") if dt == torch.float16 else None
        module = self.built.net.head.mlp if self.uses_cache(stage) else self.built.net
        self.module = module
        self.step_module: nn.Module = module
        if self.world.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.step_module = DDP(module, device_ids=ids)
        if self.opts.compile:
            self.step_module = torch.compile(self.step_module)

    # -- checkpoints
    def checkpoint(self) -> None:
        """Every rank's RNG states and running sums to rank 0, which writes the checkpoint."""
        mine = {"rng": rng_state(), "sums": list(self.state.sums)}
        ranks = self.world.gather(mine)
        if not self.world.main:
            return
        ck = {
            "format": CHECKPOINT_FORMAT,
            "state": self.state.to_dict(),
            "model": self.built.net.state_dict(),
            "optimizer": self.optimizer.state_dict() if self.optimizer is not None else None,
            "schedule": self.schedule.state_dict() if self.schedule is not None else None,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "ranks": ranks,
        }
        save_atomic(ck, self.run_dir / CHECKPOINT)
        meta = {
            "stage": self.state.stage,
            "epoch": self.state.epoch,
            "batch": self.state.batch,
            "done": self.state.done,
        }
        from zoo.fileio import atomic_write_json

        atomic_write_json(self.run_dir / "checkpoints" / "last.json", meta)

    def restore(self, ck: dict[str, Any]) -> None:
        s = ck["state"]
        self.state = RunState(**s)
        self.built.net.load_state_dict(ck["model"])
        if self.state.done:
            return
        if ck["optimizer"] is not None:  # mid-stage (else the stage starts afresh in run())
            self.setup_stage(self.state.stage)
            self.optimizer.load_state_dict(ck["optimizer"])
            if ck["schedule"] is not None and self.schedule is not None:
                self.schedule.load_state_dict(ck["schedule"])
            if ck["scaler"] is not None and self.scaler is not None:
                self.scaler.load_state_dict(ck["scaler"])
        else:
            apply_stage(self.built, self.opts, self.state.stage)
        mine = ck["ranks"][self.world.rank] if len(ck["ranks"]) == self.world.world else None
        if mine is None:
            raise ZooError(
                f"{self.run_dir}: the checkpoint was written by {len(ck['ranks'])} process(es), this run has "
                f"{self.world.world}: resume with the same torchrun --nproc_per_node"
            )
        set_rng_state(mine["rng"])
        self.state.sums = list(mine["sums"])

    # -- batches
    def _autocast(self) -> Any:
        dt = amp_dtype(self.opts.amp, self.device)
        if dt is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dt)

    def _loss_fn(self) -> nn.Module:
        weight = None
        if self.opts.class_weights:
            counts = np.bincount([y for _, y in self.imgs.splits["train"]], minlength=len(self.classes))
            w = len(self.imgs.splits["train"]) / (len(self.classes) * np.maximum(counts, 1))
            weight = torch.tensor(w, dtype=torch.float32, device=self.device)
        return nn.CrossEntropyLoss(weight=weight, label_smoothing=self.opts.label_smoothing)

    def _sample_weights(self) -> torch.Tensor | None:
        if not self.opts.balanced_sampler:
            return None
        ys = self.cached["y"]["train"] if self.uses_cache(self.state.stage) else None  # type: ignore[index]
        labels = np.asarray(ys if ys is not None else [y for _, y in self.imgs.splits["train"]])
        counts = np.bincount(labels, minlength=len(self.classes))
        return torch.tensor(1.0 / np.maximum(counts[labels], 1), dtype=torch.float64)

    def _prep(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        if self.device.type == "cuda" and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _batches(self, stage: int, order: list[int], train: bool, epoch_seed: int) -> Any:
        """(x, y) batches of the training split (or the validation split) in ``order``."""
        bs = self.opts.batch_size
        split = "train" if train else "val"
        if self.uses_cache(stage):
            X, Y = self.cached["X"][split], self.cached["y"][split]  # type: ignore[index]
            for i in range(0, len(order), bs):
                idx = torch.tensor(order[i : i + bs], dtype=torch.long)
                yield X[idx], Y[idx]
            return
        from zoo.data import Loader

        loader = Loader(
            self.imgs.splits[split],
            self.transform,
            batch_size=bs,
            workers=self.opts.workers,
            train=train and self.opts.augment,
            order=order,
            aug_seed=epoch_seed if train and self.opts.augment else None,
            pin_memory=self.device.type == "cuda",
            progress=self.world.main and sys.stderr.isatty(),
            description=f"stage {stage} epoch {self.state.epoch + 1}" if train else "validation",
            seed=epoch_seed,
        )
        # the Loader drops undecodable files from a batch: the batches keep their boundaries
        for b in loader:
            yield b["x"], b["y"]

    # -- one epoch
    def train_epoch(self, stage: int) -> None:
        st, opts = self.state, self.opts
        global_epoch = sum(self.stage_epochs(s) for s in range(1, stage)) + st.epoch + 1
        weights = self._sample_weights()
        order = shard(
            epoch_order(self.n_train(stage), opts.seed, global_epoch, weights),
            self.world.rank,
            self.world.world,
        )
        start = st.batch * opts.batch_size
        n_batches = math.ceil(len(order) / opts.batch_size)
        loss_fn = self._loss_fn()
        self.module.train()  # FineTuneModel.train keeps the frozen part in eval mode
        sched_per_step = not isinstance(self.schedule, torch.optim.lr_scheduler.ReduceLROnPlateau)
        if st.batch == 0:
            st.epoch_lr = float(self.optimizer.param_groups[0]["lr"])
        b = st.batch
        accumulated = 0
        for x, y in self._batches(stage, order[start:], True, opts.seed * 100_003 + global_epoch):
            x, y = self._prep(x), y.to(self.device)
            last = b == n_batches - 1
            boundary = (b + 1) % opts.accumulate == 0 or last
            sync = contextlib.nullcontext()
            if self.world.world > 1 and not boundary and hasattr(self.step_module, "no_sync"):
                sync = self.step_module.no_sync()
            with sync:
                with self._autocast():
                    out = self.step_module(x)
                    loss = loss_fn(out.float(), y)
                scaled = loss / opts.accumulate
                if self.scaler is not None:
                    self.scaler.scale(scaled).backward()
                else:
                    scaled.backward()
            accumulated += 1
            st.sums[0] += float(loss.detach()) * len(y)
            st.sums[1] += float((out.detach().argmax(1) == y).sum())
            st.sums[2] += len(y)
            b += 1
            st.batch = b
            if boundary:
                self._step(sched_per_step)
                accumulated = 0
                step = math.ceil(b / opts.accumulate)
                if opts.checkpoint_every and step % opts.checkpoint_every == 0 and not last:
                    self.checkpoint()
        if accumulated:  # the last batches were dropped whole (no file of theirs decoded)
            self._step(sched_per_step)

    def _step(self, sched_per_step: bool) -> None:
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if sched_per_step:
            self.schedule.step()

    @torch.no_grad()
    def validate(self, stage: int) -> tuple[float, float]:
        """(mean loss, accuracy) on the validation split, every rank a contiguous share."""
        n = (
            int(self.cached["y"]["val"].shape[0])  # type: ignore[index]
            if self.uses_cache(stage)
            else len(self.imgs.splits["val"])
        )
        r, w = self.world.rank, self.world.world
        order = list(range(r * n // w, (r + 1) * n // w))
        module = self.module
        module.eval()
        loss_fn = nn.CrossEntropyLoss(reduction="sum")
        sums = [0.0, 0.0, 0.0]
        for x, y in self._batches(stage, order, False, 0):
            x, y = self._prep(x), y.to(self.device)
            with self._autocast():
                out = module(x)
            sums[0] += float(loss_fn(out.float(), y))
            sums[1] += float((out.argmax(1) == y).sum())
            sums[2] += len(y)
        tot = self.world.sum(sums)
        if not tot[2]:
            raise ZooError("no validation image could be decoded")
        return tot[0] / tot[2], tot[1] / tot[2]

    def end_epoch(self, stage: int) -> bool:
        """Metrics, schedule, best weights, early stopping, checkpoint; True when the stage ends early."""
        st, opts = self.state, self.opts
        tr = self.world.sum(list(st.sums))
        val_loss, val_acc = self.validate(stage)
        st.epoch += 1
        st.batch = 0
        st.sums = [0.0, 0.0, 0.0]
        row = {
            "stage": stage,
            "epoch": len(st.history) + 1,
            "train_loss": tr[0] / max(tr[2], 1),
            "train_acc": tr[1] / max(tr[2], 1),
            "val_loss": val_loss,
            "val_acc": val_acc,
            "lr": st.epoch_lr,
        }
        st.history.append(row)
        if isinstance(self.schedule, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.schedule.step(val_loss)
        improved = val_loss < st.best_loss
        if improved:
            st.best_loss, st.best_epoch, st.bad_epochs = val_loss, row["epoch"], 0
            if self.world.main:
                save_weights(self.built.net.state_dict(), self.run_dir / "model.safetensors")
        else:
            st.bad_epochs += 1
        stop = bool(
            opts.early_stop and st.bad_epochs >= opts.early_stop and st.epoch < self.stage_epochs(stage)
        )
        if stop:
            st.stopped_early[str(stage)] = row["epoch"]
        if self.world.main:
            log.info(
                "stage %d epoch %d/%d: train loss %.4f acc %.4f, val loss %.4f acc %.4f, lr %.3g",
                stage,
                st.epoch,
                self.stage_epochs(stage),
                row["train_loss"],
                row["train_acc"],
                val_loss,
                val_acc,
                row["lr"],
            )
            if self.on_progress is not None:
                self.on_progress(row)
        return stop

    def run(self) -> None:
        st = self.state
        t0 = time.perf_counter()
        while not st.done:
            stage = st.stage
            if self.optimizer is None:
                self.setup_stage(stage)
            stop = False
            while st.epoch < self.stage_epochs(stage) and not stop:
                self.train_epoch(stage)
                stop = self.end_epoch(stage)
                self.checkpoint()
            if stage == 1 and self.opts.stage2_epochs > 0:
                st.stage, st.epoch, st.batch, st.bad_epochs = 2, 0, 0, 0
                self.optimizer = self.schedule = self.scaler = None
                self.checkpoint()  # a resumed run starts stage 2 here: unfrozen, a fresh optimizer
            else:
                st.done = True
                self.checkpoint()
        self.seconds = time.perf_counter() - t0
