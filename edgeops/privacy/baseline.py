"""The diffprivlib baseline: a DP Gaussian naive Bayes on its own share of the budget, reported beside the DP model."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np

from edgeops.errors import PrivacyBudgetError
from edgeops.ledger import Computation, code_version
from edgeops.noise import diffprivlib_random_state
from edgeops.records import (
    BASELINE_TEST_ACCURACY,
    BASELINE_TEST_ECE,
    Baseline,
    BaselineRecord,
    BaselineSkipped,
    HeldOutTestMetrics,
    SplitMetrics,
)

if TYPE_CHECKING:
    from diffprivlib.models import GaussianNB

    from edgeops.ledger import PrivacyLedger
    from edgeops.lineage import LineageRun
    from edgeops.records import DatasetRef
    from edgeops.spec import PipelineSpec


def train_dp_baseline(
    x_train: np.ndarray,
    y_train: np.ndarray,
    epsilon: float,
    bounds: tuple[np.ndarray, np.ndarray] | None,
    n_classes: int,
) -> GaussianNB:
    """diffprivlib GaussianNB with the declared public bounds. A PrivacyLeakWarning (bounds taken from the data)
    is an error, never a warning. No random_state: diffprivlib then draws every mechanism's noise from
    secrets.SystemRandom (edgeops.noise explains why that is the secure choice); a seed would make it replayable."""
    from diffprivlib.models import GaussianNB
    from diffprivlib.utils import PrivacyLeakWarning

    with warnings.catch_warnings():
        warnings.simplefilter("error", PrivacyLeakWarning)
        try:
            model = GaussianNB(epsilon=epsilon, bounds=bounds, random_state=diffprivlib_random_state())
            model.fit(x_train if bounds is None else np.clip(x_train, bounds[0], bounds[1]), y_train)
        except PrivacyLeakWarning as warning:
            raise PrivacyBudgetError(f"diffprivlib would leak privacy: {warning}") from None
    return model


def run_baseline_stage(
    spec: PipelineSpec, ref: DatasetRef, ledger: PrivacyLedger, run: LineageRun, dagster_run_id: str = ""
) -> Baseline:
    """The diffprivlib baseline, trained on its own share of the budget and charged to the ledger. Its output (the
    test metrics; the model itself is never released) is stored in the ledger entry, so a re-run reuses it."""
    from edgeops.scaling import feature_bounds
    from edgeops.training.data import TrainingData
    from edgeops.training.evaluation import evaluate_logits

    spec = ref.bounded(spec)
    epsilon = spec.privacy.baseline_epsilon
    if epsilon <= 0:
        return BaselineSkipped(skipped="privacy.baseline_epsilon is 0", mlflow_run_id=run.run_id)
    data = TrainingData.from_ref(ref, spec)
    low, high = feature_bounds(spec, data.features)
    computation = Computation(
        kind="gaussiannb",
        dataset_digest=ref.digest,
        inputs={"feature_bounds": [low.tolist(), high.tolist()], "classes": list(data.classes)},
        hyperparameters={"epsilon": epsilon},
        code=code_version("privacy", "training", libraries=("diffprivlib",)),
    )
    with ledger.spend(
        computation,
        "gaussian naive bayes (diffprivlib)",
        epsilon,
        0.0,
        parameters={
            "epsilon": epsilon,
            "delta": 0.0,
            "dataset_digest": ref.digest,
            "bounds": f"DP quantiles (ledger entry {ref.dp_statistics.ledger_entry})"
            if ref.dp_statistics
            else "declared public bounds",
        },
        run_id=dagster_run_id,
        note="DP baseline model",
    ) as spend:
        if spend.reused:
            metrics = spend.output["metrics"]["test"]
        else:
            model = train_dp_baseline(data.x_train, data.y_train, epsilon, (low, high), len(data.classes))
            log_probs = model.predict_log_proba(np.clip(data.x_test, low, high))
            metrics = evaluate_logits(np.nan_to_num(log_probs, nan=-1e9, neginf=-1e9), data.y_test, len(data.classes))
            spend.complete(output={"metrics": {"test": metrics}})
    run.log_params({"baseline.model": "diffprivlib GaussianNB", "baseline.epsilon": epsilon})
    test = SplitMetrics.model_validate(metrics)
    run.log_metrics({BASELINE_TEST_ACCURACY: test.accuracy, BASELINE_TEST_ECE: test.ece})
    return BaselineRecord(
        model="diffprivlib GaussianNB",
        epsilon=epsilon,
        delta=0.0,
        ledger_entry=spend.entry.id,
        metrics=HeldOutTestMetrics(test=test),
        released=False,
        mlflow_run_id=run.run_id,
    )
