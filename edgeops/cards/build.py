"""Builds a model card from the pipeline's recorded results. Nothing in it is typed by hand.

Every number that matters is read back from MLflow and carried with its source
(`{"value": 0.91, "mlflow_run_id": "...", "metric": "test_accuracy"}`), so an auditor, or a test, can walk the card
and check each one against the tracking server.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from edgeops.asset_store import ASSET_DP_BASELINE, ASSET_NONPRIVATE_REFERENCE, ASSET_PRIVACY_AUDIT
from edgeops.cards.nist import CLASSIFICATIONS, classify_nist, load_attestations, load_catalogue
from edgeops.cards.record import CARD_SCHEMA_VERSION
from edgeops.cards.sections import (
    MlflowEvidence,
    derived_limitations,
    drift_status,
    evidence_manifest,
    per_class_drop,
    plain_value,
    pretrained_base,
    privacy_section,
    robustness_section,
    software_versions,
)
from edgeops.records import (
    ACCURACY_ON_DEVICE,
    BASELINE_TEST_ACCURACY,
    LATENCY_B1_P50_MS,
    LATENCY_B1_P95_MS,
    PEAK_RSS_BEYOND_BASELINE_KB,
    REFERENCE_TEST_ACCURACY,
    Baseline,
    BaselineRecord,
    BaselineSkipped,
    BenchmarkRecord,
    CanaryAuditRecord,
    CardSummary,
    DpModel,
    MembershipAuditRecord,
    ReferenceRecord,
    TargetArtifact,
)
from edgeops.spec import Declaration

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from edgeops.lineage import LineageRun
    from edgeops.records import DatasetRef, DriftReport, LedgerView, Robustness
    from edgeops.settings import Settings


def build_card(
    declaration: Declaration,
    cards_dir: Path,
    client: MlflowClient,
    *,
    dataset: DatasetRef,
    dp_model: DpModel,
    baseline: Baseline,
    reference: ReferenceRecord,
    audit: MembershipAuditRecord,
    compressed: dict[str, TargetArtifact],
    benchmarks: dict[str, BenchmarkRecord],
    dagster_run_id: str,
    inputs_drift_reports: list[DriftReport] | None = None,
    robustness: dict[str, Robustness] | None = None,
    ledger_summary: LedgerView | None = None,
    canary_audit: CanaryAuditRecord | None = None,
) -> dict[str, Any]:
    from edgeops.compression.build import budget_outcomes
    from edgeops.hil.bench import latency_memory_outcomes
    from edgeops.registry import target_guarantee

    spec = declaration.spec
    evidence = MlflowEvidence(client)
    dp_run = dp_model.mlflow_run_id
    version = dp_model.weights_sha256[:12]
    current = {
        name: record for name, record in compressed.items() if record.parent_weights_sha256 == dp_model.weights_sha256
    }
    test_acc = evidence.metric(dp_run, "test_accuracy")
    reference_acc = reference.metrics.test.accuracy
    card: dict[str, Any] = {
        "schema_version": CARD_SCHEMA_VERSION,
        "card_id": f"{spec.name}/{version}",
        "pipeline": spec.name,
        "version": version,
        "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "model_details": {
            "name": spec.name,
            "overview": spec.description,
            "owners": spec.owners,
            "version": version,
            "license": spec.card.license,
            "architecture": {
                **spec.model.model_dump(mode="json"),
                "input": f"features (N, {len(dp_model.features)}) float32, raw values within the declared bounds",
                "output": f"logits (N, {len(dp_model.classes)}) over classes {dp_model.classes}",
            },
            "parameters": dp_model.parameters,
            "framework": "PyTorch + Opacus; artifacts in each target's runtime format (targets[].runtime)",
            "pretrained_base": pretrained_base(dp_model),
        },
        "intended_use": {
            "primary_uses": [spec.card.intended_use] if spec.card.intended_use else [],
            "out_of_scope": spec.card.out_of_scope,
        },
        "factors": {
            "evaluated": "per-class accuracy over the declared classes",
            "classes": dp_model.classes,
            "not_evaluated": "no demographic or acquisition-device attributes exist in the data",
        },
        "metrics": {
            "primary": [
                "test accuracy",
                "per-class accuracy",
                "expected calibration error",
                "latency p50/p95",
                "peak memory",
                "file size",
                "(epsilon, delta)",
            ],
            "dp_model": {
                "test_accuracy": test_acc,
                "test_ece": evidence.metric(dp_run, "test_ece"),
                "validation_accuracy": evidence.metric(dp_run, "validation_accuracy"),
            },
            "dp_baseline": {
                "test_accuracy": evidence.metric(baseline.mlflow_run_id, BASELINE_TEST_ACCURACY),
                "model": baseline.model,
                "epsilon": baseline.epsilon,
            }
            if isinstance(baseline, BaselineRecord) and baseline.mlflow_run_id
            else {"skipped": baseline.skipped if isinstance(baseline, BaselineSkipped) else ""},
            "nonprivate_reference": {
                "test_accuracy": evidence.metric(reference.mlflow_run_id, REFERENCE_TEST_ACCURACY),
                "released": False,
                "note": "comparison only; never exported, registered or shipped",
            },
            "utility_gap_points": round(100 * (reference_acc - plain_value(test_acc)), 2),
        },
        "evaluation_data": {
            "split": "test",
            "digest": dataset.splits["test"].digest,
            "rows": dataset.splits["test"].rows,
            "source": dataset.source,
        },
        "training_data": {
            "source": dataset.source,
            "digest": dataset.splits["train"].digest,
            "rows": dataset.splits["train"].rows,
            "protection": "differential privacy "
            f"({'DP-FedAvg, federated' if dp_model.training_mode == 'federated' else 'DP-SGD'}), "
            f"unit: {dp_model.privacy.unit}",
        },
        "data_validation": {"checks": dataset.checks or {}, "passed": True, "dataset_digest": dataset.digest},
        "quantitative_analyses": {
            "per_class": {"dp_model": dp_model.metrics.test.per_class_accuracy},
            "per_target": [],
        },
    }
    card["privacy"] = privacy_section(evidence, dp_model, audit, canary_audit, ledger_summary)
    targets = []
    energy_reason = ""
    for target_spec in spec.targets:
        record = current.get(target_spec.name)
        bench = benchmarks.get(target_spec.name)
        if bench is not None and (record is None or bench.artifact_sha256 != record.sha256):
            bench = None  # a benchmark of an older artifact of this target: not evidence for this version
        entry: dict[str, Any] = {
            "name": target_spec.name,
            "runtime": target_spec.runtime,
            "device": target_spec.device,
            "precision": target_spec.precision,
            "recipe": [s.model_dump(mode="json") for s in target_spec.recipe],
            "budgets": target_spec.budgets.model_dump(mode="json"),
            "checks": {},
            "latency_p50_ms": None,
            "latency_p95_ms": None,
            "memory_kb": None,
        }
        if record is None:
            entry.update(status="not built for this model version (its compression failed or did not run)")
            entry["checks"]["compression"] = {"status": "failed", "detail": "no artifact for this model version"}
            entry["not_measured_reason"] = "no artifact"
            targets.append(entry)
            continue
        run_id = record.registered_run_id
        entry.update(
            {
                "sha256": record.sha256,
                "registered_model": record.registered_model,
                "registered_version": record.registered_version,
                "size_bytes": {**cast(dict[str, Any], evidence.metric(run_id, "size_bytes")), "unit": "bytes"},
                "parameters": evidence.metric(run_id, "parameters"),
                "macs": evidence.metric(run_id, "macs"),
                "accuracy": evidence.metric(run_id, "accuracy", required=False),
                "accuracy_drop_points": evidence.metric(run_id, "accuracy_drop_points", required=False),
                "privacy": record.privacy,
                "guarantee": target_guarantee(dp_model, record.steps),
                "per_class_drop": per_class_drop(record),
            }
        )
        outcomes = budget_outcomes(record, target_spec)
        if bench is not None:
            outcomes.update(latency_memory_outcomes(bench, target_spec))
        for name, (passed, text) in outcomes.items():
            entry["checks"][name] = {
                "status": "not measured" if passed is None else ("passed" if passed else "failed"),
                "detail": text,
            }
        if bench is not None and bench.measured and bench.mlflow_run_id and bench.energy:
            bench_run = bench.mlflow_run_id
            facts = bench.device or {}
            entry.update(
                {
                    "latency_p50_ms": evidence.metric(bench_run, LATENCY_B1_P50_MS),
                    "latency_p95_ms": evidence.metric(bench_run, LATENCY_B1_P95_MS),
                    "memory_kb": evidence.metric(bench_run, PEAK_RSS_BEYOND_BASELINE_KB),
                    "accuracy_on_device": evidence.metric(bench_run, ACCURACY_ON_DEVICE),
                    "energy": "measured" if bench.energy.measured else f"not measured: {bench.energy.reason}",
                    "device_facts": {
                        k: facts.get(k)
                        for k in ("cpu_model", "cores", "isa_flags", "runtime_version", "provider", "threads")
                    },
                }
            )
            verified = bench.receipt_verified  # agents: the numbers are those of the device's signed receipt
            entry["measured_by"] = (
                f"device {bench.device_name}: signed receipt verified with its declared key {verified.key[:24]}..."
                if verified
                else f"the pipeline's host ({bench.device_kind} device {bench.device_name}; no receipt)"
            )
            energy_reason = energy_reason or bench.energy.reason or ""
        else:
            entry["not_measured_reason"] = (
                bench.reason if bench is not None and bench.reason else "benchmark did not run for this artifact"
            )
            entry["energy"] = "not measured"
        card["quantitative_analyses"]["per_class"][target_spec.name] = record.per_class_accuracy
        card["quantitative_analyses"]["per_target"].append(
            {
                k: entry.get(k)
                for k in (
                    "name",
                    "accuracy",
                    "accuracy_drop_points",
                    "size_bytes",
                    "latency_p50_ms",
                    "latency_p95_ms",
                    "memory_kb",
                )
            }
        )
        targets.append(entry)
    card["targets"] = targets
    measured_energy = any(t.get("energy") == "measured" for t in targets)
    card["energy"] = {
        "measured": measured_energy,
        "reason": "" if measured_energy else (energy_reason or "no benchmark measured energy"),
    }
    card["robustness"] = robustness_section(evidence, robustness or {}, current)
    card["drift"] = drift_status(inputs_drift_reports or [], dp_model.weights_sha256)
    card["ethical_considerations"] = [
        {
            "name": "Privacy of the people whose handwriting or records form the training data",
            "mitigation_strategy": card["privacy"]["dp_statement"]["text"],
        },
        {
            "name": "Misuse outside the declared scope",
            "mitigation_strategy": "Out-of-scope uses are listed; release requires a human review of this card.",
        },
    ]
    card["caveats_and_recommendations"] = {
        "limitations": derived_limitations(card),
        "recommendations": [
            "Review the per-target table before approving a release for a device.",
            "Re-run the pipeline when drift is reported; retraining spends privacy budget.",
        ],
    }
    card["lineage"] = {
        "dataset_digests": {name: split.digest for name, split in dataset.splits.items()}
        | {"combined": dataset.digest},
        "mlflow_runs": {
            "dp_model": dp_run,
            "privacy_audit": audit.mlflow_run_id,
            "dp_baseline": baseline.mlflow_run_id,
            **{f"compressed_model[{n}]": r.registered_run_id for n, r in current.items()},
            **{
                f"hil_benchmark[{n}]": b.mlflow_run_id
                for n, b in benchmarks.items()
                if b.mlflow_run_id and n in current
            },
        },
        "registered_models": {
            n: {"name": r.registered_model, "version": r.registered_version} for n, r in current.items()
        },
        "dagster_run_id": dagster_run_id,
        "weights_sha256": dp_model.weights_sha256,
        "spec_sha256": declaration.sha256,
        "artifact_sha256": {
            "dp_model.onnx": dp_model.onnx_sha256,
            "dp_model.safetensors": dp_model.weights_file_sha256,
            **{f"{n}.onnx": r.sha256 for n, r in current.items()},
        },
        "software": software_versions(),
    }
    card["review"] = {
        "status": "pending",
        "gates": ["every blocking check passed", "card signature verifies", "an approving review"],
    }
    attestations = load_attestations(declaration, {s["id"] for s in load_catalogue(cards_dir)})
    card["attestations"] = attestations
    card["nist_ai_rmf"] = classify_nist(card, cards_dir, attestations)
    card["nist_summary"] = {c: sum(1 for s in card["nist_ai_rmf"] if s["classification"] == c) for c in CLASSIFICATIONS}
    card["compliance_claim"] = (
        "none: this card reports evidence for NIST AI RMF 1.0 subcategories; it does not claim compliance"
    )
    card["evidence_manifest"] = evidence_manifest(dp_model, current)
    return card


def _ledger_summary(declaration: Declaration, settings: Settings) -> LedgerView:
    from edgeops.ledger import ledger_for

    spec = declaration.spec
    return ledger_for(settings.pipeline_dir(spec.name), spec.privacy.epsilon, spec.privacy.delta).summary()


def generate_card(
    declaration: Declaration,
    settings: Settings,
    run: LineageRun,
    inputs: dict[str, Any],
    dagster_run_id: str,
) -> CardSummary:
    """The card stage: build from recorded results, write every format, sign, and log the files to MLflow."""
    import time

    from edgeops.cards.store import write_card

    started = time.perf_counter()
    card = build_card(
        declaration,
        settings.model_cards_dir,
        run.client,
        dataset=inputs["dataset"],
        dp_model=inputs["dp_model"],
        baseline=inputs[ASSET_DP_BASELINE],
        reference=inputs[ASSET_NONPRIVATE_REFERENCE],
        audit=inputs[ASSET_PRIVACY_AUDIT],
        compressed=inputs["compressed"],
        benchmarks=inputs["benchmarks"],
        dagster_run_id=dagster_run_id,
        inputs_drift_reports=inputs["drift_reports"],
        robustness=inputs.get("robustness"),
        ledger_summary=_ledger_summary(declaration, settings),
        canary_audit=inputs.get("canary_audit"),
    )
    card["mlflow_run_id"] = run.run_id
    folder = write_card(card, settings.model_cards_dir, settings.home, mlflow_ui=run.ui_url.split("/#/")[0])
    seconds = time.perf_counter() - started
    for name in ("card.json", "card.sig.json", "card.md", "card.html", "card.mct.json", "pareto.png"):
        if (folder / name).exists():
            run.log_artifact(folder / name, "card")
    run.log_metrics({"card_generation_s": seconds, **{f"nist_{k}": v for k, v in card["nist_summary"].items()}})
    from edgeops.lineage import CARD_FOLDER_TAG, CARD_ID_TAG
    from edgeops.registry import tag_version

    for target in card["targets"]:
        tags = {CARD_ID_TAG: card["card_id"], CARD_FOLDER_TAG: str(folder)}
        tag_version(run.client, target.get("registered_model"), target.get("registered_version"), tags)
    run.set_tags({CARD_ID_TAG: card["card_id"], "edgeops.card_version": card["version"]})
    return CardSummary(
        folder=str(folder),
        card_id=card["card_id"],
        version=card["version"],
        nist_summary=card["nist_summary"],
        seconds=seconds,
        limitations=card["caveats_and_recommendations"]["limitations"],
        mlflow_run_id=run.run_id,
        registered_models=card["lineage"]["registered_models"],
    )
