"""What a release decision did: a promotion or a rollback of a `<pipeline>-<target>` model (edgeops.release)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from edgeops.records.base import Record


class ReleaseOutcome(Record):
    """The production alias after `edgeops.release.promote` or `rollback` moved it, and the MLflow run that records
    the decision."""

    model: str = Field(description="The registered model (`<pipeline>-<target>`).")
    version: str = Field(description="The version production is at now.")
    previous: str | None = Field(description="The version production was at before; None if there was none.")
    decision: Literal["promoted", "rolled back"] = Field(description="What was done.")
    mlflow_run_id: str = Field(description="The MLflow run that records the decision (what, who, why, the numbers).")
    numbers: dict[str, Any] = Field(
        default_factory=dict,
        description="The side-by-side measurement against the production version; empty where none was made.",
    )
    bundle: str | None = Field(default=None, description="The signed release bundle of a promotion; None otherwise.")
