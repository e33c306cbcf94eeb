"""The linear-probe baseline (``zoo probe`` / ``zoo.probe``): the frozen base's cached features
(zoo.features) + scikit-learn's logistic regression, its C chosen by stratified cross-validation
on the training split; scored on the held-out split (``val``, else ``test``).

Written into ``out``: ``metrics.json`` (accuracy, the chosen C, the CV folds, the classification
report as a dict, the confusion matrix, the features' key), ``report.txt`` (the printed text) and
``confusion.png`` (zoo.report.plot_confusion, the one confusion-matrix plot).
"""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from zoo.errors import ZooError

C_GRID = tuple(float(c) for c in np.logspace(-4, 4, 9))


@dataclass
class ProbeResult:
    """What :func:`probe` returns."""

    accuracy: float
    report: str  # scikit-learn's classification_report
    confusion: list[list[int]]
    classes: list[str]
    C: float
    folds: int
    split: str  # the held-out split scored
    n_train: int
    n_test: int
    key: str
    reused: bool
    out: Path | None
    metrics: dict[str, Any] = field(default_factory=dict, repr=False)

    def text(self) -> str:
        return (
            f"held-out accuracy: {self.accuracy:.4f} ({self.split} split, {self.n_test} images; "
            f"trained on {self.n_train}, C={self.C:g} by {self.folds}-fold CV)\n\n{self.report}"
        )


def probe(
    model: Any,
    data: Any,
    *,
    cut: str | None = None,
    val_fraction: float | None = 0.3,
    seed: int = 0,
    out: str | Path | None = None,
    home: Any = None,
    max_iter: int = 5000,
    **features_kw: Any,
) -> ProbeResult:
    """Logistic regression on the cached features of ``model`` at ``cut`` (see
    :func:`zoo.features.features`; same ``data``, ``val_fraction``, ``seed``): C from
    ``C_GRID`` by stratified k-fold CV on the training split (k = min(5, the smallest class's
    count)), features standardized; accuracy and classification report on the held-out split,
    written with the confusion matrix into ``out`` when given."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, classification_report, confusion_matrix
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from zoo.features import features

    f = features(model, data, cut=cut, val_fraction=val_fraction, seed=seed, home=home, **features_kw)
    held = next((s for s in ("val", "test") if s in f.X), None)
    if held is None:
        raise ZooError(f"{data}: no held-out images to score: give --val-fraction or a val/ folder")
    x_tr, y_tr = np.asarray(f.X["train"]), np.asarray(f.y["train"])
    x_te, y_te = np.asarray(f.X[held]), np.asarray(f.y[held])
    present = np.unique(y_tr)
    if len(present) < 2:
        raise ZooError(f"{data}: the training split has one class only: a probe needs at least two")
    smallest = int(np.bincount(y_tr)[present].min())
    if smallest < 2:
        raise ZooError(f"{data}: a class has one training image: cross-validation needs at least 2 per class")
    folds = min(5, smallest)
    search = GridSearchCV(
        make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter)),
        {"logisticregression__C": list(C_GRID)},
        cv=StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed),
        scoring="accuracy",
        n_jobs=1,
    )
    search.fit(x_tr, y_tr)
    pred = search.predict(x_te)
    labels = list(range(len(f.classes)))
    acc = float(accuracy_score(y_te, pred))
    report = classification_report(
        y_te, pred, labels=labels, target_names=f.classes, digits=4, zero_division=0
    )
    report_d = classification_report(
        y_te, pred, labels=labels, target_names=f.classes, output_dict=True, zero_division=0
    )
    cm = confusion_matrix(y_te, pred, labels=labels)
    best_c = float(search.best_params_["logisticregression__C"])
    res = ProbeResult(
        accuracy=acc,
        report=report,
        confusion=cm.tolist(),
        classes=list(f.classes),
        C=best_c,
        folds=folds,
        split=held,
        n_train=len(y_tr),
        n_test=len(y_te),
        key=f.key,
        reused=f.reused,
        out=Path(out) if out is not None else None,
    )
    res.metrics = {
        "model": str(model),
        "cut": f.cut,
        "features_key": f.key,
        "features_path": str(f.path),
        "split": held,
        "accuracy": acc,
        "C": best_c,
        "C_grid": list(C_GRID),
        "cv_folds": folds,
        "cv_accuracy": float(search.best_score_),
        "n_train": len(y_tr),
        "n_test": len(y_te),
        "classes": list(f.classes),
        "classification_report": report_d,
        "confusion_matrix": cm.tolist(),
        "seed": seed,
    }
    if out is not None:
        from zoo.fileio import atomic_write_json, atomic_write_text

        d = Path(out)
        d.mkdir(parents=True, exist_ok=True)
        atomic_write_json(d / "metrics.json", res.metrics)
        atomic_write_text(d / "report.txt", res.text())
        from zoo.report import plot_confusion

        plot_confusion(d / "confusion.png", cm, list(f.classes), f"{model} @ {f.cut}: {acc:.3f}")
    return res


class _CallableModule(types.ModuleType):
    """``zoo.probe(...)`` calls :func:`probe`: importing this module binds ``zoo.probe`` to it."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return probe(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
