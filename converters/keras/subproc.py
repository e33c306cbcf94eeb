"""Run the TensorFlow / Keras side in a child process (never beside torch)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from zoo.errors import ConversionError

ROOT = Path(__file__).resolve().parents[2]


def run_worker(
    args: list[str], env: dict[str, str] | None = None, timeout: float = 1800, script: Path | None = None
) -> str:
    """Run ``python -m converters.keras._worker ARGS`` (or ``python SCRIPT ARGS``, the project on
    its path); return stdout or raise ConversionError."""
    e = dict(os.environ)
    e.update(env or {})
    e["PYTHONPATH"] = str(ROOT) + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
    e.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    e.setdefault("CUDA_VISIBLE_DEVICES", "-1")
    try:
        p = subprocess.run(
            [sys.executable, *([str(script)] if script else ["-m", "converters.keras._worker"]), *args],
            env=e,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        raise ConversionError(f"Keras worker {args[0]} timed out") from None
    if p.returncode != 0:
        lines = [ln.strip() for ln in p.stderr.strip().splitlines() if ln.strip()]
        errs = [ln for ln in lines if re.match(r"^[\w.]*(Error|Exception)\b", ln)]
        last = (errs or lines or [f"exit code {p.returncode}"])[-1]
        if "ModuleNotFoundError" in last:
            last += " (install the zoo[keras] extra)"
        raise ConversionError(f"Keras worker {args[0]} failed: {last}")
    return p.stdout


def tf_keras_predict(model: Path, x: Any) -> Any:
    """tf-keras's output for NHWC input ``x`` (numpy), computed in a subprocess."""
    import numpy as np

    with tempfile.TemporaryDirectory() as td:
        xi, yo = Path(td) / "x.npy", Path(td) / "y.npy"
        np.save(xi, np.asarray(x, dtype=np.float32))
        run_worker(["predict", str(model), str(xi), str(yo)], env={"TF_USE_LEGACY_KERAS": "1"})
        return np.load(yo)


def tf2onnx_convert(model: Path, out: Path, opset: int = 17, arch: str = "") -> dict[str, Any]:
    """Keras file -> ONNX with tf2onnx, in a subprocess; NHWC input kept. Legacy files load in
    tf-keras (a weights-only file with ``arch``: keras.applications:NAME or a tf-keras config
    JSON); Keras 3 ``.keras`` files use Keras 3's own ONNX export on the TensorFlow backend."""
    env = {"TF_USE_LEGACY_KERAS": "1"}
    if str(model).endswith(".keras") and not arch:
        env = {"KERAS_BACKEND": "tensorflow", "TF_USE_LEGACY_KERAS": "0"}
    out_s = run_worker(["onnx", str(model), str(out), str(opset), arch], env=env)
    last = [ln for ln in out_s.splitlines() if ln.startswith("{")]
    return json.loads(last[-1]) if last else {}


def keras_app_config(name: str, kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
    """The config of ``keras.applications.NAME(weights=None, **kwargs)``, built by Keras 3 on the
    torch backend in a subprocess (no TensorFlow)."""
    with tempfile.TemporaryDirectory() as td:
        out = Path(td) / "config.json"
        run_worker(["app-config", name, json.dumps(kwargs or {}), str(out)], env={"KERAS_BACKEND": "torch"})
        return json.loads(out.read_text())


def keras_reference(model: Path, arch: str, xs: list[Any], layers: bool = False) -> dict[str, Any]:
    """The source Keras's outputs on ``xs`` (Keras layout), in a subprocess: tf-keras for legacy
    files (``arch``: "" for a full model, a keras.applications spec or a config JSON path), Keras 3
    on the TensorFlow backend for ``.keras`` / ``.weights.h5``. Returns ``{"__label__": str,
    "__outputs__": [names], name: array}``, with every layer's output when ``layers``."""
    import numpy as np

    with tempfile.TemporaryDirectory() as td:
        ins = []
        for i, x in enumerate(xs):
            p = Path(td) / f"x{i}.npy"
            np.save(p, np.asarray(x, dtype=np.float32))
            ins.append(str(p))
        out = Path(td) / "y.npz"
        run_worker(
            ["reference", str(model), arch, str(out), "1" if layers else "0", *ins],
            env={"TF_USE_LEGACY_KERAS": "1"},
        )
        with np.load(out, allow_pickle=False) as z:
            res: dict[str, Any] = {k: z[k] for k in z.files}
    meta = json.loads(str(res.pop("__meta__")))
    res["__label__"] = meta["label"]
    res["__outputs__"] = meta["outputs"]
    return res
