"""The typed records of edgeops.records: what is stored on disk and what a reader gets back."""

import json
from pathlib import Path

import pytest
from helpers import table_declaration
from pydantic import ValidationError
from record_examples import FEDERATED, central_record, dataset_ref

from edgeops.errors import DataError
from edgeops.records import (
    LATENCY_B1_P50_MS,
    LATENCY_B1_P95_MS,
    BenchmarkRecord,
    CentralPrivacy,
    DatasetRef,
    DpModel,
    FederatedPrivacy,
    benchmark_metrics,
    latency_metric,
)
from edgeops.spec import PipelineSpec


def test_a_stored_record_round_trips_with_the_keys_its_producer_set():
    central = DpModel.model_validate(central_record())
    assert central.to_json() == central_record()  # no training_mode / federated key appears for central training
    assert isinstance(central.privacy, CentralPrivacy) and central.training_mode == "central"
    assert DpModel.model_validate(central.to_json()) == central

    federated = {k: v for k, v in central_record(privacy=FEDERATED).items() if k != "pretrain"}
    federated |= {
        "training_mode": "federated",
        "federated": {"rounds": 3, "clients": 4, "partition_sizes": [10, 12, 9, 11]},
    }
    model = DpModel.model_validate(federated)
    assert isinstance(model.privacy, FederatedPrivacy) and model.federated.rounds == 3
    assert model.to_json() == federated


def test_a_dataset_record_round_trips_and_refuses_a_renamed_key():
    raw, validated = dataset_ref(validated=False), dataset_ref()
    assert DatasetRef.model_validate(raw).to_json() == raw  # no checks / dp_statistics key before validation
    assert DatasetRef.model_validate(validated).to_json() == validated
    renamed = {**validated, "split": validated["splits"]}
    del renamed["splits"]
    with pytest.raises(ValidationError, match="splits"):
        DatasetRef.model_validate(renamed)
    with pytest.raises(ValidationError, match="feature_bounds"):
        DatasetRef.model_validate(
            {
                **validated,
                "dp_statistics": {k: v for k, v in validated["dp_statistics"].items() if k != "feature_bounds"},
            }
        )


def test_the_dataset_record_resolves_the_feature_bounds_every_stage_scales_with():
    declared = PipelineSpec.model_validate(table_declaration())
    dataset = DatasetRef.model_validate(dataset_ref())
    assert dataset.bounded(declared) is declared  # declared bounds stand; DP statistics are not consulted

    undeclared = table_declaration()
    undeclared["dataset"].pop("feature_bounds")
    undeclared["dataset"]["value_range"] = [-10, 10]
    undeclared["privacy"]["statistics_epsilon"] = 1
    spec = PipelineSpec.model_validate(undeclared)
    bounded = dataset.bounded(spec)
    assert bounded.dataset.bounds_for("f1") == (1.0, 3.0) and bounded.dataset.scaling == "standardise"
    with pytest.raises(DataError, match="no DP statistics yet; materialize validated_dataset"):
        DatasetRef.model_validate(dataset_ref(validated=False)).bounded(spec)


def test_a_record_refuses_unknown_and_missing_names():
    with pytest.raises(ValidationError):
        DpModel.model_validate(central_record(extra="x"))
    with pytest.raises(ValidationError):
        DpModel.model_validate({k: v for k, v in central_record().items() if k != "weights_sha256"})


def test_benchmark_metric_names_are_the_ones_the_card_reads():
    stats = {"p50_ms": 0.1, "p90_ms": 0.15, "p95_ms": 0.2, "p99_ms": 0.3, "mean_ms": 0.12, "std_ms": 0.01}
    record = BenchmarkRecord.model_validate(
        LOCAL_RECORD
        | {
            "latency": {
                "1": stats | {"runs": 100, "throughput_per_s": 8000.0},
                "8": {"measured": False, "reason": "static shape"},
            },
            "accuracy_on_device": None,
            "peak_rss_beyond_baseline_kb": 12,
        }
    )
    metrics = benchmark_metrics(record)
    assert metrics == {
        LATENCY_B1_P50_MS: 0.1,
        LATENCY_B1_P95_MS: 0.2,
        **{latency_metric(1, k): v for k, v in stats.items()},
        "latency_b1_runs": 100,
        latency_metric(1, "throughput_per_s"): 8000.0,
        "accuracy_on_device": 0.0,
        "peak_rss_beyond_baseline_kb": 12,
    }
    assert (LATENCY_B1_P50_MS, LATENCY_B1_P95_MS) == ("latency_b1_p50_ms", "latency_b1_p95_ms")


# A real record: ONNX Runtime on the local host, as the benchmark stage logged it (the harness's result, JSON).
LOCAL_RECORD = json.loads((Path(__file__).parent / "data" / "benchmark_record_local.json").read_text())
NOT_MEASURED = {
    "target": "gpu_half",
    "device_name": "gpu",
    "device_kind": "cuda",
    "artifact_sha256": "ab" * 32,
    "batch_sizes": [1, 32],
    "measured": False,
    "reason": "no CUDA device: torch reports torch.cuda.is_available() False",
}


def test_a_real_benchmark_record_round_trips_unchanged():
    record = BenchmarkRecord.model_validate(LOCAL_RECORD)
    assert record.to_json() == LOCAL_RECORD
    assert json.dumps(record.to_json(), indent=1) == json.dumps(LOCAL_RECORD, indent=1)  # same keys, same order
    assert BenchmarkRecord.model_validate_json(json.dumps(record.to_json())) == record
    assert record.batch1 is not None and record.batch1.measured and "measured" not in record.to_json()["latency"]["1"]
    assert not record.on_gpu and record.memory_kb == LOCAL_RECORD["peak_rss_beyond_baseline_kb"]
    assert BenchmarkRecord.model_validate(NOT_MEASURED).to_json() == NOT_MEASURED


def test_every_producer_shape_is_accepted():
    """The shapes of the paths this host may not run: a CUDA GPU (torch), a static-shape tool runtime's batch, and a
    device agent's answer reduced to its signed receipt (edgeops.hil.bench.receipt_numbers)."""
    cuda = LOCAL_RECORD | {
        "device_kind": "cuda",
        "accelerator": "torch CUDA (NVIDIA H100)",
        "device": LOCAL_RECORD["device"] | {"gpu": "NVIDIA H100", "cuda_version": "12.8", "runtime": "torch"},
        "device_memory_peak_beyond_baseline_kb": 2048,
        "roofline": LOCAL_RECORD["roofline"] | {"peak_probe": "4096x4096 matmul in the artifact's precision"},
    }
    gpu = BenchmarkRecord.model_validate(cuda)
    assert gpu.to_json() == cuda and gpu.on_gpu and gpu.memory_kb == 2048
    static = LOCAL_RECORD | {
        "latency": LOCAL_RECORD["latency"] | {"32": {"measured": False, "reason": "at most 1 rows per call"}}
    }
    assert BenchmarkRecord.model_validate(static).to_json() == static
    receipt = {"body": {"format": "edgeops-benchmark-receipt/v1", "time": 1.5, "result": {}}, "signature": "c2ln"}
    agent = LOCAL_RECORD | {
        "device_kind": "agent",
        "agent": {"version": "0.2.0", "verified_sha256": "ab" * 32, "benchmark_wall_s": 3.25},
        "device_facts": {"runtime": "onnxruntime", "cores": 4},
        "receipt": receipt,
        "receipt_verified": {"key": "ed25519:AAAA", "nonce": "cd" * 16, "time": 1.5},
    }
    signed = BenchmarkRecord.model_validate(agent)
    assert signed.to_json() == agent and signed.receipt == receipt


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"target": None}, "missing field"),
        ({"batch_sizes": "1,32"}, "wrong type"),
        ({"n_eval": "many"}, "wrong type"),
        ({"warm": True}, "unknown key"),
        ({"latency": {"1": {"p50_ms": 0.1}}}, "a measured batch without its statistics"),
        ({"energy": {"measured": True, "joules": 1.0}}, "unknown key in a sub-record"),
        ({"measured": False}, "not measured without a reason"),
        ({"roofline": None}, "measured without a roofline"),
    ],
)
def test_a_malformed_benchmark_record_is_refused(change, why):
    stored = {k: v for k, v in (LOCAL_RECORD | change).items() if v is not None}
    with pytest.raises(ValidationError):
        BenchmarkRecord.model_validate(stored)
    with pytest.raises(ValidationError):
        BenchmarkRecord.model_validate({k: v for k, v in NOT_MEASURED.items() if k != "reason"})
