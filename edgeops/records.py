"""The records that cross a stage boundary: frozen pydantic models, each owning its field names.

A stage builds its record here; the Dagster IO manager stores it as JSON (``model_dump(mode="json")``) and hands it
back validated, so a reader gets attributes instead of string keys. The MLflow metric names a stage logs and later
stages read back are defined here once as well.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def to_json(self) -> dict[str, Any]:
        """The record as stored on disk: fields a producer never set (the other training mode's) stay absent."""
        return self.model_dump(mode="json", exclude_unset=True)


# ---------------------------------------------------------------- DP training
class SplitMetrics(Record):
    """The released model evaluated on one split (edgeops.training.evaluation.evaluate_logits)."""

    accuracy: float = Field(description="Fraction of rows classified correctly.")
    per_class_accuracy: dict[str, float | None] = Field(
        description="Accuracy per class, keyed by the class index as text (JSON keys); None where the split has no "
        "row of it."
    )
    ece: float = Field(description="Expected calibration error.")
    n: int = Field(description="Rows in the split.")


class DpMetrics(Record):
    validation: SplitMetrics = Field(description="The validation split.")
    test: SplitMetrics = Field(description="The test split.")


class PrivacyStatement(Record):
    """What both training modes state about the released model's guarantee (logged to MLflow as ``dp.<name>``)."""

    noise_multiplier: float = Field(description="Gaussian noise standard deviation over the clipping norm.")
    sample_rate: float = Field(description="Sampling rate of one step (a round's, for federated training).")
    steps: int = Field(description="Noisy steps (rounds, for federated training) accounted.")
    delta: float = Field(description="The delta the epsilon is accounted at.")
    epsilon: float = Field(description="The accountant's epsilon of the released model.")
    accountant: str = Field(description="The privacy accountant (rdp, prv, flower-rdp).")
    noise_identity: str = Field(description="Public identity of the noise secret (a hash); empty if none was recorded.")
    claimed_epsilon: float = Field(description="The epsilon the release claims (the check re-derives it).")
    target_epsilon: float = Field(description="The epsilon the plan aimed at.")
    ledger_entry: int = Field(description="The privacy ledger entry charged for this training.")
    unit: str = Field(description="The privacy unit: what one person's contribution is.")
    sampling: str = Field(description="How each step's batch (round's clients) is drawn.")
    clipping: str = Field(description="How contributions are clipped.")
    noise: str = Field(description="One line on the noise: secret, or NOT PRIVATE (the deterministic test switch).")


class CentralPrivacy(PrivacyStatement):
    """DP-SGD: the plan's ledger parameters plus the statement."""

    max_grad_norm: float = Field(description="Per-sample gradient clipping norm.")
    epochs: int = Field(description="Training epochs.")
    batch_size: int = Field(description="Expected batch size (Poisson sampling).")
    dataset_digest: str = Field(description="Digest of the dataset trained on.")
    seed: int = Field(description="Public seed of the initialisation.")
    learning_rate: float | None = Field(description="Learning rate, None where the optimiser's default applies.")


class FederatedPrivacy(PrivacyStatement):
    """DP-FedAvg: client-level guarantee."""

    clipping_norm: float = Field(description="Clipping norm of each client's update.")
    clients: int = Field(description="Clients taking part.")
    sampled_per_round: int = Field(description="Clients sampled in each round.")
    secure_aggregation: bool = Field(description="Whether SecAgg+ hides each client's update from the server.")


class FederatedSummary(Record):
    rounds: int = Field(description="Rounds run.")
    clients: int = Field(description="Clients taking part.")
    partition_sizes: list[int] = Field(description="Training rows of each client.")


class DpModel(Record):
    """The training stage's output: the released DP model, where it lives, how good and how private it is."""

    weights_path: str = Field(description="The safetensors weights.")
    onnx_path: str = Field(description="The float ONNX export.")
    weights_file_sha256: str = Field(description="sha256 of the weights file, as logged to MLflow.")
    onnx_sha256: str = Field(description="sha256 of the ONNX file, as logged to MLflow.")
    weights_sha256: str = Field(description="sha256 of the weights' tensors (edgeops.models.weights_sha256).")
    dataset_digest: str = Field(description="Digest of the dataset trained on.")
    metrics: DpMetrics = Field(description="Validation and test evaluation of the released model.")
    privacy: CentralPrivacy | FederatedPrivacy = Field(description="The guarantee, as logged to MLflow.")
    training_seconds: float = Field(description="Wall time of the training itself.")
    mlflow_run_id: str = Field(description="The MLflow run of the training stage.")
    parameters: int = Field(description="Trainable parameters of the model.")
    features: list[str] = Field(description="Feature columns in model input order.")
    classes: list[int] = Field(description="Class labels in model output order.")
    ref: dict[Any, Any] = Field(
        description="The validated dataset record trained on; free-form: it is the dataset stage's record."
    )
    pretrain: dict[Any, Any] | None = Field(
        None,
        description="The public pre-training record (central training only), free-form: "
        "edgeops.training.nonprivate owns its keys; None without pre-training.",
    )
    training_mode: Literal["central", "federated"] = Field(
        "central", description="Set (and stored) by federated training only."
    )
    federated: FederatedSummary | None = Field(
        None, description="Rounds, clients and partition sizes (federated training only)."
    )


# ---------------------------------------------------------------- one target's artifact under attack (robustness)
class AdversarialBudget(Record):
    """Accuracy under attack at one perturbation budget."""

    epsilon_fraction_of_span: float = Field(description="L-infinity budget, as a fraction of each feature's span.")
    fgsm_accuracy: float = Field(description="Accuracy on the FGSM inputs (one signed-gradient step).")
    pgd_accuracy: float = Field(description="Accuracy on the PGD inputs.")


class RobustnessMeasurement(Record):
    """What edgeops.robustness.measure_robustness finds on one target's artifact, on the artifact's own runtime."""

    attacks: str = Field(description="How the attacks were crafted and replayed, in words.")
    norm: str = Field(description="The norm of the perturbation budget.")
    rows: int = Field(description="Test rows attacked.")
    pgd_steps: int = Field(description="Steps of each PGD attack.")
    runtime: str = Field(description="The runtime the artifact ran on.")
    clean_accuracy: float = Field(description="Accuracy on the unperturbed rows.")
    budgets: list[AdversarialBudget] = Field(description="One entry per declared budget, in declared order.")


class RobustnessRecord(RobustnessMeasurement):
    """The robustness stage's output: the measurement, the MLflow run holding its metrics, and what it measured."""

    mlflow_run_id: str = Field(description="The MLflow run of the robustness stage (the card cites its metrics).")
    artifact_sha256: str = Field(description="sha256 of the artifact attacked: the card uses only this version's.")
    target: str = Field(description="The target whose artifact was attacked.")


class RobustnessSkipped(Record):
    """The robustness asset's output when robustness.enabled is false: nothing was measured, no MLflow run."""

    skipped: str = Field(description="Why nothing was measured.")
    target: str = Field(description="The target partition.")


# What the robustness asset stores: either form, told apart by isinstance (no shared field says which).
Robustness = RobustnessRecord | RobustnessSkipped


# ---------------------------------------------------------------- one target's artifact fine-tuned (trainability)
class FineTuneCheck(Record):
    passed: bool = Field(description="Whether the fine-tuning job stayed within this budget.")
    detail: str = Field(description="The measured number against the budget, in words.")


class StepLatency(Record):
    p50: float = Field(description="Median milliseconds of one fine-tuning step.")
    p95: float = Field(description="95th percentile milliseconds of one fine-tuning step.")


# The fields only a run fine-tuning job sets (device_epsilon is also set by a job refused over its budget).
_FINE_TUNED = (
    "checks",
    "shift",
    "accuracy_unshifted",
    "accuracy_shifted_before",
    "accuracy_shifted_after",
    "recovery",
    "step_latency_ms",
    "total_seconds",
    "extra_memory_mb",
    "energy",
    "device_epsilon",
    "steps",
    "local_rows",
)


class TrainabilityRecord(Record):
    """edgeops.personalization.measure_trainability's result, as the trainability stage stores it. One of three
    forms: not measured (`measured` false, with the reason), refused (measured, not trainable, with the reason: over
    the job's own epsilon, or the device agent's fine-tuning cannot run the artifact), or fine-tuned (the checks and
    the numbers behind them, no reason)."""

    measured: bool = Field(description="False where this host cannot run the target's fine-tuning.")
    target: str = Field(description="The target whose artifact was fine-tuned.")
    trainable: bool | None = Field(None, description="Whether every check passed; absent when not measured.")
    checks: dict[str, FineTuneCheck] | None = Field(None, description="time, memory and recovery against budgets.")
    shift: dict[str, Any] | None = Field(
        None, description="The declared personalization.local_shift, free-form: edgeops.spec owns its keys."
    )
    accuracy_unshifted: float | None = Field(None, description="Accuracy on the local data before the shift.")
    accuracy_shifted_before: float | None = Field(None, description="Accuracy on the shifted data before fine-tuning.")
    accuracy_shifted_after: float | None = Field(None, description="Accuracy on the shifted data after fine-tuning.")
    recovery: float | None = Field(
        None, description="Share of the accuracy lost to the shift won back; NaN when the shift cost none."
    )
    step_latency_ms: StepLatency | None = Field(None, description="Latency of one fine-tuning step.")
    total_seconds: float | None = Field(None, description="Wall time of the fine-tuning job.")
    extra_memory_mb: float | None = Field(None, description="Memory the job needed beyond the runtime's.")
    energy: dict[str, Any] | None = Field(
        None, description="Energy of the job, free-form: edgeops.hil.personalize owns its keys."
    )
    device_epsilon: float | None = Field(
        None, description="Epsilon the job spends on the device's data; None without DP fine-tuning."
    )
    steps: int | None = Field(None, description="Fine-tuning steps.")
    local_rows: int | None = Field(None, description="Rows of simulated local data.")
    reason: str | None = Field(None, description="Why it was not measured, or not run; absent when fine-tuned.")

    @model_validator(mode="after")
    def _one_of_three_forms(self) -> TrainabilityRecord:
        present = self.model_fields_set
        if "checks" in present:  # fine-tuned: every number, and no reason
            missing = {*_FINE_TUNED, "trainable"} - present
            stray = present & {"reason"}
        else:  # not measured, or refused: the reason, and for a refusal trainable false
            missing = {"reason"} - present
            allowed = {"measured", "target", "reason"} | ({"trainable", "device_epsilon"} if self.measured else set())
            stray = present - allowed
            if self.measured and self.trainable is not False:
                stray |= {"trainable"}
        if missing or stray:
            raise ValueError(
                f"not one of the three trainability forms (missing: {sorted(missing)}, not expected: {sorted(stray)})"
            )
        return self

    def metrics(self) -> dict[str, float]:
        """The MLflow metrics of a fine-tuned record (none otherwise): the names the trainability stage logs."""
        if self.checks is None or self.step_latency_ms is None:
            return {}
        return {
            "accuracy_shifted_before": cast(float, self.accuracy_shifted_before),
            "accuracy_shifted_after": cast(float, self.accuracy_shifted_after),
            "recovery": cast(float, self.recovery),
            "finetune_seconds": cast(float, self.total_seconds),
            "finetune_extra_memory_mb": cast(float, self.extra_memory_mb),
            "finetune_step_p95_ms": self.step_latency_ms.p95,
        }


# ---------------------------------------------------------------- one incoming batch against the reference (drift)
class BatchProblem(Record):
    """One reason a batch was quarantined (edgeops.drift.load_batch / validate_batch)."""

    row: int | None = Field(description="The first row with the problem; None for a whole column or the file.")
    column: str | None = Field(description="The column with the problem; None for whole rows or the file.")
    value: str | None = Field(description="The offending value, as text; None where there is no one value.")
    issue: str = Field(description="The problem, in words.")


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
    problems: list[BatchProblem] = Field(description="The first 20 problems found.")
    drift_detected: None = Field(description="Always None: a quarantined batch is not compared.")
    mlflow_run_id: str = Field(description="The MLflow run of the drift stage.")


# What the drift_report asset stores, one per batch, told apart by `status`.
DriftReport = Annotated[DriftChecked | DriftQuarantined, Field(discriminator="status")]


# ---------------------------------------------------------------- benchmark metric names (MLflow)
ACCURACY_ON_DEVICE = "accuracy_on_device"
PEAK_RSS_BEYOND_BASELINE_KB = "peak_rss_beyond_baseline_kb"


def latency_metric(batch: int | str, statistic: str) -> str:
    """MLflow name of one latency statistic (p50_ms, p95_ms, runs, ...) at one batch size."""
    return f"latency_b{batch}_{statistic}"


LATENCY_B1_P50_MS = latency_metric(1, "p50_ms")
LATENCY_B1_P95_MS = latency_metric(1, "p95_ms")


def benchmark_metrics(record: dict[str, Any]) -> dict[str, Any]:
    """The MLflow metrics of a measured benchmark record: every numeric latency statistic per batch size, the accuracy
    on the device (0 where not computed) and the peak memory beyond the runtime's baseline."""
    latency = {
        latency_metric(batch, statistic): value
        for batch, stats in record["latency"].items()
        for statistic, value in stats.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    }
    return latency | {
        ACCURACY_ON_DEVICE: record[ACCURACY_ON_DEVICE] or 0.0,
        PEAK_RSS_BEYOND_BASELINE_KB: record[PEAK_RSS_BEYOND_BASELINE_KB],
    }
