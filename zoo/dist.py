"""The process's place under torchrun and its device: one implementation for the feature cache
(zoo.features) and the fine-tuning runner (zoo.finetune). torch is imported inside the functions."""

from __future__ import annotations

import atexit
import os
from typing import Any

from zoo.errors import ZooError


def pick_device(device: Any = None) -> Any:
    """``device`` as a torch.device (one line if it names CUDA and there is none); None: this
    rank's CUDA device (``LOCAL_RANK``) when there is one, else the CPU."""
    import torch

    if device:
        d = torch.device(device)
        if d.type == "cuda" and not torch.cuda.is_available():
            raise ZooError(f"--device {device}: no CUDA device here (torch sees none)")
        return d
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    return torch.device("cpu")


def _end(dist: Any) -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


class World:
    """This process's place under torchrun (``WORLD_SIZE`` > 1: the default process group, started
    here when the caller has not, gloo on CPU and nccl with CUDA, plus a gloo group for the small
    messages), or a world of one, where the collectives return their input."""

    def __init__(self) -> None:
        try:
            self.world = max(1, int(os.environ.get("WORLD_SIZE", "1") or 1))
        except ValueError:
            self.world = 1
        self.rank = 0
        self.dist: Any = None
        self.group: Any = None
        if self.world > 1:
            import torch
            import torch.distributed as dist

            if not dist.is_initialized():
                if torch.cuda.is_available():
                    torch.cuda.set_device(pick_device(None))
                dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
                # started here, so ended here: a process that exits with gloo's threads still
                # running aborts ("terminate called without an active exception")
                atexit.register(_end, dist)
            self.dist = dist
            self.rank, self.world = dist.get_rank(), dist.get_world_size()
            self.group = dist.new_group(backend="gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank."""
        if self.dist is None:
            return [obj]
        out: list[Any] = [None] * self.world
        self.dist.all_gather_object(out, obj, group=self.group)
        return out

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if self.dist is None:
            return obj
        box = [obj]
        self.dist.broadcast_object_list(box, src=0, group=self.group)
        return box[0]

    def sum(self, values: list[float]) -> list[float]:
        """The element-wise sum of every rank's ``values``."""
        if self.dist is None:
            return values
        import torch

        t = torch.tensor(values, dtype=torch.float64)
        self.dist.all_reduce(t, group=self.group)
        return t.tolist()
