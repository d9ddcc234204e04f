"""Lineage in MLflow: one experiment per pipeline, one parent run per pipeline run with one nested run per stage
execution, every artifact with its sha256.

Uses an explicit MlflowClient (no fluent global state), so stages running side by side, in other processes or on
other machines (Celery), never share a run, and every run is closed FINISHED or FAILED. The tracking URI and
artifact root are configuration: sqlite by default, an MLflow server URL works the same.

Run structure. A pipeline run is one `edgeops run` invocation for one pipeline (its Dagster runs carry the Dagster
tag PIPELINE_RUN_DAGSTER_TAG), or else one Dagster run (a sensor's, the automation's, or one launched from the UI).
Its parent MLflow run is found or created by the first stage that needs it, keyed by the tag PIPELINE_RUN_TAG, and
each stage's run names it in `mlflow.parentRunId`, so MLflow's UI shows the stages nested under it. The parent is
closed when its last running stage ends (naming any failed stage in FAILED_STAGES_TAG) and reopened if a later
stage starts.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from edgeops.errors import EdgeopsError, caused_by
from edgeops.lineage_run import LOGGED_MODEL_TYPE as LOGGED_MODEL_TYPE
from edgeops.lineage_run import MAX_PARAM_CHARS as MAX_PARAM_CHARS
from edgeops.lineage_run import LineageRun as LineageRun

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run


class LineageUnavailable(EdgeopsError):
    """The MLflow tracking server cannot be reached: the stage fails with this, not with the HTTP client's traceback."""


def _unreachable(err: BaseException) -> bool:
    return caused_by(
        err,
        names={"ConnectionError", "MaxRetryError", "NewConnectionError", "ConnectTimeout", "ReadTimeout"},
        texts=("Max retries exceeded", "Connection refused", "Connection aborted", "Failed to establish"),
    )


def _deleted_by_a_racer(err: BaseException) -> bool:
    """MLflow refuses a write to a deleted run ("must be in the 'active' state. Current state is deleted")."""
    return "Current state is deleted" in str(err)


RACE_RETRIES = 5  # rounds of reading the parent election again after a racing stage deleted the one this stage chose

# Names this module writes to MLflow and Dagster; readers import them from here.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"  # MLflow 3's UI opens an experiment on its runs only with this
EXPERIMENT_KIND_MODEL_TRAINING = "custom_model_development"  # (the other value, genai_development, opens traces)
PARENT_RUN_TAG = "mlflow.parentRunId"  # MLflow's own nesting tag
PIPELINE_RUN_TAG = "edgeops.pipeline_run"  # on the parent and every stage run: which pipeline run
RUN_ROLE_TAG = "edgeops.run_role"  # "pipeline_run" on parents, "stage" on stage runs
ROLE_PIPELINE_RUN, ROLE_STAGE = "pipeline_run", "stage"
FAILED_STAGES_TAG = "edgeops.failed_stages"  # on a parent: its stage runs that failed
PIPELINE_RUN_DAGSTER_TAG = (
    "edgeops/pipeline_run"  # Dagster run tag set by `edgeops run`: its Dagster runs share a parent
)
# MLflow 3.17's UI picks GenAI or model-training pages from a global toggle (browser storage, GenAI by default) or
# this URL parameter; the experiment tag above is what the API and other clients read.
UI_MODEL_TRAINING_QUERY = "workflowType=machine_learning"

# Lineage tags: written by the stages and read by `edgeops lineage` (edgeops/trace.py), from this one definition.
PIPELINE_TAG = "edgeops.pipeline"
STAGE_TAG = "edgeops.stage"  # the stage's name without its partition: hil_benchmark, not hil_benchmark[x]
PARTITION_TAG = "edgeops.partition"  # the stage run's partition (a target or a batch); absent when unpartitioned
TARGET_TAG = "edgeops.target"  # on compression, benchmark, robustness and trainability runs
ARTIFACT_SHA256_TAG = (
    "edgeops.artifact_sha256"  # on benchmark, robustness and trainability runs: the artifact they measured
)
DATASET_DIGEST_TAG = "dataset.digest"  # on raw_dataset and validated_dataset runs: the dataset's digest
CARD_ID_TAG = "edgeops.card_id"  # on model_card runs and on the registered versions the card covers
CARD_FOLDER_TAG = "edgeops.card_folder"  # on registered versions: the card's folder
CARD_REVIEW_TAG = "edgeops.card_review"  # on registered versions: the card's latest review decision
VERSION_SHA256_TAG = "edgeops.sha256"  # on registered versions: the artifact's sha256
VERSION_DATASET_DIGEST_TAG = "edgeops.dataset_digest"
VERSION_PARENT_RUN_TAG = "edgeops.parent_mlflow_run"  # the DP model's run
VERSION_PARENT_WEIGHTS_TAG = "edgeops.parent_weights_sha256"
RELEASE_ACTION_TAG = "edgeops.release.action"  # on release decision runs (promote, rollback, rollout)
RELEASE_MODEL_TAG = "edgeops.release.model"
RELEASE_VERSION_TAG = "edgeops.release.version"
RELEASE_DECISION_TAG = "edgeops.release.decision"
RELEASE_REASON_TAG = "edgeops.release.reason"
BENCH_COMMAND_TAG = "edgeops.bench_command.device"  # on the runs `edgeops bench` makes: the device it measured on
# Stage names (the STAGE_TAG values) that lineage walks.
STAGE_RAW, STAGE_VALIDATED, STAGE_DP_MODEL, STAGE_COMPRESSION = (
    "raw_dataset",
    "validated_dataset",
    "dp_model",
    "compressed_model",
)
STAGE_BENCHMARK, STAGE_ROBUSTNESS, STAGE_TRAINABILITY = "hil_benchmark", "robustness", "trainability"
STAGE_CARD, STAGE_RELEASE = "model_card", "release"
ARTIFACT_MEASUREMENT_STAGES = (STAGE_BENCHMARK, STAGE_ROBUSTNESS, STAGE_TRAINABILITY)


def artifact_tags(target: str, sha256: str) -> dict[str, str]:
    """What a run that measured one target's artifact carries, so lineage finds it from the artifact."""
    return {TARGET_TAG: target, ARTIFACT_SHA256_TAG: sha256}


def experiment_ui_url(ui_base: str, experiment_id: str, page: str = "runs") -> str:
    """An experiment's runs (or "models") page in MLflow's UI, opened in its model-training view."""
    return f"{ui_base.rstrip('/')}/#/experiments/{experiment_id}/{page}?{UI_MODEL_TRAINING_QUERY}"


class Lineage:
    """Opens MLflow runs for stages of a pipeline, nested under the pipeline run's parent run."""

    def __init__(self, tracking_uri: str, artifact_root: str, ui_url: str | None = None):
        self.tracking_uri = tracking_uri
        self.artifact_root = artifact_root.rstrip("/")
        self.ui_url = (
            ui_url
            or (
                tracking_uri
                if tracking_uri.startswith("http")
                else os.environ.get("EDGEOPS_MLFLOW_UI_URL", "http://127.0.0.1:5000")
            )
        ).rstrip("/")

    @cached_property
    def client(self) -> MlflowClient:
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        from mlflow import MlflowClient

        if self.tracking_uri.startswith("sqlite:///"):
            Path(self.tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def experiment_id(self, pipeline: str) -> str:
        experiment = self.client.get_experiment_by_name(pipeline)
        if experiment is None:
            try:
                return self.client.create_experiment(
                    pipeline,
                    artifact_location=f"{self.artifact_root}/{pipeline}",
                    tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND_MODEL_TRAINING},
                )
            except Exception:  # a concurrent stage created it first
                experiment = self.client.get_experiment_by_name(pipeline)
                if experiment is None:
                    raise
        if experiment.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND_MODEL_TRAINING:
            # Created before the tag existed (or by hand): without it MLflow 3's UI opens on traces, not on the runs.
            self.client.set_experiment_tag(
                experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND_MODEL_TRAINING
            )
        return experiment.experiment_id

    def _parents(self, experiment: str, key: str) -> list[Run]:
        """The pipeline run's parents, the elected one first: the oldest, then the smallest run id. The key never
        changes once a parent is visible, so stages that race never elect each other's parent and delete their own
        (a key that changed, such as "already holds a stage", let two racing stages each delete theirs)."""
        found = self.client.search_runs(
            [experiment],
            f"tags.`{PIPELINE_RUN_TAG}` = '{key}' and tags.`{RUN_ROLE_TAG}` = '{ROLE_PIPELINE_RUN}'",
            max_results=50,
        )
        return sorted(found, key=lambda run: (run.info.start_time, run.info.run_id))

    def _children(self, experiment: str, parent: str) -> list[Run]:
        return self.client.search_runs([experiment], f"tags.`{PARENT_RUN_TAG}` = '{parent}'", max_results=1000)

    def parent_run(self, experiment: str, pipeline: str, key: str, title: str) -> str:
        """The pipeline run's parent MLflow run, created by the first stage that asks. Stages that race (parallel
        processes) may each create one: each keeps the elected one and deletes its own. A parent found here may be
        deleted by the racing stage that created it before this stage writes to it: then the election is read again.
        A parent that becomes visible late (stamped before, stored after another) is merged when a stage ends."""
        for _ in range(RACE_RETRIES):
            found = self._parents(experiment, key)
            if not found:
                break
            parent = found[0]
            try:
                if parent.info.status != "RUNNING":
                    self.client.update_run(parent.info.run_id, status="RUNNING")  # a later stage of the same run
            except Exception as err:
                if _deleted_by_a_racer(err):
                    continue
                raise
            return cast(str, parent.info.run_id)
        mine = self.client.create_run(
            experiment,
            run_name=title,
            tags={PIPELINE_TAG: pipeline, PIPELINE_RUN_TAG: key, RUN_ROLE_TAG: ROLE_PIPELINE_RUN},
        ).info.run_id
        elected: str = self._parents(experiment, key)[0].info.run_id
        if elected != mine:
            self._delete_parent(mine)
        return elected

    def _delete_parent(self, parent: str) -> None:
        try:
            self.client.delete_run(parent)
        except Exception as err:
            if not _deleted_by_a_racer(err):  # another stage emptied and deleted it first: the outcome is the same
                raise

    def _settle_parent(self, experiment: str, parent: str, key: str, run_id: str) -> None:
        """At the end of a stage: merge every parent of the pipeline run into the elected one (this stage and any
        nested under another parent move, and the others are deleted), then close the elected parent when no stage
        under it is still running. Each stage closes its own run before it looks, so the last one to finish sees
        every sibling closed and every parent created, and leaves one. The elected parent can be deleted by a racing
        stage between this stage's look and its write (an older parent became visible to the racer): the election
        is then read again."""
        for attempt in range(RACE_RETRIES):
            elected, *others = (run.info.run_id for run in self._parents(experiment, key))
            if elected != parent:
                self.client.set_tag(run_id, PARENT_RUN_TAG, elected)
            for other in others:
                for child in self._children(experiment, other):
                    self.client.set_tag(child.info.run_id, PARENT_RUN_TAG, elected)
                self._delete_parent(other)
            children = self._children(experiment, elected)
            if any(child.info.status in ("RUNNING", "SCHEDULED") for child in children):
                return
            failed = sorted(child.info.run_name for child in children if child.info.status in ("FAILED", "KILLED"))
            try:
                if failed:
                    self.client.set_tag(elected, FAILED_STAGES_TAG, ", ".join(failed)[:MAX_PARAM_CHARS])
                # FINISHED even when a stage failed (a target that misses its budget is part of a complete pipeline
                # run): the failed stages are the runs nested under it, and listed in FAILED_STAGES_TAG.
                self.client.set_terminated(elected, "FINISHED")
                return
            except Exception as err:
                if not _deleted_by_a_racer(err) or attempt == RACE_RETRIES - 1:
                    raise

    def _outage(self, stage: str, when: str, err: BaseException) -> LineageUnavailable:
        detail = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        return LineageUnavailable(
            f"MLflow tracking server at {self.tracking_uri} is unreachable {when} {stage} ({detail}). The stage "
            "failed; a model version is registered in one call, so any it registered is complete. Run again "
            "once the server is back"
        )

    @contextmanager
    def run(
        self,
        pipeline: str,
        stage: str,
        tags: dict[str, Any] | None = None,
        pipeline_run: str | None = None,
        pipeline_run_title: str | None = None,
        partition: str | None = None,
    ) -> Iterator[LineageRun]:
        """One stage's MLflow run (named stage[partition], tagged with the bare stage and the partition); nested under
        the parent run of `pipeline_run` (a key naming the pipeline run) when given, top-level otherwise."""
        start = time.perf_counter()
        parent = None
        try:
            experiment = self.experiment_id(pipeline)
            run_tags = {PIPELINE_TAG: pipeline, STAGE_TAG: stage, RUN_ROLE_TAG: ROLE_STAGE, **(tags or {})}
            if partition:
                run_tags[PARTITION_TAG] = partition
            if pipeline_run:
                parent = self.parent_run(
                    experiment, pipeline, pipeline_run, pipeline_run_title or f"{pipeline} pipeline run"
                )
                run_tags |= {PARENT_RUN_TAG: parent, PIPELINE_RUN_TAG: pipeline_run}
            run = self.client.create_run(
                experiment, run_name=f"{stage}[{partition}]" if partition else stage, tags=run_tags
            )
        except Exception as err:
            if _unreachable(err):
                raise self._outage(stage, "before", err) from None
            raise
        run_id = run.info.run_id
        handle = LineageRun(
            self.client,
            run_id,
            experiment,
            f"{self.ui_url}/#/experiments/{experiment}/runs/{run_id}",
            mlflow_seconds=time.perf_counter() - start,
        )
        try:
            yield handle
        except BaseException as err:
            try:
                self.client.set_terminated(run_id, "FAILED")
                if parent:
                    self._settle_parent(experiment, parent, cast(str, pipeline_run), run_id)
            except Exception:
                pass
            if isinstance(err, Exception) and _unreachable(err):
                raise self._outage(stage, "during", err) from None
            raise
        start = time.perf_counter()
        try:
            self.client.set_terminated(run_id, "FINISHED")
            if parent:
                self._settle_parent(experiment, parent, cast(str, pipeline_run), run_id)
        except Exception as err:
            if _unreachable(err):
                raise self._outage(stage, "at the end of", err) from None
            raise
        handle.mlflow_seconds += time.perf_counter() - start
