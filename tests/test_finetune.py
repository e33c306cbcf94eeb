"""The fine-tuning runner (zoo/finetune/, `zoo finetune`) on real files: the Caffe LeNet from
../shared/testdata (served by a loopback mirror) and the real Keras mini-Xception (BatchNorm):
transfer with few labels, frozen means frozen, the feature cache, exact resume after SIGKILL,
torchrun DDP, bf16 autocast on the CPU, the reports and bad input."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_features import LENET, lenet_world, small_digits, write_digits, zoo_cli
from test_probe import _generated_images, _randomized

ROOT = Path(__file__).resolve().parents[1]
XCEPTION = "testdata/fer2013_mini_xception"
pytestmark = pytest.mark.slow  # real models trained for a few epochs: about 3 minutes in all


@pytest.fixture(scope="module")
def world(testdata: Path, tmp_path_factory: pytest.TempPathFactory):
    with lenet_world(testdata, tmp_path_factory.mktemp("finetune"), ids=(LENET, XCEPTION)) as w:
        yield w


@pytest.fixture(scope="module")
def few_labels(world) -> Path:
    """scikit-learn's digits: a seeded stratified 30% held out as val/ (540 images), ten images per
    class drawn (seeded) from the rest as train/ (100 images) (the probe test's data)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    y = load_digits().target
    rest, held = train_test_split(np.arange(len(y)), test_size=0.3, stratify=y, random_state=0)
    rng = np.random.default_rng(0)
    train = [int(i) for c in range(10) for i in rng.choice(rest[y[rest] == c], 10, replace=False)]
    return write_digits(world["tmp"] / "few_labels", {"train": train, "val": [int(i) for i in held]})


def _state(path: Path) -> dict[str, Any]:
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


def _weights(run: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(run / "model.safetensors"))


LENET_RUN = ["--cut", "ip1", "--lr", "0.01", "--workers", "0", "--batch-size", "16"]


def test_real_lenet_transfer_beats_random_frozen_weights(world, few_labels: Path, tmp_path: Path) -> None:
    run = tmp_path / "real"
    args = [
        "--data",
        str(few_labels),
        *LENET_RUN,
        "--epochs",
        "5",
        "--stage2-epochs",
        "2",
        "--cache-features",
    ]
    r = zoo_cli(world["env"], "finetune", LENET, "--out", str(run), *args)
    assert r.returncode == 0, r.stderr
    assert "stage 1 from cached features (built:" in r.stdout, r.stdout
    metrics = json.loads((run / "metrics.json").read_text())
    real = metrics["final"]["accuracy"]
    assert real >= 0.90, real  # measured: 0.9296
    assert f"held-out accuracy {real:.4f}" in r.stdout
    assert [h["stage"] for h in metrics["epochs"]] == [1] * 5 + [2] * 2
    assert metrics["cache"]["used"] and metrics["cache"]["built"]
    assert metrics["final"]["n"] == 540 and np.array(metrics["final"]["confusion_matrix"]).sum() == 540

    # the reports: every file there and non-trivial
    for name in (
        "config.json",
        "classification_report.txt",
        "confusion_matrix.png",
        "curves.png",
        "most_confident_right.png",
        "most_confident_wrong.png",
        "most_uncertain.png",
        "report.html",
    ):
        assert (run / name).stat().st_size > 200, name
    html = (run / "report.html").read_text()
    assert "confusion_matrix.png" in html and "curves.png" in html
    config = json.loads((run / "config.json").read_text())
    assert (
        config["model_id"] == LENET
        and config["cut"] == "ip1"
        and config["classes"] == [str(i) for i in range(10)]
    )
    assert len(config["data"]["splits"]["train"]) == 100 and config["card"]["id"] == LENET
    grid = metrics["final"]["grids"]["most_confident_wrong"]
    y_wrong = [g for g in grid if g["true"] != g["pred"]]
    assert y_wrong == grid and len(grid) == min(16, 540 - round(real * 540))
    r = zoo_cli(world["env"], "report", str(run))
    assert r.returncode == 0 and f"{real:.4f}" in r.stdout, r.stderr

    # the same run on random frozen weights (every tensor's entries permuted)
    from zoo.models import converted_folder

    rand = _randomized(converted_folder(LENET), tmp_path / "lenet_random", seed=0)
    import zoo

    opts = dict(cut="ip1", lr=0.01, workers=0, batch_size=16, epochs=5, stage2_epochs=2, cache_features=True)
    rnd = zoo.finetune(rand, few_labels, tmp_path / "random", **opts).accuracy  # the same options
    assert rnd <= real - 0.08, (real, rnd)


def test_frozen_means_frozen_and_stage2_changes_only_the_unfrozen_blocks(world, tmp_path: Path) -> None:
    """mini-Xception (BatchNorm everywhere): stage 1 leaves every base parameter and running
    statistic bit-identical; with --train-bn only BatchNorm tensors of the base change; stage 2
    with --unfreeze 2 changes only the top two blocks of group_matcher."""
    import torch

    import zoo
    from zoo.finetune.model import base_groups

    data = _generated_images(tmp_path / "images", seed=5)
    full = zoo.load(XCEPTION)
    orig = {k: v.clone() for k, v in full.state_dict().items()}
    common = {"workers": 0, "batch_size": 6, "val_fraction": 0.3}

    def base_of(run: Path) -> dict[str, torch.Tensor]:
        w = _weights(run)
        return {k[len("base.") :]: v for k, v in w.items() if k.startswith("base.")}

    def changed(run: Path) -> set[str]:
        got = base_of(run)
        assert got, "no base tensors saved"
        # the cut's names: those of the full model (the cut shares its modules)
        return {k for k, v in got.items() if not torch.equal(v, orig[k])}

    res = zoo.finetune(XCEPTION, data, tmp_path / "s1", epochs=2, **common)
    assert "stay in eval mode" in res.metrics["bn_policy"]
    assert changed(tmp_path / "s1") == set()
    head = {k: v for k, v in _weights(tmp_path / "s1").items() if k.startswith("head.")}
    assert head and any(v.abs().sum() > 0 for v in head.values())

    res = zoo.finetune(XCEPTION, data, tmp_path / "bn", epochs=2, train_bn=True, **common)
    assert res.metrics["bn_policy"].startswith("--train-bn")
    diff = changed(tmp_path / "bn")
    bn_names = {
        f"{n}.{t}"
        for n, m in full.named_modules()
        if isinstance(m, torch.nn.BatchNorm2d)
        for t in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    }
    assert diff and diff <= bn_names, sorted(diff - bn_names)[:5]
    assert any(k.endswith("running_mean") for k in diff) and any(k.endswith(".weight") for k in diff)

    zoo.finetune(XCEPTION, data, tmp_path / "s2", epochs=1, stage2_epochs=1, unfreeze="2", **common)
    cut = json.loads((tmp_path / "s2" / "config.json").read_text())["cut"]
    groups = base_groups(full, full.cut(cut))
    top2 = {n for names in groups.names[-2:] for n in names}
    diff = {
        k
        for k in changed(tmp_path / "s2")
        if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
    }
    assert diff and diff <= top2, sorted(diff - top2)[:5]
    lower = {n for names in groups.names[:-2] for n in names}
    assert not diff & lower


def test_cached_features_give_the_head_of_training_through_the_frozen_base(world, few_labels: Path) -> None:
    import torch

    import zoo

    out = world["tmp"] / "cache_runs"
    common = dict(cut="ip1", lr=0.01, epochs=3, workers=0, batch_size=16, head="hidden=32,dropout=0.3")
    a = zoo.finetune(LENET, few_labels, out / "cached", cache_features=True, **common)
    b = zoo.finetune(LENET, few_labels, out / "through", **common)
    assert a.cache["used"] and not b.cache["used"]
    wa, wb = _weights(a.run_dir), _weights(b.run_dir)
    assert wa.keys() == wb.keys()
    for k in wa:
        if k.startswith("head."):
            assert not torch.equal(wa[k], torch.zeros_like(wa[k]))
            torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=1e-5)
    # the final report of a cached stage 1 reads the cached val features: the same predictions
    assert a.accuracy == pytest.approx(b.accuracy, abs=1 / 540 + 1e-9)
    assert a.metrics["final"]["n"] == b.metrics["final"]["n"] == 540
    for ha, hb in zip(a.history, b.history, strict=True):
        assert ha["val_acc"] == pytest.approx(hb["val_acc"], abs=1 / 540 + 1e-9)
        assert ha["train_loss"] == pytest.approx(hb["train_loss"], rel=1e-4)


def _run_until(
    cmd: list[str], env: dict[str, str], run: Path, stage: int, min_batch: int
) -> tuple[int, dict]:
    """Start ``cmd``; SIGKILL it as soon as checkpoints/last.json says it is in ``stage``, mid-epoch
    (batch >= ``min_batch``); (return code, the checkpoint it left)."""
    p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    meta = run / "checkpoints" / "last.json"
    deadline = time.time() + 240
    try:
        while time.time() < deadline and p.poll() is None:
            try:
                m = json.loads(meta.read_text())
            except (OSError, ValueError):
                m = {}
            if m.get("stage") == stage and m.get("batch", 0) >= min_batch and not m.get("done"):
                p.send_signal(signal.SIGKILL)
                break
            time.sleep(0.002)
    finally:
        rc = p.wait(timeout=60)
    return rc, json.loads(meta.read_text())


def test_resume_after_sigkill_mid_epoch_in_both_stages_ends_as_an_uninterrupted_run(
    world, few_labels: Path, tmp_path: Path
) -> None:
    import torch

    data = small_digits(tmp_path / "d", per_class=12, classes=3)  # 30 train: 8 batches an epoch
    args = [
        "--data",
        str(data),
        *LENET_RUN[:-2],
        "--batch-size",
        "4",
        "--epochs",
        "2",
        "--stage2-epochs",
        "2",
        "--checkpoint-every",
        "1",
        "--head",
        "hidden=16,dropout=0.5",
        "--augment",
        "--workers",
        "2",
    ]
    whole = tmp_path / "whole"
    r = zoo_cli(world["env"], "finetune", LENET, "--out", str(whole), *args)
    assert r.returncode == 0, r.stderr

    run = tmp_path / "killed"
    cmd = [sys.executable, "-m", "zoo.cli", "finetune", LENET, "--out", str(run), *args]
    rc, left = _run_until(cmd, world["env"], run, stage=1, min_batch=3)
    assert rc == -signal.SIGKILL, rc
    assert left["stage"] == 1 and 0 < left["batch"] < 8, left  # killed mid-epoch
    resume = [sys.executable, "-m", "zoo.cli", "finetune", "--resume", str(run)]
    rc, left = _run_until(resume, world["env"], run, stage=2, min_batch=3)
    assert rc == -signal.SIGKILL, rc
    assert left["stage"] == 2 and 0 < left["batch"] < 8, left
    r = subprocess.run(resume, cwd=ROOT, env=world["env"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr

    a, b = _state(whole / "checkpoints" / "last.pt"), _state(run / "checkpoints" / "last.pt")
    assert a["state"]["done"] and b["state"]["done"]
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (whole, run))
    assert ma["epochs"] == mb["epochs"]  # every epoch's losses, accuracies and rates, exactly
    assert ma["final"] == mb["final"]
    wa, wb = _weights(whole), _weights(run)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_torchrun_two_processes_only_rank0_writes(world, few_labels: Path, tmp_path: Path) -> None:
    import zoo

    args = ["--data", str(few_labels), *LENET_RUN, "--epochs", "4", "--batch-size", "8"]
    one = zoo.finetune(
        LENET, few_labels, tmp_path / "one", cut="ip1", lr=0.01, epochs=4, workers=0, batch_size=16
    )
    run = tmp_path / "ddp"
    env = {**world["env"], "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += ["-m", "zoo.cli", "finetune", LENET, "--out", str(run), *args]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("held-out accuracy") == 1, r.stdout  # rank 0 reports
    m = json.loads((run / "metrics.json").read_text())
    assert m["world_size"] == 2 and len(m["epochs"]) == 4
    assert abs(m["final"]["accuracy"] - one.accuracy) <= 0.05, (m["final"]["accuracy"], one.accuracy)
    assert not [p for p in run.rglob("*") if p.name.startswith(".")]  # no temporaries left
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.json", "last.pt"]


def test_bf16_autocast_on_cpu_trains(world, few_labels: Path, tmp_path: Path) -> None:
    import zoo

    res = zoo.finetune(
        LENET,
        few_labels,
        tmp_path / "bf16",
        cut="ip1",
        lr=0.01,
        epochs=3,
        workers=0,
        batch_size=16,
        amp="bf16",
    )
    assert res.metrics["amp"] == "bfloat16" and res.metrics["device"] == "cpu"
    losses = [h["train_loss"] for h in res.history]
    assert losses[-1] < 0.5 * losses[0], losses
    assert res.accuracy > 0.8


def test_bad_input_is_one_line_and_a_nonzero_exit(world, few_labels: Path, tmp_path: Path) -> None:
    env = world["env"]

    def one_line(*args: str) -> str:
        r = zoo_cli(env, "finetune", *args)
        assert r.returncode != 0, r.stdout
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("zoo: error: "), r.stderr
        return lines[0]

    (tmp_path / "empty").mkdir()
    assert "empty" in one_line(LENET, "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "o1"))
    single = small_digits(tmp_path / "single", per_class=4, classes=1)
    assert "only class" in one_line(LENET, "--data", str(single), "--out", str(tmp_path / "o2"))
    msg = one_line(LENET, "--data", str(few_labels), "--out", str(tmp_path / "o3"), "--cut", "ip11")
    assert "'ip11'" in msg and "ip1" in msg
    msg = one_line(
        LENET,
        "--data",
        str(few_labels),
        "--out",
        str(tmp_path / "o4"),
        "--unfreeze",
        "upto:conv22",
        "--stage2-epochs",
        "1",
        "--epochs",
        "0",
    )
    assert "'conv22'" in msg and "conv2" in msg
    assert "--head" in one_line(
        LENET, "--data", str(few_labels), "--out", str(tmp_path / "o5"), "--head", "pool=big"
    )
    assert "not a fine-tuning run" in one_line("--resume", str(tmp_path / "empty"))
    for o in ("o1", "o2", "o3", "o4", "o5"):
        assert not (tmp_path / o).exists() or not (tmp_path / o / "checkpoints").exists(), o

    data = tmp_path / "digits"
    shutil.copytree(few_labels, data)
    run = tmp_path / "run"
    r = zoo_cli(env, "finetune", LENET, "--data", str(data), "--out", str(run), *LENET_RUN, "--epochs", "1")
    assert r.returncode == 0, r.stderr
    one = sorted(data.rglob("*.png"))[3]
    os.utime(one, ns=(one.stat().st_atime_ns, one.stat().st_mtime_ns + 10**9))
    (sorted(data.rglob("*.png"))[7]).unlink()
    msg = one_line("--resume", str(run))
    assert "the data changed" in msg and "1 file(s) removed" in msg and "1 file(s) changed" in msg
    assert "a run is already there" in one_line(LENET, "--data", str(data), "--out", str(run))


def test_drop_top_and_an_out_of_memory_error(world, few_labels: Path, tmp_path: Path, monkeypatch) -> None:
    """--drop-top K cuts below the top K layers of `zoo layers`; a CUDA out-of-memory error inside
    training ends as one ZooError line naming --batch-size and --accumulate."""
    import torch

    import zoo
    from zoo.errors import ZooError
    from zoo.finetune import loop

    names = [r["name"] for r in zoo.layers(LENET)]
    res = zoo.finetune(LENET, few_labels, tmp_path / "drop", drop_top=2, epochs=1, workers=0, lr=0.01)
    assert json.loads((res.run_dir / "config.json").read_text())["cut"] == names[-3]

    def oom(self: Any) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(loop.Trainer, "run", oom)
    with pytest.raises(ZooError) as e:
        zoo.finetune(LENET, few_labels, tmp_path / "oom", cut="ip1", epochs=1, workers=0, batch_size=64)
    msg = str(e.value)
    assert "\n" not in msg and "--batch-size 64" in msg and "--accumulate" in msg
