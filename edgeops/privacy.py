"""Privacy evidence beyond training: an independent epsilon re-derivation, the diffprivlib baseline, and the
membership-inference audit (with the empirical epsilon lower bound it implies)."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np

from edgeops.errors import PrivacyBudgetError

REDERIVATION_TOLERANCE = 0.05  # relative: PRV, PLD and RDP differ by discretisation and by RDP's looseness


# ---------------------------------------------------------------- independent re-derivation
def rederive_epsilon(noise_multiplier: float, sample_rate: float, steps: int, delta: float, method: str = "pld") -> float:
    """Epsilon of Poisson-subsampled Gaussian DP-SGD, computed with Google's dp-accounting (a second implementation,
    independent of Opacus)."""
    import dp_accounting
    from dp_accounting.pld import pld_privacy_accountant
    from dp_accounting.rdp import rdp_privacy_accountant

    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(sample_rate, dp_accounting.GaussianDpEvent(noise_multiplier)), int(steps))
    accountant = pld_privacy_accountant.PLDAccountant() if method == "pld" else rdp_privacy_accountant.RdpAccountant()
    accountant.compose(event)
    return float(accountant.get_epsilon(delta))


def verify_claim(privacy: dict, tolerance: float = REDERIVATION_TOLERANCE) -> dict:
    """Re-derive from the recorded (noise multiplier, sample rate, steps, delta); pass if within the tolerance."""
    method = "rdp" if privacy["accountant"] == "rdp" else "pld"
    rederived = rederive_epsilon(privacy["noise_multiplier"], privacy["sample_rate"], privacy["steps"], privacy["delta"], method)
    claimed = float(privacy["claimed_epsilon"])
    passed = rederived <= claimed * (1 + tolerance)
    return {"claimed_epsilon": claimed, "rederived_epsilon": rederived, "method": f"dp-accounting {method.upper()}",
            "tolerance": tolerance, "passed": bool(passed),
            "summary": f"claimed epsilon {claimed:.4f}, re-derived {rederived:.4f} with dp-accounting {method.upper()} "
                       f"({'within' if passed else 'beyond'} {tolerance:.0%})"}


# ---------------------------------------------------------------- diffprivlib baseline
def train_dp_baseline(x_train: np.ndarray, y_train: np.ndarray, epsilon: float, bounds: tuple[np.ndarray, np.ndarray] | None, n_classes: int,
                      seed: int):
    """diffprivlib GaussianNB with the declared public bounds. A PrivacyLeakWarning (bounds taken from the data)
    is an error, never a warning."""
    from diffprivlib.models import GaussianNB
    from diffprivlib.utils import PrivacyLeakWarning

    with warnings.catch_warnings():
        warnings.simplefilter("error", PrivacyLeakWarning)
        try:
            model = GaussianNB(epsilon=epsilon, bounds=bounds, random_state=seed)
            model.fit(x_train if bounds is None else np.clip(x_train, bounds[0], bounds[1]), y_train)
        except PrivacyLeakWarning as warning:
            raise PrivacyBudgetError(f"diffprivlib would leak privacy: {warning}") from None
    return model


# ---------------------------------------------------------------- membership inference
def _per_example_loss(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return -log_probs[np.arange(len(labels)), labels]


def _clopper_pearson(successes: int, trials: int, alpha: float) -> tuple[float, float]:
    from scipy.stats import beta

    low = 0.0 if successes == 0 else float(beta.ppf(alpha / 2, successes, trials - successes + 1))
    high = 1.0 if successes == trials else float(beta.ppf(1 - alpha / 2, successes + 1, trials - successes))
    return low, high


def empirical_epsilon_lower_bound(member_scores: np.ndarray, nonmember_scores: np.ndarray, delta: float, alpha: float = 0.05) -> float:
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


def loss_threshold_attack(member_logits: np.ndarray, member_labels: np.ndarray, nonmember_logits: np.ndarray,
                          nonmember_labels: np.ndarray, delta: float, seed: int = 0) -> dict:
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
    return {"attack": "loss threshold (Yeom et al. 2018)", "members": n, "nonmembers": n, "auc": auc,
            "tpr_at_0.1pct_fpr": tpr_at if resolution <= 0.001 else None,
            "tpr_at_lowest_fpr": tpr_at, "lowest_fpr_resolvable": round(resolution, 6),
            "empirical_epsilon_lower_bound": empirical_epsilon_lower_bound(member_scores, nonmember_scores, delta),
            "confidence": 0.95}


# ---------------------------------------------------------------- stages
# ---------------------------------------------------------------- DP statistics
STATISTICS_QUANTILES = (0.01, 0.99)


def dp_feature_bounds(x: np.ndarray, features: list[str], value_range: tuple[float, float], epsilon: float, seed: int,
                      quantiles: tuple[float, float] = STATISTICS_QUANTILES) -> dict[str, list[float]]:
    """Per-feature (low, high) as DP quantiles (diffprivlib, exponential mechanism) inside the public value range.
    epsilon is split evenly over the 2 x features quantiles (basic composition). A PrivacyLeakWarning is an error."""
    from diffprivlib.tools import quantile
    from diffprivlib.utils import PrivacyLeakWarning

    share = epsilon / (2 * len(features))
    rng = np.random.default_rng(seed)
    bounds = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error", PrivacyLeakWarning)
        for index, column in enumerate(features):
            values = np.clip(x[:, index], *value_range)
            low, high = (float(quantile(values, q, epsilon=share, bounds=value_range, random_state=int(rng.integers(2**31))))
                         for q in quantiles)
            if not low < high:  # a constant feature: any non-empty interval scales it the same way
                low, high = min(low, high), max(low, high) + 1e-6 * (value_range[1] - value_range[0])
            bounds[column] = [low, high]
    return bounds


def run_statistics_stage(spec, ref: dict, ledger, dagster_run_id: str = "") -> dict | None:
    """When the declaration gives no public feature bounds: estimate them with DP quantiles on the training split,
    charged to the ledger before the data is read. None when public bounds are declared."""
    import hashlib

    from edgeops.data import read_split

    if not spec.dataset.needs_dp_statistics:
        return None
    epsilon = spec.privacy.statistics_epsilon
    key = "dp-quantiles:" + hashlib.sha256(f"{ref['digest']}|{epsilon}|{spec.dataset.value_range}|{spec.training.seed}".encode()).hexdigest()
    entry, _ = ledger.charge(key, "per-feature quantiles (diffprivlib)", epsilon, 0.0,
                             {"epsilon": epsilon, "delta": 0.0, "quantiles": list(STATISTICS_QUANTILES), "value_range": list(spec.dataset.value_range),
                              "features": len(ref["features"]), "composition": "basic, epsilon split evenly", "dataset_digest": ref["digest"]},
                             run_id=dagster_run_id, note="input scaling bounds (no public bounds declared)")
    train = read_split(ref, "train")
    try:
        bounds = dp_feature_bounds(train[ref["features"]].to_numpy(np.float64), ref["features"], tuple(spec.dataset.value_range), epsilon,
                                   spec.training.seed)
    except Exception as err:
        ledger.update(entry.id, "failed", {"error": str(err)[:500]})
        raise
    ledger.update(entry.id, "completed")
    return {"feature_bounds": bounds, "epsilon": epsilon, "delta": 0.0, "quantiles": list(STATISTICS_QUANTILES), "ledger_entry": entry.id,
            "mechanism": "diffprivlib.tools.quantile (exponential mechanism)"}


def run_baseline_stage(spec, ref: dict, ledger, run, dagster_run_id: str = "") -> dict:
    """The diffprivlib baseline, trained on its own share of the budget and charged to the ledger."""
    import hashlib

    from edgeops.training import TrainingData, evaluate_logits
    from edgeops.validation import feature_bounds

    from edgeops.validation import with_dp_bounds

    spec = with_dp_bounds(spec, ref)
    epsilon = spec.privacy.baseline_epsilon
    if epsilon <= 0:
        return {"skipped": "privacy.baseline_epsilon is 0", "mlflow_run_id": run.run_id}
    data = TrainingData.from_ref(ref, spec)
    key = "gaussiannb:" + hashlib.sha256(f"{ref['digest']}|{epsilon}|{spec.training.seed}".encode()).hexdigest()
    entry, _ = ledger.charge(key, "gaussian naive bayes (diffprivlib)", epsilon, 0.0,
                             {"epsilon": epsilon, "delta": 0.0, "dataset_digest": ref["digest"],
                              "bounds": f"DP quantiles (ledger entry {ref['dp_statistics']['ledger_entry']})" if ref.get("dp_statistics") else "declared public bounds"},
                             run_id=dagster_run_id, note="DP baseline model")
    model = train_dp_baseline(data.x_train, data.y_train, epsilon, feature_bounds(spec, data.features), len(data.classes), spec.training.seed)
    ledger.update(entry.id, "completed")
    log_probs = model.predict_log_proba(np.clip(data.x_test, *feature_bounds(spec, data.features)))
    metrics = evaluate_logits(np.nan_to_num(log_probs, nan=-1e9, neginf=-1e9), data.y_test, len(data.classes))
    run.log_params({"baseline.model": "diffprivlib GaussianNB", "baseline.epsilon": epsilon})
    run.log_metrics({"baseline_test_accuracy": metrics["accuracy"], "baseline_test_ece": metrics["ece"]})
    return {"model": "diffprivlib GaussianNB", "epsilon": epsilon, "delta": 0.0, "ledger_entry": entry.id, "metrics": {"test": metrics},
            "released": False, "mlflow_run_id": run.run_id}


def run_reference_stage(spec, ref: dict, ledger, out_dir, run, dagster_run_id: str = "", progress=lambda _: None) -> dict:
    """The non-private reference: trained for comparison only, never exported, registered or released."""
    import hashlib

    from edgeops.models import save_weights, weights_sha256
    from edgeops.training import TrainingData, evaluate_logits, predict_logits, train_nonprivate
    from edgeops.validation import with_dp_bounds

    spec = with_dp_bounds(spec, ref)
    data = TrainingData.from_ref(ref, spec)
    key = "nonprivate-reference:" + hashlib.sha256(f"{ref['digest']}|{spec.model.model_dump_json()}|{spec.training.seed}".encode()).hexdigest()
    entry, _ = ledger.charge(key, "non-private reference (NOT differentially private)", 0.0, 0.0,
                             {"released": False, "published": "aggregate metrics only", "dataset_digest": ref["digest"]},
                             run_id=dagster_run_id, note="reference model for comparison only; never released; its aggregate metrics are not DP")
    model = train_nonprivate(spec, data, progress=progress)
    path = out_dir / "reference_only_never_released.safetensors"
    save_weights(model, path, {"released": "false", "purpose": "comparison only"})
    ledger.update(entry.id, "completed")
    metrics = {"test": evaluate_logits(predict_logits(model, data.x_test), data.y_test, len(data.classes))}
    run.set_tags({"edgeops.released": "false", "edgeops.role": "non-private reference, never released"})
    run.log_metrics({"reference_test_accuracy": metrics["test"]["accuracy"]})
    return {"weights_path": str(path), "weights_sha256": weights_sha256(model), "metrics": metrics, "released": False,
            "role": "non-private reference (comparison only, never released)", "mlflow_run_id": run.run_id}


def run_audit_stage(spec, ref: dict, dp_model: dict, reference: dict, run) -> dict:
    """Membership inference (loss threshold) against the released DP model and the non-private reference."""
    from edgeops.models import load_weights
    from edgeops.training import TrainingData, new_model, predict_logits
    from edgeops.validation import with_dp_bounds

    spec = with_dp_bounds(spec, ref)
    data = TrainingData.from_ref(ref, spec)
    results = {}
    for name, record in (("dp_model", dp_model), ("nonprivate_reference", reference)):
        model = load_weights(new_model(spec, data), Path(record["weights_path"]))
        results[name] = loss_threshold_attack(predict_logits(model, data.x_train), data.y_train,
                                              predict_logits(model, data.x_test), data.y_test, spec.privacy.delta, spec.training.seed)
    claimed = dp_model["privacy"]["claimed_epsilon"]
    lower = results["dp_model"]["empirical_epsilon_lower_bound"]
    results["claimed_epsilon"] = claimed
    results["consistent"] = bool(lower <= claimed)
    results["summary"] = (f"loss-threshold MIA: DP model AUC {results['dp_model']['auc']:.3f}, empirical eps lower bound {lower:.3f} "
                          f"(claimed {claimed:.3f}); non-private reference AUC {results['nonprivate_reference']['auc']:.3f}")
    run.log_metrics({f"mia_{m}_{k}": v for m in ("dp_model", "nonprivate_reference") for k, v in results[m].items()
                     if isinstance(v, float)})
    run.log_json(results, "audit/membership_inference.json")
    results["mlflow_run_id"] = run.run_id
    return results
