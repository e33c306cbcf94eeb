"""The eight deploy prototxts with random weights from our writer, vs OpenCV dnn (1e-4, every layer,
torch and ONNX)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from caffe_ref import check_against_opencv

from converters.caffe import convert_caffe
from converters.caffe.reader import read_prototxt
from converters.caffe.writer import write_random_caffemodel

TOL = 1e-4
SLOW = pytest.mark.slow
DEPLOY = [
    pytest.param("squeezenet_v1.1_deploy.prototxt", id="squeezenet1.1"),
    pytest.param("mobilenet_v1_deploy.prototxt", id="mobilenet_v1"),
    pytest.param("mobilenet_v2_deploy.prototxt", id="mobilenet_v2"),
    pytest.param("ResNet-50-deploy.prototxt", id="resnet50", marks=SLOW),
    pytest.param("bvlc_googlenet_deploy.prototxt", id="googlenet", marks=SLOW),
    pytest.param("bvlc_alexnet_deploy.prototxt", id="alexnet", marks=SLOW),
    pytest.param("bvlc_reference_caffenet_deploy.prototxt", id="caffenet", marks=SLOW),
    pytest.param("VGG_ILSVRC_16_layers_deploy.prototxt", id="vgg16_v1", marks=SLOW),
]


@pytest.mark.parametrize("name", DEPLOY)
def test_deploy_random_weights_match_opencv(name: str, testdata: Path, tmp_path: Path) -> None:
    proto = testdata / "caffe/deploy" / name
    net = read_prototxt(proto)
    weights = write_random_caffemodel(proto, tmp_path / "random.caffemodel", seed=11)
    ((inp, shape),) = net.inputs
    x = np.random.default_rng(1).standard_normal([2, *shape[1:]]).astype(np.float32)
    folder = convert_caffe(proto, weights, tmp_path / "out", to="all")
    worst = check_against_opencv(proto, weights, {inp: x}, tmp_path, TOL, folder=folder)
    assert worst["layers"] <= TOL and worst["torch"] <= TOL and worst["onnx"] <= TOL
    assert (folder / "model.onnx").is_file()
