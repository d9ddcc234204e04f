"""Drift monitoring with Evidently 0.7: incoming batches against the training reference.

A batch is first validated with the dataset's expectations (a bad batch is quarantined with its report, never
dropped). Then one Evidently report covers: feature drift (method and threshold per column from the declaration,
Evidently's defaults otherwise), prediction drift of the released model, and, for images, drift of the model's
embeddings (penultimate layer) and of simple pixel statistics. Accuracy on the batch is reported when it has labels.
Large batches are sampled to a declared maximum, and the sample size is recorded. Simulated (shifted) batches are
made in edgeops.drift_simulation; its names are re-exported here.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from edgeops.data import ROW_ID, read_split
from edgeops.drift_simulation import SEVERITIES as SEVERITIES
from edgeops.drift_simulation import _images as _images
from edgeops.drift_simulation import shift_batch as shift_batch
from edgeops.drift_simulation import simulate as simulate
from edgeops.errors import DataError
from edgeops.files import file_sha256
from edgeops.records import (
    DataProblem,
    DpModel,
    DriftChecked,
    DriftQuarantined,
    DriftReport,
    DriftSummary,
    PredictionDrift,
)
from edgeops.spec import Declaration

if TYPE_CHECKING:
    from torch import nn

    from edgeops.lineage import LineageRun
    from edgeops.records import DatasetRef

BATCH_SUFFIXES = {".csv", ".parquet"}


# ---------------------------------------------------------------- batches on disk
def _is_batch(path: Path) -> bool:
    """A CSV or Parquet file, or a folder of images laid out <batch>/<label>/<image>."""
    return (path.is_file() and path.suffix in BATCH_SUFFIXES) or (path.is_dir() and not path.name.startswith("."))


def _content_sha256(path: Path) -> str:
    if path.is_file():
        return file_sha256(path)
    digest = hashlib.sha256()
    for item in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f"{item.relative_to(path)}\0{file_sha256(item)}\n".encode())
    return digest.hexdigest()


def _last_write(path: Path) -> float:
    return (
        max([path.stat().st_mtime, *(p.stat().st_mtime for p in path.rglob("*"))])
        if path.is_dir()
        else path.stat().st_mtime
    )


def batch_key(path: Path) -> str:
    """Partition key: name plus a content hash, so the same bytes are never processed twice."""
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in (path.stem if path.is_file() else path.name))[:40]
    return f"{stem}-{_content_sha256(path)[:12]}"


def complete_batches(folder: Path, settle_seconds: float, now: float) -> list[Path]:
    """Batches whose last write is older than settle_seconds (one still being written is left for the next tick)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _is_batch(p) and now - _last_write(p) >= settle_seconds)


def find_batch(folder: Path, key: str) -> Path:
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        if _is_batch(path) and batch_key(path) == key:
            return path
    raise DataError(str(folder), f"no incoming batch with key {key!r} (moved or changed since it was registered)")


def load_batch(path: Path, declaration: Declaration, features: list[str]) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """Read a batch with the same rules as the training source. Returns the frame and its schema problems."""
    from edgeops.data import add_numeric_column, load_image_folder, read_table

    if path.is_dir():
        if declaration.spec.dataset.kind != "image":
            raise DataError(str(path), "an image-folder batch for a table dataset")
        raw, _ = load_image_folder(path, declaration.spec.dataset)
        # Images flatten in the declared (channels, height, width) order: map them onto the training columns by
        # position.
        raw = raw.rename(
            columns=dict(zip([c for c in raw.columns if c != declaration.spec.dataset.label], features, strict=False))
        )
    else:
        raw = read_table(path, "csv" if path.suffix == ".csv" else "parquet")
    if raw.empty:
        raise DataError(str(path), "batch has no rows")
    label = declaration.spec.dataset.label
    problems, frame = [], pd.DataFrame({ROW_ID: np.arange(len(raw), dtype=np.int64)})
    for column in features:
        if column not in raw.columns:
            problems.append({"row": None, "column": column, "value": None, "issue": "declared column missing"})
            frame[column] = np.nan
        else:
            add_numeric_column(frame, raw[column], column, problems)
    if label in raw.columns:
        add_numeric_column(frame, raw[label], label, problems)
    extra = [c for c in raw.columns if c not in features and c != label]
    problems += [{"row": None, "column": c, "value": None, "issue": "column not in the training schema"} for c in extra]
    return frame, problems


def _rows_problem(rows: np.ndarray, issue: str) -> dict[str, Any]:
    """One problem for every row in `rows` (indices, at least one) that has it: their count, and the first of them."""
    return {"row": int(rows[0]), "column": None, "value": None, "issue": f"{len(rows)} rows {issue}"}


def validate_batch(
    frame: pd.DataFrame, problems: list[dict[str, Any]], declaration: Declaration, features: list[str]
) -> list[dict[str, Any]]:
    """Schema problems plus the declared bounds, nulls and label domain: the expectations that apply to a batch."""
    spec = declaration.spec
    found = list(problems)
    values = frame[features].to_numpy(dtype=np.float64)
    bad_rows = np.flatnonzero(~np.isfinite(values).all(axis=1))
    if len(bad_rows):
        found.append(_rows_problem(bad_rows, "with missing or infinite values"))
    from edgeops.scaling import feature_bounds

    low, high = feature_bounds(spec, features)
    outside = np.flatnonzero(((values < low) | (values > high)).any(axis=1))
    if len(outside):
        found.append(_rows_problem(outside, "outside the declared feature bounds"))
    if spec.dataset.label in frame.columns:
        labels = frame[spec.dataset.label].dropna()
        unknown = sorted(set(labels.astype(int)) - set(spec.dataset.classes)) if len(labels) else []
        if unknown:
            found.append(
                {
                    "row": None,
                    "column": spec.dataset.label,
                    "value": str(unknown[:5]),
                    "issue": "labels outside the declared classes",
                }
            )
    return found


def quarantine(path: Path, key: str, problems: list[dict[str, Any]], quarantine_root: Path) -> Path:
    folder = quarantine_root / key
    folder.mkdir(parents=True, exist_ok=True)
    if path.is_dir():
        shutil.copytree(path, folder / path.name, dirs_exist_ok=True)
    else:
        shutil.copy2(path, folder / path.name)
    (folder / "report.json").write_text(json.dumps({"batch": str(path), "key": key, "problems": problems}, indent=1))
    return folder


# ---------------------------------------------------------------- the report
def _model_columns(model: Any, x: np.ndarray, image: bool) -> pd.DataFrame:
    import torch

    with torch.no_grad():
        tensor = torch.from_numpy(x.astype(np.float32))
        logits = model(tensor).numpy()
        embeddings = model.embed(tensor).reshape(len(x), -1).numpy()
    columns = {"prediction": logits.argmax(1)}
    # A fixed projection of the embeddings (the first components of a seeded random rotation) keeps the number of
    # drift tests small and stable whatever the width of the penultimate layer.
    rng = np.random.default_rng(0)
    projection = np.linalg.qr(rng.standard_normal((embeddings.shape[1], embeddings.shape[1])))[0][
        :, : min(8, embeddings.shape[1])
    ]
    for index, values in enumerate((embeddings @ projection).T):
        columns[f"embedding_{index}"] = values
    if image:
        columns["stat_pixel_mean"] = x.mean(axis=1)
        columns["stat_pixel_std"] = x.std(axis=1)
    return pd.DataFrame(columns)


# Prediction drift: a two-sample chi-square test of homogeneity (scipy's chi2_contingency on the 2 x k table).
# Evidently's "chisquare" is a goodness-of-fit test that takes the reference's class shares as exact, though they are
# estimated from the reference sample too: with 360 reference and 150 batch rows over 10 classes its false-alarm rate
# is 9.5% at a nominal 1% (0.8% for this test; 4,000 simulated clean batches). Registered with Evidently so that its
# report shows the same test and p-value as the summary.
PREDICTION_TEST = "chi2_homogeneity"


def _chi2_homogeneity(
    reference: pd.Series, current: pd.Series, feature_type: object, threshold: float
) -> tuple[float, bool]:
    from scipy.stats import chi2_contingency

    classes = sorted(set(reference.dropna()) | set(current.dropna()))
    table = np.array([[int((sample == c).sum()) for c in classes] for sample in (reference, current)])
    table = table[:, table.sum(axis=0) > 0]
    p_value = 1.0 if table.shape[1] < 2 else float(chi2_contingency(table)[1])
    return p_value, p_value < threshold


def _register_prediction_test() -> None:
    from evidently.legacy.calculations.stattests.registry import StatTest, register_stattest
    from evidently.legacy.core import ColumnType

    register_stattest(
        StatTest(
            name=PREDICTION_TEST,
            display_name="chi-square test of homogeneity p_value",
            allowed_feature_types=[ColumnType.Categorical],
        ),
        default_impl=_chi2_homogeneity,
    )


# Evidently's stat tests that return a p-value (drift when below the threshold); the others return a distance
# (drift when at or above it). Names as they appear in a metric's config: the test id or its display name.
P_VALUE_TESTS = {
    PREDICTION_TEST,
    "ks",
    "chisquare",
    "z",
    "fisher_exact",
    "g_test",
    "t_test",
    "mannw",
    "anderson",
    "cramer_von_mises",
    "es",
    "epps_singleton",
}


def _drifted(metric: dict[str, Any]) -> bool | None:
    config = metric.get("config", {})
    method, threshold, value = str(config.get("method", "")), config.get("threshold"), metric.get("value")
    if threshold is None or not isinstance(value, (int, float)):
        return None
    is_p_value = method in P_VALUE_TESTS or "p_value" in method.lower().replace("-", "_")
    return bool(value < threshold if is_p_value else value >= threshold)


def drift_report(
    declaration: Declaration,
    reference_ref: DatasetRef,
    model: nn.Module,
    batch: pd.DataFrame,
    out_dir: Path,
    *,
    seed: int = 0,
    write_html: bool = True,
) -> DriftSummary:
    """Run the Evidently report and return a compact summary (the HTML report is written to out_dir)."""
    from evidently import Report
    from evidently.metrics import ValueDrift
    from evidently.presets import DataDriftPreset

    _register_prediction_test()
    spec = declaration.spec
    monitoring = spec.monitoring
    features = reference_ref.features
    reference = read_split(reference_ref, monitoring.reference_split)
    rows_in = len(batch)
    if rows_in > monitoring.max_rows:
        batch = batch.sample(monitoring.max_rows, random_state=seed)
    if len(reference) > monitoring.max_rows:
        reference = reference.sample(monitoring.max_rows, random_state=seed)
    image = spec.dataset.kind == "image"
    ref_frame = pd.concat(
        [reference[features].reset_index(drop=True), _model_columns(model, reference[features].to_numpy(), image)],
        axis=1,
    )
    cur_frame = pd.concat(
        [batch[features].reset_index(drop=True), _model_columns(model, batch[features].to_numpy(), image)], axis=1
    )
    extra = [c for c in cur_frame.columns if c.startswith(("embedding_", "stat_"))]
    per_column = {c: rule.method for c, rule in monitoring.columns.items() if rule.method}
    per_threshold = {c: rule.threshold for c, rule in monitoring.columns.items() if rule.threshold is not None}
    metrics = [
        DataDriftPreset(
            columns=features,
            drift_share=monitoring.drift_share,
            per_column_method=per_column or None,
            per_column_threshold=per_threshold or None,
            num_method=monitoring.method,
            num_threshold=monitoring.threshold,
        ),
        ValueDrift(column="prediction", method=PREDICTION_TEST, threshold=monitoring.prediction_threshold),
    ]
    metrics += [
        ValueDrift(column=c, method=monitoring.method, threshold=monitoring.embedding_threshold or monitoring.threshold)
        for c in extra
    ]
    snapshot = Report(metrics).run(current_data=cur_frame, reference_data=ref_frame)
    out_dir.mkdir(parents=True, exist_ok=True)
    html_path = out_dir / "drift_report.html"
    if write_html:
        snapshot.save_html(str(html_path))
    result = snapshot.dict()
    per_feature, prediction, embeddings = {}, None, {}
    feature_share = None
    for metric in result["metrics"]:
        config = metric.get("config", {})
        kind, column = config.get("type", ""), config.get("column")
        if kind.endswith("DriftedColumnsCount"):
            feature_share = float(metric["value"]["share"])
        elif kind.endswith("ValueDrift"):
            entry = {
                "score": float(metric["value"]),
                "method": config.get("method"),
                "threshold": config.get("threshold"),
                "drifted": _drifted(metric),
            }
            if column == "prediction":
                prediction = entry
            elif column in extra:
                embeddings[column] = entry
            else:
                per_feature[column] = entry
    embedding_share = float(np.mean([e["drifted"] for e in embeddings.values()])) if embeddings else 0.0
    reasons = []
    if feature_share is not None and feature_share >= monitoring.drift_share:
        reasons.append(f"{feature_share:.0%} of features drifted (declared share {monitoring.drift_share:.0%})")
    if prediction and prediction["drifted"]:
        reasons.append(
            f"prediction drift (chi-square test of homogeneity p={prediction['score']:.2g} < "
            f"{monitoring.prediction_threshold:g})"
        )
    if embeddings and embedding_share >= monitoring.drift_share:
        reasons.append(f"{embedding_share:.0%} of embedding/pixel-statistic columns drifted")
    accuracy = None
    label = spec.dataset.label
    if label in batch.columns and batch[label].notna().all():
        index = {c: i for i, c in enumerate(spec.dataset.classes)}
        truth = np.array([index.get(int(v), -1) for v in batch[label]])
        accuracy = float((cur_frame["prediction"].to_numpy() == truth).mean())
    summary = DriftSummary(
        drift_detected=bool(reasons),
        reasons=reasons,
        feature_drift_share=feature_share,
        drifted_features=sorted(c for c, e in per_feature.items() if e["drifted"])[:20],
        prediction_drift=PredictionDrift(**prediction) if prediction else None,
        embedding_drift_share=embedding_share,
        accuracy_on_batch=accuracy,
        rows_in_batch=rows_in,
        rows_sampled=len(cur_frame),
        reference_rows=len(ref_frame),
        html_report=str(html_path),
        evidently_metrics=len(result["metrics"]),
    )
    (out_dir / "drift_summary.json").write_text(json.dumps(summary.to_json(), indent=1))
    return summary


def run_drift_stage(
    declaration: Declaration,
    key: str,
    reference_ref: DatasetRef,
    dp_model: DpModel,
    state_dir: Path,
    run: LineageRun,
) -> DriftReport:
    """Stage: find the batch, validate it (quarantine when bad), report drift against the training reference."""
    from edgeops.models import load_weights
    from edgeops.training.data import TrainingData, new_model

    folder = declaration.resolve(declaration.spec.incoming_folder())
    path = find_batch(folder, key)
    features = reference_ref.features
    try:
        frame, problems = load_batch(path, declaration, features)
        problems = validate_batch(frame, problems, declaration, features)
    except DataError as err:  # unreadable (empty, truncated, not a table): quarantined with the reason, never dropped
        frame, problems = pd.DataFrame(), [{"row": None, "column": None, "value": None, "issue": str(err)}]
    run.log_params({"batch": str(path), "batch_key": key, "batch_sha256": _content_sha256(path), "rows": len(frame)})
    if problems:
        where = quarantine(path, key, problems, state_dir / "quarantine")
        run.set_tags({"edgeops.batch_status": "quarantined"})
        return DriftQuarantined(
            key=key,
            batch=str(path),
            status="quarantined",
            quarantine=str(where),
            problems=[DataProblem(**problem) for problem in problems[:20]],
            drift_detected=None,
            mlflow_run_id=run.run_id,
        )
    spec = reference_ref.bounded(declaration.spec)
    model = load_weights(
        new_model(spec, TrainingData.from_ref(reference_ref, spec)), Path(dp_model.weights_path)
    ).eval()
    summary = drift_report(declaration, reference_ref, model, frame, state_dir / "reports" / key)
    run.log_artifact(summary.html_report, "drift")
    run.log_metrics(summary.metrics())
    run.set_tags(
        {
            "edgeops.batch_status": "drift" if summary.drift_detected else "ok",
            "edgeops.model_weights_sha256": dp_model.weights_sha256,
        }
    )
    return DriftChecked(
        key=key,
        batch=str(path),
        status="checked",
        model_weights_sha256=dp_model.weights_sha256,
        mlflow_run_id=run.run_id,
        **dict(summary),
    )
