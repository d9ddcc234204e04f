"""Training and privacy stage: the DP model (released), the diffprivlib baseline, the non-private reference
(never released) and the membership-inference audit. Checks: epsilon re-derived independently, utility floor."""

import dagster as dg

from assets.common import AssetFactoryContext, edgeops_failure, per_class_table
from assets.resources import MlflowLineage
from edgeops.asset_store import (
    ASSET_CANARY_AUDIT,
    ASSET_DP_BASELINE,
    ASSET_NONPRIVATE_REFERENCE,
    ASSET_PRIVACY_AUDIT,
)
from edgeops.records import (
    BaselineRecord,
    CanaryAuditRecord,
    DatasetRef,
    DpModel,
    MembershipAuditRecord,
    ReferenceRecord,
)


def build_training_assets(ctx: AssetFactoryContext) -> list:
    from edgeops.ledger import (
        training_code_version,  # what the DP model's computation depends on: not its checks' thresholds
    )

    declaration, spec = ctx.declaration, ctx.declaration.spec
    pipeline_dir = ctx.settings.pipeline_dir(spec.name)
    validated = dg.AssetIn(ctx.key("validated_dataset"))

    def ledger():
        from edgeops.ledger import ledger_for

        return ledger_for(pipeline_dir, spec.privacy.epsilon, spec.privacy.delta)

    @dg.asset(
        key=ctx.key("dp_model"),
        group_name=ctx.group("training"),
        owners=spec.owners,
        kinds={"pytorch", "onnx", "mlflow"},
        ins={"dataset": validated},
        code_version=training_code_version(spec),
        description=(
            f"{spec.model.family.upper()} trained with DP-SGD (Opacus, {spec.training.accountant.upper()} accountant) "
            f"to epsilon {spec.privacy.training_epsilon:g}, delta {spec.mechanism_delta:g}"
            if spec.training.mode != "federated"
            else f"{spec.model.family.upper()} trained by federated averaging (Flower, "
            f"{spec.training.federated.clients} clients, {spec.training.federated.rounds} rounds) with client-level DP"
        )
        + "; charged to the privacy ledger before it starts. Saved as safetensors and ONNX.",
    )
    def dp_model(context: dg.AssetExecutionContext, lineage: MlflowLineage, dataset: DatasetRef) -> DpModel:
        from edgeops.federated.stage import run_federated_training
        from edgeops.training.stage import run_dp_training

        train = run_federated_training if spec.training.mode == "federated" else run_dp_training
        with edgeops_failure(), lineage.stage_run(context, declaration, "dp_model") as run:
            result = train(
                spec,
                dataset,
                ledger(),
                pipeline_dir / "models",
                run,
                dagster_run_id=context.run.run_id,
                progress=context.log.info,
                home=ctx.settings.home,
            )
        test, privacy = result.metrics.test, result.privacy
        context.add_output_metadata(
            {
                "test_accuracy": test.accuracy,
                "test_ece": test.ece,
                "epsilon": privacy.epsilon,
                "delta": privacy.delta,
                "noise_multiplier": privacy.noise_multiplier,
                "noise": privacy.noise,
                "ledger_remaining_epsilon": ledger().remaining(),
                "ledger_remaining_delta": ledger().remaining_delta(),
                "weights_sha256": result.weights_sha256,
                "onnx": dg.MetadataValue.path(result.onnx_path),
                "parameters": result.parameters,
                "per_class_accuracy": per_class_table(test.per_class_accuracy),
            }
        )
        return result

    @dg.asset_check(
        asset=ctx.key("dp_model"),
        name="epsilon_rederived",
        blocking=True,
        description="Epsilon re-derived from the recorded noise multiplier, sample rate, steps and delta with "
        "dp-accounting (independent of Opacus); fails beyond 5%.",
    )
    def epsilon_rederived(dp_model: DpModel) -> dg.AssetCheckResult:
        from edgeops.privacy.accounting import verify_claim

        outcome = verify_claim(dp_model.privacy.model_dump())
        return dg.AssetCheckResult(
            passed=outcome["passed"],
            description=outcome["summary"],
            metadata={
                "claimed_epsilon": outcome["claimed_epsilon"],
                "rederived_epsilon": outcome["rederived_epsilon"],
                "method": outcome["method"],
            },
        )

    @dg.asset_check(
        asset=ctx.key("dp_model"),
        name="utility_floor",
        blocking=True,
        description=f"Test accuracy of the DP model at least {spec.training.min_accuracy:.0%}.",
    )
    def utility_floor(dp_model: DpModel) -> dg.AssetCheckResult:
        accuracy = dp_model.metrics.test.accuracy
        return dg.AssetCheckResult(
            passed=accuracy >= spec.training.min_accuracy,
            description=f"test accuracy {accuracy:.4f}, floor {spec.training.min_accuracy:.4f}",
            metadata={"test_accuracy": accuracy},
        )

    @dg.asset(
        key=ctx.key(ASSET_DP_BASELINE),
        group_name=ctx.group("training"),
        owners=spec.owners,
        kinds={"scikitlearn", "mlflow"},
        ins={"dataset": validated},
        code_version=declaration.sha256[:12],
        description=f"diffprivlib GaussianNB at epsilon {spec.privacy.baseline_epsilon:g} with the declared public "
        "bounds: a DP baseline reported beside the network (charged to the ledger).",
    )
    def dp_baseline(
        context: dg.AssetExecutionContext, lineage: MlflowLineage, dataset: DatasetRef
    ):  # -> BaselineRecord | BaselineSkipped: Dagster takes no union as an output type
        from edgeops.privacy.baseline import run_baseline_stage

        with edgeops_failure(), lineage.stage_run(context, declaration, ASSET_DP_BASELINE) as run:
            result = run_baseline_stage(spec, dataset, ledger(), run, context.run.run_id)
        if isinstance(result, BaselineRecord):
            context.add_output_metadata({"test_accuracy": result.metrics.test.accuracy, "epsilon": result.epsilon})
        return result

    @dg.asset(
        key=ctx.key(ASSET_NONPRIVATE_REFERENCE),
        group_name=ctx.group("privacy"),
        owners=spec.owners,
        kinds={"pytorch", "mlflow"},
        ins={"dataset": validated},
        code_version=declaration.sha256[:12],
        description="NOT RELEASED. The same model trained without DP, for comparison (utility gap, membership "
        "inference) only. Never exported, registered or shipped.",
    )
    def nonprivate_reference(
        context: dg.AssetExecutionContext, lineage: MlflowLineage, dataset: DatasetRef
    ) -> ReferenceRecord:
        from edgeops.privacy.reference import run_reference_stage

        with edgeops_failure(), lineage.stage_run(context, declaration, ASSET_NONPRIVATE_REFERENCE) as run:
            result = run_reference_stage(
                spec,
                dataset,
                ledger(),
                pipeline_dir / "reference_only",
                run,
                dagster_run_id=context.run.run_id,
                progress=context.log.info,
            )
        context.add_output_metadata({"test_accuracy": result.metrics.test.accuracy, "released": False})
        return result

    @dg.asset(
        key=ctx.key(ASSET_PRIVACY_AUDIT),
        group_name=ctx.group("privacy"),
        owners=spec.owners,
        kinds={"pytorch", "mlflow"},
        ins={
            "dataset": validated,
            "dp_model": dg.AssetIn(ctx.key("dp_model")),
            "reference": dg.AssetIn(ctx.key(ASSET_NONPRIVATE_REFERENCE)),
        },
        code_version=declaration.sha256[:12],
        description="Membership inference (loss-threshold attack), REPORT-ONLY, of the released DP model and of the "
        "non-private "
        "reference: AUC, TPR at low FPR, the empirical epsilon lower bound (95% Clopper-Pearson) and the most a "
        "perfect attack could certify at this sample size. No check passes on it; dp_canary_audit is the audit.",
    )
    def privacy_audit(
        context: dg.AssetExecutionContext,
        lineage: MlflowLineage,
        dataset: DatasetRef,
        dp_model: DpModel,
        reference: ReferenceRecord,
    ) -> MembershipAuditRecord:
        from edgeops.privacy.membership import run_audit_stage

        with edgeops_failure(), lineage.stage_run(context, declaration, ASSET_PRIVACY_AUDIT) as run:
            result = run_audit_stage(spec, dataset, dp_model, reference, run)
        context.add_output_metadata(
            {
                "dp_model_auc": result.dp_model.auc,
                "reference_auc": result.nonprivate_reference.auc,
                "empirical_epsilon_lower_bound": result.dp_model.empirical_epsilon_lower_bound,
                "claimed_epsilon": result.claimed_epsilon,
                "summary": result.summary,
            }
        )
        return result

    # The membership-inference asset is report-only: at the test split's size even a perfect attack barely reaches the
    # claim, so a check on it could not fail. The check that can fail is on dp_canary_audit (privacy.audit.enabled).
    assets = [dp_model, epsilon_rederived, utility_floor, dp_baseline, nonprivate_reference, privacy_audit]
    if spec.privacy.audit.enabled and spec.training.mode != "federated":
        assets += build_canary_audit(ctx, validated)
    if spec.training.mode == "both":
        assets += build_federated_comparison(ctx, ledger, validated)
    return assets


def build_canary_audit(ctx: AssetFactoryContext, validated: dg.AssetIn) -> list:
    """privacy.audit.enabled: the one-run canary audit of the declared DP-SGD settings on public synthetic data."""
    declaration, spec = ctx.declaration, ctx.declaration.spec
    pipeline_dir = ctx.settings.pipeline_dir(spec.name)
    audit = spec.privacy.audit

    @dg.asset(
        key=ctx.key(ASSET_CANARY_AUDIT),
        group_name=ctx.group("privacy"),
        owners=spec.owners,
        kinds={"pytorch", "mlflow"},
        ins={"dataset": validated},
        code_version=declaration.sha256[:12],
        description="One-run canary audit (Steinke, Nasr and Jagielski 2023): DP-SGD with the declared model and "
        "settings on "
        f"public synthetic data holding {audit.canaries} canaries, and the same run with the noise off. Reads no "
        "private row (costs no budget). Outcome: consistent, violated or underpowered.",
    )
    def dp_canary_audit(
        context: dg.AssetExecutionContext, lineage: MlflowLineage, dataset: DatasetRef
    ) -> CanaryAuditRecord:
        from edgeops.audit import run_canary_audit_stage

        with edgeops_failure(), lineage.stage_run(context, declaration, ASSET_CANARY_AUDIT) as run:
            result = run_canary_audit_stage(spec, dataset, run, pipeline_dir / "models" / "pretrained")
        context.add_output_metadata(
            {
                "outcome": result.outcome,
                "epsilon_lower_bound": result.epsilon_lower_bound,
                "max_detectable_epsilon": result.max_detectable_epsilon,
                "control_epsilon_lower_bound": result.control_epsilon_lower_bound,
                "claimed_epsilon": result.claimed_epsilon,
                "summary": result.summary,
            }
        )
        return result

    @dg.asset_check(
        asset=ctx.key(ASSET_CANARY_AUDIT),
        name="canary_audit_outcome",
        blocking=True,
        description="Fails (error) when the audit's epsilon lower bound exceeds the claim; fails as a warning when the "
        "audit is underpowered (it could not have detected a violation): never a pass.",
    )
    def canary_audit_outcome(dp_canary_audit: CanaryAuditRecord) -> dg.AssetCheckResult:
        outcome = dp_canary_audit.outcome
        return dg.AssetCheckResult(
            passed=outcome == "consistent",
            description=dp_canary_audit.summary[:2000],
            severity=dg.AssetCheckSeverity.WARN if outcome == "underpowered" else dg.AssetCheckSeverity.ERROR,
            metadata={"outcome": outcome},
        )

    return [dp_canary_audit, canary_audit_outcome]


def build_federated_comparison(ctx: AssetFactoryContext, ledger, validated: dg.AssetIn) -> list:
    """training.mode both: the federated model is trained and reported beside the central one (not released)."""
    declaration, spec = ctx.declaration, ctx.declaration.spec
    pipeline_dir = ctx.settings.pipeline_dir(spec.name)

    @dg.asset(
        key=ctx.key("federated_model"),
        group_name=ctx.group("training"),
        owners=spec.owners,
        kinds={"pytorch", "onnx", "mlflow"},
        ins={"dataset": validated},
        code_version=declaration.sha256[:12],
        description=f"Federated averaging (Flower, {spec.training.federated.clients} simulated clients, Dirichlet "
        "alpha "
        f"{spec.training.federated.alpha:g}) with client-level DP, reported beside the central DP model; not released.",
    )
    def federated_model(context: dg.AssetExecutionContext, lineage: MlflowLineage, dataset: DatasetRef) -> DpModel:
        from edgeops.federated.stage import run_federated_training

        with edgeops_failure(), lineage.stage_run(context, declaration, "federated_model") as run:
            result = run_federated_training(
                spec,
                dataset,
                ledger(),
                pipeline_dir / "federated",
                run,
                dagster_run_id=context.run.run_id,
                progress=context.log.info,
                home=ctx.settings.home,
            )
        context.add_output_metadata(
            {
                "test_accuracy": result.metrics.test.accuracy,
                "client_level_epsilon": result.privacy.epsilon,
                "rounds": result.federated.rounds,
                "clients": result.federated.clients,
                "ledger_remaining_epsilon": ledger().remaining(),
            }
        )
        return result

    @dg.asset_check(
        asset=ctx.key("federated_model"),
        name="client_epsilon_rederived",
        blocking=True,
        description="Client-level epsilon re-derived with dp-accounting's PLD accountant (Flower's is RDP); fails "
        "beyond 5%.",
    )
    def client_epsilon_rederived(federated_model: DpModel) -> dg.AssetCheckResult:
        from edgeops.privacy.accounting import verify_claim

        outcome = verify_claim(federated_model.privacy.model_dump())
        return dg.AssetCheckResult(passed=outcome["passed"], description=outcome["summary"])

    return [federated_model, client_epsilon_rederived]
