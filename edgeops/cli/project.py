"""`edgeops init` and `edgeops doctor`: commands about the project folder and a declaration before any run."""

from __future__ import annotations

from pathlib import Path

import click

from edgeops.cli.common import settings_and_declaration


@click.command("init")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--force", is_flag=True, help="overwrite the scaffold's files where they exist")
def init(folder: Path, force: bool) -> None:
    """Scaffold a project in FOLDER: pipelines/ (a commented, runnable example), expectations/, data/,
    workspace.yaml."""
    from edgeops.project import EXAMPLE_PIPELINE, init_project

    written = init_project(folder, force=force)
    root = folder.resolve()
    for path in written:
        click.echo(f"wrote {path.relative_to(root)}")
    click.echo(
        f"\nedgeops project in {root}. Next:\n  cd {folder}\n  edgeops doctor --pipeline {EXAMPLE_PIPELINE}\n"
        f"  edgeops run --pipeline {EXAMPLE_PIPELINE}"
    )


@click.command("doctor")
@click.option("--pipeline", required=True)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def doctor(pipeline: str, as_json: bool) -> None:
    """Before any training: rows per split, the delta bound, the DP noise per step, what each step costs in epsilon,
    whether the budget covers every target's fine-tuning, and warnings (with numbers) when the data is too small."""
    import json

    from edgeops.asset_store import AssetStore
    from edgeops.doctor import diagnose
    from edgeops.ledger import ledger_for
    from edgeops.lineage import STAGE_VALIDATED

    settings, declaration = settings_and_declaration(pipeline)
    privacy = declaration.spec.privacy
    ledger_file = settings.pipeline_dir(pipeline) / "privacy_ledger.sqlite"
    summary = (
        ledger_for(settings.pipeline_dir(pipeline), privacy.epsilon, privacy.delta).summary()
        if ledger_file.exists()
        else None
    )
    validated = AssetStore.under_home(settings.home).read_if_present(pipeline, STAGE_VALIDATED)
    statistics = validated.get("dp_statistics") if validated else None
    report = diagnose(declaration, summary, statistics)
    if as_json:
        click.echo(
            json.dumps(
                {
                    **report.__dict__,
                    "costs": [c.model_dump() for c in report.costs],
                    "run_epsilon": report.run_epsilon,
                    "budget_covers_run": report.budget_covers_run,
                },
                indent=2,
                default=str,
            )
        )
        return
    for line in report.lines():
        click.echo(line)
