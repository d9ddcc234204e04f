"""Where things live. Resolved when asked (never at import time), from the environment with local defaults.

The embedded default keeps everything under one project-local state folder (``.edgeops/``):
Dagster's instance (sqlite), MLflow's store (sqlite) and artifacts, datasets, models and keys.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

PROJECT_MARKERS = ("workspace.yaml", "pipelines/")


def missing_project_parts(folder: Path) -> list[str]:
    """Which of workspace.yaml and pipelines/ the folder lacks (empty: it is an edgeops project)."""
    missing = []
    if not (folder / "workspace.yaml").is_file():
        missing.append("workspace.yaml")
    if not (folder / "pipelines").is_dir():
        missing.append("pipelines/")
    return missing


def project_root() -> Path:
    """The folder holding pipelines/ and workspace.yaml: EDGEOPS_ROOT, else the nearest such folder upwards.
    Neither: ProjectError naming what is missing and offering `edgeops init` (never a silent fallback to the folder
    edgeops happens to be installed in)."""
    from edgeops.errors import ProjectError

    if os.environ.get("EDGEOPS_ROOT"):
        root = Path(os.environ["EDGEOPS_ROOT"]).resolve()
        missing = missing_project_parts(root)
        if missing:
            raise ProjectError(
                f"EDGEOPS_ROOT={root} is not an edgeops project: it has no {' and no '.join(missing)}. "
                f"Create one with `edgeops init {root}`, or point EDGEOPS_ROOT at a project folder"
            )
        return root
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if not missing_project_parts(folder):
            return folder
    missing = missing_project_parts(here)
    raise ProjectError(
        f"{here} is not an edgeops project (nor is any folder above it): it has no {' and no '.join(missing)}. "
        "Create one with `edgeops init DIR` (then cd DIR), or set EDGEOPS_ROOT to a project folder"
    )


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
    def resolve(cls) -> Settings:
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

    def as_json(self) -> dict[str, Any]:
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
        # MLflow's client retries 7 times with exponential backoff by default: minutes per call against a stopped
        # tracking server. A few seconds, then a clear failure, unless the deployment sets its own.
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
    }.items():
        os.environ.setdefault(key, value)


def silence_known_warnings() -> None:
    """Third-party warnings a run would print on every run, each harmless for the reason given; anything else still
    shows. Filters match the message and the warning's module, so a new warning from the same library is not hidden."""
    import logging
    import warnings

    known = [
        # Opacus's RDP accountant when the best order is the largest one tried: the epsilon it reports is still a valid
        # upper bound, only looser; the released epsilon is re-derived independently (the epsilon_rederived check).
        (r"Optimal order is the largest alpha", UserWarning, r"opacus\.accountants"),
        # torch's pytree, inside the ONNX exporter, calling its own deprecated LeafSpec check: no effect on the export.
        (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning, r"copyreg|torch"),
        # Opacus's "Secure RNG turned off" is not filtered here: edgeops/training/dpsgd.py silences it where DP-SGD
        # starts, since there the noise comes from edgeops.noise (secret), not from Opacus's generator.
    ]
    for message, category, module in known:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
    for logger, level in (
        # "torchvision is not installed. Skipping torchvision::nms" (4 lines per export): the exporter would register
        # torchvision's detection ops if it were installed; no edgeops model uses them.
        ("torch.onnx._internal.exporter._registration", logging.ERROR),
        # "Creating initial MLflow database tables..." on a fresh state folder: a notice, not a problem.
        ("mlflow.store.db.utils", logging.WARNING),
        ("alembic.runtime.migration", logging.WARNING),
    ):
        logging.getLogger(logger).setLevel(level)


# One default digits run left 11 MB in the state folder, the tests' table pipeline 7.7 MB (du); drift reports, retries
# and later versions add to it.
MIN_FREE_MB = 100


def check_state_folder(home: Path, min_free_mb: float | None = None) -> None:
    """Before a run writes anything: the state folder must be creatable, writable by this user, and on a filesystem
    with room. Raises StateFolderError naming the folder and what to do."""
    import errno
    import shutil
    import uuid

    from edgeops.errors import StateFolderError

    min_free_mb = float(os.environ.get("EDGEOPS_MIN_FREE_MB", MIN_FREE_MB)) if min_free_mb is None else min_free_mb
    who = f"uid {os.getuid()}" if hasattr(os, "getuid") else "this user"
    try:
        home.mkdir(parents=True, exist_ok=True)
        probe = home / f".write-probe-{uuid.uuid4().hex[:8]}"
        with open(probe, "wb") as handle:
            handle.write(b"0" * 4096)
            handle.flush()
            os.fsync(handle.fileno())
        probe.unlink()
    except PermissionError as err:
        raise StateFolderError(
            f"state folder {home} is not writable by {who}: {err.strerror}. Give this user write access, "
            "or point EDGEOPS_HOME at a folder it owns"
        ) from None
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StateFolderError(
                f"state folder {home}: its filesystem is full ({err.strerror}); free space or point EDGEOPS_HOME "
                "at another disk"
            ) from None
        raise StateFolderError(f"state folder {home} cannot be used: {err.strerror or err}") from None
    free_mb = shutil.disk_usage(home).free / 2**20
    if free_mb < min_free_mb:
        raise StateFolderError(
            f"state folder {home}: only {free_mb:.1f} MB free on its filesystem; a run needs at least "
            f"{min_free_mb:g} MB (EDGEOPS_MIN_FREE_MB). Free space or point EDGEOPS_HOME at another disk"
        )


def looks_like_disk_full(err: BaseException) -> bool:
    """ENOSPC itself, or how SQLite reports it through SQLAlchemy ("database or disk is full", "disk I/O error")."""
    import errno

    from edgeops.errors import caused_by

    return caused_by(
        err,
        errnos={errno.ENOSPC, errno.EDQUOT},
        texts=("database or disk is full", "disk I/O error", "No space left on device"),
    )
