"""The model interface (zoo/models.py) on converted graphs: the real Caffe LeNet and MTCNN det3
(../shared/testdata), converted with converters.convert_caffe and loaded with load_folder."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from timm.models import group_parameters
from torch import nn

from converters.caffe import convert_caffe
from converters.folder import load_folder
from converters.graph_torch import build_module
from zoo.errors import ConversionError
from zoo.models import LayerInfo

# id: (prototxt, weights, input shape at batch 1, default_cut, its feature shape, classifier)
CASES = {
    "lenet": (
        "lenet_mnist/lenet.prototxt",
        "lenet_mnist/lenet_iter_10000.caffemodel",
        (1, 28, 28),
        "ip1",
        500,
        None,
    ),
    "det3": ("mtcnn/det3.prototxt", "mtcnn/det3.caffemodel", (3, 48, 48), "conv5", 256, "conv6-1"),
}


@pytest.fixture(scope="module")
def folders(testdata: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = {}
    for case, (proto, weights, *_rest) in CASES.items():
        d = tmp_path_factory.mktemp(case)
        out[case] = convert_caffe(
            testdata / "caffe" / proto, testdata / "caffe" / weights, d / "m", to="torch"
        )
    return out


def _x(case: str, n: int, seed: int = 0) -> torch.Tensor:
    shape = (n, *CASES[case][2])
    return torch.from_numpy(np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32))


def _outs(y: torch.Tensor | tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return y if isinstance(y, tuple) else (y,)


@pytest.mark.parametrize("case", list(CASES))
def test_layers_match_graph_and_real_shapes(case: str, folders) -> None:
    m = load_folder(folders[case])
    nodes = m.graph["nodes"]
    rows = m.layers()
    assert all(isinstance(r, LayerInfo) for r in rows)
    assert [r.index for r in rows] == list(range(len(nodes)))
    assert [r.name for r in rows] == [n["name"] for n in nodes]
    assert [r.type for r in rows] == [n["type"] for n in nodes]
    assert [r.output_shape for r in rows] == [(1, *n["output_shapes"][0][1:]) for n in nodes]
    real: dict[str, tuple[int, ...]] = {}
    mods = dict(m.named_children())
    for n in nodes:

        def hook(_m, _i, out, name=n["name"]) -> None:
            real[name] = tuple((out[0] if isinstance(out, list) else out).shape)

        mods[n["module"]].register_forward_hook(hook)
    with torch.no_grad():
        m(_x(case, 1))
    assert {r.name: r.output_shape for r in rows} == real
    params = {r.name: r.params for r in rows}
    assert sum(params.values()) == sum(p.numel() for p in m.parameters())
    assert params["conv1"] == (20 * 25 + 20 if case == "lenet" else 32 * 27 + 32)
    assert all(r.trainable == (r.params > 0) for r in rows)
    m.conv1.weight.requires_grad_(False)
    assert next(r for r in m.layers() if r.name == "conv1").trainable  # the bias still trains
    m.conv1.bias.requires_grad_(False)
    assert not next(r for r in m.layers() if r.name == "conv1").trainable


@pytest.mark.parametrize("case", list(CASES))
def test_cut_and_forward_features(case: str, folders) -> None:
    m = load_folder(folders[case])
    cut_name, feat = CASES[case][3], CASES[case][4]
    with pytest.raises(ConversionError, match="no default_cut"):
        m.forward_features(_x(case, 2))
    m.default_cut = cut_name
    x = _x(case, 3)
    with torch.no_grad():
        f = m.forward_features(x)
        trace = m.run_layers(x)
    assert list(f.shape) == [3, feat]
    assert next(r for r in m.layers() if r.name == cut_name).output_shape == (1, feat)
    # Caffe's blob semantics: the cut's output is the blob after the in-place layers on it
    after = {"lenet": "relu1", "det3": "prelu5"}[case]
    torch.testing.assert_close(f, trace[after][0], rtol=0, atol=0)
    assert not torch.equal(f, trace[cut_name][0])  # trace keeps the layer's own output
    c = m.cut(cut_name)
    assert c.output_names == [
        m.graph["nodes"][[n["name"] for n in m.graph["nodes"]].index(cut_name)]["outputs"][0]
    ]
    assert c.get_submodule("conv1").weight is m.conv1.weight  # shared, not copied
    assert set(dict(c.named_children())) < set(dict(m.named_children()))
    with torch.no_grad():
        assert list(m.cut("conv1")(x).shape) == [3, *m.graph["nodes"][0]["output_shapes"][0][1:]]
    with pytest.raises(ConversionError, match="close: conv1"):
        m.cut("conv1x")


def test_default_cut_from_graph(folders) -> None:
    m = load_folder(folders["lenet"])
    g = dict(m.graph, default_cut="pool2", classifier="ip1")
    m2 = build_module(g, m.state_dict())
    assert (m2.default_cut, m2.classifier) == ("pool2", "ip1")
    with torch.no_grad():
        assert list(m2.forward_features(_x("lenet", 2)).shape) == [2, 50, 4, 4]
    assert m2.get_classifier() is m2.ip1


@pytest.mark.parametrize("case", list(CASES))
def test_reset_classifier(case: str, folders) -> None:
    m = load_folder(folders[case])
    x = _x(case, 4)
    with torch.no_grad():
        before = _outs(m(x))
    default = "ip2" if case == "lenet" else "conv6-3"  # the last linear / conv layer
    assert m.get_classifier() is getattr(m, default.replace("-", "_"))
    name = CASES[case][5] or default
    m.classifier = CASES[case][5]
    old = m.get_classifier()
    m.reset_classifier(7)
    new = m.get_classifier()
    assert new is not old and type(new) is type(old) and isinstance(new, nn.Linear)
    assert (new.in_features, new.out_features) == (old.in_features, 7)
    with torch.no_grad():
        after = _outs(m(x))
    k = m.output_names.index("prob" if case == "lenet" else "prob1")  # det3: the softmax after conv6-1
    prob = after[k]
    assert list(prob.shape) == [4, 7]
    torch.testing.assert_close(prob.sum(1), torch.ones(4))
    for i, (a, b) in enumerate(zip(before, after, strict=True)):  # det3's other heads untouched
        assert i == k or torch.equal(a, b)
    assert len(after) == (1 if case == "lenet" else 3)
    rows = {r.name: r for r in m.layers()}
    assert rows[name].output_shape == (1, 7) and rows[name].params == old.in_features * 7 + 7
    assert rows["prob" if case == "lenet" else "prob1"].output_shape == (1, 7)
    node = next(n for n in m.graph["nodes"] if n["name"] == name)
    assert node["params"] == {"weight": [7, old.in_features], "bias": [7]}
    sd = m.state_dict()
    assert sd[f"{node['module']}.weight"].shape == (7, old.in_features)
    m.train()
    (-torch.log(_outs(m(x))[k][:, 3]).mean()).backward()
    assert new.weight.grad is not None and float(new.weight.grad.abs().sum()) > 0


@pytest.mark.parametrize("case", list(CASES))
def test_backward_reaches_every_parameter(case: str, folders) -> None:
    m = load_folder(folders[case]).train()
    outs = _outs(m(_x(case, 4)))
    g = torch.Generator().manual_seed(0)
    loss = sum((o * torch.randn(o.shape, generator=g)).sum() for o in outs)
    loss.backward()
    for name, p in m.named_parameters():
        assert p.grad is not None, name
        assert float(p.grad.abs().sum()) > 0, name


@pytest.mark.parametrize("coarse", [False, True])
@pytest.mark.parametrize("case", list(CASES))
def test_group_matcher_covers_each_parameter_once(case: str, coarse: bool, folders) -> None:
    m = load_folder(folders[case])
    gm = m.group_matcher(coarse=coarse)
    regexes = [gm["stem"]] + [r for r, _ in gm["blocks"]]
    names = [n for n, _ in m.named_parameters()]
    for n in names:
        assert sum(bool(re.match(r, n)) for r in regexes) == 1, n
    groups = group_parameters(m, gm)
    flat = [n for g in groups.values() for n in g]
    assert sorted(flat) == sorted(names)  # each once
    assert len(groups) == len(regexes)  # every block its own group (none unmatched: no inf group)
    stem = groups[0]
    assert {n.split(".")[0] for n in stem} == (
        {"conv1"} if case == "lenet" or not coarse else {"conv1", "prelu1"}
    )
    want = {
        ("lenet", False): 4,
        ("lenet", True): 4,  # conv1, conv2, ip1, ip2: no shared stage prefix
        ("det3", False): 13,  # conv1-5, prelu1-5, conv6-1/2/3
        ("det3", True): 6,  # conv1-5, each with its in-place preluN; conv6-1/2/3 share "conv6"
    }[(case, coarse)]
    assert len(groups) == want


@pytest.mark.parametrize("case", list(CASES))
def test_eval_outputs_unchanged_by_interface_calls(case: str, folders) -> None:
    m = load_folder(folders[case])
    x = _x(case, 2, seed=3)
    with torch.no_grad():
        ref = _outs(m(x))
    sd = {k: v.clone() for k, v in m.state_dict().items()}
    m.layers()
    m.default_cut = CASES[case][3]
    with torch.no_grad():
        m.forward_features(x)
        m.cut(m.graph["nodes"][-1]["name"])(x)
    m.group_matcher()
    m.group_matcher(coarse=True)
    m.get_classifier()
    assert not m.training
    with torch.no_grad():
        got = _outs(m(x))
    for a, b in zip(ref, got, strict=True):
        assert torch.equal(a, b)
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in sd.items())
    fresh = load_folder(folders[case])
    with torch.no_grad():
        for a, b in zip(ref, _outs(fresh(x)), strict=True):
            assert torch.equal(a, b)


def test_conv_classifier_and_fire_blocks(testdata: Path, tmp_path: Path) -> None:
    """SqueezeNet v1.1 (random weights): a 1x1-conv classifier followed by ReLU, global pooling and
    Softmax; coarse groups follow the fire modules' stage prefix (fire2/squeeze1x1 ...)."""
    from converters.caffe.writer import write_random_caffemodel

    proto = testdata / "caffe/deploy/squeezenet_v1.1_deploy.prototxt"
    m = load_folder(
        convert_caffe(proto, write_random_caffemodel(proto, tmp_path / "s.caffemodel"), tmp_path / "s")
    )
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((2, 3, 227, 227)).astype(np.float32))
    old = m.get_classifier()
    assert old is m.conv10 and isinstance(old, nn.Conv2d) and old.kernel_size == (1, 1)
    m.reset_classifier(7)
    new = m.get_classifier()
    assert isinstance(new, nn.Conv2d) and (new.in_channels, new.out_channels) == (512, 7)
    with torch.no_grad():
        y = m(x)
    assert list(y.shape) == [2, 7, 1, 1]
    rows = {r.name: r.output_shape for r in m.layers()}
    assert (
        rows["conv10"] == (1, 7, 14, 14) and rows["pool10"] == (1, 7, 1, 1) and rows["prob"] == (1, 7, 1, 1)
    )
    gm = m.group_matcher(coarse=True)
    groups = group_parameters(m, gm)
    assert sorted(n for g in groups.values() for n in g) == sorted(n for n, _ in m.named_parameters())
    assert len(groups) == 10  # conv1, fire2 ... fire9, conv10
    assert {n.split("_")[0] for n in groups[1]} == {"fire2"}
    assert len(group_parameters(m, m.group_matcher())) == 26  # every conv its own group
