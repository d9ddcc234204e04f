"""The dataset and validation sections: where the data comes from, its public bounds and split, and the checks it
must pass (Great Expectations suite, duplicates, class balance, the poisoning scan)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from edgeops.spec.base import Fraction, Frozen


# ---------------------------------------------------------------- dataset
class SplitSpec(Frozen):
    """A seeded, stratified split. Fractions must add up to 1."""

    train: Fraction = 0.7
    validation: Fraction = 0.1
    test: Fraction = 0.2
    seed: int = 0
    column: str | None = Field(
        None, description="Use a split column of the source (values train/validation/test) instead of a random split."
    )
    deduplicate: bool = Field(False, description="Drop exact duplicate rows before splitting (the count is reported).")

    @model_validator(mode="after")
    def _fractions_add_up(self) -> SplitSpec:
        total = self.train + self.validation + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + validation + test must be 1, got {total:g}")
        return self


class DatasetSpec(Frozen):
    source: str = Field(
        description="sklearn:digits | csv:<path> | parquet:<path> | images:<folder>; paths relative to the project root"
    )
    kind: Literal["image", "table"]
    label: str = "target"
    features: list[str] | None = Field(
        None, description="Feature columns in order; default: every column but the label (and split column)."
    )
    n_features: int | None = Field(None, gt=0)
    image_shape: tuple[int, int, int] | None = Field(None, description="(channels, height, width) for kind: image")
    feature_bounds: tuple[float, float] | dict[str, tuple[float, float]] | None = Field(
        None,
        description="Public bounds of every feature (one pair for all, or per column). Used for validation, clipping "
        "and DP.",
    )
    value_range: tuple[float, float] | None = Field(
        None,
        description="Without feature_bounds: a wide public range every value lies in (a sensor's physical limits). "
        "Validation "
        "checks it; per-feature bounds for scaling come from DP quantiles inside it (privacy.statistics_epsilon).",
    )
    scaling: Literal["bounds", "standardise"] = Field(
        "bounds",
        description="How the model scales its inputs inside itself. bounds: each feature's bounds onto [0, 1]. "
        "standardise: "
        "the bounds' centre onto 0.5 and a sixth of their width onto 1 (unit spread); what DP statistics set, "
        "their bounds being centre +- 3 spreads.",
    )
    classes: list[int] = Field(min_length=2)
    min_rows: int = Field(10, gt=0)
    split: SplitSpec = SplitSpec()

    @field_validator("source")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        scheme, _, rest = value.partition(":")
        if scheme not in {"sklearn", "csv", "parquet", "images"} or not rest:
            raise ValueError("must be sklearn:<name>, csv:<path>, parquet:<path> or images:<folder>")
        if scheme == "sklearn" and rest != "digits":
            raise ValueError("the only built-in sklearn dataset is sklearn:digits")
        return value

    @field_validator("feature_bounds", "value_range")
    @classmethod
    def _ordered_bounds(cls, value: Any) -> Any:
        if value is None:
            return value
        pairs = value.values() if isinstance(value, dict) else [value]
        for low, high in pairs:
            if not low < high:
                raise ValueError(f"bounds must be (low, high) with low < high, got ({low}, {high})")
        return value

    @model_validator(mode="after")
    def _shape_matches(self) -> DatasetSpec:
        if len(set(self.classes)) != len(self.classes):
            raise ValueError("classes must be unique")
        if self.feature_bounds is None and self.value_range is None:
            raise ValueError(
                "give feature_bounds (public per-feature bounds) or value_range (a wide public range; the bounds then "
                "come from DP statistics charged to privacy.statistics_epsilon)"
            )
        if self.kind == "image" and self.image_shape is None:
            raise ValueError("kind: image needs image_shape (channels, height, width)")
        if (
            self.image_shape
            and self.n_features
            and self.n_features != self.image_shape[0] * self.image_shape[1] * self.image_shape[2]
        ):
            raise ValueError("n_features must equal channels*height*width of image_shape")
        if self.features and self.n_features and len(self.features) != self.n_features:
            raise ValueError("features and n_features disagree")
        return self

    @property
    def scheme(self) -> str:
        return self.source.split(":", 1)[0]

    @property
    def location(self) -> str:
        return self.source.split(":", 1)[1]

    def bounds_for(self, column: str) -> tuple[float, float]:
        """The public bounds of a column: declared, or the declared value range when bounds come from DP statistics."""
        if isinstance(self.feature_bounds, dict):
            return self.feature_bounds[column]
        bounds = self.feature_bounds or self.value_range
        if bounds is None:  # refused by validation: one of the two is always declared
            raise ValueError(f"dataset: no bounds for column {column!r}: give feature_bounds or value_range")
        return bounds

    @property
    def needs_dp_statistics(self) -> bool:
        return self.feature_bounds is None


# ---------------------------------------------------------------- validation
class PoisoningScanSpec(Frozen):
    """Label-noise / poisoning scan of the training split, on standardised features (scale-invariant).

    confident_learning (default): cleanlab's confident learning on out-of-sample class probabilities (a logistic
    regression, k-fold cross-validated); a row is suspect when cleanlab finds its label an issue (prune_by_class).
    knn: a row is suspect when `disagreement` of its k nearest neighbours carry another label."""

    method: Literal["confident_learning", "knn"] = "confident_learning"
    folds: int = Field(
        5, ge=2, le=20, description="confident_learning: cross-validation folds for the out-of-sample probabilities"
    )
    neighbours: int = Field(10, ge=3, le=100, description="knn only")
    disagreement: float = Field(
        0.7, gt=0.5, le=1.0, description="knn only: share of neighbours with another label that flags a row"
    )
    max_suspect_fraction: float = Field(
        0.06,
        ge=0,
        lt=1,
        description="share of suspect training rows that stops the run. Clean data measured 0.1-4.6% suspects "
        "and 10% flipped labels 9-15% (benchmarks/poisoning.py)",
    )


class ValidationSpec(Frozen):
    expectations: str = Field(description="Great Expectations suite (JSON), relative to the project root")
    max_duplicate_fraction: float = Field(0.0, ge=0, lt=1, description="duplicates allowed within one split")
    min_class_fraction: float = Field(0.0, ge=0, lt=1)
    max_class_fraction: float = Field(1.0, gt=0, le=1)
    poisoning: PoisoningScanSpec = PoisoningScanSpec()
