"""The `zoo` click group every command module adds itself to, and the shared option types."""

from __future__ import annotations

from typing import Any

import click

from zoo.errors import missing_extra, require


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


class ZooGroup(click.Group):
    """The ``zoo`` group: the one place where a missing optional extra becomes MissingExtra.

    A command whose import of a known extra's module fails (``import torch`` without torch) raises
    MissingExtra naming the extra, which main() prints as one line. Commands in NEEDS are checked
    before they start, so ``zoo convert keras/vgg16`` without torch fails before a 528 MB pull.
    """

    # command -> (extra, module...): require()d, without importing, before the command starts
    NEEDS: dict[str, tuple[str, ...]] = {"convert": ("torch", "torch"), "verify": ("torch", "torch")}

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name, cmd, rest = super().resolve_command(ctx, args)
        need = self.NEEDS.get(name or "")
        if need and not ctx.resilient_parsing and not {"-h", "--help"} & set(rest):
            require(*need, what=f"zoo {name}")
        return name, cmd, rest

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ModuleNotFoundError as e:
            sub = ctx.invoked_subcommand
            err = missing_extra(e, what=f"zoo {sub}" if sub else None)
            if err is None:
                raise
            raise err from e


@click.group(cls=ZooGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.version_option(package_name="zoo", prog_name="zoo")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """zoo: find, download, convert and reuse pretrained models.

    One index of Keras Applications, torchvision, Caffe (and Caffe-converted) and timm models;
    checksums always verified; conversion to PyTorch / ONNX with explicit layer maps.
    """
    ctx.obj = {"debug": debug}
