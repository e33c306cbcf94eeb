"""torchvision -> ONNX (dynamo exporter, one file, dynamic batch), verified with onnxruntime on CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from converters.torch_onnx import (
    INPUT_SIZES,
    build_torchvision,
    export_onnx,
    load_state_dict,
    onnx_run,
    randomize,
    verify_onnx,
)
from zoo.errors import ConversionError, VerificationError

HEAVY = {"convnext_tiny", "vit_b_16", "inception_v3", "efficientnet_b0", "googlenet", "resnet50"}
ARCHS = [
    "mobilenet_v3_small",
    "resnet50",
    "efficientnet_b0",
    "googlenet",
    "inception_v3",
    "convnext_tiny",
    "vit_b_16",
]


def _case(name: str) -> object:
    return pytest.param(name, marks=pytest.mark.slow) if name in HEAVY else name


@pytest.mark.parametrize("name", [_case(n) for n in ARCHS])
def test_torchvision_to_onnx_verified(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = randomize(build_torchvision(name), seed=1)
    size = INPUT_SIZES.get(name, 224)
    path = export_onnx(model, tmp_path / f"{name}.onnx", (3, size, size))
    assert [p.name for p in tmp_path.iterdir()] == [f"{name}.onnx"]  # one file, no external data
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    dim0 = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert dim0.dim_param and not dim0.dim_value  # dynamic batch
    x = torch.randn(
        3, 3, size, size, generator=torch.Generator().manual_seed(2)
    ).numpy()  # batch != export's 2
    res = verify_onnx(model, path, x, tol=1e-4)
    print(f"{name}: max|diff| {res['max_abs_diff']:.3g}, max|ref| {res['max_abs_ref']:.3g}")
    assert res["passed"] and res["argmax_agreement"] == 1.0 and res["rel"] <= 1e-4
    assert 0.1 < res["max_abs_ref"] < 1e4  # random weights scaled so the comparison means something
    assert onnx_run(path, x[:1]).shape[0] == 1


def test_verify_catches_a_wrong_model(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = randomize(build_torchvision("mobilenet_v3_small"))
    path = export_onnx(model, tmp_path / "m.onnx", (3, 224, 224))
    with torch.no_grad():
        model.classifier[-1].bias.add_(1.0)  # the PyTorch side changes after export
    x = np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32)
    with pytest.raises(VerificationError):
        verify_onnx(model, path, x)


def test_state_dict_loading_is_weights_only(tmp_path: Path) -> None:
    model = build_torchvision("mobilenet_v3_small")
    good = tmp_path / "w.pth"
    torch.save(model.state_dict(), good)
    assert set(load_state_dict(good)) == set(model.state_dict())
    old = tmp_path / "old.pth"  # the pre-1.6 (non-zip) pickle format
    torch.save(model.state_dict(), old, _use_new_zipfile_serialization=False)
    assert old.read_bytes()[:2] == b"\x80\x02"
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in load_state_dict(old).items())
    build_torchvision("mobilenet_v3_small", weights=good)

    class Evil:
        def __reduce__(self):  # noqa: ANN204
            return (print, ("pwned",))

    bad = tmp_path / "evil.pth"
    torch.save({"x": Evil()}, bad)
    with pytest.raises(ConversionError, match="weights_only"):
        load_state_dict(bad)
    with pytest.raises(ConversionError, match="does not fit"):
        build_torchvision("resnet18", weights=good)
    with pytest.raises(ConversionError, match="unknown torchvision"):
        build_torchvision("no_such_net")


def test_googlenet_published_layout(tmp_path: Path) -> None:
    """torchvision's published googlenet / inception_v3 weights have no aux heads and expect
    transform_input=True: build them the way torchvision's own builder does."""
    import torchvision

    src = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=False)
    randomize(src)
    path = tmp_path / "googlenet.pth"
    torch.save(src.state_dict(), path)
    model = build_torchvision("googlenet", weights=path)
    assert model.transform_input and model.aux1 is None
    ref = torchvision.models.googlenet(
        weights=None, aux_logits=False, transform_input=True, init_weights=False
    )
    ref.load_state_dict(src.state_dict())
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(model(x), ref.eval()(x))
