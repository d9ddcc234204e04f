"""Simulated drift: batches drawn from the held-out test split and shifted on purpose (rotation, noise, brightness,
contrast or occlusion for images; covariate or label shift for tables; or none), for `edgeops drift simulate`, demos,
tests and benchmarks. edgeops.drift re-exports these names.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np
import pandas as pd

from edgeops.data import read_split
from edgeops.errors import DataError
from edgeops.progress import advance
from edgeops.spec import Declaration

if TYPE_CHECKING:
    from edgeops.records import DatasetRef

SEVERITIES = {"low": 0.33, "medium": 0.66, "high": 1.0}


# ---------------------------------------------------------------- simulated batches
def _images(x: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    return x.reshape(len(x), *shape[1:]) if shape[0] == 1 else x.reshape(len(x), *shape)


def shift_batch(
    x: np.ndarray,
    y: np.ndarray,
    kind: str,
    severity: float,
    *,
    declaration: Declaration,
    features: list[str],
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    from edgeops.scaling import feature_bounds

    spec = declaration.spec
    low, high = feature_bounds(spec, features)
    span = high - low
    x = x.astype(np.float64).copy()
    if spec.dataset.kind == "image":
        images = _images(x, cast("tuple[int, int, int]", spec.dataset.image_shape))
        if kind == "rotation":
            from scipy.ndimage import rotate

            images = np.stack(
                [
                    rotate(img, angle=45 * severity * rng.choice([-1, 1]), reshape=False, order=1, mode="constant")
                    for img in images
                ]
            )
        elif kind == "noise":
            images = images + rng.normal(0, 0.35 * severity * span.mean(), images.shape)
        elif kind == "brightness":
            images = images + 0.4 * severity * span.mean()
        elif kind == "contrast":
            images = images.mean(axis=(1, 2), keepdims=True) + (images - images.mean(axis=(1, 2), keepdims=True)) * (
                1 - 0.7 * severity
            )
        elif kind == "occlusion":
            size = max(1, int(round(images.shape[1] * 0.6 * severity)))
            for img in images:
                top, left = rng.integers(0, images.shape[1] - size + 1, size=2)
                img[top : top + size, left : left + size] = low.min()
        elif kind != "none":
            raise DataError(
                "drift simulate",
                f"unknown image shift {kind!r}; use rotation, noise, brightness, contrast, occlusion or none",
            )
        x = images.reshape(len(x), -1)
    else:
        if kind == "covariate":
            columns = rng.choice(x.shape[1], size=max(1, x.shape[1] // 2), replace=False)
            x[:, columns] += 0.5 * severity * span[columns]
        elif kind == "label":
            keep = rng.random(len(y)) < np.where(y == y.min(), 1.0, 1 - 0.9 * severity)
            x, y = x[keep], y[keep]
        elif kind != "none":
            raise DataError("drift simulate", f"unknown table shift {kind!r}; use covariate, label or none")
    return np.clip(x, low, high), y


def simulate(
    declaration: Declaration,
    reference_ref: DatasetRef,
    kind: str,
    severity: str | float,
    out_dir: Path,
    *,
    batches: int = 1,
    rows: int = 200,
    seed: int = 0,
) -> list[Path]:
    """Shifted batches (or unshifted ones, kind 'none') drawn from the held-out test split, written as CSV."""
    level = SEVERITIES.get(severity) if isinstance(severity, str) else float(severity)
    if level is None or not 0 <= level <= 1:
        raise DataError(
            "drift simulate", f"--severity must be low, medium, high or a number in [0, 1], got {severity!r}"
        )
    test = read_split(reference_ref, "test")
    features, label = reference_ref.features, reference_ref.label
    rng = np.random.default_rng(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(batches):
        sample = test.sample(min(rows, len(test)), replace=rows > len(test), random_state=int(rng.integers(1 << 31)))
        x, y = shift_batch(
            sample[features].to_numpy(),
            sample[label].to_numpy(),
            kind,
            level,
            declaration=declaration,
            features=features,
            rng=rng,
        )
        frame = pd.DataFrame(np.round(x, 4), columns=features)
        frame[label] = y.astype(int)
        digest = hashlib.sha256(frame.to_csv(index=False).encode()).hexdigest()[:8]
        path = out_dir / f"{kind}-{severity!s}-{index:03d}-{digest}.csv"
        frame.to_csv(path, index=False)
        paths.append(path)
        advance(f"drift batches ({kind}, {severity})", index + 1, batches, path.name)
    return paths
