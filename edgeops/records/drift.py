"""One incoming batch against the reference: the drift summary, or the quarantine of a malformed batch."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from edgeops.records.base import Record
from edgeops.records.dataset import DataProblem


class PredictionDrift(Record):
    """The prediction-drift test of the released model's outputs on the batch against the reference."""

    score: float = Field(description="The test's score (a p-value for p-value tests).")
    method: str | None = Field(description="The drift test.")
    threshold: float | None = Field(description="The declared threshold of the test.")
    drifted: bool | None = Field(description="Whether the test flags drift; None where it gave no verdict.")


class DriftSummary(Record):
    """edgeops.drift.drift_report's summary of the Evidently report (also written next to it as drift_summary.json)."""

    drift_detected: bool = Field(description="Whether any reason below flags drift.")
    reasons: list[str] = Field(description="Each drift found, in words.")
    feature_drift_share: float | None = Field(description="Share of features drifted; None if not computed.")
    drifted_features: list[str] = Field(description="The drifted features, sorted, at most 20.")
    prediction_drift: PredictionDrift | None = Field(description="The prediction-drift test; None if not computed.")
    embedding_drift_share: float = Field(description="Share of embedding/pixel-statistic columns drifted (0 if none).")
    accuracy_on_batch: float | None = Field(description="Accuracy of the released model when the batch is labelled.")
    rows_in_batch: int = Field(description="Rows in the batch.")
    rows_sampled: int = Field(description="Rows of the batch compared (monitoring.max_rows at most).")
    reference_rows: int = Field(description="Rows of the reference split compared.")
    html_report: str = Field(description="The Evidently HTML report.")
    evidently_metrics: int = Field(description="Metrics in the Evidently report.")

    def metrics(self) -> dict[str, float]:
        """The MLflow metrics the drift stage logs (accuracy only when the batch is labelled)."""
        accuracy = {} if self.accuracy_on_batch is None else {"accuracy_on_batch": self.accuracy_on_batch}
        return {
            "drift_detected": float(self.drift_detected),
            "feature_drift_share": self.feature_drift_share or 0.0,
            "embedding_drift_share": self.embedding_drift_share,
            "rows_sampled": self.rows_sampled,
        } | accuracy


class _Batch(Record):
    key: str = Field(description="The batch partition key (file name and content hash).")
    batch: str = Field(description="The batch's file or folder.")


class _CheckedBatch(_Batch):
    status: Literal["checked"] = Field(description="The batch passed validation and was compared.")
    model_weights_sha256: str = Field(description="The released weights the batch was checked with.")
    mlflow_run_id: str = Field(description="The MLflow run of the drift stage.")


class DriftChecked(DriftSummary, _CheckedBatch):
    """The drift stage's record of a valid batch: the batch, then the summary (pydantic takes the fields of the last
    base first, so the stored keys keep that order)."""


class DriftQuarantined(_Batch):
    """The drift stage's record of a batch that failed validation: quarantined with its problems, never compared."""

    status: Literal["quarantined"] = Field(description="The batch failed validation.")
    quarantine: str = Field(description="The folder the batch and its report were copied to.")
    problems: list[DataProblem] = Field(description="The first 20 problems found.")
    drift_detected: None = Field(description="Always None: a quarantined batch is not compared.")
    mlflow_run_id: str = Field(description="The MLflow run of the drift stage.")


# What the drift_report asset stores, one per batch, told apart by `status`.
DriftReport = Annotated[DriftChecked | DriftQuarantined, Field(discriminator="status")]
