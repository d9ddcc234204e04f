"""`bench`: benchmark one target's latest artifact on its device, outside a pipeline run. It leaves the evidence the
benchmark asset leaves (edgeops.measurement_stages.run_benchmark_stage), in an MLflow stage run of its own."""

from __future__ import annotations

import json

import click

from edgeops.cli.common import settings_and_declaration


@click.command()
@click.option("--pipeline", required=True)
@click.option("--target", required=True)
@click.option("--device", default=None, help="override the target's declared device")
@click.option("--json", "as_json", is_flag=True)
def bench(pipeline: str, target: str, device: str | None, as_json: bool) -> None:
    """Benchmark one target's latest artifact on its device (or --device), logged to MLflow like the asset's run."""
    import uuid

    from edgeops.asset_store import AssetStore
    from edgeops.lineage import BENCH_COMMAND_TAG, STAGE_BENCHMARK, Lineage
    from edgeops.measurement_stages import run_benchmark_stage

    settings, declaration = settings_and_declaration(pipeline)
    spec = declaration.spec
    target_spec = spec.target(target)
    if device:
        spec.device(device)
        target_spec = target_spec.model_copy(update={"device": device})
    store = AssetStore.under_home(settings.home)
    compressed = store.compressed_model(pipeline, target)
    dataset = store.validated_dataset(pipeline)
    lineage = Lineage(settings.mlflow_tracking_uri, settings.mlflow_artifact_root)
    invocation = uuid.uuid4().hex[:8]
    with lineage.run(
        pipeline,
        STAGE_BENCHMARK,
        {BENCH_COMMAND_TAG: target_spec.device},
        pipeline_run=f"edgeops-bench-{invocation}",
        pipeline_run_title=f"{pipeline} · edgeops bench {target} {invocation}",
        partition=target,
    ) as run:
        result, _ = run_benchmark_stage(spec, target_spec, compressed, dataset, run, root=declaration.root)
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2, default=str))
        return
    if not result.measured or result.latency is None or result.energy is None:
        click.echo(f"{target} on {target_spec.device}: not measured: {result.reason}")
        return
    for batch, stats in result.latency.items():
        if not stats.measured:
            click.echo(f"{target} on {target_spec.device} batch {batch}: not measured: {stats.reason}")
            continue
        click.echo(
            f"{target} on {target_spec.device} batch {batch}: p50 {stats.p50_ms:.4f} ms, "
            f"p99 {stats.p99_ms:.4f} ms, {stats.throughput_per_s:.0f}/s"
        )
    accuracy = "not computed" if result.accuracy_on_device is None else f"{result.accuracy_on_device:.4f}"
    click.echo(
        f"accuracy on device {accuracy}; "
        f"peak memory {result.peak_rss_beyond_baseline_kb} KB; "
        f"energy: {result.energy.reason or 'measured'}"
    )
