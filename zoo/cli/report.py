"""`zoo report RUN_DIR`: the summary of a fine-tuning run or an evaluation from its metrics.json
(zoo.report.summary); nothing heavy is imported."""

from __future__ import annotations

import json

import click

from zoo.cli._app import cli


@cli.command()
@click.argument("run_dir")
@click.option("--json", "as_json", is_flag=True, help="Print metrics.json's final summary as JSON.")
def report(run_dir: str, as_json: bool) -> None:
    """The summary of RUN_DIR (written by zoo finetune or zoo evaluate): accuracy, best epoch,
    best and worst classes, the report files and the path of report.html."""
    from pathlib import Path

    from zoo.report import load_metrics, summary

    if as_json:
        click.echo(json.dumps(load_metrics(Path(run_dir))["final"], indent=1, ensure_ascii=False))
        return
    click.echo(summary(Path(run_dir)))
