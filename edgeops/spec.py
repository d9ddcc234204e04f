"""The declaration: one YAML file per pipeline, parsed once into a frozen pydantic model.

Unknown keys are rejected and every error names the file and the YAML path (``targets.1.budgets.max_size_kb``).
Targets, devices and budgets are data; nothing here runs anything.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edgeops.errors import SpecError

NAME_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"
MAX_SPEC_BYTES = 1_000_000


class Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Fraction = Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)]


# ---------------------------------------------------------------- dataset
class SplitSpec(Frozen):
    """A seeded, stratified split. Fractions must add up to 1."""

    train: Fraction = 0.7
    validation: Fraction = 0.1
    test: Fraction = 0.2
    seed: int = 0
    column: str | None = Field(None, description="Use a split column of the source (values train/validation/test) instead of a random split.")
    deduplicate: bool = Field(False, description="Drop exact duplicate rows before splitting (the count is reported).")

    @model_validator(mode="after")
    def _fractions_add_up(self) -> "SplitSpec":
        total = self.train + self.validation + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + validation + test must be 1, got {total:g}")
        return self


class DatasetSpec(Frozen):
    source: str = Field(description="sklearn:digits | csv:<path> | parquet:<path> | images:<folder>; paths relative to the project root")
    kind: Literal["image", "table"]
    label: str = "target"
    features: list[str] | None = Field(None, description="Feature columns in order; default: every column but the label (and split column).")
    n_features: int | None = Field(None, gt=0)
    image_shape: tuple[int, int, int] | None = Field(None, description="(channels, height, width) for kind: image")
    feature_bounds: tuple[float, float] | dict[str, tuple[float, float]] | None = Field(
        None, description="Public bounds of every feature (one pair for all, or per column). Used for validation, clipping and DP."
    )
    value_range: tuple[float, float] | None = Field(
        None, description="Without feature_bounds: a wide public range every value lies in (a sensor's physical limits). Validation "
                          "checks it; per-feature bounds for scaling come from DP quantiles inside it (privacy.statistics_epsilon).")
    classes: list[int] = Field(min_length=2)
    min_rows: int = Field(10, gt=0)
    split: SplitSpec = SplitSpec()

    @field_validator("source")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        scheme, _, rest = value.partition(":")
        if scheme not in {"sklearn", "csv", "parquet", "images"} or not rest:
            raise ValueError("must be sklearn:<name>, csv:<path>, parquet:<path> or images:<folder>")
        if scheme == "sklearn" and rest != "digits":
            raise ValueError("the only built-in sklearn dataset is sklearn:digits")
        return value

    @field_validator("feature_bounds", "value_range")
    @classmethod
    def _ordered_bounds(cls, value):
        if value is None:
            return value
        pairs = value.values() if isinstance(value, dict) else [value]
        for low, high in pairs:
            if not low < high:
                raise ValueError(f"bounds must be (low, high) with low < high, got ({low}, {high})")
        return value

    @model_validator(mode="after")
    def _shape_matches(self) -> "DatasetSpec":
        if len(set(self.classes)) != len(self.classes):
            raise ValueError("classes must be unique")
        if self.feature_bounds is None and self.value_range is None:
            raise ValueError("give feature_bounds (public per-feature bounds) or value_range (a wide public range; the bounds then "
                             "come from DP statistics charged to privacy.statistics_epsilon)")
        if self.kind == "image" and self.image_shape is None:
            raise ValueError("kind: image needs image_shape (channels, height, width)")
        if self.image_shape and self.n_features and self.n_features != self.image_shape[0] * self.image_shape[1] * self.image_shape[2]:
            raise ValueError("n_features must equal channels*height*width of image_shape")
        if self.features and self.n_features and len(self.features) != self.n_features:
            raise ValueError("features and n_features disagree")
        return self

    @property
    def scheme(self) -> str:
        return self.source.split(":", 1)[0]

    @property
    def location(self) -> str:
        return self.source.split(":", 1)[1]

    def bounds_for(self, column: str) -> tuple[float, float]:
        """The public bounds of a column: declared, or the declared value range when bounds come from DP statistics."""
        if isinstance(self.feature_bounds, dict):
            return self.feature_bounds[column]
        return self.feature_bounds or self.value_range

    @property
    def needs_dp_statistics(self) -> bool:
        return self.feature_bounds is None


# ---------------------------------------------------------------- validation
class PoisoningScanSpec(Frozen):
    """Label-noise scan: a training row is suspect when most of its k nearest neighbours carry another label."""

    neighbours: int = Field(10, ge=3, le=100)
    disagreement: float = Field(0.7, gt=0.5, le=1.0, description="share of neighbours with another label that flags a row")
    max_suspect_fraction: float = Field(0.02, ge=0, lt=1)


class ValidationSpec(Frozen):
    expectations: str = Field(description="Great Expectations suite (JSON), relative to the project root")
    max_duplicate_fraction: float = Field(0.0, ge=0, lt=1, description="duplicates allowed within one split")
    min_class_fraction: float = Field(0.0, ge=0, lt=1)
    max_class_fraction: float = Field(1.0, gt=0, le=1)
    poisoning: PoisoningScanSpec = PoisoningScanSpec()


# ---------------------------------------------------------------- privacy
class PrivacySpec(Frozen):
    """The pipeline's total (epsilon, delta) budget and how it is shared out. Composition is basic (sums)."""

    epsilon: PositiveFloat = Field(description="total budget for the dataset, over all runs")
    delta: Fraction = 1e-5
    training_epsilon: PositiveFloat = Field(description="epsilon of one DP-SGD training run")
    statistics_epsilon: float = Field(0.0, ge=0, description="epsilon for DP statistics (only used when bounds are not public)")
    baseline_epsilon: float = Field(0.0, ge=0, description="epsilon of the diffprivlib baseline model; 0 skips it")

    @model_validator(mode="after")
    def _shares_fit(self) -> "PrivacySpec":
        one_run = self.training_epsilon + self.statistics_epsilon + self.baseline_epsilon
        if one_run > self.epsilon + 1e-9:
            raise ValueError(f"one run spends epsilon {one_run:g}, more than the total budget {self.epsilon:g}")
        return self


# ---------------------------------------------------------------- model and training
class ModelSpec(Frozen):
    family: Literal["cnn", "mlp"]
    channels: list[Annotated[int, Field(gt=0, le=1024)]] = Field([16, 32], min_length=1, max_length=4)
    hidden: list[Annotated[int, Field(gt=0, le=4096)]] = Field([64], max_length=4)
    activation: Literal["tanh", "relu"] = "tanh"
    norm: Literal["none", "group", "batch"] = "none"


class FederatedSpec(Frozen):
    """Federated averaging across clients (Flower). Each client trains on its own partition; with `noise_multiplier`
    > 0 the server clips every client's update to `clipping_norm` and adds Gaussian noise to the average (DP-FedAvg,
    client-level DP: the privacy unit is one client's whole data)."""

    clients: int = Field(10, ge=2, le=10_000, description="simulated clients (the training split is partitioned among them)")
    rounds: int = Field(60, gt=0, le=10_000)
    fraction: float = Field(1.0, gt=0, le=1, description="share of clients sampled each round")
    min_clients: int = Field(2, ge=1, description="a round with fewer usable replies fails")
    local_epochs: int = Field(2, gt=0, le=100)
    local_batch_size: int = Field(32, gt=0)
    learning_rate: PositiveFloat = 0.05
    momentum: float = Field(0.9, ge=0, lt=1)
    strategy: Literal["fedavg", "fedprox"] = "fedavg"
    proximal_mu: float = Field(0.01, ge=0, description="FedProx proximal term")
    clipping_norm: PositiveFloat | None = Field(None, description="L2 bound on each client's update; needed for DP")
    noise_multiplier: float = Field(0.0, ge=0, description="Gaussian noise std / (clipping_norm / sampled clients); 0 = not private")
    alpha: PositiveFloat = Field(0.5, description="Dirichlet label-skew concentration of the simulated partitions")
    max_update_mb: PositiveFloat = Field(16.0, description="larger client updates are rejected")
    secure_aggregation: bool = Field(False, description="Flower's SecAgg+: the server sees only the sum of masked updates (clipping moves to the clients)")
    reconstruction_threshold: int = Field(2, ge=2, description="SecAgg+: surviving clients needed to unmask the sum")
    seed: int = 0

    @model_validator(mode="after")
    def _dp_needs_clipping(self) -> "FederatedSpec":
        if self.noise_multiplier > 0 and self.clipping_norm is None:
            raise ValueError("noise_multiplier > 0 needs clipping_norm (the noise is calibrated to it)")
        if self.min_clients > self.clients:
            raise ValueError(f"min_clients {self.min_clients} exceeds clients {self.clients}")
        if self.secure_aggregation and self.strategy != "fedavg":
            raise ValueError("secure_aggregation runs with strategy fedavg (Flower's SecAgg+ workflow)")
        if self.secure_aggregation and self.reconstruction_threshold > self.min_clients:
            raise ValueError(f"reconstruction_threshold {self.reconstruction_threshold} exceeds min_clients {self.min_clients}")
        return self


class PretrainSpec(Frozen):
    """Non-private pre-training on public data before DP-SGD: it reads no private row, so it costs no privacy."""

    source: Literal["synthetic_digits"] = Field(
        description="synthetic_digits: pen-stroke digits 0-9 drawn by edgeops.synthetic (8x8, UCI scan rendering); no download")
    samples: int = Field(20_000, gt=0, le=1_000_000)
    epochs: int = Field(5, gt=0, le=1000)
    learning_rate: PositiveFloat = 3e-3
    batch_size: int = Field(128, gt=0)
    seed: int = 123


class TrainingSpec(Frozen):
    mode: Literal["central", "federated", "both"] = Field(
        "central", description="central: DP-SGD on the pooled split; federated: Flower FedAvg (the released model); both: federated reported beside central")
    federated: FederatedSpec = FederatedSpec()
    epochs: int = Field(30, gt=0, le=10_000)
    batch_size: int = Field(256, gt=0)
    learning_rate: PositiveFloat = 1.0
    momentum: float = Field(0.0, ge=0, lt=1)
    lr_schedule: Literal["constant", "cosine"] = "cosine"
    max_grad_norm: PositiveFloat = 1.0
    accountant: Literal["prv", "rdp"] = "prv"
    seed: int = 0
    checkpoint_every: int = Field(5, gt=0, description="epochs between checkpoints")
    min_accuracy: float = Field(0.0, ge=0, le=1, description="utility floor: test accuracy the DP model must reach (blocking check)")
    ema_decay: float = Field(0.0, ge=0, lt=1, description="exponential moving average of the DP iterates (post-processing, no privacy cost); 0 = off")
    grad_sample_mode: Literal["ew", "hooks"] = Field(
        "ew", description="how Opacus computes per-sample gradients: ew (torch's expanded weights) or hooks (module hooks); the "
                          "same guarantee, ew is faster on the digits CNN (benchmarks/dp_epoch_time.py)")
    pretrain: PretrainSpec | None = Field(None, description="public pre-training before DP-SGD (no privacy cost); none: DP-SGD from random weights")


# ---------------------------------------------------------------- compression targets
class CalibrationSpec(Frozen):
    source: Literal["public", "synthetic", "synthetic_digits"] = Field(
        "synthetic",
        description="public: a declared public data file; synthetic: drawn from public bounds; synthetic_digits: edgeops.synthetic's "
                    "pen-stroke digits (8x8 digit data only). None of them touches private data",
    )
    path: str | None = Field(None, description="public data (csv or parquet with the dataset's feature columns)")
    samples: int = Field(256, gt=0, le=100_000)

    @model_validator(mode="after")
    def _path_for_public(self) -> "CalibrationSpec":
        if self.source == "public" and not self.path:
            raise ValueError("source: public needs a path")
        return self


class DpFinetuneSpec(Frozen):
    """DP-SGD fine-tuning after pruning: reads private data, so it is charged to the privacy ledger."""

    epsilon: PositiveFloat
    epochs: int = Field(10, gt=0, le=1000)
    learning_rate: PositiveFloat | None = None


class PruneStep(Frozen):
    step: Literal["prune"]
    ratio: Fraction = Field(description="share of channels removed from each prunable layer")
    finetune: DpFinetuneSpec | None = Field(None, description="optional DP fine-tuning after pruning (charged to the ledger)")


class Int8Step(Frozen):
    step: Literal["int8"]
    per_channel: bool = True
    calibration: CalibrationSpec = CalibrationSpec()


class Fp16Step(Frozen):
    step: Literal["fp16"]


class StudentSpec(Frozen):
    family: Literal["cnn", "mlp"]
    channels: list[Annotated[int, Field(gt=0, le=1024)]] = Field([8, 16], min_length=1, max_length=4)
    hidden: list[Annotated[int, Field(gt=0, le=4096)]] = Field([32], max_length=4)
    activation: Literal["tanh", "relu"] = "tanh"


class DistillStep(Frozen):
    """Knowledge distillation into a declared smaller student, trained with DP-SGD on the private training split
    against the DP model's outputs (charged to the ledger)."""

    step: Literal["distill"]
    student: StudentSpec
    epsilon: PositiveFloat
    epochs: int = Field(20, gt=0, le=1000)
    temperature: PositiveFloat = 2.0
    weight: float = Field(0.5, ge=0, le=1, description="share of the loss given to matching the teacher")
    learning_rate: PositiveFloat | None = None


RecipeStep = Annotated[Union[PruneStep, Int8Step, Fp16Step, DistillStep], Field(discriminator="step")]


class Budgets(Frozen):
    max_size_kb: PositiveFloat | None = None
    max_peak_memory_kb: PositiveFloat | None = None
    max_latency_p95_ms: PositiveFloat | None = None
    max_accuracy_drop_points: float | None = Field(None, ge=0)


class TargetSpec(Frozen):
    name: str = Field(pattern=NAME_PATTERN)
    runtime: Literal["onnxruntime", "torch", "executorch", "litert"] = Field(
        "onnxruntime", description="onnxruntime (.onnx) and torch (.safetensors, eager PyTorch, CPU or CUDA) are built in; "
                                   "executorch (.pte) and litert (.tflite) need `make runtimes`")
    recipe: list[RecipeStep] = []
    device: str
    budgets: Budgets = Budgets()
    batch_sizes: list[Annotated[int, Field(gt=0, le=4096)]] = [1, 32]
    parity_tolerance: PositiveFloat | None = Field(None, description="max |logit difference| vs the float model; default by precision")

    @property
    def precision(self) -> str:
        steps = {type(s) for s in self.recipe}
        return "int8" if Int8Step in steps else "fp16" if Fp16Step in steps else "fp32"  # a distilled student stays fp32 until quantized


class PowerMeterSpec(Frozen):
    """A file the device keeps updated with its instantaneous power draw (e.g. a Jetson INA3221 rail, a USB meter)."""

    path: str
    unit: Literal["W", "mW", "uW"] = "mW"
    interval_s: float = Field(0.01, gt=0, le=1)


class DeviceSpec(Frozen):
    name: str = Field(pattern=NAME_PATTERN)
    kind: Literal["local", "agent", "cuda"]
    threads: int = Field(1, gt=0, le=256)
    cores: list[int] | None = Field(None, description="CPU cores to pin the benchmark to (local devices)")
    url: str | None = None
    token_env: str | None = Field(None, description="name of the env var that holds the agent's bearer token")
    power_meter: PowerMeterSpec | None = Field(None, description="local devices: a power reading file; agents declare theirs on their own command line")

    @model_validator(mode="after")
    def _agent_needs_url(self) -> "DeviceSpec":
        if self.kind == "agent" and not (self.url and self.token_env):
            raise ValueError("kind: agent needs url and token_env")
        return self


# ---------------------------------------------------------------- monitoring
class ColumnDrift(Frozen):
    method: str | None = Field(None, description="an Evidently stat test name, e.g. ks, psi, wasserstein, jensenshannon")
    threshold: float | None = Field(None, gt=0)


class MonitoringSpec(Frozen):
    """Drift monitoring of incoming batches (CSV or Parquet files dropped in a folder)."""

    incoming: str | None = Field(None, description="folder watched for batches, relative to the project root; default data/incoming/<name>")
    schedule: str = Field("0 * * * *", description="cron for the scheduled re-check")
    settle_seconds: float = Field(5.0, ge=0, description="a file is complete when unchanged this long")
    max_rows: int = Field(5000, gt=0, description="larger batches (and the reference) are sampled to this many rows")
    reference_split: Literal["validation", "train"] = Field(
        "validation", description="reference data; the model's outputs on its own training rows are biased by fitting, so a held-out split is the honest reference")
    method: str | None = Field(None, description="Evidently stat test for numeric features (default: Evidently's choice by data size)")
    threshold: float | None = Field(None, gt=0, description="threshold for that test")
    drift_share: float = Field(0.3, gt=0, le=1, description="share of drifted columns that flags a batch")
    prediction_threshold: float = Field(0.01, gt=0, lt=1, description="p-value below which prediction drift is flagged")
    embedding_threshold: float | None = Field(None, gt=0, description="threshold for embedding/pixel-statistic columns (Evidently's default if unset)")
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
    epsilons: list[Annotated[float, Field(gt=0, le=1)]] = Field([0.02, 0.05], min_length=1, max_length=6,
                                                                 description="L-infinity budgets as fractions of each feature's public span")
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
    holdout: float = Field(0.3, gt=0, lt=1, description="share of the local data kept to measure accuracy before and after")
    returns: Literal["delta", "metrics", "nothing"] = Field("metrics", description="what leaves the device")
    clipping_norm: PositiveFloat | None = None
    noise_multiplier: float = Field(0.0, ge=0, description="> 0: DP-SGD on the head")
    epsilon: PositiveFloat | None = Field(None, description="the job's own budget (the device user's data, not the pipeline's); "
                                                            "needed with noise_multiplier; a job that would spend more is refused")
    max_seconds: PositiveFloat = 10.0
    max_extra_memory_mb: PositiveFloat = 64.0
    min_recovery: float = Field(0.5, ge=0, le=1, description="share of the accuracy lost to the shift that fine-tuning must win back")
    local_shift: LocalShift = LocalShift()

    @model_validator(mode="after")
    def _dp_needs_clipping(self) -> "PersonalizationSpec":
        if self.noise_multiplier > 0 and (self.clipping_norm is None or self.epsilon is None):
            raise ValueError("noise_multiplier > 0 needs clipping_norm and epsilon (the job's own budget)")
        return self


# ---------------------------------------------------------------- delivery
class FleetDevice(Frozen):
    """A device agent that runs a target's production model (`edgeops agent serve --target ...`)."""

    name: str = Field(pattern=NAME_PATTERN)
    target: str
    url: str = Field(description="https://host:port of the agent")
    token_env: str = Field(description="name of the env var that holds the agent's bearer token")
    ca_cert: str | None = Field(None, description="PEM certificate to trust for the agent's TLS (its self-signed cert), relative to the project root")
    encryption_key: str | None = Field(None, description="the device's X25519 public key (PEM file); default: read from the agent over TLS")


class RolloutStage(Frozen):
    fraction: float | None = Field(None, gt=0, le=1, description="share of the target's fleet updated by the end of this stage")
    devices: list[str] | None = Field(None, min_length=1, description="or: these devices by name")

    @model_validator(mode="after")
    def _one_of(self) -> "RolloutStage":
        if (self.fraction is None) == (self.devices is None):
            raise ValueError("a rollout stage names either a fraction or a list of devices")
        return self


class DeliverySpec(Frozen):
    """Signed (and, per device, encrypted) bundles, and the staged rollout that delivers them to the fleet."""

    encrypt: bool = Field(True, description="encrypt each device's bundle for that device's key")
    min_agent_version: str = "0.2.0"
    smoke_rows: int = Field(8, gt=0, le=256, description="synthetic inputs the device checks before activating")
    probation_inferences: int = Field(20, ge=0, description="first inferences watched after activation; a failure rolls back")
    health_wait_s: float = Field(2.0, ge=0, description="how long to watch a stage's devices before the next stage")
    fleet: list[FleetDevice] = []
    stages: list[RolloutStage] = [RolloutStage(fraction=1.0)]


# ---------------------------------------------------------------- card
class CardSpec(Frozen):
    intended_use: str = ""
    out_of_scope: list[str] = []
    license: str = "apache-2.0"
    attestations: str | None = Field(None, description="YAML file of human attestations, relative to the project root")


class PipelineSpec(Frozen):
    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    owners: list[str] = []
    dataset: DatasetSpec
    validation: ValidationSpec
    privacy: PrivacySpec
    model: ModelSpec
    training: TrainingSpec = TrainingSpec()
    targets: list[TargetSpec] = Field(min_length=1)
    devices: list[DeviceSpec] = Field(min_length=1)
    card: CardSpec = CardSpec()
    release: ReleaseSpec = ReleaseSpec()
    monitoring: MonitoringSpec = MonitoringSpec()
    delivery: DeliverySpec = DeliverySpec()
    personalization: PersonalizationSpec = PersonalizationSpec()
    robustness: RobustnessSpec = RobustnessSpec()

    @field_validator("owners")
    @classmethod
    def _owner_form(cls, owners: list[str]) -> list[str]:
        for owner in owners:
            if not (owner.startswith("team:") or re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", owner)):
                raise ValueError(f"owner {owner!r} must be an email address or team:<name>")
        return owners

    @model_validator(mode="after")
    def _cross_references(self) -> "PipelineSpec":
        devices = {d.name: d for d in self.devices}
        if len(devices) != len(self.devices):
            raise ValueError("device names must be unique")
        if len({t.name for t in self.targets}) != len(self.targets):
            raise ValueError("target names must be unique")
        if self.dataset.needs_dp_statistics and self.privacy.statistics_epsilon <= 0:
            raise ValueError("privacy.statistics_epsilon: dataset.feature_bounds is not declared, so per-feature bounds are estimated "
                             "with DP statistics; give them a share of the budget (e.g. 0.5)")
        if self.model.norm == "batch":
            raise ValueError("model.norm: batch is not compatible with DP-SGD (per-sample gradients); use group or none")
        if self.model.family == "cnn" and self.dataset.kind != "image":
            raise ValueError("model.family: cnn needs dataset.kind: image")
        digits_shaped = tuple(self.dataset.image_shape or ()) == (1, 8, 8) and set(self.dataset.classes or []) <= set(range(10))
        if self.training.pretrain is not None and self.training.mode != "central":
            raise ValueError(f"training.pretrain: public pre-training starts central DP-SGD only; training.mode is {self.training.mode!r} "
                             "(federated rounds start from random weights)")
        if self.training.pretrain is not None and not digits_shaped:
            raise ValueError(f"training.pretrain.source: {self.training.pretrain.source} draws 8x8 digits 0-9; this dataset has "
                             f"image_shape {self.dataset.image_shape} and classes {self.dataset.classes}")
        for index, target in enumerate(self.targets):
            if not digits_shaped and any(isinstance(s, Int8Step) and s.calibration.source == "synthetic_digits" for s in target.recipe):
                raise ValueError(f"targets.{index}.recipe: calibration source synthetic_digits draws 8x8 digits 0-9; this dataset has "
                                 f"image_shape {self.dataset.image_shape} and classes {self.dataset.classes}")
            device = devices.get(target.device)
            if device is None:
                raise ValueError(f"targets.{index}.device: unknown device {target.device!r} (declared: {sorted(devices)})")
            kinds = [type(step) for step in target.recipe]
            # int8 is ONNX Runtime's QDQ graph; fp16 is an ONNX graph rewrite, or the torch runtime's own half precision
            graph_steps = sorted({s.step for s in target.recipe if isinstance(s, Int8Step) or (isinstance(s, Fp16Step) and target.runtime != "torch")})
            if target.runtime != "onnxruntime" and graph_steps:
                raise ValueError(f"targets.{index}.recipe: {', '.join(graph_steps)} rewrites the ONNX graph, so it needs runtime "
                                 f"onnxruntime; a {target.runtime} target takes prune and distill steps"
                                 + (" (and fp16)" if target.runtime == "torch" else "") + " and is exported from the float model")
            if target.runtime not in ("onnxruntime", "torch") and device.kind == "cuda":
                raise ValueError(f"targets.{index}.runtime: {target.runtime} runs on CPUs here; device {target.device!r} is a cuda device "
                                 "(use runtime torch or onnxruntime)")
            if Fp16Step in kinds and device.kind != "cuda":
                raise ValueError(f"targets.{index}.recipe: fp16 needs a cuda device; {target.device!r} is {device.kind} "
                                 "(ONNX Runtime's CPU provider has no fast fp16 kernels)")
            if Fp16Step in kinds and Int8Step in kinds:
                raise ValueError(f"targets.{index}.recipe: fp16 and int8 cannot be combined")
            if len(kinds) != len(set(kinds)):
                raise ValueError(f"targets.{index}.recipe: a step appears twice")
            if PruneStep in kinds and kinds.index(PruneStep) != 0:
                raise ValueError(f"targets.{index}.recipe: prune must come first (it works on float weights)")
            if DistillStep in kinds and kinds.index(DistillStep) != 0:
                raise ValueError(f"targets.{index}.recipe: distill must come first (it replaces the float model)")
            if DistillStep in kinds and PruneStep in kinds:
                raise ValueError(f"targets.{index}.recipe: distill and prune cannot be combined (each replaces the float model)")
            student = next((s.student for s in target.recipe if isinstance(s, DistillStep)), None)
            if student is not None and student.family == "cnn" and self.dataset.kind != "image":
                raise ValueError(f"targets.{index}.recipe: a cnn student needs dataset.kind: image")
        targets = {t.name for t in self.targets}
        fleet = {d.name for d in self.delivery.fleet}
        if len(fleet) != len(self.delivery.fleet):
            raise ValueError("delivery.fleet: device names must be unique")
        for index, member in enumerate(self.delivery.fleet):
            if member.target not in targets:
                raise ValueError(f"delivery.fleet.{index}.target: unknown target {member.target!r} (declared: {sorted(targets)})")
        for index, stage in enumerate(self.delivery.stages):
            unknown = sorted(set(stage.devices or []) - fleet)
            if unknown:
                raise ValueError(f"delivery.stages.{index}.devices: not in delivery.fleet: {unknown}")
        return self

    def incoming_folder(self) -> str:
        return self.monitoring.incoming or f"data/incoming/{self.name}"

    def target(self, name: str) -> TargetSpec:
        for target in self.targets:
            if target.name == name:
                return target
        raise KeyError(f"pipeline {self.name!r} has no target {name!r}")

    def device(self, name: str) -> DeviceSpec:
        for device in self.devices:
            if device.name == name:
                return device
        raise KeyError(f"pipeline {self.name!r} has no device {name!r}")


@dataclass(frozen=True)
class Declaration:
    """A validated spec plus where it came from."""

    spec: PipelineSpec
    file: Path
    root: Path  # project root: relative paths in the spec resolve against it
    sha256: str

    def resolve(self, relative: str) -> Path:
        path = Path(relative)
        return path if path.is_absolute() else self.root / path


def parse_spec(text: str | bytes, file: str = "<string>") -> PipelineSpec:
    """Parse and validate YAML text. Raises SpecError naming the file and each YAML path."""
    if isinstance(text, bytes):
        if len(text) > MAX_SPEC_BYTES:
            raise SpecError(file, [("", f"file is larger than {MAX_SPEC_BYTES} bytes")])
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as err:
            raise SpecError(file, [("", f"not UTF-8 text (byte {err.start})")]) from None
    if len(text) > MAX_SPEC_BYTES:
        raise SpecError(file, [("", f"file is larger than {MAX_SPEC_BYTES} bytes")])
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise SpecError(file, [("", f"not valid YAML: {err}".replace("\n", " "))]) from None
    except RecursionError:
        raise SpecError(file, [("", "YAML nested too deeply")]) from None
    if not isinstance(data, dict):
        raise SpecError(file, [("", f"the top level must be a mapping, got {type(data).__name__}")])
    try:
        return PipelineSpec.model_validate(data)
    except ValidationError as err:
        problems = []
        for item in err.errors(include_url=False):
            loc = tuple(p for p in item["loc"] if p not in {"prune", "int8", "fp16", "distill"} and not str(p).startswith(("tuple[", "dict[")))
            problems.append((".".join(str(p) for p in loc), item["msg"]))
        raise SpecError(file, problems) from None
    except RecursionError:
        raise SpecError(file, [("", "declaration nested too deeply")]) from None


def spec_sha256(spec: PipelineSpec) -> str:
    canonical = json.dumps(spec.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def load_declaration(file: str | Path, root: str | Path | None = None) -> Declaration:
    """Read one pipelines/<name>.yaml and check that the files it names exist."""
    path = Path(file)
    if not path.is_file():
        raise SpecError(str(path), [("", "file not found")])
    spec = parse_spec(path.read_bytes(), str(path))
    root_dir = Path(root) if root else path.resolve().parent.parent
    declaration = Declaration(spec=spec, file=path, root=root_dir, sha256=spec_sha256(spec))
    missing = []
    if spec.dataset.scheme in {"csv", "parquet", "images"} and not declaration.resolve(spec.dataset.location).exists():
        missing.append(("dataset.source", f"{declaration.resolve(spec.dataset.location)} does not exist"))
    if not declaration.resolve(spec.validation.expectations).is_file():
        missing.append(("validation.expectations", f"{declaration.resolve(spec.validation.expectations)} does not exist"))
    for index, target in enumerate(spec.targets):
        for step_index, step in enumerate(target.recipe):
            if isinstance(step, Int8Step) and step.calibration.path and not declaration.resolve(step.calibration.path).is_file():
                missing.append((f"targets.{index}.recipe.{step_index}.calibration.path",
                                f"{declaration.resolve(step.calibration.path)} does not exist (target {target.name!r})"))
    if spec.card.attestations and not declaration.resolve(spec.card.attestations).is_file():
        missing.append(("card.attestations", f"{declaration.resolve(spec.card.attestations)} does not exist"))
    if path.stem != spec.name:
        missing.append(("name", f"must match the file name {path.stem!r}"))
    if missing:
        raise SpecError(str(path), missing)
    return declaration


def discover_declarations(pipelines_dir: Path) -> list[Declaration]:
    """Every pipelines/*.yaml, sorted by name. One bad file raises; the error names it."""
    return [load_declaration(path, pipelines_dir.resolve().parent) for path in sorted(pipelines_dir.glob("*.yaml"))]
