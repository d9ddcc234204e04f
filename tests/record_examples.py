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
