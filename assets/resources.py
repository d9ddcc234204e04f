"""Resources and the IO manager shared by every asset. Wiring only: the work happens in edgeops/."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg

from edgeops import __version__
from edgeops.asset_store import AssetStore, load_stored
from edgeops.records import Record
from edgeops.spec import Declaration


class MlflowLineage(dg.ConfigurableResource):
    """Opens one MLflow run per asset materialization, tagged with the Dagster run, asset, partition and spec.

    Our own resource rather than dagster-mlflow, which leaves runs RUNNING on asset jobs.
    """

    tracking_uri: str
    artifact_root: str

    def _lineage(self):
        from edgeops.lineage import Lineage

        return Lineage(self.tracking_uri, self.artifact_root)

    @contextmanager
    def stage_run(self, context: dg.AssetExecutionContext, declaration: Declaration, stage: str) -> Iterator:
        """The stage's MLflow run, nested under its pipeline run: the `edgeops run` invocation that launched this
        Dagster run (its PIPELINE_RUN_DAGSTER_TAG), else this Dagster run itself."""
        from edgeops.lineage import PIPELINE_RUN_DAGSTER_TAG

        partition = context.partition_key if context.has_partition_key else ""
        tags = {
            "dagster.run_id": context.run.run_id,
            "dagster.asset_key": context.asset_key.to_user_string(),
            "dagster.partition": partition,
            "edgeops.spec_sha256": declaration.sha256,
            "edgeops.code_version": __version__,
        }
        pipeline_run = context.run.tags.get(PIPELINE_RUN_DAGSTER_TAG)
        if pipeline_run:
            title = f"{declaration.spec.name} · edgeops run {pipeline_run.split('@')[-1]}"
        else:
            pipeline_run = context.run.run_id
            origin = (
                context.run.tags.get("dagster/sensor_name")
                or context.run.tags.get("dagster/schedule_name")
                or context.run.job_name
            )
            title = f"{declaration.spec.name} · {origin} · dagster run {context.run.run_id[:8]}"
        started = time.perf_counter()
        with self._lineage().run(
            declaration.spec.name,
            stage,
            tags,
            pipeline_run=pipeline_run,
            pipeline_run_title=title,
            partition=partition or None,
        ) as run:
            yield run
        elapsed = time.perf_counter() - started
        context.add_output_metadata(
            {
                "mlflow_run_id": run.run_id,
                "mlflow_run": dg.MetadataValue.url(run.ui_url),
                "stage_seconds": round(elapsed - run.mlflow_seconds, 4),
                "lineage_seconds": round(run.mlflow_seconds, 4),
            },
            output_name="result",
        )


class JsonIOManager(dg.ConfigurableIOManager):
    """Stores each asset's small JSON reference (paths, hashes, numbers); models and data are files it points to.

    No pickles: what an asset hands downstream is readable JSON.
    """

    base_dir: str

    def _path(self, key: dg.AssetKey, partition: str | None) -> Path:
        return AssetStore(Path(self.base_dir)).path_of_key(list(key.path), partition)

    def handle_output(self, context: dg.OutputContext, obj) -> None:
        if obj is None:
            return
        partition = context.asset_partition_key if context.has_asset_partitions else None
        AssetStore.write_json(
            self._path(context.asset_key, partition), obj.to_json() if isinstance(obj, Record) else obj
        )

    def load_input(self, context: dg.InputContext):
        key = context.asset_key

        def read(path: Path):
            return load_stored(key.path[-1], json.loads(path.read_text()))

        if context.has_asset_partitions and not context.has_partition_key:
            found = {}
            for partition in context.asset_partition_keys:
                path = self._path(key, partition)
                if path.exists():
                    found[partition] = read(path)
            return found
        partition = context.asset_partition_key if context.has_asset_partitions else None
        path = self._path(key, partition)
        if not path.exists():
            raise dg.Failure(
                f"{key.to_user_string()} has not been materialized yet{f' for {partition}' if partition else ''}"
            )
        return read(path)
