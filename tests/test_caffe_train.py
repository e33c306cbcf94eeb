"""Trainable Caffe conversions: stock torch layers, Caffe's TRAIN-phase BatchNorm and Dropout.

A small net written here (conv + BatchNorm + Scale + PReLU, a grouped dilated conv, InnerProduct
+ BatchNorm on 2-D input + Dropout, Softmax), random weights from converters/caffe/writer.py,
converted with converters.convert_caffe and loaded from the folder like any user would.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from caffe_ref import check_against_opencv
from safetensors.numpy import load_file
from torch import nn

from converters.caffe import convert_caffe
from converters.caffe.writer import write_random_caffemodel
from converters.folder import load_folder
from converters.layermap import LayerMap

TOL = 1e-5  # as tests/test_caffe_real.py

FRAC1, EPS1 = 0.9, 1e-3  # bn1's prototxt values; bn2 keeps Caffe's defaults (0.999, 1e-5)
RATIO = 0.3

PROTOTXT = f"""
name: "bn_scale_dropout"
input: "data" input_shape {{ dim: 4 dim: 3 dim: 12 dim: 12 }}
layer {{ name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param {{ num_output: 8 kernel_size: 3 pad: 1 }} }}
layer {{ name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1"
  batch_norm_param {{ moving_average_fraction: {FRAC1} eps: {EPS1} }} }}
layer {{ name: "scale1" type: "Scale" bottom: "conv1" top: "conv1" scale_param {{ bias_term: true }} }}
layer {{ name: "prelu1" type: "PReLU" bottom: "conv1" top: "conv1" }}
layer {{ name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2"
  convolution_param {{ num_output: 8 kernel_size: 3 pad: 2 dilation: 2 group: 2 }} }}
layer {{ name: "pool1" type: "Pooling" bottom: "conv2" top: "pool1"
  pooling_param {{ pool: MAX kernel_size: 3 stride: 2 }} }}
layer {{ name: "fc1" type: "InnerProduct" bottom: "pool1" top: "fc1"
  inner_product_param {{ num_output: 32 }} }}
layer {{ name: "bn2" type: "BatchNorm" bottom: "fc1" top: "fc1" }}
layer {{ name: "scale2" type: "Scale" bottom: "fc1" top: "fc1" scale_param {{ bias_term: true }} }}
layer {{ name: "relu2" type: "ReLU" bottom: "fc1" top: "fc1" }}
layer {{ name: "drop1" type: "Dropout" bottom: "fc1" top: "fc1" dropout_param {{ dropout_ratio: {RATIO} }} }}
layer {{ name: "fc2" type: "InnerProduct" bottom: "fc1" top: "fc2" inner_product_param {{ num_output: 5 }} }}
layer {{ name: "prob" type: "Softmax" bottom: "fc2" top: "prob" }}
"""


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    d = tmp_path_factory.mktemp("train")
    proto = d / "net.prototxt"
    proto.write_text(PROTOTXT)
    weights = write_random_caffemodel(proto, d / "net.caffemodel", seed=3)
    folder = convert_caffe(proto, weights, d / "model", to="torch")
    return proto, weights, folder


def _x(n: int, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).standard_normal((n, 3, 12, 12)).astype(np.float32))


def _capture(mod: nn.Module) -> dict[str, torch.Tensor]:
    seen: dict[str, torch.Tensor] = {}

    def hook(_m: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        seen["in"], seen["out"] = inputs[0].detach().clone(), out.detach().clone()

    mod.register_forward_hook(hook)
    return seen


def test_nodes_are_stock_torch_layers_and_load_strictly(net) -> None:
    _, _, folder = net
    m = load_folder(folder)
    assert type(m.conv1).__mro__[1] is nn.Conv2d and isinstance(m.conv2, nn.Conv2d)
    assert (m.conv2.groups, m.conv2.dilation, m.conv2.padding) == (2, (2, 2), (2, 2))
    assert isinstance(m.bn1, nn.BatchNorm2d) and isinstance(m.bn2, nn.BatchNorm1d)
    assert not m.bn1.affine and m.bn1.weight is None and m.bn1.track_running_stats
    assert m.bn1.eps == pytest.approx(EPS1) and m.bn1.momentum == pytest.approx(1 - FRAC1)
    assert m.bn2.eps == pytest.approx(1e-5) and m.bn2.momentum == pytest.approx(1 - 0.999)
    assert isinstance(m.prelu1, nn.PReLU) and m.prelu1.num_parameters == 8
    assert isinstance(m.fc1, nn.Linear) and (m.fc1.in_features, m.fc1.out_features) == (8 * 6 * 6, 32)
    assert isinstance(m.drop1, nn.Dropout) and m.drop1.p == pytest.approx(RATIO)
    assert isinstance(m.prob, nn.Softmax)
    assert [n for n, _ in m.scale1.named_parameters()] == ["weight", "bias"]
    graph = json.loads((folder / "graph.json").read_text())
    drop = next(n for n in graph["nodes"] if n["name"] == "drop1")
    assert (drop["op"], drop["attrs"]) == ("dropout", {"ratio": RATIO})
    # state dict == model.safetensors == the layer map's targets (no num_batches_tracked)
    keys = set(load_file(str(folder / "model.safetensors")))
    assert set(m.state_dict()) == keys
    assert {r.target for r in LayerMap.load(folder / "layermap.json").rows if r.target} == keys
    assert {"bn1.running_mean", "bn1.running_var", "bn2.running_var", "scale1.bias"} <= keys


def test_train_batchnorm_uses_batch_statistics_and_caffe_moving_average(net) -> None:
    _, _, folder = net
    m = load_folder(folder)
    bn1, bn2 = _capture(m.bn1), _capture(m.bn2)
    before = {k: v.clone().double().numpy() for k, v in m.state_dict().items() if "running" in k}
    m.train()
    for step in range(2):
        with torch.no_grad():
            m(_x(6, seed=step))
        for name, seen, frac, eps, dims in (
            ("bn1", bn1, FRAC1, EPS1, (0, 2, 3)),
            ("bn2", bn2, 0.999, 1e-5, (0,)),
        ):
            x = seen["in"].double().numpy()
            mean, var = x.mean(axis=dims), x.var(axis=dims)  # Caffe normalizes with the biased variance
            shape = [1, -1] + [1] * (x.ndim - 2)
            want = (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps)
            np.testing.assert_allclose(seen["out"].numpy(), want, rtol=1e-4, atol=1e-4)
            # Caffe: running = f * running + (1 - f) * batch, the variance with m / (m - 1)
            count = x.size // x.shape[1]
            for stat, batch in (("running_mean", mean), ("running_var", var * count / (count - 1))):
                key = f"{name}.{stat}"
                want_r = frac * before[key] + (1 - frac) * batch
                got = getattr(m, name).__getattr__(stat).double().numpy()
                np.testing.assert_allclose(got, want_r, rtol=1e-5, atol=1e-6)
                assert not np.allclose(got, before[key], rtol=1e-3)  # it moved
                before[key] = got
    # eval: the (moved) running statistics, not the batch's
    m.eval()
    with torch.no_grad():
        m(_x(6, seed=9))
    x = bn1["in"].double().numpy()
    rm, rv = before["bn1.running_mean"], before["bn1.running_var"]
    want = (x - rm.reshape(1, -1, 1, 1)) / np.sqrt(rv.reshape(1, -1, 1, 1) + EPS1)
    np.testing.assert_allclose(bn1["out"].numpy(), want, rtol=1e-4, atol=1e-4)


def test_dropout_zeroes_about_the_ratio_in_train_mode_only(net) -> None:
    _, _, folder = net
    m = load_folder(folder)
    seen = _capture(m.drop1)
    m.train()
    torch.manual_seed(0)
    with torch.no_grad():
        m(_x(512))
    x, y = seen["in"], seen["out"]
    live = x != 0
    assert int(live.sum()) > 4000
    dropped = float(((y == 0) & live).sum()) / float(live.sum())
    assert abs(dropped - RATIO) < 0.03, dropped
    kept = (y != 0) & live
    torch.testing.assert_close(y[kept], x[kept] / (1 - RATIO))  # Caffe TRAIN scales by 1 / (1 - ratio)
    m.eval()
    with torch.no_grad():
        m(_x(512))
    assert torch.equal(seen["out"], seen["in"])


def test_backward_reaches_every_parameter(net) -> None:
    _, _, folder = net
    m = load_folder(folder).train()
    prob = m(_x(8))
    loss = -torch.log(prob[:, 0] + 1e-9).mean()
    loss.backward()
    params = dict(m.named_parameters())
    assert set(params) == {
        "conv1.weight",
        "conv1.bias",
        "scale1.weight",
        "scale1.bias",
        "prelu1.weight",
        "conv2.weight",
        "conv2.bias",
        "fc1.weight",
        "fc1.bias",
        "scale2.weight",
        "scale2.bias",
        "fc2.weight",
        "fc2.bias",
    }
    for name, p in params.items():
        assert p.requires_grad and p.grad is not None, name
        assert float(p.grad.abs().sum()) > 0, name


def test_eval_equals_opencv(net, tmp_path: Path) -> None:
    proto, weights, folder = net
    x = np.random.default_rng(5).standard_normal((4, 3, 12, 12)).astype(np.float32)
    worst = check_against_opencv(proto, weights, {"data": x}, tmp_path, TOL, folder=folder)
    assert worst["torch"] <= TOL
    # after train-mode steps moved the statistics, eval still normalizes with the running ones
    m = load_folder(folder)
    ref = m(torch.from_numpy(x))
    m.train()
    m.eval()
    assert torch.equal(m(torch.from_numpy(x)), ref)
