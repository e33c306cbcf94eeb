"""The `zoo` click group every command module adds itself to, and the shared option types."""

from __future__ import annotations

from typing import Any

import click


class Count(click.ParamType):
    """A number with an optional K/M/G suffix (``25M`` = 25,000,000)."""

    name = "count"
    _mult = {"k": 1e3, "m": 1e6, "g": 1e9}

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        if isinstance(value, (int, float)):
            return float(value)
        s = str(value).strip().lower()
        try:
            if s and s[-1] in self._mult:
                return float(s[:-1]) * self._mult[s[-1]]
            return float(s)
        except ValueError:
            self.fail(f"{value!r} is not a number like 25e6 or 25M", param, ctx)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.version_option(package_name="zoo", prog_name="zoo")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """zoo: find, download, convert and reuse pretrained models.

    One index of Keras Applications, torchvision, Caffe (and Caffe-converted) and timm models;
    checksums always verified; conversion to PyTorch / ONNX with explicit layer maps.
    """
    ctx.obj = {"debug": debug}
