"""Where things live. Resolved when asked (never at import time), from the environment with local defaults.

The embedded default keeps everything under one project-local state folder (``.edgeops/``):
Dagster's instance (sqlite), MLflow's store (sqlite) and artifacts, datasets, models and keys.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path


def project_root() -> Path:
    """The folder holding pipelines/ and workspace.yaml: EDGEOPS_ROOT, else the nearest such folder upwards."""
    if os.environ.get("EDGEOPS_ROOT"):
        return Path(os.environ["EDGEOPS_ROOT"]).resolve()
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "workspace.yaml").is_file() and (folder / "pipelines").is_dir():
            return folder
    return Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Settings:
    root: Path
    home: Path
    dagster_home: Path
    mlflow_tracking_uri: str
    mlflow_artifact_root: str
    pipelines_dir: Path
    model_cards_dir: Path

    @classmethod
    def resolve(cls) -> "Settings":
        root = project_root()
        home = Path(os.environ.get("EDGEOPS_HOME") or root / ".edgeops").resolve()
        tracking = os.environ.get("EDGEOPS_MLFLOW_TRACKING_URI") or f"sqlite:///{home / 'mlflow.db'}"
        artifacts = os.environ.get("EDGEOPS_MLFLOW_ARTIFACT_ROOT") or (home / "mlartifacts").as_uri()
        return cls(
            root=root,
            home=home,
            dagster_home=Path(os.environ.get("DAGSTER_HOME") or home / "dagster").resolve(),
            mlflow_tracking_uri=tracking,
            mlflow_artifact_root=artifacts,
            pipelines_dir=Path(os.environ.get("EDGEOPS_PIPELINES_DIR") or root / "pipelines").resolve(),
            model_cards_dir=root / "model_cards",
        )

    def pipeline_dir(self, pipeline: str) -> Path:
        return self.home / "pipelines" / pipeline

    def as_json(self) -> dict:
        return {key: str(value) for key, value in asdict(self).items()}


def quiet_third_parties() -> None:
    """No telemetry and no network from the libraries we use (set before they are imported)."""
    for key, value in {
        "GX_ANALYTICS_ENABLED": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "1",
        "DAGSTER_DISABLE_TELEMETRY": "true",
        "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false",
        "TQDM_DISABLE": "1",
    }.items():
        os.environ.setdefault(key, value)
