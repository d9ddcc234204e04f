"""What every asset factory shares: keys, groups, failure translation and check results."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import dagster as dg

from edgeops.asset_store import ASSET_DRIFT_REPORT
from edgeops.settings import Settings
from edgeops.spec import Declaration

MAX_TABLE_ROWS = 20


@dataclass(frozen=True)
class AssetFactoryContext:
    declaration: Declaration
    settings: Settings

    def key(self, name: str) -> dg.AssetKey:
        return dg.AssetKey([self.declaration.spec.name, name])

    def group(self, stage: str) -> str:
        return f"{self.declaration.spec.name}_{stage}"


@contextmanager
def edgeops_failure():
    """Turn the project's own errors into a Dagster Failure: the UI shows the message, not a traceback."""
    from edgeops.errors import EdgeopsError

    try:
        yield
    except EdgeopsError as err:
        raise dg.Failure(description=str(err), allow_retries=False) from None


def inline_image(path, caption: str, max_bytes: int = 200_000) -> dg.MetadataValue:
    """A PNG shown in the Dagster UI itself (Markdown with a data URI), not a path to open elsewhere. Large images
    would bloat the event log, so those stay a path."""
    import base64
    from pathlib import Path

    data = Path(path).read_bytes()
    if len(data) > max_bytes:
        return dg.MetadataValue.path(str(path))
    return dg.MetadataValue.md(
        f"![{caption}](data:image/png;base64,{base64.b64encode(data).decode()})\n\n{caption} ({path})"
    )


def per_class_table(per_class: dict) -> dg.MetadataValue:
    """Per-class test accuracy as a Dagster table (sortable in the UI), one row per class."""
    rows = [
        dg.TableRecord(
            {"class": str(label), "accuracy": None if value is None else round(float(value), 4)}
        )  # None: no test rows
        for label, value in per_class.items()
    ]
    return dg.MetadataValue.table(
        rows, schema=dg.TableSchema(columns=[dg.TableColumn("class", "string"), dg.TableColumn("accuracy", "float")])
    )


def records_table(rows: list[dict]) -> dg.MetadataValue:
    """A Markdown table of example rows (at most MAX_TABLE_ROWS)."""
    if not rows:
        return dg.MetadataValue.md("_none_")
    columns = list(dict.fromkeys(k for row in rows[:MAX_TABLE_ROWS] for k in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows[:MAX_TABLE_ROWS]:
        lines.append("| " + " | ".join(str(row.get(c, "")).replace("|", "\\|") for c in columns) + " |")
    return dg.MetadataValue.md("\n".join(lines))


def check_result(
    outcome, severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR, extra_metadata: dict | None = None
) -> dg.AssetCheckResult:
    metadata = {
        "summary": outcome.summary,
        "counts": dg.MetadataValue.json(outcome.counts),
        "examples": records_table(outcome.examples),
        **(extra_metadata or {}),
    }
    for name, url in (outcome.links or {}).items():
        if url:
            metadata[name] = dg.MetadataValue.url(url)
    return dg.AssetCheckResult(
        passed=bool(outcome.passed), severity=severity, description=outcome.summary, metadata=metadata
    )


# The stages that rebuild themselves after a new DP model (see follows_upstream).
AUTOMATED_STAGES = ("compressed_model", "hil_benchmark", "robustness", "trainability", "model_card")


def follows_upstream(ctx: AssetFactoryContext) -> dg.AutomationCondition:
    """Downstream of the DP model: re-materialize when an upstream asset updates (e.g. a retrain after drift), only
    once every upstream blocking check passed. Evaluated by the Dagster daemon (`make ui` runs one).

    `eager()` alone races when a dependency is itself due: after a retrain, the card (unpartitioned) and the target's
    compression (partitioned by target, so never in the same run) were requested on the same tick, the card was built
    from the old benchmark, and the benchmark's later update was forgotten when the card's own run finished (the card's
    `since_last_handled` resets on its update). So a stage also waits while an automated dependency still awaits its
    own rebuild; it is then requested once, after that dependency updates."""
    automated = dg.AssetSelection.assets(*(ctx.key(stage) for stage in AUTOMATED_STAGES))
    dependency_due = dg.AutomationCondition.any_deps_updated().since_last_handled().with_label("awaits its own rebuild")
    return (
        dg.AutomationCondition.eager()
        & dg.AutomationCondition.all_deps_blocking_checks_passed()
        & ~dg.AutomationCondition.any_deps_match(dependency_due)
        .allow(automated)
        .with_label("no automated dependency awaits its rebuild")
    )


def card_follows_upstream(ctx: AssetFactoryContext) -> dg.AutomationCondition:
    """The card's condition: follows_upstream, blind to the drift reports it reads. Batches arrive on their own
    schedule; a new batch's report must not rebuild and re-sign the card (a retrain after drift rebuilds it through the
    DP model)."""
    return follows_upstream(ctx).ignore(dg.AssetSelection.assets(ctx.key(ASSET_DRIFT_REPORT)))
