"""The protobuf wire format, read by hand (the Caffe caffemodel reader and the TensorFlow
checkpoint reader walk big files this way: bytes fields come back as memoryviews, no copy)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


class WireError(ValueError):
    """Malformed or truncated wire-format data."""


def varint(buf: Any, i: int) -> tuple[int, int]:
    """(value, next offset) of the varint at ``buf[i]``."""
    shift = result = 0
    n = len(buf)
    while True:
        if i >= n:
            raise WireError("truncated varint")
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7
        if shift > 70:
            raise WireError("malformed varint")


def fields(buf: Any) -> Iterator[tuple[int, int, Any]]:
    """Yield (field number, wire type, value): ints for varints, memoryviews for the rest."""
    buf = memoryview(buf)
    i, n = 0, len(buf)
    while i < n:
        key, i = varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            val, i = varint(buf, i)
        elif wt == 2:
            ln, i = varint(buf, i)
            if i + ln > n:
                raise WireError("truncated length-delimited field")
            val, i = buf[i : i + ln], i + ln
        elif wt == 5:
            val, i = buf[i : i + 4], i + 4
        elif wt == 1:
            val, i = buf[i : i + 8], i + 8
        else:
            raise WireError(f"unsupported wire type {wt}")
        if i > n:
            raise WireError("truncated field")
        yield num, wt, val
