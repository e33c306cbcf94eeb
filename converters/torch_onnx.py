"""torchvision (or any ``nn.Module``) -> ONNX: one file, dynamic batch, verified with onnxruntime.

Uses the dynamo exporter (``torch.onnx.export(..., dynamo=True, external_data=False)``); the
model is checked with ``onnx.checker`` and compared with PyTorch on the same inputs.
"""

from __future__ import annotations

import os
import pickle
import re
import tempfile
from pathlib import Path
from typing import Any

from zoo.errors import ConversionError, VerificationError
from zoo.fileio import current_umask

DEFAULT_OPSET = 18

# input sizes that differ from 224 x 224
INPUT_SIZES = {"inception_v3": 299}


def load_state_dict(path: str | Path) -> dict[str, Any]:
    """A ``.pth`` / ``.pt`` / ``.safetensors`` state dict, never running pickled code."""
    import torch

    p = Path(path)
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(p))
    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # the weights-only unpickler met an object it will not build
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        what = f" ({found.group(1)})" if found else ""
        raise ConversionError(
            f"{p.name}: refused: a pickle holding objects beyond tensors{what} would run code when "
            "loaded (zoo reads .pth files with weights_only=True only); save a state_dict() or safetensors"
        ) from None
    except Exception as e:  # noqa: BLE001  (torch raises several types for corrupt files)
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConversionError(f"{p.name}: not a loadable PyTorch state dict ({msg})") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ConversionError(f"{p.name}: holds a {type(obj).__name__}, not a state dict")
    return obj


def torchvision_kwargs(name: str, state: dict[str, Any]) -> dict[str, Any]:
    """Builder arguments torchvision itself uses for published weights of ``name``: googlenet /
    inception_v3 take ``transform_input=True`` and aux heads only when the state dict has them."""
    if name not in ("googlenet", "inception_v3"):
        return {}
    aux = any(k.startswith(("aux", "AuxLogits")) for k in state)
    return {"transform_input": True, "aux_logits": aux, "init_weights": False}


def build_torchvision(name: str, weights: str | Path | None = None, **kwargs: Any) -> Any:
    """``torchvision.models.<name>(weights=None)`` with a local state dict loaded (strict).

    googlenet / inception_v3 are built as torchvision builds them for its published weights:
    ``transform_input=True`` (those weights expect it) and aux heads only if the file has them.
    """
    import torchvision

    state = load_state_dict(weights) if weights is not None else None
    if state is not None:
        kwargs = {**torchvision_kwargs(name, state), **kwargs}
    try:
        model = torchvision.models.get_model(name, weights=None, **kwargs)
    except ValueError:
        raise ConversionError(f"unknown torchvision architecture {name!r}") from None
    if state is not None:
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as e:
            first = str(e).strip().splitlines()
            raise ConversionError(
                f"{Path(str(weights)).name} does not fit torchvision {name}: {first[1:2]}"
            ) from None
    return model.eval()


def export_onnx(
    model: Any,
    out: str | Path,
    input_shape: tuple[int, ...],
    opset: int = DEFAULT_OPSET,
    input_name: str = "input",
    output_name: str = "output",
) -> Path:
    """Export ``model`` (eval mode) to one ONNX file with a dynamic batch axis; written to a temp
    name beside ``out`` and renamed into place. ``input_shape`` excludes the batch axis."""
    import onnx
    import torch

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    x = torch.randn(2, *input_shape)
    batch = torch.export.Dim("batch", min=1, max=4096)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with torch.no_grad():
            prog = torch.onnx.export(
                model,
                (x,),
                dynamo=True,
                external_data=False,
                opset_version=opset,
                input_names=[input_name],
                output_names=[output_name],
                dynamic_shapes=({0: batch},),
                verbose=False,
            )
        prog.save(str(tmp), external_data=False)
        proto = onnx.load(str(tmp))
        onnx.checker.check_model(proto, full_check=True)
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out


def onnx_run(path: str | Path, x: Any) -> Any:
    """Outputs of an ONNX file on onnxruntime's CPU provider (first output)."""
    import numpy as np
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = min(4, os.cpu_count() or 1)
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: np.asarray(x, dtype=np.float32)})[0]


def verify_onnx(model: Any, path: str | Path, x: Any, tol: float = 1e-4) -> dict[str, Any]:
    """Same inputs through PyTorch and onnxruntime, in verify.json's schema (``converters.verify.compare``:
    max_abs_diff, rel, argmax_agreement); raise when rel exceeds ``tol`` or an argmax differs."""
    import numpy as np
    import torch

    from converters.verify import compare

    with torch.no_grad():
        ref = model.eval()(torch.as_tensor(x)).numpy()
    c = compare(ref, onnx_run(path, np.asarray(x)))
    res = {"reference": "torch", "atol": tol, "inputs": [list(np.shape(x))], **c}
    res["passed"] = c["rel"] <= tol and c["argmax_agreement"] == 1.0
    if not res["passed"]:
        raise VerificationError(
            f"{Path(path).name}: ONNX differs from PyTorch (max |diff| {c['max_abs_diff']:.3g}, "
            f"argmax agreement {c['argmax_agreement']:.3f})"
        )
    return res


def randomize_batchnorm(model: Any, seed: int = 0) -> Any:
    """Give every BatchNorm random statistics and affine terms (default ones hide layout bugs)."""
    import torch
    from torch import nn

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                if m.affine:
                    m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                    m.bias.copy_(torch.randn(n, generator=g) * 0.1)
    return model


def randomize(model: Any, seed: int = 0) -> Any:
    """Re-randomize a whole model for verification: conv / linear weights with a fan-in scale
    (activations stay O(1), so differences mean something), non-zero biases, random norm layers
    and BatchNorm statistics, and no all-zero tensor left (e.g. ViT's zero-initialized head)."""
    import math

    import torch
    from torch import nn

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                w = m.weight
                fan_in = w[0].numel()
                w.copy_(torch.randn(w.shape, generator=g) / math.sqrt(fan_in))
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            elif isinstance(m, nn.LayerNorm) and m.elementwise_affine:
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
        for p in model.parameters():
            if not p.any():
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    return randomize_batchnorm(model, seed + 1)
