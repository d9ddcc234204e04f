"""Governance stage: the model card, generated from recorded results, signed, and shown in the UI."""

import dagster as dg

from assets.common import AssetFactoryContext, card_follows_upstream, edgeops_failure, inline_image
from assets.resources import MlflowLineage
from edgeops.asset_store import (
    ASSET_CANARY_AUDIT,
    ASSET_DP_BASELINE,
    ASSET_DRIFT_REPORT,
    ASSET_NONPRIVATE_REFERENCE,
    ASSET_PRIVACY_AUDIT,
)
from edgeops.records import DatasetRef, DpModel, MembershipAuditRecord, ReferenceRecord


def build_governance_assets(ctx: AssetFactoryContext) -> list:
    declaration, spec = ctx.declaration, ctx.declaration.spec
    key = ctx.key("model_card")
    ins = {
        name: dg.AssetIn(ctx.key(name))
        for name in ("dp_model", ASSET_DP_BASELINE, ASSET_NONPRIVATE_REFERENCE, ASSET_PRIVACY_AUDIT)
    }
    ins["dataset"] = dg.AssetIn(ctx.key("validated_dataset"))
    ins["compressed"] = dg.AssetIn(ctx.key("compressed_model"))
    ins["benchmarks"] = dg.AssetIn(ctx.key("hil_benchmark"))
    ins["robustness"] = dg.AssetIn(ctx.key("robustness"))
    # Every batch's drift report (all partitions; none before the first batch). Declared, so the lineage shows what the
    # card read; card_follows_upstream keeps a new batch from rebuilding the card.
    ins["drift_reports"] = dg.AssetIn(ctx.key(ASSET_DRIFT_REPORT))
    canary_audit = spec.privacy.audit.enabled and spec.training.mode != "federated"
    if canary_audit:  # privacy.audit.enabled: the canary audit's outcome is a section of the card
        ins[ASSET_CANARY_AUDIT] = dg.AssetIn(ctx.key(ASSET_CANARY_AUDIT))

    @dg.asset(
        key=key,
        group_name=ctx.group("governance"),
        owners=spec.owners,
        kinds={"mlflow"},
        ins=ins,
        automation_condition=card_follows_upstream(ctx),
        code_version=declaration.sha256[:12],
        check_specs=[
            dg.AssetCheckSpec(
                "card_verifies",
                asset=key,
                blocking=True,
                description="Schema-valid, signature and evidence hashes verify, every number matches MLflow.",
            ),
            dg.AssetCheckSpec(
                "nist_all_classified",
                asset=key,
                blocking=True,
                description="All 72 NIST AI RMF 1.0 subcategories are classified.",
            ),
        ],
        description="Model card for the DP model version: Mitchell et al. sections, DP statement, per-target table, "
        "lineage, NIST AI RMF mapping; JSON (own schema), Markdown (HF front matter), HTML, Model Card Toolkit export; "
        "signed with ed25519. Release needs an approving review (edgeops card review).",
    )
    def model_card(
        context: dg.AssetExecutionContext,
        lineage: MlflowLineage,
        dp_model: DpModel,
        dp_baseline,  # BaselineRecord | BaselineSkipped: Dagster takes no union as an input type
        nonprivate_reference: ReferenceRecord,
        privacy_audit: MembershipAuditRecord,
        dataset: DatasetRef,
        compressed: dict,
        benchmarks: dict,
        robustness: dict,
        drift_reports: dict,  # partition key -> DriftReport, the batches reported so far
        **optional,  # dp_canary_audit: CanaryAuditRecord, where privacy.audit.enabled
    ):
        from pathlib import Path

        from edgeops.cards.build import generate_card
        from edgeops.cards.store import review_status, verify_card

        with edgeops_failure(), lineage.stage_run(context, declaration, "model_card") as run:
            result = generate_card(
                declaration,
                ctx.settings,
                run,
                {
                    "dp_model": dp_model,
                    ASSET_DP_BASELINE: dp_baseline,
                    ASSET_NONPRIVATE_REFERENCE: nonprivate_reference,
                    ASSET_PRIVACY_AUDIT: privacy_audit,
                    "dataset": dataset,
                    "compressed": compressed,
                    "benchmarks": benchmarks,
                    "robustness": robustness,
                    "drift_reports": [drift_reports[batch] for batch in sorted(drift_reports)],
                    "canary_audit": optional.get(ASSET_CANARY_AUDIT),
                },
                context.run.run_id,
            )
            problems = verify_card(result.folder, ctx.settings.home, run.client)
        folder = Path(result.folder)
        markdown = (folder / "card.md").read_text()
        yield dg.Output(
            result,
            metadata={
                "card": dg.MetadataValue.md(markdown.split("\n---\n", 1)[-1][:60000]),
                "review_status": review_status(folder),
                "html": dg.MetadataValue.path(str(folder / "card.html")),
                "folder": dg.MetadataValue.path(str(folder)),
                "nist_summary": dg.MetadataValue.json(result.nist_summary),
                **(
                    {
                        "pareto_chart": inline_image(
                            folder / "pareto.png",
                            "Pareto chart: accuracy against latency p50 and file size, one point per target",
                        )
                    }
                    if (folder / "pareto.png").exists()
                    else {}
                ),
                "generation_seconds": result.seconds,
            },
        )
        yield dg.AssetCheckResult(
            check_name="card_verifies",
            passed=not problems,
            description="card verifies" if not problems else "; ".join(problems)[:2000],
        )
        classified = sum(result.nist_summary.values())
        yield dg.AssetCheckResult(
            check_name="nist_all_classified",
            passed=classified == 72,
            description=f"{classified} of 72 subcategories classified: {result.nist_summary}",
        )

    return [model_card]
