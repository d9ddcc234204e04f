"""The typed records of edgeops.records: what is stored on disk and what a reader gets back."""

import pytest
from pydantic import ValidationError

from edgeops.records import (
    LATENCY_B1_P50_MS,
    LATENCY_B1_P95_MS,
    CentralPrivacy,
    DpModel,
    FederatedPrivacy,
    benchmark_metrics,
    latency_metric,
)

STATEMENT = {
    "noise_multiplier": 1.1,
    "sample_rate": 0.05,
    "steps": 200,
    "delta": 1e-5,
    "epsilon": 2.9,
    "accountant": "rdp",
    "noise_identity": "",
    "claimed_epsilon": 2.9,
    "target_epsilon": 3.0,
    "ledger_entry": 1,
    "unit": "sample (one row)",
    "sampling": "Poisson (secret)",
    "clipping": "flat per-sample",
    "noise": "secret",
}
CENTRAL = STATEMENT | {
    "max_grad_norm": 1.0,
    "epochs": 5,
    "batch_size": 64,
    "dataset_digest": "d",
    "seed": 0,
    "learning_rate": None,
}
FEDERATED = STATEMENT | {
    "accountant": "flower-rdp",
    "clipping_norm": 1.0,
    "clients": 4,
    "sampled_per_round": 4,
    "secure_aggregation": False,
}
SPLIT = {"accuracy": 0.9, "per_class_accuracy": {"0": 0.8, "1": None}, "ece": 0.05, "n": 40}


def central_record(**changes) -> dict:
    return {
        "weights_path": "w.safetensors",
        "onnx_path": "m.onnx",
        "weights_file_sha256": "a",
        "onnx_sha256": "b",
        "weights_sha256": "c",
        "dataset_digest": "d",
        "metrics": {"validation": SPLIT, "test": SPLIT},
        "privacy": CENTRAL,
        "training_seconds": 1.5,
        "mlflow_run_id": "run",
        "parameters": 10,
        "features": ["f0"],
        "classes": [0, 1],
        "ref": {"digest": "d"},
        "pretrain": None,
    } | changes


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


def test_a_record_refuses_unknown_and_missing_names():
    with pytest.raises(ValidationError):
        DpModel.model_validate(central_record(extra="x"))
    with pytest.raises(ValidationError):
        DpModel.model_validate({k: v for k, v in central_record().items() if k != "weights_sha256"})


def test_benchmark_metric_names_are_the_ones_the_card_reads():
    record = {
        "latency": {"1": {"p50_ms": 0.1, "p95_ms": 0.2, "runs": 100, "warm": True}, "8": {"p50_ms": 0.5}},
        "accuracy_on_device": None,
        "peak_rss_beyond_baseline_kb": 12,
    }
    metrics = benchmark_metrics(record)
    assert metrics == {
        LATENCY_B1_P50_MS: 0.1,
        LATENCY_B1_P95_MS: 0.2,
        "latency_b1_runs": 100,
        latency_metric(8, "p50_ms"): 0.5,
        "accuracy_on_device": 0.0,
        "peak_rss_beyond_baseline_kb": 12,
    }
    assert (LATENCY_B1_P50_MS, LATENCY_B1_P95_MS) == ("latency_b1_p50_ms", "latency_b1_p95_ms")
