"""Privacy evidence beyond training: an independent epsilon re-derivation and a second accountant (accounting), the
DP feature statistics (feature_statistics), the diffprivlib baseline (baseline), the membership-inference audit with
the empirical epsilon lower bound it implies (membership), and the non-private reference (reference)."""

# What code outside the package imported from edgeops.privacy when it was one module.
from edgeops.privacy.accounting import (
    GAUSSIAN_KEYS,
    card_ledger,
    pld_composed_epsilon,
    rederive_epsilon,
    run_charges,
    run_refusal,
    verify_claim,
)
from edgeops.privacy.baseline import run_baseline_stage, train_dp_baseline
from edgeops.privacy.feature_statistics import (
    LOG_BIN_DECADES,
    constant_columns,
    dp_feature_statistics,
    run_statistics_stage,
    signed_log,
)
from edgeops.privacy.membership import empirical_epsilon_lower_bound, run_audit_stage
from edgeops.privacy.reference import run_reference_stage

__all__ = [
    "GAUSSIAN_KEYS",
    "LOG_BIN_DECADES",
    "card_ledger",
    "constant_columns",
    "dp_feature_statistics",
    "empirical_epsilon_lower_bound",
    "pld_composed_epsilon",
    "rederive_epsilon",
    "run_audit_stage",
    "run_baseline_stage",
    "run_charges",
    "run_reference_stage",
    "run_refusal",
    "run_statistics_stage",
    "signed_log",
    "train_dp_baseline",
    "verify_claim",
]
