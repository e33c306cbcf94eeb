# ruff: noqa: E501  (prototxt snippets read best one layer per line)
"""Every supported Caffe layer, compared with OpenCV dnn (random weights from our writer)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from caffe_ref import check_against_opencv

from converters.caffe import convert_caffe
from converters.caffe.graph import build_graph, sanitize
from converters.caffe.reader import read_caffemodel, read_prototxt
from converters.caffe.writer import random_weights, write_caffemodel, write_random_caffemodel
from converters.folder import load_folder
from converters.graph_torch import caffe_pool_out

TOL = 1e-5
OPENCV_LAYERS = [
    "layer_batch_norm",
    "layer_concat",
    "layer_convolution",
    "layer_deconvolution",
    "layer_eltwise",
    "layer_inner_product",
    "layer_lrn_channels",
    "layer_lrn_spatial",
    "layer_pooling_ave",
    "layer_pooling_max",
    "layer_prelu",
    "layer_softmax",
]


def _run(
    proto_text: str, tmp: Path, shapes: dict[str, tuple[int, ...]], seed: int = 0, scale: float = 1.0
) -> dict[str, float]:
    p = tmp / "net.prototxt"
    p.write_text(proto_text)
    w = write_random_caffemodel(p, tmp / "net.caffemodel", seed=seed)
    rng = np.random.default_rng(seed + 100)
    xs = {k: (rng.standard_normal(s) * scale).astype(np.float32) for k, s in shapes.items()}
    return check_against_opencv(p, w, xs, tmp, TOL)


@pytest.mark.parametrize("name", OPENCV_LAYERS)
def test_opencv_layer_definitions(name: str, testdata: Path, tmp_path: Path) -> None:
    proto = testdata / "caffe/opencv_layers" / f"{name}.prototxt"
    net = read_prototxt(proto)
    w = write_random_caffemodel(proto, tmp_path / "w.caffemodel", seed=3)
    rng = np.random.default_rng(5)
    xs = {n: rng.standard_normal(s).astype(np.float32) for n, s in net.inputs}
    folder = convert_caffe(proto, w, tmp_path / "out", to="all")
    worst = check_against_opencv(proto, w, xs, tmp_path, TOL, folder=folder)
    assert (folder / "model.onnx").is_file() and worst["onnx"] <= TOL


POOL = """
name: "pool" input: "data" input_shape { dim: 2 dim: 3 dim: 5 dim: 7 }
layer { name: "max_clip" type: "Pooling" bottom: "data" top: "max_clip"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 pad: 1 } }
layer { name: "ave_clip" type: "Pooling" bottom: "data" top: "ave_clip"
  pooling_param { pool: AVE kernel_size: 2 stride: 2 pad: 1 } }
layer { name: "ave_k3s2p1" type: "Pooling" bottom: "data" top: "ave_k3s2p1"
  pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "ave_ceil" type: "Pooling" bottom: "data" top: "ave_ceil"
  pooling_param { pool: AVE kernel_size: 3 stride: 2 } }
layer { name: "max_hw" type: "Pooling" bottom: "data" top: "max_hw"
  pooling_param { pool: MAX kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 3 pad_h: 1 pad_w: 0 } }
layer { name: "gave" type: "Pooling" bottom: "data" top: "gave" pooling_param { pool: AVE global_pooling: true } }
layer { name: "gmax" type: "Pooling" bottom: "data" top: "gmax" pooling_param { pool: MAX global_pooling: true } }
"""


def test_pooling_ceil_mode_and_clipped_window(tmp_path: Path) -> None:
    # Caffe's size rule: ceil, then drop a window starting in the padding (5, k2, s2, p1 -> 3 not 4)
    assert caffe_pool_out(5, 2, 1, 2) == 3
    assert caffe_pool_out(32, 3, 0, 2) == 16  # CIFAR-10 quick: 32 -> 16 -> 8 -> 4 only in ceil mode
    assert caffe_pool_out(16, 3, 0, 2) == 8 and caffe_pool_out(8, 3, 0, 2) == 4
    net = read_prototxt(_write(tmp_path, POOL))
    g, _, _ = build_graph(net, None)
    shapes = {n["name"]: n["output_shapes"][0] for n in g["nodes"]}
    assert shapes["max_clip"] == [2, 3, 3, 4] and shapes["ave_ceil"] == [2, 3, 2, 3]
    _run(POOL, tmp_path, {"data": (2, 3, 5, 7)})


CONV = """
name: "conv"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 4 dim: 11 dim: 13 } } }
layer { name: "dil" type: "Convolution" bottom: "data" top: "dil"
  convolution_param { num_output: 6 kernel_size: 3 dilation: 2 pad: 2 } }
layer { name: "hw" type: "Convolution" bottom: "data" top: "hw"
  convolution_param { num_output: 5 kernel_h: 3 kernel_w: 1 pad_h: 1 pad_w: 0 stride_h: 2 stride_w: 1 } }
layer { name: "grp" type: "Convolution" bottom: "data" top: "grp"
  convolution_param { num_output: 6 kernel_size: 3 group: 2 bias_term: false stride: 2 } }
layer { name: "dw" type: "Convolution" bottom: "data" top: "dw"
  convolution_param { num_output: 4 kernel_size: 3 group: 4 pad: 1 engine: CAFFE } }
layer { name: "deconv" type: "Deconvolution" bottom: "data" top: "deconv"
  convolution_param { num_output: 6 kernel_size: 4 stride: 2 pad: 1 group: 2 } }
layer { name: "deconv_nb" type: "Deconvolution" bottom: "data" top: "deconv_nb"
  convolution_param { num_output: 3 kernel_size: 3 stride: 1 bias_term: false } }
"""


def test_convolution_variants(tmp_path: Path) -> None:
    _run(CONV, tmp_path, {"data": (2, 4, 11, 13)})


ACT = """
name: "act" input: "data" input_dim: 2 input_dim: 6 input_dim: 5 input_dim: 4
layer { name: "leaky" type: "ReLU" bottom: "data" top: "leaky" relu_param { negative_slope: 0.1 } }
layer { name: "prelu_c" type: "PReLU" bottom: "data" top: "prelu_c" }
layer { name: "prelu_s" type: "PReLU" bottom: "data" top: "prelu_s" prelu_param { channel_shared: true } }
layer { name: "sig" type: "Sigmoid" bottom: "data" top: "sig" }
layer { name: "tanh" type: "TanH" bottom: "data" top: "tanh" }
layer { name: "drop" type: "Dropout" bottom: "tanh" top: "drop" dropout_param { dropout_ratio: 0.5 } }
layer { name: "ip_axis2" type: "InnerProduct" bottom: "data" top: "ip_axis2" inner_product_param { num_output: 7 axis: 2 } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 9 } }
layer { name: "ip_nb" type: "InnerProduct" bottom: "data" top: "ip_nb"
  inner_product_param { num_output: 3 bias_term: false } }
layer { name: "flat" type: "Flatten" bottom: "data" top: "flat" flatten_param { axis: 2 } }
layer { name: "sm1" type: "Softmax" bottom: "data" top: "sm1" }
layer { name: "sm3" type: "Softmax" bottom: "data" top: "sm3" softmax_param { axis: -1 } }
"""


def test_activations_inner_product_flatten_softmax(tmp_path: Path) -> None:
    _run(ACT, tmp_path, {"data": (2, 6, 5, 4)}, scale=2.0)


NORM = """
name: "norm" input: "data" input_shape { dim: 2 dim: 6 dim: 9 dim: 8 }
layer { name: "lrn_across" type: "LRN" bottom: "data" top: "lrn_across"
  lrn_param { local_size: 5 alpha: 0.3 beta: 0.75 } }
layer { name: "lrn_within" type: "LRN" bottom: "data" top: "lrn_within"
  lrn_param { local_size: 3 alpha: 0.9 beta: 0.6 norm_region: WITHIN_CHANNEL } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param { num_output: 8 kernel_size: 3 } }
layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "conv" batch_norm_param { use_global_stats: true eps: 0.001 } }
layer { name: "sc" type: "Scale" bottom: "conv" top: "conv" scale_param { bias_term: true } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "bn2" type: "BatchNorm" bottom: "conv" top: "bn2" }
layer { name: "sc_nobias" type: "Scale" bottom: "bn2" top: "sc_nobias" }
"""


def test_lrn_batchnorm_scale_in_place(tmp_path: Path) -> None:
    worst = _run(NORM, tmp_path, {"data": (2, 6, 9, 8)}, scale=3.0)
    assert worst["layers"] <= TOL


MERGE = """
name: "merge" input: "a" input_shape { dim: 2 dim: 4 dim: 5 dim: 6 }
input: "b" input_shape { dim: 2 dim: 4 dim: 5 dim: 6 }
layer { name: "sum" type: "Eltwise" bottom: "a" bottom: "b" top: "sum" eltwise_param { coeff: 0.5 coeff: -2 } }
layer { name: "prod" type: "Eltwise" bottom: "a" bottom: "b" top: "prod" eltwise_param { operation: PROD } }
layer { name: "max" type: "Eltwise" bottom: "a" bottom: "b" top: "max" eltwise_param { operation: MAX } }
layer { name: "cat1" type: "Concat" bottom: "sum" bottom: "prod" bottom: "max" top: "cat1" }
layer { name: "cat2" type: "Concat" bottom: "a" bottom: "b" top: "cat2" concat_param { axis: 2 } }
layer { name: "split" type: "Split" bottom: "cat1" top: "s1" top: "s2" }
layer { name: "slice" type: "Slice" bottom: "s1" top: "p1" top: "p2" top: "p3"
  slice_param { axis: 1 slice_point: 2 slice_point: 4 } }
layer { name: "slice_eq" type: "Slice" bottom: "s2" top: "q1" top: "q2" slice_param { axis: 3 } }
layer { name: "res" type: "Reshape" bottom: "p2" top: "res" reshape_param { shape { dim: 0 dim: -1 dim: 6 } } }
layer { name: "sum3" type: "Eltwise" bottom: "q1" bottom: "q2" bottom: "q2" top: "sum3" }
layer { name: "maxp" type: "Eltwise" bottom: "p1" bottom: "p2" top: "maxp" eltwise_param { operation: MAX } }
"""


def test_eltwise_concat_split_slice_reshape(tmp_path: Path) -> None:
    _run(MERGE, tmp_path, {"a": (2, 4, 5, 6), "b": (2, 4, 5, 6)})


PERMUTE = """
name: "permute" input: "data" input_shape { dim: 2 dim: 8 dim: 3 dim: 5 }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param { num_output: 12 kernel_size: 1 } }
layer { name: "perm" type: "Permute" bottom: "conv" top: "perm" permute_param { order: 0 order: 2 order: 3 order: 1 } }
layer { name: "flat" type: "Reshape" bottom: "perm" top: "flat" reshape_param { shape { dim: 0 dim: -1 dim: 4 } } }
layer { name: "prob" type: "Softmax" bottom: "flat" top: "prob" softmax_param { axis: 2 } }
"""


def test_permute_reshape_softmax_axis2(tmp_path: Path) -> None:
    _run(PERMUTE, tmp_path, {"data": (2, 8, 3, 5)}, scale=2.0)
    g, _, _ = build_graph(read_prototxt(tmp_path / "net.prototxt"), None)
    assert g["nodes"][-1]["output_shapes"] == [[2, 45, 4]]


def _write(tmp: Path, text: str, name: str = "net.prototxt") -> Path:
    p = tmp / name
    p.write_text(text)
    return p


def test_lrn_across_channels_k_follows_caffe(tmp_path: Path) -> None:
    """Caffe: scale = k + alpha/n * sum of squares over n channels (OpenCV 4.14 ignores k, so the
    reference here is Caffe's formula written out in numpy)."""
    p = _write(
        tmp_path,
        """name: "k" input: "data" input_shape { dim: 2 dim: 7 dim: 4 dim: 5 }
layer { name: "lrn" type: "LRN" bottom: "data" top: "lrn" lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 k: 2 } }""",
    )
    folder = convert_caffe(p, None, tmp_path / "out")
    x = np.random.default_rng(0).standard_normal((2, 7, 4, 5)).astype(np.float64) * 2
    sq = np.pad(x * x, ((0, 0), (1, 1), (0, 0), (0, 0)))
    ssum = sum(sq[:, i : i + 7] for i in range(3))
    ref = x * (2.0 + 0.5 / 3 * ssum) ** -0.75
    got = load_folder(folder)(torch.from_numpy(x.astype(np.float32))).detach().numpy()
    assert np.abs(got - ref).max() < 1e-5


def test_batchnorm_scale_factor_zero_and_eps(tmp_path: Path) -> None:
    """A zero scale factor zeroes mean and variance (Caffe); eps is applied as given."""
    p = _write(
        tmp_path,
        """name: "bn" input: "data" input_shape { dim: 2 dim: 3 dim: 4 dim: 4 }
layer { name: "bn" type: "BatchNorm" bottom: "data" top: "bn" batch_norm_param { eps: 0.01 } }""",
    )
    mean, var = np.array([1.0, 2.0, 3.0], np.float32), np.array([4.0, 5.0, 6.0], np.float32)
    x = np.random.default_rng(1).standard_normal((2, 3, 4, 4)).astype(np.float32)
    for factor, want in (
        (0.0, x / np.sqrt(0.01)),
        (4.0, (x - mean[None, :, None, None]) / np.sqrt(var[None, :, None, None] + 0.01)),
    ):
        w = write_caffemodel(
            tmp_path / "bn.caffemodel",
            {
                "bn": [
                    mean * factor if factor else mean,
                    var * factor if factor else var,
                    np.array([factor], np.float32),
                ]
            },
        )
        out = tmp_path / f"out{factor}"
        got = load_folder(convert_caffe(p, w, out))(torch.from_numpy(x)).detach().numpy()
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        check_against_opencv(p, w, {"data": x}, tmp_path, TOL, folder=out)


def test_input_declaration_styles_and_v1_text_agree(tmp_path: Path) -> None:
    body_v2 = """layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 3 kernel_size: 3 } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "ip" type: "InnerProduct" bottom: "pool" top: "ip" inner_product_param { num_output: 4 } }
layer { name: "prob" type: "Softmax" bottom: "ip" top: "prob" }
"""
    body_v1 = """layers { name: "conv" type: CONVOLUTION bottom: "data" top: "conv"
  convolution_param { num_output: 3 kernel_size: 3 } }
layers { name: "relu" type: RELU bottom: "conv" top: "conv" }
layers { name: "pool" type: POOLING bottom: "conv" top: "pool" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layers { name: "ip" type: INNER_PRODUCT bottom: "pool" top: "ip" inner_product_param { num_output: 4 } }
layers { name: "prob" type: SOFTMAX bottom: "ip" top: "prob" }
"""
    heads = {
        "input_dim": 'input: "data" input_dim: 2 input_dim: 2 input_dim: 9 input_dim: 9\n',
        "input_shape": 'input: "data" input_shape { dim: 2 dim: 2 dim: 9 dim: 9 }\n',
        "input_layer": 'layer { name: "in" type: "Input" top: "data" '
        "input_param { shape { dim: 2 dim: 2 dim: 9 dim: 9 } } }\n",
    }
    first = _write(tmp_path, heads["input_dim"] + body_v2, "a.prototxt")
    w = write_random_caffemodel(first, tmp_path / "w.caffemodel", seed=9)
    x = torch.from_numpy(np.random.default_rng(2).standard_normal((2, 2, 9, 9)).astype(np.float32))
    outs = {}
    texts = {k: h + body_v2 for k, h in heads.items()}
    texts["v1"] = heads["input_dim"] + body_v1
    for k, text in texts.items():
        p = _write(tmp_path, text, f"{k}.prototxt")
        net = read_prototxt(p)
        assert net.inputs == [("data", [2, 2, 9, 9])]
        assert net.v1 == (k == "v1")
        outs[k] = load_folder(convert_caffe(p, w, tmp_path / f"out_{k}"))(x)
    for k in texts:
        torch.testing.assert_close(outs[k], outs["input_dim"], rtol=0, atol=0)
    check_against_opencv(
        tmp_path / "v1.prototxt", w, {"data": x.numpy()}, tmp_path, TOL, folder=tmp_path / "out_v1"
    )


def test_writer_leaves_nothing_at_defaults(testdata: Path, tmp_path: Path) -> None:
    net = read_prototxt(testdata / "caffe/deploy/mobilenet_v2_deploy.prototxt")
    blobs = random_weights(net, seed=4)
    types = {layer.name: layer.type for layer in net.layers}
    bns = [n for n, t in types.items() if t == "BatchNorm"]
    assert bns
    for n in bns:
        mean, var, factor = blobs[n]
        assert factor.shape == (1,) and factor[0] != 1.0 and factor[0] > 0
        assert np.all(mean != 0) and np.all(var > 0)
        assert np.median(var / factor[0]) < 0.1  # small enough that eps (1e-5) matters at 1e-4 tolerance
    for n, t in types.items():
        if t == "Scale":
            assert np.all(blobs[n][0] != 0) and np.all(blobs[n][1] != 0)
        if t == "Convolution" and len(blobs[n]) > 1:
            assert np.all(blobs[n][1] != 0)
    # written file round-trips through our reader exactly
    p = write_random_caffemodel(testdata / "caffe/mtcnn/det1.prototxt", tmp_path / "d.caffemodel", seed=4)
    back = read_caffemodel(p)
    again = random_weights(read_prototxt(testdata / "caffe/mtcnn/det1.prototxt"), seed=4)
    assert sorted(back) == sorted(again)
    for n in again:
        for a, b in zip(again[n], back[n], strict=True):
            np.testing.assert_array_equal(a, b)
    slopes = np.concatenate([again[n][0] for n in again if n.startswith("PReLU")])
    assert np.all(slopes != 0.25) and np.all(slopes > 0)


def test_module_names_sanitized_original_kept(testdata: Path, tmp_path: Path) -> None:
    assert sanitize("conv1/7x7_s2", set()) == "conv1_7x7_s2"
    taken: set[str] = set()
    assert [sanitize(n, taken) for n in ("a/b", "a.b", "3x3")] == ["a_b", "a_b_2", "l_3x3"]
    proto = testdata / "caffe/deploy/bvlc_googlenet_deploy.prototxt"
    w = write_random_caffemodel(proto, tmp_path / "g.caffemodel")
    folder = convert_caffe(proto, w, tmp_path / "g")
    graph = json.loads((folder / "graph.json").read_text())
    names = {n["module"]: n["name"] for n in graph["nodes"]}
    assert names["inception_3a_1x1"] == "inception_3a/1x1"
    assert len(set(names)) == len(graph["nodes"])
    model = load_folder(folder)
    assert dict(model.named_children()).keys() == names.keys()
    assert "inception_3a_1x1.weight" in model.state_dict()


EXTRA = """
name: "extra" input: "data" input_shape { dim: 2 dim: 4 dim: 3 dim: 5 }
input: "s" input_shape { dim: 2 dim: 4 }
layer { name: "res_ax" type: "Reshape" bottom: "data" top: "res_ax" reshape_param { shape { dim: 3 dim: -1 } axis: 2 num_axes: 1 } }
layer { name: "sc2" type: "Scale" bottom: "data" bottom: "s" top: "sc2" scale_param { axis: 0 } }
layer { name: "sc_hw" type: "Scale" bottom: "data" top: "sc_hw" scale_param { axis: 2 num_axes: 2 bias_term: true } }
layer { name: "flat_end" type: "Flatten" bottom: "data" top: "flat_end" flatten_param { axis: 1 end_axis: 2 } }
"""


def test_reshape_axis_scale_variants_flatten_end_axis(tmp_path: Path) -> None:
    _run(EXTRA, tmp_path, {"data": (2, 4, 3, 5), "s": (2, 4)})


def test_inner_product_transpose_follows_caffe(tmp_path: Path) -> None:
    """transpose: true stores the weight as K x N and computes x . W (Caffe's inner_product_layer);
    OpenCV 4.14 ignores the flag, so the reference is Caffe's formula in numpy."""
    p = _write(
        tmp_path,
        """name: "t" input: "data" input_shape { dim: 2 dim: 4 dim: 3 dim: 5 }
layer { name: "ip_t" type: "InnerProduct" bottom: "data" top: "ip_t" inner_product_param { num_output: 6 transpose: true } }""",
    )
    rng = np.random.default_rng(0)
    w, b = rng.standard_normal((60, 6)).astype(np.float32), rng.standard_normal(6).astype(np.float32)
    folder = convert_caffe(p, write_caffemodel(tmp_path / "w.caffemodel", {"ip_t": [w, b]}), tmp_path / "o")
    x = rng.standard_normal((2, 4, 3, 5)).astype(np.float32)
    got = load_folder(folder)(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(got, x.reshape(2, -1) @ w + b, rtol=1e-5, atol=1e-5)


def test_card_preprocess_from_option_transform_param_or_unknown(tmp_path: Path) -> None:
    body = """layer { name: "relu" type: "ReLU" bottom: "data" top: "r" }\n"""
    head = 'name: "p" input: "data" input_shape { dim: 1 dim: 3 dim: 4 dim: 4 }\n'
    p = _write(tmp_path, head + body)
    card = json.loads((convert_caffe(p, None, tmp_path / "a") / "card.json").read_text())
    assert card["preprocess"]["unknown"] is True
    assert card["origin"] == "caffe" and card["provenance"]["converter"] == "zoo.converters.caffe"
    assert card["files"][0]["checksum"]["algo"] == "sha256"
    mtcnn = {
        "layout": "NCHW",
        "channel_order": "RGB",
        "scale": 1.0,
        "mean": [127.5] * 3,
        "std": [128.0] * 3,
        "transpose_hw": True,
    }
    card = json.loads((convert_caffe(p, None, tmp_path / "b", preprocess=mtcnn) / "card.json").read_text())
    assert card["preprocess"]["transpose_hw"] is True and card["preprocess"]["std"] == [128.0] * 3
    tp = (
        'layer { name: "d" type: "Data" top: "x" transform_param { scale: 0.00390625 mean_value: 104 '
        "mean_value: 117 mean_value: 123 } include { phase: TEST } }\n"
    )
    p2 = _write(tmp_path, head + tp + body, "tp.prototxt")
    card = json.loads((convert_caffe(p2, None, tmp_path / "c") / "card.json").read_text())
    pre = card["preprocess"]
    assert pre["mean"] == [104.0, 117.0, 123.0] and pre["std"] == [256.0] and pre["channel_order"] == "BGR"
    assert "unknown" not in pre
    graph = json.loads((tmp_path / "c" / "graph.json").read_text())
    assert [n["type"] for n in graph["nodes"]] == ["ReLU"]  # the data layer is not part of the graph
