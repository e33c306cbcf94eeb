"""The layer-map vocabulary: every step forward and back, and what is refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from converters.layermap import STEPS, LayerMap, LayerMapError, LayerMapRow, Step

RNG = np.random.default_rng(0)

CASES = [  # (step, source shape, what forward must equal)
    ("reshape(2,-1)", (2, 3, 4), lambda a: a.reshape(2, 12)),
    ("transpose", (3, 5), lambda a: a.T),
    ("permute(3,2,0,1)", (3, 3, 4, 8), lambda a: a.transpose(3, 2, 0, 1)),
    ("scale(0.5)", (6,), lambda a: a * np.float32(0.5)),
    ("moving_average(999.98)", (6,), lambda a: a * np.float32(1 / 999.98)),
    ("moving_average(0.0)", (6,), lambda a: a * 0),
    (
        "nhwc_to_nchw(2,3,4)",
        (5, 24),
        lambda a: a.reshape(5, 2, 3, 4).transpose(0, 3, 1, 2).reshape(5, 24),
    ),
]


def test_every_step_has_a_case() -> None:
    assert {Step.parse(c[0]).name for c in CASES} | {"fold"} == set(STEPS)


@pytest.mark.parametrize(("text", "shape", "want"), CASES, ids=[c[0] for c in CASES])
def test_step_forward_and_inverse(text: str, shape: tuple[int, ...], want) -> None:
    a = RNG.standard_normal(shape).astype(np.float32)
    row = LayerMapRow("layer", 0, "m.weight", (text,), shape)
    got = row.to_target(a)
    np.testing.assert_array_equal(got, want(a))
    assert list(got.shape) == row.shapes()[-1]
    back = row.to_source(got)
    if text.startswith(("scale", "moving_average")):
        if "(0.0)" not in text:
            np.testing.assert_allclose(back, a, rtol=1e-6)
    else:
        np.testing.assert_array_equal(back, a)  # exact for every reordering step
    assert str(Step.parse(text)) == text


def test_fold_rebuilds_the_folded_tensor() -> None:
    row = LayerMapRow("bn", 2, None, ("fold(999.5)",), (1,))
    np.testing.assert_array_equal(row.to_source(None), np.array([999.5], np.float32))
    scalar = LayerMapRow("norm", 2, None, ("fold(7.0)",), ())
    assert scalar.to_source(None).shape == ()
    with pytest.raises(LayerMapError, match="only step"):
        LayerMapRow("bn", 2, "bn.x", ("fold(1.0)",), (1,))


@pytest.mark.parametrize(
    "bad", ["flip(0)", "reshape(kh,kw,C*M,1)", "permute(0,0)", "transpose(1)", "scale()", "reshape(2.5)"]
)
def test_bad_steps_refused(bad: str) -> None:
    with pytest.raises(LayerMapError):
        LayerMapRow("l", 0, "m.w", (bad,), (2, 2)).to_target(np.zeros((2, 2), np.float32))


def test_rows_check_shapes() -> None:
    with pytest.raises(LayerMapError, match="give"):
        LayerMapRow("l", 0, "m.w", ("transpose",), (2, 3), (2, 3))
    row = LayerMapRow("l", 0, "m.w", ("transpose",), (2, 3), (3, 2))
    with pytest.raises(LayerMapError, match="source tensor has shape"):
        row.to_target(np.zeros((3, 2), np.float32))


def test_files_with_unknown_steps_or_versions_are_refused(tmp_path: Path) -> None:
    lm = LayerMap([LayerMapRow("l", 0, "m.w", ("transpose",), (2, 3), (3, 2))], "caffe")
    p = tmp_path / "layermap.json"
    doc = lm.to_dict()
    p.write_text(json.dumps(doc))
    assert LayerMap.load(p).to_dict() == doc
    doc["rows"][0]["steps"] = ["flip(0)"]
    p.write_text(json.dumps(doc))
    with pytest.raises(LayerMapError, match="unknown layer-map step 'flip\\(0\\)'"):
        LayerMap.load(p)
    doc = {**lm.to_dict(), "version": 1}
    p.write_text(json.dumps(doc))
    with pytest.raises(LayerMapError, match="convert again"):
        LayerMap.load(p)
