"""The MLflow tracking server stops in the middle of a run: the run fails within seconds, saying which server and
what that means for the registry (not after minutes of HTTP retries, not with a urllib3 traceback); every version in
the registry stays complete; with the server back, a re-run completes."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import stop_process_group, table_declaration, table_frame

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(store: Path, port: int) -> subprocess.Popen:
    import httpx

    server = subprocess.Popen(
        [
            str(BIN / "mlflow"),
            "server",
            "--backend-store-uri",
            f"sqlite:///{store / 'mlflow.db'}",
            "--default-artifact-root",
            (store / "artifacts").as_uri(),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            time.sleep(0.5)
    os.killpg(server.pid, signal.SIGKILL)
    raise RuntimeError("mlflow server did not start")


def stage_running(store: Path, name: str) -> bool:
    try:
        with sqlite3.connect(f"file:{store / 'mlflow.db'}?mode=ro", uri=True, timeout=1) as db:
            return bool(db.execute("select 1 from runs where name = ? and status = 'RUNNING'", (name,)).fetchall())
    except sqlite3.OperationalError:
        return False


@pytest.mark.slow
def test_tracking_server_stopping_mid_run_fails_clearly_and_a_rerun_completes(project, tmp_path):
    project.write_csv(table_frame(300))
    project.declare(table_declaration())
    store, port = tmp_path / "mlflow-server", free_port()
    store.mkdir()
    settings = project.settings()
    env = {
        **os.environ,
        "EDGEOPS_ROOT": str(project.root),
        "EDGEOPS_HOME": str(settings.home),
        "DAGSTER_HOME": str(settings.dagster_home),
        "EDGEOPS_MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}",
        "EDGEOPS_MLFLOW_ARTIFACT_ROOT": (store / "artifacts").as_uri(),
    }
    server = start_server(store, port)
    run = subprocess.Popen(
        [str(BIN / "edgeops"), "run", "--no-progress"],
        cwd=project.root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.time() + 300
        while not stage_running(store, "dp_model"):
            assert run.poll() is None and time.time() < deadline, "DP training never started"
            time.sleep(0.2)
        os.killpg(server.pid, signal.SIGKILL)  # the server goes away while the stage's MLflow run is open
        server.wait(timeout=30)
        stopped = time.time()
        output, _ = run.communicate(timeout=300)
    finally:
        if run.poll() is None:
            run.kill()
    waited = time.time() - stopped
    print(f"the run gave up {waited:.1f} s after the tracking server stopped")
    assert run.returncode == 1, output[-3000:]
    assert f"MLflow tracking server at http://127.0.0.1:{port} is unreachable" in output, output[-3000:]
    assert "any it registered is complete" in output
    assert waited < 120, (
        f"the run took {waited:.0f} s to give up"
    )  # bounded retries, not MLflow's default minutes of backoff

    server = start_server(store, port)  # back, on the same store
    try:
        with sqlite3.connect(store / "mlflow.db") as db:
            versions = db.execute("select name, version from model_versions").fetchall()
            tagged = {
                (n, v)
                for n, v, k in db.execute("select name, version, key from model_version_tags")
                if k == "edgeops.sha256"
            }
        assert set(versions) <= tagged, (versions, tagged)  # whatever exists is whole
        rerun = subprocess.run(
            [str(BIN / "edgeops"), "run", "--no-progress"],
            cwd=project.root,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-3000:]
    finally:
        stop_process_group(server, signal.SIGTERM)
