"""Text output shared by the commands: widths, numbers, the search table, key-value lines."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any


def _out_width() -> int | None:
    """Columns to fit: $COLUMNS, else the terminal's; None when piped with no $COLUMNS."""
    import os
    import shutil

    env = os.environ.get("COLUMNS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    if sys.stdout.isatty():
        return shutil.get_terminal_size((80, 24)).columns
    return None


def _fmt_params(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.1f}M"


def _fmt_num(v: float | None, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _input_str(card: Any) -> str:
    """The input shape one way for every source: channels x height x width (``3x224x224``)."""
    p = card.preprocess
    chans = 1 if p.channel_order == "GRAY" else 3
    h = w = None
    if p.input_size:
        dims = list(p.input_size)
        if len(dims) == 3:
            c, h, w = (dims[2], dims[0], dims[1]) if p.layout == "NHWC" else dims
            chans = c or chans
        elif len(dims) == 2:
            h, w = dims
    if p.crop:
        h = w = p.crop
    if not h or not w:
        return "-"
    return f"{chans}x{h}x{w}"


# (header, right-aligned, value) for the search table, in the order dropped last-to-first.
_SEARCH_COLUMNS: dict[str, tuple[str, bool, Any]] = {
    "id": ("id", False, lambda c: c.id),
    "top1": ("top-1", True, lambda c: _fmt_num(c.top1)),
    "params": ("params", True, lambda c: _fmt_params(c.params)),
    "source": ("source", False, lambda c: c.source),
    "input": ("input", True, _input_str),
    "gflops": ("GFLOPs", True, lambda c: _fmt_num(c.gflops)),
    "origin": ("origin", False, lambda c: c.origin),
    "license": ("license", False, lambda c: c.license or "-"),
}
_SEARCH_DEFAULT = ("id", "source", "origin", "top1", "params", "gflops", "input", "license")
_DROP_ORDER = ("license", "origin", "gflops", "input", "source")  # first dropped first


def _table(cards: Any, columns: Sequence[str], width: int | None) -> list[str]:
    """Plain-text table lines. Fits ``width`` by dropping columns (``_DROP_ORDER``), then
    shortening the licence; ids and numbers are never cut. Lines carry no trailing spaces."""
    cols = list(columns)
    cells = {k: [_SEARCH_COLUMNS[k][2](c) for c in cards] for k in cols}
    widths = {k: max([len(_SEARCH_COLUMNS[k][0])] + [len(v) for v in cells[k]]) for k in cols}

    def total() -> int:
        return sum(widths[k] for k in cols) + 2 * (len(cols) - 1)

    if width is not None:
        for k in _DROP_ORDER:
            if total() <= width:
                break
            if k in cols and len(cols) > 1 and k != "id":
                if k == "license" and cols[-1] == k:
                    room = width - (total() - widths[k])
                    if room >= 10:  # keep a shortened licence rather than dropping it
                        widths[k] = room
                        cells[k] = [v if len(v) <= room else v[: room - 1] + "~" for v in cells[k]]
                        break
                cols.remove(k)
    lines = []
    for row in [None, *range(len(cards))]:
        parts = []
        for k in cols:
            head, right, _ = _SEARCH_COLUMNS[k]
            v = head if row is None else cells[k][row]
            parts.append(v.rjust(widths[k]) if right else v.ljust(widths[k]))
        lines.append("  ".join(parts).rstrip())
    return lines


def _kv(rows: list[tuple[str, str]], width: int | None) -> list[str]:
    """``label  value`` lines; prose wraps at ``width`` (never inside a word, URL or hash)."""
    import textwrap

    pad = max(len(k) for k, _ in rows) + 2
    out = []
    for k, v in rows:
        if width and len(v) > width - pad and " " in v:
            wrapped = textwrap.wrap(
                v, max(20, width - pad), break_long_words=False, break_on_hyphens=False
            ) or [v]
        else:
            wrapped = [v]
        out.append((k.ljust(pad) + wrapped[0]).rstrip())
        out.extend(" " * pad + w for w in wrapped[1:])
    return out


def _metric_str(m: Any) -> str:
    text = f"{m.value:g} on {m.dataset}"
    res, crop = getattr(m, "resolution", None), getattr(m, "crop_pct", None)
    if res:
        text += f" at {res} px"
    if crop:
        text += f", crop {crop:.3g}"
    return text
