"""The DP training stage's record (central or federated): the released model and its privacy statement."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from edgeops.records.base import Record
from edgeops.records.dataset import DatasetRef


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
    ref: DatasetRef = Field(description="The validated dataset trained on.")
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
