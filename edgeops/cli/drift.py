"""`drift simulate`: shifted batches to exercise drift monitoring."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from edgeops.cli.common import settings_and_declaration, validated_dataset


@click.group()
def drift() -> None:
    """Drift monitoring."""


@drift.command("simulate")
@click.option("--pipeline", required=True)
@click.option(
    "--kind",
    required=True,
    help="images: rotation, noise, brightness, contrast, occlusion; tables: covariate, label; or none",
)
@click.option("--severity", default="medium", help="low, medium, high, or a number in [0, 1]")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path))
@click.option("--batches", default=1, show_default=True)
@click.option("--rows", default=200, show_default=True)
@click.option("--seed", default=0, show_default=True)
def drift_simulate(
    *, pipeline: str, kind: str, severity: str, out_dir: Path, batches: int, rows: int, seed: int
) -> None:
    """Write shifted (or, with --kind none, unshifted) batches drawn from the held-out test split."""
    from edgeops.drift import simulate
    from edgeops.progress import terminal_bars

    settings, declaration = settings_and_declaration(pipeline)
    level = severity if severity in ("low", "medium", "high") else float(severity)
    with terminal_bars(sys.stderr.isatty()):
        paths = simulate(
            declaration,
            validated_dataset(settings, pipeline),
            kind,
            level,
            out_dir,
            batches=batches,
            rows=rows,
            seed=seed,
        )
    for path in paths:
        click.echo(str(path))
