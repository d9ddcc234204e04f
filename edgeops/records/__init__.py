"""The records that cross a stage boundary: frozen pydantic models, each owning its field names, one module per
stage (dataset, dp_model, card, compression, benchmark, robustness, trainability, drift; privacy: the
reference, the baseline and the audits), plus the privacy ledger's (ledger) and a release decision's (release); the
card's own record is edgeops.cards.record.

A stage builds its record; the Dagster IO manager stores it as JSON (``to_json()``) and hands it back validated, so a
reader gets attributes instead of string keys. The MLflow metric names a stage logs and later stages read back are
defined beside its record, once. Import them from here: ``from edgeops.records import DpModel``.
"""

from __future__ import annotations

from edgeops.records.base import Record
from edgeops.records.benchmark import (
    ACCURACY_ON_DEVICE,
    LATENCY_B1_P50_MS,
    LATENCY_B1_P95_MS,
    MEASURED_FIELDS,
    PEAK_RSS_BEYOND_BASELINE_KB,
    AgentRun,
    BatchLatency,
    BenchmarkEnergy,
    BenchmarkRecord,
    ReceiptCheck,
    Roofline,
    benchmark_metrics,
    latency_metric,
)
from edgeops.records.card import CardSummary, RegisteredModel
from edgeops.records.compression import ArtifactNotes, OmsSignature, OnnxInt8Kernels, TargetArtifact
from edgeops.records.dataset import DataProblem, DatasetRef, DpFeatureStatistics, StoredSplit
from edgeops.records.dp_model import (
    CentralPrivacy,
    DpMetrics,
    DpModel,
    FederatedPrivacy,
    FederatedSummary,
    PrivacyStatement,
    SplitMetrics,
)
from edgeops.records.drift import (
    DriftChecked,
    DriftQuarantined,
    DriftReport,
    DriftSummary,
    PredictionDrift,
)
from edgeops.records.ledger import LedgerEntry, LedgerView
from edgeops.records.privacy import (
    BASELINE_TEST_ACCURACY,
    BASELINE_TEST_ECE,
    REFERENCE_TEST_ACCURACY,
    Baseline,
    BaselineRecord,
    BaselineSkipped,
    CanaryAuditFindings,
    CanaryAuditRecord,
    GuessResult,
    HeldOutTestMetrics,
    MembershipAttack,
    MembershipAuditRecord,
    ReferenceRecord,
)
from edgeops.records.release import ReleaseOutcome
from edgeops.records.robustness import (
    AdversarialBudget,
    Robustness,
    RobustnessMeasurement,
    RobustnessRecord,
    RobustnessSkipped,
)
from edgeops.records.trainability import FineTuneCheck, StepLatency, TrainabilityRecord

__all__ = [
    "ACCURACY_ON_DEVICE",
    "BASELINE_TEST_ACCURACY",
    "BASELINE_TEST_ECE",
    "LATENCY_B1_P50_MS",
    "LATENCY_B1_P95_MS",
    "MEASURED_FIELDS",
    "PEAK_RSS_BEYOND_BASELINE_KB",
    "REFERENCE_TEST_ACCURACY",
    "AdversarialBudget",
    "AgentRun",
    "ArtifactNotes",
    "Baseline",
    "BaselineRecord",
    "BaselineSkipped",
    "BatchLatency",
    "BenchmarkEnergy",
    "BenchmarkRecord",
    "CanaryAuditFindings",
    "CanaryAuditRecord",
    "CardSummary",
    "CentralPrivacy",
    "DataProblem",
    "DatasetRef",
    "DpFeatureStatistics",
    "DpMetrics",
    "DpModel",
    "DriftChecked",
    "DriftQuarantined",
    "DriftReport",
    "DriftSummary",
    "FederatedPrivacy",
    "FederatedSummary",
    "FineTuneCheck",
    "GuessResult",
    "HeldOutTestMetrics",
    "LedgerEntry",
    "LedgerView",
    "MembershipAttack",
    "MembershipAuditRecord",
    "OmsSignature",
    "OnnxInt8Kernels",
    "PredictionDrift",
    "PrivacyStatement",
    "ReceiptCheck",
    "Record",
    "ReferenceRecord",
    "RegisteredModel",
    "ReleaseOutcome",
    "Robustness",
    "RobustnessMeasurement",
    "RobustnessRecord",
    "RobustnessSkipped",
    "Roofline",
    "SplitMetrics",
    "StepLatency",
    "StoredSplit",
    "TargetArtifact",
    "TrainabilityRecord",
    "benchmark_metrics",
    "latency_metric",
]
