"""Read TensorFlow 1 checkpoints without TensorFlow.

Formats (see docs/tf.md):

- **V2** (``Saver`` default since TF 1.x, and ``tf.train.Checkpoint``): ``PREFIX.index``, a
  LevelDB-format table whose key ``""`` holds a ``BundleHeaderProto`` and every other key a
  ``BundleEntryProto`` (``tensorflow/core/protobuf/tensor_bundle.proto``), plus the shards
  ``PREFIX.data-%05d-of-%05d`` holding the raw little-endian tensor bytes at each entry's
  offset/size, checksummed by the entry's masked CRC-32C. Partitioned variables: the full entry
  lists its slices, each stored under an OrderedCode key (``EncodeTensorNameSlice``).
- **V1** (``Saver(write_version=V1)``; the older TF-slim archives): one table file (or
  ``PREFIX-%05d-of-%05d`` shards) of ``SavedTensorSlices``: key ``""`` the meta (names, shapes,
  dtypes, slices), the other keys one ``SavedSlice`` each, values in a ``TensorProto``.

Tables are read block by block: restart-point prefix-compressed keys, the footer's index handle
and magic number, and each block's masked CRC-32C verified. The protobufs are decoded from the
wire format here (a handful of fields). Every malformed input gives :class:`CheckpointError`.
"""

from __future__ import annotations

import mmap
import os
import re
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from converters.tf.crc32c import crc32c, crc32c_extend, mask
from converters.wire import WireError, fields, varint
from zoo.errors import ConversionError

__all__ = ["CheckpointError", "VariableInfo", "list_variables", "read_checkpoint", "resolve_checkpoint"]


class CheckpointError(ConversionError):
    """A TensorFlow checkpoint could not be found or read: truncated, corrupt, bad checksum, or a
    feature this reader does not support (the message names the file and, where known, the tensor)."""


class VariableInfo(NamedTuple):
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype


TABLE_MAGIC = 0xDB4775248B80FB57
_FOOTER_LEN = 48
_BLOCK_TRAILER = 5

# tensorflow/core/framework/types.proto DataType -> numpy (None: not a plain array dtype)
_TF_NAMES = {
    1: "float32", 2: "float64", 3: "int32", 4: "uint8", 5: "int16", 6: "int8", 7: "string",
    8: "complex64", 9: "int64", 10: "bool", 11: "qint8", 12: "quint8", 13: "qint32",
    14: "bfloat16", 15: "qint16", 16: "quint16", 17: "uint16", 18: "complex128", 19: "float16",
    20: "resource", 21: "variant", 22: "uint32", 23: "uint64",
}  # fmt: skip
_NP = {
    1: "<f4", 2: "<f8", 3: "<i4", 4: "u1", 5: "<i2", 6: "i1", 8: "<c8", 9: "<i8", 10: "?",
    11: "i1", 12: "u1", 13: "<i4", 15: "<i2", 16: "<u2", 17: "<u2", 18: "<c16", 19: "<f2",
    22: "<u4", 23: "<u8",
}  # fmt: skip
DT_STRING, DT_BFLOAT16, DT_HALF = 7, 14, 19


def _np_dtype(dt: int, where: str) -> np.dtype:
    if dt == DT_STRING:
        return np.dtype(object)
    if dt == DT_BFLOAT16:
        try:
            import ml_dtypes

            return np.dtype(ml_dtypes.bfloat16)
        except ImportError:
            raise CheckpointError(f"{where}: bfloat16 tensors need the ml_dtypes package") from None
    if dt in _NP:
        return np.dtype(_NP[dt])
    raise CheckpointError(f"{where}: unsupported dtype {_TF_NAMES.get(dt, dt)}")


# ---------------------------------------------------------------- protobuf wire format
def _varint(buf: Any, i: int) -> tuple[int, int]:
    try:
        return varint(buf, i)
    except WireError as e:
        raise CheckpointError(str(e)) from None


def _fields(buf: Any) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, value) of converters/wire.py, its errors as CheckpointError."""
    try:
        yield from fields(buf)
    except WireError as e:
        raise CheckpointError(f"malformed protobuf ({e})") from None


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _varints_np(buf: Any) -> np.ndarray:
    """A packed run of varints -> uint64 array (vectorized)."""
    a = np.frombuffer(buf, dtype=np.uint8)
    if not len(a):
        return np.zeros(0, np.uint64)
    if a[-1] & 0x80:
        raise CheckpointError("truncated packed varints")
    ends = a < 0x80
    elem = np.concatenate([[0], np.cumsum(ends)[:-1]])  # element index of every byte
    starts = np.flatnonzero(np.concatenate([[True], ends[:-1]]))
    pos = np.arange(len(a)) - starts[elem]
    if pos.max() > 9:
        raise CheckpointError("malformed packed varints")
    vals = (a & 0x7F).astype(np.uint64) << (7 * pos).astype(np.uint64)
    return np.bitwise_or.reduceat(vals, starts)


def _shape(buf: Any) -> tuple[int, ...]:
    """TensorShapeProto: repeated Dim dim = 2 (Dim: int64 size = 1); unknown_rank = 3."""
    dims = []
    for num, wt, val in _fields(buf):
        if num == 2 and wt == 2:
            size = 0
            for n2, w2, v2 in _fields(val):
                if n2 == 1 and w2 == 0:
                    size = _signed(v2)
            dims.append(size)
        elif num == 3 and wt == 0 and val:
            raise CheckpointError("a tensor of unknown rank")
    if any(d < 0 for d in dims):
        raise CheckpointError(f"a tensor of unknown shape {dims}")
    return tuple(dims)


def _slice(buf: Any) -> list[tuple[int, int]]:
    """TensorSliceProto: repeated Extent extent = 1 (start = 1, length = 2); length -1 = full."""
    out = []
    for num, wt, val in _fields(buf):
        if num == 1 and wt == 2:
            start, length = 0, -1
            for n2, w2, v2 in _fields(val):
                if n2 == 1 and w2 == 0:
                    start = _signed(v2)
                elif n2 == 2 and w2 == 0:
                    length = _signed(v2)
            out.append((start, length))
    return out


def _region(extents: list[tuple[int, int]], shape: tuple[int, ...], where: str) -> tuple[slice, ...]:
    if extents and len(extents) != len(shape):
        raise CheckpointError(f"{where}: slice of rank {len(extents)} in a tensor of shape {shape}")
    region = []
    for d, size in enumerate(shape):
        start, length = extents[d] if extents else (0, -1)
        stop = size if length < 0 else start + length
        if not 0 <= start <= stop <= size:
            raise CheckpointError(f"{where}: slice {extents} outside the tensor's shape {shape}")
        region.append(slice(start, stop))
    return tuple(region)


# ---------------------------------------------------------------- OrderedCode slice keys (V2)
def _num_increasing(v: int) -> bytes:
    b = v.to_bytes(8, "big").lstrip(b"\x00")
    return bytes([len(b)]) + b


_HEADER_BITS = [(0, 0), (0x80, 0), (0xC0, 0), (0xE0, 0), (0xF0, 0), (0xF8, 0), (0xFC, 0), (0xFE, 0),
                (0xFF, 0), (0xFF, 0x80), (0xFF, 0xC0)]  # fmt: skip


def _signed_increasing(v: int) -> bytes:
    x = ~v if v < 0 else v
    if x < 64:
        return bytes([(0x80 ^ v) & 0xFF])
    n = x.bit_length() // 7 + 1
    buf = bytearray((v & ((1 << 64) - 1)).to_bytes(8, "big"))
    buf = bytearray((b"\xff\xff" if v < 0 else b"\x00\x00") + bytes(buf))[10 - n :]
    buf[0] ^= _HEADER_BITS[n][0]
    buf[1] ^= _HEADER_BITS[n][1]
    return bytes(buf)


def _escape(s: bytes) -> bytes:
    out = bytearray()
    for b in s:
        out += b"\x00\xff" if b == 0 else b"\xff\x00" if b == 0xFF else bytes([b])
    return bytes(out)


def slice_key(name: str, extents: list[tuple[int, int]]) -> bytes:
    """TensorFlow's ``EncodeTensorNameSlice``: the table key of one slice of a partitioned tensor."""
    key = _num_increasing(0) + _escape(name.encode()) + b"\x00\x01" + _num_increasing(len(extents))
    for start, length in extents:
        key += _signed_increasing(start) + _signed_increasing(length)
    return key


# ---------------------------------------------------------------- LevelDB-format table
class _Table:
    """A read-only sorted string table (TensorFlow's ``tensorflow/core/lib/io/table``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._fh = open(path, "rb")  # noqa: SIM115 - kept open for the mmap's lifetime
            size = os.fstat(self._fh.fileno()).st_size
            self.buf: Any = (
                memoryview(mmap.mmap(self._fh.fileno(), 0, access=mmap.ACCESS_READ))
                if size
                else memoryview(b"")
            )
        except OSError as e:
            raise CheckpointError(f"{path}: cannot read ({e.strerror or e})") from None
        if len(self.buf) < _FOOTER_LEN:
            raise CheckpointError(
                f"{path}: truncated ({len(self.buf)} bytes, no table footer): not a checkpoint"
            )
        footer = self.buf[-_FOOTER_LEN:]
        magic = struct.unpack("<Q", footer[-8:])[0]
        if magic != TABLE_MAGIC:
            raise CheckpointError(
                f"{path}: bad magic number 0x{magic:016x}: truncated, or not a TensorFlow table"
            )
        try:
            _, i = self._handle(footer, 0)  # metaindex (unused: TF writes no filter)
            self.index_handle, _ = self._handle(footer, i)
        except CheckpointError as e:
            raise CheckpointError(f"{path}: corrupt footer ({e})") from None

    def _handle(self, buf: Any, i: int) -> tuple[tuple[int, int], int]:
        off, i = _varint(buf, i)
        size, i = _varint(buf, i)
        return (off, size), i

    def _block(self, handle: tuple[int, int], what: str) -> memoryview:
        off, size = handle
        end = off + size + _BLOCK_TRAILER
        if end > len(self.buf) - _FOOTER_LEN:
            raise CheckpointError(
                f"{self.path}: truncated: {what} at bytes {off}..{end} past the table's end ({len(self.buf)})"
            )
        data = self.buf[off : off + size]
        kind = self.buf[off + size]
        stored = struct.unpack("<I", self.buf[off + size + 1 : end])[0]
        actual = mask(crc32c_extend(crc32c(data), bytes([kind])))
        if stored != actual:
            raise CheckpointError(
                f"{self.path}: {what} at byte {off}: crc32c mismatch (stored 0x{stored:08x}, "
                f"computed 0x{actual:08x}): the file is corrupt"
            )
        if kind == 0:
            return data
        if kind == 1:
            try:
                import snappy  # type: ignore[import-not-found]
            except ImportError:
                raise CompressionUnsupported(
                    f"{self.path}: {what} is snappy-compressed; install python-snappy to read it"
                ) from None
            return memoryview(snappy.uncompress(bytes(data)))
        raise CompressionUnsupported(f"{self.path}: {what} has unknown compression type {kind}")

    def _entries(self, block: memoryview, what: str) -> Iterator[tuple[bytes, memoryview]]:
        n = len(block)
        if n < 4:
            raise CheckpointError(f"{self.path}: {what} too short ({n} bytes)")
        num_restarts = struct.unpack("<I", block[n - 4 :])[0]
        limit = n - 4 - 4 * num_restarts
        if limit < 0:
            raise CheckpointError(f"{self.path}: {what}: bad restart count {num_restarts}")
        i, key = 0, b""
        while i < limit:
            shared, i = _varint(block, i)
            unshared, i = _varint(block, i)
            vlen, i = _varint(block, i)
            if shared > len(key) or i + unshared + vlen > limit:
                raise CheckpointError(f"{self.path}: {what}: corrupt entry at byte {i}")
            key = key[:shared] + bytes(block[i : i + unshared])
            i += unshared
            yield key, block[i : i + vlen]
            i += vlen

    def items(self) -> Iterator[tuple[bytes, memoryview]]:
        index = self._block(self.index_handle, "index block")
        for n, (_, handle) in enumerate(self._entries(index, "index block")):
            try:
                h, _ = self._handle(handle, 0)
            except CheckpointError:
                raise CheckpointError(f"{self.path}: index block: corrupt block handle") from None
            yield from self._entries(self._block(h, f"data block {n}"), f"data block {n}")

    def close(self) -> None:
        self._fh.close()


class CompressionUnsupported(CheckpointError):
    """A table block compressed with something this install cannot decompress (snappy without
    python-snappy)."""


# ---------------------------------------------------------------- locating the files
_DATA_RE = re.compile(r"^(.*)\.data-(\d{5})-of-(\d{5})$")
_V1_SHARD_RE = re.compile(r"^(.*)-(\d{5})-of-(\d{5})$")


def _state_file_path(d: Path) -> Path:
    state = d / "checkpoint"
    if not state.is_file():
        indexes = sorted(d.glob("*.index"))
        if len(indexes) == 1:
            return indexes[0].with_suffix("")
        raise CheckpointError(
            f"{d}: a directory without a 'checkpoint' state file"
            + (f" and {len(indexes)} .index files: name one" if indexes else " or any .index file")
        )
    text = state.read_text(errors="replace")
    m = re.search(r'^\s*model_checkpoint_path\s*:\s*"((?:[^"\\]|\\.)*)"', text, re.M)
    if not m:
        raise CheckpointError(f"{state}: no model_checkpoint_path in the checkpoint state file")
    p = Path(m.group(1).encode().decode("unicode_escape"))
    full = p if p.is_absolute() else d / p
    if not _exists(full) and _exists(d / p.name):  # an absolute path from before the folder moved
        full = d / p.name
    return full


def _exists(prefix: Path) -> bool:
    return Path(str(prefix) + ".index").is_file() or prefix.is_file() or bool(_v1_shards(_v1_base(prefix)))


def _v1_base(p: Path) -> Path:
    """``PREFIX`` of ``PREFIX-?????-of-NNNNN`` (TF's sharded-V1 pattern) or ``PREFIX-00003-of-NNNNN``."""
    m = _V1_SHARD_RE.match(str(p)) or re.match(r"^(.*)-\?{5}-of-(\d{5})$", str(p))
    return Path(m.group(1)) if m else p


def _v1_shards(prefix: Path) -> list[Path]:
    """The ``PREFIX-%05d-of-%05d`` files, all of them or an error naming the missing ones."""
    if not prefix.parent.is_dir():
        return []
    found = sorted(
        f for f in prefix.parent.glob(prefix.name + "-?????-of-?????") if _V1_SHARD_RE.match(str(f))
    )
    if not found:
        return []
    total = int(_V1_SHARD_RE.match(str(found[-1])).group(3))  # type: ignore[union-attr]
    want = [Path(f"{prefix}-{k:05d}-of-{total:05d}") for k in range(total)]
    missing = [w.name for w in want if not w.is_file()]
    if missing:
        raise CheckpointError(
            f"{prefix}: V1 checkpoint shard {missing[0]} missing ({len(missing)} of {total})"
        )
    return want


def resolve_checkpoint(path: str | os.PathLike[str]) -> tuple[str, Path, list[Path]]:
    """``("v2", prefix, [])`` or ``("v1", prefix, [files])`` for a prefix, a ``.index`` or
    ``.data-*`` file, a V1 file, shard or shard pattern, or a directory with a ``checkpoint``
    state file."""
    p = Path(path)
    if p.is_dir():
        p = _state_file_path(p)
    s = str(p)
    if s.endswith(".index"):
        p = Path(s[: -len(".index")])
    elif m := _DATA_RE.match(s):
        p = Path(m.group(1))
    if Path(str(p) + ".index").is_file():
        return "v2", p, []
    base = _v1_base(p)
    if base != p and (shards := _v1_shards(base)):
        return "v1", base, shards
    if p.is_file():
        return "v1", p, [p]
    if shards := _v1_shards(p):
        return "v1", p, shards
    raise CheckpointError(
        f"{path}: no TensorFlow checkpoint there (no {p.name}.index, V1 file or state file)"
    )


# ---------------------------------------------------------------- V2 bundles
class _Entry(NamedTuple):
    dtype: int
    shape: tuple[int, ...]
    shard: int
    offset: int
    size: int
    crc: int
    slices: list[list[tuple[int, int]]]


def _bundle_entry(buf: Any) -> _Entry:
    dtype, shape, shard, offset, size, crc, slices = 0, (), 0, 0, 0, 0, []
    for num, wt, val in _fields(buf):
        if num == 1 and wt == 0:
            dtype = val
        elif num == 2 and wt == 2:
            shape = _shape(val)
        elif num == 3 and wt == 0:
            shard = val
        elif num == 4 and wt == 0:
            offset = val
        elif num == 5 and wt == 0:
            size = val
        elif num == 6 and wt == 5:
            crc = struct.unpack("<I", val)[0]
        elif num == 7 and wt == 2:
            slices.append(_slice(val))
    return _Entry(dtype, shape, shard, offset, size, crc, slices)


class _V2:
    def __init__(self, prefix: Path) -> None:
        self.prefix = prefix
        self.index_path = Path(str(prefix) + ".index")
        table = _Table(self.index_path)
        self.entries: dict[str, _Entry] = {}
        self.slice_entries: dict[bytes, _Entry] = {}
        self.num_shards, endian = 1, 0
        try:
            for key, val in table.items():
                if key == b"":
                    for num, wt, v in _fields(val):
                        if num == 1 and wt == 0:
                            self.num_shards = v
                        elif num == 2 and wt == 0:
                            endian = v
                elif key[:1] == b"\x00":
                    self.slice_entries[key] = _bundle_entry(val)
                else:
                    self.entries[key.decode("utf-8", "replace")] = _bundle_entry(val)
        except CheckpointError as e:
            if str(e).startswith(str(self.index_path)):
                raise
            raise CheckpointError(f"{self.index_path}: {e}") from None
        finally:
            table.close()
        if endian != 0:
            raise CheckpointError(f"{self.index_path}: a big-endian bundle (not supported)")
        self._shards: dict[int, Any] = {}

    def variables(self) -> list[VariableInfo]:
        return [
            VariableInfo(n, e.shape, _np_dtype(e.dtype, f"{self.index_path}: tensor {n!r}"))
            for n, e in sorted(self.entries.items())
        ]

    def _shard(self, k: int) -> Any:
        if k not in self._shards:
            path = Path(f"{self.prefix}.data-{k:05d}-of-{self.num_shards:05d}")
            if k >= self.num_shards:
                raise CheckpointError(f"{self.index_path}: shard {k} of a {self.num_shards}-shard bundle")
            try:
                with open(path, "rb") as fh:
                    size = os.fstat(fh.fileno()).st_size
                    mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
            except OSError as e:
                raise CheckpointError(f"{path}: cannot read data shard ({e.strerror or e})") from None
            self._shards[k] = (path, memoryview(mm))
        return self._shards[k]

    def _bytes(self, name: str, e: _Entry) -> tuple[Path, memoryview]:
        path, buf = self._shard(e.shard)
        if e.offset + e.size > len(buf):
            raise CheckpointError(
                f"{path}: truncated: tensor {name!r} needs bytes {e.offset}..{e.offset + e.size}, "
                f"the shard has {len(buf)}"
            )
        data = buf[e.offset : e.offset + e.size]
        return path, data

    def _array(self, name: str, e: _Entry) -> np.ndarray:
        where = f"{self.prefix}: tensor {name!r}"
        dt = _np_dtype(e.dtype, where)
        path, data = self._bytes(name, e)
        n = int(np.prod(e.shape, dtype=np.int64))
        if e.dtype == DT_STRING:
            return self._strings(name, e, path, data, n)
        if e.size != n * dt.itemsize:
            raise CheckpointError(
                f"{where}: {e.size} bytes stored for shape {list(e.shape)} of {_TF_NAMES[e.dtype]}"
            )
        actual = mask(crc32c(data))
        if actual != e.crc:
            raise CheckpointError(
                f"{path}: tensor {name!r}: crc32c mismatch (stored 0x{e.crc:08x}, computed 0x{actual:08x}): "
                "the data shard is corrupt"
            )
        return np.frombuffer(data, dtype=dt).reshape(e.shape).astype(dt.newbyteorder("="), copy=True)

    def _strings(self, name: str, e: _Entry, path: Path, data: memoryview, n: int) -> np.ndarray:
        # [varint64 len]*n [masked crc32c of the lengths, each as 4 little-endian bytes] [bytes]*n;
        # the entry's crc32c covers those 4-byte lengths, the length checksum and the bytes
        lens, i = [], 0
        for _ in range(n):
            ln, i = _varint(data, i)
            lens.append(ln)
        if i + 4 + sum(lens) != len(data):
            raise CheckpointError(f"{path}: tensor {name!r}: string tensor of the wrong size")
        crc = crc32c(b"".join(struct.pack("<I", ln & 0xFFFFFFFF) for ln in lens))
        if struct.unpack("<I", data[i : i + 4])[0] != mask(crc):
            raise CheckpointError(f"{path}: tensor {name!r}: crc32c mismatch in the string lengths")
        crc = crc32c_extend(crc, data[i : i + 4])
        i += 4
        out = np.empty(n, dtype=object)
        for k, ln in enumerate(lens):
            out[k] = bytes(data[i : i + ln])
            i += ln
        crc = crc32c_extend(crc, data[i - sum(lens) : i])
        if mask(crc) != e.crc:
            raise CheckpointError(f"{path}: tensor {name!r}: crc32c mismatch: the data shard is corrupt")
        return out.reshape(e.shape)

    def read(self, name: str) -> np.ndarray:
        e = self.entries[name]
        if not e.slices:
            return self._array(name, e)
        where = f"{self.prefix}: tensor {name!r}"
        dt = _np_dtype(e.dtype, where)
        out = np.zeros(e.shape, dtype=dt)
        for extents in e.slices:
            key = slice_key(name, extents)
            se = self.slice_entries.get(key)
            if se is None:
                raise CheckpointError(f"{where}: slice {extents} missing from {self.index_path.name}")
            region = _region(extents, e.shape, where)
            part = self._array(f"{name}[{extents}]", se)
            if part.shape != tuple(r.stop - r.start for r in region):
                raise CheckpointError(f"{where}: slice {extents} stored with shape {part.shape}")
            out[region] = part
        return out


# ---------------------------------------------------------------- V1 tensor slices
def _tensor_proto_values(buf: Any, dt: int, n: int, where: str) -> np.ndarray:
    """The values of a TensorProto (``tensor_content`` or the typed repeated fields), flat."""
    dtype = _np_dtype(dt, where)
    content: bytes | None = None
    floats: list[Any] = []
    ints: list[Any] = []
    strings: list[bytes] = []
    for num, wt, val in _fields(buf):
        if num == 4 and wt == 2:
            content = bytes(val)
        elif num == 5:  # float_val
            floats.append(np.frombuffer(val, "<f4"))
        elif num in (6, 9, 12):  # double_val, scomplex_val, dcomplex_val
            floats.append(np.frombuffer(val, "<f8" if num != 9 else "<f4"))
        elif num in (7, 10, 11, 13, 16, 17):  # int, int64, bool, half (bits), uint32, uint64
            ints.append(_varints_np(val) if wt == 2 else np.array([val], np.uint64))
        elif num == 8 and wt == 2:
            strings.append(bytes(val))
    if dt == DT_STRING:
        vals = np.empty(len(strings), dtype=object)
        vals[:] = strings
    elif content is not None:
        if len(content) != n * dtype.itemsize:
            raise CheckpointError(f"{where}: tensor_content of {len(content)} bytes for {n} values")
        vals = np.frombuffer(content, dtype=dtype)
    elif floats:
        vals = np.concatenate(floats)
        if dtype.kind == "c":
            vals = vals.view(dtype)
        vals = vals.astype(dtype)
    elif ints:
        raw = np.concatenate(ints)
        if dt in (DT_HALF, DT_BFLOAT16):
            vals = raw.astype(np.uint16).view(dtype)
        else:
            vals = raw.view(np.int64).astype(dtype)
    else:
        vals = np.zeros(0, dtype)
    if len(vals) == 1 and n > 1:  # TensorProto's "one value fills the tensor"
        vals = np.repeat(vals, n)
    if len(vals) != n:
        raise CheckpointError(f"{where}: {len(vals)} values stored for {n} elements")
    return vals


class _V1:
    def __init__(self, prefix: Path, files: list[Path]) -> None:
        self.prefix = prefix
        self.meta: dict[str, tuple[int, tuple[int, ...]]] = {}
        self.slices: dict[str, list[tuple[Path, list[tuple[int, int]], memoryview]]] = {}
        self._tables = []
        for f in files:
            table = _Table(f)
            self._tables.append(table)
            try:
                for key, val in table.items():
                    for num, wt, v in _fields(val):
                        if num == 1 and wt == 2 and key == b"":
                            self._read_meta(v)
                        elif num == 2 and wt == 2:
                            self._read_slice(f, v)
            except CheckpointError as e:
                if str(e).startswith(str(f)):
                    raise
                raise CheckpointError(f"{f}: {e}") from None
        if not self.meta:
            raise CheckpointError(f"{files[0]}: a table without checkpoint metadata: not a V1 checkpoint")

    def _read_meta(self, buf: Any) -> None:
        for num, wt, val in _fields(buf):
            if num == 1 and wt == 2:  # SavedSliceMeta: name 1, shape 2, type 3, slice 4
                name, shape, dt = "", (), 0
                for n2, w2, v2 in _fields(val):
                    if n2 == 1 and w2 == 2:
                        name = bytes(v2).decode("utf-8", "replace")
                    elif n2 == 2 and w2 == 2:
                        shape = _shape(v2)
                    elif n2 == 3 and w2 == 0:
                        dt = v2
                self.meta[name] = (dt, shape)

    def _read_slice(self, f: Path, buf: Any) -> None:
        name, extents, data = "", [], memoryview(b"")  # SavedSlice: name 1, slice 2, data 3
        for num, wt, val in _fields(buf):
            if num == 1 and wt == 2:
                name = bytes(val).decode("utf-8", "replace")
            elif num == 2 and wt == 2:
                extents = _slice(val)
            elif num == 3 and wt == 2:
                data = val
        self.slices.setdefault(name, []).append((f, extents, data))

    def variables(self) -> list[VariableInfo]:
        return [
            VariableInfo(n, shape, _np_dtype(dt, f"{self.prefix}: tensor {n!r}"))
            for n, (dt, shape) in sorted(self.meta.items())
        ]

    def read(self, name: str) -> np.ndarray:
        dt, shape = self.meta[name]
        where = f"{self.prefix}: tensor {name!r}"
        parts = self.slices.get(name)
        if not parts:
            raise CheckpointError(f"{where}: no data stored")
        out = np.zeros(shape, dtype=_np_dtype(dt, where))
        covered = 0
        for _, extents, data in parts:
            region = _region(extents, shape, where)
            sub = tuple(r.stop - r.start for r in region)
            n = int(np.prod(sub, dtype=np.int64))
            out[region] = _tensor_proto_values(data, dt, n, where).reshape(sub)
            covered += n
        if covered != out.size:
            raise CheckpointError(f"{where}: its slices cover {covered} of {out.size} elements")
        return out


# ---------------------------------------------------------------- public API
def _open(path: str | os.PathLike[str]) -> _V1 | _V2:
    kind, prefix, files = resolve_checkpoint(path)
    try:
        return _V2(prefix) if kind == "v2" else _V1(prefix, files)
    except (struct.error, IndexError, ValueError, OverflowError) as e:  # belt and braces
        raise CheckpointError(f"{prefix}: corrupt checkpoint ({type(e).__name__}: {e})") from None


def list_variables(path: str | os.PathLike[str]) -> list[VariableInfo]:
    """``(name, shape, dtype)`` of every tensor in the checkpoint, sorted by name (as
    ``tf.train.list_variables``; dtype a numpy dtype, ``object`` for strings)."""
    return _open(path).variables()


def read_checkpoint(path: str | os.PathLike[str], names: list[str] | None = None) -> dict[str, np.ndarray]:
    """Every tensor (or those in ``names``) as ``name -> array``, dtype and shape as stored;
    every checksum verified. Strings come as object arrays of bytes."""
    ck = _open(path)
    known = {v.name for v in ck.variables()}
    if names is not None:
        missing = [n for n in names if n not in known]
        if missing:
            raise CheckpointError(f"{path}: no tensor {missing[0]!r} in the checkpoint")
    try:
        return {n: ck.read(n) for n in (names if names is not None else sorted(known))}
    except (struct.error, IndexError, ValueError, OverflowError) as e:
        raise CheckpointError(f"{path}: corrupt checkpoint ({type(e).__name__}: {e})") from None
