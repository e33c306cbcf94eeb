"""The `zoo` command: a thin click layer over zoo.api, one module per command group (as
huggingface_hub's ``cli/``). No heavy imports at module level: each command imports what it needs."""

from __future__ import annotations

import sys

import click

from zoo.cli import convert, demo, features, finetune, mirror, pull, register, report, reuse, search, serve  # noqa: F401  (each adds its commands)
from zoo.cli._app import cli
from zoo.errors import ZooError

__all__ = ["cli", "main"]


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning ZooError into one line on stderr and an exit code."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        cli.main(args=argv, prog_name="zoo", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("zoo: aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except ZooError as e:
        if debug:
            raise
        click.echo(f"zoo: error: {e}", err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("zoo: interrupted", err=True)
        sys.exit(130)
    except OSError as e:
        if debug:
            raise
        click.echo(f"zoo: error: {e.strerror or e}" + (f": {e.filename}" if e.filename else ""), err=True)
        sys.exit(1)
