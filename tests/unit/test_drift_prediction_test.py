"""The prediction-drift test keeps its declared false-alarm rate when the reference is a sample too."""

import numpy as np
import pandas as pd

from edgeops.drift import _chi2_homogeneity

TRIALS, THRESHOLD = 1500, 0.01


def _alarm_rate(test, rng, shift: float = 0.0) -> float:
    shares = np.full(10, 0.1)
    shifted = shares.copy()
    shifted[0], shifted[1] = shifted[0] + shift, shifted[1] - shift
    alarms = 0
    for _ in range(TRIALS):
        reference = pd.Series(rng.choice(10, 180, p=shares))
        current = pd.Series(rng.choice(10, 150, p=shifted))
        alarms += test(reference, current, None, THRESHOLD)[1]
    return alarms / TRIALS


def _goodness_of_fit(reference: pd.Series, current: pd.Series, _type, threshold: float):
    """Evidently's "chisquare": the reference's shares taken as exact."""
    from scipy.stats import chisquare

    counts = [np.bincount(s, minlength=10) for s in (reference, current)]
    p_value = chisquare(counts[1], counts[0] * len(current) / len(reference))[1]
    return p_value, p_value < threshold


def test_false_alarms_stay_near_the_threshold_and_a_real_shift_is_found():
    rng = np.random.default_rng(7)
    # 1,500 clean trials at a true 1% rate: 15 alarms expected, sd 3.9; 2.2% (33) is 4.7 sd above
    assert _alarm_rate(_chi2_homogeneity, rng) <= 0.022
    assert _alarm_rate(_chi2_homogeneity, rng, shift=0.1) >= 0.8  # class 0 at 20%, class 1 gone: 85% found at 150 rows


def test_the_goodness_of_fit_test_it_replaced_raises_false_alarms():
    assert _alarm_rate(_goodness_of_fit, np.random.default_rng(7)) > 0.05


def test_a_single_class_on_both_sides_is_no_drift():
    assert _chi2_homogeneity(pd.Series([3] * 20), pd.Series([3] * 9), None, THRESHOLD) == (1.0, False)
