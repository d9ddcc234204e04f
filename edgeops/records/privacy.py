"""The privacy-side stages' records, none of them released: the non-private reference, the diffprivlib baseline, the
membership inference audit (edgeops.privacy.membership) and the one-run canary audit (edgeops.audit)."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from edgeops.records.base import Record
from edgeops.records.dp_model import SplitMetrics

# MLflow metrics the stages log and the card reads back (it cites them, with their run).
REFERENCE_TEST_ACCURACY = "reference_test_accuracy"
BASELINE_TEST_ACCURACY, BASELINE_TEST_ECE = "baseline_test_accuracy", "baseline_test_ece"


class HeldOutTestMetrics(Record):
    """A comparison model is evaluated on the test split only (it has no validation use)."""

    test: SplitMetrics = Field(description="The test split.")


class ReferenceRecord(Record):
    """The non-private reference's output: the same model trained without DP, for comparison only, never released."""

    weights_path: str = Field(description="The reference's safetensors weights (never exported or released).")
    weights_sha256: str = Field(description="sha256 of the weights' tensors (edgeops.models.weights_sha256).")
    metrics: HeldOutTestMetrics = Field(description="Test evaluation; aggregate metrics only, and not DP.")
    released: Literal[False] = Field(description="Always false: the reference is never released.")
    role: str = Field(description="What the reference is for, in words.")
    mlflow_run_id: str = Field(description="The MLflow run of the reference stage (it holds the cited metric).")


class BaselineRecord(Record):
    """The diffprivlib baseline's output: its test metrics at its own share of the budget (the model is not kept)."""

    model: str = Field(description="The baseline model, in words.")
    epsilon: float = Field(description="The epsilon the baseline was trained at (privacy.baseline_epsilon).")
    delta: float = Field(description="The baseline's delta (0: pure DP).")
    ledger_entry: int = Field(description="The privacy ledger entry charged for the baseline.")
    metrics: HeldOutTestMetrics = Field(description="Test evaluation of the baseline.")
    released: Literal[False] = Field(description="Always false: the baseline is reported, never released.")
    mlflow_run_id: str = Field(description="The MLflow run of the baseline stage (it holds the cited metric).")


class BaselineSkipped(Record):
    """The baseline asset's output when privacy.baseline_epsilon is 0: nothing trained, nothing charged."""

    skipped: str = Field(description="Why no baseline was trained.")
    mlflow_run_id: str = Field(description="The MLflow run of the baseline stage.")


# What the baseline asset stores: either form, told apart by isinstance (no shared field says which).
Baseline = BaselineRecord | BaselineSkipped


class MembershipAttack(Record):
    """One model under the loss-threshold membership inference attack (edgeops.privacy.membership)."""

    # The stored key has a dot in it, so the field is named for Python and stored under its alias.
    model_config = ConfigDict(serialize_by_alias=True, validate_by_name=True, validate_by_alias=True)

    attack: str = Field(description="The attack, in words.")
    members: int = Field(description="Training rows attacked (members).")
    nonmembers: int = Field(description="Test rows attacked (non-members), as many as the members.")
    auc: float = Field(description="ROC AUC of the attack's member scores.")
    tpr_at_tenth_percent_fpr: float | None = Field(
        alias="tpr_at_0.1pct_fpr",
        description="True positive rate at 0.1% false positive rate; None where the rows cannot resolve 0.1%.",
    )
    tpr_at_lowest_fpr: float = Field(description="True positive rate at the lowest resolvable false positive rate.")
    lowest_fpr_resolvable: float = Field(description="The lowest false positive rate the rows resolve (1 / members).")
    empirical_epsilon_lower_bound: float = Field(
        description="The epsilon the attack proves at `confidence` (Clopper-Pearson); 0 proves nothing."
    )
    confidence: float = Field(description="Confidence of the lower bound.")


class MembershipAuditRecord(Record):
    """The membership inference asset's output (report-only): the attack on the DP model and on the reference."""

    dp_model: MembershipAttack = Field(description="The attack on the released DP model.")
    nonprivate_reference: MembershipAttack = Field(description="The attack on the non-private reference.")
    claimed_epsilon: float = Field(description="The DP model's claimed epsilon.")
    max_detectable_epsilon: float = Field(description="The most a perfect attack could certify at this sample size.")
    role: str = Field(description="Why the audit is report-only, in words.")
    summary: str = Field(description="One line on the outcome.")
    mlflow_run_id: str = Field(description="The MLflow run of the audit stage.")


# ---------------------------------------------------------------- the one-run canary audit (edgeops.audit)
AUDIT_METHOD = "one-run canary audit (Steinke, Nasr and Jagielski 2023, Corollary 5.4)"
Outcome = Literal["consistent", "violated", "underpowered"]
CanaryKind = Literal["gradient", "input"]
CANARY_DESIGN = {
    "gradient": "white-box gradient canaries: each the clipping norm on one coordinate of the model's largest weight "
    "tensor (distinct coordinates), included with probability 1/2 and then sampled at each step at the plan's "
    "Poisson rate; the training set is public synthetic data of the declared size",
    "input": "random binary images within the declared feature bounds, each with a random label, each included with "
    "probability 1/2; the rest of the training set is public synthetic data",
}
CANARY_SCORE = {
    "gradient": "the weight at the canary's coordinate before training minus after; higher means guessed 'in'",
    "input": "loss of the canary's label before training minus after; higher means guessed 'in'",
}


class GuessResult(Record):
    k_per_side: int = Field(description="guesses 'in' for the k highest scores and 'out' for the k lowest")
    guesses: int = Field(description="r: guesses made (2k)")
    correct: int = Field(description="v: guesses that were right")
    epsilon_lower_bound: float = Field(description="The epsilon these guesses prove at the audit's confidence.")


class CanaryAuditFindings(Record):
    """One audit's outcome: what was trained, what the attack got right, and what that proves. The control is the same
    training with the noise off (noise multiplier 0, clipping on): an attack that cannot catch it is underpowered."""

    method: str = Field(AUDIT_METHOD, description="The audit method and its source.")
    outcome: Outcome = Field(description="consistent, violated or underpowered (never a pass when underpowered).")
    claimed_epsilon: float = Field(description="the epsilon the DP-SGD plan was calibrated to (the claim under audit)")
    delta: float = Field(description="The delta of the claim.")
    epsilon_lower_bound: float = Field(
        description="empirical lower bound on epsilon at `confidence`: the run is not (eps, delta)-DP for any smaller "
        "eps"
    )
    max_detectable_epsilon: float = Field(
        description="the bound if every guess were right: the most this canary count can prove"
    )
    control_epsilon_lower_bound: float | None = Field(
        description="the same attack's bound on the noise-off control run; None when no control ran"
    )
    confidence: float = Field(description="Confidence of the lower bound.")
    canaries: int = Field(description="Canaries drawn (each in with probability 1/2).")
    canaries_included: int = Field(description="Canaries that were in.")
    canary: CanaryKind = Field("input", description="gradient: white-box Dirac gradient canaries; input: canary rows")
    training_rows: int = Field(
        description="rows in the audit's training set (public filler, plus the included canaries for input canaries)"
    )
    noise_multiplier: float = Field(description="Noise multiplier of the audited training.")
    noise: Literal["declared", "off"] = Field(description="off: noise multiplier 0, clipping on (the negative control)")
    sample_rate: float = Field(description="Poisson sampling rate of one step.")
    steps: int = Field(description="Noisy steps of the audited training.")
    max_grad_norm: float = Field(description="Per-sample gradient clipping norm.")
    guesses: list[GuessResult] = Field(description="The attack at each guess count tried.")
    score: str = Field(CANARY_SCORE["input"], description="How a canary is scored, in words.")
    canary_design: str = Field(CANARY_DESIGN["input"], description="How the canaries are made, in words.")
    private_rows_read: int = Field(0, description="Private rows the audit read: none, so it costs no budget.")
    seconds: float = Field(description="Wall time of the audit.")


class CanaryAuditRecord(CanaryAuditFindings):
    """The canary audit asset's output: the findings, their one-line summary and the MLflow run holding them."""

    summary: str = Field(description="One line on the outcome (edgeops.audit.CanaryAuditResult.summary).")
    mlflow_run_id: str = Field(description="The MLflow run of the canary audit stage.")
