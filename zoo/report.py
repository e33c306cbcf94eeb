"""The reports of a fine-tuning run (``zoo finetune``) or an evaluation (``zoo evaluate``), and the
one confusion-matrix plot every command shares (``zoo probe`` too).

:func:`write_report` turns the predictions on one split (validation or test) into files beside
each other: the classification report, the confusion matrix, the training curves, three image
grids and one HTML page linking them. :func:`summary` is ``zoo report RUN_DIR``'s text.

Metrics come from scikit-learn, plots from matplotlib's ``Figure`` with the Agg canvas (no pyplot,
no global state), tiles from Pillow. Everything heavy is imported inside the functions: importing
this module stays cheap.
"""

from __future__ import annotations

import html
import json
import math
import os
import tempfile
from pathlib import Path
from string import Template
from typing import Any

import numpy as np

from zoo.errors import ZooError

REPORT_TXT = "classification_report.txt"
CONFUSION_PNG = "confusion_matrix.png"
CURVES_PNG = "curves.png"
REPORT_HTML = "report.html"
# the three grids, in the order the page shows them
GRIDS = ("most_confident_right", "most_confident_wrong", "most_uncertain")

# The grid PNGs: up to GRID_COLUMNS tiles a row, each tile TILE_W x TILE_H inches at DPI, so a
# grid of n >= 1 tiles is min(n, GRID_COLUMNS) * TILE_W * DPI pixels wide and
# ceil(n / GRID_COLUMNS) * TILE_H * DPI high; an empty grid is one tile's size.
GRID_COLUMNS = 4
TILE_W, TILE_H, DPI = 2.0, 2.3, 100
THUMB = 160  # the longest side of a tile's image, in pixels
ANNOTATE_MAX = 40  # cells of a confusion matrix with more classes than this carry no counts


# ---------------------------------------------------------------------------------------- plots


def _figure(w: float, h: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: Path) -> None:
    """``fig`` as a PNG at ``path``, written to a temporary file beside it and renamed into place."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            fig.savefig(f, format="png", dpi=DPI)
        from zoo.fileio import current_umask

        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def plot_confusion(path: str | Path, cm: Any, classes: list[str], title: str = "") -> None:
    """The confusion matrix ``cm`` (rows: true class, columns: predicted, as scikit-learn's
    ``confusion_matrix``) as a PNG: class names on both axes, the count in each cell (up to
    ANNOTATE_MAX classes). Names are drawn as plain text (no mathtext: ``$`` is safe)."""
    cm = np.asarray(cm)
    n = len(classes)
    size = max(4.0, 0.45 * n + 2)
    fig = _figure(size, size)
    ax = fig.add_subplot()
    im = ax.imshow(cm, interpolation="nearest", cmap="Blues", vmin=0)
    font = 10 if n <= 12 else max(4, int(10 - (n - 12) / 4))
    ax.set_xticks(range(n), [str(c) for c in classes], rotation=90, fontsize=font, parse_math=False)
    ax.set_yticks(range(n), [str(c) for c in classes], fontsize=font, parse_math=False)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= ANNOTATE_MAX:
        top = cm.max() if cm.size else 0
        for i in range(cm.shape[0]):
            for j in range(cm.shape[1]):
                dark = top > 0 and cm[i, j] > top / 2
                ax.text(
                    j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=font,
                    color="white" if dark else "black",
                )  # fmt: skip
    if title:
        ax.set_title(title, parse_math=False)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    _save(fig, Path(path))


def _plot_curves(path: Path, history: list[dict], title: str) -> None:
    def col(key: str) -> np.ndarray:
        return np.array([np.nan if r.get(key) is None else float(r[key]) for r in history])

    epochs = np.array([int(r["epoch"]) for r in history])
    fig = _figure(11, 4.2)
    s1 = [int(r["epoch"]) for r in history if r.get("stage") == 1]
    s2 = [int(r["epoch"]) for r in history if r.get("stage") == 2]
    marker = "o" if len(history) <= 30 else None
    for k, (what, label) in enumerate((("loss", "loss"), ("acc", "accuracy"))):
        ax = fig.add_subplot(1, 2, k + 1)
        for split, style in (("train", "-"), ("val", "--")):
            y = col(f"{split}_{what}")
            if not np.isnan(y).all():
                ax.plot(epochs, y, style, marker=marker, markersize=3, label=split)
        if s1 and s2:
            ax.axvline((max(s1) + min(s2)) / 2, color="grey", linestyle=":", label="stage 1 | stage 2")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, parse_math=False)
    fig.tight_layout()
    _save(fig, path)


def _short(s: str, n: int = 16) -> str:
    return s if len(s) <= n else s[: n - 1] + "\u2026"


def _plot_grid(path: Path, items: list[dict]) -> None:
    from PIL import Image

    if not items:
        fig = _figure(TILE_W, TILE_H)
        fig.text(0.5, 0.5, "none", ha="center", va="center", fontsize=16, color="grey")
        _save(fig, path)
        return
    cols = min(GRID_COLUMNS, len(items))
    rows = math.ceil(len(items) / cols)
    fig = _figure(cols * TILE_W, rows * TILE_H)
    for k, it in enumerate(items):
        ax = fig.add_subplot(rows, cols, k + 1)
        ax.set_axis_off()
        try:
            with Image.open(it["path"]) as im:
                im = im.convert("RGB")
                im.thumbnail((THUMB, THUMB))
                ax.imshow(np.asarray(im))
        except (OSError, ValueError) as e:  # gone or unreadable since: the tile says so
            ax.text(0.5, 0.5, f"unreadable\n{type(e).__name__}", ha="center", va="center", fontsize=8)
        ok = it["true"] == it["pred"]
        ax.set_title(
            f"{_short(it['true'])} / {_short(it['pred'])} p={it['p']:.2f}",
            fontsize=7, color="darkgreen" if ok else "darkred", parse_math=False,
        )  # fmt: skip
    fig.tight_layout(pad=0.4)
    _save(fig, path)


# ---------------------------------------------------------------------------------------- page

_PAGE = Template("""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>$title</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #222; }
table { border-collapse: collapse; }
th, td { padding: 0.2em 0.8em; border-bottom: 1px solid #ddd; text-align: right; }
th:first-child, td:first-child { text-align: left; }
img { max-width: 100%; border: 1px solid #eee; }
pre { background: #f6f6f6; padding: 1em; overflow-x: auto; }
.best { color: #1a7f37; } .worst { color: #b42318; }
</style>
</head>
<body>
<h1>$title</h1>
<p><b>accuracy $accuracy</b> on $n images ($correct right, $wrong wrong).</p>
<p>Classes ranked by F1 (recall breaks ties; classes without images in this split are not ranked).<br>
<span class="best">best: $best</span><br>
<span class="worst">worst: $worst</span></p>
<h2>Per class</h2>
<table>
<tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>
$rows
</table>
<h2>Confusion matrix</h2>
<p>Rows: true class; columns: predicted.</p>
<p><img src="$confusion" alt="confusion matrix"></p>
$curves
$grids
$config
</body>
</html>
""")


def _page(s: dict, title: str, config: dict | None) -> str:
    e = html.escape
    rows = "\n".join(
        f"<tr><td>{e(name)}</td><td>{m['precision']:.4f}</td><td>{m['recall']:.4f}</td>"
        f"<td>{m['f1']:.4f}</td><td>{m['support']}</td></tr>"
        for name, m in s["per_class"].items()
    )
    curves = ""
    if CURVES_PNG in s["files"]:
        curves = (
            "<h2>Training curves</h2>\n<p>Loss and accuracy per epoch, train and validation; the dotted "
            f'line is where stage 2 starts.</p>\n<p><img src="{CURVES_PNG}" alt="training curves"></p>'
        )
    captions = {
        "most_confident_right": "Most confident right: correct predictions, highest predicted probability.",
        "most_confident_wrong": "Most confident wrong: wrong predictions, highest predicted probability.",
        "most_uncertain": "Most uncertain: all predictions, lowest predicted probability.",
    }
    grids = []
    for g in GRIDS:
        items = s["grids"][g]
        listing = "".join(
            f"<li>{e(it['true'])} / {e(it['pred'])} p={it['p']:.3f}: <code>{e(it['path'])}</code></li>"
            for it in items
        )
        grids.append(
            f"<h2>{e(g.replace('_', ' '))} ({len(items)})</h2>\n<p>{e(captions[g])}</p>\n"
            f'<p><img src="{g}.png" alt="{e(g)}"></p>\n'
            + (f"<details><summary>files</summary><ul>{listing}</ul></details>" if items else "<p>none</p>")
        )
    conf = ""
    if config is not None:
        text = json.dumps(config, indent=2, ensure_ascii=False, default=str, sort_keys=True)
        conf = f"<h2>Configuration</h2>\n<pre>{e(text)}</pre>"

    def names(key: str) -> str:
        return ", ".join(e(c) for c in s[key]) or "-"

    return _PAGE.substitute(
        title=e(title or "report"),
        accuracy=f"{s['accuracy']:.4f}",
        n=s["n"],
        correct=s["n_correct"],
        wrong=s["n"] - s["n_correct"],
        best=names("best_classes"),
        worst=names("worst_classes"),
        rows=rows,
        confusion=CONFUSION_PNG,
        curves=curves,
        grids="\n".join(grids),
        config=conf,
    )


# ---------------------------------------------------------------------------------------- report


def rank_classes(per_class: dict[str, dict], k: int | None = None) -> tuple[list[str], list[str]]:
    """The best and the worst classes of ``per_class`` (name -> precision/recall/f1/support): the
    classes with support > 0 ordered by F1, recall breaking ties (then the classes' order); best is
    the top ``k``, worst the bottom ``k`` read from the bottom (worst first). ``k`` defaults to
    min(5, half the ranked classes, at least 1), so the two lists never share a class unless only
    one class is ranked."""
    names = list(per_class)
    ranked = sorted(
        (c for c in names if per_class[c]["support"] > 0),
        key=lambda c: (-per_class[c]["f1"], -per_class[c]["recall"], names.index(c)),
    )
    if not ranked:
        return [], []
    if k is None:
        k = min(5, max(1, len(ranked) // 2))
    return ranked[:k], ranked[::-1][:k]


def write_report(
    out: Path,
    *,
    classes: list[str],
    y_true: np.ndarray,
    probs: np.ndarray,
    paths: list[str],
    history: list[dict] | None = None,
    title: str = "",
    config: dict | None = None,
    grid_size: int = 16,
) -> dict:
    """Write the report of one evaluated split into ``out`` (created if needed); return its summary.

    ``y_true`` (N,) holds class indices into ``classes`` (C names), ``probs`` (N, C) the softmax
    probabilities, ``paths`` the N image files. The prediction is ``probs.argmax(1)`` (the first
    class on a tie) and its probability ``p`` the row's maximum.

    Files (always, except ``curves.png``):

    - ``classification_report.txt``: one accuracy line, then scikit-learn's classification_report
      (all C classes, zero_division=0).
    - ``confusion_matrix.png``: scikit-learn's confusion_matrix, names on the axes, counts in cells.
    - ``curves.png``: only when ``history`` has rows (``{"stage", "epoch", "train_loss",
      "train_acc", "val_loss", "val_acc", "lr"}`` per epoch, val_* may be None): loss and accuracy
      per epoch, train and validation, a dotted line between the last stage-1 and the first
      stage-2 epoch. Without history no curves.png is written, and an older one in ``out`` is left
      alone (the page and ``files`` do not name it).
    - ``most_confident_right.png``: the correct predictions, highest ``p`` first;
      ``most_confident_wrong.png``: the wrong ones, highest ``p`` first; ``most_uncertain.png``:
      all predictions, LOWEST ``p`` first (the predicted class's probability, not the top-2
      margin: the number shown on each tile is the one the grid is sorted by). Ties keep the order
      of ``paths``. Up to ``grid_size`` tiles each (GRID_COLUMNS a row), titled
      ``"true / pred p=0.93"``; an unreadable image becomes a tile saying so. A grid with nothing
      in it (nothing wrong, or grid_size=0) is still written, as one tile saying "none", so the
      file list is fixed.
    - ``report.html``: one page (escaped text, relative links to the PNGs beside it): title,
      accuracy, the per-class table, best and worst classes (see :func:`rank_classes`), the
      confusion matrix, the curves, the grids (with their files), ``config`` as JSON when given.

    The summary (JSON-serializable): ``accuracy``, ``n``, ``n_correct``, ``classes``,
    ``per_class`` (name -> precision, recall, f1, support), ``best_classes``, ``worst_classes``,
    ``confusion_matrix`` (C x C lists), ``grids`` (grid -> [{"path", "true", "pred", "p"}...] in
    tile order) and ``files`` (the names written, in writing order).

    Raises ValueError on inconsistent shapes and ZooError on an empty split; MissingExtra when
    matplotlib / scikit-learn (the report extra) are not installed.
    """
    from zoo.errors import require

    require("report", what="the fine-tuning report")
    from sklearn.metrics import accuracy_score, classification_report, confusion_matrix

    from zoo.fileio import atomic_write_text

    classes = [str(c) for c in classes]
    y_true = np.asarray(y_true)
    probs = np.asarray(probs, dtype=np.float64)
    n_cls = len(classes)
    if len(set(classes)) != n_cls:
        raise ValueError("write_report: the class names are not unique")
    if probs.ndim != 2 or probs.shape[1] != n_cls:
        raise ValueError(f"write_report: probs has shape {probs.shape}, expected (N, {n_cls})")
    if y_true.ndim != 1 or len(y_true) != len(probs) or len(paths) != len(probs):
        raise ValueError(
            f"write_report: {len(y_true)} labels, {len(probs)} probability rows, {len(paths)} paths"
        )
    if grid_size < 0:
        raise ValueError("write_report: grid_size must be >= 0")
    if not len(y_true):
        raise ZooError("nothing to report: the evaluated split has no images")
    if not np.issubdtype(y_true.dtype, np.integer) or y_true.min() < 0 or y_true.max() >= n_cls:
        raise ValueError(f"write_report: y_true must be class indices in 0..{n_cls - 1}")

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    labels = list(range(n_cls))
    pred = probs.argmax(axis=1)
    p = probs.max(axis=1)
    n = len(y_true)
    acc = float(accuracy_score(y_true, pred))
    n_correct = int((y_true == pred).sum())
    files: list[str] = []

    text = classification_report(y_true, pred, labels=labels, target_names=classes, digits=4, zero_division=0)
    atomic_write_text(out / REPORT_TXT, f"accuracy: {acc:.4f} ({n_correct} of {n} right)\n\n{text}")
    files.append(REPORT_TXT)
    rep = classification_report(
        y_true, pred, labels=labels, target_names=classes, output_dict=True, zero_division=0
    )
    per_class = {
        c: {
            "precision": float(rep[c]["precision"]),
            "recall": float(rep[c]["recall"]),
            "f1": float(rep[c]["f1-score"]),
            "support": int(rep[c]["support"]),
        }
        for c in classes
    }
    best, worst = rank_classes(per_class)

    cm = confusion_matrix(y_true, pred, labels=labels)
    plot_confusion(
        out / CONFUSION_PNG, cm, classes, f"{title}: {acc:.3f}" if title else f"accuracy {acc:.3f}"
    )
    files.append(CONFUSION_PNG)

    if history:
        _plot_curves(out / CURVES_PNG, list(history), title)
        files.append(CURVES_PNG)

    idx = np.arange(n)
    right, wrong = idx[pred == y_true], idx[pred != y_true]
    picks = {
        "most_confident_right": right[np.argsort(-p[right], kind="stable")],
        "most_confident_wrong": wrong[np.argsort(-p[wrong], kind="stable")],
        "most_uncertain": idx[np.argsort(p, kind="stable")],
    }
    grids: dict[str, list[dict]] = {}
    for g in GRIDS:
        grids[g] = [
            {"path": str(paths[i]), "true": classes[y_true[i]], "pred": classes[pred[i]], "p": float(p[i])}
            for i in picks[g][:grid_size]
        ]
        _plot_grid(out / f"{g}.png", grids[g])
        files.append(f"{g}.png")

    s: dict[str, Any] = {
        "accuracy": acc,
        "n": n,
        "n_correct": n_correct,
        "classes": classes,
        "per_class": per_class,
        "best_classes": best,
        "worst_classes": worst,
        "confusion_matrix": cm.tolist(),
        "grids": grids,
        "files": [*files, REPORT_HTML],
    }
    atomic_write_text(out / REPORT_HTML, _page(s, title, config))
    return s


# ---------------------------------------------------------------------------------------- summary

_EXTRA_KEYS = ("best_epoch", "stage1", "stage2", "bn_policy", "cache", "device")


def _brief(v: Any) -> str:
    if isinstance(v, dict):
        return ", ".join(f"{k}={_brief(x)}" for k, x in v.items())
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_brief(x) for x in v) + "]"
    return str(v)


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def summary(run_dir: Path) -> str:
    """``zoo report RUN_DIR``: a short summary of a run from its metrics.json (``final`` = the
    :func:`write_report` summary, ``epochs`` = the history, and whichever of stage1, stage2,
    best_epoch, cache, bn_policy, device it holds) and its optional config.json (model, cut,
    classes). ZooError when metrics.json is missing, unreadable or has no ``final``."""
    run_dir = Path(run_dir)
    metrics = load_metrics(run_dir)
    final = metrics["final"]
    lines = [f"run: {run_dir}"]
    cfg: dict = {}
    if (run_dir / "config.json").is_file():
        try:
            cfg = _read_json(run_dir / "config.json")
        except (OSError, ValueError):
            lines.append("config.json: unreadable")
        if not isinstance(cfg, dict):
            cfg = {}
    model = cfg.get("model") or cfg.get("model_id")
    if model or cfg.get("cut") or cfg.get("classes") is not None:
        parts = [str(model)] if model else []
        if cfg.get("cut"):
            parts.append(f"cut {cfg['cut']}")
        ncls = cfg.get("classes")
        if ncls is not None:
            parts.append(f"{len(ncls) if isinstance(ncls, (list, tuple, dict)) else ncls} classes")
        lines.append("model: " + ", ".join(parts))
    lines.append(
        f"accuracy: {float(final.get('accuracy', float('nan'))):.4f} on {final.get('n', '?')} images"
    )
    epochs = metrics.get("epochs")
    if isinstance(epochs, list) and epochs:
        lines.append(f"epochs: {len(epochs)}")
    for key in _EXTRA_KEYS:
        if key in metrics:
            lines.append(f"{key.replace('_', ' ')}: {_brief(metrics[key])}")
    per = final.get("per_class") or {}

    def named(key: str) -> str:
        out = []
        for c in final.get(key) or []:
            f1 = (per.get(c) or {}).get("f1")
            out.append(f"{c} (F1 {f1:.3f})" if isinstance(f1, (int, float)) else str(c))
        return ", ".join(out) or "-"

    lines.append(f"best classes: {named('best_classes')}")
    lines.append(f"worst classes: {named('worst_classes')}")
    present = [f for f in final.get("files") or [] if (run_dir / f).is_file()]
    lines.append("files: " + (", ".join(present) or "none"))
    if (run_dir / REPORT_HTML).is_file():
        lines.append(f"report: {(run_dir / REPORT_HTML).resolve()}")
    return "\n".join(lines)


def load_metrics(run_dir: Path) -> dict:
    """``run_dir``'s metrics.json, checked to hold a ``final`` summary; ZooError (one line) when it
    is missing, unreadable or has none."""
    run_dir = Path(run_dir)
    path = run_dir / "metrics.json"
    if not path.is_file():
        raise ZooError(f"{run_dir}: not a fine-tuning run (no metrics.json)")
    try:
        metrics = _read_json(path)
    except (OSError, ValueError) as e:
        raise ZooError(f"{path}: unreadable ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    if not isinstance(metrics, dict) or not isinstance(metrics.get("final"), dict):
        raise ZooError(f"{path}: no final report in it (not written by zoo finetune / evaluate?)")
    return metrics
