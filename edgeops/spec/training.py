"""The model and training sections: the network family, central DP-SGD, federated averaging (Flower) and public
pre-training."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from edgeops.spec.base import Frozen, PositiveFloat

# ---------------------------------------------------------------- model and training
MOBILENET_STRIDE = 8  # edgeops.models.MOBILENET_STRIDE (models imports torch; the declaration does not)


class ModelSpec(Frozen):
    family: Literal["cnn", "mlp", "mobilenet"] = Field(
        description="cnn: conv-pool blocks; mlp; mobilenet: MobileNetV2-style depthwise-separable inverted residual "
        "blocks "
        "(edgeops.models.MobileNet), sized by width_multiplier and resolution"
    )
    channels: list[Annotated[int, Field(gt=0, le=1024)]] = Field([16, 32], min_length=1, max_length=4)
    hidden: list[Annotated[int, Field(gt=0, le=4096)]] = Field([64], max_length=4)
    activation: Literal["tanh", "relu"] = "tanh"
    norm: Literal["none", "group", "batch"] = Field(
        "none",
        description="none: no normalisation (mobilenet: norm-free, residual branches start at zero); group: GroupNorm",
    )
    width_multiplier: float = Field(
        1.0, description="mobilenet: scales every layer's channels (rounded to multiples of 8)"
    )
    resolution: int | None = Field(
        None,
        description="mobilenet: the side of the square image the network runs at (the input is "
        "resized in the graph); a multiple of 8 from 16 to 256; default: the image's own",
    )

    @field_validator("width_multiplier")
    @classmethod
    def _width(cls, value: float) -> float:
        if not 0.25 <= value <= 4.0:
            raise ValueError(
                f"width_multiplier {value:g} is outside 0.25..4 (below 0.25 every layer rounds up to 8 channels, "
                "above 4 "
                "the model no longer fits a device-class budget)"
            )
        return value

    @field_validator("resolution")
    @classmethod
    def _resolution(cls, value: int | None) -> int | None:
        if value is not None and (value % MOBILENET_STRIDE or not 16 <= value <= 256):
            raise ValueError(
                f"resolution {value} is not a multiple of {MOBILENET_STRIDE} from 16 to 256 (the network halves the "
                "image "
                f"three times, so the side must divide by {MOBILENET_STRIDE})"
            )
        return value

    @model_validator(mode="after")
    def _family_fields(self) -> ModelSpec:
        if self.family != "mobilenet":
            if self.resolution is not None:
                raise ValueError("resolution applies to family mobilenet only")
            if self.width_multiplier != 1.0:
                raise ValueError(
                    "width_multiplier applies to family mobilenet only (cnn and mlp take channels and hidden)"
                )
        elif self.activation != "relu":
            raise ValueError("family mobilenet uses relu (activation: relu); tanh does not fuse into int8 convolutions")
        return self


class FederatedSpec(Frozen):
    """Federated averaging across clients (Flower). Each client trains on its own partition; with `noise_multiplier`
    > 0 the server clips every client's update to `clipping_norm` and adds Gaussian noise to the average (DP-FedAvg,
    client-level DP: the privacy unit is one client's whole data)."""

    clients: int = Field(
        10, ge=2, le=10_000, description="simulated clients (the training split is partitioned among them)"
    )
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
    noise_multiplier: float = Field(
        0.0, ge=0, description="Gaussian noise std / (clipping_norm / sampled clients); 0 = not private"
    )
    alpha: PositiveFloat = Field(0.5, description="Dirichlet label-skew concentration of the simulated partitions")
    max_update_mb: PositiveFloat = Field(16.0, description="larger client updates are rejected")
    secure_aggregation: bool = Field(
        False,
        description="Flower's SecAgg+: the server sees only the sum of masked updates (clipping moves to the clients)",
    )
    reconstruction_threshold: int = Field(2, ge=2, description="SecAgg+: surviving clients needed to unmask the sum")
    seed: int = 0

    @model_validator(mode="after")
    def _dp_needs_clipping(self) -> FederatedSpec:
        if self.noise_multiplier > 0 and self.clipping_norm is None:
            raise ValueError("noise_multiplier > 0 needs clipping_norm (the noise is calibrated to it)")
        if self.min_clients > self.clients:
            raise ValueError(f"min_clients {self.min_clients} exceeds clients {self.clients}")
        if self.secure_aggregation and self.strategy != "fedavg":
            raise ValueError("secure_aggregation runs with strategy fedavg (Flower's SecAgg+ workflow)")
        if self.secure_aggregation and self.reconstruction_threshold > self.min_clients:
            raise ValueError(
                f"reconstruction_threshold {self.reconstruction_threshold} exceeds min_clients {self.min_clients}"
            )
        return self


class PretrainSpec(Frozen):
    """Non-private pre-training on public data before DP-SGD: it reads no private row, so it costs no privacy."""

    source: Literal["synthetic_digits"] = Field(
        description="synthetic_digits: pen-stroke digits 0-9 drawn by edgeops.synthetic (8x8, UCI scan rendering); no "
        "download"
    )
    samples: int = Field(20_000, gt=0, le=1_000_000)
    epochs: int = Field(5, gt=0, le=1000)
    learning_rate: PositiveFloat = 3e-3
    batch_size: int = Field(128, gt=0)
    seed: int = 123


class TrainingSpec(Frozen):
    mode: Literal["central", "federated", "both"] = Field(
        "central",
        description="central: DP-SGD on the pooled split; federated: Flower FedAvg (the released model); both: "
        "federated reported beside central",
    )
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
    min_accuracy: float = Field(
        0.0, ge=0, le=1, description="utility floor: test accuracy the DP model must reach (blocking check)"
    )
    ema_decay: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="exponential moving average of the DP iterates (post-processing, no privacy cost); 0 = off",
    )
    grad_sample_mode: Literal["ew", "hooks", "functorch"] = Field(
        "ew",
        description="how Opacus computes per-sample gradients: ew (torch's expanded weights), hooks (module "
        "hooks, with edgeops's exact rule for depthwise convolutions, edgeops.training.grad_samplers) or functorch "
        "(vmap); the same guarantee and the same clipped gradients. ew is the fastest on the digits CNN "
        "(benchmarks/dp_epoch_time.py), hooks on the MobileNet family (benchmarks/dp_grad_sample_modes.py), so "
        "pipelines/examples/digits32_mobilenet.yaml declares it",
    )
    pretrain: PretrainSpec | None = Field(
        None, description="public pre-training before DP-SGD (no privacy cost); none: DP-SGD from random weights"
    )
