"""Card formats: Markdown with Hugging Face front matter (edgeops.cards.markdown), a self-contained HTML page with its
chart inlined (edgeops.cards.html_page), and an export to Google's Model Card Toolkit schema (edgeops.cards.mct). This
module holds what they share: numbers as plain text, the lineage rows and the Pareto chart."""

from __future__ import annotations

import io
from typing import Any


def value_text(item: Any, digits: int = 4) -> str:
    """A (cited) number as plain text for the Markdown card and the Model Card Toolkit export."""
    value = item["value"] if isinstance(item, dict) and "value" in item else item
    if value is None:
        return "not measured"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def pareto_png(card: dict[str, Any]) -> bytes | None:
    """Accuracy against latency p50 (marker size ~ file size), one point per measured target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [
        (t["name"], t["latency_p50_ms"]["value"], t["accuracy"]["value"], t["size_bytes"]["value"] / 1024)
        for t in card["targets"]
        if t.get("latency_p50_ms") and t.get("accuracy")
    ]
    if not points:
        return None
    figure, axis = plt.subplots(figsize=(6, 4), dpi=100)
    for name, latency, accuracy, size_kb in points:
        axis.scatter(latency * 1000, accuracy * 100, s=20 + 4 * size_kb, alpha=0.7)
        axis.annotate(
            f"{name} ({size_kb:.1f} KB)",
            (latency * 1000, accuracy * 100),
            textcoords="offset points",
            xytext=(5, 5),
            fontsize=8,
        )
    axis.set_xlabel("latency p50 at batch 1 (µs, measured on the declared device)")
    axis.set_ylabel("test accuracy (%)")
    axis.set_title(f"{card['pipeline']} {card['version']}: accuracy vs latency (marker area ~ size)")
    axis.grid(alpha=0.3)
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def lineage_rows(card: dict[str, Any], mlflow_ui: str | None) -> list[tuple[str, str, str, str | None]]:
    """(what, kind, digest or id, link) for every link of the chain the card records: declaration, data splits, DP
    model, each target's artifact and registered version, MLflow runs, the Dagster run."""
    lineage = card.get("lineage", {})
    run_url = (lambda run: f"{mlflow_ui}/#/runs/{run}") if mlflow_ui else (lambda run: None)
    runs = lineage.get("mlflow_runs", {})
    rows: list[tuple[str, str, str, str | None]] = [("declaration", "sha256", lineage.get("spec_sha256", ""), None)]
    for split, digest in lineage.get("dataset_digests", {}).items():
        rows.append((f"dataset: {split}", "sha256", digest, None))
    rows.append(
        (
            "DP model weights",
            "sha256",
            lineage.get("weights_sha256", ""),
            run_url(runs["dp_model"]) if runs.get("dp_model") else None,
        )
    )
    for name, digest in lineage.get("artifact_sha256", {}).items():
        stage = "dp_model" if name.startswith("dp_model.") else f"compressed_model[{name.rsplit('.', 1)[0]}]"
        rows.append((f"file {name}", "sha256", digest, run_url(runs[stage]) if runs.get(stage) else None))
    for target, registered in lineage.get("registered_models", {}).items():
        if registered.get("name"):
            url = f"{mlflow_ui}/#/models/{registered['name']}/versions/{registered['version']}" if mlflow_ui else None
            rows.append(
                (
                    f"registered version ({target})",
                    "MLflow model version",
                    f"{registered['name']} v{registered['version']}",
                    url,
                )
            )
    for stage, run in runs.items():
        if run:
            rows.append((f"stage run {stage}", "MLflow run", run, run_url(run)))
    if lineage.get("dagster_run_id"):
        rows.append(("card's Dagster run", "Dagster run", lineage["dagster_run_id"], None))
    if card.get("mlflow_run_id"):
        rows.append(("card run", "MLflow run", card["mlflow_run_id"], run_url(card["mlflow_run_id"])))
    return rows
