"""Training and privacy stage: the DP model (released), the diffprivlib baseline, the non-private reference
(never released) and the membership-inference audit. Checks: epsilon re-derived independently, utility floor."""

import dagster as dg

from assets.common import AssetFactoryContext, edgeops_failure, per_class_table
from assets.resources import MlflowLineage


def build_training_assets(ctx: AssetFactoryContext) -> list:
    declaration, spec = ctx.declaration, ctx.declaration.spec
    pipeline_dir = ctx.settings.pipeline_dir(spec.name)
    validated = dg.AssetIn(ctx.key("validated_dataset"))

    def ledger():
        from edgeops.ledger import ledger_for

        return ledger_for(pipeline_dir, spec.privacy.epsilon, spec.privacy.delta)

    @dg.asset(key=ctx.key("dp_model"), group_name=ctx.group("training"), owners=spec.owners, kinds={"pytorch", "onnx", "mlflow"},
              ins={"dataset": validated}, code_version=declaration.sha256[:12],
              description=(f"{spec.model.family.upper()} trained with DP-SGD (Opacus, {spec.training.accountant.upper()} accountant) to "
                           f"epsilon {spec.privacy.training_epsilon:g}, delta {spec.privacy.delta:g}" if spec.training.mode != "federated" else
                           f"{spec.model.family.upper()} trained by federated averaging (Flower, {spec.training.federated.clients} clients, "
                           f"{spec.training.federated.rounds} rounds) with client-level DP") +
                          "; charged to the privacy ledger before it starts. Saved as safetensors and ONNX.")
    def dp_model(context: dg.AssetExecutionContext, lineage: MlflowLineage, dataset: dict) -> dict:
        from edgeops.federated import run_federated_training
        from edgeops.training import run_dp_training

        train = run_federated_training if spec.training.mode == "federated" else run_dp_training
        with edgeops_failure(), lineage.stage_run(context, declaration, "dp_model") as run:
            result = train(spec, dataset, ledger(), pipeline_dir / "models", run, context.run.run_id, context.log.info)
        test = result["metrics"]["test"]
        context.add_output_metadata({
            "test_accuracy": test["accuracy"], "test_ece": test["ece"], "epsilon": result["privacy"]["epsilon"],
            "delta": result["privacy"]["delta"], "noise_multiplier": result["privacy"]["noise_multiplier"],
            "ledger_remaining_epsilon": ledger().remaining(), "weights_sha256": result["weights_sha256"],
            "onnx": dg.MetadataValue.path(result["onnx_path"]), "parameters": result["parameters"],
            "per_class_accuracy": per_class_table(test["per_class_accuracy"]),
        })
        return result

    @dg.asset_check(asset=ctx.key("dp_model"), name="epsilon_rederived", blocking=True,
                    description="Epsilon re-derived from the recorded noise multiplier, sample rate, steps and delta with "
                                "dp-accounting (independent of Opacus); fails beyond 5%.")
    def epsilon_rederived(dp_model: dict) -> dg.AssetCheckResult:
        from edgeops.privacy import verify_claim

        outcome = verify_claim(dp_model["privacy"])
        return dg.AssetCheckResult(passed=outcome["passed"], description=outcome["summary"], metadata={
            "claimed_epsilon": outcome["claimed_epsilon"], "rederived_epsilon": outcome["rederived_epsilon"], "method": outcome["method"]})

    @dg.asset_check(asset=ctx.key("dp_model"), name="utility_floor", blocking=True,
                    description=f"Test accuracy of the DP model at least {spec.training.min_accuracy:.0%}.")
    def utility_floor(dp_model: dict) -> dg.AssetCheckResult:
        accuracy = dp_model["metrics"]["test"]["accuracy"]
        return dg.AssetCheckResult(passed=accuracy >= spec.training.min_accuracy,
                                   description=f"test accuracy {accuracy:.4f}, floor {spec.training.min_accuracy:.4f}",
                                   metadata={"test_accuracy": accuracy})

    @dg.asset(key=ctx.key("dp_baseline"), group_name=ctx.group("training"), owners=spec.owners, kinds={"scikitlearn", "mlflow"},
              ins={"dataset": validated}, code_version=declaration.sha256[:12],
              description=f"diffprivlib GaussianNB at epsilon {spec.privacy.baseline_epsilon:g} with the declared public bounds: "
                          "a DP baseline reported beside the network (charged to the ledger).")
    def dp_baseline(context: dg.AssetExecutionContext, lineage: MlflowLineage, dataset: dict) -> dict:
        from edgeops.privacy import run_baseline_stage

        with edgeops_failure(), lineage.stage_run(context, declaration, "dp_baseline") as run:
            result = run_baseline_stage(spec, dataset, ledger(), run, context.run.run_id)
        if "metrics" in result:
            context.add_output_metadata({"test_accuracy": result["metrics"]["test"]["accuracy"], "epsilon": result["epsilon"]})
        return result

    @dg.asset(key=ctx.key("nonprivate_reference"), group_name=ctx.group("privacy"), owners=spec.owners, kinds={"pytorch", "mlflow"},
              ins={"dataset": validated}, code_version=declaration.sha256[:12],
              description="NOT RELEASED. The same model trained without DP, for comparison (utility gap, membership "
                          "inference) only. Never exported, registered or shipped.")
    def nonprivate_reference(context: dg.AssetExecutionContext, lineage: MlflowLineage, dataset: dict) -> dict:
        from edgeops.privacy import run_reference_stage

        with edgeops_failure(), lineage.stage_run(context, declaration, "nonprivate_reference") as run:
            result = run_reference_stage(spec, dataset, ledger(), pipeline_dir / "reference_only", run, context.run.run_id, context.log.info)
        context.add_output_metadata({"test_accuracy": result["metrics"]["test"]["accuracy"], "released": False})
        return result

    @dg.asset(key=ctx.key("privacy_audit"), group_name=ctx.group("privacy"), owners=spec.owners, kinds={"pytorch", "mlflow"},
              ins={"dataset": validated, "dp_model": dg.AssetIn(ctx.key("dp_model")),
                   "reference": dg.AssetIn(ctx.key("nonprivate_reference"))}, code_version=declaration.sha256[:12],
              description="Membership-inference audit (loss-threshold attack) of the released DP model and of the non-private "
                          "reference: AUC, TPR at low FPR, and the empirical epsilon lower bound (95% Clopper-Pearson).")
    def privacy_audit(context: dg.AssetExecutionContext, lineage: MlflowLineage, dataset: dict, dp_model: dict, reference: dict) -> dict:
        from edgeops.privacy import run_audit_stage

        with edgeops_failure(), lineage.stage_run(context, declaration, "privacy_audit") as run:
            result = run_audit_stage(spec, dataset, dp_model, reference, run)
        context.add_output_metadata({
            "dp_model_auc": result["dp_model"]["auc"], "reference_auc": result["nonprivate_reference"]["auc"],
            "empirical_epsilon_lower_bound": result["dp_model"]["empirical_epsilon_lower_bound"],
            "claimed_epsilon": result["claimed_epsilon"], "summary": result["summary"]})
        return result

    @dg.asset_check(asset=ctx.key("privacy_audit"), name="audit_consistent_with_claim", blocking=True,
                    description="The audit's empirical epsilon lower bound does not exceed the claimed epsilon.")
    def audit_consistent(privacy_audit: dict) -> dg.AssetCheckResult:
        return dg.AssetCheckResult(passed=privacy_audit["consistent"], description=privacy_audit["summary"])

    assets = [dp_model, epsilon_rederived, utility_floor, dp_baseline, nonprivate_reference, privacy_audit, audit_consistent]
    if spec.training.mode == "both":
        assets += build_federated_comparison(ctx, ledger, validated)
    return assets


def build_federated_comparison(ctx: AssetFactoryContext, ledger, validated: dg.AssetIn) -> list:
    """training.mode both: the federated model is trained and reported beside the central one (not released)."""
    declaration, spec = ctx.declaration, ctx.declaration.spec
    pipeline_dir = ctx.settings.pipeline_dir(spec.name)

    @dg.asset(key=ctx.key("federated_model"), group_name=ctx.group("training"), owners=spec.owners, kinds={"pytorch", "onnx", "mlflow"},
              ins={"dataset": validated}, code_version=declaration.sha256[:12],
              description=f"Federated averaging (Flower, {spec.training.federated.clients} simulated clients, Dirichlet alpha "
                          f"{spec.training.federated.alpha:g}) with client-level DP, reported beside the central DP model; not released.")
    def federated_model(context: dg.AssetExecutionContext, lineage: MlflowLineage, dataset: dict) -> dict:
        from edgeops.federated import run_federated_training

        with edgeops_failure(), lineage.stage_run(context, declaration, "federated_model") as run:
            result = run_federated_training(spec, dataset, ledger(), pipeline_dir / "federated", run, context.run.run_id, context.log.info)
        context.add_output_metadata({"test_accuracy": result["metrics"]["test"]["accuracy"], "client_level_epsilon": result["privacy"]["epsilon"],
                                     "rounds": result["federated"]["rounds"], "clients": result["federated"]["clients"],
                                     "ledger_remaining_epsilon": ledger().remaining()})
        return result

    @dg.asset_check(asset=ctx.key("federated_model"), name="client_epsilon_rederived", blocking=True,
                    description="Client-level epsilon re-derived with dp-accounting's PLD accountant (Flower's is RDP); fails beyond 5%.")
    def client_epsilon_rederived(federated_model: dict) -> dg.AssetCheckResult:
        from edgeops.privacy import verify_claim

        outcome = verify_claim(federated_model["privacy"])
        return dg.AssetCheckResult(passed=outcome["passed"], description=outcome["summary"])

    return [federated_model, client_epsilon_rederived]
