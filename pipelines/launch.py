"""Materialize pipelines through the project's Dagster instance, so command-line runs show in the UI.

Per pipeline: the unpartitioned stages first, then each target partition (compression, benchmarks), then the
stages that gather every target (cards). A failed group stops that pipeline; other pipelines still run.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from dataclasses import dataclass, field

import dagster as dg

from edgeops.lineage import PIPELINE_RUN_DAGSTER_TAG
from edgeops.progress import advance
from edgeops.settings import Settings
from pipelines.instance import ensure_instance
from pipelines.wiring import build_definitions, resources_for


@dataclass
class PipelineRunReport:
    pipeline: str
    runs: list[dict] = field(default_factory=list)  # {"run_id", "partition", "success", "failed_steps", "skipped"}

    @property
    def success(self) -> bool:
        """Every run succeeded."""
        return bool(self.runs) and all(r["success"] for r in self.runs)

    @property
    def core_success(self) -> bool:
        """The shared chain (data, training, cards) succeeded; individual targets may still miss their budgets."""
        return bool(self.runs) and all(r["success"] for r in self.runs if r["partition"] is None)

    def failures(self) -> list[dict]:
        """Each failed Dagster run, short: its partition, failed steps with their reasons, and failed checks."""
        return [
            {key: run.get(key) for key in ("partition", "errors", "failed_checks", "skipped_steps")}
            for run in self.runs
            if not run["success"]
        ]


def _pipeline_assets(defs: dg.Definitions, pipeline: str):
    graph = defs.resolve_asset_graph()
    # Batch-partitioned assets (drift reports) run when batches arrive, through the sensor: not part of a pipeline run.
    assets = [
        a
        for a in defs.assets
        if isinstance(a, dg.AssetsDefinition)
        and a.key.path[0] == pipeline
        and not isinstance(a.partitions_def, dg.DynamicPartitionsDefinition)
    ]
    checks = [c for c in defs.asset_checks or [] if next(iter(c.check_keys)).asset_key.path[0] == pipeline]
    partitioned = {a.key for a in assets if a.partitions_def is not None}
    after = {
        a.key
        for a in assets
        if a.key not in partitioned
        and graph.get(a.key).parent_keys
        and any(p in partitioned for p in graph.upstream_key_iterator(a.key))
    }
    return assets, checks, partitioned, after


def _execute(defs, settings, instance, assets, checks, keys, partition, tags):
    """In-process (the embedded default): materialize() in this process. Any other executor (celery, multiprocess):
    a reconstructable job, so steps can run in other processes or on other machines with the same code."""
    if os.environ.get("EDGEOPS_EXECUTOR", "in_process") == "in_process":
        # The console logger only: every event still goes to the instance's event log (and the UI) at DEBUG.
        console = {
            "loggers": {"console": {"config": {"log_level": os.environ.get("EDGEOPS_CONSOLE_LOG_LEVEL", "DEBUG")}}}
        }
        # The batch-partitioned drift reports never run here, but the card reads them (every batch so far): they
        # are passed unselected, to be loaded as inputs.
        batches = [
            a
            for a in defs.assets
            if isinstance(a, dg.AssetsDefinition)
            and a.key.path[0] == keys[0].path[0]
            and isinstance(a.partitions_def, dg.DynamicPartitionsDefinition)
        ]
        return dg.materialize(
            [*assets, *batches, *checks],
            selection=keys,
            instance=instance,
            resources=resources_for(settings),
            partition_key=partition,
            raise_on_error=False,
            tags=tags,
            run_config=console,
        )
    from dagster._core.definitions.reconstruct import ReconstructableRepository

    repository = ReconstructableRepository.for_module("pipelines.definitions", "defs", str(settings.root))
    job = repository.get_reconstructable_job("__ASSET_JOB")
    run_tags = {**tags, **({"dagster/partition": partition} if partition else {})}
    with dg.execute_job(
        job, instance=instance, tags=run_tags, asset_selection=list(keys), raise_on_error=False
    ) as result:
        result.all_events  # noqa: B018 - read the events while the result's instance is open
        return result


def _reason(event) -> str:
    """A failed step's own message: a Failure's description (the project's errors), else the error's first line."""
    data = event.step_failure_data
    if data.user_failure_data is not None and data.user_failure_data.description:
        return data.user_failure_data.description
    return (data.error.message or "").strip().splitlines()[0][:500] if data.error else "unknown"


def _checks(result) -> list[dict]:
    """Every check evaluated in a run: its asset, name, outcome and description (the reason, for a failed or a
    not-measured check)."""
    out = []
    for event in result.all_events:
        if event.event_type_value == "ASSET_CHECK_EVALUATION":
            data = event.asset_check_evaluation_data
            out.append(
                {
                    "asset": data.asset_key.path[-1],
                    "check": data.check_name,
                    "passed": bool(data.passed),
                    "severity": data.severity.value if data.severity else None,
                    "description": data.description or "",
                }
            )
    return out


def write_event_log(instance, run_id: str, path) -> None:
    """Append one Dagster run's event log (every event, DEBUG included: what the console showed before) to a file."""
    import logging

    with open(path, "a", encoding="utf-8") as out:
        for entry in instance.all_logs(run_id):
            when = dt.datetime.fromtimestamp(entry.timestamp).isoformat(timespec="milliseconds")
            kind = entry.dagster_event.event_type_value if entry.dagster_event else "LOG"
            message = (
                entry.user_message or (entry.dagster_event.message if entry.dagster_event else "") or ""
            ).replace("\n", "\n    ")
            out.write(
                f"{when} {logging.getLevelName(entry.level):7} {run_id[:8]} {entry.step_key or '-'} {kind} {message}\n"
            )


def run_pipelines(
    settings: Settings,
    pipeline: str | None = None,
    select: list[str] | None = None,
    tags: dict | None = None,
    event_log=None,
) -> list[PipelineRunReport]:
    """`event_log`: a file each Dagster run's event log is appended to (the CLI's default; the UI keeps them too)."""
    instance = ensure_instance(settings)
    defs = build_definitions(settings)
    names = sorted({a.key.path[0] for a in defs.assets})
    if pipeline:
        if pipeline not in names:
            raise SystemExit(f"unknown pipeline {pipeline!r}; declared: {names}")
        names = [pipeline]
    reports = []
    for name in names:
        assets, checks, partitioned, after = _pipeline_assets(defs, name)
        wanted = {a.key for a in assets}
        if select:
            wanted = {k for k in wanted if k.path[-1] in select or k.to_user_string() in select}
        before_keys = [k for k in wanted if k not in partitioned and k not in after]
        report = PipelineRunReport(name)
        # One pipeline run in MLflow for this invocation: every Dagster run below nests its stages under one parent.
        started = dt.datetime.now().isoformat(timespec="seconds")
        pipeline_tags = {**(tags or {}), PIPELINE_RUN_DAGSTER_TAG: f"{uuid.uuid4().hex[:12]}@{started}"}
        groups: list[tuple[list, str | None]] = [(before_keys, None)]
        partition_keys = sorted(
            {
                p
                for a in assets
                if a.key in partitioned and a.key in wanted
                for p in a.partitions_def.get_partition_keys()
            }
        )
        groups += [([k for k in wanted if k in partitioned], p) for p in partition_keys]
        groups.append(([k for k in wanted if k in after], None))
        groups = [(keys, partition) for keys, partition in groups if keys]
        for index, (keys, partition) in enumerate(groups):
            # Per target, its compression, benchmark and robustness run as one Dagster run: the bar counts those runs.
            advance(f"{name}: dagster runs", index, len(groups), f"running {partition or 'shared stages'}")
            result = _execute(defs, settings, instance, assets, checks, keys, partition, pipeline_tags)
            failures = [e for e in result.all_events if e.is_step_failure]
            failed = [e.step_key for e in failures]
            skipped = [e.step_key for e in result.all_events if e.is_step_skipped]
            evaluated = _checks(result)
            report.runs.append(
                {
                    "run_id": result.run_id,
                    "partition": partition,
                    "success": result.success,
                    "failed_steps": failed,
                    "skipped_steps": skipped,
                    "errors": {e.step_key: _reason(e) for e in failures},
                    "checks": evaluated,
                    "failed_checks": [c["check"] for c in evaluated if not c["passed"]],
                }
            )
            if event_log is not None:
                write_event_log(instance, result.run_id, event_log)
            advance(
                f"{name}: dagster runs",
                index + 1,
                len(groups),
                f"{partition or 'shared stages'}: {'ok' if result.success else 'FAILED'}",
            )
            if not result.success and partition is None:
                break  # later groups depend on this one
        reports.append(report)
    return reports
