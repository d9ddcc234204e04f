"""Release actions as Dagster jobs (the same core calls as `edgeops release promote` / `edgeops rollback`), and a
run-failure sensor that reports failures with the failing step and its message. Wiring only."""

import json
import time

import dagster as dg

from edgeops.asset_store import AssetStore
from edgeops.settings import Settings


class PromoteConfig(dg.Config):
    pipeline: str
    target: str
    version: str | None = None


class RollbackConfig(dg.Config):
    pipeline: str
    target: str
    reason: str
    to: str | None = None


def _context(settings: Settings, pipeline: str):
    from edgeops.lineage import Lineage
    from edgeops.spec import load_declaration

    declaration = load_declaration(settings.pipelines_dir / f"{pipeline}.yaml", settings.root)
    return declaration, Lineage(settings.mlflow_tracking_uri, settings.mlflow_artifact_root).client


def build_release_jobs(settings: Settings) -> list:
    @dg.op(description="Promote a target version to production if every gate passes (refusals are recorded in MLflow).")
    def promote_version(context: dg.OpExecutionContext, config: PromoteConfig) -> dict:
        from edgeops.errors import EdgeopsError
        from edgeops.release import promote

        declaration, client = _context(settings, config.pipeline)
        dataset = AssetStore.under_home(settings.home).validated_dataset(config.pipeline)
        try:
            result = promote(
                client,
                declaration,
                config.target,
                settings.home,
                settings.model_cards_dir,
                dataset,
                version=config.version,
            )
        except EdgeopsError as err:
            raise dg.Failure(description=str(err)) from None
        context.log.info(f"{result['model']} production -> v{result['version']}")
        return result

    @dg.op(description="Move production back to an earlier version and record why; artifacts stay intact.")
    def rollback_version(context: dg.OpExecutionContext, config: RollbackConfig) -> dict:
        from edgeops.errors import EdgeopsError
        from edgeops.release import rollback

        declaration, client = _context(settings, config.pipeline)
        try:
            result = rollback(client, declaration, config.target, settings.home, config.reason, to=config.to)
        except EdgeopsError as err:
            raise dg.Failure(description=str(err)) from None
        context.log.info(f"{result['model']} production v{result['from']} -> v{result['to']}")
        return result

    @dg.job(
        name="release_promote", description="Gated promotion of one target version (config: pipeline, target, version)."
    )
    def release_promote():
        promote_version()

    @dg.job(
        name="release_rollback",
        description="Roll back one target's production alias (config: pipeline, target, reason, to).",
    )
    def release_rollback():
        rollback_version()

    return [release_promote, release_rollback]


def build_failure_sensor(settings: Settings):
    @dg.run_failure_sensor(
        name="report_run_failures",
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Writes every failed run (failing steps and messages) to "
        "<state>/failures.jsonl and the Dagster log; a failed run never moves a registry alias.",
    )
    def report_run_failures(context: dg.RunFailureSensorContext):
        steps = [
            {
                "step": e.step_key,
                "message": e.event_specific_data.error.message.strip()[:500] if e.event_specific_data.error else "",
            }
            for e in context.get_step_failure_events()
        ]
        record = {
            "run_id": context.dagster_run.run_id,
            "job": context.dagster_run.job_name,
            "at": time.time(),
            "message": (context.failure_event.message or "")[:500],
            "failed_steps": steps,
        }
        path = settings.home / "failures.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        context.log.error(f"run {record['run_id']} failed: " + "; ".join(f"{s['step']}: {s['message']}" for s in steps))

    return report_run_failures
