"""What the command groups share: how the project's errors are printed, and how a command finds its pipeline.

Only click and light project modules are imported here, so `edgeops --help` stays instant."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from edgeops.errors import EdgeopsError
from edgeops.settings import Settings

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from edgeops.records import DatasetRef
    from edgeops.spec import Declaration


def fail(err: Exception) -> None:
    click.echo(f"error: {err}", err=True)
    sys.exit(2)


class ProjectErrorGroup(click.Group):
    """Prints the project's own errors without a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except EdgeopsError as err:
            fail(err)


def settings_and_declaration(pipeline: str) -> tuple[Settings, Declaration]:
    from edgeops.spec import load_declaration

    settings = Settings.resolve()
    file = settings.pipelines_dir / f"{pipeline}.yaml"
    if not file.exists():
        raise EdgeopsError(f"no declaration {file}")
    return settings, load_declaration(file, settings.root)


def mlflow_client(settings: Settings) -> MlflowClient:
    from edgeops.lineage import Lineage

    return Lineage(settings.mlflow_tracking_uri, settings.mlflow_artifact_root).client


def validated_dataset(settings: Settings, pipeline: str) -> DatasetRef:
    from edgeops.asset_store import AssetStore

    return AssetStore.under_home(settings.home).validated_dataset(pipeline)
