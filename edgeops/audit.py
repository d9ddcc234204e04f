"""A privacy audit that can fail: Steinke, Nasr and Jagielski (2023), "Privacy Auditing with One (1) Training Run".

How it works. m canaries are each included independently with probability 1/2 in one DP-SGD run with the declared
model and settings (edgeops.training's own `plan_dp_training` and `train_dp`, not a copy) on public synthetic data
(edgeops.synthetic's digits where the input is digits-shaped) of the declared training size. Two canary designs:
- "gradient" (the default): white-box Dirac gradient canaries scored on the last iterate. Each canary is a
  per-example gradient of its own, the clipping norm C on one coordinate of the model's largest weight tensor and 0
  elsewhere (distinct coordinates, so canaries do not interfere). An included canary is sampled at each step with the
  plan's Poisson rate, like a row, and joins the sum of clipped gradients before the noise (train_dp's
  `before_noise` hook). DP-SGD's guarantee holds for every per-example gradient of norm <= C, so this adversary is
  within the threat model. Its score is the initial minus the final weight at the canary's coordinate (an auditor
  who saw every iterate could do better; this one sees what is released). On the declared digits settings with the
  noise off it proves epsilon 4.8 > 3 with 1,000 canaries, where the input canaries below proved 0 to 0.16 (README,
  "The privacy audit").
- "input": random binary images within the declared feature bounds, each with a random label, added to the training
  rows (black-box: the score is how much training lowered the canary's loss). Weaker: it catches training without
  noise only where one example moves the model a lot.
The auditor guesses "in" for the k highest scores
and "out" for the k lowest, abstains on the rest, and counts the correct guesses. For an (epsilon, delta)-DP algorithm,
the number of correct guesses out of r is dominated by Binomial(r, e^eps / (1 + e^eps)) plus a delta term
(Corollary 5.4 of the paper; its Appendix D computes the p-value). The largest epsilon that the observed count rejects
at 95% confidence is the empirical lower bound: the claim is violated if that bound is above the claimed epsilon.

The audit reads no private row (the canaries and the filler are drawn in code), so it costs no privacy budget. Its
inclusion draws are public randomness (seeded, reproducible): the training run never sees them except
through which canaries are in its data, which is what the audit is meant to detect.

Power. Even a perfect attack (every guess right) can certify only a bounded epsilon at a given canary count: with r
guesses all right, the bound is the epsilon whose Binomial(r, p) tail at r is 5%. If that maximum is below the claim,
the audit cannot detect a violation and says "underpowered", never "passed". The same holds when the attack cannot
catch the noise-off control (the same training with noise multiplier 0, clipping on), which `run_canary_audit` runs
beside the declared one: then the attack is too weak for these settings, whatever the canary count.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from edgeops.audit_canaries import GradientCanaries as GradientCanaries
from edgeops.audit_canaries import _canaries, _public_filler, _train_and_score
from edgeops.records.privacy import (
    CANARY_DESIGN,
    CANARY_SCORE,
    CanaryAuditFindings,
    CanaryAuditRecord,
    CanaryKind,
    GuessResult,
    Outcome,
)

if TYPE_CHECKING:
    from edgeops.lineage import LineageRun
    from edgeops.records import DatasetRef
    from edgeops.spec import PipelineSpec

DEFAULT_CONFIDENCE = 0.95
# Guess counts tried, as fractions of the canaries guessed on each side (k "in" + k "out"); the significance is
# split evenly over them (Bonferroni), so trying several keeps the bound valid.
GUESS_FRACTIONS = (0.05, 0.1, 0.2, 0.3, 0.5)


# ---------------------------------------------------------------- statistics
def one_run_p_value(m: int, r: int, v: int, epsilon: float, delta: float) -> float:
    """P[at least v of r guesses right] for an (epsilon, delta)-DP algorithm with m canaries (Corollary 5.4): the
    Binomial(r, e^eps/(1+e^eps)) tail plus 2 m delta times the largest average of the probabilities just below v."""
    from scipy.stats import binom

    if not (0 <= v <= r <= m) or epsilon < 0 or not (0 <= delta <= 1):
        raise ValueError(
            f"need 0 <= v <= r <= m, epsilon >= 0, 0 <= delta <= 1; got m={m}, r={r}, v={v}, epsilon={epsilon}, "
            f"delta={delta}"
        )
    q = 1.0 / (1.0 + math.exp(-epsilon))
    tail = float(binom.sf(v - 1, r, q))
    if delta == 0 or v == 0:
        return min(tail, 1.0)
    below = binom.pmf(v - np.arange(1, v + 1), r, q).cumsum()  # P[v - i <= B < v] for i = 1..v
    alpha = float((below / np.arange(1, v + 1)).max())
    return min(tail + alpha * delta * 2 * m, 1.0)


def epsilon_lower_bound(m: int, r: int, v: int, delta: float, significance: float) -> float:
    """The largest epsilon whose p-value for v right out of r is below `significance` (bisection, returns the low
    end, so the bound is conservative). 0 when the guesses prove nothing."""
    if r == 0 or one_run_p_value(m, r, v, 0.0, delta) >= significance:
        return 0.0
    low, high = 0.0, 1.0
    while one_run_p_value(m, r, v, high, delta) < significance:
        low, high = high, high * 2
        if high > 1e3:  # unreachable for finite r; a guard against a loop
            return low
    for _ in range(40):
        middle = (low + high) / 2
        if one_run_p_value(m, r, v, middle, delta) < significance:
            low = middle
        else:
            high = middle
    return low


def guess_counts(m: int, fractions: tuple[float, ...] = GUESS_FRACTIONS) -> list[int]:
    """k per side for each fraction (at least 1, at most m // 2), without repeats."""
    return sorted({min(max(1, int(round(f * m))), m // 2) for f in fractions})


def audit_scores(
    scores: np.ndarray,
    included: np.ndarray,
    delta: float,
    confidence: float = DEFAULT_CONFIDENCE,
    fractions: tuple[float, ...] = GUESS_FRACTIONS,
) -> tuple[float, float, list[GuessResult]]:
    """(lower bound, largest bound any attack could reach, per-k results) for one run's canary scores (higher score:
    guessed 'in') and the true inclusion. The significance 1 - confidence is split over the k tried (Bonferroni)."""
    scores, included = np.asarray(scores, dtype=float), np.asarray(included, dtype=bool)
    if scores.shape != included.shape or scores.ndim != 1 or len(scores) < 2:
        raise ValueError(
            f"scores and inclusion must be 1-D of the same length >= 2; got {scores.shape} and {included.shape}"
        )
    if not np.isfinite(scores).all():
        raise ValueError("canary scores must be finite")
    m = len(scores)
    ks = guess_counts(m, fractions)
    significance = (1 - confidence) / len(ks)
    order = np.argsort(-scores, kind="stable")  # highest first
    results = []
    for k in ks:
        correct = int(included[order[:k]].sum() + (~included[order[-k:]]).sum())
        results.append(
            GuessResult(
                k_per_side=k,
                guesses=2 * k,
                correct=correct,
                epsilon_lower_bound=epsilon_lower_bound(m, 2 * k, correct, delta, significance),
            )
        )
    best = max(r.epsilon_lower_bound for r in results)
    # Every guess right needs k canaries in and k out: beyond the smaller side no k can be all right.
    reachable = [k for k in ks if k <= min(int(included.sum()), int((~included).sum()))]
    most = max((epsilon_lower_bound(m, 2 * k, 2 * k, delta, significance) for k in reachable), default=0.0)
    return best, most, results


def outcome_for(
    lower_bound: float, max_detectable: float, claimed_epsilon: float, control_lower_bound: float | None = None
) -> Outcome:
    """violated beats everything (a bound above the claim is proof, whatever the power). Below the claim, an audit that
    could not have reached the claim says underpowered, not consistent: when every guess right would not prove more
    than the claim, or when the same attack on the noise-off control (if run) did not prove more than the claim."""
    if lower_bound > claimed_epsilon:
        return "violated"
    if max_detectable <= claimed_epsilon or (
        control_lower_bound is not None and control_lower_bound <= claimed_epsilon
    ):
        return "underpowered"
    return "consistent"


# ---------------------------------------------------------------- the audit run
class CanaryAuditResult(CanaryAuditFindings):
    """The findings of run_canary_audit, with their one-line summary."""

    @property
    def summary(self) -> str:
        verdict = {
            "consistent": "consistent with the claim",
            "violated": "VIOLATES the claim",
            "underpowered": "UNDERPOWERED (this audit cannot detect a violation of the claim; not a pass)",
        }[self.outcome]
        control = (
            ""
            if self.control_epsilon_lower_bound is None
            else f"; the same attack on the noise-off control gives {self.control_epsilon_lower_bound:.3f}"
        )
        return (
            f"one-run canary audit ({self.canaries} {self.canary} canaries, noise {self.noise}): empirical epsilon "
            "lower bound "
            f"{self.epsilon_lower_bound:.3f} at {self.confidence:.0%} vs claimed {self.claimed_epsilon:.3f}; at most "
            f"{self.max_detectable_epsilon:.3f} is detectable with this canary count{control}: {verdict}"
        )


def run_canary_audit(
    spec: PipelineSpec,
    features: list[str],
    classes: list[int],
    *,
    n_train: int,
    canaries: int,
    canary: CanaryKind = "gradient",
    noise: Literal["declared", "off"] = "declared",
    control: bool = True,
    seed: int = 0,
    confidence: float = DEFAULT_CONFIDENCE,
    pretrained_cache: Path | None = None,
    workdir: Path | None = None,
) -> CanaryAuditResult:
    """Train with the declared model and DP settings on public data of the declared training size (`n_train` rows in
    expectation) with `canaries` canaries (`canary`: "gradient" or "input", see the module docstring), each in with
    probability 1/2, then audit the trained model.
    `noise="off"` trains with noise multiplier 0 (clipping and all else unchanged). `control` also runs the noise-off
    training on the same canaries: unless the attack catches that one, the outcome is "underpowered". `seed` draws the
    canaries, the filler and the inclusion (public randomness; the run's DP noise is the training code's own)."""
    import time

    from edgeops.errors import TrainingError

    if canaries < 2 or canaries % 2:
        raise TrainingError(f"the audit needs an even number of canaries >= 2, got {canaries}")
    if canary == "input" and canaries // 2 >= n_train:
        raise TrainingError(
            f"{canaries} canaries do not fit a training set of {n_train} rows (half of them are in it, in expectation)"
        )
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    x_can, y_can = _canaries(spec, features, len(classes), canaries, rng)
    included = rng.random(canaries) < 0.5
    # The expected training size is the declared one, so the sample rate and noise match. Gradient canaries are not
    # rows: the filler is the whole training set.
    filler = n_train - canaries // 2 if canary == "input" else n_train
    rows_in = included if canary == "input" else np.zeros(canaries, dtype=bool)
    x_fill, y_fill = _public_filler(spec, features, classes, filler, 20_000 + seed, rng)
    x_val, y_val = _public_filler(spec, features, classes, 200, 30_000 + seed, rng)
    order = rng.permutation(filler + int(rows_in.sum()))
    x_train = np.concatenate([x_fill, x_can[rows_in]])[order]
    y_train = np.concatenate([y_fill, y_can[rows_in]]).astype(np.int64)[order]
    run_inputs: dict[str, Any] = {
        "x_train": x_train,
        "y_train": y_train,
        "x_val": x_val,
        "y_val": y_val,
        "x_can": x_can,
        "y_can": y_can,
        "seed": seed,
        "pretrained_cache": pretrained_cache,
        "workdir": workdir,
        "gradient_canaries": (canaries, included, seed) if canary == "gradient" else None,
    }
    scores, plan = _train_and_score(spec, features, classes, **run_inputs, noise=noise)
    lower, most, guesses = audit_scores(scores, included, plan.delta, confidence)
    control_lower = None
    if control and noise != "off":
        control_scores = _train_and_score(spec, features, classes, **run_inputs, noise="off")[0]
        control_lower = audit_scores(control_scores, included, plan.delta, confidence)[0]
    claimed = float(spec.privacy.training_epsilon)
    return CanaryAuditResult(
        outcome=outcome_for(lower, most, claimed, control_lower),
        claimed_epsilon=claimed,
        delta=plan.delta,
        epsilon_lower_bound=lower,
        max_detectable_epsilon=most,
        control_epsilon_lower_bound=control_lower,
        confidence=confidence,
        canaries=canaries,
        canary=canary,
        score=CANARY_SCORE[canary],
        canary_design=CANARY_DESIGN[canary],
        canaries_included=int(included.sum()),
        training_rows=len(y_train),
        noise_multiplier=plan.noise_multiplier,
        noise=noise,
        sample_rate=plan.sample_rate,
        steps=plan.steps,
        max_grad_norm=plan.max_grad_norm,
        guesses=guesses,
        seconds=time.perf_counter() - started,
    )


# ---------------------------------------------------------------- the stage
def run_canary_audit_stage(
    spec: PipelineSpec, ref: DatasetRef, run: LineageRun, pretrained_cache: Path | None = None
) -> CanaryAuditRecord:
    """Stage: the audit of the declared DP-SGD settings (privacy.audit), at the declared training size. Reads the
    training split's row count and feature names only, never a row. Logs the outcome to MLflow; returns the record."""

    spec = ref.bounded(spec)  # the same input scaling as the released model's
    settings = spec.privacy.audit
    result = run_canary_audit(
        spec,
        list(ref.features),
        list(spec.dataset.classes),
        n_train=int(ref.splits["train"].rows),
        canaries=settings.canaries,
        canary=settings.canary,
        seed=settings.seed,
        confidence=settings.confidence,
        pretrained_cache=pretrained_cache,
    )
    run.log_metrics(
        {
            "audit_epsilon_lower_bound": result.epsilon_lower_bound,
            "audit_max_detectable_epsilon": result.max_detectable_epsilon,
            "audit_control_epsilon_lower_bound": result.control_epsilon_lower_bound,
        }
    )
    record = CanaryAuditRecord(**result.model_dump(), summary=result.summary, mlflow_run_id=run.run_id)
    run.log_json(record.model_dump(mode="json", exclude={"mlflow_run_id"}), "audit/canary_audit.json")
    return record
