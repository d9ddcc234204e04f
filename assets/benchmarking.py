"""Benchmark stage: each target's artifact measured on its declared device (one partition per target).
A concurrency pool per device keeps two benchmarks off one device at once."""

import dagster as dg

from assets.common import AssetFactoryContext, edgeops_failure, follows_upstream
from assets.compression import target_partitions
from assets.resources import MlflowLineage
from edgeops.lineage import STAGE_BENCHMARK, STAGE_ROBUSTNESS, STAGE_TRAINABILITY
from edgeops.records import BenchmarkRecord, DatasetRef, DpModel, RobustnessSkipped, TargetArtifact
from edgeops.report import NOT_MEASURED, not_measured_description


def build_benchmark_assets(ctx: AssetFactoryContext) -> list:
    declaration, spec = ctx.declaration, ctx.declaration.spec
    key = ctx.key("hil_benchmark")
    checks = {
        "latency": "Latency p95 at batch 1 within budgets.max_latency_p95_ms, measured on the declared device.",
        "memory": "Peak resident memory beyond the runtime's baseline within budgets.max_peak_memory_kb.",
    }
    devices = sorted({t.device for t in spec.targets})

    @dg.asset(
        key=key,
        group_name=ctx.group("benchmarking"),
        owners=spec.owners,
        kinds={"onnx", "mlflow"},
        partitions_def=target_partitions(ctx),
        code_version=declaration.sha256[:12],
        automation_condition=follows_upstream(ctx),
        ins={
            "compressed": dg.AssetIn(ctx.key("compressed_model")),
            "dataset": dg.AssetIn(ctx.key("validated_dataset")),
        },
        # Pools are per asset, not per partition: with one device the pool is that device's; with several, all of
        # this pipeline's benchmarks share one pool (stricter than per device, never two on one device at once).
        pool=f"edgeops_device_{devices[0]}" if len(devices) == 1 else f"edgeops_benchmarks_{spec.name}",
        check_specs=[
            dg.AssetCheckSpec(f"{name}_budget", asset=key, blocking=True, description=text)
            for name, text in checks.items()
        ],
        description="Latency percentiles, throughput, peak memory, energy (RAPL where readable) and accuracy, measured "
        "on the target's declared device in a separate process; device facts and a roofline point recorded.",
    )
    def hil_benchmark(
        context: dg.AssetExecutionContext, lineage: MlflowLineage, compressed: TargetArtifact, dataset: DatasetRef
    ):
        from edgeops.measurement_stages import run_benchmark_stage

        target = spec.target(context.partition_key)
        with edgeops_failure(), lineage.stage_run(context, declaration, STAGE_BENCHMARK) as run:
            record, outcomes = run_benchmark_stage(spec, target, compressed, dataset, run, root=declaration.root)
        batch1 = record.batch1
        if batch1 is not None and batch1.measured:
            context.log.info(
                f"{target.name} on {target.device}: p50 {batch1.p50_ms:.4f} ms, p95 {batch1.p95_ms:.4f} ms "
                f"at batch 1 ({batch1.runs} runs); accuracy on the device {record.accuracy_on_device}"
            )
        else:
            context.log.info(f"{target.name} on {target.device}: not measured: {record.reason or 'see the record'}")
        yield dg.Output(record, metadata=benchmark_metadata(record))
        for name, (passed, text) in outcomes.items():
            if passed is None:
                yield dg.AssetCheckResult(
                    check_name=f"{name}_budget",
                    passed=False,
                    severity=dg.AssetCheckSeverity.WARN,
                    description=not_measured_description(f"{text} (target {target.name})"),
                    metadata={"outcome": NOT_MEASURED},
                )
            else:
                yield dg.AssetCheckResult(
                    check_name=f"{name}_budget", passed=passed, description=f"{target.name} on {target.device}: {text}"
                )

    assets = [hil_benchmark]
    if spec.personalization.enabled:
        assets.append(build_trainability_asset(ctx))
    assets.append(build_robustness_asset(ctx))
    return assets


def benchmark_metadata(record: BenchmarkRecord) -> dict:
    """The asset's Dagster metadata: a latency table of the measured batches, the headline numbers, or the reason."""
    metadata: dict = {"measured": record.measured}
    if not record.measured or record.latency is None or record.energy is None:
        metadata["reason"] = record.reason
        return metadata
    columns = ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "throughput_per_s")
    metadata["latency"] = dg.MetadataValue.table(
        [
            dg.TableRecord({"batch": int(b), **{c: round(float(getattr(s, c)), 5) for c in columns}})
            for b, s in record.latency.items()
            if s.measured
        ],
        schema=dg.TableSchema(columns=[dg.TableColumn("batch", "int")] + [dg.TableColumn(c, "float") for c in columns]),
    )
    metadata.update(
        {
            "accuracy_on_device": record.accuracy_on_device,
            "peak_memory_kb": record.peak_rss_beyond_baseline_kb,
            "energy": record.energy.reason or "measured",
            "device": dg.MetadataValue.json(record.device or {}),
            "roofline": dg.MetadataValue.json(record.roofline.to_json() if record.roofline else {}),
        }
    )
    unmeasured = {b: s.reason for b, s in record.latency.items() if not s.measured}
    if unmeasured:
        metadata["batches_not_measured"] = dg.MetadataValue.json(unmeasured)
    return metadata


def build_robustness_asset(ctx: AssetFactoryContext):
    declaration, spec = ctx.declaration, ctx.declaration.spec
    budgets = ", ".join(f"{e:g}" for e in spec.robustness.epsilons)

    @dg.asset(
        key=ctx.key("robustness"),
        group_name=ctx.group("benchmarking"),
        owners=spec.owners,
        kinds={"pytorch", "onnx", "mlflow"},
        partitions_def=target_partitions(ctx),
        code_version=declaration.sha256[:12],
        automation_condition=follows_upstream(ctx),
        ins={
            "compressed": dg.AssetIn(ctx.key("compressed_model")),
            "dp_model": dg.AssetIn(ctx.key("dp_model")),
            "dataset": dg.AssetIn(ctx.key("validated_dataset")),
        },
        description=f"FGSM and PGD ({spec.robustness.pgd_steps} steps) at L-infinity budgets {budgets} of each "
        "feature's span: "
        "crafted on the float DP model, replayed on this target's artifact; accuracy on the attacked test rows.",
    )
    def robustness(
        context: dg.AssetExecutionContext,
        lineage: MlflowLineage,
        compressed: TargetArtifact,
        dp_model: DpModel,
        dataset: DatasetRef,
    ):  # -> RobustnessRecord | RobustnessSkipped: Dagster takes no union as an output type
        from edgeops.measurement_stages import run_robustness_stage

        target = spec.target(context.partition_key)
        if not spec.robustness.enabled:
            skipped = RobustnessSkipped(skipped="robustness.enabled is false", target=target.name)
            context.add_output_metadata({"skipped": skipped.skipped})
            return skipped
        with edgeops_failure(), lineage.stage_run(context, declaration, STAGE_ROBUSTNESS) as run:
            record, metrics = run_robustness_stage(spec, target, dp_model, compressed, dataset, run)
        context.add_output_metadata(metrics)
        return record

    return robustness


def build_trainability_asset(ctx: AssetFactoryContext):
    declaration, spec = ctx.declaration, ctx.declaration.spec
    key = ctx.key("trainability")
    settings = spec.personalization

    @dg.asset(
        key=key,
        group_name=ctx.group("benchmarking"),
        owners=spec.owners,
        kinds={"onnx", "mlflow"},
        partitions_def=target_partitions(ctx),
        code_version=declaration.sha256[:12],
        automation_condition=follows_upstream(ctx),
        ins={
            "compressed": dg.AssetIn(ctx.key("compressed_model")),
            "dataset": dg.AssetIn(ctx.key("validated_dataset")),
        },
        check_specs=[
            dg.AssetCheckSpec(
                "fine_tunable_within_budget",
                asset=key,
                blocking=False,
                description=f"Last-layer fine-tuning ({settings.steps} steps) within {settings.max_seconds:g} s and "
                f"{settings.max_extra_memory_mb:g} MB, winning back >= {settings.min_recovery:.0%} of "
                "the accuracy lost to the declared local shift.",
            )
        ],
        description="On-device personalization measured per target: the device agent's fine-tuning code run on this "
        "target's artifact against simulated local data (the test split under personalization.local_shift).",
    )
    def trainability(
        context: dg.AssetExecutionContext, lineage: MlflowLineage, compressed: TargetArtifact, dataset: DatasetRef
    ):
        from edgeops.measurement_stages import run_trainability_stage

        target = spec.target(context.partition_key)
        with edgeops_failure(), lineage.stage_run(context, declaration, STAGE_TRAINABILITY) as run:
            record = run_trainability_stage(declaration, target, compressed, dataset, run)
        shown = {
            "measured",
            "trainable",
            "reason",
            "accuracy_shifted_before",
            "accuracy_shifted_after",
            "recovery",
            "total_seconds",
            "extra_memory_mb",
        }
        metadata = record.model_dump(include=shown, exclude_unset=True)
        yield dg.Output(record, metadata=metadata)
        if not record.measured:
            yield dg.AssetCheckResult(
                check_name="fine_tunable_within_budget",
                passed=False,
                severity=dg.AssetCheckSeverity.WARN,
                description=not_measured_description(f"{record.reason} (target {target.name})"),
                metadata={"outcome": NOT_MEASURED},
            )
        else:
            detail = "; ".join(f"{k}: {v.detail}" for k, v in (record.checks or {}).items()) or record.reason or ""
            yield dg.AssetCheckResult(
                check_name="fine_tunable_within_budget",
                passed=bool(record.trainable),
                description=f"{target.name}: {detail}",
            )

    return trainability
