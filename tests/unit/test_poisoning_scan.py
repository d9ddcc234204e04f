"""The label-noise / poisoning scan: scale-invariant, clean data passes at the default, 10% flipped labels stop it."""

from __future__ import annotations

import numpy as np
import pytest

from edgeops.spec import PoisoningScanSpec
from edgeops.validation import confident_learning_scan


def wide_scale_table(rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """3 classes, 30 features spanning 1e-2 .. 1e4 with offsets (the generated example's kind of table)."""
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=rows,
        n_features=30,
        n_informative=10,
        n_redundant=5,
        n_classes=3,
        n_clusters_per_class=1,
        class_sep=1.5,
        flip_y=0.0,
        random_state=seed,
    )
    scales = np.logspace(-2, 4, 30)
    return x * scales + 5 * scales, y


def flip(labels: np.ndarray, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    flipped = rng.choice(len(labels), int(share * len(labels)), replace=False)
    out = labels.copy()
    out[flipped] = (labels[flipped] + rng.integers(1, labels.max() + 1, len(flipped))) % (labels.max() + 1)
    return out, flipped


@pytest.fixture(scope="module")
def table():
    return wide_scale_table(3000)


def test_clean_wide_scale_table_passes_at_the_default(table):
    x, y = table
    result = confident_learning_scan(x, y)
    assert len(result["suspects"]) / len(y) <= PoisoningScanSpec().max_suspect_fraction
    assert result["cv_accuracy"] > 0.9  # the largest-valued columns do not decide


def test_scan_is_scale_invariant(table):
    x, y = table
    rescaled = x * np.logspace(3, -3, x.shape[1]) - 7e3  # the column scales reversed, and shifted
    first, second = confident_learning_scan(x, y), confident_learning_scan(rescaled, y)
    assert set(first["suspects"]) == set(second["suspects"])


def test_ten_percent_flipped_labels_are_found_and_exceed_the_default(table):
    x, y = table
    noisy, flipped = flip(y, 0.10, seed=3)
    result = confident_learning_scan(x, noisy)
    recall = len(np.intersect1d(result["suspects"], flipped)) / len(flipped)
    assert recall >= 0.9
    assert len(result["suspects"]) / len(y) > PoisoningScanSpec().max_suspect_fraction
    assert all(rate > 0.05 for rate in result["noise_by_class"].values())


def test_too_few_rows_per_class_skips_with_a_reason():
    result = confident_learning_scan(np.arange(6.0).reshape(3, 2), np.array([0, 0, 1]))
    assert result["skipped"] and "smallest class: 1" in result["skipped"]


def test_constant_and_missing_columns_do_not_break_the_scan(table):
    x, y = table
    x = np.column_stack([x[:500], np.full(500, 3.0)])
    x[5, 0] = np.nan
    result = confident_learning_scan(x, y[:500])
    assert result["cv_accuracy"] > 0.8
