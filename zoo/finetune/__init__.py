"""Fine-tuning (``zoo finetune`` / ``zoo evaluate``): a zoo model cut at a layer, a new head,
stage 1 on the frozen base (from the feature cache when it can), stage 2 with the top of the base
unfrozen; exact checkpoints and ``--resume``; CPU or CUDA, one process or torchrun; the reports.

Importing this package is cheap; torch loads with the first call. ``zoo.finetune(...)`` calls
:func:`finetune`.

- ``config.py``: the options (no torch) and the head spec;
- ``model.py``: the head, the base + head network and its freeze policy;
- ``loop.py``: the training loop, checkpoints, devices, DDP;
- ``run.py``: a run end to end: run folder, config.json, resume checks, the final evaluation and
  reports, :func:`evaluate`, :func:`load_run`.
"""

from __future__ import annotations

import sys
import types
from typing import Any


def finetune(model: Any = None, data: Any = None, out: Any = None, **kw: Any) -> Any:
    """See :func:`zoo.finetune.run.finetune`."""
    from zoo.finetune.run import finetune as _run

    return _run(model, data, out, **kw)


def evaluate(run_dir: Any, data: Any, **kw: Any) -> Any:
    """See :func:`zoo.finetune.run.evaluate`."""
    from zoo.finetune.run import evaluate as _evaluate

    return _evaluate(run_dir, data, **kw)


def load_run(run_dir: Any, **kw: Any) -> Any:
    """See :func:`zoo.finetune.run.load_run`."""
    from zoo.finetune.run import load_run as _load

    return _load(run_dir, **kw)


class _CallableModule(types.ModuleType):
    """``zoo.finetune(...)`` calls :func:`finetune`."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return finetune(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
