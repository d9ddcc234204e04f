"""Where each asset's JSON output lives, in one place: the Dagster IO manager writes through this layout and every
reader outside Dagster (the CLI, the run summary, release jobs, the card's drift history) reads through it.

Layout: `<home>/assets/<pipeline>/<asset>/<partition>.json`, `__all__.json` for an unpartitioned asset. Each file is
an asset's small JSON reference (paths, hashes, numbers); models and data are files it points to. No pickles.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any, cast

from pydantic import TypeAdapter

from edgeops.errors import EdgeopsError
from edgeops.lineage import (
    STAGE_BENCHMARK,
    STAGE_CARD,
    STAGE_COMPRESSION,
    STAGE_DP_MODEL,
    STAGE_RAW,
    STAGE_ROBUSTNESS,
    STAGE_TRAINABILITY,
    STAGE_VALIDATED,
)
from edgeops.records import (
    Baseline,
    BenchmarkRecord,
    CanaryAuditRecord,
    CardSummary,
    DatasetRef,
    DpModel,
    DriftReport,
    MembershipAuditRecord,
    ReferenceRecord,
    Robustness,
    TargetArtifact,
    TrainabilityRecord,
)

ASSETS_FOLDER = "assets"  # below the edgeops home
UNPARTITIONED = "__all__"
# Assets read outside Dagster that have no lineage stage of their own.
ASSET_FEDERATED_MODEL, ASSET_DRIFT_REPORT = "federated_model", "drift_report"
# The privacy-side assets the card reads, none of them released.
ASSET_DP_BASELINE, ASSET_NONPRIVATE_REFERENCE = "dp_baseline", "nonprivate_reference"
ASSET_PRIVACY_AUDIT, ASSET_CANARY_AUDIT = "privacy_audit", "dp_canary_audit"

# The assets whose output is a typed record (edgeops.records): stored as its JSON, handed back validated, to the
# Dagster IO manager and to every reader here alike; a record class, or a union where an asset stores several forms.
RECORD_OF_ASSET: dict[str, Any] = {
    STAGE_RAW: DatasetRef,
    STAGE_VALIDATED: DatasetRef,
    STAGE_DP_MODEL: DpModel,
    ASSET_FEDERATED_MODEL: DpModel,
    STAGE_ROBUSTNESS: Robustness,
    STAGE_TRAINABILITY: TrainabilityRecord,
    ASSET_DRIFT_REPORT: DriftReport,
    STAGE_BENCHMARK: BenchmarkRecord,
    STAGE_COMPRESSION: TargetArtifact,
    ASSET_DP_BASELINE: Baseline,
    ASSET_NONPRIVATE_REFERENCE: ReferenceRecord,
    ASSET_PRIVACY_AUDIT: MembershipAuditRecord,
    ASSET_CANARY_AUDIT: CanaryAuditRecord,
    STAGE_CARD: CardSummary,
}


@cache
def _validator(asset: str) -> TypeAdapter[Any] | None:
    """One validator per record type, built once (building a TypeAdapter compiles the record's schema)."""
    record = RECORD_OF_ASSET.get(asset)
    return TypeAdapter(record) if record else None


def load_stored(asset: str, stored: Any) -> Any:
    """An asset's stored JSON as it is handed on: its record, validated (a malformed file is refused here, naming the
    field), or the JSON itself for an asset that has no record yet."""
    validator = _validator(asset)
    return validator.validate_python(stored) if validator else stored


class AssetNotMaterialized(EdgeopsError):
    """An asset's output was asked for before any run wrote it."""


class AssetStore:
    """Reads and writes asset outputs under `<home>/assets` (`root`); written atomically, read as JSON."""

    def __init__(self, root: Path):
        self.root = Path(root)

    @classmethod
    def under_home(cls, home: Path) -> AssetStore:
        return cls(Path(home) / ASSETS_FOLDER)

    def path(self, pipeline: str, asset: str, partition: str | None = None) -> Path:
        return self.path_of_key([pipeline, asset], partition)

    def path_of_key(self, key_path: list[str], partition: str | None = None) -> Path:
        """The file of a Dagster asset key's path (`[pipeline, asset]`), for the IO manager."""
        return Path(self.root, *key_path, f"{partition or UNPARTITIONED}.json")

    @staticmethod
    def write_json(path: Path, payload: Any) -> None:
        """Write through a temporary file and rename it, so a reader never sees half a file."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(payload, indent=1, default=str))
        tmp.replace(path)

    def read(self, pipeline: str, asset: str, partition: str | None = None, *, hint: str = "") -> Any:
        """The stored output; AssetNotMaterialized (naming the asset and the file) when no run has written it."""
        path = self.path(pipeline, asset, partition)
        if not path.exists():
            part = f" for {partition}" if partition else ""
            raise AssetNotMaterialized(
                f"pipeline {pipeline!r}: {asset}{part} has not been materialized yet ({path} is missing)"
                + (f"; {hint}" if hint else "")
            )
        return json.loads(path.read_text())

    def read_if_present(self, pipeline: str, asset: str, partition: str | None = None) -> Any | None:
        """The stored output, or None when it is absent or unreadable (for summaries that report what exists)."""
        try:
            return json.loads(self.path(pipeline, asset, partition).read_text())
        except (OSError, ValueError):
            return None

    def partitions(self, pipeline: str, asset: str) -> dict[str, Any]:
        """Every stored partition of a partitioned asset, by partition key, in key order."""
        folder = self.root / pipeline / asset
        if not folder.exists():
            return {}
        return {path.stem: json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))}

    # ---------------------------------------------------------------- the outputs read outside Dagster
    def validated_dataset(self, pipeline: str) -> DatasetRef:
        stored = self.read(pipeline, STAGE_VALIDATED, hint="run the pipeline first")
        return cast(DatasetRef, load_stored(STAGE_VALIDATED, stored))

    def _record_if_present(self, pipeline: str, asset: str, partition: str | None = None) -> Any | None:
        stored = self.read_if_present(pipeline, asset, partition)
        return None if stored is None else load_stored(asset, stored)

    def compressed_model(self, pipeline: str, target: str) -> TargetArtifact:
        """The target's stored artifact record, validated (a malformed one is refused, naming the field)."""
        hint = f"target {target!r} has no compressed artifact yet; run `edgeops run --pipeline {pipeline}` first"
        return cast(
            TargetArtifact, load_stored(STAGE_COMPRESSION, self.read(pipeline, STAGE_COMPRESSION, target, hint=hint))
        )

    def compressed_model_if_present(self, pipeline: str, target: str) -> TargetArtifact | None:
        """The target's stored artifact record, validated, or None before any."""
        return cast("TargetArtifact | None", self._record_if_present(pipeline, STAGE_COMPRESSION, target))

    def released_model(self, pipeline: str) -> DpModel | None:
        """The DP model's stored record, from central or federated training, validated, or None."""
        stored = self._record_if_present(pipeline, STAGE_DP_MODEL) or self._record_if_present(
            pipeline, ASSET_FEDERATED_MODEL
        )
        return cast("DpModel | None", stored)

    def benchmark(self, pipeline: str, target: str) -> BenchmarkRecord | None:
        """The target's stored benchmark record, validated (a malformed one is refused), or None before any."""
        return cast("BenchmarkRecord | None", self._record_if_present(pipeline, STAGE_BENCHMARK, target))

    def model_card(self, pipeline: str) -> CardSummary | None:
        """The card stage's stored summary, validated, or None before any card."""
        return cast("CardSummary | None", self._record_if_present(pipeline, STAGE_CARD))

    def drift_reports(self, pipeline: str) -> list[DriftReport]:
        """Every batch's drift report, in partition-key order, validated as the IO manager hands it downstream (a
        malformed stored report is refused here, not half-read by the card)."""
        stored = self.partitions(pipeline, ASSET_DRIFT_REPORT).values()
        return [cast(DriftReport, load_stored(ASSET_DRIFT_REPORT, report)) for report in stored]
