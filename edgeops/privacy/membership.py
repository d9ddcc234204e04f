"""Membership inference (Yeom et al.'s loss-threshold attack) and the empirical epsilon lower bound it implies;
report-only against the DP model and the non-private reference."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np

from edgeops.records import DpModel, MembershipAttack, MembershipAuditRecord, ReferenceRecord

if TYPE_CHECKING:
    from edgeops.lineage import LineageRun
    from edgeops.records import DatasetRef
    from edgeops.spec import PipelineSpec


def _per_example_loss(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return cast(np.ndarray, -log_probs[np.arange(len(labels)), labels])


def _clopper_pearson(successes: int, trials: int, alpha: float) -> tuple[float, float]:
    from scipy.stats import beta

    low = 0.0 if successes == 0 else float(beta.ppf(alpha / 2, successes, trials - successes + 1))
    high = 1.0 if successes == trials else float(beta.ppf(1 - alpha / 2, successes + 1, trials - successes))
    return low, high


def empirical_epsilon_lower_bound(
    member_scores: np.ndarray, nonmember_scores: np.ndarray, delta: float, alpha: float = 0.05
) -> float:
    """The largest epsilon the attack proves at confidence 1-alpha: for each threshold, with Clopper-Pearson bounds
    (TPR low, FPR high), epsilon >= log((TPR_low - delta) / FPR_high) (and the symmetric bound on the negatives).
    A bound of 0 means the attack proves nothing."""
    scores = np.concatenate([member_scores, nonmember_scores])
    best = 0.0
    n_in, n_out = len(member_scores), len(nonmember_scores)
    thresholds = np.unique(scores)
    # Bonferroni over the thresholds tried keeps the bound valid despite the search.
    per_test_alpha = alpha / max(len(thresholds), 1)
    for threshold in thresholds:
        tp = int((member_scores >= threshold).sum())
        fp = int((nonmember_scores >= threshold).sum())
        tpr_low, _ = _clopper_pearson(tp, n_in, per_test_alpha)
        _, fpr_high = _clopper_pearson(fp, n_out, per_test_alpha)
        tnr_low, _ = _clopper_pearson(n_out - fp, n_out, per_test_alpha)
        _, fnr_high = _clopper_pearson(n_in - tp, n_in, per_test_alpha)
        for numerator, denominator in ((tpr_low - delta, fpr_high), (tnr_low - delta, fnr_high)):
            if numerator > 0 and denominator > 0:
                best = max(best, math.log(numerator / denominator))
    return best


def loss_threshold_attack(
    member_logits: np.ndarray,
    member_labels: np.ndarray,
    nonmember_logits: np.ndarray,
    nonmember_labels: np.ndarray,
    delta: float,
    seed: int = 0,
) -> MembershipAttack:
    """Yeom et al.'s loss-threshold attack: a lower loss means 'member'. Equal-sized member/non-member sets."""
    from sklearn.metrics import roc_auc_score, roc_curve

    rng = np.random.default_rng(seed)
    n = min(len(member_labels), len(nonmember_labels))
    members = rng.choice(len(member_labels), n, replace=False)
    nonmembers = rng.choice(len(nonmember_labels), n, replace=False)
    member_scores = -_per_example_loss(member_logits[members], member_labels[members])
    nonmember_scores = -_per_example_loss(nonmember_logits[nonmembers], nonmember_labels[nonmembers])
    truth = np.r_[np.ones(n), np.zeros(n)]
    scores = np.r_[member_scores, nonmember_scores]
    auc = float(roc_auc_score(truth, scores))
    fpr, tpr, _ = roc_curve(truth, scores)
    resolution = 1.0 / n
    target = max(0.001, resolution)
    tpr_at = float(tpr[fpr <= target].max()) if (fpr <= target).any() else 0.0
    return MembershipAttack(
        attack="loss threshold (Yeom et al. 2018)",
        members=n,
        nonmembers=n,
        auc=auc,
        tpr_at_tenth_percent_fpr=tpr_at if resolution <= 0.001 else None,
        tpr_at_lowest_fpr=tpr_at,
        lowest_fpr_resolvable=round(resolution, 6),
        empirical_epsilon_lower_bound=empirical_epsilon_lower_bound(member_scores, nonmember_scores, delta),
        confidence=0.95,
    )


def run_audit_stage(
    spec: PipelineSpec, ref: DatasetRef, dp_model: DpModel, reference: ReferenceRecord, run: LineageRun
) -> MembershipAuditRecord:
    """Membership inference (loss threshold) against the released DP model and the non-private reference. Report-only:
    at the test split's size even a perfect attack barely certifies the claimed epsilon (see `max_detectable_epsilon`),
    so no check passes on it; the audit that can fail is edgeops.audit."""
    from edgeops.models import load_weights
    from edgeops.training.data import TrainingData, new_model
    from edgeops.training.evaluation import predict_logits

    spec = ref.bounded(spec)
    data = TrainingData.from_ref(ref, spec)
    attacks: dict[str, MembershipAttack] = {}
    for name, weights in (("dp_model", dp_model.weights_path), ("nonprivate_reference", reference.weights_path)):
        model = load_weights(new_model(spec, data), Path(weights))
        attacks[name] = loss_threshold_attack(
            predict_logits(model, data.x_train),
            data.y_train,
            predict_logits(model, data.x_test),
            data.y_test,
            float(dp_model.privacy.delta),
            spec.training.seed,
        )
    claimed = dp_model.privacy.claimed_epsilon
    lower = attacks["dp_model"].empirical_epsilon_lower_bound
    n = attacks["dp_model"].members
    # What a perfect attack (every member scored above every non-member, all scores distinct as real losses are) would
    # certify at this sample size. Near or below the claim this attack cannot detect a violation in practice, so it is
    # reported, never used as a pass (edgeops.audit is the audit that can fail).
    most = empirical_epsilon_lower_bound(np.linspace(1, 2, n), np.linspace(0, 0.9, n), float(dp_model.privacy.delta))
    role = (
        "report-only: "
        + (
            f"at n = {n} even a perfect attack certifies at most epsilon {most:.2f}, below the claim {claimed:.2f}, "
            "so it cannot detect a violation"
            if most <= claimed
            else f"a perfect attack could certify epsilon {most:.2f} at n = {n}"
        )
        + "; the privacy audit is the one-run canary audit (privacy.audit)"
    )
    summary = (
        f"loss-threshold MIA (report-only): DP model AUC {attacks['dp_model'].auc:.3f}, empirical eps lower bound "
        f"{lower:.3f} "
        f"(claimed {claimed:.3f}; at most {most:.2f} detectable at n = {n}); non-private reference AUC "
        f"{attacks['nonprivate_reference'].auc:.3f}"
    )
    run.log_metrics(
        {
            f"mia_{m}_{k}": v
            for m, attack in attacks.items()
            for k, v in attack.to_json().items()
            if isinstance(v, float)
        }
    )
    record = MembershipAuditRecord(
        dp_model=attacks["dp_model"],
        nonprivate_reference=attacks["nonprivate_reference"],
        claimed_epsilon=claimed,
        max_detectable_epsilon=most,
        role=role,
        summary=summary,
        mlflow_run_id=run.run_id,
    )
    run.log_json(record.model_dump(mode="json", exclude={"mlflow_run_id"}), "audit/membership_inference.json")
    return record
