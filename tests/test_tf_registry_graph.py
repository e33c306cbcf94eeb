"""The frozen-graph registry entry ``tensorflow/inception_v3_2015_12_05`` end to end (issue 12):
pulled through a loopback mirror, converted by ``zoo convert <id>`` with the card's tensors.

TensorFlow (tests/tf_graphdef_fixtures.py, a subprocess) writes ``old.pb``: a GraphDef of producer
version 8 shaped like the 2015 Inception graph (DecodeJpeg preprocessing up to ``Mul``, ``pool_3``,
``pool_3/_reshape``, ``softmax``) with random weights, and its outputs fed at ``Mul:0``. It is
packed as ``inception-2015-12-05.tgz`` (member ``classify_image_graph_def.pb``) and served by a
real HTTP server on 127.0.0.1 in the mirror layout; the registry is a one-model ``ZOO_REGISTRY``
holding the bundled card with the fixture's input size and class count.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requires

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
pytestmark = pytest.mark.slow

URL_PATH = "/download.tensorflow.org/models/image/imagenet/inception-2015-12-05.tgz"


@pytest.fixture(scope="module")
def graph_world(tmp_path_factory: pytest.TempPathFactory) -> Any:
    requires.tensorflow()
    from servers import TestServer, offline_env, registry_card
    from tf_graphdef_fixtures import make_graphdef_fixtures

    d = tmp_path_factory.mktemp("tfgraph")
    fx = make_graphdef_fixtures(d / "fx")
    x, ref = np.load(fx / "old_x.npy"), np.load(fx / "old_ref.npy")
    card = registry_card("tensorflow/inception_v3_2015_12_05")
    card["preprocess"]["input_size"] = list(x.shape[1:])  # the fixture's 20x20 stand-in
    card["num_classes"] = int(ref.shape[1])
    card["labels"] = {"count": int(ref.shape[1])}
    archive = d / "inception-2015-12-05.tgz"
    with tarfile.open(archive, "w:gz") as t:
        t.add(fx / "old.pb", arcname="classify_image_graph_def.pb")
    with TestServer() as server:
        server.files[URL_PATH] = archive.read_bytes()
        env = {**os.environ, **offline_env(d / "home"), "ZOO_MIRROR": server.url}
        env["HTTP_PROXY"] = env["HTTPS_PROXY"]  # nothing leaves the machine; the mirror is loopback
        for k in ("ZOO_OFFLINE", "HF_HUB_OFFLINE"):
            env.pop(k, None)
        env["ZOO_REGISTRY"] = str(d / "registry.json")
        (d / "registry.json").write_text(json.dumps({"schema_version": 1, "models": [card]}))
        yield {"d": d, "env": env, "server": server, "x": x, "ref": ref, "card": card}


def test_convert_the_registry_graph_with_its_tensors(graph_world: dict[str, Any]) -> None:
    import torch

    import zoo

    w = graph_world
    out = w["d"] / "out"
    r = subprocess.run(
        [sys.executable, "-m", "zoo.cli", "convert", "tensorflow/inception_v3_2015_12_05", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=w["env"],
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    assert w["server"].served(URL_PATH) == len(w["server"].files[URL_PATH])
    graph = json.loads((out / "graph.json").read_text())
    assert [i["name"] for i in graph["inputs"]] == ["Mul"] and graph["outputs"] == ["softmax"]
    card = json.loads((out / "card.json").read_text())
    assert card["provenance"]["registry_id"] == "tensorflow/inception_v3_2015_12_05"
    assert card["default_cut"] == "pool_3/_reshape"  # the card's tensor pool_3/_reshape:0
    assert card["preprocess"]["layout"] == "NCHW" and card["preprocess"]["mean"] == [128.0] * 3
    m = zoo.load(out)
    xs = np.ascontiguousarray(w["x"].transpose(0, 3, 1, 2))
    with torch.no_grad():  # Mul:0 has a batch of 1 in the graph, as in the 2015 one
        y = np.concatenate([m(torch.from_numpy(xs[i : i + 1])).numpy() for i in range(len(xs))])
        feats = m.cut(m.default_cut)(torch.from_numpy(xs[:1]))
    ref = w["ref"]
    assert np.abs(y - ref).max() <= 1e-5 * max(1.0, float(np.abs(ref).max()))
    assert feats.shape == (1, 10)
