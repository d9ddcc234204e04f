"""Monitoring stage: one drift report per incoming batch (dynamic partitions), a sensor that registers complete new
batches on arrival, a schedule that re-checks, and a retraining sensor that respects the privacy budget.

Every sensor and schedule here is declared RUNNING: Dagster starts undeclared ones STOPPED, and a user who starts the
daemon (`make ui`) expects the monitoring the README describes to run. `dagster sensor stop NAME -w workspace.yaml`
turns one off on an instance; that choice is kept in the instance and wins over the declared default."""

import os
import time

import dagster as dg

from assets.common import AssetFactoryContext, edgeops_failure
from assets.resources import MlflowLineage
from edgeops.asset_store import ASSET_DP_BASELINE, ASSET_NONPRIVATE_REFERENCE, ASSET_PRIVACY_AUDIT
from edgeops.records import DatasetRef, DpModel, DriftQuarantined

SENSOR_INTERVAL_ENV = "EDGEOPS_SENSOR_INTERVAL_S"


def sensor_interval(default: int) -> int:
    """Seconds between sensor evaluations: the declared default, or EDGEOPS_SENSOR_INTERVAL_S when the definitions
    load (a test or a demo shortens it; read here, never at import time)."""
    raw = os.environ.get(SENSOR_INTERVAL_ENV)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{SENSOR_INTERVAL_ENV}={raw!r}: expected a whole number of seconds") from None
    if value < 1:
        raise ValueError(f"{SENSOR_INTERVAL_ENV}={raw!r}: expected at least 1 second")
    return value


def batches_partitions(ctx: AssetFactoryContext) -> dg.DynamicPartitionsDefinition:
    return dg.DynamicPartitionsDefinition(name=f"{ctx.declaration.spec.name}_batches")


def build_monitoring_assets(ctx: AssetFactoryContext) -> list:
    declaration, spec = ctx.declaration, ctx.declaration.spec
    key = ctx.key("drift_report")
    partitions = batches_partitions(ctx)
    severity = dg.AssetCheckSeverity.ERROR if spec.monitoring.severity == "fail" else dg.AssetCheckSeverity.WARN

    @dg.asset(
        key=key,
        group_name=ctx.group("monitoring"),
        owners=spec.owners,
        kinds={"evidently", "mlflow"},
        partitions_def=partitions,
        ins={"dataset": dg.AssetIn(ctx.key("validated_dataset")), "dp_model": dg.AssetIn(ctx.key("dp_model"))},
        code_version=declaration.sha256[:12],
        check_specs=[
            dg.AssetCheckSpec(
                "batch_valid",
                asset=key,
                description="The batch passes the dataset's schema, bounds and label checks "
                "(a bad batch is quarantined with its report).",
            ),
            dg.AssetCheckSpec(
                "no_drift",
                asset=key,
                description=f"No drift against the training reference ({spec.monitoring.severity} on drift).",
            ),
        ],
        description=f"Evidently drift report of one batch from {spec.incoming_folder()}: feature drift, prediction "
        "drift of the released model, embedding and pixel-statistic drift for images, accuracy when labelled.",
    )
    def drift_report(context: dg.AssetExecutionContext, lineage: MlflowLineage, dataset: DatasetRef, dp_model: DpModel):
        from edgeops.drift import run_drift_stage

        with edgeops_failure(), lineage.stage_run(context, declaration, "drift_report") as run:
            result = run_drift_stage(
                declaration,
                context.partition_key,
                dataset,
                dp_model,
                ctx.settings.pipeline_dir(spec.name) / "monitoring",
                run,
            )
            drift = (
                ""
                if isinstance(result, DriftQuarantined)
                else f", drift detected: {'; '.join(result.reasons)}"
                if result.drift_detected
                else ", drift not detected"
            )
            context.log.info(f"batch {context.partition_key}: {result.status}{drift}")
        metadata = {"status": result.status}
        if isinstance(result, DriftQuarantined):
            metadata["quarantine"] = dg.MetadataValue.path(result.quarantine)
        else:
            metadata.update(
                {
                    "drift_detected": result.drift_detected,
                    "report": dg.MetadataValue.path(result.html_report),
                    "summary": dg.MetadataValue.json(
                        result.model_dump(
                            include={
                                "reasons",
                                "feature_drift_share",
                                "embedding_drift_share",
                                "accuracy_on_batch",
                                "rows_in_batch",
                                "rows_sampled",
                            }
                        )
                    ),
                }
            )
        yield dg.Output(result, metadata=metadata)
        problems = result.problems if isinstance(result, DriftQuarantined) else []
        yield dg.AssetCheckResult(
            check_name="batch_valid",
            passed=not problems,
            severity=dg.AssetCheckSeverity.ERROR,
            description="batch valid"
            if not problems
            else f"quarantined: {problems[0].issue} (+{len(problems) - 1} more)",
            metadata={"problems": dg.MetadataValue.json([p.model_dump() for p in problems[:10]])},
        )
        if isinstance(result, DriftQuarantined):
            yield dg.AssetCheckResult(
                check_name="no_drift",
                passed=False,
                severity=dg.AssetCheckSeverity.WARN,
                description="not evaluated: the batch was quarantined (see batch_valid)",
            )
        else:
            yield dg.AssetCheckResult(
                check_name="no_drift",
                passed=not result.drift_detected,
                severity=severity,
                description="; ".join(result.reasons) or "no drift",
                metadata={"drift_detected": result.drift_detected},
            )

    return [drift_report]


def build_monitoring_automation(ctx: AssetFactoryContext) -> tuple[list, list]:
    """(sensors, schedules) for one pipeline."""
    declaration, spec = ctx.declaration, ctx.declaration.spec
    key = ctx.key("drift_report")
    partitions_name = f"{spec.name}_batches"
    job = dg.define_asset_job(f"{spec.name}_drift_job", selection=[key], partitions_def=batches_partitions(ctx))

    def new_batch_requests(context) -> list[dg.RunRequest]:
        from edgeops.drift import batch_key, complete_batches

        folder = declaration.resolve(spec.incoming_folder())
        known = set(context.instance.get_dynamic_partitions(partitions_name))
        seen_content = {
            k.rsplit("-", 1)[-1] for k in known
        }  # the same bytes under another name are not processed again
        fresh = []
        for path in complete_batches(folder, spec.monitoring.settle_seconds, time.time()):
            batch = batch_key(path)
            content = batch.rsplit("-", 1)[-1]
            if content not in seen_content:
                fresh.append(batch)
                seen_content.add(content)
        if fresh:
            context.instance.add_dynamic_partitions(partitions_name, fresh)
        return [dg.RunRequest(run_key=batch, partition_key=batch) for batch in fresh]

    @dg.sensor(
        name=f"{spec.name}_incoming_batches",
        job=job,
        minimum_interval_seconds=sensor_interval(30),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"On arrival: registers each complete new file in {spec.incoming_folder()} as a batch partition "
        "(keyed by content hash, so a file seen twice runs once) and requests its drift report.",
    )
    def incoming(context: dg.SensorEvaluationContext):
        requests = new_batch_requests(context)
        return requests or dg.SkipReason(f"no new complete batch in {spec.incoming_folder()}")

    @dg.schedule(
        name=f"{spec.name}_drift_recheck",
        cron_schedule=spec.monitoring.schedule,
        job=job,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Scheduled re-check: registers batches the sensor has not seen and re-runs the five newest drift "
        "reports against the current model.",
    )
    def recheck(context: dg.ScheduleEvaluationContext):
        new = new_batch_requests(context)
        latest = context.instance.get_dynamic_partitions(partitions_name)[-5:]
        stamp = context.scheduled_execution_time.isoformat() if context.scheduled_execution_time else str(time.time())
        return new + [
            dg.RunRequest(run_key=f"{b}@{stamp}", partition_key=b)
            for b in latest
            if b not in {r.partition_key for r in new}
        ]

    sensors = [incoming]
    if spec.monitoring.on_drift == "retrain":
        upstream = [
            ctx.key(n)
            for n in (
                "raw_dataset",
                "validated_dataset",
                "dp_model",
                ASSET_DP_BASELINE,
                ASSET_NONPRIVATE_REFERENCE,
                ASSET_PRIVACY_AUDIT,
            )
        ]
        retrain_job = dg.define_asset_job(f"{spec.name}_retrain_job", selection=dg.AssetSelection.assets(*upstream))

        @dg.sensor(
            name=f"{spec.name}_retrain_on_drift",
            job=retrain_job,
            minimum_interval_seconds=sensor_interval(60),
            default_status=dg.DefaultSensorStatus.RUNNING,
            description="On a drift report that flags drift: requests retraining (data, DP training, audit) if the "
            "privacy ledger has budget left for it; compression, benchmarks and card follow by automation conditions.",
        )
        def retrain(context: dg.SensorEvaluationContext):
            from edgeops.ledger import ledger_for
            from edgeops.privacy.accounting import run_refusal

            # Oldest first, so the cursor advances to the newest record seen (the default order is newest first).
            events = context.instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=key, after_storage_id=int(context.cursor or 0)),
                limit=100,
                ascending=True,
            )
            flagged = [
                r
                for r in events.records
                if r.asset_materialization
                and r.asset_materialization.metadata.get("drift_detected")
                and r.asset_materialization.metadata["drift_detected"].value
            ]
            if events.records:
                context.update_cursor(str(events.records[-1].storage_id))
            if not flagged:
                return dg.SkipReason("no new drift")
            # Every step the retrain will charge (DP statistics, training, baseline, each target's fine-tuning and
            # distillation that compression runs after it), in epsilon and delta.
            refusal = run_refusal(
                spec, ledger_for(ctx.settings.pipeline_dir(spec.name), spec.privacy.epsilon, spec.privacy.delta)
            )
            if refusal:
                return dg.SkipReason(f"drift detected, but {refusal}")
            return dg.RunRequest(run_key=f"retrain-{flagged[-1].storage_id}")

        sensors.append(retrain)
    sensors.append(automation_sensor(ctx))
    return sensors, [recheck]


def automation_sensor(ctx: AssetFactoryContext) -> dg.AutomationConditionSensorDefinition:
    """Evaluates this pipeline's automation conditions (compression, benchmarks and card after a retrain). Declared
    here, RUNNING, because Dagster's implicit default_automation_condition_sensor starts STOPPED."""
    spec = ctx.declaration.spec
    return dg.AutomationConditionSensorDefinition(
        f"{spec.name}_automation",
        target=dg.AssetSelection.key_prefixes([spec.name]),
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=sensor_interval(30),
        description=f"Runs {spec.name}'s assets whose automation condition is due: after a new DP model, each target's "
        "compression, benchmarks and robustness, then the card, once every upstream blocking check passed.",
    )
