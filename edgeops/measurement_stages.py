"""The three stages that measure one target's artifact (benchmark, robustness, trainability), each with its MLflow
evidence: the Dagster assets and `edgeops bench` call the same function inside a stage run, so both leave the same
record, metrics and tags. Plain Python, no dagster import."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from edgeops.lineage import artifact_tags

if TYPE_CHECKING:
    from edgeops.lineage import LineageRun
    from edgeops.records import (
        BenchmarkRecord,
        DatasetRef,
        DpModel,
        RobustnessRecord,
        TargetArtifact,
        TrainabilityRecord,
    )
    from edgeops.spec import Declaration, PipelineSpec, TargetSpec

BENCHMARK_RECORD_ARTIFACT = "benchmark/record.json"
TRAINABILITY_RECORD_ARTIFACT = "personalization/trainability.json"


def run_benchmark_stage(
    spec: PipelineSpec,
    target: TargetSpec,
    compressed: TargetArtifact,
    dataset: DatasetRef,
    run: LineageRun,
    *,
    root: Path,
) -> tuple[BenchmarkRecord, dict[str, tuple[bool | None, str]]]:
    """Benchmark the artifact on the target's device and log the evidence: the whole record, its metrics (when
    measured), the device and outcome as params, the on-device numbers on the target's LoggedModel, the artifact's
    tags, and each budget's outcome on the registered version. Returns the record and the latency/memory outcomes.

    On a device other than the declared one (`edgeops bench --device`), the numbers describe that device, not the
    target: they stay on this run, and neither the LoggedModel nor the registered version's check tags change."""
    from edgeops.hil.bench import benchmark_target, latency_memory_outcomes
    from edgeops.records import benchmark_metrics
    from edgeops.registry import log_on_device_metrics, tag_version

    record = benchmark_target(spec, target, compressed, dataset, root=root).model_copy(
        update={"mlflow_run_id": run.run_id}
    )
    run.log_json(record.to_json(), BENCHMARK_RECORD_ARTIFACT)
    if record.measured:
        run.log_metrics(benchmark_metrics(record))
    run.log_params({"device": target.device, "measured": record.measured, "reason": record.reason or ""})
    run.set_tags(artifact_tags(target.name, compressed.sha256))
    outcomes = latency_memory_outcomes(record, target)
    if target.device != spec.target(target.name).device:
        return record, outcomes
    log_on_device_metrics(run, compressed, record, dataset, spec.name)
    tag_version(
        run.client,
        compressed.registered_model,
        compressed.registered_version,
        {
            f"edgeops.check.{name}": "not_measured" if ok is None else "passed" if ok else "failed"
            for name, (ok, _) in outcomes.items()
        },
    )
    return record, outcomes


def run_robustness_stage(
    spec: PipelineSpec,
    target: TargetSpec,
    dp_model: DpModel,
    compressed: TargetArtifact,
    dataset: DatasetRef,
    run: LineageRun,
) -> tuple[RobustnessRecord, dict[str, float]]:
    """FGSM and PGD crafted on the float DP model, replayed on the artifact; logs the accuracies and the artifact's
    tags. Returns the record and the metrics logged."""
    from edgeops.records import RobustnessRecord
    from edgeops.robustness import CLEAN_ACCURACY, measure_robustness, metric_names

    measurement = measure_robustness(spec, dp_model, compressed, dataset)
    metrics = {CLEAN_ACCURACY: measurement.clean_accuracy}
    for budget in measurement.budgets:
        fgsm, pgd = metric_names(budget.epsilon_fraction_of_span)
        metrics |= {fgsm: budget.fgsm_accuracy, pgd: budget.pgd_accuracy}
    run.log_metrics(metrics)
    run.set_tags(artifact_tags(target.name, compressed.sha256))
    record = RobustnessRecord(
        **dict(measurement), mlflow_run_id=run.run_id, artifact_sha256=compressed.sha256, target=target.name
    )
    return record, metrics


def run_trainability_stage(
    declaration: Declaration, target: TargetSpec, compressed: TargetArtifact, dataset: DatasetRef, run: LineageRun
) -> TrainabilityRecord:
    """The device agent's fine-tuning run on the artifact against simulated local data; logs the record, the artifact's
    tags and, when fine-tuned, the recovery, time and memory."""
    from edgeops.personalization import measure_trainability

    record = measure_trainability(declaration, target, compressed.artifact_path, dataset)
    run.log_json(record.to_json(), TRAINABILITY_RECORD_ARTIFACT)
    run.set_tags(artifact_tags(target.name, compressed.sha256))
    metrics = record.metrics()
    if metrics:
        run.log_metrics(metrics)
    return record
