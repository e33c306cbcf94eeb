"""The linear-probe baseline (zoo/probe.py, `zoo probe`) on the real Caffe LeNet: transfer with
ten labelled images per class beats the same architecture with random frozen weights; and the
same probe end to end on the real Keras files (vww_96, mini-Xception) at their default cuts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_features import LENET, lenet_world, small_digits, write_digits, zoo_cli

KERAS = ("testdata/vww_96", "testdata/fer2013_mini_xception")
pytestmark = pytest.mark.slow  # two extractions and four cross-validated fits: about 30 s


@pytest.fixture(scope="module")
def lenet_env(testdata: Path, tmp_path_factory: pytest.TempPathFactory):
    with lenet_world(testdata, tmp_path_factory.mktemp("probe"), ids=(LENET, *KERAS)) as world:
        yield world


@pytest.fixture(scope="module")
def few_labels(lenet_env) -> Path:
    """scikit-learn's digits: a seeded stratified 30% held out as val/ (540 images), and ten
    images per class drawn (seeded) from the rest as train/ (100 images)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    y = load_digits().target
    rest, held = train_test_split(np.arange(len(y)), test_size=0.3, stratify=y, random_state=0)
    rng = np.random.default_rng(0)
    train = [int(i) for c in range(10) for i in rng.choice(rest[y[rest] == c], 10, replace=False)]
    return write_digits(lenet_env["tmp"] / "few_labels", {"train": train, "val": [int(i) for i in held]})


def _randomized(folder: Path, out: Path, seed: int) -> Path:
    """A copy of a zoo model folder whose weights are re-randomized: every tensor's entries
    permuted (seeded), so each layer keeps its weights' (and biases') distribution and scale but
    nothing learnt."""
    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(folder, out)
    g = torch.Generator().manual_seed(seed)
    state = load_file(out / "model.safetensors")
    new = {
        k: v.flatten()[torch.randperm(v.numel(), generator=g)].reshape(v.shape).contiguous()
        for k, v in state.items()
    }
    assert all(not torch.equal(new[k], state[k]) for k in state if state[k].numel() > 1)
    save_file(new, out / "model.safetensors")
    return out


def test_probe_real_lenet_beats_random_weights(lenet_env, few_labels: Path, tmp_path: Path) -> None:
    import zoo
    from zoo.models import converted_folder

    out = tmp_path / "real"
    r = zoo_cli(
        lenet_env["env"], "probe", LENET, "--data", str(few_labels), "--cut", "ip1", "--out", str(out)
    )
    assert r.returncode == 0, r.stderr
    first = r.stdout.splitlines()[0]
    assert first.startswith("held-out accuracy: ") and "val split, 540 images; trained on 100" in first, first
    assert "precision" in r.stdout and "macro avg" in r.stdout  # scikit-learn's classification report
    metrics = json.loads((out / "metrics.json").read_text())
    real = metrics["accuracy"]
    assert real >= 0.90, real  # measured: 0.9352 (the issue: 0.94)
    assert first.split()[2] == f"{real:.4f}"
    assert metrics["cut"] == "ip1" and metrics["n_train"] == 100 and metrics["n_test"] == 540
    assert metrics["cv_folds"] == 5 and metrics["C"] in metrics["C_grid"]
    cm = np.array(metrics["confusion_matrix"])
    assert cm.shape == (10, 10) and cm.sum() == 540 and np.trace(cm) == round(real * 540)
    assert metrics["classification_report"]["accuracy"] == pytest.approx(real)
    assert (out / "report.txt").read_text().startswith(first)
    assert (out / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    api = zoo.probe(LENET, few_labels, cut="ip1")  # the same cached features: the same probe
    assert api.reused and api.accuracy == real and api.confusion == metrics["confusion_matrix"]
    assert api.out is None

    rand = _randomized(converted_folder(LENET), tmp_path / "lenet_random", seed=0)
    rnd = zoo.probe(rand, few_labels, cut="ip1", out=tmp_path / "random")
    assert not rnd.reused and rnd.key != api.key
    # measured: 0.8333 for this draw (the issue: 0.84); seeds 1 and 2 give 0.872 and 0.835
    assert rnd.accuracy <= real - 0.08, (real, rnd.accuracy)


def test_probe_needs_a_held_out_split(lenet_env, tmp_path: Path) -> None:

    import zoo
    from zoo.errors import ZooError

    data = small_digits(tmp_path / "d", per_class=6, classes=3)
    with pytest.raises(ZooError, match="no held-out images"):
        zoo.probe(LENET, data, val_fraction=0)
    res = zoo.probe(LENET, data, val_fraction=0.5, seed=1)  # one folder split: 3 of 6 held out
    assert res.n_train == 9 and res.n_test == 9 and res.folds == 3 and 0 <= res.accuracy <= 1


def _generated_images(out: Path, seed: int) -> Path:
    """Two classes of 9 generated images each (noise around a class colour; PNG and JPEG, sizes
    other than the input, one grey and one RGBA), one folder of class folders."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c, colour in enumerate([(200, 40, 40), (40, 40, 200)]):
        d = out / f"class_{c}"
        d.mkdir(parents=True)
        for i in range(9):
            h, w = int(rng.integers(50, 140)), int(rng.integers(50, 140))
            a = np.clip(rng.normal(colour, 40, (h, w, 3)), 0, 255).astype(np.uint8)
            im = Image.fromarray(a)
            if i == 0:
                im = im.convert("L")
            elif i == 1:
                im = im.convert("RGBA")
            im.save(d / f"{i}.{'jpg' if i % 3 == 2 else 'png'}")
    return out


@pytest.mark.parametrize("model_id", KERAS)
def test_probe_on_a_real_keras_source_at_its_default_cut(lenet_env, model_id: str, tmp_path: Path) -> None:
    """Shape and determinism, not accuracy: the features at the card's default cut have the
    cut layer's channels, and a second extraction in another ZOO_HOME gives the same bytes and
    the same probe."""
    import zoo

    data = _generated_images(tmp_path / "images", seed=3)
    card = zoo.info(model_id)
    out = tmp_path / "probe"
    r = zoo_cli(lenet_env["env"], "probe", model_id, "--data", str(data), "--out", str(out))
    assert r.returncode == 0, r.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["cut"] == card.default_cut and metrics["n_train"] + metrics["n_test"] == 18
    assert metrics["n_test"] == 6 and 0.0 <= metrics["accuracy"] <= 1.0  # 30% of 9 per class, rounded

    f = zoo.features(model_id, data, val_fraction=0.3)
    assert f.reused and f.cut == card.default_cut  # the probe's entry
    (row,) = [r for r in zoo.layers(model_id) if r["name"] == card.default_cut]
    channels = row["output_shape"][1]  # (1, C, H, W) or (1, D) at the card's input size, NCHW
    assert f.X["train"].shape == (12, channels) and f.X["val"].shape == (6, channels)
    assert np.isfinite(f.X["train"]).all() and np.asarray(f.X["train"]).std() > 0

    other = tmp_path / "home2"
    g = zoo.features(model_id, data, val_fraction=0.3, home=other)  # converted and extracted again
    assert not g.reused and g.key == f.key
    for split in ("train", "val"):
        np.testing.assert_array_equal(g.X[split], f.X[split])
        np.testing.assert_array_equal(g.y[split], f.y[split])
    again = zoo.probe(model_id, data, home=other)
    assert again.reused and again.accuracy == metrics["accuracy"]
    assert again.confusion == metrics["confusion_matrix"]
