"""The records of the compression, robustness, trainability and drift stages: stored as their producers wrote them,
handed back validated by the IO manager, and a malformed stored record refused at load."""

from __future__ import annotations

import json
import math

import pytest
from pydantic import ValidationError
from record_examples import (
    ROBUSTNESS,
    ROBUSTNESS_SKIPPED,
    TRAINABILITY,
    TRAINABILITY_NOT_MEASURED,
    TRAINABILITY_REFUSED,
    drift_checked,
    drift_quarantined,
)
from record_examples import TARGET_ARTIFACT_EXECUTORCH as EXECUTORCH
from record_examples import TARGET_ARTIFACT_INT8 as INT8

from edgeops.asset_store import AssetStore, load_stored
from edgeops.records import (
    DriftChecked,
    DriftQuarantined,
    RobustnessRecord,
    RobustnessSkipped,
    TargetArtifact,
    TrainabilityRecord,
)
from edgeops.records.compression import EVALUATED_FIELDS, REGISTRY_FIELDS

# build_target's own record (before build_and_register adds the registry fields and the signature), and an artifact
# that could not run on this host (an fp16 kernel missing from the CPU provider): no evaluation, notes say why.
BUILT = {k: v for k, v in INT8.items() if k not in (*REGISTRY_FIELDS, "oms_signature")}
NOT_EVALUATED = {k: v for k, v in INT8.items() if k not in EVALUATED_FIELDS} | {
    "notes": {"runtime_cpu": "CPUExecutionProvider", "evaluation": "not measured on this host: NotImplemented: fp16"}
}

STORED = [
    ("compressed_model", INT8, TargetArtifact),
    ("compressed_model", EXECUTORCH, TargetArtifact),
    ("compressed_model", BUILT, TargetArtifact),
    ("compressed_model", NOT_EVALUATED, TargetArtifact),
    ("robustness", ROBUSTNESS, RobustnessRecord),
    ("robustness", ROBUSTNESS_SKIPPED, RobustnessSkipped),
    ("trainability", TRAINABILITY, TrainabilityRecord),
    ("trainability", TRAINABILITY_NOT_MEASURED, TrainabilityRecord),
    ("trainability", TRAINABILITY_REFUSED, TrainabilityRecord),
    ("drift_report", drift_checked(), DriftChecked),
    ("drift_report", drift_quarantined(), DriftQuarantined),
]
IDS = [f"{asset}-{i}" for i, (asset, _, _) in enumerate(STORED)]


@pytest.mark.parametrize(("asset", "stored", "kind"), STORED, ids=IDS)
def test_a_stored_record_round_trips_to_the_same_bytes(asset, stored, kind, tmp_path):
    record = load_stored(asset, json.loads(json.dumps(stored)))
    assert type(record) is kind
    assert record.to_json() == stored and list(record.to_json()) == list(stored)  # same keys, values and order
    assert kind.model_validate(record.to_json()) == record
    before, after = tmp_path / "dict.json", tmp_path / "record.json"
    AssetStore.write_json(before, stored)
    AssetStore.write_json(after, record.to_json())
    assert after.read_bytes() == before.read_bytes()


@pytest.mark.parametrize(("asset", "stored", "kind"), STORED, ids=IDS)
def test_a_malformed_stored_record_is_refused_at_load(asset, stored, kind):
    field = "target" if "target" in stored else "mlflow_run_id"
    with pytest.raises(ValidationError):  # a field missing
        load_stored(asset, {k: v for k, v in stored.items() if k != field})
    with pytest.raises(ValidationError):  # a field of the wrong type
        load_stored(asset, stored | {field: ["not", "text"]})
    with pytest.raises(ValidationError):  # a key no producer writes
        load_stored(asset, stored | {"unexpected": 1})


@pytest.mark.parametrize("group", [EVALUATED_FIELDS, REGISTRY_FIELDS])
def test_an_artifact_record_is_evaluated_and_registered_in_full_or_not_at_all(group):
    for field in group:
        with pytest.raises(ValidationError, match="all of"):
            load_stored("compressed_model", {k: v for k, v in INT8.items() if k != field})
    with pytest.raises(ValidationError, match=r"notes\.evaluation"):  # not evaluated, and not saying why
        load_stored("compressed_model", {k: v for k, v in INT8.items() if k not in EVALUATED_FIELDS})
    with pytest.raises(ValidationError, match="notes.unexpected"):  # the nested notes are closed too
        load_stored("compressed_model", INT8 | {"notes": INT8["notes"] | {"unexpected": 1}})


def test_nested_entries_are_checked_too():
    budget = ROBUSTNESS["budgets"][0] | {"pgd_accuracy": "high"}
    with pytest.raises(ValidationError, match="pgd_accuracy"):
        load_stored("robustness", ROBUSTNESS | {"budgets": [budget]})
    with pytest.raises(ValidationError, match="issue"):
        load_stored("drift_report", drift_quarantined() | {"problems": [{"row": 1, "column": None, "value": None}]})
    with pytest.raises(ValidationError):  # a quarantined batch is never compared
        load_stored("drift_report", drift_quarantined() | {"drift_detected": False})
    with pytest.raises(ValidationError):  # a checked batch names the weights it was checked with
        load_stored("drift_report", {k: v for k, v in drift_checked().items() if k != "model_weights_sha256"})


@pytest.mark.parametrize(
    "stored",
    [
        {k: v for k, v in TRAINABILITY.items() if k != "recovery"},  # fine-tuned without a number
        TRAINABILITY | {"reason": "why"},  # fine-tuned, with a reason
        TRAINABILITY_NOT_MEASURED | {"trainable": False},  # not measured, yet a verdict
        TRAINABILITY_NOT_MEASURED | {"accuracy_unshifted": 0.5},  # not measured, yet a number
        {k: v for k, v in TRAINABILITY_REFUSED.items() if k != "reason"},  # refused without the reason
        TRAINABILITY_REFUSED | {"trainable": True},  # refused, yet trainable
    ],
)
def test_a_trainability_record_is_one_of_its_three_forms(stored):
    with pytest.raises(ValidationError, match="trainability forms"):
        load_stored("trainability", stored)


def test_an_unrecoverable_shift_keeps_its_nan_recovery_through_the_store(tmp_path):
    stored = TRAINABILITY | {"recovery": math.nan}
    record = load_stored("trainability", stored)
    path = tmp_path / "trainability.json"
    AssetStore.write_json(path, record.to_json())
    assert "NaN" in path.read_text() and math.isnan(load_stored("trainability", json.loads(path.read_text())).recovery)


def test_the_metrics_a_stage_logs_come_from_its_record():
    assert TrainabilityRecord.model_validate(TRAINABILITY).metrics() == {
        "accuracy_shifted_before": 0.7,
        "accuracy_shifted_after": 0.86,
        "recovery": 0.8,
        "finetune_seconds": 0.4,
        "finetune_extra_memory_mb": 3.1,
        "finetune_step_p95_ms": 0.9,
    }
    assert TrainabilityRecord.model_validate(TRAINABILITY_REFUSED).metrics() == {}
    checked = DriftChecked.model_validate(drift_checked(accuracy_on_batch=0.9, feature_drift_share=None))
    assert checked.metrics() == {
        "drift_detected": 0.0,
        "feature_drift_share": 0.0,
        "embedding_drift_share": 0.0,
        "rows_sampled": 150,
        "accuracy_on_batch": 0.9,
    }
    assert "accuracy_on_batch" not in DriftChecked.model_validate(drift_checked()).metrics()
