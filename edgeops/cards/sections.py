"""The parts of a model card built from one source each: MLflow evidence (every number carried with the run and metric
it came from), the pre-trained base, installed software, drift reports, the robustness run, the privacy section (the
DP model's guarantee, its audits and the ledger), the canary audit and the evidence manifest; and the limitations
derived from the built card's numbers."""

from __future__ import annotations

from importlib import metadata
from typing import TYPE_CHECKING, Any

from edgeops.errors import CardError
from edgeops.records import (
    CanaryAuditRecord,
    DpModel,
    DriftChecked,
    DriftQuarantined,
    DriftReport,
    FederatedPrivacy,
    LedgerView,
    MembershipAuditRecord,
    Robustness,
    RobustnessRecord,
    TargetArtifact,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

SOFTWARE = (
    "torch",
    "opacus",
    "diffprivlib",
    "dp-accounting",
    "onnx",
    "onnxruntime",
    "torch-pruning",
    "great-expectations",
    "mlflow",
    "dagster",
    "scikit-learn",
    "numpy",
)


class MlflowEvidence:
    """Reads metrics and params of MLflow runs once each, and wraps values with where they came from."""

    def __init__(self, client: MlflowClient) -> None:
        self.client = client
        self._runs: dict[str, Run] = {}

    def run(self, run_id: str) -> Run:
        if run_id not in self._runs:
            try:
                self._runs[run_id] = self.client.get_run(run_id)
            except Exception as err:
                raise CardError(
                    f"evidence missing from MLflow: run {run_id} cannot be read ({type(err).__name__})"
                ) from None
        return self._runs[run_id]

    def metric(self, run_id: str, key: str, required: bool = True) -> dict[str, Any] | None:
        metrics = self.run(run_id).data.metrics
        if key not in metrics:
            if required:
                raise CardError(f"evidence missing from MLflow: run {run_id} has no metric {key!r}")
            return None
        return {"value": metrics[key], "mlflow_run_id": run_id, "metric": key}

    def param(self, run_id: str, key: str) -> str | None:
        return self.run(run_id).data.params.get(key)


def plain_value(item: Any) -> Any:
    """The number inside a cited value ({"value", "mlflow_run_id", "metric"}), or the value itself."""
    return item["value"] if isinstance(item, dict) and "value" in item else item


def pretrained_base(dp_model: DpModel) -> str:
    """How the DP model's weights started: from random, or from public pre-training that cost no privacy."""
    pretrain = dp_model.pretrain
    if not pretrain:
        return "none: DP-SGD from random weights"
    return (
        f"pre-trained without DP on {pretrain['samples']} public synthetic digits ({pretrain['source']}, seed "
        f"{pretrain['seed']}, "
        f"{pretrain['epochs']} epochs; test accuracy {100 * pretrain['test_accuracy_before_dp']:.1f}% before DP-SGD), "
        "then DP-SGD on the "
        "private training split; the pre-training read no private data and cost no privacy"
    )


def software_versions() -> dict[str, Any]:
    """The installed version of each package the pipeline's results depend on, for the card's lineage."""
    versions = {}
    for name in SOFTWARE:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def derived_limitations(card: dict[str, Any]) -> list[str]:
    """Limitations derived from the numbers, never written by hand."""
    notes = []
    per_class = card["quantitative_analyses"]["per_class"]["dp_model"]
    worst = min((c for c in per_class if per_class[c] is not None), key=lambda c: per_class[c])
    notes.append(f"Weakest class of the DP model: {worst} at {100 * per_class[worst]:.1f}% test accuracy.")
    gap = card["metrics"].get("utility_gap_points")
    if gap is not None:
        notes.append(
            f"Differential privacy costs {gap:.1f} accuracy points against the non-private reference (never released)."
        )
    for target in card["targets"]:
        drops = target.get("per_class_drop") or {}
        if drops:
            cls = max(drops, key=lambda c: drops[c])
            if drops[cls] > 0:
                notes.append(
                    f"Target {target['name']}: class {cls} loses the most after compression ({100 * drops[cls]:.1f} "
                    "points)."
                )
        failed = [name for name, state in target["checks"].items() if state["status"] == "failed"]
        if failed:
            notes.append(f"Target {target['name']} misses its budgets: {', '.join(failed)} (see the per-target table).")
        if target["latency_p95_ms"] is None:
            notes.append(f"Target {target['name']}: latency and memory not measured ({target['not_measured_reason']}).")
    if not card["energy"]["measured"]:
        notes.append(f"Energy was not measured: {card['energy']['reason']}")
    ece = plain_value(card["metrics"]["dp_model"]["test_ece"])
    if ece > 0.05:
        notes.append(
            f"Confidence is not well calibrated (expected calibration error {ece:.3f}); do not read scores as "
            "probabilities."
        )
    notes.append(
        f"Evaluated on {card['evaluation_data']['rows']} held-out rows of the same source; performance on other "
        "scanners or "
        "handwriting populations is unknown."
    )
    return notes


def drift_status(reports: list[DriftReport], weights_sha256: str) -> dict[str, Any]:
    """What monitoring has seen for this model version (drift reports are made with the released weights)."""
    checked = [r for r in reports if isinstance(r, DriftChecked) and r.model_weights_sha256 == weights_sha256]
    quarantined = [r for r in reports if isinstance(r, DriftQuarantined)]
    if not checked and not quarantined:
        return {"status": None, "note": "no incoming batch has been monitored for this version yet"}
    drifted = [r.key for r in checked if r.drift_detected]
    return {
        "status": "drift detected" if drifted else "no drift",
        "batches_checked": len(checked),
        "batches_with_drift": drifted[:20],
        "batches_quarantined": [r.key for r in quarantined][:20],
        "mlflow_runs": [r.mlflow_run_id for r in checked][:20],
    }


def robustness_section(
    evidence: MlflowEvidence, robustness: dict[str, Robustness], current: dict[str, TargetArtifact]
) -> dict[str, Any]:
    """FGSM/PGD accuracy per target, every number cited from the robustness run; only for this version's artifacts."""
    from edgeops.robustness import CLEAN_ACCURACY, metric_names

    # skipped, or measured on another artifact of this target: not evidence for this version
    measured = {
        name: record
        for name, record in sorted(robustness.items())
        if isinstance(record, RobustnessRecord) and name in current and record.artifact_sha256 == current[name].sha256
    }
    per_target = {}
    for name, record in measured.items():
        budgets = []
        for budget in record.budgets:
            fgsm, pgd = metric_names(budget.epsilon_fraction_of_span)
            budgets.append(
                {
                    "epsilon_fraction_of_span": budget.epsilon_fraction_of_span,
                    "fgsm_accuracy": evidence.metric(record.mlflow_run_id, fgsm),
                    "pgd_accuracy": evidence.metric(record.mlflow_run_id, pgd),
                }
            )
        per_target[name] = {"clean_accuracy": evidence.metric(record.mlflow_run_id, CLEAN_ACCURACY), "budgets": budgets}
    if not measured:
        return {}
    first = next(iter(measured.values()))
    return {
        "adversarial": {
            "method": f"FGSM and PGD ({first.pgd_steps} steps), {first.norm}, {first.attacks}",
            "rows": first.rows,
            "per_target": per_target,
        }
    }


def privacy_section(
    evidence: MlflowEvidence,
    dp_model: DpModel,
    audit: MembershipAuditRecord,
    canary_audit: CanaryAuditRecord | None,
    ledger_summary: LedgerView | None,
) -> dict[str, Any]:
    """The card's privacy section: the released model's guarantee in numbers and words (its epsilon cited from MLflow),
    its re-derivation, the audits, what is and is not protected, and the privacy ledger."""
    from edgeops.noise import NOT_PRIVATE
    from edgeops.privacy.accounting import card_ledger, verify_claim

    dp_run = dp_model.mlflow_run_id
    stored_audit = audit.to_json()
    # CentralPrivacy | FederatedPrivacy, told apart by `federated` (a flag mypy does not narrow on)
    privacy: Any = dp_model.privacy
    federated = isinstance(privacy, FederatedPrivacy)
    return {
        "dp_statement": {
            "epsilon": evidence.metric(dp_run, "epsilon"),
            "delta": privacy.delta,
            "accountant": privacy.accountant.upper(),
            "sampling": f"{privacy.sampling}, rate {privacy.sample_rate:.4f}",
            "clipping": f"{privacy.clipping}, L2 norm {privacy.clipping_norm if federated else privacy.max_grad_norm}",
            "noise_multiplier": privacy.noise_multiplier,
            "steps": privacy.steps,
            "epochs": None if federated else privacy.epochs,
            "unit": privacy.unit,
            "training_mode": dp_model.training_mode,
            "noise": privacy.noise,
            "text": (
                f"{NOT_PRIVATE}: this model was trained with the test switch's replayable noise and carries NO privacy "
                "guarantee. "
                if privacy.noise.startswith(NOT_PRIVATE)
                else ""
            )
            + f"The released model is ({plain_value(evidence.metric(dp_run, 'epsilon')):.3f}, "
            f"{privacy.delta:g})-differentially private "
            + (
                f"with respect to one client's whole data, trained by federated averaging across {privacy.clients} "
                "clients "
                f"(Flower DP-FedAvg, {privacy.steps} rounds, {privacy.accountant.upper()} accountant"
                + (", secure aggregation with SecAgg+)." if privacy.secure_aggregation else ").")
                if federated
                else f"with respect to one row of the training split ({privacy.accountant.upper()} accountant)."
            )
            + (
                ""
                if privacy.noise.startswith(NOT_PRIVATE)
                else " The noise and the private sampling come from a secret, cryptographically secure source; the "
                "seed in the "
                "declaration drives only public randomness (split, initialisation, pre-training)."
            ),
        },
        "rederivation": verify_claim(privacy.model_dump()),
        "membership_inference": {
            k: stored_audit[k]
            for k in ("dp_model", "nonprivate_reference", "role", "max_detectable_epsilon", "summary")
        }
        | {"mlflow_run_id": audit.mlflow_run_id},
        "canary_audit": canary_audit_section(canary_audit),
        "protected": [
            "training split (DP-SGD)",
            "pruning fine-tuning data where declared (DP-SGD, charged to the ledger)",
        ],
        "per_target": "each target's own (epsilon, delta) is in its entry under targets[].guarantee: the DP model "
        "plus that target's DP fine-tuning or distillation, by basic composition (a PLD figure beside it)",
        "ledger": card_ledger(ledger_summary).model_dump()
        if ledger_summary is not None
        else {"not_available": "no ledger summary was given to the card"},
        "not_protected": [
            "validation and test splits (used for evaluation and checks; their aggregate metrics are published "
            "without DP)",
            "the non-private reference's aggregate metrics (never released as a model)",
            "data validation reports (row ids of suspect rows are shown to the data owner only)",
            "per-epoch training loss and each federated client's update norm: un-noised, so kept in owner-only files "
            "and never published (not in MLflow, Dagster metadata or this card)",
        ],
    }


CANARY_AUDIT_KEYS = (
    "method",
    "outcome",
    "claimed_epsilon",
    "delta",
    "epsilon_lower_bound",
    "max_detectable_epsilon",
    "control_epsilon_lower_bound",
    "confidence",
    "canaries",
    "canary",
    "canary_design",
    "score",
    "private_rows_read",
    "summary",
    "mlflow_run_id",
)


def canary_audit_section(record: CanaryAuditRecord | None) -> dict[str, Any]:
    """The one-run canary audit (edgeops.audit) as the card states it; 'not run' with how to turn it on otherwise."""
    if record is None:
        return {
            "outcome": "not run",
            "consistent": False,
            "summary": "not run: the one-run canary audit is off (privacy.audit.enabled: true in the "
            "declaration runs it; two DP-SGD runs on public data, no privacy cost)",
        }
    # consistent: the NIST mapping's pass/fail field (true only for a powered audit whose bound stayed within the claim)
    stored = record.to_json()
    return {k: stored[k] for k in CANARY_AUDIT_KEYS} | {"consistent": record.outcome == "consistent"}


def per_class_drop(record: TargetArtifact) -> dict[str, float]:
    """Per class: float accuracy minus the artifact's, where the artifact was evaluated and has the class."""
    measured = record.per_class_accuracy or {}
    return {
        c: round(float_accuracy - artifact, 4)
        for c, artifact in measured.items()
        if artifact is not None and (float_accuracy := record.float_per_class_accuracy.get(c)) is not None
    }


def evidence_manifest(dp_model: DpModel, compressed: dict[str, TargetArtifact]) -> list[dict[str, Any]]:
    """Every artifact the card cites, with the sha256 recorded when it was made (checked by `card verify`)."""
    items = [
        {
            "kind": "file",
            "path": dp_model.onnx_path,
            "sha256": dp_model.onnx_sha256,
            "mlflow_run_id": dp_model.mlflow_run_id,
            "mlflow_tag": "sha256.model/model.onnx",
        },
        {
            "kind": "file",
            "path": dp_model.weights_path,
            "sha256": dp_model.weights_file_sha256,
            "mlflow_run_id": dp_model.mlflow_run_id,
            "mlflow_tag": "sha256.model/model.safetensors",
        },
    ]
    for record in compressed.values():
        items.append(
            {
                "kind": "file",
                "path": record.artifact_path,
                "sha256": record.sha256,
                "mlflow_run_id": record.registered_run_id,
                "mlflow_tag": f"sha256.model/{record.artifact_file or 'model.onnx'}",
            }
        )
    return items
