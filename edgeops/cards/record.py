"""The model card as a typed record (`Card`), and the card's JSON schema generated from it.

`edgeops.cards.build` builds the card as a plain dict, key by key, and `edgeops.cards.store.write_card` checks that
dict against `Card` and against the generated schema before it signs and writes it; the dict itself is what is written
and signed, so the bytes of card.json do not depend on this module. Sections whose content is free-form today stay
``dict[str, Any]``; every field carries a description, which the schema publishes.

The schema shipped as ``edgeops/resources/model_cards/card.schema.json`` (what auditors validate a card.json with) is
never edited by hand. After changing a model here, regenerate it with

    python -m edgeops.cards.record --write

(without ``--write`` it prints the schema). tests/unit/test_card_record.py fails while the file and `Card` differ.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import ConfigDict, Field

from edgeops.records import Record

SchemaVersion = Literal["edgeops.card/1.0"]
CARD_SCHEMA_VERSION: str = get_args(SchemaVersion)[0]
SCHEMA_HEADER = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://edgeops.dev/schemas/card/1.0.json",
    "title": "edgeops model card",
    "description": "Version 1.0 of the edgeops model card document (card.json). Numbers that matter are evidence "
    "objects that name the MLflow run and metric they come from. Generated from edgeops.cards.record.Card.",
}
SHA256_PATTERN = "^[0-9a-f]{64}$"
MetricStatus = Literal["passed", "failed", "not measured"]


class CardPart(Record):
    # strict: a number written as text ("0.9") is refused here as the JSON schema refuses it, instead of being coerced
    model_config = ConfigDict(strict=True)


class Evidence(CardPart):
    """A number read back from MLflow, with the run and metric it came from (`card verify` checks each one)."""

    value: float = Field(description="The metric's value as MLflow recorded it.")
    mlflow_run_id: str = Field(description="The MLflow run that logged the metric.")
    metric: str = Field(description="The metric's name in that run.")


class SizeEvidence(Evidence):
    """A file size read back from MLflow, with its unit."""

    unit: Literal["bytes"] = Field(description="The unit of the value.")


# ---------------------------------------------------------------- metrics
class DpModelMetrics(CardPart):
    test_accuracy: Evidence = Field(description="Accuracy of the released DP model on the test split.")
    test_ece: Evidence = Field(description="Expected calibration error on the test split.")
    validation_accuracy: Evidence = Field(description="Accuracy on the validation split.")


class ReferenceMetrics(CardPart):
    test_accuracy: Evidence = Field(description="Test accuracy of the non-private reference.")
    released: bool = Field(description="Whether the reference was released (never).")
    note: str = Field(description="What the reference is for.")


class CardMetrics(CardPart):
    primary: list[str] = Field(description="The metrics the card reports, in words.")
    dp_model: DpModelMetrics = Field(description="The released DP model's metrics.")
    dp_baseline: dict[str, Any] = Field(
        description="The DP baseline's test accuracy, model and epsilon; or {'skipped': reason} when it did not run."
    )
    nonprivate_reference: ReferenceMetrics = Field(description="The non-private comparison model (never released).")
    utility_gap_points: float = Field(description="Test accuracy points the DP model loses against the reference.")


# ---------------------------------------------------------------- privacy
class DpStatement(CardPart):
    """The released model's guarantee, as numbers and in words."""

    epsilon: Evidence = Field(description="The accountant's epsilon, as logged to MLflow.")
    delta: float = Field(description="The delta the epsilon is accounted at.")
    accountant: str = Field(description="The privacy accountant, upper case (RDP, PRV, FLOWER-RDP).")
    sampling: str = Field(description="How each step's batch is drawn, with its rate.")
    clipping: str = Field(description="How contributions are clipped, with the L2 norm.")
    noise_multiplier: float = Field(description="Gaussian noise standard deviation over the clipping norm.")
    steps: int = Field(description="Noisy steps (rounds, for federated training) accounted.")
    epochs: int | None = Field(description="Training epochs; None for federated training.")
    unit: str = Field(description="The privacy unit: what one person's contribution is.")
    training_mode: Literal["central", "federated"] = Field(description="DP-SGD (central) or DP-FedAvg (federated).")
    noise: str = Field(description="One line on the noise: secret, or NOT PRIVATE (the deterministic test switch).")
    text: str = Field(description="The guarantee in one paragraph.")


class LedgerEntry(CardPart):
    """One charge of the pipeline's privacy ledger (edgeops.privacy.accounting.card_ledger)."""

    id: int = Field(description="The ledger entry's number.")
    mechanism: str = Field(description="The mechanism charged (dp-sgd, dp-statistics, ...).")
    status: str = Field(description="charged, completed or failed.")
    epsilon: float = Field(description="Epsilon charged.")
    delta: float = Field(description="Delta charged.")
    charge_key: str = Field(description="What the charge is keyed by (a repeated computation is not charged again).")
    note: str = Field(description="What the charge was for.")
    mechanism_parameters: dict[str, Any] = Field(description="Noise multiplier, sample rate, steps and accountant.")
    second_accountant: dict[str, Any] | None = Field(
        description="The entry's epsilon by dp-accounting's PLD accountant; None for entries with nothing to "
        "re-account."
    )


class LedgerTotals(CardPart):
    epsilon: float = Field(description="Epsilon spent, by basic composition.")
    delta: float = Field(description="Delta spent, by basic composition.")
    budget_epsilon: float = Field(description="The declared epsilon budget.")
    budget_delta: float = Field(description="The declared delta budget.")
    remaining_epsilon: float = Field(description="Epsilon left in the budget.")
    remaining_delta: float = Field(description="Delta left in the budget.")


class Ledger(CardPart):
    composition: str = Field(description="The composition rule the budget is enforced with.")
    entries: list[LedgerEntry] = Field(description="Every ledger entry.")
    totals: LedgerTotals = Field(description="What was spent against the budget.")
    pld_composition: dict[str, Any] | None = Field(
        description="A PLD composition of all entries beside the basic sum; None when no delta was spent."
    )


class CardPrivacy(CardPart):
    dp_statement: DpStatement = Field(description="The released model's guarantee.")
    rederivation: dict[str, Any] = Field(description="The epsilon re-derived from the recorded parameters.")
    membership_inference: dict[str, Any] = Field(description="The membership inference audit, with its MLflow run.")
    canary_audit: dict[str, Any] = Field(description="The one-run canary audit, or 'not run' and how to turn it on.")
    protected: list[str] = Field(description="What differential privacy protects.")
    per_target: str = Field(description="Where each target's own guarantee is stated.")
    ledger: Ledger = Field(description="The pipeline's privacy ledger.")
    not_protected: list[str] = Field(description="What is published without differential privacy.")


# ---------------------------------------------------------------- targets
class TargetCheck(CardPart):
    status: MetricStatus = Field(description="The outcome of the check.")
    detail: str = Field(description="The measured value against the budget, in words.")


class Guarantee(CardPart):
    """A target's own (epsilon, delta) (edgeops.registry.target_guarantee)."""

    epsilon: float = Field(description="Epsilon of the target's artifact by basic composition.")
    delta: float = Field(description="Delta of the target's artifact by basic composition.")
    composition: str = Field(description="The composition rule.")
    parts: dict[str, dict[str, Any]] = Field(description="Each mechanism the artifact depends on, by name.")
    pld_epsilon: float | None = Field(description="The PLD composition of the same mechanisms; None at delta 0.")
    text: str = Field(description="The guarantee in one sentence.")


class TargetEntry(CardPart):
    """One declared target. Keys with a default are written only when the artifact was built (or measured)."""

    name: str = Field(description="The target's declared name.")
    runtime: str = Field(description="The runtime the artifact is made for.")
    device: str = Field(description="The device class declared.")
    precision: str = Field(description="The declared precision.")
    recipe: list[dict[str, Any]] = Field(description="The compression recipe's steps, as declared.")
    budgets: dict[str, Any] = Field(description="The declared budgets.")
    checks: dict[str, TargetCheck] = Field(description="Each budget check, by name.")
    latency_p50_ms: Evidence | None = Field(description="Median latency at batch 1; None where not measured.")
    latency_p95_ms: Evidence | None = Field(description="95th percentile latency at batch 1; None where not measured.")
    memory_kb: Evidence | None = Field(description="Peak memory beyond the baseline; None where not measured.")
    status: str | None = Field(None, description="Why there is no artifact for this model version.")
    not_measured_reason: str | None = Field(None, description="Why latency and memory were not measured.")
    sha256: str | None = Field(None, pattern=SHA256_PATTERN, description="sha256 of the artifact.")
    registered_model: str | None = Field(None, description="The MLflow registered model.")
    registered_version: int | str | None = Field(None, description="The registered model version.")
    size_bytes: SizeEvidence | None = Field(None, description="The artifact's file size.")
    parameters: Evidence | None = Field(None, description="Parameters of the compressed model.")
    macs: Evidence | None = Field(None, description="Multiply-accumulates of one inference.")
    accuracy: Evidence | None = Field(None, description="Test accuracy of the artifact.")
    accuracy_drop_points: Evidence | None = Field(None, description="Accuracy points lost against the float model.")
    privacy: str | None = Field(None, description="What the compression did to the guarantee, in words.")
    guarantee: Guarantee | None = Field(None, description="The target's own (epsilon, delta).")
    per_class_drop: dict[str, float] | None = Field(None, description="Accuracy lost per class.")
    accuracy_on_device: Evidence | None = Field(None, description="Accuracy measured on the device.")
    energy: str | None = Field(None, description="'measured', or 'not measured' and why.")
    device_facts: dict[str, Any] | None = Field(None, description="CPU, cores, ISA flags and runtime of the device.")
    measured_by: str | None = Field(None, description="Who measured: a device's verified receipt, or the host.")


# ---------------------------------------------------------------- governance
class NistItem(CardPart):
    """One NIST AI RMF 1.0 subcategory, classified by the mapping rules (edgeops.cards.nist.classify_nist)."""

    id: str = Field(pattern=r"^(GOVERN|MAP|MEASURE|MANAGE) [0-9]+\.[0-9]+$", description="The subcategory id.")
    statement: str = Field(min_length=10, description="The subcategory's official statement.")
    classification: Literal["supported", "partial", "attestation", "not_applicable"] = Field(
        description="How far this card's evidence supports the subcategory."
    )
    evidence: list[str] = Field(description="Paths in this card of the evidence present.")
    why: str = Field(description="The rule's reasoning, or what evidence is missing.")
    attestations: list[dict[str, Any]] | None = Field(
        None, description="Signed attestations of a person (attestation items only)."
    )


class NistSummary(CardPart):
    supported: int = Field(description="Subcategories supported by evidence.")
    partial: int = Field(description="Subcategories with part of their evidence.")
    attestation: int = Field(description="Subcategories left to a person's attestation.")
    not_applicable: int = Field(description="Subcategories that do not apply.")


class EvidenceFile(CardPart):
    """An artifact the card cites, with the sha256 recorded when it was made (checked by `card verify`)."""

    kind: Literal["file"] = Field(description="What the evidence is.")
    path: str = Field(description="Where it lies on disk.")
    sha256: str = Field(pattern=SHA256_PATTERN, description="sha256 of the file when it was made.")
    mlflow_run_id: str = Field(description="The MLflow run that logged it.")
    mlflow_tag: str = Field(description="The run's tag recording its sha256.")


class Energy(CardPart):
    measured: bool = Field(description="Whether any benchmark measured energy.")
    reason: str = Field(description="Why energy was not measured; empty when it was.")


class Review(CardPart):
    status: Literal["pending"] = Field(
        description="Always pending: the card is signed before any review; reviews are in the signed history."
    )
    gates: list[str] = Field(description="What a release needs.")


class Card(CardPart):
    """The model card document (card.json), schema version 1.0."""

    schema_version: SchemaVersion = Field(description="The card schema's version.")
    card_id: str = Field(description="<pipeline>/<version>.")
    pipeline: str = Field(description="The pipeline's declared name.")
    version: str = Field(pattern="^[0-9a-f]{12}$", description="The first 12 hex digits of the weights' sha256.")
    generated_at: str = Field(description="When the card was built (ISO 8601, UTC, seconds).")
    model_details: dict[str, Any] = Field(description="Name, overview, owners, license, architecture, parameters.")
    intended_use: dict[str, Any] = Field(description="Primary uses and out-of-scope uses, as declared.")
    factors: dict[str, Any] = Field(description="What the evaluation breaks results down by, and what it cannot.")
    metrics: CardMetrics = Field(description="The DP model's, the DP baseline's and the reference's metrics.")
    evaluation_data: dict[str, Any] = Field(description="The test split: digest, rows, source.")
    training_data: dict[str, Any] = Field(description="The training split: digest, rows, source, protection.")
    data_validation: dict[str, Any] = Field(description="The dataset's checks.")
    quantitative_analyses: dict[str, Any] = Field(description="Per-class accuracy and the per-target table.")
    privacy: CardPrivacy = Field(description="The guarantee, its audits and the privacy ledger.")
    targets: list[TargetEntry] = Field(description="Every declared target, built or not.")
    energy: Energy = Field(description="Whether energy was measured.")
    robustness: dict[str, Any] = Field(description="FGSM/PGD accuracy per target; empty when not run.")
    drift: dict[str, Any] = Field(description="What monitoring has seen for this model version.")
    ethical_considerations: list[dict[str, Any]] = Field(description="Risks and their mitigation.")
    caveats_and_recommendations: dict[str, Any] = Field(description="Limitations derived from the numbers, advice.")
    lineage: dict[str, Any] = Field(description="Dataset digests, MLflow runs, registered models, artifact hashes.")
    review: Review = Field(description="The review state when signed, and the release gates.")
    attestations: list[dict[str, Any]] = Field(description="The declaration's signed attestations.")
    nist_ai_rmf: list[NistItem] = Field(
        min_length=72, max_length=72, description="Every NIST AI RMF 1.0 subcategory, classified."
    )
    nist_summary: NistSummary = Field(description="How many subcategories have each classification.")
    compliance_claim: str = Field(pattern="^none", description="The card claims no compliance, only evidence.")
    evidence_manifest: list[EvidenceFile] = Field(description="Every artifact the card cites, with its sha256.")
    mlflow_run_id: str = Field(description="The MLflow run of the card stage.")
    signature_fingerprint: str = Field(description="Fingerprint of the key that signs card.sig.json.")


def card_schema() -> dict[str, Any]:
    """The JSON schema of card.json (draft 2020-12), generated from `Card`, with the published header."""
    schema = Card.model_json_schema()
    schema.pop("title")  # the header's title and description replace the class name and docstring
    schema.pop("description")
    return SCHEMA_HEADER | schema


def card_schema_text() -> str:
    """card.schema.json exactly as shipped."""
    return json.dumps(card_schema(), indent=2) + "\n"


def schema_path() -> Path:
    """The schema file in this source tree (regenerated in place; a wheel ships it as package data)."""
    return Path(__file__).resolve().parent.parent / "resources" / "model_cards" / "card.schema.json"


def main(argv: list[str]) -> int:
    if argv == ["--write"]:
        schema_path().write_text(card_schema_text(), encoding="utf-8")
        print(f"wrote {schema_path()}")
        return 0
    if argv:
        print("usage: python -m edgeops.cards.record [--write]", file=sys.stderr)
        return 2
    sys.stdout.write(card_schema_text())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
