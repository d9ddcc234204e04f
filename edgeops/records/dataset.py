"""The data stages' record: where the stored splits are, what they hold, what validation found, and the resolved
feature bounds (declared, or estimated with DP statistics) that every later stage scales its inputs with."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from edgeops.records.base import Record

if TYPE_CHECKING:
    from edgeops.spec import PipelineSpec


class DataProblem(Record):
    """A cell, column or file that could not be read as declared (edgeops.data.load_source, edgeops.drift.load_batch);
    loading keeps the row and names it here, validation fails on it."""

    row: int | None = Field(description="The first row with the problem; None for a whole column or the file.")
    column: str | None = Field(description="The column with the problem; None for whole rows or the file.")
    value: str | None = Field(description="The offending value, as text; None where there is no one value.")
    issue: str = Field(description="The problem, in words.")


class StoredSplit(Record):
    """One split as stored: a Parquet file under a folder named by the dataset's digest."""

    path: str = Field(description="The split's Parquet file.")
    digest: str = Field(description="sha256 of the split's canonical content (edgeops.data.frame_digest).")
    rows: int = Field(description="Rows in the split.")
    file_sha256: str = Field(description="sha256 of the Parquet file's bytes.")


class DpFeatureStatistics(Record):
    """Per-feature centring and scaling estimated with DP statistics (edgeops.privacy.feature_statistics), when the
    declaration gives no public feature bounds; charged to the ledger."""

    centre: dict[str, float] = Field(description="DP centre of each located feature: the midpoint of DP q16 and q84.")
    spread: dict[str, float] = Field(description="DP spread of each located feature: half of DP q84 - q16.")
    feature_bounds: dict[str, list[float]] = Field(
        description="The (low, high) the model's input scaling uses for each feature: centre +- a few spreads, inside "
        "the declared value range."
    )
    regions: dict[str, list[float]] = Field(description="The region a DP histogram located each feature in.")
    constant_columns: list[str] = Field(description="Columns constant in the training split, left out of the scaling.")
    unlocated_columns: list[str] = Field(
        description="Columns the DP histogram did not reliably locate (their scaling may be far off)."
    )
    histogram_laplace_scale: float = Field(description="Laplace noise scale of each histogram bin.")
    histogram_threshold: float = Field(description="The count a bin needs to be told apart from noise.")
    epsilon: float = Field(description="The epsilon charged for the statistics.")
    delta: float = Field(description="The delta charged (0: pure epsilon-DP).")
    quantiles: list[float] = Field(description="The quantiles estimated.")
    ledger_entry: int = Field(description="The privacy ledger entry charged.")
    scaling: str = Field(description="How the model's inputs are scaled from these statistics, in words.")
    mechanism: str = Field(description="The DP mechanism, in words.")


class DatasetRef(Record):
    """The raw_dataset and validated_dataset assets' output: the stored, split dataset later stages read. Validation
    adds `checks` and, without declared feature bounds, `dp_statistics`."""

    digest: str = Field(description="sha256 over the three splits' digests: the dataset's identity.")
    source: str = Field(description="Where the data was read from (a path, or the sklearn dataset's name).")
    features: list[str] = Field(description="Feature columns, in model input order.")
    label: str = Field(description="The label column.")
    splits: dict[str, StoredSplit] = Field(description="train, validation and test, as stored.")
    problems: list[DataProblem] = Field(description="What could not be read as declared (validation fails on any).")
    row_names: dict[str, str] = Field(description="Row id -> image file, for image folders (at most 1,000 kept).")
    dropped_duplicates: int = Field(description="Exact duplicate rows dropped before splitting.")
    stratified: bool = Field(description="Whether the split is stratified by label.")
    checks: dict[str, str] | None = Field(
        None, description="Each blocking check's summary; set once every check passed (validated_dataset)."
    )
    dp_statistics: DpFeatureStatistics | None = Field(
        None, description="DP feature statistics, when the declaration gives no feature bounds (validated_dataset)."
    )

    def bounded(self, spec: PipelineSpec) -> PipelineSpec:
        """The spec with this dataset's resolved feature bounds: the declared ones, or the DP-estimated ones (with
        standardising input scaling) when the declaration gives none. What the model's input scaling, calibration and
        the baseline use."""
        from edgeops.errors import DataError

        if not spec.dataset.needs_dp_statistics:
            return spec
        if self.dp_statistics is None:
            raise DataError(
                spec.name,
                "dataset.feature_bounds is not declared and this dataset has no DP statistics yet; materialize "
                "validated_dataset",
            )
        bounds = {column: (pair[0], pair[1]) for column, pair in self.dp_statistics.feature_bounds.items()}
        return spec.model_copy(
            update={"dataset": spec.dataset.model_copy(update={"feature_bounds": bounds, "scaling": "standardise"})}
        )
