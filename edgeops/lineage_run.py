"""One open MLflow run of a stage (`LineageRun`, what edgeops.lineage's `Lineage.run` yields): params, metrics,
tags, artifacts with their sha256, datasets and the per-target LoggedModels, each call's time counted apart from the
stage's own compute. edgeops.lineage re-exports `LineageRun`, `MAX_PARAM_CHARS` and `LOGGED_MODEL_TYPE`.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

from edgeops.files import file_sha256

if TYPE_CHECKING:
    from mlflow import MlflowClient

_P = ParamSpec("_P")
_R = TypeVar("_R")

MAX_PARAM_CHARS = 6000
LOGGED_MODEL_TYPE = "edgeops-target"  # model_type of each target's MLflow LoggedModel


def _timed(method: Callable[Concatenate[LineageRun, _P], _R]) -> Callable[Concatenate[LineageRun, _P], _R]:
    """Accumulate the time spent talking to MLflow, so a stage can report its own compute apart from lineage."""

    @functools.wraps(method)
    def wrapper(self: LineageRun, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        start = time.perf_counter()
        try:
            return method(self, *args, **kwargs)
        finally:
            self.mlflow_seconds += time.perf_counter() - start

    return wrapper


@dataclass
class LineageRun:
    client: MlflowClient
    run_id: str
    experiment_id: str
    ui_url: str
    mlflow_seconds: float = 0.0

    @_timed
    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(str(k), str(v)[:MAX_PARAM_CHARS]) for k, v in params.items()]
        for start in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[start : start + 100])

    @_timed
    def log_metrics(
        self,
        metrics: dict[str, Any],
        step: int = 0,
        model_id: str | None = None,
        dataset: tuple[str, str] | None = None,
    ) -> None:
        """With model_id, the metrics also belong to that LoggedModel (MLflow's Models view shows them); with
        dataset = (name, digest), they are recorded as measured on that dataset."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        name, digest = dataset or (None, None)
        items = [
            Metric(str(k), float(v), now, step, model_id=model_id, dataset_name=name, dataset_digest=digest)
            for k, v in metrics.items()
            if v is not None
        ]
        for start in range(0, len(items), 500):
            self.client.log_batch(self.run_id, metrics=items[start : start + 500])

    @_timed
    def log_metric_series(self, name_to_values: dict[str, list[float]]) -> None:
        """Training curves: every step of every series in a few batched calls."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [
            Metric(name, float(v), now, step)
            for name, values in name_to_values.items()
            for step, v in enumerate(values)
        ]
        for start in range(0, len(items), 500):
            self.client.log_batch(self.run_id, metrics=items[start : start + 500])

    @_timed
    def set_tags(self, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        if tags:
            self.client.log_batch(self.run_id, tags=[RunTag(str(k), str(v)[:MAX_PARAM_CHARS]) for k, v in tags.items()])

    @_timed
    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> str:
        """Log a file and record its sha256 as the tag `sha256.<artifact path>`; returns the sha256."""
        path = Path(path)
        sha = file_sha256(path)
        self.client.log_artifact(self.run_id, str(path), artifact_path)
        self.set_tags({f"sha256.{(artifact_path + '/') if artifact_path else ''}{path.name}": sha})
        return sha

    @_timed
    def log_json(self, obj: dict[str, Any], artifact_file: str) -> None:
        self.client.log_text(self.run_id, json.dumps(obj, indent=1, default=str), artifact_file)

    @_timed
    def log_dataset(self, frame: Any, name: str, digest: str, source: str, label: str, context: str) -> None:
        import mlflow.data
        from mlflow.entities import DatasetInput, InputTag

        dataset = mlflow.data.from_pandas(  # type: ignore[attr-defined]  # defined at import time, not in the stubs
            frame, source=source, name=name, targets=label, digest=digest[:36]
        )
        self.client.log_inputs(
            self.run_id,
            datasets=[DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", context)])],
        )
        self.set_tags({f"dataset.{name}.sha256": digest})

    @_timed
    def log_target_model(
        self,
        *,
        name: str,
        model_dir: str | Path,
        params: dict[str, Any],
        tags: dict[str, Any],
        metrics: dict[str, Any],
        dataset: tuple[str, str, str],
    ) -> str:
        """One on-device artifact as an MLflow 3 LoggedModel produced by this run: its files, params and tags, its
        metrics on dataset = (name, digest, source), which is also logged as this run's evaluation input. Returns the
        model id. Only files are logged (ONNX, safetensors, .pte, .tflite): no pickle flavour."""
        from mlflow.entities import Dataset, DatasetInput, InputTag, LoggedModelOutput

        dataset_name, digest, source = dataset
        model = self.client.create_logged_model(
            self.experiment_id,
            name=name,
            source_run_id=self.run_id,
            model_type=LOGGED_MODEL_TYPE,
            tags={str(k): str(v)[:MAX_PARAM_CHARS] for k, v in tags.items()},
            params={str(k): str(v)[:MAX_PARAM_CHARS] for k, v in params.items()},
        )
        try:
            self.client.log_model_artifacts(model.model_id, str(model_dir))
            self.client.log_inputs(
                self.run_id,
                datasets=[
                    DatasetInput(
                        Dataset(dataset_name, digest, "local", json.dumps({"uri": source})),
                        tags=[InputTag("mlflow.data.context", "evaluation")],
                    )
                ],
            )
            self.client.log_outputs(self.run_id, [LoggedModelOutput(model.model_id, 0)])
            self.log_metrics(metrics, model_id=model.model_id, dataset=(dataset_name, digest))
        except BaseException:
            self.client.finalize_logged_model(model.model_id, "FAILED")
            raise
        self.client.finalize_logged_model(model.model_id, "READY")
        return model.model_id
