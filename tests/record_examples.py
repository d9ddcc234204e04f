"""Stored records of the measurement and monitoring stages, as their producers write them (one of each form), for the
tests of the records and of their readers."""

from __future__ import annotations

from typing import Any

ROBUSTNESS = {
    "attacks": "crafted on the float DP model (white-box), replayed on this artifact (transfer)",
    "norm": "L-infinity",
    "rows": 200,
    "pgd_steps": 10,
    "runtime": "onnxruntime",
    "clean_accuracy": 0.9,
    "budgets": [
        {"epsilon_fraction_of_span": 0.01, "fgsm_accuracy": 0.85, "pgd_accuracy": 0.8},
        {"epsilon_fraction_of_span": 0.05, "fgsm_accuracy": 0.5, "pgd_accuracy": 0.4},
    ],
    "mlflow_run_id": "robustness-run",
    "artifact_sha256": "a" * 64,
    "target": "mobile_int8",
}
ROBUSTNESS_SKIPPED = {"skipped": "robustness.enabled is false", "target": "mobile_int8"}

TRAINABILITY = {
    "measured": True,
    "target": "mobile_int8",
    "trainable": True,
    "checks": {
        "time": {"passed": True, "detail": "0.40 s (budget 60 s)"},
        "memory": {"passed": True, "detail": "3.1 MB extra (budget 64 MB)"},
        "recovery": {"passed": True, "detail": "recovered 80% of the 20.0 points lost to the shift (need 50%)"},
    },
    "shift": {"kind": "covariate", "severity": "medium", "rows": 360},
    "accuracy_unshifted": 0.9,
    "accuracy_shifted_before": 0.7,
    "accuracy_shifted_after": 0.86,
    "recovery": 0.8,
    "step_latency_ms": {"p50": 0.5, "p95": 0.9},
    "total_seconds": 0.4,
    "extra_memory_mb": 3.1,
    "energy": {"measured": False, "reason": "no energy counter readable by this process on this device"},
    "device_epsilon": None,
    "steps": 100,
    "local_rows": 360,
}
TRAINABILITY_NOT_MEASURED = {"measured": False, "target": "gpu_fp16", "reason": "device 'jetson' is agent"}
TRAINABILITY_REFUSED = {
    "measured": True,
    "target": "mobile_int8",
    "trainable": False,
    "device_epsilon": 4.2,
    "reason": "the job would spend epsilon 4.200 on the device's data, over personalization.epsilon 1; nothing was run",
}


def drift_checked(key: str = "batch-1-ab", weights_sha256: str = "c" * 64, **changes: Any) -> dict[str, Any]:
    return {
        "key": key,
        "batch": f"/incoming/{key}.csv",
        "status": "checked",
        "model_weights_sha256": weights_sha256,
        "mlflow_run_id": f"run-{key}",
        "drift_detected": False,
        "reasons": [],
        "feature_drift_share": 0.0,
        "drifted_features": [],
        "prediction_drift": {"score": 0.5, "method": "chi2_homogeneity", "threshold": 0.01, "drifted": False},
        "embedding_drift_share": 0.0,
        "accuracy_on_batch": None,
        "rows_in_batch": 150,
        "rows_sampled": 150,
        "reference_rows": 300,
        "html_report": f"/monitoring/reports/{key}/drift_report.html",
        "evidently_metrics": 70,
    } | changes


def drift_quarantined(key: str = "bad-cd") -> dict[str, Any]:
    return {
        "key": key,
        "batch": f"/incoming/{key}.csv",
        "status": "quarantined",
        "quarantine": f"/monitoring/quarantine/{key}",
        "problems": [{"row": 3, "column": "f0", "value": "abc", "issue": "not a number"}],
        "drift_detected": None,
        "mlflow_run_id": f"run-{key}",
    }


# One target's artifact as the compressed_model asset stores it (edgeops.records.TargetArtifact), taken from real
# pipeline runs (2026-12-07): an ONNX Runtime int8 target, and an ExecuTorch (tool-runtime) target.
TARGET_ARTIFACT_INT8: dict[str, Any] = {
    "target": "cpu_int8",
    "runtime": "onnxruntime",
    "precision": "int8",
    "device": "cpu",
    "recipe": [
        {"step": "int8", "per_channel": True, "calibration": {"source": "synthetic", "path": None, "samples": 256}}
    ],
    "steps": [
        {
            "step": "int8",
            "format": "QDQ (uint8 activations, int8 weights)",
            "per_channel": True,
            "calibration": "synthetic: 256 inputs drawn within the declared public bounds (no private data)",
            "data": "synthetic",
            "privacy": "no private data read, no cost",
            "int8_dot_product": "avx512_vnni",
        }
    ],
    "artifact_path": "/state/pipelines/digits/artifacts/cpu_int8/cpu_int8.onnx",
    "sha256": "12d528b55d35f995ce36a6b1b456d3c8433b70655baf998fda7f520b2c76e493",
    "size_bytes": 1018,
    "float_size_bytes": 908,
    "parameters": 131,
    "macs": 131,
    "float_accuracy": 1.0,
    "float_per_class_accuracy": {"0": 1.0, "1": 1.0, "2": 1.0},
    "privacy": "post-processing of DP weights; int8: no private data read, no cost",
    "dataset_digest": "e57a4bfd2b299d9c3aeea1ac18f4cd8886bd0d4fd4bc2cfe0cab19918a41db31",
    "parent_weights_sha256": "5d7d83eed584d5e4f57cbf65e881efdbd87debf31f4304d43bd098894ce78c11",
    "notes": {
        "runtime_cpu": "CPUExecutionProvider",
        "int8_kernels": {
            "int8_kernels": [],
            "int8_kernel_share": 0,
            "source": "onnxruntime profiler (kernel_time events)",
            "warning": "no int8 kernel ran: ONNX Runtime executed this quantized graph in float",
        },
    },
    "parity_tolerance": 0.3,
    "noise": "secret",
    "accuracy": 1.0,
    "per_class_accuracy": {"0": 1.0, "1": 1.0, "2": 1.0},
    "ece": 0.22447192320993906,
    "accuracy_drop_points": 0.0,
    "parity_reference": "model.onnx",
    "parity_max_abs_diff": 0.01799851655960083,
    "parity_relative": 0.007971043491464082,
    "top1_agreement": 1.0,
    "oms_signature": {"file": "model.onnx.sig", "public_key_fingerprint": "sha256:489a56db45bfbe14214ed6a172cb1339"},
    "mlflow_model_id": "m-478662e3571442b6aabee0991b443c8c",
    "artifact_file": "model.onnx",
    "registered_model": "watched-cpu_int8",
    "registered_version": 2,
    "mlflow_run_id": "67b798911cd84e9db5e4f767015fde5f",
}
TARGET_ARTIFACT_EXECUTORCH: dict[str, Any] = {
    "target": "phone_pte",
    "runtime": "executorch",
    "precision": "fp32",
    "device": "cpu",
    "recipe": [],
    "steps": [],
    "artifact_path": "/state/pipelines/digits/artifacts/phone_pte/phone_pte.pte",
    "sha256": "ddc4a541cc51b91717590d7d6bb299bc836ce47af5cf60af936ba0d44e6b784d",
    "size_bytes": 4108,
    "float_size_bytes": 908,
    "parameters": 131,
    "macs": 131,
    "float_accuracy": 1.0,
    "float_per_class_accuracy": {"0": 1.0, "1": 1.0, "2": 1.0},
    "privacy": "the DP model itself (no transformation)",
    "dataset_digest": "e57a4bfd2b299d9c3aeea1ac18f4cd8886bd0d4fd4bc2cfe0cab19918a41db31",
    "parent_weights_sha256": "1ae0790166000a96a1aa85a0629533dc0f2b4a33fec89881cd75378a890c0781",
    "notes": {
        "runtime_cpu": "ExecuTorch 1.5 (XNNPACK delegate)",
        "runtime": "executorch",
        "runtime_version": "1.5.1",
        "delegate": "XNNPACK delegate",
        "max_batch": 256,
        "converter": "executorch",
        "converter_version": "1.5.1",
        "kernels": {"xnnpack_delegate_calls": 1, "ops_outside_delegate": []},
    },
    "parity_tolerance": 0.0001,
    "noise": "secret",
    "accuracy": 1.0,
    "per_class_accuracy": {"0": 1.0, "1": 1.0, "2": 1.0},
    "ece": 0.23134162438750097,
    "accuracy_drop_points": 0.0,
    "parity_reference": "model.onnx",
    "parity_max_abs_diff": 3.5762786865234375e-07,
    "parity_relative": 1.7572444158286953e-07,
    "top1_agreement": 1.0,
    "oms_signature": {"file": "phone_pte.pte.sig", "public_key_fingerprint": "sha256:1b336e72270f9feca4ce5f1be374472d"},
    "mlflow_model_id": "m-6f41de5c54e14e9c8588d31d4c236319",
    "artifact_file": "phone_pte.pte",
    "registered_model": "rtab-phone_pte",
    "registered_version": 1,
    "mlflow_run_id": "2b5b34b5fc074f40977e69b0c3fc48f1",
}


def dataset_ref(validated: bool = True) -> dict[str, Any]:
    """A stored raw_dataset (validated: a validated_dataset, with its checks and DP feature statistics)."""
    split = {"digest": "d" * 64, "rows": 3, "file_sha256": "f" * 64}
    stored: dict[str, Any] = {
        "digest": "a" * 64,
        "source": "csv:data/table.csv",
        "features": ["f0", "f1"],
        "label": "label",
        "splits": {name: {**split, "path": f"/data/{name}.parquet"} for name in ("train", "validation", "test")},
        "problems": [{"row": 2, "column": "f1", "value": "n/a", "issue": "not a number"}],
        "row_names": {},
        "dropped_duplicates": 0,
        "stratified": True,
    }
    if validated:
        stored["checks"] = {"schema": "schema matches the declaration"}
        stored["dp_statistics"] = {
            "centre": {"f0": 1.0, "f1": 2.0},
            "spread": {"f0": 0.5, "f1": 0.25},
            "feature_bounds": {"f0": [-1.0, 3.0], "f1": [1.0, 3.0]},
            "regions": {"f0": [0.0, 10.0], "f1": [0.0, 10.0]},
            "constant_columns": [],
            "unlocated_columns": [],
            "histogram_laplace_scale": 8.0,
            "histogram_threshold": 40.0,
            "epsilon": 1.0,
            "delta": 0.0,
            "quantiles": [0.16, 0.84],
            "ledger_entry": 1,
            "scaling": "model input (x - centre) / spread + 0.5",
            "mechanism": "diffprivlib.tools.quantile (exponential mechanism)",
        }
    return stored


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


def central_record(**changes: Any) -> dict[str, Any]:
    """A stored dp_model record of central training (the training stage's DpModel as JSON)."""
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
        "ref": dataset_ref(),
        "pretrain": None,
    } | changes
