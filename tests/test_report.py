"""zoo.report (the fine-tuning / evaluation report) and `zoo report RUN_DIR`: real PNG images in
tmp_path, seeded predictions with right, wrong and uncertain ones; every expectation is computed
here independently (scikit-learn for the metrics, plain sorting for the grids)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import (
    accuracy_score,
    classification_report,
    confusion_matrix,
    precision_recall_fscore_support,
)

from zoo import report as zr
from zoo.errors import ZooError

ROOT = Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"
# "<b>&cat" checks the page's escaping; "$\frac$ bird" is broken mathtext: matplotlib raises on it
# unless the plots draw names as plain text
CLASSES = ["<b>&cat", "dog", "$\\frac$ bird"]
N = 36
GRID_FILES = [f"{g}.png" for g in zr.GRIDS]


def _images(folder: Path, y: np.ndarray, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, label in enumerate(y):
        w, h = int(rng.integers(20, 64)), int(rng.integers(20, 64))
        arr = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        arr[..., label] = 255  # each class its own hue
        img = Image.fromarray(arr, "RGB")
        if i % 5 == 0:
            img = img.convert("L")  # some greyscale files: the tiles convert to RGB
        p = folder / f"{CLASSES[label][-3:].strip('$').replace(' ', '_')}_{i:02d}.png"
        img.save(p)
        paths.append(str(p.resolve()))
    return paths


def _predictions(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """y_true and softmax-like probs: 24 rows forced right (the true class gets the largest
    share), 12 left random (most of them wrong); two right rows of one class share their probs
    exactly (a tie, broken by the order of the paths)."""
    rng = np.random.default_rng(seed)
    y = np.concatenate([np.arange(3).repeat(4), rng.integers(0, 3, N - 12)])
    probs = rng.dirichlet(np.full(3, 0.7), size=N)
    for i in range(24):
        top = probs[i].argmax()
        probs[i, [top, y[i]]] = probs[i, [y[i], top]]
    same = [i for i in range(24) if y[i] == y[0]]
    probs[same[1]] = probs[same[0]]
    return y, probs


def _history() -> list[dict]:
    rows = []
    for e in range(1, 7):
        stage = 1 if e <= 3 else 2
        rows.append(
            {
                "stage": stage,
                "epoch": e,
                "train_loss": 1.2 / e,
                "train_acc": 0.5 + 0.07 * e,
                "val_loss": None if e == 1 else 1.4 / e,
                "val_acc": None if e == 1 else 0.45 + 0.06 * e,
                "lr": 1e-3 if stage == 1 else 1e-4,
            }
        )
    return rows


CONFIG = {"model": "keras/mobilenet", "cut": "global_pool", "classes": CLASSES, "note": "<script>x</script>"}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("report")
    y, probs = _predictions(seed=7)
    paths = _images(tmp / "images", y, seed=7)
    out = tmp / "run"
    s = zr.write_report(
        out,
        classes=CLASSES,
        y_true=y,
        probs=probs,
        paths=paths,
        history=_history(),
        title="a & b",
        config=CONFIG,
    )
    return {"tmp": tmp, "out": out, "y": y, "probs": probs, "paths": paths, "s": s}


def test_the_predictions_have_right_and_wrong(run) -> None:
    """The fixture's own preconditions: more right than one grid holds, wrong ones over more than
    one grid row yet fewer than a grid."""
    pred = run["probs"].argmax(1)
    right = int((pred == run["y"]).sum())
    assert right > 16 and zr.GRID_COLUMNS < N - right < 16


def test_every_file_is_written_and_real(run) -> None:
    out, s = run["out"], run["s"]
    expected = [zr.REPORT_TXT, zr.CONFUSION_PNG, zr.CURVES_PNG, *GRID_FILES, zr.REPORT_HTML]
    assert sorted(s["files"]) == sorted(expected)
    for name in expected:
        data = (out / name).read_bytes()
        assert len(data) > (1000 if name.endswith(".png") else 300), name
        if name.endswith(".png"):
            assert data[:8] == PNG, name
            with Image.open(out / name) as im:
                im.verify()
    assert (out / zr.REPORT_HTML).read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert json.loads(json.dumps(s)) == s  # JSON-serializable as it is
    assert not list(out.glob(".*tmp"))  # no temporary files left behind


def test_the_metrics_are_scikit_learns(run) -> None:
    y, pred, s = run["y"], run["probs"].argmax(1), run["s"]
    assert s["n"] == N and s["classes"] == CLASSES
    assert s["accuracy"] == accuracy_score(y, pred)
    assert s["n_correct"] == int((y == pred).sum())
    cm = np.array(s["confusion_matrix"])
    assert cm.sum() == N
    assert (cm == confusion_matrix(y, pred, labels=[0, 1, 2])).all()
    prec, rec, f1, sup = precision_recall_fscore_support(y, pred, labels=[0, 1, 2], zero_division=0)
    for k, c in enumerate(CLASSES):
        assert s["per_class"][c] == pytest.approx(
            {"precision": prec[k], "recall": rec[k], "f1": f1[k], "support": sup[k]}
        )
    text = (run["out"] / zr.REPORT_TXT).read_text(encoding="utf-8")
    first, rest = text.split("\n", 1)
    assert first.startswith("accuracy: ") and f"{accuracy_score(y, pred):.4f}" in first
    expect = classification_report(y, pred, labels=[0, 1, 2], target_names=CLASSES, digits=4, zero_division=0)
    assert rest.strip() == expect.strip()


def test_best_and_worst_classes_by_f1_then_recall(run) -> None:
    y, pred, s = run["y"], run["probs"].argmax(1), run["s"]
    _, rec, f1, _ = precision_recall_fscore_support(y, pred, labels=[0, 1, 2], zero_division=0)
    order = sorted(range(3), key=lambda k: (-f1[k], -rec[k], k))
    assert s["best_classes"] == [CLASSES[order[0]]]  # 3 classes: one best, one worst
    assert s["worst_classes"] == [CLASSES[order[-1]]]
    # the rule itself, where it matters: a tie on F1 broken by recall; classes absent not ranked
    per = {
        "a": {"f1": 0.5, "recall": 0.4, "precision": 0.6, "support": 3},
        "b": {"f1": 0.5, "recall": 0.7, "precision": 0.4, "support": 3},
        "c": {"f1": 0.9, "recall": 0.9, "precision": 0.9, "support": 3},
        "d": {"f1": 0.0, "recall": 0.0, "precision": 0.0, "support": 0},
        "e": {"f1": 0.1, "recall": 0.1, "precision": 0.1, "support": 1},
    }
    assert zr.rank_classes(per) == (["c", "b"], ["e", "a"])
    assert zr.rank_classes(per, k=1) == (["c"], ["e"])


def _expected_grids(y: np.ndarray, probs: np.ndarray, paths: list[str], k: int) -> dict[str, list[dict]]:
    pred = [int(np.argmax(r)) for r in probs]
    p = [float(max(r)) for r in probs]

    def items(idx: list[int]) -> list[dict]:
        return [
            {"path": paths[i], "true": CLASSES[y[i]], "pred": CLASSES[pred[i]], "p": p[i]} for i in idx[:k]
        ]

    right = [i for i in range(len(y)) if pred[i] == y[i]]
    wrong = [i for i in range(len(y)) if pred[i] != y[i]]
    return {
        "most_confident_right": items(sorted(right, key=lambda i: (-p[i], i))),
        "most_confident_wrong": items(sorted(wrong, key=lambda i: (-p[i], i))),
        "most_uncertain": items(sorted(range(len(y)), key=lambda i: (p[i], i))),
    }


def test_the_grids_hold_the_images_the_rule_picks(run) -> None:
    s = run["s"]
    expect = _expected_grids(run["y"], run["probs"], run["paths"], 16)
    assert s["grids"] == expect
    assert len(s["grids"]["most_confident_right"]) == 16  # cut at grid_size
    assert all(it["true"] == it["pred"] for it in s["grids"]["most_confident_right"])
    assert all(it["true"] != it["pred"] for it in s["grids"]["most_confident_wrong"])


def _grid_px(k: int) -> tuple[int, int]:
    if k == 0:
        return round(zr.TILE_W * zr.DPI), round(zr.TILE_H * zr.DPI)
    cols, rows = min(zr.GRID_COLUMNS, k), math.ceil(k / zr.GRID_COLUMNS)
    return round(cols * zr.TILE_W * zr.DPI), round(rows * zr.TILE_H * zr.DPI)


def test_a_grid_png_is_as_large_as_its_tiles(run) -> None:
    sizes = {}
    for g in zr.GRIDS:
        with Image.open(run["out"] / f"{g}.png") as im:
            sizes[g] = im.size
        assert im.size == _grid_px(len(run["s"]["grids"][g])), g
    wrong = len(run["s"]["grids"]["most_confident_wrong"])
    assert wrong < 16 and sizes["most_confident_wrong"][1] < sizes["most_confident_right"][1]


def test_the_page_links_every_png_and_escapes_every_text(run) -> None:
    page = (run["out"] / zr.REPORT_HTML).read_text(encoding="utf-8")
    for name in run["s"]["files"]:
        if name.endswith(".png"):
            assert f'src="{name}"' in page, name
    assert "&lt;b&gt;&amp;cat" in page and "<b>&cat" not in page
    assert "&lt;script&gt;x&lt;/script&gt;" in page and "<script>" not in page
    assert "<title>a &amp; b</title>" in page
    assert f"{run['s']['accuracy']:.4f}" in page
    assert "global_pool" in page  # the config is shown
    for c in run["s"]["best_classes"] + run["s"]["worst_classes"]:
        assert c.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;") in page


def test_no_history_no_curves_and_empty_grids_say_none(run, tmp_path: Path) -> None:
    """Perfect predictions, no history, one image gone, grid_size 3: no curves.png (neither in the
    files nor on the page), the wrong grid is one 'none' tile, the unreadable image still a tile."""
    y = run["y"]
    probs = np.eye(3)[y] * 0.8 + 0.1  # all right, p = 0.8 everywhere
    paths = list(run["paths"])
    paths[0] = str(tmp_path / "gone.png")
    for history in (None, []):
        out = tmp_path / f"eval-{history is None}"
        s = zr.write_report(
            out, classes=CLASSES, y_true=y, probs=probs, paths=paths, history=history, grid_size=3
        )
        assert zr.CURVES_PNG not in s["files"] and not (out / zr.CURVES_PNG).exists()
        assert zr.CURVES_PNG not in (out / zr.REPORT_HTML).read_text(encoding="utf-8")
        assert s["accuracy"] == 1.0 and s["grids"]["most_confident_wrong"] == []
        assert s["grids"] == _expected_grids(y, probs, paths, 3)
        assert s["grids"]["most_uncertain"][0]["path"] == paths[0]  # all tied: path order
        for g in zr.GRIDS:
            with Image.open(out / f"{g}.png") as im:
                assert im.size == _grid_px(len(s["grids"][g]))
        assert sorted(s["files"]) == sorted([zr.REPORT_TXT, zr.CONFUSION_PNG, *GRID_FILES, zr.REPORT_HTML])


def test_bad_inputs(tmp_path: Path) -> None:
    y = np.array([0, 1])
    probs = np.array([[0.9, 0.1], [0.2, 0.8]])
    kw = {"classes": ["a", "b"], "paths": ["x", "y"]}
    with pytest.raises(ValueError, match="shape"):
        zr.write_report(tmp_path, y_true=y, probs=probs[:, :1], **kw)
    with pytest.raises(ValueError, match="paths"):
        zr.write_report(tmp_path, y_true=y, probs=probs, classes=["a", "b"], paths=["x"])
    with pytest.raises(ValueError, match="class indices"):
        zr.write_report(tmp_path, y_true=np.array([0, 2]), probs=probs, **kw)
    with pytest.raises(ZooError, match="no images"):
        zr.write_report(tmp_path, y_true=y[:0], probs=probs[:0], classes=["a", "b"], paths=[])
    assert not list(tmp_path.iterdir())  # nothing written


def _cli(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ZOO_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "zoo.cli", "report", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=60,
    )


def test_zoo_report_prints_the_run(run) -> None:
    out, s = run["out"], run["s"]
    metrics = {"final": s, "epochs": _history(), "best_epoch": 5, "device": "cpu", "stage2": {"epochs": 3}}
    (out / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    (out / "config.json").write_text(json.dumps(CONFIG), encoding="utf-8")
    r = _cli(str(out), home=run["tmp"] / "home")
    assert r.returncode == 0, r.stderr
    text = r.stdout
    assert f"accuracy: {s['accuracy']:.4f} on {N} images" in text
    assert "best epoch: 5" in text and "device: cpu" in text and "stage2: epochs=3" in text
    assert "keras/mobilenet, cut global_pool, 3 classes" in text
    best = next(line for line in text.splitlines() if line.startswith("best classes:"))
    worst = next(line for line in text.splitlines() if line.startswith("worst classes:"))
    assert all(c in best for c in s["best_classes"]) and all(c in worst for c in s["worst_classes"])
    assert not any(c in best for c in s["worst_classes"])
    assert str((out / zr.REPORT_HTML).resolve()) in text
    assert all(f in text for f in s["files"])
    r = _cli(str(out), "--json", home=run["tmp"] / "home")
    assert r.returncode == 0 and json.loads(r.stdout) == s


def test_zoo_report_on_a_folder_that_is_no_run(tmp_path: Path) -> None:
    r = _cli(str(tmp_path), home=tmp_path / "home")
    assert r.returncode != 0 and r.stdout == ""
    assert r.stderr.strip() == f"zoo: error: {tmp_path}: not a fine-tuning run (no metrics.json)"
    (tmp_path / "metrics.json").write_text("{not json", encoding="utf-8")
    r = _cli(str(tmp_path), "--json", home=tmp_path / "home")
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1 and "unreadable" in r.stderr
    with pytest.raises(ZooError, match="no final report"):
        (tmp_path / "metrics.json").write_text('{"epochs": []}', encoding="utf-8")
        zr.summary(tmp_path)


def test_importing_the_report_and_the_cli_stays_light() -> None:
    code = (
        "import sys, zoo.report, zoo.cli\n"
        "heavy = {'matplotlib', 'sklearn', 'torch', 'PIL'} & {m.split('.')[0] for m in sys.modules}\n"
        "assert not heavy, heavy\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 0, r.stderr
