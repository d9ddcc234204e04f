"""DP feature statistics (diffprivlib): each feature's centre and spread, located on a signed log scale, for the
input scaling when the declaration gives no public bounds; charged to the ledger before the data is read."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from edgeops.ledger import Computation, code_version
from edgeops.noise import diffprivlib_random_state
from edgeops.records.dataset import DpFeatureStatistics

if TYPE_CHECKING:
    from edgeops.ledger import PrivacyLedger
    from edgeops.records import DatasetRef
    from edgeops.spec import PipelineSpec

STATISTICS_QUANTILES = (
    0.16,
    0.84,
)  # centre (q16 + q84) / 2 and spread (q84 - q16) / 2: mean and standard deviation for a normal
SCALING_WIDTH = (
    3.0  # bounds: centre +- 3 spreads (baseline and calibration clip there); the model standardises (spread -> 1)
)


def signed_log(values: np.ndarray, unit: float) -> np.ndarray:
    """sign(v) * log10(1 + |v| / unit): equal widths per order of magnitude, so a quantile search over a range of
    1e5 resolves a feature that lives near 0.01 as well as one near 1e4."""
    return cast(np.ndarray, np.sign(values) * np.log10(1.0 + np.abs(values) / unit))


def signed_exp(values: np.ndarray, unit: float) -> np.ndarray:
    return cast(np.ndarray, np.sign(values) * (10.0 ** np.abs(values) - 1.0) * unit)


LOG_BIN_DECADES = 0.25  # stage 1's histogram bins: a quarter of an order of magnitude


def dp_feature_statistics(
    x: np.ndarray,
    features: list[str],
    value_range: tuple[float, float],
    epsilon: float,
    constant: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """Per-feature centre and spread under epsilon-DP, accurate when features differ by many orders of magnitude.

    Stage 1 (a quarter of epsilon, split evenly over the features): a DP histogram of each feature on a signed log10
    scale (bins of a quarter decade over the public value range; diffprivlib's histogram, two-sided geometric noise:
    integer noise, so no floating-point attack on a Laplace sampler applies). The region is the noisiest-maximum bin,
    plus bins at a quarter of its count that also clear the
    threshold an empty bin passes with probability 5% / bins, widened by half a decade each side. A feature whose
    maximum does not clear that threshold is reported as not reliably located.
    Stage 2 (the other three quarters): DP quantiles q16 and q84 (diffprivlib's exponential mechanism) inside that
    region on the linear scale: centre = (q16 + q84) / 2, spread = (q84 - q16) / 2.
    Scaling bounds: centre +- 3 spreads (within the value range). Columns in `constant` are left out (nothing to
    scale; they keep the value range) and cost nothing. Every draw is diffprivlib's with random_state=None, i.e.
    secrets.SystemRandom (or the test switch of edgeops.noise). A PrivacyLeakWarning is an error."""
    from diffprivlib.tools import histogram, quantile
    from diffprivlib.utils import PrivacyLeakWarning

    low_range, high_range = (float(v) for v in value_range)
    unit = max(abs(low_range), abs(high_range)) * 1e-9  # resolves 9 orders of magnitude below the range's largest value
    t_low, t_high = float(signed_log(np.array(low_range), unit)), float(signed_log(np.array(high_range), unit))
    edges = np.arange(t_low, t_high + LOG_BIN_DECADES, LOG_BIN_DECADES)
    edges[-1] = t_high
    estimated = [c for c in features if c not in constant]
    histogram_epsilon = epsilon / 4
    laplace_scale = (
        max(len(estimated), 1) / histogram_epsilon
    )  # the noise scale of each feature's histogram (epsilon / features each)
    threshold = laplace_scale * math.log((len(edges) - 1) / 0.05)
    quantile_epsilon = epsilon * 3 / 4 / (len(STATISTICS_QUANTILES) * max(len(estimated), 1))
    centre, spread, bounds, regions, unlocated = {}, {}, {}, {}, []
    with warnings.catch_warnings():
        warnings.simplefilter("error", PrivacyLeakWarning)
        for index, column in enumerate(features):
            if column in constant:
                bounds[column] = [low_range, high_range]
                continue
            values = np.clip(np.nan_to_num(x[:, index], nan=(low_range + high_range) / 2), low_range, high_range)
            counts = histogram(
                signed_log(values, unit),
                epsilon=1.0 / laplace_scale,
                bins=edges,
                range=(t_low, t_high),
                random_state=diffprivlib_random_state(),
            )[0].astype(float)
            # Report-noisy-max: the densest bin always locates the feature; bins at a quarter of its count (and above
            # the noise threshold) extend the region, e.g. to both signs of a feature centred on zero.
            peak = int(np.argmax(counts))
            populated = np.union1d([peak], np.flatnonzero(counts > max(counts[peak] / 4, threshold)))
            first, last = max(int(populated[0]) - 2, 0), min(int(populated[-1]) + 3, len(edges) - 1)
            region = (float(signed_exp(np.array(edges[first]), unit)), float(signed_exp(np.array(edges[last]), unit)))
            if counts[peak] <= threshold:
                unlocated.append(column)  # located by the noisy maximum alone: it may be noise
            regions[column] = [region[0], region[1]]
            q16, q84 = sorted(
                float(
                    quantile(
                        np.clip(values, *region),
                        q,
                        epsilon=quantile_epsilon,
                        bounds=region,
                        random_state=diffprivlib_random_state(),
                    )
                )
                for q in STATISTICS_QUANTILES
            )
            q50, width = (q16 + q84) / 2, (q84 - q16) / 2
            if not width > 0:  # the mechanism returned one point three times: any positive width scales the same way
                width = 1e-6 * (region[1] - region[0])
            centre[column], spread[column] = q50, width
            bounds[column] = [max(low_range, q50 - SCALING_WIDTH * width), min(high_range, q50 + SCALING_WIDTH * width)]
            if not bounds[column][0] < bounds[column][1]:
                bounds[column] = [low_range, high_range]
    return {
        "centre": centre,
        "spread": spread,
        "feature_bounds": bounds,
        "regions": regions,
        "constant_columns": sorted(constant),
        "unlocated_columns": unlocated,
        "histogram_laplace_scale": laplace_scale,
        "histogram_threshold": threshold,
    }


def dp_feature_bounds(
    x: np.ndarray, features: list[str], value_range: tuple[float, float], epsilon: float
) -> dict[str, list[float]]:
    """The scaling bounds of `dp_feature_statistics` alone."""
    return cast(dict[str, list[float]], dp_feature_statistics(x, features, value_range, epsilon)["feature_bounds"])


def constant_columns(x: np.ndarray, features: list[str]) -> list[str]:
    """Columns with one value in every row (missing values aside). Which columns are constant is read from the data
    without noise (like the other validation checks' outcomes); their values are not used."""
    out = []
    for index, column in enumerate(features):
        values = x[:, index][np.isfinite(x[:, index])]
        if len(values) == 0 or np.all(values == values[0]):
            out.append(column)
    return out


def run_statistics_stage(
    spec: PipelineSpec,
    ref: DatasetRef,
    ledger: PrivacyLedger,
    dagster_run_id: str = "",
    warn: Callable[[str], object] | None = None,
) -> DpFeatureStatistics | None:
    """When the declaration gives no public feature bounds: estimate each feature's centre and spread with DP statistics
    on the training split (a signed log scale, so 5+ orders of magnitude between features are fine), charged to the
    ledger before the data is read. Constant columns are named, warned about and left out of the scaling (no division
    by zero). None when public bounds are declared."""
    import logging

    from edgeops.data import read_split

    if not spec.dataset.needs_dp_statistics:
        return None
    epsilon = spec.privacy.statistics_epsilon
    computation = Computation(
        kind="dp-feature-statistics",
        dataset_digest=ref.digest,
        inputs={
            "features": list(ref.features),
            "value_range": list(cast("tuple[float, float]", spec.dataset.value_range)),
        },
        hyperparameters={
            "epsilon": epsilon,
            "quantiles": list(STATISTICS_QUANTILES),
            "scale": "signed log10",
            "bin_decades": LOG_BIN_DECADES,
            "scaling_width": SCALING_WIDTH,
        },
        code=code_version("privacy", libraries=("diffprivlib",)),
    )
    log = warn or logging.getLogger("edgeops").warning
    with ledger.spend(
        computation,
        "per-feature quantiles (diffprivlib)",
        epsilon,
        0.0,
        parameters={
            "epsilon": epsilon,
            "delta": 0.0,
            "quantiles": list(STATISTICS_QUANTILES),
            "value_range": list(cast("tuple[float, float]", spec.dataset.value_range)),
            "scale": "signed log10",
            "features": len(ref.features),
            "composition": "basic, epsilon split evenly",
            "dataset_digest": ref.digest,
        },
        run_id=dagster_run_id,
        note="input centring and scaling (no public bounds declared)",
    ) as spend:
        if spend.reused:
            statistics = spend.output  # this exact computation's released statistics: no new data access, no new noise
        else:
            train = read_split(ref, "train")
            x = train[ref.features].to_numpy(np.float64)
            statistics = dp_feature_statistics(
                x,
                ref.features,
                cast("tuple[float, float]", tuple(cast("tuple[float, float]", spec.dataset.value_range))),
                epsilon,
                frozenset(constant_columns(x, ref.features)),
            )
            spend.complete(output=statistics)
    if statistics["constant_columns"]:
        log(
            f"constant column(s) {statistics['constant_columns']} in the training split: dropped from the per-feature "
            "scaling (they keep "
            f"the public value range {list(cast('tuple[float, float]', spec.dataset.value_range))}); they carry no "
            "information for the model"
        )
    if statistics["unlocated_columns"]:
        log(
            f"the DP histogram did not reliably locate column(s) {statistics['unlocated_columns']} "
            f"(statistics_epsilon {epsilon:g}, noise "
            f"scale {statistics['histogram_laplace_scale']:.0f} per bin): their scaling may be far off. "
            "`edgeops doctor` says how many rows or how much epsilon would locate them"
        )
    return DpFeatureStatistics(
        **statistics,
        epsilon=epsilon,
        delta=0.0,
        quantiles=list(STATISTICS_QUANTILES),
        ledger_entry=spend.entry.id,
        scaling=f"model input (x - centre) / spread + 0.5; bounds centre +- {SCALING_WIDTH:g} spreads; centre = "
        "(DP q16 + DP q84) / 2, "
        "spread = (DP q84 - DP q16) / 2, the quantiles searched inside a region located by a DP histogram on a signed "
        "log10 scale",
        mechanism="diffprivlib.tools.quantile (exponential mechanism)",
    )
