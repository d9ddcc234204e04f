"""The training data as arrays and the declared model built for it: what every training path starts from."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from torch import nn

from edgeops.models import build_model
from edgeops.spec import PipelineSpec

if TYPE_CHECKING:
    from edgeops.records import DatasetRef

Progress = Callable[[str], None]


@dataclass
class TrainingData:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: list[int]
    digest: str
    features: list[str]

    @classmethod
    def from_ref(cls, ref: DatasetRef, spec: PipelineSpec) -> TrainingData:
        from edgeops.data import read_split, to_arrays

        arrays = [to_arrays(read_split(ref, name), ref) for name in ("train", "validation", "test")]
        classes = list(spec.dataset.classes)
        index = {c: i for i, c in enumerate(classes)}
        encode: Callable[[Any], np.ndarray] = lambda y: np.array([index[int(v)] for v in y], dtype=np.int64)  # noqa: E731
        (xt, yt), (xv, yv), (xs, ys) = arrays
        return cls(xt, encode(yt), xv, encode(yv), xs, encode(ys), classes, ref.digest, ref.features)


def new_model(spec: PipelineSpec, data: TrainingData) -> nn.Module:
    from edgeops.scaling import model_input_bounds

    low, high = model_input_bounds(spec, data.features)
    return build_model(spec.model, len(data.features), len(data.classes), spec.dataset.image_shape, low, high)
