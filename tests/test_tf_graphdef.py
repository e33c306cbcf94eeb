"""Frozen TensorFlow GraphDef (.pb) -> zoo model folder (issue 12, slice B).

One TensorFlow subprocess per module (tests/tf_graphdef_fixtures.py) saves and freezes tf_slim's
alexnet_v2 (random weights), a small slim BatchNorm net, a non-slim graph and a hand-written
producer-8 graph with the 2015 ops, and records TensorFlow's outputs on batches of 3; the
conversions and every check here run without TensorFlow.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import requires

pytestmark = pytest.mark.slow
sys.path.insert(0, str(Path(__file__).parent))

NET = "alexnet_v2"


def _tol(ref: np.ndarray) -> float:
    return 1e-5 * max(1.0, float(np.abs(ref).max()))


@pytest.fixture(scope="module")
def fx(tmp_path_factory):  # noqa: ANN001, ANN201
    requires.tensorflow("tf_slim")
    from tf_graphdef_fixtures import SLIM_KWARGS, make_graphdef_fixtures

    from zoo.convert import convert

    d = make_graphdef_fixtures(tmp_path_factory.mktemp("graphdef"), NET)
    arch = f"slim:{NET}?" + "&".join(f"{k}={v}" for k, v in SLIM_KWARGS.items())
    return {
        "d": d,
        "slim_pb": convert(d / "slim.pb", d / "out_pb", to="all", outputs=[f"{NET}/fc8/squeezed:0"]),
        "slim_ckpt": convert(d / "slim" / f"{NET}.ckpt", d / "out_ckpt", arch=arch),
    }


def _torch(folder: Path, x: np.ndarray) -> list[np.ndarray]:
    """The folder's PyTorch outputs on NHWC ``x``, back in NHWC."""
    import torch

    import zoo

    m = zoo.load(folder)
    with torch.no_grad():
        ys = m(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))))
    ys = [ys] if isinstance(ys, torch.Tensor) else list(ys)
    return [y.numpy().transpose(0, 2, 3, 1) if y.dim() == 4 else y.numpy() for y in ys]


def _onnx(folder: Path, x: np.ndarray) -> np.ndarray:
    from converters.torch_onnx import onnx_run

    return onnx_run(folder / "model.onnx", np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def _close(y: np.ndarray, ref: np.ndarray) -> None:
    assert y.shape == ref.shape and np.isfinite(ref).all()
    assert np.abs(y - ref).max() <= _tol(ref)
    if ref.ndim == 2:
        assert (y.argmax(1) == ref.argmax(1)).all()


def test_slim_graph_matches_tensorflow(fx) -> None:  # noqa: ANN001
    x, ref = np.load(fx["d"] / "slim_x.npy"), np.load(fx["d"] / "slim_ref.npy")
    assert ref.shape == (3, 10)
    (y,) = _torch(fx["slim_pb"], x)
    _close(y, ref)
    _close(_onnx(fx["slim_pb"], x), ref)


def test_slim_graph_same_as_checkpoint(fx) -> None:  # noqa: ANN001
    """The frozen graph and the checkpoint (--arch slim:NET) give the same nodes, module names,
    layer map and weights."""
    from safetensors.numpy import load_file

    gp = json.loads((fx["slim_pb"] / "graph.json").read_text())
    gc = json.loads((fx["slim_ckpt"] / "graph.json").read_text())
    assert [n["module"] for n in gp["nodes"]] == [n["module"] for n in gc["nodes"]]
    assert gp["nodes"] == gc["nodes"]  # names, ops, attrs, blobs, params, shapes, TF ops
    assert gp["inputs"] == gc["inputs"] and gp["outputs"] == gc["outputs"]
    assert gp["nodes"][0]["name"] == f"{NET}/conv1" and gp["outputs"] == [f"{NET}/fc8/squeezed"]
    lp = json.loads((fx["slim_pb"] / "layermap.json").read_text())["rows"]
    lc = json.loads((fx["slim_ckpt"] / "layermap.json").read_text())["rows"]
    assert lp == lc and len(lp) == 16
    sp, sc = load_file(fx["slim_pb"] / "model.safetensors"), load_file(fx["slim_ckpt"] / "model.safetensors")
    assert sorted(sp) == sorted(sc) and all(np.array_equal(sp[k], sc[k]) for k in sp)
    card = json.loads((fx["slim_pb"] / "card.json").read_text())
    assert card["provenance"]["source_format"] == "tf-graphdef"
    assert card["provenance"]["outputs"] == [f"{NET}/fc8/squeezed:0"]
    assert card["provenance"]["inputs"] == ["input:0"]  # the single Placeholder, by default


def test_default_inputs_and_outputs(fx, tmp_path) -> None:  # noqa: ANN001
    """Without --inputs / --outputs: the graph's Placeholder and its sink (here the same)."""
    from zoo.convert import convert

    out = convert(fx["d"] / "bn.pb", tmp_path / "bn", to="all")
    g = json.loads((out / "graph.json").read_text())
    assert [i["name"] for i in g["inputs"]] == ["images"] and g["outputs"] == ["net/gap"]
    assert g["inputs"][0]["shape"] == [1, 3, 32, 32]
    x, ref = np.load(fx["d"] / "bn_x.npy"), np.load(fx["d"] / "bn_ref.npy")
    (y,) = _torch(out, x)
    _close(y, ref)
    _close(_onnx(out, x), ref)
    bns = [n for n in g["nodes"] if n["op"] == "keras.batch_norm"]
    assert [n["name"] for n in bns] == [
        "net/conv1/BatchNorm",
        "net/conv2/BatchNorm",
        "net/conv3/BatchNorm",
        "net/bn_only",
    ]
    assert all(n["attrs"]["eps"] == pytest.approx(1e-3) for n in bns)
    # scale=False / center=False: the ones / zeros slim feeds are constants, not layer-map rows
    rows = {r["source"] for r in json.loads((out / "layermap.json").read_text())["rows"]}
    assert "net/conv3/BatchNorm/gamma" not in rows and "net/bn_only/gamma" in rows
    assert not any(r.endswith("/Const") for r in rows)


def test_cut_in_the_middle(fx, tmp_path) -> None:  # noqa: ANN001
    """A non-slim graph cut at a computed tensor, with two outputs (ConcatV2, Reshape in NHWC
    order, MatMul + BiasAdd, MatMul + Add)."""
    from zoo.cli import main

    out = tmp_path / "cut"
    main(
        ["convert", str(fx["d"] / "cut.pb"), str(out), "--inputs", "pre:0"]
        + ["--outputs", "fc2/logits:0,concat:0"]
    )
    g = json.loads((out / "graph.json").read_text())
    names = [n["name"] for n in g["nodes"]]
    assert [i["name"] for i in g["inputs"]] == ["pre"] and g["outputs"] == ["fc2", "concat"]
    assert "raw" not in names and "prob" not in names and names[-1] == "fc2"
    ops = {n["name"]: n["op"] for n in g["nodes"]}
    assert ops["concat"] == "keras.concat" and ops["flatten"] == "keras.reshape"
    assert ops["fc1"] == "keras.linear" and ops["fc2"] == "keras.linear"
    x = np.load(fx["d"] / "cut_x.npy")
    logits, cat = _torch(out, x)
    _close(logits, np.load(fx["d"] / "cut_ref_logits.npy"))
    _close(cat, np.load(fx["d"] / "cut_ref_concat.npy"))


def test_old_ops_2015(fx, tmp_path) -> None:  # noqa: ANN001
    """BatchNormWithGlobalNormalization, old Concat, Conv2D on Consts, Reshape, MatMul + Add,
    Softmax; --inputs Mul:0 drops the DecodeJpeg preprocessing above it."""
    from zoo.convert import convert

    out = convert(fx["d"] / "old.pb", tmp_path / "old", to="all", inputs=["Mul:0"])
    g = json.loads((out / "graph.json").read_text())
    names = [n["name"] for n in g["nodes"]]
    assert not {"DecodeJpeg", "Cast", "ResizeBilinear", "Sub", "Mul"} & set(names)
    assert g["inputs"][0]["name"] == "Mul" and g["inputs"][0]["shape"] == [1, 3, 20, 20]  # inferred
    assert g["outputs"] == ["softmax"]  # the sink
    assert names[:3] == ["conv/Conv2D", "conv/batchnorm", "conv"]  # the Relu keeps its TF name
    assert "mixed/join" in names and "pool_3/_reshape" in names and "softmax/logits" in names
    bn = {n["name"]: n for n in g["nodes"] if n["type"] == "BatchNormWithGlobalNormalization"}
    assert bn["conv/batchnorm"]["attrs"]["scale"] and not bn["mixed/conv/batchnorm"]["attrs"]["scale"]
    x = np.load(fx["d"] / "old_x.npy")
    (y,) = _torch(out, x)
    _close(y, np.load(fx["d"] / "old_ref.npy"))
    _close(_onnx(out, x), np.load(fx["d"] / "old_ref.npy"))
    logits = convert(fx["d"] / "old.pb", tmp_path / "logits", inputs="Mul:0", outputs="softmax/logits:0")
    _close(_torch(logits, x)[0], np.load(fx["d"] / "old_ref_logits.npy"))


def test_tensor_names() -> None:
    from converters.tf.graphdef import parse_tensor_names

    assert parse_tensor_names(["a:0,b/c:1", "Mul:0[1,299,299,3]", "x[?,8]"]) == [
        ("a", 0, None),
        ("b/c", 1, None),
        ("Mul", 0, [1, 299, 299, 3]),
        ("x", 0, [-1, 8]),
    ]


def test_input_shape_option(fx, tmp_path) -> None:  # noqa: ANN001
    """The placeholder size from --inputs NAME:0[...], the CLI's --inputs spelling."""
    from zoo.convert import convert

    out = convert(fx["d"] / "bn.pb", tmp_path / "b", inputs="images:0[-1,40,48,3]")
    g = json.loads((out / "graph.json").read_text())
    assert g["inputs"][0]["shape"] == [1, 3, 40, 48] and g["nodes"][-1]["output_shapes"] == [[1, 16]]
    out = convert(fx["d"] / "bn.pb", tmp_path / "c", inputs="images:0[?,?,?,3]")  # unknown: 224
    assert json.loads((out / "graph.json").read_text())["inputs"][0]["shape"] == [1, 3, 224, 224]
    from zoo.errors import ConversionError

    with pytest.raises(ConversionError, match="TF op flatten: Reshape of .* the sizes do not match"):
        convert(fx["d"] / "cut.pb", tmp_path / "d", inputs="pre:0[?,?,?,3]")  # 224 does not fit
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize(
    ("case", "kw", "message"),
    [
        ("random", {}, "not a binary TensorFlow GraphDef"),
        ("text", {}, "not a binary TensorFlow GraphDef"),
        ("old", {"inputs": ["Sub:0"]}, "TF op Mul: type Mul is not supported"),
        ("old", {}, "depend on no Placeholder"),
        ("cut", {"outputs": ["nothing:0"]}, "no op 'nothing' in the graph"),
        ("cut", {"inputs": ["nothing:0"]}, "no op 'nothing' in the graph"),
        ("cut", {"inputs": ["stem/w:0"]}, "is a constant"),
        ("cut", {"inputs": ["left/Relu:0"], "outputs": ["concat:0"]}, "Placeholder 'raw', which is not in"),
        ("cut", {"outputs": ["concat:0"], "inputs": ["pre:0", "fc1/MatMul:0"]}, "do not depend on it"),
    ],
)
def test_bad_input(fx, tmp_path, capsys, case, kw, message) -> None:  # noqa: ANN001
    """One ConversionError line, a non-zero exit from the CLI, nothing written."""
    from zoo.cli import main
    from zoo.convert import convert
    from zoo.errors import ConversionError

    src = fx["d"] / f"{case}.pb"
    if case == "random":
        src = tmp_path / "random.pb"
        src.write_bytes(np.random.default_rng(1).bytes(4096))
    elif case == "text":
        src = tmp_path / "text.pb"
        src.write_text("node { name: 'x' op: 'Placeholder' }\n")
    with pytest.raises(ConversionError, match=message) as e:
        convert(src, tmp_path / "out", **kw)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "out").exists()
    args = ["convert", str(src), str(tmp_path / "out2")]
    for k, v in kw.items():
        args += [f"--{k}", ",".join(v)]
    with pytest.raises(SystemExit) as ex:
        main(args)
    assert ex.value.code not in (0, None)
    err = capsys.readouterr().err.strip()
    assert message.split("'")[0] in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out2").exists()


def test_no_tensorflow_here() -> None:
    assert "tensorflow" not in sys.modules


def test_damaged_graphs_fail_cleanly(fx, tmp_path) -> None:  # noqa: ANN001
    """Truncated and byte-flipped GraphDefs: a one-line ConversionError or a graph, never a traceback."""
    from converters.tf.graphdef import build_graphdef_graph, graphdef_document, read_graphdef
    from zoo.errors import ConversionError

    data = (fx["d"] / "old.pb").read_bytes()
    rng = np.random.default_rng(2)
    errors = 0
    for k in range(60):
        b = bytearray(data[: int(rng.integers(0, len(data)))] if k % 2 else data)
        if not k % 2:
            for i in rng.integers(0, len(b), 3):
                b[i] = int(rng.integers(0, 256))
        (tmp_path / "d.pb").write_bytes(bytes(b))
        try:
            doc, w = graphdef_document(read_graphdef(tmp_path / "d.pb")[0], inputs="Mul:0")
            build_graphdef_graph(doc, {n: tuple(v.shape) for n, v in w.items()})
        except ConversionError as e:
            errors += 1
            assert "\n" not in str(e)
    assert errors >= 30


def test_zoo_verify_against_tensorflow(fx, tmp_path) -> None:  # noqa: ANN001
    """`zoo verify` of a folder converted from a checkpoint and from a frozen graph: TensorFlow
    itself (a subprocess) runs the source on the same random inputs; a damaged weight fails."""
    import shutil

    from safetensors.numpy import load_file, save_file

    from zoo.convert import verify

    for key in ("slim_ckpt", "slim_pb"):
        res = verify(fx[key], batch=3)
        assert res["passed"], res
        assert "TensorFlow" in res["reference"] and res["inputs"] == [[3, 3, 224, 224]]
        assert res["backends"] == (["torch", "onnx"] if key == "slim_pb" else ["torch"])
        assert 0 < res["max_abs_diff"] and res["rel"] <= 1e-5
    bad = tmp_path / "bad"
    shutil.copytree(fx["slim_ckpt"], bad)
    st = load_file(bad / "model.safetensors")
    k = next(k for k in sorted(st) if k.endswith("fc8.weight"))
    st[k] = st[k] * 1.01
    save_file(st, bad / "model.safetensors")
    res = verify(bad, batch=3)
    assert not res["passed"] and res["rel"] > 1e-4
