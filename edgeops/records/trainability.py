"""One target's artifact fine-tuned on the device's simulated local data: measured, refused or not measured."""

from __future__ import annotations

from typing import Any, cast

from pydantic import Field, model_validator

from edgeops.records.base import Record


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
