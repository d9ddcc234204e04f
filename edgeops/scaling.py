"""The model's input scaling: each feature's (low, high), from the declaration or, once DP statistics resolved them
(`edgeops.records.DatasetRef.bounded`), from those."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from edgeops.spec import PipelineSpec


def feature_bounds(spec: PipelineSpec, features: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature (low, high) arrays: the declared bounds, or, before DP statistics resolved them (see
    `DatasetRef.bounded`), the declared public value range."""
    declared = spec.dataset.feature_bounds
    pairs = np.array(
        [
            spec.dataset.bounds_for(c) if not isinstance(declared, dict) or c in declared else (0.0, 1.0)
            for c in features
        ],
        dtype=np.float64,
    )
    return pairs[:, 0], pairs[:, 1]


def model_input_bounds(spec: PipelineSpec, features: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The (low, high) the model's input scaler maps onto [0, 1]: the feature bounds, or, with scaling: standardise,
    centre +- half a spread (so that one spread becomes one unit: the model standardises its inputs inside itself)."""
    low, high = feature_bounds(spec, features)
    if spec.dataset.scaling != "standardise":
        return low, high
    centre, spread = (low + high) / 2, (high - low) / 6
    return centre - spread / 2, centre + spread / 2
