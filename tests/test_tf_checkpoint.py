"""converters.tf.checkpoint: TF1 checkpoints (V2 bundles, V1 tables, TF2 object checkpoints)
read without TensorFlow, compared exactly with TensorFlow's own reader (run once, in a
subprocess: tests/tf_fixtures.py); corrupt, truncated and odd inputs give CheckpointError."""

from __future__ import annotations

import json
import shutil
import struct
import sys
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from converters.tf import checkpoint as ck
from converters.tf.checkpoint import CheckpointError, list_variables, read_checkpoint
from converters.tf.crc32c import _raw_py, crc32c, crc32c_extend, mask, unmask
from zoo.errors import ConversionError

pytestmark = pytest.mark.slow

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tf_fixtures import make_checkpoints  # noqa: E402


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """v2/, v1/, tf2/ written by TensorFlow, each with TF's reading in ref.npz/ref.json (read-only)."""
    return make_checkpoints(tmp_path_factory.mktemp("tf_ckpt"))


def _reference(d: Path) -> tuple[str, dict[str, dict[str, Any]], dict[str, np.ndarray]]:
    ref = json.loads((d / "ref.json").read_text())
    z = np.load(d / "ref.npz", allow_pickle=True)  # our own fixture: strings are object arrays
    metas = {m["name"]: m for m in ref["tensors"]}
    arrays = {m["name"]: z[f"a{i}"] for i, m in enumerate(ref["tensors"]) if "tf_error" not in m}
    return ref["path"], metas, arrays


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)


def _np_dtype(tf_name: str) -> np.dtype:
    return np.dtype(object) if tf_name == "string" else np.dtype(tf_name)


# ---------------------------------------------------------------- against TensorFlow's reader
@pytest.mark.parametrize("fmt", ["v2", "v1", "v1s", "tf2"])
def test_equals_tensorflow_reader(ckpts: Path, fmt: str) -> None:
    path, metas, ref = _reference(ckpts / fmt)
    got = read_checkpoint(path)
    assert sorted(got) == sorted(metas)  # same names (TF2: the object-graph keys too)
    for name, arr in ref.items():
        assert _same(got[name], arr), name
    for name, m in metas.items():
        assert got[name].dtype == _np_dtype(m["dtype"]) and list(got[name].shape) == m["shape"], name
    if fmt.startswith("v1"):  # what TF's V1 reader cannot read: the same graph's V2 save, as TF reads it
        _, _, ref2 = _reference(ckpts / "v2")
        unread = [n for n, m in metas.items() if "tf_error" in m]
        assert sorted(unread) == ["half", "part/embedding"]
        for name in unread:
            assert _same(got[name], ref2[name]), name
    if fmt == "tf2":
        assert "_CHECKPOINTABLE_OBJECT_GRAPH" in got and got["_CHECKPOINTABLE_OBJECT_GRAPH"].dtype == object
        assert "net/kernel/.ATTRIBUTES/VARIABLE_VALUE" in got


@pytest.mark.parametrize("fmt", ["v2", "v1", "tf2"])
def test_list_variables(ckpts: Path, fmt: str) -> None:
    path, metas, _ = _reference(ckpts / fmt)
    got = list_variables(path)
    assert [v.name for v in got] == sorted(metas)
    for v in got:
        name, shape, dtype = v  # unpacks as a triple
        assert list(shape) == metas[name]["shape"] and dtype == _np_dtype(metas[name]["dtype"]), name


def test_fixture_covers_the_format(ckpts: Path) -> None:
    """The V2 index spans several table blocks; the V2 graph has a partitioned tensor (slices)."""
    for f in [ckpts / "v2" / "model.ckpt.index", ckpts / "v1" / "model.ckpt"]:
        t = ck._Table(f)
        assert len(list(t._entries(t._block(t.index_handle, "index"), "index"))) >= 2, f
    v2 = ck._V2(ckpts / "v2" / "model.ckpt")
    assert len(v2.entries["part/embedding"].slices) == 3 and len(v2.slice_entries) == 3
    assert v2.entries["fc/weights"].size == 300 * 500 * 4


def test_path_forms(ckpts: Path, tmp_path: Path) -> None:
    _, _, ref = _reference(ckpts / "v2")
    d = ckpts / "v2"
    want = ref["conv1/weights"]
    for p in [d, d / "model.ckpt", d / "model.ckpt.index", d / "model.ckpt.data-00000-of-00001", str(d)]:
        assert _same(read_checkpoint(p, names=["conv1/weights"])["conv1/weights"], want), p
    _, _, ref1 = _reference(ckpts / "v1")
    v1s = ckpts / "v1s"
    for p in [
        ckpts / "v1",
        ckpts / "v1" / "model.ckpt",
        v1s,
        v1s / "model.ckpt",
        v1s / "model.ckpt-00000-of-00001",
    ]:
        assert _same(read_checkpoint(p, names=["fc/weights"])["fc/weights"], ref1["fc/weights"])
    # a moved folder whose state file still names the old absolute path
    moved = tmp_path / "moved"
    shutil.copytree(d, moved)
    (moved / "checkpoint").write_text('model_checkpoint_path: "/nowhere/else/model.ckpt"\n')
    assert _same(read_checkpoint(moved, names=["conv1/weights"])["conv1/weights"], want)
    # no state file, one .index: that one
    (moved / "checkpoint").unlink()
    assert _same(read_checkpoint(moved, names=["conv1/weights"])["conv1/weights"], want)
    shard = tmp_path / "sh" / "model.ckpt-00000-of-00002"  # a sharded V1 save missing a shard
    shard.parent.mkdir()
    shutil.copy(v1s / "model.ckpt-00000-of-00001", shard)
    with pytest.raises(CheckpointError, match="shard model.ckpt-00001-of-00002 missing"):
        read_checkpoint(shard)
    with pytest.raises(CheckpointError, match="no tensor 'nope'"):
        read_checkpoint(d, names=["nope"])


@pytest.mark.parametrize("fmt", ["v2", "v1"])
def test_slim_archive_layout(ckpts: Path, tmp_path: Path, fmt: str) -> None:
    """As the TF-slim zoo publishes: a .tar.gz of model.ckpt.index + .data (V2) or one V1 file."""
    src = ckpts / fmt
    members = (
        {
            "model.ckpt.index": "model.ckpt.index",
            "model.ckpt.data-00000-of-00001": "model.ckpt.data-00000-of-00001",
        }
        if fmt == "v2"
        else {"model.ckpt": "inception_v3.ckpt"}
    )
    arc = tmp_path / "slim_2016_08_28.tar.gz"
    with tarfile.open(arc, "w:gz") as tf:
        for name, arcname in members.items():
            tf.add(src / name, arcname=arcname)
    out = tmp_path / "x"
    with tarfile.open(arc) as tf:
        tf.extractall(out, filter="data")
    target = out / ("model.ckpt" if fmt == "v2" else "inception_v3.ckpt")
    _, _, ref = _reference(src)
    got = read_checkpoint(target)
    for name, arr in ref.items():
        assert _same(got[name], arr), name


# ---------------------------------------------------------------- damaged files
def _copy_v2(ckpts: Path, tmp_path: Path) -> Path:
    d = tmp_path / "c"
    d.mkdir()
    for f in ["model.ckpt.index", "model.ckpt.data-00000-of-00001"]:
        shutil.copy(ckpts / "v2" / f, d / f)
    return d / "model.ckpt"


def _flip(path: Path, at: int) -> None:
    b = bytearray(path.read_bytes())
    b[at] ^= 0x10
    path.write_bytes(bytes(b))


def _one_line(e: pytest.ExceptionInfo[CheckpointError]) -> str:
    msg = str(e.value)
    assert "\n" not in msg and isinstance(e.value, ConversionError) and e.value.exit_code == 8
    return msg


def test_flipped_byte_in_data_shard_names_the_tensor(ckpts: Path, tmp_path: Path) -> None:
    prefix = _copy_v2(ckpts, tmp_path)
    e = ck._V2(prefix).entries["fc/weights"]
    _flip(Path(f"{prefix}.data-00000-of-00001"), e.offset + e.size // 2)
    with pytest.raises(CheckpointError, match=r"tensor 'fc/weights': crc32c mismatch") as ei:
        read_checkpoint(prefix)
    _one_line(ei)
    assert read_checkpoint(prefix, names=["conv1/weights"])  # the others still read


def test_truncated_or_missing_data_shard(ckpts: Path, tmp_path: Path) -> None:
    prefix = _copy_v2(ckpts, tmp_path)
    data = Path(f"{prefix}.data-00000-of-00001")
    data.write_bytes(data.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated: tensor") as ei:
        read_checkpoint(prefix)
    _one_line(ei)
    data.unlink()
    with pytest.raises(CheckpointError, match="cannot read data shard"):
        read_checkpoint(prefix)


def test_truncated_index(ckpts: Path, tmp_path: Path) -> None:
    prefix = _copy_v2(ckpts, tmp_path)
    index = Path(f"{prefix}.index")
    full = index.read_bytes()
    for n in [0, 1, 47, 48, 100, len(full) // 2, len(full) - 49, len(full) - 1]:
        index.write_bytes(full[:n])
        with pytest.raises(CheckpointError) as ei:
            list_variables(prefix)
        _one_line(ei)
        assert str(index) in str(ei.value)


def test_bad_magic_and_corrupt_blocks(ckpts: Path, tmp_path: Path) -> None:
    prefix = _copy_v2(ckpts, tmp_path)
    index = Path(f"{prefix}.index")
    full = index.read_bytes()
    _flip(index, len(full) - 3)
    with pytest.raises(CheckpointError, match="bad magic number"):
        read_checkpoint(prefix)
    for at in [5, len(full) // 2, len(full) - 60]:  # a data block, the middle, the index block
        index.write_bytes(full)
        _flip(index, at)
        with pytest.raises(CheckpointError, match="crc32c mismatch|corrupt") as ei:
            read_checkpoint(prefix)
        _one_line(ei)


def test_v1_damaged(ckpts: Path, tmp_path: Path) -> None:
    f = tmp_path / "model.ckpt"
    full = (ckpts / "v1" / "model.ckpt").read_bytes()
    for n in [10, len(full) // 3, len(full) - 1]:
        f.write_bytes(full[:n])
        with pytest.raises(CheckpointError):
            read_checkpoint(f)
    f.write_bytes(full)
    _flip(f, len(full) // 2)
    with pytest.raises(CheckpointError, match="crc32c mismatch") as ei:
        read_checkpoint(f)
    _one_line(ei)


def test_compressed_block(ckpts: Path, tmp_path: Path) -> None:
    """A snappy block (type 1) with a valid checksum: a clear error unless python-snappy exists."""
    prefix = _copy_v2(ckpts, tmp_path)
    index = Path(f"{prefix}.index")
    t = ck._Table(index)
    first = next(t._entries(t._block(t.index_handle, "index"), "index"))[1]
    (off, size), _ = t._handle(first, 0)
    t.close()
    b = bytearray(index.read_bytes())
    b[off + size] = 1
    b[off + size + 1 : off + size + 5] = struct.pack("<I", mask(crc32c(bytes(b[off : off + size + 1]))))
    index.write_bytes(bytes(b))
    try:
        import snappy  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        with pytest.raises(ck.CompressionUnsupported, match="snappy-compressed; install python-snappy"):
            read_checkpoint(prefix)
    else:
        with pytest.raises(CheckpointError):  # not real snappy data
            read_checkpoint(prefix)


def test_not_a_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no TensorFlow checkpoint"):
        read_checkpoint(tmp_path / "nothing")
    with pytest.raises(CheckpointError, match="without a 'checkpoint' state file"):
        read_checkpoint(tmp_path)
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(CheckpointError, match="bad magic"):
        read_checkpoint(junk)
    (tmp_path / "checkpoint").write_text("all_model_checkpoint_paths: 'x'\n")
    with pytest.raises(CheckpointError, match="no model_checkpoint_path"):
        read_checkpoint(tmp_path)


def test_no_tensorflow_in_this_process() -> None:
    assert "tensorflow" not in sys.modules


# ---------------------------------------------------------------- crc32c
def test_crc32c() -> None:
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"") == 0
    rng = np.random.default_rng(1)
    for n in [1, 4095, 4096, 4097, 70_000, (1 << 20) + 3]:
        d = rng.integers(0, 256, n, dtype=np.uint8)
        assert crc32c(d) == _raw_py(0xFFFFFFFF, d.tobytes()) ^ 0xFFFFFFFF, n
        assert crc32c_extend(crc32c(d[: n // 3]), d[n // 3 :]) == crc32c(d), n
    for v in [0, 1, 0xFFFFFFFF, 0x12345678]:
        assert unmask(mask(v)) == v


def test_slice_key_numbers() -> None:
    """OrderedCode's signed numbers sort like the numbers (the encoding TF's slice keys use)."""
    vals = [-(2**40), -70000, -65, -64, -1, 0, 1, 63, 64, 8191, 8192, 2**20, 2**40, 2**62]
    enc = [ck._signed_increasing(v) for v in vals]
    assert enc == sorted(enc) and len(set(enc)) == len(enc)
    assert ck._signed_increasing(-1) == b"\x7f" and ck._signed_increasing(0) == b"\x80"
