"""Definitions from declarations + a deployment profile (resources and executor are configuration)."""

from __future__ import annotations

import os

import dagster as dg

from assets.factory import build_pipeline_assets, build_pipeline_automation
from assets.resources import JsonIOManager, MlflowLineage
from edgeops.asset_store import AssetStore
from edgeops.settings import Settings
from edgeops.spec import discover_declarations
from pipelines.jobs import build_failure_sensor, build_release_jobs


def resources_for(settings: Settings) -> dict:
    return {
        "lineage": MlflowLineage(
            tracking_uri=settings.mlflow_tracking_uri, artifact_root=settings.mlflow_artifact_root
        ),
        "io_manager": JsonIOManager(base_dir=str(AssetStore.under_home(settings.home).root)),
    }


def executor_from_environment() -> dg.ExecutorDefinition:
    """The executor is a deployment choice, read when the definitions load: EDGEOPS_EXECUTOR = in_process (default:
    the multiprocess executor costs seconds per step on a 2-core machine), multiprocess, or celery (broker from
    EDGEOPS_CELERY_BROKER, results backend from EDGEOPS_CELERY_BACKEND)."""
    name = os.environ.get("EDGEOPS_EXECUTOR", "in_process")
    if name == "in_process":
        return dg.in_process_executor
    if name == "multiprocess":
        return dg.multiprocess_executor
    if name == "celery":
        from dagster_celery import celery_executor

        return celery_executor.configured(
            {
                "broker": os.environ.get("EDGEOPS_CELERY_BROKER", "pyamqp://guest:guest@127.0.0.1:5672//"),
                "backend": os.environ.get("EDGEOPS_CELERY_BACKEND", "rpc://"),
                "include": ["pipelines.definitions"],
            }
        )
    raise ValueError(f"EDGEOPS_EXECUTOR={name!r}: use in_process, multiprocess or celery")


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
        executor=executor or executor_from_environment(),
    )
