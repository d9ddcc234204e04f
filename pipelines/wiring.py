"""Definitions from declarations + a deployment profile (resources and executor are configuration)."""

from __future__ import annotations

import dagster as dg

from assets.factory import build_pipeline_assets, build_pipeline_automation
from assets.resources import JsonIOManager, MlflowLineage
from edgeops.settings import Settings
from pipelines.jobs import build_failure_sensor, build_release_jobs
from edgeops.spec import discover_declarations


def resources_for(settings: Settings) -> dict:
    return {
        "lineage": MlflowLineage(tracking_uri=settings.mlflow_tracking_uri, artifact_root=settings.mlflow_artifact_root),
        "io_manager": JsonIOManager(base_dir=str(settings.home / "assets")),
    }


def build_definitions(settings: Settings, executor: dg.ExecutorDefinition | None = None) -> dg.Definitions:
    declarations = discover_declarations(settings.pipelines_dir)
    assets_and_checks: list = []
    sensors: list = []
    schedules: list = []
    for declaration in declarations:
        assets_and_checks += build_pipeline_assets(declaration, settings)
        pipeline_sensors, pipeline_schedules = build_pipeline_automation(declaration, settings)
        sensors += pipeline_sensors
        schedules += pipeline_schedules
    return dg.Definitions(
        assets=[a for a in assets_and_checks if not isinstance(a, dg.AssetChecksDefinition)],
        asset_checks=[a for a in assets_and_checks if isinstance(a, dg.AssetChecksDefinition)],
        jobs=build_release_jobs(settings),
        sensors=[*sensors, build_failure_sensor(settings)],
        schedules=schedules,
        resources=resources_for(settings),
        executor=executor or dg.in_process_executor,
    )
