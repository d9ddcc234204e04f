"""The `edgeops` command, one module per command group. Heavy libraries are imported inside each command, so
`--help` is instant.

Commands that need Dagster reach it through pipelines/ (importlib), keeping the core free of dagster imports."""

from __future__ import annotations

import click

from edgeops.cli import agent, bench, cards, drift, lineage, pipeline, privacy, project, release
from edgeops.cli.common import ProjectErrorGroup
from edgeops.settings import quiet_third_parties


@click.group(cls=ProjectErrorGroup)
def main() -> None:
    """edgeops: declarative MLOps for on-device deep learning."""
    quiet_third_parties()


main.add_command(pipeline.info)
main.add_command(pipeline.spec)
main.add_command(pipeline.expectations)
main.add_command(pipeline.run)
main.add_command(privacy.privacy)
main.add_command(cards.card)
main.add_command(bench.bench)
main.add_command(release.release)
main.add_command(release.rollback_command)
main.add_command(release.attest)
main.add_command(release.bundle)
main.add_command(lineage.lineage_command)
main.add_command(drift.drift)
main.add_command(agent.agent)
main.add_command(project.init)
main.add_command(project.doctor)
