"""`lineage`: trace a model version, artifact or card back to its data and forward to its releases."""

from __future__ import annotations

from pathlib import Path

import click

from edgeops.cli.common import mlflow_client
from edgeops.settings import Settings


@click.command("lineage")
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.option("--dot", "as_dot", is_flag=True, help="Graphviz text (pipe it to `dot -Tsvg`)")
def lineage_command(ref: str, as_json: bool, as_dot: bool) -> None:
    """From a model version (name/version), an artifact sha256 or a card id: back to the split digests and the validated
    run, forward to every benchmark, robustness and trainability run, the card and the releases. Exits 2 when nothing
    matches."""
    from edgeops.trace import LineageNotFound, text_lines, to_dot, trace

    settings = Settings.resolve()
    store = settings.mlflow_tracking_uri
    if store.startswith("sqlite:///") and not Path(store.removeprefix("sqlite:///")).exists():
        raise LineageNotFound(f"no MLflow store at {store} to look up {ref!r} in; run the pipeline first")
    result = trace(mlflow_client(settings), ref)
    if as_json:
        click.echo(result.model_dump_json(indent=2))
    elif as_dot:
        click.echo(to_dot(result), nl=False)
    else:
        for line in text_lines(result):
            click.echo(line)
