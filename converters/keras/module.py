"""graph.json -> ``nn.Module`` (submodules named after the source layers), no Keras needed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from converters.keras.ops import KERAS_OPS, Identity

OpTable = dict[str, Callable[[dict[str, Any]], nn.Module]]


def keras_op_table() -> OpTable:
    """The Keras ops under their graph.json names (``keras.<op>``)."""
    return {f"keras.{k}": v for k, v in KERAS_OPS.items()}


class GraphModule(nn.Module):
    """Runs graph nodes in order; one submodule per node, named by the node's ``name``."""

    def __init__(self, graph: dict[str, Any], ops: OpTable | None = None) -> None:
        super().__init__()
        ops = ops if ops is not None else keras_op_table()
        self.graph_inputs = [i["name"] for i in graph["inputs"]]
        self.graph_outputs = list(graph["outputs"])
        self._plan: list[tuple[str, list[str], list[str]]] = []
        for node in graph["nodes"]:
            op = node["op"]
            if op.endswith(".input") or op == "input":
                continue
            if op not in ops:
                raise KeyError(f"graph op {op!r} (node {node['name']!r}) has no PyTorch builder")
            self.add_module(node["name"], ops[op](node.get("attrs", {})))
            self._plan.append((node["name"], list(node["inputs"]), list(node["outputs"])))

    def forward(self, *xs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        env: dict[str, torch.Tensor] = dict(zip(self.graph_inputs, xs, strict=True))
        for name, ins, outs in self._plan:
            y = getattr(self, name)(*[env[i] for i in ins])
            env[outs[0]] = y
        out = tuple(env[o] for o in self.graph_outputs)
        return out[0] if len(out) == 1 else out


__all__ = ["GraphModule", "Identity", "keras_op_table"]
