"""The default pipeline (tiny profile) embedded (sqlite, in-process) against the distributed profile (Dagster on
PostgreSQL, dagster-celery with two workers on RabbitMQ, an MLflow server on PostgreSQL), interleaved, each run on a
fresh state folder. Needs the local PostgreSQL (trust auth) and RabbitMQ (guest/guest) on 127.0.0.1.

Usage: python benchmarks/scale_out.py [--rounds 3]
Writes benchmarks/results/scale_out.md. Goal (issue 9): distributed within 1.5x of the embedded wall time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import yaml
from _common import ROOT, write_table

sys.path.insert(0, str(ROOT / "tests"))
import contextlib

from helpers import tiny_digits

BIN = Path(sys.executable).parent
BROKER = "pyamqp://guest:guest@127.0.0.1:5672//"


def admin_sql(statement: str) -> None:
    import psycopg2

    connection = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres")
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(statement)
    connection.close()


def project(root: Path) -> dict:
    """A project folder with the tiny digits declaration; returns the env that points edgeops at it."""
    (root / "pipelines").mkdir(parents=True)
    for folder in ("expectations", "model_cards"):
        subprocess.run(["cp", "-r", str(ROOT / folder), str(root / folder)], check=True)
    (root / "workspace.yaml").write_text((ROOT / "workspace.yaml").read_text())
    (root / "pipelines" / "digits.yaml").write_text(yaml.safe_dump(tiny_digits(), sort_keys=False))
    home = root / ".edgeops"
    return {
        **os.environ,
        "EDGEOPS_ROOT": str(root),
        "EDGEOPS_HOME": str(home),
        "DAGSTER_HOME": str(home / "dagster"),
        "PYTHONPATH": str(ROOT),
    }


def timed_run(env: dict, root: Path) -> float:
    started = time.perf_counter()
    completed = subprocess.run(
        [str(BIN / "edgeops"), "run", "--no-progress"], cwd=root, env=env, capture_output=True, text=True, timeout=1800
    )
    seconds = time.perf_counter() - started
    if completed.returncode != 0:
        raise SystemExit(f"run failed:\n{completed.stdout[-2000:]}\n{completed.stderr[-2000:]}")
    return seconds


def embedded_round(work: Path) -> float:
    root = work / f"embedded-{uuid.uuid4().hex[:6]}"
    return timed_run(project(root), root)


def distributed_round(work: Path) -> float:
    from kombu import Connection

    root = work / f"distributed-{uuid.uuid4().hex[:6]}"
    env = project(root)
    suffix = uuid.uuid4().hex[:8]
    dagster_db, mlflow_db = f"edgeops_bench_dagster_{suffix}", f"edgeops_bench_mlflow_{suffix}"
    admin_sql(f'CREATE DATABASE "{dagster_db}"')
    admin_sql(f'CREATE DATABASE "{mlflow_db}"')
    home = Path(env["EDGEOPS_HOME"])
    (home / "dagster").mkdir(parents=True)
    (home / "dagster" / "dagster.yaml").write_text(
        (ROOT / "deploy" / "profiles" / "celery" / "dagster.yaml").read_text()
    )
    port = 5600 + int(suffix[:3], 16) % 300
    artifacts = (root / "artifacts").as_uri()
    env.update(
        EDGEOPS_DAGSTER_PG_URL=f"postgresql+psycopg2://postgres@127.0.0.1:5432/{dagster_db}",
        EDGEOPS_EXECUTOR="celery",
        EDGEOPS_MLFLOW_TRACKING_URI=f"http://127.0.0.1:{port}",
        EDGEOPS_MLFLOW_ARTIFACT_ROOT=artifacts,
        EDGEOPS_CELERY_BROKER=BROKER,
    )
    # tasks a killed earlier run left behind would reach these workers
    with Connection(BROKER) as connection, contextlib.suppress(Exception):
        connection.default_channel.queue_purge("dagster")
    processes = [
        subprocess.Popen(
            [
                str(BIN / "mlflow"),
                "server",
                "--backend-store-uri",
                f"postgresql+psycopg2://postgres@127.0.0.1:5432/{mlflow_db}",
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
            cwd=root,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    ]
    processes += [
        subprocess.Popen(
            [
                str(BIN / "celery"),
                "-A",
                "dagster_celery.app",
                "worker",
                "--concurrency",
                "1",
                "-n",
                f"bench{i}-{suffix}@%h",
                "-l",
                "warning",
            ],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        for i in (1, 2)
    ]
    try:
        import httpx

        deadline = time.time() + 120
        while (
            True
        ):  # services up before the clock starts: the comparison is of running the pipeline, not of booting servers
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.time() > deadline:
                raise SystemExit("mlflow server did not start")
            time.sleep(0.5)
        time.sleep(5)  # the workers connect to the broker and import the code location
        return timed_run(env, root)
    finally:
        for process in processes:
            os.killpg(process.pid, 15)
        for process in processes:
            process.wait(timeout=30)
        admin_sql(f'DROP DATABASE IF EXISTS "{dagster_db}" WITH (FORCE)')
        admin_sql(f'DROP DATABASE IF EXISTS "{mlflow_db}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="edgeops-bench-scale-"))
    embedded, distributed = [], []
    for index in range(args.rounds):  # A B, then B A: neither always runs on a warmer machine
        order = (embedded_round, distributed_round) if index % 2 == 0 else (distributed_round, embedded_round)
        for measure in order:
            (embedded if measure is embedded_round else distributed).append(measure(work))
    ratio = statistics.median(distributed) / statistics.median(embedded)
    rows = [
        {
            "profile": "embedded (sqlite, in-process)",
            "median_s": round(statistics.median(embedded), 1),
            "runs_s": [round(v, 1) for v in embedded],
        },
        {
            "profile": "postgres + celery (2 workers, MLflow server on PostgreSQL)",
            "median_s": round(statistics.median(distributed), 1),
            "runs_s": [round(v, 1) for v in distributed],
        },
        {
            "profile": "ratio distributed / embedded",
            "median_s": round(ratio, 2),
            "runs_s": f"goal <= 1.5: {'met' if ratio <= 1.5 else 'NOT MET'}",
        },
    ]
    write_table(
        "scale_out",
        rows,
        [
            f"`edgeops run` of the tiny default profile (tests/helpers.py tiny_digits), {args.rounds} interleaved "
            "rounds, each on a fresh "
            "state folder and fresh databases; wall time of the command, services already up (their start is not "
            "counted).",
            "Both profiles do the same work (the scale-out test checks the same hashes and check outcomes); the "
            "distributed one "
            "sends each step to a celery worker through RabbitMQ and every event and MLflow call over the network to "
            "PostgreSQL.",
        ],
    )


if __name__ == "__main__":
    main()
