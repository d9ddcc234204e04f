"""The asset layout in one place: what the IO manager writes is what the CLI, the run summary and the card read."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError
from record_examples import (
    FEDERATED,
    TARGET_ARTIFACT_INT8,
    central_record,
    dataset_ref,
    drift_checked,
    drift_quarantined,
)

from edgeops.asset_store import AssetNotMaterialized, AssetStore
from edgeops.records import DatasetRef, DpModel, DriftChecked, DriftQuarantined, TargetArtifact


def test_outputs_are_read_back_where_they_were_written_partitioned_or_not(tmp_path):
    store = AssetStore.under_home(tmp_path)
    AssetStore.write_json(store.path("digits", "validated_dataset"), dataset_ref())
    AssetStore.write_json(store.path_of_key(["digits", "compressed_model"], "mobile_int8"), TARGET_ARTIFACT_INT8)

    assert (tmp_path / "assets" / "digits" / "validated_dataset" / "__all__.json").exists()
    assert store.validated_dataset("digits") == DatasetRef.model_validate(dataset_ref())
    assert store.compressed_model("digits", "mobile_int8") == TargetArtifact.model_validate(TARGET_ARTIFACT_INT8)
    assert store.compressed_model_if_present("digits", "tiny") is None
    assert not list((tmp_path / "assets").rglob("*.tmp")), "the temporary file of an atomic write was left behind"


def test_a_missing_output_names_the_asset_the_file_and_what_to_do(tmp_path):
    store = AssetStore.under_home(tmp_path)
    with pytest.raises(AssetNotMaterialized, match=r"'digits': compressed_model for tiny .*tiny\.json.*edgeops run"):
        store.compressed_model("digits", "tiny")
    assert store.read_if_present("digits", "model_card") is None


def test_an_unreadable_file_is_absent_for_summaries_but_an_error_for_readers(tmp_path):
    store = AssetStore.under_home(tmp_path)
    path = store.path("digits", "validated_dataset")
    path.parent.mkdir(parents=True)
    path.write_text("{half a file")
    assert store.read_if_present("digits", "validated_dataset") is None
    with pytest.raises(json.JSONDecodeError):
        store.validated_dataset("digits")


def test_drift_reports_come_in_partition_key_order_and_the_model_from_either_training_mode(tmp_path):
    store = AssetStore.under_home(tmp_path)
    for batch in ("batch-2", "batch-10"):
        AssetStore.write_json(store.path("digits", "drift_report", batch), drift_checked(batch))
    AssetStore.write_json(store.path("digits", "drift_report", "batch-1"), drift_quarantined("batch-1"))
    reports = store.drift_reports("digits")
    assert [r.key for r in reports] == ["batch-1", "batch-10", "batch-2"]
    assert [type(r) for r in reports] == [DriftQuarantined, DriftChecked, DriftChecked]
    assert store.drift_reports("other") == []

    assert store.released_model("digits") is None
    federated = central_record(privacy=FEDERATED, training_mode="federated", weights_sha256="f")
    AssetStore.write_json(store.path("digits", "federated_model"), federated)
    assert store.released_model("digits") == DpModel.model_validate(federated)
    AssetStore.write_json(store.path("digits", "dp_model"), central_record())
    assert store.released_model("digits") == DpModel.model_validate(central_record())  # central wins when both exist


def test_a_malformed_drift_report_is_refused_when_read(tmp_path):
    store = AssetStore.under_home(tmp_path)
    report = drift_checked("batch-1")
    del report["rows_sampled"]
    AssetStore.write_json(store.path("digits", "drift_report", "batch-1"), report)
    with pytest.raises(ValidationError, match="rows_sampled"):
        store.drift_reports("digits")


def test_a_stored_benchmark_is_read_back_as_the_validated_record(tmp_path):
    from pydantic import ValidationError

    from edgeops.records import BenchmarkRecord

    store = AssetStore.under_home(tmp_path)
    assert store.benchmark("digits", "gpu_half") is None
    stored = {
        "target": "gpu_half",
        "device_name": "gpu",
        "device_kind": "cuda",
        "artifact_sha256": "ab" * 32,
        "batch_sizes": [1],
        "measured": False,
        "reason": "no CUDA device",
    }
    AssetStore.write_json(store.path_of_key(["digits", "hil_benchmark"], "gpu_half"), stored)
    record = store.benchmark("digits", "gpu_half")
    assert isinstance(record, BenchmarkRecord) and record.reason == "no CUDA device" and record.to_json() == stored
    AssetStore.write_json(store.path_of_key(["digits", "hil_benchmark"], "gpu_half"), stored | {"extra": 1})
    with pytest.raises(ValidationError):
        store.benchmark("digits", "gpu_half")


def test_a_malformed_stored_artifact_record_is_refused_when_read(tmp_path):
    store = AssetStore.under_home(tmp_path)
    path = store.path_of_key(["digits", "compressed_model"], "mobile_int8")
    AssetStore.write_json(path, {k: v for k, v in TARGET_ARTIFACT_INT8.items() if k != "sha256"})
    with pytest.raises(ValidationError, match="sha256"):
        store.compressed_model("digits", "mobile_int8")
    with pytest.raises(ValidationError, match="sha256"):
        store.compressed_model_if_present("digits", "mobile_int8")
