"""One target's artifact: what the compression stage built (edgeops.compression.build.build_target), measured and, once
edgeops.registry.build_and_register has logged it, registered. The compressed_model asset's record, per target."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from edgeops.records.base import Record

# The fields only a build that ran the artifact on this host has (all or none: an fp16 kernel missing from the CPU
# provider leaves them all out, and notes.evaluation says why).
EVALUATED_FIELDS = (
    "accuracy",
    "per_class_accuracy",
    "ece",
    "accuracy_drop_points",
    "parity_reference",
    "parity_max_abs_diff",
    "parity_relative",
    "top1_agreement",
)
# The fields build_and_register adds (all or none: build_target's own record has none of them).
REGISTRY_FIELDS = ("mlflow_model_id", "artifact_file", "registered_model", "registered_version", "mlflow_run_id")


class OnnxInt8Kernels(Record):
    """Which int8 kernels ONNX Runtime ran on the build host: a quantized graph can still run in float."""

    int8_kernels: list[str] = Field(description="The int8 kernels that ran, sorted.")
    # An int when no int8 kernel ran (the sum of nothing): kept as produced so the stored JSON does not change.
    int8_kernel_share: int | float = Field(description="Their share of the kernel time, 0..1.")
    source: str = Field(description="Where the shares come from (the ONNX Runtime profiler).")
    warning: str | None = Field(None, description="Set when no int8 kernel ran.")


class ArtifactNotes(Record):
    """How the artifact runs on the build host. ONNX Runtime and torch: runtime_cpu (int8 ONNX: int8_kernels);
    ExecuTorch and LiteRT: what their export reported (edgeops.runtimes.export)."""

    runtime_cpu: str = Field(description="The runtime (and provider) the accuracy and parity were measured with.")
    int8_kernels: OnnxInt8Kernels | None = Field(None, description="ONNX Runtime int8 targets: kernels that ran.")
    runtime: str | None = Field(None, description="Tool runtimes: the runtime name.")
    runtime_version: str | None = Field(None, description="Tool runtimes: the runtime's version.")
    delegate: str | None = Field(None, description="Tool runtimes: the delegate or provider the artifact runs on.")
    max_batch: int | None = Field(None, description="Tool runtimes: the largest batch one call takes.")
    converter: str | None = Field(None, description="Tool runtimes: the package that converted the model.")
    converter_version: str | None = Field(None, description="Tool runtimes: its version.")
    kernels: dict[str, Any] | None = Field(
        None, description="Tool runtimes: the converter's kernel report; free-form, its keys differ per runtime."
    )
    int8_kernels_in_use: bool | None = Field(None, description="Tool runtimes, int8: whether an int8 kernel runs.")
    int8_warning: str | None = Field(None, description="Tool runtimes, int8: set when no int8 kernel runs.")
    evaluation: str | None = Field(None, description="Why the artifact was not evaluated on this host, when not.")


class OmsSignature(Record):
    """The artifact's OpenSSF model signature, logged beside it in MLflow."""

    file: str = Field(description="The signature's file name under the run's model/ folder.")
    public_key_fingerprint: str = Field(description="Fingerprint of the key that signed it.")


class TargetArtifact(Record):
    """One target's artifact: built, checked for parity and accuracy where it runs here, and registered."""

    target: str = Field(description="The target's name (the partition key).")
    runtime: Literal["onnxruntime", "torch", "executorch", "litert"] = Field(description="The target's runtime.")
    precision: Literal["fp32", "fp16", "int8"] = Field(description="The artifact's precision.")
    device: str = Field(description="The declared device the target runs on.")
    recipe: list[dict[str, Any]] = Field(description="The declared recipe steps, as declared (free-form per step).")
    steps: list[dict[str, Any]] = Field(
        description="What each recipe step did (data read, privacy, format, noise): free-form, keys differ per step."
    )
    artifact_path: str = Field(description="The artifact file on this host.")
    sha256: str = Field(description="sha256 of the artifact file.")
    size_bytes: int = Field(description="Size of the artifact file.")
    float_size_bytes: int = Field(description="Size of the DP model's float ONNX file.")
    parameters: int = Field(description="Parameters of the final torch model.")
    macs: int = Field(description="Multiply-accumulates of one row through the final torch model.")
    float_accuracy: float = Field(description="Test accuracy of the DP float model.")
    float_per_class_accuracy: dict[str, float | None] = Field(
        description="Per class (label index as text): the DP float model's accuracy; None for a class absent."
    )
    privacy: str = Field(description="What the recipe cost in privacy, in words.")
    dataset_digest: str = Field(description="Digest of the validated dataset the DP model was trained on.")
    parent_weights_sha256: str = Field(description="sha256 of the DP model's weights the recipe started from.")
    notes: ArtifactNotes = Field(description="How the artifact runs on the build host.")
    parity_tolerance: float = Field(description="The largest relative |logit difference| allowed.")
    noise: str = Field(description="The artifact's noise statement (edgeops.noise.combined_statement).")
    accuracy: float | None = Field(None, description="Test accuracy of the artifact on its runtime.")
    per_class_accuracy: dict[str, float | None] | None = Field(None, description="Per class: the artifact's accuracy.")
    ece: float | None = Field(None, description="Expected calibration error of the artifact.")
    accuracy_drop_points: float | None = Field(None, description="Float accuracy minus artifact accuracy, points.")
    parity_reference: str | None = Field(None, description="The float graph parity compares with (file name).")
    parity_max_abs_diff: float | None = Field(None, description="The largest |logit difference| to the reference.")
    parity_relative: float | None = Field(None, description="That difference relative to the largest |logit|.")
    top1_agreement: float | None = Field(None, description="Share of rows whose top-1 class matches the reference.")
    oms_signature: OmsSignature | None = Field(None, description="The model signature, when a key was at hand.")
    mlflow_model_id: str | None = Field(None, description="The target's MLflow LoggedModel.")
    artifact_file: str | None = Field(None, description="The artifact's name under the run's model/ folder.")
    registered_model: str | None = Field(None, description="The registered model (<pipeline>-<target>).")
    # An int from MLflow's SQL and file stores, a string from a tracking server: kept as the registry gave it.
    registered_version: int | str | None = Field(None, description="The registered version.")
    mlflow_run_id: str | None = Field(None, description="The compression stage's MLflow run.")

    @model_validator(mode="after")
    def _all_or_none(self) -> TargetArtifact:
        for group, what in ((EVALUATED_FIELDS, "an evaluation"), (REGISTRY_FIELDS, "a registration")):
            present = [name for name in group if name in self.model_fields_set]
            if present and len(present) != len(group):
                missing = sorted(set(group) - set(present))
                raise ValueError(f"{what} is all of {', '.join(group)} or none; missing {', '.join(missing)}")
        if "accuracy" not in self.model_fields_set and self.notes.evaluation is None:
            raise ValueError("no accuracy and no notes.evaluation saying why")
        return self

    @property
    def registered_run_id(self) -> str:
        """The compression stage's MLflow run of a registered artifact (the card's evidence); a build-only record
        (build_target's, before build_and_register) has none."""
        if self.mlflow_run_id is None:
            raise ValueError(f"target {self.target!r}: the artifact record was never registered (no MLflow run)")
        return self.mlflow_run_id

    @property
    def evaluated(self) -> bool:
        """Whether the artifact ran on this host (accuracy and parity measured)."""
        return "accuracy" in self.model_fields_set
