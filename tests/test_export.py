"""A fine-tuning run afterwards (zoo/export.py, zoo/finetune/run.py): `zoo export` to a model
folder whose ONNX equals torch, `zoo predict` / `zoo layers` / `zoo evaluate` on the run, and
`zoo register` of the export, found by `zoo search` and fine-tuned again (the real LeNet)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_features import LENET, lenet_world, small_digits, zoo_cli

pytestmark = pytest.mark.slow  # a short fine-tune, an export, a second fine-tune: about a minute


@pytest.fixture(scope="module")
def world(testdata: Path, tmp_path_factory: pytest.TempPathFactory):
    with lenet_world(testdata, tmp_path_factory.mktemp("export")) as w:
        yield w


@pytest.fixture(scope="module")
def run(world) -> Path:
    import zoo

    data = small_digits(world["tmp"] / "digits", per_class=12, classes=3)
    res = zoo.finetune(
        LENET, data, world["tmp"] / "run", cut="ip1", epochs=3, lr=0.01, workers=0, batch_size=8
    )
    assert res.accuracy > 0.5
    return res.run_dir


def test_export_onnx_equals_torch_and_the_run(world, run: Path, tmp_path: Path) -> None:
    import onnxruntime as ort
    import torch

    import zoo
    from zoo.finetune import load_run

    out = tmp_path / "exported"
    r = zoo_cli(world["env"], "export", str(run), "--to", "all", "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "card.json",
        "graph.json",
        "layermap.json",
        "model.onnx",
        "model.safetensors",
        "verify.json",
    ]
    card = json.loads((out / "card.json").read_text())
    assert card["labels"]["names"] == ["0", "1", "2"] and card["num_classes"] == 3
    assert card["architecture"]["kind"] == "finetune" and card["architecture"]["name"] == LENET
    assert card["provenance"]["parent"] == LENET and card["provenance"]["training"]["epochs"] == 3
    acc = json.loads((run / "metrics.json").read_text())["final"]["accuracy"]
    assert card["metrics"][0]["name"] == "accuracy" and card["metrics"][0]["value"] == pytest.approx(acc)
    assert json.loads((out / "verify.json").read_text())["passed"] is True

    net, _ = load_run(run)
    again = zoo.load(out)
    x = torch.randn(5, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref, got = net(x).numpy(), again(x).numpy()
    np.testing.assert_array_equal(got, ref)  # the folder is the run's best model
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    (onnx_out,) = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    np.testing.assert_allclose(onnx_out, ref, rtol=1e-4, atol=1e-5 * max(1.0, float(np.abs(ref).max())))
    assert (onnx_out.argmax(1) == ref.argmax(1)).all()

    r = zoo_cli(world["env"], "export", str(run), "-o", str(out))  # not over it without --force
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1 and "--force" in r.stderr
    assert (out / "model.onnx").is_file()
    r = zoo_cli(world["env"], "export", str(tmp_path), "-o", str(tmp_path / "x"))
    assert r.returncode != 0 and "not a fine-tuning run" in r.stderr and not (tmp_path / "x").exists()


def test_predict_layers_and_evaluate_on_the_run(world, run: Path) -> None:
    import zoo

    imgs = sorted((world["tmp"] / "digits").rglob("*.png"))[:4]
    r = zoo_cli(world["env"], "predict", str(run), *map(str, imgs), "--json", "--top-k", "3")
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert [g["image"] for g in got] == [str(p) for p in imgs]
    assert all({t["label"] for t in g["top"]} == {"0", "1", "2"} for g in got)
    assert all(abs(sum(t["score"] for t in g["top"]) - 1) < 1e-5 for g in got)

    rows = zoo.layers(run)
    assert [r["name"] for r in rows][-1] == "head.mlp.fc" and rows[-1]["output_shape"] == [1, 3]
    assert [r["name"] for r in rows if r["default_cut"]] == ["ip1"]

    other = small_digits(world["tmp"] / "other", per_class=5, classes=3)
    r = zoo_cli(world["env"], "evaluate", str(run), "--data", str(other))
    assert r.returncode == 0, r.stderr
    ev = run / "eval-other"
    m = json.loads((ev / "metrics.json").read_text())["final"]
    assert m["n"] == 15 and np.array(m["confusion_matrix"]).sum() == 15
    preds = zoo.predict(run, sorted(other.rglob("*.png")), top_k=1)
    truth = [Path(p["image"]).parent.name for p in preds]
    assert m["accuracy"] == pytest.approx(
        np.mean([p["top"][0]["label"] == t for p, t in zip(preds, truth, strict=True)])
    )
    assert (ev / "report.html").is_file() and (ev / "confusion_matrix.png").stat().st_size > 500


def test_registered_export_is_found_and_fine_tunes_again(world, run: Path, tmp_path: Path) -> None:
    out = tmp_path / "exported"
    assert zoo_cli(world["env"], "export", str(run), "--to", "torch", "-o", str(out)).returncode == 0
    assert not (out / "model.onnx").exists()
    r = zoo_cli(world["env"], "register", str(out), "--id", "me/lenet-digits")
    assert r.returncode == 0, r.stderr
    r = zoo_cli(world["env"], "search", "lenet-digits", "--json")
    assert r.returncode == 0 and "me/lenet-digits" in [c["id"] for c in json.loads(r.stdout)], r.stdout

    data = small_digits(tmp_path / "four", per_class=10, classes=4)
    run2 = tmp_path / "run2"
    r = zoo_cli(
        world["env"],
        "finetune",
        "me/lenet-digits",
        "--data",
        str(data),
        "--out",
        str(run2),
        "--epochs",
        "2",
        "--stage2-epochs",
        "1",
        "--unfreeze",
        "2",
        "--lr",
        "0.01",
        "--workers",
        "0",
    )
    assert r.returncode == 0, r.stderr
    config = json.loads((run2 / "config.json").read_text())
    assert config["model_id"] == "me/lenet-digits" and config["cut"] == "ip1" and len(config["classes"]) == 4
    m = json.loads((run2 / "metrics.json").read_text())
    assert [h["stage"] for h in m["epochs"]] == [1, 1, 2] and 0 <= m["final"]["accuracy"] <= 1
