"""The privacy section: the total (epsilon, delta) budget, its shares, and the canary audit."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from edgeops.spec.base import Fraction, Frozen, PositiveFloat


# ---------------------------------------------------------------- privacy
class AuditSpec(Frozen):
    """The one-run canary audit (edgeops.audit): DP-SGD with the declared model and settings on public synthetic data,
    audited for membership of canaries, beside the same run with the noise off. No private row, no privacy cost."""

    enabled: bool = Field(
        False,
        description="run it in the pipeline (two extra DP-SGD runs on public data; off by default for time); "
        "central DP-SGD only: a federated pipeline's client-level guarantee is not audited by it",
    )
    canaries: int = Field(
        1000, ge=2, multiple_of=2, description="canaries, each in the training set with probability 1/2"
    )
    canary: Literal["gradient", "input"] = Field(
        "gradient",
        description="gradient: white-box canaries (the clipping norm on one weight each, joined to the clipped "
        "sum; scored on the final weights); input: canary rows scored by their loss (black-box, weaker)",
    )
    confidence: float = Field(0.95, gt=0.5, lt=1)
    seed: int = Field(0, description="public randomness of the audit: canaries, filler and inclusion")


class PrivacySpec(Frozen):
    """The pipeline's total (epsilon, delta) budget and how it is shared out. Composition is basic (sums): the ledger
    adds up the epsilons AND the deltas of every charge and refuses one that would pass either total."""

    epsilon: PositiveFloat = Field(description="total budget for the dataset, over all runs")
    delta: Fraction = Field(
        1e-5, description="total delta for the dataset, over all runs (deltas add up like epsilons)"
    )
    mechanism_delta: Fraction | None = Field(
        None,
        description="delta of each run of an (epsilon, delta) mechanism: DP-SGD, DP-FedAvg, DP fine-tuning, "
        "distillation. "
        "Default: privacy.delta split evenly over those mechanisms in as many full runs as the epsilon budget allows",
    )
    training_epsilon: PositiveFloat = Field(description="epsilon of one DP-SGD training run")
    statistics_epsilon: float = Field(
        0.0, ge=0, description="epsilon for DP statistics (only used when bounds are not public)"
    )
    baseline_epsilon: float = Field(0.0, ge=0, description="epsilon of the diffprivlib baseline model; 0 skips it")
    audit: AuditSpec = Field(AuditSpec(), description="the one-run canary audit of the DP-SGD settings (edgeops.audit)")

    @model_validator(mode="after")
    def _shares_fit(self) -> PrivacySpec:
        one_run = self.training_epsilon + self.statistics_epsilon + self.baseline_epsilon
        if one_run > self.epsilon + 1e-9:
            raise ValueError(f"one run spends epsilon {one_run:g}, more than the total budget {self.epsilon:g}")
        return self
