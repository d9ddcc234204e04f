"""`make ui`: the Dagster UI (through workspace.yaml) and the MLflow UI, both on 127.0.0.1."""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import subprocess
import sys
import time

from edgeops.settings import Settings, quiet_third_parties


def main() -> None:
    quiet_third_parties()
    settings = Settings.resolve()
    importlib.import_module("pipelines.instance").ensure_instance(settings)  # the core never imports dagster itself
    env = {**os.environ, "DAGSTER_HOME": str(settings.dagster_home)}
    dagster_port, mlflow_port = (
        os.environ.get("EDGEOPS_DAGSTER_PORT", "3000"),
        os.environ.get("EDGEOPS_MLFLOW_PORT", "5000"),
    )
    bin_dir = os.path.dirname(sys.executable)
    processes = [
        subprocess.Popen(
            [
                os.path.join(bin_dir, "dagster"),
                "dev",
                "-w",
                str(settings.root / "workspace.yaml"),
                "-h",
                "127.0.0.1",
                "-p",
                dagster_port,
            ],
            cwd=settings.root,
            env=env,
            start_new_session=True,
        ),
        # One worker: a single user on loopback; MLflow's default of four costs start-up time and memory on a small box.
        subprocess.Popen(
            [
                os.path.join(bin_dir, "mlflow"),
                "ui",
                "--backend-store-uri",
                settings.mlflow_tracking_uri,
                "--default-artifact-root",
                settings.mlflow_artifact_root,
                "--host",
                "127.0.0.1",
                "--port",
                mlflow_port,
                "--workers",
                "1",
            ],
            cwd=settings.root,
            env=env,
            start_new_session=True,
        ),
    ]
    from edgeops.lineage import UI_MODEL_TRAINING_QUERY

    print(
        f"Dagster UI: http://127.0.0.1:{dagster_port}    MLflow UI: http://127.0.0.1:{mlflow_port}/#/experiments?{UI_MODEL_TRAINING_QUERY}"
        "    (Ctrl-C stops both)\n"
        "The Dagster daemon runs with them: every pipeline's sensors (<pipeline>_incoming_batches, "
        "<pipeline>_retrain_on_drift, "
        "<pipeline>_automation for the automation conditions), report_run_failures and the <pipeline>_drift_recheck "
        "schedule are on "
        "by default. `dagster sensor stop NAME -w workspace.yaml` turns one off (`dagster sensor list -w "
        "workspace.yaml` shows them).",
        flush=True,
    )
    try:
        while all(p.poll() is None for p in processes):
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        for process in processes:
            _signal_group(process.pid, signal.SIGINT)  # dagster dev ignores SIGTERM on its process group
        time.sleep(3)
        for process in processes:
            # The whole group, even when its leader already exited: server workers outlive their parent otherwise.
            _signal_group(process.pid, signal.SIGKILL)


def _signal_group(group: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, sig)


if __name__ == "__main__":
    main()
