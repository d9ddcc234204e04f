"""The label-noise / poisoning scan of the training split: a k-nearest-neighbour vote (suspect_labels) or cleanlab's
confident learning on out-of-sample probabilities (confident_learning_scan, the default), the per-column
standardisation both use, and check_poisoning, which runs the declared one and returns its CheckOutcome.
edgeops.validation runs it among the dataset checks and re-exports these names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from edgeops.data import ROW_ID, read_split
from edgeops.spec import PipelineSpec

if TYPE_CHECKING:
    from edgeops.checks import CheckOutcome
    from edgeops.records import DatasetRef


# ---------------------------------------------------------------- label noise / poisoning
def suspect_labels(
    features: np.ndarray,
    labels: np.ndarray,
    neighbours: int,
    disagreement: float,
    bounds: tuple[np.ndarray, np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of rows whose label disagrees with at least `disagreement` of their k nearest neighbours,
    and each row's disagreement share. Features are clipped to the public bounds, then standardised (each column by
    its own spread), so that no column decides the neighbours by its units."""
    from sklearn.neighbors import NearestNeighbors

    low, high = bounds
    scaled = standardise(np.clip(features, low, high))
    k = min(neighbours, len(scaled) - 1)
    if k < 1:
        return np.array([], dtype=int), np.zeros(len(scaled))
    index = NearestNeighbors(n_neighbors=k + 1).fit(scaled)
    _, found = index.kneighbors(scaled)
    others = labels[found[:, 1:]]
    share = (others != labels[:, None]).mean(axis=1)
    return np.flatnonzero(share >= disagreement), share


def standardise(features: np.ndarray) -> np.ndarray:
    """Centre and scale every column by its own median and spread (std; a constant column stays 0), so no column
    decides a distance or a fit by its units. Missing values become the centre."""
    centre = np.nanmedian(features, axis=0) if len(features) else np.zeros(features.shape[1])
    spread = np.nanstd(features, axis=0) if len(features) else np.ones(features.shape[1])
    spread = np.where(np.isfinite(spread) & (spread > 0), spread, 1.0)
    return np.nan_to_num((features - np.nan_to_num(centre)) / spread)


def confident_learning_scan(features: np.ndarray, labels: np.ndarray, folds: int = 5, seed: int = 0) -> dict[str, Any]:
    """cleanlab's confident learning: out-of-sample class probabilities from a logistic regression on standardised
    features (k-fold cross-validation, so no row is scored by a model that saw it), then the label issues cleanlab
    finds with filter_by="prune_by_class" (per given class, as many rows as its estimated count of wrong labels, the
    least probable under their label first) and its per-class noise estimate (from the estimated joint of given and
    true labels).

    Why prune_by_class (benchmarks/poisoning_scan.py; chosen on flip seeds 10-19, reported on 0-4): cleanlab's default
    prune_by_noise_rate splits each class's count over (given, likely true) class pairs ranked by margin and, on
    digits with 10% flipped labels, missed about 1 flipped row in 8; prune_by_class caught 93-94% (medians over seeds
    0-4, the worst seed 85.6% on digits) on all three benchmark sets and flags as many rows on clean data (0.3-0.4%).
    It flags more than it catches (precision about 76% on digits, 93% on the wide table): the scan's job is to stop
    the run and name the rows to look at. An average of this model and a 10-NN vote ranked flipped rows more
    precisely at 10% but counted too few at 1% (it missed a third of the flips on digits) and missed a clearly
    flipped row in a small well-separated table: the linear model's confident probabilities keep the count right.
    Returns suspects (indices, most doubtful first), each row's out-of-sample probability of its given label, the
    per-class noise estimate, and the cross-validated accuracy."""
    import warnings

    from cleanlab.count import estimate_joint
    from cleanlab.filter import find_label_issues
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    classes, encoded = np.unique(labels, return_inverse=True)
    smallest = int(np.bincount(encoded).min()) if len(classes) else 0
    folds = min(folds, smallest)
    if len(classes) < 2 or folds < 2:
        return {
            "suspects": np.array([], dtype=int),
            "given_label_probability": np.ones(len(labels)),
            "noise_by_class": {},
            "cv_accuracy": None,
            "skipped": f"too few rows per class for {max(folds, 2)}-fold cross-validation (smallest class: {smallest})",
        }
    scaled = standardise(features)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter; the probabilities are what count
        probabilities = cross_val_predict(
            LogisticRegression(max_iter=500),
            scaled,
            encoded,
            method="predict_proba",
            cv=StratifiedKFold(folds, shuffle=True, random_state=seed),
        )
        # n_jobs=1: cleanlab's default forks a process pool, and a fork of a process with live threads (torch, MLflow,
        # Dagster) can deadlock on a lock held by a thread that does not exist in the child (seen in the test suite).
        issues = find_label_issues(encoded, probabilities, filter_by="prune_by_class", n_jobs=1)
        joint = estimate_joint(encoded, probabilities)
    given = probabilities[np.arange(len(encoded)), encoded]
    suspects = np.flatnonzero(issues)
    noise = {
        str(classes[c]): round(float(1 - joint[c, c] / joint[c].sum()), 4) if joint[c].sum() > 0 else None
        for c in range(len(classes))
    }
    return {
        "suspects": suspects[np.argsort(given[suspects])],
        "given_label_probability": given,
        "noise_by_class": noise,
        "cv_accuracy": float((probabilities.argmax(axis=1) == encoded).mean()),
        "skipped": None,
    }


def check_poisoning(ref: DatasetRef, spec: PipelineSpec) -> CheckOutcome:
    # Imported here, not at the top: edgeops.validation imports this module.
    from edgeops.checks import MAX_EXAMPLES, CheckOutcome
    from edgeops.scaling import feature_bounds

    config = spec.validation.poisoning
    train = read_split(ref, "train")
    features = train[ref.features].to_numpy(dtype=np.float64)
    labels = train[ref.label].to_numpy()
    if config.method == "knn":
        suspects, share = suspect_labels(
            features, labels, config.neighbours, config.disagreement, feature_bounds(spec, ref.features)
        )
        order = suspects[np.argsort(-share[suspects])]
        examples = [
            {
                "row": int(train[ROW_ID].iloc[i]),
                "label": str(labels[i]),
                "neighbour_disagreement": round(float(share[i]), 2),
            }
            for i in order[:MAX_EXAMPLES]
        ]
        method, counts = f"k={config.neighbours}, disagreement >= {config.disagreement:.0%}", {}
    else:
        result = confident_learning_scan(features, labels, config.folds, spec.dataset.split.seed)
        if result["skipped"]:
            return CheckOutcome(
                "poisoning_scan", True, f"not run: {result['skipped']}", {"suspects": 0, "rows": len(train)}
            )
        suspects = result["suspects"]
        examples = [
            {
                "row": int(train[ROW_ID].iloc[i]),
                "label": str(labels[i]),
                "given_label_probability": round(float(result["given_label_probability"][i]), 3),
            }
            for i in suspects[:MAX_EXAMPLES]
        ]
        method = (
            f"confident learning (cleanlab, prune_by_class) on {config.folds}-fold out-of-sample probabilities, "
            "standardised features; "
            f"cross-validated accuracy {result['cv_accuracy']:.1%}"
        )
        counts = {"estimated_noise_by_class": result["noise_by_class"], "cv_accuracy": round(result["cv_accuracy"], 4)}
    fraction = len(suspects) / max(len(train), 1)
    passed = fraction <= config.max_suspect_fraction
    summary = (
        f"{len(suspects)} suspect label(s) in train ({fraction:.2%}; allowed {config.max_suspect_fraction:.2%}); "
        f"{method}"
    )
    return CheckOutcome(
        "poisoning_scan", passed, summary, {"suspects": len(suspects), "rows": len(train), **counts}, examples
    )
