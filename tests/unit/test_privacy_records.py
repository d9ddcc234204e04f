"""The privacy-side records (edgeops.records.privacy): each stage's stored shape round-trips, the IO manager's
registry hands back the right form, and the stages return their records and log the metrics the card reads."""

import pytest
from helpers import RecordingRun, table_declaration, table_frame, train_dp_model
from pydantic import ValidationError

from edgeops.asset_store import (
    ASSET_CANARY_AUDIT,
    ASSET_DP_BASELINE,
    ASSET_NONPRIVATE_REFERENCE,
    ASSET_PRIVACY_AUDIT,
    load_stored,
)
from edgeops.cards.sections import CANARY_AUDIT_KEYS, canary_audit_section
from edgeops.records import (
    BASELINE_TEST_ACCURACY,
    REFERENCE_TEST_ACCURACY,
    BaselineRecord,
    BaselineSkipped,
    CanaryAuditRecord,
    MembershipAuditRecord,
    ReferenceRecord,
)

SPLIT = {"accuracy": 0.9, "per_class_accuracy": {"0": 0.8, "1": None}, "ece": 0.05, "n": 40}
REFERENCE = {
    "weights_path": "reference_only_never_released.safetensors",
    "weights_sha256": "a" * 64,
    "metrics": {"test": SPLIT},
    "released": False,
    "role": "non-private reference (comparison only, never released)",
    "mlflow_run_id": "run-reference",
}
BASELINE = {
    "model": "diffprivlib GaussianNB",
    "epsilon": 1.0,
    "delta": 0.0,
    "ledger_entry": 3,
    "metrics": {"test": SPLIT},
    "released": False,
    "mlflow_run_id": "run-baseline",
}
BASELINE_SKIPPED = {"skipped": "privacy.baseline_epsilon is 0", "mlflow_run_id": "run-baseline"}


def attack(auc: float, tpr_at_tenth_percent: float | None) -> dict:
    return {
        "attack": "loss threshold (Yeom et al. 2018)",
        "members": 200,
        "nonmembers": 200,
        "auc": auc,
        "tpr_at_0.1pct_fpr": tpr_at_tenth_percent,
        "tpr_at_lowest_fpr": 0.01,
        "lowest_fpr_resolvable": 0.005,
        "empirical_epsilon_lower_bound": 0.0,
        "confidence": 0.95,
    }


MEMBERSHIP = {
    "dp_model": attack(0.51, None),
    "nonprivate_reference": attack(0.62, 0.02),
    "claimed_epsilon": 3.0,
    "max_detectable_epsilon": 2.1,
    "role": "report-only: ...",
    "summary": "loss-threshold MIA (report-only): ...",
    "mlflow_run_id": "run-audit",
}
CANARY = {
    "method": "one-run canary audit (Steinke, Nasr and Jagielski 2023, Corollary 5.4)",
    "outcome": "underpowered",
    "claimed_epsilon": 4.0,
    "delta": 1e-5,
    "epsilon_lower_bound": 0.1,
    "max_detectable_epsilon": 2.5,
    "control_epsilon_lower_bound": None,
    "confidence": 0.95,
    "canaries": 60,
    "canaries_included": 31,
    "canary": "gradient",
    "training_rows": 300,
    "noise_multiplier": 1.2,
    "noise": "declared",
    "sample_rate": 0.1,
    "steps": 50,
    "max_grad_norm": 1.0,
    "guesses": [{"k_per_side": 3, "guesses": 6, "correct": 4, "epsilon_lower_bound": 0.0}],
    "score": "the weight at the canary's coordinate before training minus after; higher means guessed 'in'",
    "canary_design": "white-box gradient canaries: ...",
    "private_rows_read": 0,
    "seconds": 12.5,
    "summary": "one-run canary audit (60 gradient canaries, noise declared): ...",
    "mlflow_run_id": "run-canary",
}


@pytest.mark.parametrize(
    ("asset", "stored", "record"),
    [
        (ASSET_NONPRIVATE_REFERENCE, REFERENCE, ReferenceRecord),
        (ASSET_DP_BASELINE, BASELINE, BaselineRecord),
        (ASSET_DP_BASELINE, BASELINE_SKIPPED, BaselineSkipped),
        (ASSET_PRIVACY_AUDIT, MEMBERSHIP, MembershipAuditRecord),
        (ASSET_CANARY_AUDIT, CANARY, CanaryAuditRecord),
    ],
)
def test_each_stored_shape_is_handed_back_as_its_record_and_stored_unchanged(asset, stored, record):
    loaded = load_stored(asset, stored)
    assert isinstance(loaded, record)
    assert loaded.to_json() == stored
    assert list(loaded.to_json()) == list(stored)  # the stages' key order, which the logged JSON and the card keep


def test_the_attack_rate_at_a_tenth_of_a_percent_is_stored_under_its_dotted_name():
    audit = MembershipAuditRecord.model_validate(MEMBERSHIP)
    assert audit.dp_model.tpr_at_tenth_percent_fpr is None
    assert audit.nonprivate_reference.tpr_at_tenth_percent_fpr == 0.02
    assert audit.model_dump(mode="json", exclude={"mlflow_run_id"})["dp_model"] == MEMBERSHIP["dp_model"]


@pytest.mark.parametrize(
    ("record", "stored"),
    [
        (ReferenceRecord, REFERENCE | {"released": True}),  # the reference is never released
        (BaselineRecord, BASELINE | {"extra": 1}),
        (BaselineSkipped, {"skipped": "off"}),
        (MembershipAuditRecord, MEMBERSHIP | {"dp_model": attack(0.5, None) | {"auc": "high"}}),
        (CanaryAuditRecord, {k: v for k, v in CANARY.items() if k != "summary"}),
    ],
)
def test_a_malformed_record_is_refused(record, stored):
    with pytest.raises(ValidationError):
        record.model_validate(stored)


def test_the_card_states_every_canary_audit_field_it_names():
    section = canary_audit_section(CanaryAuditRecord.model_validate(CANARY))
    assert list(section) == [*CANARY_AUDIT_KEYS, "consistent"]
    assert section["summary"] == CANARY["summary"] and section["consistent"] is False


class JsonRecordingRun(RecordingRun):
    def __init__(self):
        super().__init__()
        self.json: dict[str, dict] = {}

    def log_json(self, payload, path):
        self.json[path] = payload


def test_the_stages_return_their_records_and_log_the_metrics_the_card_reads(project, tmp_path):
    from edgeops.ledger import Budget
    from edgeops.privacy import run_audit_stage, run_baseline_stage, run_reference_stage
    from edgeops.spec import load_declaration

    project.write_csv(table_frame())
    declaration = load_declaration(project.declare(table_declaration()))
    spec = declaration.spec
    dp_model, ledger = train_dp_model(declaration, tmp_path, Budget(20, spec.privacy.delta))
    ref = dp_model.ref

    baseline_run, reference_run, audit_run = RecordingRun(), RecordingRun(), JsonRecordingRun()
    baseline = run_baseline_stage(spec, ref, ledger, baseline_run)
    assert isinstance(baseline, BaselineRecord) and baseline.epsilon == spec.privacy.baseline_epsilon
    assert baseline_run.metrics[BASELINE_TEST_ACCURACY] == baseline.metrics.test.accuracy
    reference = run_reference_stage(spec, ref, ledger, tmp_path / "reference", reference_run)
    assert isinstance(reference, ReferenceRecord) and not reference.released
    assert reference_run.metrics[REFERENCE_TEST_ACCURACY] == reference.metrics.test.accuracy
    audit = run_audit_stage(spec, ref, dp_model, reference, audit_run)
    assert isinstance(audit, MembershipAuditRecord) and audit.mlflow_run_id == audit_run.run_id
    logged = audit_run.json["audit/membership_inference.json"]
    assert logged == {k: v for k, v in audit.to_json().items() if k != "mlflow_run_id"}
    assert audit_run.metrics["mia_dp_model_auc"] == audit.dp_model.auc

    off = spec.model_copy(update={"privacy": spec.privacy.model_copy(update={"baseline_epsilon": 0.0})})
    assert run_baseline_stage(off, ref, ledger, baseline_run) == BaselineSkipped(
        skipped="privacy.baseline_epsilon is 0", mlflow_run_id=baseline_run.run_id
    )
