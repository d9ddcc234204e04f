"""What the README promises with `make ui` running, through the real Dagster daemon: no sensor is called by hand.

`python -m edgeops.ui` (what `make ui` runs: `dagster dev` and `mlflow ui`) serves a table pipeline that was run once.
A drifted batch dropped into its incoming folder gets its drift report by the sensor alone (goal: within 90 s), the
retraining sensor asks for a retrain (the ledger has budget for it), and the declared automation conditions then
rebuild the target's artifact, its benchmark and the card. Sensor intervals are shortened with
EDGEOPS_SENSOR_INTERVAL_S, read when the code location loads.

Runs when CI=true (or EDGEOPS_DAEMON_TEST=1); elsewhere it skips, because it holds two servers and a daemon for
minutes on a shared 2-core machine.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from helpers import Project, stop_process_group, table_declaration, table_frame

from edgeops.asset_store import AssetStore

DRIFT_REPORT_GOAL_S = 90  # the goal, printed against the measured time
DRIFT_REPORT_LIMIT_S = (
    300  # the failure bound: each run is a fresh process that imports Evidently (84 s of 124 s on this
)
# 2-core machine under a load average of 14); the report step alone took 144 s under 20
SENSOR_PICKUP_LIMIT_S = 30  # drop to run requested: the sensor's interval (3 s here) plus the daemon's tick
AUTOMATION_LIMIT_S = 420  # retrain, compression, benchmark and card: four runs of the daemon, each a fresh process

pytestmark = pytest.mark.skipif(
    os.environ.get("CI") != "true" and os.environ.get("EDGEOPS_DAEMON_TEST") != "1",
    reason="starts `make ui` (dagster dev + daemon + mlflow ui) for several minutes; runs with CI=true "
    "or EDGEOPS_DAEMON_TEST=1",
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(what: str, predicate, limit_s: float, ui: subprocess.Popen, log_path):
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if ui.poll() is not None:
            pytest.fail(
                f"`make ui` exited ({ui.returncode}) while waiting for {what}; its log:\n{log_path.read_text()[-4000:]}"
            )
        time.sleep(1)
    pytest.fail(f"{what}: not within {limit_s:.0f} s; `make ui` log:\n{log_path.read_text()[-4000:]}")


@pytest.mark.timeout(
    1800
)  # a first pipeline run, then five daemon runs, each a fresh process: 15 min under a load average of 20
def test_a_dropped_batch_is_reported_and_drift_retrains_through_the_daemon(tmp_path, monkeypatch):
    import dagster as dg

    from edgeops.drift import simulate
    from edgeops.ledger import ledger_for
    from edgeops.spec import load_declaration
    from pipelines.instance import ensure_instance
    from pipelines.launch import run_pipelines

    project = Project(tmp_path / "project", monkeypatch)
    project.write_csv(table_frame(300))
    spec = table_declaration("watched")
    spec["targets"] = [spec["targets"][1]]  # one target (int8): each automated stage is one run of the daemon
    spec["robustness"] = {"enabled": False}
    spec["monitoring"] = {"on_drift": "retrain", "settle_seconds": 1}
    project.declare(spec)
    settings = project.settings()
    (report,) = run_pipelines(settings, "watched")
    assert report.core_success, report.runs
    cards = project.root / "model_cards" / "generated" / "watched"
    first_card = json.loads(next(cards.glob("*/card.json")).read_text())

    dagster_port, mlflow_port = _free_port(), _free_port()
    env = {
        **os.environ,
        "EDGEOPS_ROOT": str(project.root),
        "EDGEOPS_HOME": str(settings.home),
        "DAGSTER_HOME": str(settings.dagster_home),
        "EDGEOPS_DAGSTER_PORT": str(dagster_port),
        "EDGEOPS_MLFLOW_PORT": str(mlflow_port),
        "EDGEOPS_SENSOR_INTERVAL_S": "3",
    }
    log_path = tmp_path / "make-ui.log"
    with open(log_path, "w") as log:
        ui = subprocess.Popen(
            [sys.executable, "-m", "edgeops.ui"],
            cwd=project.root,
            env=env,
            start_new_session=True,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    instance = ensure_instance(settings)
    try:

        def webserver_up():
            try:
                return urllib.request.urlopen(f"http://127.0.0.1:{dagster_port}/server_info", timeout=2).status == 200
            except OSError:
                return False

        _wait("the Dagster webserver of `make ui`", webserver_up, 180, ui, log_path)
        assert "automation" in log_path.read_text().lower()  # make ui says that sensors and automation run

        declaration = load_declaration(project.root / "pipelines" / "watched.yaml")
        dataset = AssetStore.under_home(settings.home).validated_dataset("watched")
        incoming = project.root / "data" / "incoming" / "watched"
        dropped_at = time.time()
        (batch,) = simulate(declaration, dataset, "covariate", "high", incoming, batches=1, rows=150, seed=5)

        def drift_run():
            runs = instance.get_runs(
                dg.RunsFilter(job_name="watched_drift_job", statuses=[dg.DagsterRunStatus.SUCCESS])
            )
            return runs[0] if runs else None

        run = _wait("the drift report's run", drift_run, DRIFT_REPORT_LIMIT_S, ui, log_path)
        requested_s = instance.get_run_record_by_id(run.run_id).create_timestamp.timestamp() - dropped_at
        reported_s = instance.get_run_stats(run.run_id).end_time - dropped_at
        print(
            f"\ndrift report of {batch.name}: requested by the sensor {requested_s:.1f} s and finished "
            f"{reported_s:.1f} s after the "
            f"batch was dropped (goal {DRIFT_REPORT_GOAL_S} s: "
            f"{'met' if reported_s <= DRIFT_REPORT_GOAL_S else 'missed'})"
        )
        assert run.tags.get("dagster/sensor_name") == "watched_incoming_batches"
        assert requested_s <= SENSOR_PICKUP_LIMIT_S, (
            f"the sensor requested the report {requested_s:.1f} s after the drop"
        )
        assert reported_s <= DRIFT_REPORT_LIMIT_S
        record = json.loads(
            (
                settings.home / "assets" / "watched" / "drift_report" / f"{run.tags['dagster/partition']}.json"
            ).read_text()
        )
        assert record["status"] == "checked" and record["drift_detected"], record.get("reasons")

        chain = ("dp_model", "compressed_model", "hil_benchmark", "model_card")

        def rebuilt():
            events = [instance.get_latest_materialization_event(dg.AssetKey(["watched", asset])) for asset in chain]
            times = [event.timestamp if event else 0.0 for event in events]
            return (
                events if dropped_at < times[0] < times[1] < times[2] < times[3] else None
            )  # each after the one it needs

        events = _wait(
            "retrain, compression, benchmark and a new card, in that order", rebuilt, AUTOMATION_LIMIT_S, ui, log_path
        )
        print(f"new card {events[-1].timestamp - dropped_at:.1f} s after the batch was dropped")
    finally:
        stop_process_group(ui, signal.SIGINT, timeout=30)

    retrains = instance.get_runs(dg.RunsFilter(job_name="watched_retrain_job"))
    assert [r.status for r in retrains] == [dg.DagsterRunStatus.SUCCESS]
    assert retrains[0].tags.get("dagster/sensor_name") == "watched_retrain_on_drift"
    # Everything after the retrain came from the automation sensor, not from a request of this test.
    assert (
        instance.get_run_by_id(events[0].run_id).job_name == "watched_retrain_job"
    )  # the new DP model came from the retrain
    for asset, event in zip(chain[1:], events[1:], strict=False):
        tags = instance.get_run_by_id(event.run_id).tags
        assert (
            tags.get("dagster/sensor_name") == "watched_automation"
            or tags.get("dagster/from_automation_condition") == "true"
        ), (asset, tags)
    card = json.loads(next(cards.glob("*/card.json")).read_text())
    assert (
        card["generated_at"] > first_card["generated_at"]
        and card["lineage"]["dagster_run_id"] != first_card["lineage"]["dagster_run_id"]
    )
    ledger = ledger_for(settings.pipeline_dir("watched"), spec["privacy"]["epsilon"], spec["privacy"]["delta"])
    assert ledger.remaining() >= 0 and ledger.summary().spent_epsilon <= spec["privacy"]["epsilon"] + 1e-9
