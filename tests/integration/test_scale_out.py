"""The whole default pipeline (tiny profile) under the postgres + celery profile, against the real PostgreSQL and
RabbitMQ on 127.0.0.1 with two workers and an MLflow server on PostgreSQL, compared with the embedded run.

Runs when CI=true (and fails if the services are missing there); elsewhere it skips, saying which service is absent.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from helpers import REPO, Project, tiny_digits

PG_HOST, PG_PORT, RABBIT_PORT = "127.0.0.1", 5432, 5672
pytestmark = [pytest.mark.services, pytest.mark.slow]


def reachable(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def purge_stale_tasks(broker: str, queue: str = "dagster") -> None:
    """Tasks a killed earlier run left on the broker's queue would reach this test's workers, which cannot load those
    runs from this test's database: start from an empty queue."""
    from kombu import Connection
    from kombu.exceptions import OperationalError

    with Connection(broker) as connection:
        try:
            connection.default_channel.queue_purge(queue)
        except (OperationalError, *connection.channel_errors):  # no such queue yet: nothing to purge
            pass


def require_services() -> None:
    missing = [name for name, port in (("PostgreSQL", PG_PORT), ("RabbitMQ", RABBIT_PORT)) if not reachable(port)]
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(
                f"CI=true but {', '.join(missing)} not reachable on 127.0.0.1: the scale-out test must run in CI"
            )
        pytest.skip(
            f"{', '.join(missing)} not reachable on 127.0.0.1 (this test needs real services; it runs when CI=true)"
        )


def run_admin_sql(statement: str) -> None:
    """CREATE/DROP DATABASE cannot run in a transaction: an autocommit connection to the maintenance database."""
    import psycopg2

    connection = psycopg2.connect(host=PG_HOST, port=PG_PORT, user="postgres", dbname="postgres")
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute(statement)
    finally:
        connection.close()


def create_database(name: str) -> str:
    run_admin_sql(f'CREATE DATABASE "{name}"')
    return f"postgresql://postgres@{PG_HOST}:{PG_PORT}/{name}"


def drop_database(name: str) -> None:
    run_admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, seconds: float, process) -> None:
    import httpx

    deadline = time.time() + seconds
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: server exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(1)
    raise RuntimeError(f"{url} did not come up in {seconds:g} s")


def outcomes(settings) -> dict:
    assets = settings.home / "assets" / "digits"
    dataset = json.loads((assets / "validated_dataset" / "__all__.json").read_text())
    model = json.loads((assets / "dp_model" / "__all__.json").read_text())
    targets = {p.stem: json.loads(p.read_text()) for p in (assets / "compressed_model").glob("*.json")}
    return {
        "dataset": dataset["digest"],
        "splits": {k: v["digest"] for k, v in dataset["splits"].items()},
        "weights": model["weights_sha256"],
        "epsilon": round(model["privacy"]["epsilon"], 6),
        "checks": dataset["checks"],
        "artifacts": {name: record["sha256"] for name, record in targets.items()},
    }


PIPELINES = (
    "digits",
    "digits_b",
    "digits_c",
    "digits_d",
)  # declared before the workers start: they load the code location once


@pytest.fixture(scope="module")
def distributed(tmp_path_factory):
    """PostgreSQL for Dagster and MLflow, an MLflow server, two celery workers on RabbitMQ: the distributed profile,
    with four pipelines declared. Yields (project, env, logs)."""
    require_services()
    monkeypatch = pytest.MonkeyPatch()
    project = Project(tmp_path_factory.mktemp("scale") / "distributed", monkeypatch)
    for name in PIPELINES:
        project.declare(tiny_digits(name))
    suffix = uuid.uuid4().hex[:8]
    dagster_db, mlflow_db = f"edgeops_test_dagster_{suffix}", f"edgeops_test_mlflow_{suffix}"
    processes = []
    try:
        # SQLAlchemy 2.1 maps postgresql:// to psycopg 3; the URLs name the installed driver, psycopg2.
        dagster_url = create_database(dagster_db).replace("postgresql://", "postgresql+psycopg2://")
        mlflow_url = create_database(mlflow_db).replace("postgresql://", "postgresql+psycopg2://")
        home = project.root / ".edgeops"
        (home / "dagster").mkdir(parents=True)
        (home / "dagster" / "dagster.yaml").write_text(
            (REPO / "deploy" / "profiles" / "celery" / "dagster.yaml").read_text()
        )
        port = free_port()
        artifacts = (project.root / "shared-artifacts").as_uri()
        env = {
            **os.environ,
            "EDGEOPS_ROOT": str(project.root),
            "EDGEOPS_HOME": str(home),
            "DAGSTER_HOME": str(home / "dagster"),
            "EDGEOPS_DAGSTER_PG_URL": dagster_url,
            "EDGEOPS_MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}",
            "EDGEOPS_MLFLOW_ARTIFACT_ROOT": artifacts,
            "EDGEOPS_EXECUTOR": "celery",
            "EDGEOPS_CELERY_BROKER": f"pyamqp://guest:guest@127.0.0.1:{RABBIT_PORT}//",
            "PYTHONPATH": str(REPO),
            # the comparison below needs identical weights from two runs:
            # only the test switch's (NOT PRIVATE) noise gives them
            "EDGEOPS_TEST_MODE": "1",
            "EDGEOPS_INSECURE_TEST_NOISE_SEED": "scale-out",
        }
        purge_stale_tasks(env["EDGEOPS_CELERY_BROKER"])
        bin_dir = Path(sys.executable).parent
        logs = project.root / "logs"
        logs.mkdir()
        mlflow = subprocess.Popen(
            [
                str(bin_dir / "mlflow"),
                "server",
                "--backend-store-uri",
                mlflow_url,
                "--default-artifact-root",
                artifacts,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
            ],
            env=env,
            cwd=project.root,
            stdout=open(logs / "mlflow.log", "w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        processes.append(mlflow)
        for index in (1, 2):
            processes.append(
                subprocess.Popen(
                    [
                        str(bin_dir / "celery"),
                        "-A",
                        "dagster_celery.app",
                        "worker",
                        "--concurrency",
                        "1",
                        "-n",
                        f"edgeops{index}-{suffix}@%h",
                        "-l",
                        "warning",
                    ],
                    env=env,
                    cwd=REPO,
                    stdout=open(logs / f"worker{index}.log", "w"),
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        wait_http(f"http://127.0.0.1:{port}/health", 120, mlflow)
        for key, value in env.items():
            if key.startswith(("EDGEOPS_", "DAGSTER_")):
                monkeypatch.setenv(key, value)
        yield project, env, logs
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, 15)
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, 9)
        monkeypatch.undo()
        drop_database(dagster_db)
        drop_database(mlflow_db)


def test_postgres_celery_profile_matches_the_embedded_run(distributed, tmp_path, monkeypatch):
    from edgeops.lineage import Lineage
    from pipelines.launch import run_pipelines

    project, env, logs = distributed
    with monkeypatch.context() as embedded_env:  # the embedded run: sqlite, in-process, its own folder
        for key in (
            "EDGEOPS_DAGSTER_PG_URL",
            "EDGEOPS_MLFLOW_TRACKING_URI",
            "EDGEOPS_MLFLOW_ARTIFACT_ROOT",
            "EDGEOPS_EXECUTOR",
            "EDGEOPS_CELERY_BROKER",
        ):
            embedded_env.delenv(key, raising=False)
        embedded = Project(tmp_path / "embedded", embedded_env)
        embedded.declare(tiny_digits())
        started = time.perf_counter()
        assert all(r.core_success for r in run_pipelines(embedded.settings()))
        embedded_seconds = time.perf_counter() - started
        expected = outcomes(embedded.settings())
    for key, value in env.items():
        if key.startswith(("EDGEOPS_", "DAGSTER_")):
            monkeypatch.setenv(key, value)

    started = time.perf_counter()
    reports = run_pipelines(project.settings(), "digits")
    distributed_seconds = time.perf_counter() - started
    assert all(r.core_success for r in reports), [r.runs for r in reports] + [
        (logs / "worker1.log").read_text()[-2000:]
    ]
    got = outcomes(project.settings())
    assert got == expected
    client = Lineage(env["EDGEOPS_MLFLOW_TRACKING_URI"], env["EDGEOPS_MLFLOW_ARTIFACT_ROOT"]).client
    runs = client.search_runs([client.get_experiment_by_name("digits").experiment_id], max_results=200)
    assert runs and all(r.info.status == "FINISHED" for r in runs)
    from dagster import DagsterInstance

    instance = DagsterInstance.get()
    assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    worker_steps = [(logs / f"worker{i}.log").read_text().count("STEP_SUCCESS") for i in (1, 2)]
    assert all(count > 0 for count in worker_steps), f"both celery workers must execute steps: {worker_steps}"
    print(
        f"embedded {embedded_seconds:.1f} s, postgres+celery {distributed_seconds:.1f} s, steps per worker "
        f"{worker_steps}"
    )


def test_three_pipelines_materializing_at_once_leave_a_consistent_registry(distributed):
    """Three `edgeops run` processes at once, sharing the PostgreSQL instance, the MLflow server and the two workers."""
    from edgeops.ledger import ledger_for
    from edgeops.lineage import Lineage
    from edgeops.spec import load_declaration

    project, env, _logs = distributed
    names = PIPELINES[1:]
    launched = {
        name: subprocess.Popen(
            [str(Path(sys.executable).parent / "edgeops"), "run", "--pipeline", name, "--no-progress"],
            env=env,
            cwd=project.root,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name in names
    }
    outputs = {name: process.communicate(timeout=1500)[0] for name, process in launched.items()}
    assert all(process.returncode == 0 for process in launched.values()), {n: o[-2500:] for n, o in outputs.items()}

    client = Lineage(env["EDGEOPS_MLFLOW_TRACKING_URI"], env["EDGEOPS_MLFLOW_ARTIFACT_ROOT"]).client
    for name in names:
        declaration = load_declaration(project.root / "pipelines" / f"{name}.yaml")
        experiment = client.get_experiment_by_name(name)
        for target in declaration.spec.targets:
            versions = client.search_model_versions(f"name = '{name}-{target.name}'")
            assert len(versions) == 1, (
                name,
                target.name,
                [v.version for v in versions],
            )  # one run, one version, none lost or doubled
            version = versions[0]
            assert (
                version.tags["edgeops.spec_sha256"] == declaration.sha256
            )  # its own pipeline's declaration, not a neighbour's
            assert client.get_run(version.run_id).info.experiment_id == experiment.experiment_id
            assert client.get_run(version.run_id).data.tags["edgeops.pipeline"] == name
        open_runs = [
            r.info.run_name
            for r in client.search_runs([experiment.experiment_id], max_results=500)
            if r.info.status != "FINISHED"
        ]
        assert open_runs == [], (name, open_runs)
        # Each pipeline's own ledger holds its own charges: DP-SGD, the baseline, the MCU target's DP fine-tuning;
        # each once.
        ledger = ledger_for(
            project.settings().pipeline_dir(name), declaration.spec.privacy.epsilon, declaration.spec.privacy.delta
        )
        charges = [e.mechanism for e in ledger.entries()]
        assert len(charges) == len(set(e.charge_key for e in ledger.entries())) >= 3, charges
        assert ledger.spent()[0] <= declaration.spec.privacy.epsilon
