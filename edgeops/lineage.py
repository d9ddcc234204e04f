"""Lineage in MLflow: one experiment per pipeline, one run per stage execution, every artifact with its sha256.

Uses an explicit MlflowClient (no fluent global state), so stages running side by side never share a run, and
every run is closed FINISHED or FAILED. The tracking URI and artifact root are configuration: sqlite by default,
an MLflow server URL works the same.
"""

from __future__ import annotations

import functools
import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Iterator

from edgeops.data import file_sha256
from edgeops.errors import EdgeopsError, caused_by


class LineageUnavailable(EdgeopsError):
    """The MLflow tracking server cannot be reached: the stage fails with this, not with the HTTP client's traceback."""


def _unreachable(err: BaseException) -> bool:
    return caused_by(err, names={"ConnectionError", "MaxRetryError", "NewConnectionError", "ConnectTimeout", "ReadTimeout"},
                     texts=("Max retries exceeded", "Connection refused", "Connection aborted", "Failed to establish"))

MAX_PARAM_CHARS = 6000


def _timed(method):
    """Accumulate the time spent talking to MLflow, so a stage can report its own compute apart from lineage."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return method(self, *args, **kwargs)
        finally:
            self.mlflow_seconds += time.perf_counter() - start
    return wrapper


@dataclass
class LineageRun:
    client: object
    run_id: str
    experiment_id: str
    ui_url: str
    mlflow_seconds: float = 0.0

    @_timed
    def log_params(self, params: dict) -> None:
        from mlflow.entities import Param

        items = [Param(str(k), str(v)[:MAX_PARAM_CHARS]) for k, v in params.items()]
        for start in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[start:start + 100])

    @_timed
    def log_metrics(self, metrics: dict, step: int = 0) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(str(k), float(v), now, step) for k, v in metrics.items() if v is not None]
        for start in range(0, len(items), 500):
            self.client.log_batch(self.run_id, metrics=items[start:start + 500])

    @_timed
    def log_metric_series(self, name_to_values: dict[str, list[float]]) -> None:
        """Training curves: every step of every series in a few batched calls."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(name, float(v), now, step) for name, values in name_to_values.items() for step, v in enumerate(values)]
        for start in range(0, len(items), 500):
            self.client.log_batch(self.run_id, metrics=items[start:start + 500])

    @_timed
    def set_tags(self, tags: dict) -> None:
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
    def log_json(self, obj: dict, artifact_file: str) -> None:
        self.client.log_text(self.run_id, json.dumps(obj, indent=1, default=str), artifact_file)

    @_timed
    def log_dataset(self, frame, name: str, digest: str, source: str, label: str, context: str) -> None:
        import mlflow.data
        from mlflow.entities import DatasetInput, InputTag

        dataset = mlflow.data.from_pandas(frame, source=source, name=name, targets=label, digest=digest[:36])
        self.client.log_inputs(self.run_id, datasets=[DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", context)])])
        self.set_tags({f"dataset.{name}.sha256": digest})


class Lineage:
    """Opens MLflow runs for stages of a pipeline."""

    def __init__(self, tracking_uri: str, artifact_root: str, ui_url: str | None = None):
        self.tracking_uri = tracking_uri
        self.artifact_root = artifact_root.rstrip("/")
        self.ui_url = (ui_url or (tracking_uri if tracking_uri.startswith("http") else os.environ.get("EDGEOPS_MLFLOW_UI_URL", "http://127.0.0.1:5000"))).rstrip("/")

    @cached_property
    def client(self):
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        from mlflow import MlflowClient

        if self.tracking_uri.startswith("sqlite:///"):
            Path(self.tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def experiment_id(self, pipeline: str) -> str:
        experiment = self.client.get_experiment_by_name(pipeline)
        if experiment is not None:
            return experiment.experiment_id
        try:
            return self.client.create_experiment(pipeline, artifact_location=f"{self.artifact_root}/{pipeline}")
        except Exception:  # a concurrent stage created it first
            experiment = self.client.get_experiment_by_name(pipeline)
            if experiment is None:
                raise
            return experiment.experiment_id

    def _outage(self, stage: str, when: str, err: BaseException) -> LineageUnavailable:
        detail = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        return LineageUnavailable(f"MLflow tracking server at {self.tracking_uri} is unreachable {when} {stage} ({detail}). The stage "
                                  "failed; a model version is registered in one call, so any it registered is complete. Run again "
                                  "once the server is back")

    @contextmanager
    def run(self, pipeline: str, stage: str, tags: dict | None = None) -> Iterator[LineageRun]:
        start = time.perf_counter()
        try:
            experiment = self.experiment_id(pipeline)
            run = self.client.create_run(experiment, run_name=stage, tags={"edgeops.pipeline": pipeline, "edgeops.stage": stage, **(tags or {})})
        except Exception as err:
            if _unreachable(err):
                raise self._outage(stage, "before", err) from None
            raise
        run_id = run.info.run_id
        handle = LineageRun(self.client, run_id, experiment, f"{self.ui_url}/#/experiments/{experiment}/runs/{run_id}",
                            mlflow_seconds=time.perf_counter() - start)
        try:
            yield handle
        except BaseException as err:
            try:
                self.client.set_terminated(run_id, "FAILED")
            except Exception:  # noqa: BLE001 - the server is gone: the run stays open there, and the stage's own error is what counts
                pass
            if isinstance(err, Exception) and _unreachable(err):
                raise self._outage(stage, "during", err) from None
            raise
        start = time.perf_counter()
        try:
            self.client.set_terminated(run_id, "FINISHED")
        except Exception as err:
            if _unreachable(err):
                raise self._outage(stage, "at the end of", err) from None
            raise
        handle.mlflow_seconds += time.perf_counter() - start
