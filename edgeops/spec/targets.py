"""Compression targets and devices: each target's runtime, recipe steps (prune, int8, fp16, distill) and budgets,
and the devices that benchmark them (local, cuda, or a device agent reached over TLS)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from edgeops.spec.base import NAME_PATTERN, Fraction, Frozen, PositiveFloat


# ---------------------------------------------------------------- compression targets
class CalibrationSpec(Frozen):
    source: Literal["public", "synthetic", "synthetic_digits"] = Field(
        "synthetic",
        description="public: a declared public data file; synthetic: drawn from public bounds; synthetic_digits: "
        "edgeops.synthetic's "
        "pen-stroke digits (8x8 digit data only). None of them touches private data",
    )
    path: str | None = Field(None, description="public data (csv or parquet with the dataset's feature columns)")
    samples: int = Field(256, gt=0, le=100_000)

    @model_validator(mode="after")
    def _path_for_public(self) -> CalibrationSpec:
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
    finetune: DpFinetuneSpec | None = Field(
        None, description="optional DP fine-tuning after pruning (charged to the ledger)"
    )


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


RecipeStep = Annotated[PruneStep | Int8Step | Fp16Step | DistillStep, Field(discriminator="step")]


class Budgets(Frozen):
    max_size_kb: PositiveFloat | None = None
    max_peak_memory_kb: PositiveFloat | None = None
    max_latency_p95_ms: PositiveFloat | None = None
    max_accuracy_drop_points: float | None = Field(None, ge=0)


# The checks a release gate reads from a registered version (edgeops.check.<name> on the version; <name>_budget in
# Dagster): compression budgets, then the benchmark's.
GATED_CHECKS = ("size", "accuracy_drop", "parity", "latency", "memory")


class TargetSpec(Frozen):
    name: str = Field(pattern=NAME_PATTERN)
    runtime: Literal["onnxruntime", "torch", "executorch", "litert"] = Field(
        "onnxruntime",
        description="onnxruntime (.onnx) and torch (.safetensors, eager PyTorch, CPU or CUDA) are built in; "
        "executorch (.pte) and litert (.tflite) need `make runtimes`",
    )
    recipe: list[RecipeStep] = []
    device: str
    budgets: Budgets = Budgets()
    batch_sizes: list[Annotated[int, Field(gt=0, le=4096)]] = [1, 32]
    parity_tolerance: PositiveFloat | None = Field(
        None, description="max |logit difference| vs the float model; default by precision"
    )
    accept_not_measured: list[str] = Field(
        [],
        description="checks that a release may pass while they are not measured (e.g. [latency_budget, memory_budget] "
        "for a "
        "GPU target promoted from a host without CUDA); every other not-measured check keeps the release gate shut",
    )

    @field_validator("accept_not_measured")
    @classmethod
    def _known_checks(cls, value: list[str]) -> list[str]:
        allowed = [f"{name}_budget" for name in GATED_CHECKS]
        unknown = [v for v in value if v not in allowed]
        if unknown:
            raise ValueError(f"accept_not_measured: unknown check(s) {unknown}; the gated checks are {allowed}")
        return value

    @property
    def precision(self) -> str:
        steps = {type(s) for s in self.recipe}
        return (
            "int8" if Int8Step in steps else "fp16" if Fp16Step in steps else "fp32"
        )  # a distilled student stays fp32 until quantized


class PowerMeterSpec(Frozen):
    """A file the device keeps updated with its instantaneous power draw (e.g. a Jetson INA3221 rail, a USB meter)."""

    path: str
    unit: Literal["W", "mW", "uW"] = "mW"
    interval_s: float = Field(0.01, gt=0, le=1)


def agent_transport_problem(url: str, ca_cert: str | None, insecure: bool) -> str | None:
    """Why edgeops must not send a bearer token to this agent url, or None. Shared by benchmark devices (`devices:`)
    and delivery fleet entries (`delivery.fleet`): https (with a pinned `ca_cert`, or the system's CAs), or plain http
    to loopback, or plain http elsewhere only where the entry says `insecure: true`."""
    import ipaddress
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError as err:
        return f"url {url!r} is not a valid URL: {err}"
    if parts.scheme not in ("http", "https") or not host:
        return f"url {url!r} must be http(s)://host:port"
    if parts.scheme == "https":
        return None
    if ca_cert:
        return f"ca_cert is for TLS: url {url!r} is plain http (use https://)"
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if loopback or insecure:
        return None
    return (
        f"url {url!r} is plain http to {host}, beyond loopback: the bearer token would cross the network in clear. "
        "Use https:// with ca_cert (the agent's --tls-cert or --self-signed-tls certificate), or set insecure: true"
    )


class AgentEndpoint(Frozen):
    """How edgeops reaches a device agent over the network (TLS settings and the rule above)."""

    ca_cert: str | None = Field(
        None,
        description="PEM certificate (the agent's self-signed cert, or its CA) that alone is trusted "
        "for the agent's TLS, relative to the project root; default: the system's CAs",
    )
    insecure: bool = Field(
        False,
        description="allow a plain http:// url to a host beyond loopback (the token crosses the network in clear)",
    )

    @model_validator(mode="after")
    def _safe_transport(self) -> AgentEndpoint:
        url = getattr(self, "url", None)
        if url:
            problem = agent_transport_problem(url, self.ca_cert, self.insecure)
            if problem:
                raise ValueError(f"device {getattr(self, 'name', '?')!r}: {problem}")
        return self


class DeviceSpec(AgentEndpoint):
    name: str = Field(pattern=NAME_PATTERN)
    kind: Literal["local", "agent", "cuda"]
    threads: int = Field(1, gt=0, le=256)
    cores: list[int] | None = Field(None, description="CPU cores to pin the benchmark to (local devices)")
    url: str | None = Field(
        None, description="agents: https://host:port (or http:// on loopback, or with insecure: true)"
    )
    token_env: str | None = Field(None, description="name of the env var that holds the agent's bearer token")
    power_meter: PowerMeterSpec | None = Field(
        None, description="local devices: a power reading file; agents declare theirs on their own command line"
    )
    receipt_public_key: str | None = Field(
        None,
        pattern=r"^ed25519:[A-Za-z0-9+/]{43}=$",
        description="agents: the public key that signs this device's benchmark receipts, as the agent prints "
        "it on start (<home>/identity/receipt_ed25519.pub.txt); results it did not sign are refused",
    )

    @model_validator(mode="after")
    def _agent_needs_url(self) -> DeviceSpec:
        if self.kind == "agent" and not (self.url and self.token_env):
            raise ValueError("kind: agent needs url and token_env")
        if self.kind != "agent" and (self.url or self.ca_cert or self.insecure):
            raise ValueError(f"device {self.name!r}: url, ca_cert and insecure are for kind: agent")
        return self
