"""The sections after training: drift monitoring, release gates, adversarial robustness, on-device
personalization, delivery to the fleet, and the model card."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from edgeops.spec.base import NAME_PATTERN, Frozen, PositiveFloat
from edgeops.spec.targets import AgentEndpoint


# ---------------------------------------------------------------- monitoring
class ColumnDrift(Frozen):
    method: str | None = Field(
        None, description="an Evidently stat test name, e.g. ks, psi, wasserstein, jensenshannon"
    )
    threshold: float | None = Field(None, gt=0)


class MonitoringSpec(Frozen):
    """Drift monitoring of incoming batches (CSV or Parquet files dropped in a folder)."""

    incoming: str | None = Field(
        None, description="folder watched for batches, relative to the project root; default data/incoming/<name>"
    )
    schedule: str = Field("0 * * * *", description="cron for the scheduled re-check")
    settle_seconds: float = Field(5.0, ge=0, description="a file is complete when unchanged this long")
    max_rows: int = Field(5000, gt=0, description="larger batches (and the reference) are sampled to this many rows")
    reference_split: Literal["validation", "train"] = Field(
        "validation",
        description="reference data; the model's outputs on its own training rows are biased by fitting, so a "
        "held-out split is the honest reference",
    )
    method: str | None = Field(
        None, description="Evidently stat test for numeric features (default: Evidently's choice by data size)"
    )
    threshold: float | None = Field(None, gt=0, description="threshold for that test")
    drift_share: float = Field(0.3, gt=0, le=1, description="share of drifted columns that flags a batch")
    prediction_threshold: float = Field(0.01, gt=0, lt=1, description="p-value below which prediction drift is flagged")
    embedding_threshold: float | None = Field(
        None, gt=0, description="threshold for embedding/pixel-statistic columns (Evidently's default if unset)"
    )
    columns: dict[str, ColumnDrift] = Field({}, description="per-column method and threshold")
    severity: Literal["warn", "fail"] = "warn"
    on_drift: Literal["none", "retrain"] = "none"


# ---------------------------------------------------------------- release
class ReleaseSpec(Frozen):
    """Promotion gates: how much worse than the current production version a candidate may be, measured side by
    side on the same device at promotion time."""

    max_accuracy_regression_points: float = Field(0.5, ge=0)
    max_latency_regression_pct: float = Field(20.0, ge=0)
    max_memory_regression_pct: float = Field(20.0, ge=0)


# ---------------------------------------------------------------- adversarial robustness
class RobustnessSpec(Frozen):
    """FGSM and PGD against every target's artifact (edgeops.robustness), reported in the card."""

    enabled: bool = True
    epsilons: list[Annotated[float, Field(gt=0, le=1)]] = Field(
        [0.02, 0.05],
        min_length=1,
        max_length=6,
        description="L-infinity budgets as fractions of each feature's public span",
    )
    pgd_steps: int = Field(10, ge=2, le=200)
    samples: int = Field(360, gt=0, description="test rows attacked")


# ---------------------------------------------------------------- on-device personalization
class LocalShift(Frozen):
    kind: str = Field("rotation", description="how the simulated device's data differs (see `edgeops drift simulate`)")
    severity: float = Field(0.67, ge=0, le=1)
    rows: int = Field(360, gt=10, description="rows of local data generated for the trainability measurement")


class PersonalizationSpec(Frozen):
    """Fine-tuning of the last layer on the device, on data that never leaves it (edgeops.hil.personalize)."""

    enabled: bool = False
    layers: Literal["last"] = "last"
    steps: int = Field(400, gt=0, le=100_000)
    learning_rate: PositiveFloat = 0.1
    batch_size: int = Field(64, gt=0)
    holdout: float = Field(
        0.3, gt=0, lt=1, description="share of the local data kept to measure accuracy before and after"
    )
    returns: Literal["delta", "metrics", "nothing"] = Field("metrics", description="what leaves the device")
    clipping_norm: PositiveFloat | None = None
    noise_multiplier: float = Field(0.0, ge=0, description="> 0: DP-SGD on the head")
    epsilon: PositiveFloat | None = Field(
        None,
        description="the job's own budget (the device user's data, not the pipeline's); "
        "needed with noise_multiplier; a job that would spend more is refused",
    )
    max_seconds: PositiveFloat = 10.0
    max_extra_memory_mb: PositiveFloat = 64.0
    min_recovery: float = Field(
        0.5, ge=0, le=1, description="share of the accuracy lost to the shift that fine-tuning must win back"
    )
    local_shift: LocalShift = LocalShift()

    @model_validator(mode="after")
    def _dp_needs_clipping(self) -> PersonalizationSpec:
        if self.noise_multiplier > 0 and (self.clipping_norm is None or self.epsilon is None):
            raise ValueError("noise_multiplier > 0 needs clipping_norm and epsilon (the job's own budget)")
        return self


# ---------------------------------------------------------------- delivery
class FleetDevice(AgentEndpoint):
    """A device agent that runs a target's production model (`edgeops agent serve --target ...`)."""

    name: str = Field(pattern=NAME_PATTERN)
    target: str
    url: str = Field(description="https://host:port of the agent")
    token_env: str = Field(description="name of the env var that holds the agent's bearer token")
    encryption_key: str | None = Field(
        None, description="the device's X25519 public key (PEM file); default: read from the agent over TLS"
    )


class RolloutStage(Frozen):
    fraction: float | None = Field(
        None, gt=0, le=1, description="share of the target's fleet updated by the end of this stage"
    )
    devices: list[str] | None = Field(None, min_length=1, description="or: these devices by name")

    @model_validator(mode="after")
    def _one_of(self) -> RolloutStage:
        if (self.fraction is None) == (self.devices is None):
            raise ValueError("a rollout stage names either a fraction or a list of devices")
        return self


class DeliverySpec(Frozen):
    """Signed (and, per device, encrypted) bundles, and the staged rollout that delivers them to the fleet."""

    encrypt: bool = Field(True, description="encrypt each device's bundle for that device's key")
    min_agent_version: str = "0.2.0"
    smoke_rows: int = Field(8, gt=0, le=256, description="synthetic inputs the device checks before activating")
    probation_inferences: int = Field(
        20, ge=0, description="first inferences watched after activation; a failure rolls back"
    )
    health_wait_s: float = Field(2.0, ge=0, description="how long to watch a stage's devices before the next stage")
    fleet: list[FleetDevice] = []
    stages: list[RolloutStage] = [RolloutStage(fraction=1.0)]


# ---------------------------------------------------------------- card
class CardSpec(Frozen):
    intended_use: str = ""
    out_of_scope: list[str] = []
    license: str = "apache-2.0"
    attestations: str | None = Field(None, description="YAML file of human attestations, relative to the project root")
