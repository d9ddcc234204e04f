"""A run killed (SIGKILL: a power cut, not a clean stop) in the middle of a target's compression: no half-registered
model version, no artifact replaced by a partial one, and a re-run completes."""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import tiny_digits

EDGEOPS = str(Path(sys.executable).parent / "edgeops")
KILLED_TARGET = "mcu_pruned_int8"  # prune + DP fine-tuning + int8: seconds of work, a wide window for the kill


def runs_in_progress(db: Path, name: str) -> bool:
    if not db.exists():
        return False
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as connection:
            return bool(
                connection.execute("select 1 from runs where name = ? and status = 'RUNNING'", (name,)).fetchall()
            )
    except sqlite3.OperationalError:  # the writer holds the lock, or the table is not there yet
        return False


def versions(db: Path) -> list[dict]:
    with sqlite3.connect(db) as connection:
        rows = connection.execute("select name, version, source from model_versions").fetchall()
        tags = connection.execute("select name, version, key, value from model_version_tags").fetchall()
    return [
        {"name": n, "version": v, "source": s, "tags": {k: val for tn, tv, k, val in tags if (tn, tv) == (n, v)}}
        for n, v, s in rows
    ]


@pytest.mark.slow
def test_a_run_killed_mid_compression_leaves_no_half_registered_version(project):
    project.declare(tiny_digits())
    settings = project.settings()
    env = {
        **os.environ,
        "EDGEOPS_ROOT": str(project.root),
        "EDGEOPS_HOME": str(settings.home),
        "DAGSTER_HOME": str(settings.dagster_home),
    }
    db = settings.home / "mlflow.db"
    run = subprocess.Popen(
        [EDGEOPS, "run", "--no-progress"],
        cwd=project.root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 600
    while not runs_in_progress(db, f"compressed_model[{KILLED_TARGET}]"):
        assert run.poll() is None, "the run ended before the kill could land"
        assert time.time() < deadline, "the target's compression never started"
        time.sleep(0.2)
    time.sleep(1.0)  # inside the step: pruning / DP fine-tuning under way
    os.killpg(run.pid, signal.SIGKILL)
    run.wait(timeout=30)

    registered = versions(db)
    assert not any(v["name"] == f"digits-{KILLED_TARGET}" for v in registered), (
        registered
    )  # killed before its one registration call
    for version in registered:  # every version that exists is whole: hash and check states, and its artifact matches
        assert version["tags"].get("edgeops.sha256") and any(k.startswith("edgeops.check.") for k in version["tags"]), (
            version
        )
    # Builds happen in a staging folder renamed into place only when complete:
    # nothing half-built sits where records point.
    target_dir = settings.home / "pipelines" / "digits" / "artifacts" / KILLED_TARGET
    finished = (
        [d for d in target_dir.glob("*") if d.is_dir() and ".staging-" not in d.name] if target_dir.exists() else []
    )
    assert finished == [], finished

    # Re-run the stage that was killed (data and training completed before the kill and are not redone).
    rerun = subprocess.run(
        [EDGEOPS, "run", "--no-progress", "--select", "compressed_model"],
        cwd=project.root,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    after = versions(db)
    killed = [v for v in after if v["name"] == f"digits-{KILLED_TARGET}"]
    assert len(killed) == 1 and killed[0]["tags"]["edgeops.sha256"]
    artifact = next(settings.home.rglob(f"{KILLED_TARGET}.onnx"))
    assert hashlib.sha256(artifact.read_bytes()).hexdigest() == killed[0]["tags"]["edgeops.sha256"]
