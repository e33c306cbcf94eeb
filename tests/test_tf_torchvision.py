"""slim inception_v3 -> torchvision: measured, then refused (issue 12).

One TensorFlow subprocess (tests/tf_slim_fixtures.py) builds tf_slim's inception_v3 with a
1001-class head, every variable re-randomized; zoo converts it (equal to TensorFlow's logits), then
loads the same weights into torchvision's Inception3 and measures the difference the pooling
makes (converters/tf/to_torchvision.py). No expected number is hard-coded: the test asserts that
torchvision differs beyond the tolerance as it is and agrees within it once its branch pools
exclude the padding, and that the refusal reports those measurements.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest
import requires

sys.path.insert(0, str(Path(__file__).parent))
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def inception(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    requires.tensorflow("tf_slim")
    from tf_slim_fixtures import make_slim_checkpoint

    from zoo.convert import convert

    d = tmp_path_factory.mktemp("inc")
    prefix = make_slim_checkpoint(d / "ckpt", "inception_v3", {"num_classes": 1001}, size=299)
    out = convert(prefix, d / "out", arch="slim:inception_v3?num_classes=1001&input_size=299")
    return {"out": Path(out), "x": np.load(d / "ckpt" / "x.npy"), "ref": np.load(d / "ckpt" / "ref.npy")}


def test_torchvision_inception3_differs_only_by_its_pooling(inception: dict[str, object]) -> None:
    import torch

    import zoo
    from converters.tf.to_torchvision import inception_v3_differences, slim_to_torchvision
    from zoo.errors import ConversionError

    out, ref = inception["out"], inception["ref"]
    m = zoo.load(out)
    with torch.no_grad():
        y = m(torch.from_numpy(np.ascontiguousarray(inception["x"].transpose(0, 3, 1, 2)))).numpy()
    assert np.abs(y - ref).max() <= 1e-5 * max(1.0, float(np.abs(ref).max()))  # the folder is slim's net
    d = inception_v3_differences(out)
    tol = 1e-5 * d["scale"]
    assert d["max_abs_diff"] > 100 * tol  # torchvision's Inception3 as it is: another function
    assert d["max_abs_diff_padding_excluded"] <= tol  # the padding in its pool branches is the cause
    with pytest.raises(ConversionError, match="count_include_pad=True") as e:
        slim_to_torchvision(out, "inception_v3")
    nums = [float(s) for s in re.findall(r"differs from slim by max ([0-9.e+-]+)", str(e.value))]
    assert nums and abs(nums[0] - d["max_abs_diff"]) <= 1e-3 * d["max_abs_diff"]
