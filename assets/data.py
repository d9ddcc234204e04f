"""Data stage: raw_dataset (load, split, store by digest) with blocking checks, then validated_dataset."""

import time

import dagster as dg

from assets.common import AssetFactoryContext, check_result, edgeops_failure
from assets.resources import MlflowLineage
from edgeops.records import DatasetRef


def build_data_assets(ctx: AssetFactoryContext) -> list:
    declaration, spec = ctx.declaration, ctx.declaration.spec
    raw_key = ctx.key("raw_dataset")

    @dg.asset(
        key=raw_key,
        group_name=ctx.group("data"),
        owners=spec.owners,
        kinds={"pandas", "mlflow"},
        description=f"{spec.dataset.source}: loaded, split "
        f"({spec.dataset.split.train:g}/{spec.dataset.split.validation:g}/"
        f"{spec.dataset.split.test:g}, seed {spec.dataset.split.seed}) and stored by content digest.",
        code_version=declaration.sha256[:12],
    )
    def raw_dataset(context: dg.AssetExecutionContext, lineage: MlflowLineage) -> DatasetRef:
        from edgeops.data import ingest

        with edgeops_failure(), lineage.stage_run(context, declaration, "raw_dataset") as run:
            ref = ingest(declaration, ctx.settings.pipeline_dir(spec.name) / "datasets", run)
        context.add_output_metadata(
            {
                "digest": ref.digest,
                "rows": dg.MetadataValue.table(
                    [
                        dg.TableRecord({"split": n, "rows": s.rows, "sha256": s.digest[:16]})
                        for n, s in ref.splits.items()
                    ],
                    schema=dg.TableSchema(
                        columns=[dg.TableColumn("split"), dg.TableColumn("rows", "int"), dg.TableColumn("sha256")]
                    ),
                ),
                "load_problems": len(ref.problems),
            }
        )
        return ref

    checks = []
    descriptions = {
        "schema": "Columns and types match the declaration; every cell is a number.",
        "expectations": f"Great Expectations suite {spec.validation.expectations} (Data Docs linked).",
        "leakage": "No row appears in two splits (train/test leakage).",
        "duplicates": f"Duplicates within a split at most {spec.validation.max_duplicate_fraction:.1%}.",
        "class_balance": "Class shares in the training split within the declared range.",
        "poisoning_scan": "Label-noise / poisoning scan: rows whose label disagrees with their nearest neighbours.",
    }
    for check_name, description in descriptions.items():
        checks.append(_make_check(ctx, raw_key, check_name, description))

    @dg.asset(
        key=ctx.key("validated_dataset"),
        group_name=ctx.group("data"),
        owners=spec.owners,
        kinds={"great_expectations", "mlflow"},
        ins={"raw": dg.AssetIn(raw_key)},
        code_version=declaration.sha256[:12],
        description="The dataset after every blocking check passed: the only data later stages read. Without declared "
        "feature bounds, also per-feature bounds from DP quantiles (diffprivlib), charged to the ledger.",
    )
    def validated_dataset(context: dg.AssetExecutionContext, lineage: MlflowLineage, raw: DatasetRef) -> DatasetRef:
        from edgeops.ledger import ledger_for
        from edgeops.validation import run_validation_stage

        with edgeops_failure(), lineage.stage_run(context, declaration, "validated_dataset") as run:
            ledger = ledger_for(ctx.settings.pipeline_dir(spec.name), spec.privacy.epsilon, spec.privacy.delta)
            ref = run_validation_stage(
                raw, declaration, ledger, run, dagster_run_id=context.run.run_id, warn=context.log.warning
            )
        metadata = {"digest": ref.digest, "checks": dg.MetadataValue.json(ref.checks)}
        if ref.dp_statistics:
            metadata["dp_feature_bounds"] = dg.MetadataValue.json(ref.dp_statistics.feature_bounds)
            metadata["dp_statistics_epsilon"] = ref.dp_statistics.epsilon
        context.add_output_metadata(metadata)
        return ref

    return [raw_dataset, *checks, validated_dataset]


def _make_check(ctx: AssetFactoryContext, raw_key: dg.AssetKey, check_name: str, description: str):
    declaration = ctx.declaration

    @dg.asset_check(asset=raw_key, name=check_name, blocking=True, description=description)
    def _check(raw_dataset: DatasetRef) -> dg.AssetCheckResult:
        from edgeops.validation import run_check

        started = time.perf_counter()
        with edgeops_failure():
            outcome = run_check(
                check_name, raw_dataset, declaration, ctx.settings.pipeline_dir(declaration.spec.name) / "gx"
            )
        return check_result(outcome, extra_metadata={"stage_seconds": round(time.perf_counter() - started, 4)})

    return _check
