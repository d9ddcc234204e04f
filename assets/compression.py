"""Compression stage: one partition per declared target. Each builds its artifact from the DP model, checks it
(ONNX checker, parity, accuracy on the test split with the target's runtime), counts parameters, MACs and bytes,
and registers it in MLflow as a version of <pipeline>-<target>. Budget checks fail per target."""

import dagster as dg

from assets.common import AssetFactoryContext, edgeops_failure, follows_upstream, per_class_table
from assets.resources import MlflowLineage
from edgeops.records import DpModel
from edgeops.report import NOT_MEASURED, not_measured_description


def target_partitions(ctx: AssetFactoryContext) -> dg.StaticPartitionsDefinition:
    return dg.StaticPartitionsDefinition([t.name for t in ctx.declaration.spec.targets])


def build_compression_assets(ctx: AssetFactoryContext) -> list:
    declaration, spec = ctx.declaration, ctx.declaration.spec
    pipeline_dir = ctx.settings.pipeline_dir(spec.name)
    key = ctx.key("compressed_model")

    budgets = {
        "size": "File size within budgets.max_size_kb.",
        "accuracy_drop": "Accuracy drop against the float model within budgets.max_accuracy_drop_points.",
        "parity": "Logits match the float model within the per-precision tolerance.",
    }

    # Checks of a partitioned asset are declared as check specs and evaluated in its body, per partition.
    @dg.asset(
        key=key,
        group_name=ctx.group("compression"),
        owners=spec.owners,
        kinds={"onnx", "mlflow"},
        partitions_def=target_partitions(ctx),
        ins={"dp_model": dg.AssetIn(ctx.key("dp_model"))},
        automation_condition=follows_upstream(ctx),
        code_version=declaration.sha256[:12],
        check_specs=[
            dg.AssetCheckSpec(f"{name}_budget", asset=key, blocking=True, description=text)
            for name, text in budgets.items()
        ],
        description="Per target: the recipe (prune / int8 QDQ / fp16) applied to the DP model, exported to ONNX, "
        "checked for parity and accuracy on the test split, and registered as a version of <pipeline>-<target>.",
    )
    def compressed_model(context: dg.AssetExecutionContext, lineage: MlflowLineage, dp_model: DpModel):
        from edgeops.compression.build import budget_outcomes
        from edgeops.ledger import ledger_for
        from edgeops.registry import build_and_register

        target = spec.target(context.partition_key)
        with edgeops_failure(), lineage.stage_run(context, declaration, "compressed_model") as run:
            record = build_and_register(
                declaration,
                target,
                dp_model,
                pipeline_dir / "artifacts",
                run,
                ledger=ledger_for(pipeline_dir, spec.privacy.epsilon, spec.privacy.delta),
                dagster_run_id=context.run.run_id,
                home=ctx.settings.home,
            )
        context.log.info(
            f"{target.name}: {record.size_bytes / 1024:.1f} KB on {target.runtime}, accuracy drop "
            f"{record.accuracy_drop_points if record.evaluated else 'not measured'} points, registered as version "
            f"{record.registered_version}"
        )
        stored = record.to_json()
        yield dg.Output(
            record,
            metadata={
                "results": dg.MetadataValue.table(
                    [
                        dg.TableRecord({"metric": k, "value": str(stored.get(k, "not measured"))})
                        for k in (
                            "precision",
                            "size_bytes",
                            "float_size_bytes",
                            "parameters",
                            "macs",
                            "accuracy",
                            "accuracy_drop_points",
                            "parity_max_abs_diff",
                            "top1_agreement",
                            "sha256",
                            "registered_version",
                        )
                    ],
                    schema=dg.TableSchema(columns=[dg.TableColumn("metric"), dg.TableColumn("value")]),
                ),
                "artifact": dg.MetadataValue.path(record.artifact_path),
                "recipe_steps": dg.MetadataValue.json(record.steps),
                "per_class_accuracy": per_class_table(record.per_class_accuracy or {}),
            },
        )
        for name, (passed, text) in budget_outcomes(record, target).items():
            if passed is None:  # not measurable on this host: a warning that says why, never a fake pass
                yield dg.AssetCheckResult(
                    check_name=f"{name}_budget",
                    passed=False,
                    severity=dg.AssetCheckSeverity.WARN,
                    description=not_measured_description(f"{text} (target {target.name})"),
                    metadata={"outcome": NOT_MEASURED},
                )
            else:
                yield dg.AssetCheckResult(
                    check_name=f"{name}_budget", passed=passed, description=f"{target.name}: {text}"
                )

    return [compressed_model]
