"""CRC-32C (Castagnoli), as LevelDB tables and TensorFlow tensor bundles checksum their bytes.

``google-crc32c`` (or ``crc32c``) is used when installed; otherwise a numpy implementation that
runs the byte-at-a-time table over many chunks at once and joins the chunk checksums with the
"append N zero bytes" linear operator (the zlib ``crc32_combine`` idea), so hundreds of MB take
seconds rather than the minutes a pure-Python loop would. ``masked`` is LevelDB's mask.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

_POLY = 0x82F63B78  # reflected Castagnoli polynomial
_MASK_DELTA = 0xA282EAD8
_CHUNK = 1024  # bytes per lane in the vectorized path
_BLOCK = 1 << 24  # bytes per vectorized pass (bounds the temporary copies)


def _table() -> np.ndarray:
    t = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        t = np.where(t & 1, (t >> 1) ^ np.uint32(_POLY), t >> 1).astype(np.uint32)
    return t


TABLE = _table()
_TABLE_PY = [int(v) for v in TABLE]


def _fast() -> Any:
    try:
        import google_crc32c  # type: ignore[import-not-found]

        if google_crc32c.implementation == "c":
            return google_crc32c.value
    except (ImportError, AttributeError):
        pass
    try:
        import crc32c as _c  # type: ignore[import-not-found]

        return _c.crc32c
    except (ImportError, AttributeError):
        return None


_FAST = _fast()


# --- linear operators on the 32-bit CRC register: "feed N zero bytes", as 4 byte tables --------
def _apply(op: np.ndarray, x: Any) -> Any:
    """op (4, 256) uint32 applied to register values ``x`` (an int or a uint32 array)."""
    x = np.asarray(x, dtype=np.uint32)
    return op[0][x & 0xFF] ^ op[1][(x >> 8) & 0xFF] ^ op[2][(x >> 16) & 0xFF] ^ op[3][x >> 24]


def _from_columns(cols: np.ndarray) -> np.ndarray:
    """The byte tables of the linear map whose image of bit i is ``cols[i]``."""
    b = np.arange(256, dtype=np.uint32)
    op = np.zeros((4, 256), dtype=np.uint32)
    for k in range(4):
        for i in range(8):
            op[k] ^= np.where((b >> i) & 1, cols[8 * k + i], 0).astype(np.uint32)
    return op


@functools.cache
def _zeros_op(log2n: int) -> np.ndarray:
    """The operator for feeding 2**log2n zero bytes."""
    if log2n == 0:
        bits = np.uint32(1) << np.arange(32, dtype=np.uint32)
        return _from_columns(TABLE[bits & 0xFF] ^ (bits >> 8))
    half = _zeros_op(log2n - 1)
    bits = np.uint32(1) << np.arange(32, dtype=np.uint32)
    return _from_columns(_apply(half, _apply(half, bits)))


def _shift(reg: int, n: int) -> int:
    """The register after feeding ``n`` zero bytes."""
    k = 0
    while n:
        if n & 1:
            reg = int(_apply(_zeros_op(k), reg))
        n >>= 1
        k += 1
    return reg


def _raw_py(reg: int, data: Any) -> int:
    t = _TABLE_PY
    for b in bytes(data):
        reg = t[(reg ^ b) & 0xFF] ^ (reg >> 8)
    return reg


def _raw_np(data: np.ndarray) -> int:
    """The register after feeding ``data`` (uint8) from a zero register, vectorized."""
    pad = (-len(data)) % _CHUNK  # leading zero bytes leave a zero register unchanged
    if pad:
        data = np.concatenate([np.zeros(pad, np.uint8), data])
    lanes = data.reshape(-1, _CHUNK).T.copy()  # (CHUNK, K): row j = byte j of every lane
    reg = np.zeros(lanes.shape[1], dtype=np.uint32)
    for row in lanes:
        reg = TABLE[(reg ^ row) & 0xFF] ^ (reg >> 8)
    level = _CHUNK.bit_length() - 1  # lanes hold 2**level bytes each
    while len(reg) > 1:
        if len(reg) % 2:  # a zero lane in front: neutral
            reg = np.concatenate([np.zeros(1, np.uint32), reg])
        reg = _apply(_zeros_op(level), reg[0::2]) ^ reg[1::2]
        level += 1
    return int(reg[0])


def crc32c(data: Any) -> int:
    """The CRC-32C of ``data`` (bytes, bytearray, memoryview or a uint8 array)."""
    if _FAST is not None:
        return int(_FAST(data if isinstance(data, bytes) else bytes(data)))
    return crc32c_extend(0, data)


def crc32c_extend(crc: int, data: Any) -> int:
    """CRC-32C of the concatenation, given ``crc`` of the first part (``crc32c(b"") == 0``)."""
    buf = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data.reshape(-1)
    reg = crc ^ 0xFFFFFFFF
    if len(buf) < 4 * _CHUNK:
        return _raw_py(reg, buf.tobytes()) ^ 0xFFFFFFFF
    for i in range(0, len(buf), _BLOCK):
        part = buf[i : i + _BLOCK]
        reg = _shift(reg, len(part)) ^ _raw_np(part)
    return reg ^ 0xFFFFFFFF


def mask(crc: int) -> int:
    """LevelDB's masked CRC (what tables and tensor bundles store)."""
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF


def unmask(masked: int) -> int:
    rot = (masked - _MASK_DELTA) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF
