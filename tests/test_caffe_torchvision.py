"""Caffe nets that are torchvision architectures load through the layer map and match numerically."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from converters.caffe import convert_caffe
from converters.caffe.torchvision_map import load_into_torchvision, torchvision_layermap
from converters.caffe.writer import write_random_caffemodel
from converters.folder import load_folder
from converters.layermap import LayerMap
from zoo.errors import ConversionError

CASES = [
    pytest.param(
        "squeezenet_v1.1_deploy.prototxt", "squeezenet1_1", "pool10", (2, 3, 227, 227), id="squeezenet"
    ),
    pytest.param(
        "VGG_ILSVRC_16_layers_deploy.prototxt",
        "vgg16",
        "fc8",
        (2, 3, 224, 224),
        id="vgg16",
        marks=pytest.mark.slow,
    ),
]


@pytest.mark.parametrize(("proto", "arch", "logits", "shape"), CASES)
def test_loads_into_torchvision_and_matches(
    proto: str, arch: str, logits: str, shape: tuple[int, ...], testdata: Path, tmp_path: Path
) -> None:
    src = testdata / "caffe/deploy" / proto
    w = write_random_caffemodel(src, tmp_path / "w.caffemodel", seed=2)
    folder = convert_caffe(src, w, tmp_path / "out")
    tv, report = load_into_torchvision(folder, arch)
    assert report.ok and len(report.matched) == len(tv.state_dict())
    x = torch.from_numpy(np.random.default_rng(0).standard_normal(shape).astype(np.float32))
    with torch.no_grad():
        ours = load_folder(folder).run_layers(x)[logits][0].flatten(1)
        theirs = tv(x)
    assert ours.abs().max() > 0.1  # not a degenerate all-zero comparison
    assert (ours - theirs).abs().max().item() <= 1e-5 * max(1.0, ours.abs().max().item())
    np.testing.assert_array_equal(ours.argmax(1).numpy(), theirs.argmax(1).numpy())


def test_map_reports_mismatch_and_alexnet_refused(testdata: Path, tmp_path: Path) -> None:
    src = testdata / "caffe/deploy/squeezenet_v1.1_deploy.prototxt"
    folder = convert_caffe(src, write_random_caffemodel(src, tmp_path / "w.caffemodel"), tmp_path / "out")
    lm = torchvision_layermap(LayerMap.load(folder / "layermap.json"), "squeezenet1_1")
    import torchvision

    wrong = torchvision.models.squeezenet1_0(weights=None).state_dict()  # v1.0: other conv1 and layout
    rep = lm.match(wrong)
    assert (
        not rep.ok
        and rep.shape_mismatched
        and ("features.0.weight", [64, 3, 3, 3], [96, 3, 7, 7]) in [tuple(r) for r in rep.shape_mismatched]
    )
    with pytest.raises(ConversionError, match="LRN.*group"):
        torchvision_layermap(lm, "alexnet")
