"""One target's artifact under attack: FGSM and PGD accuracies per budget, or why it was skipped."""

from __future__ import annotations

from pydantic import Field

from edgeops.records.base import Record


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
