"""Shared fixtures (an isolated project: its own state folder, pipelines and cards), the suite's environment, and the
test tiers. Helper functions and classes live in tests/helpers.py.

Markers (registered in pyproject.toml; --strict-markers rejects any other):
  unit         tests/unit: functions and small stages, in-process (tests/unit takes a few minutes)
  integration  tests/assets, tests/integration, tests/reliability, tests/security: materialized pipelines, servers,
               subprocesses and injected faults (slow)
  browser      tests/ui: the Dagster and MLflow UIs in headless Chromium
  services     needs PostgreSQL/RabbitMQ on 127.0.0.1 (skips with a reason outside CI)
  gpu          needs a CUDA device (skips without one)
The folder a test lives in decides unit, integration or browser (pytest_collection_modifyitems below); services and
gpu are set on the tests themselves. Select with -m, e.g. `pytest -m unit`, `pytest -m "integration and not services"`.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
from helpers import Project

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "false"  # the suite shows nothing pickled is ever loaded

TESTS = Path(__file__).resolve().parent
TIER_BY_FOLDER = {
    "unit": "unit",
    "assets": "integration",
    "integration": "integration",
    "reliability": "integration",
    "security": "integration",
    "ui": "browser",
}


@pytest.hookimpl(tryfirst=True)  # before the mark plugin's own hook deselects by -m
def pytest_collection_modifyitems(items):
    for item in items:
        folder = item.path.relative_to(TESTS).parts[0]
        if folder not in TIER_BY_FOLDER:
            raise pytest.UsageError(f"{item.nodeid}: tests/{folder} has no tier (TIER_BY_FOLDER in tests/conftest.py)")
        item.add_marker(TIER_BY_FOLDER[folder])


@pytest.fixture
def project(tmp_path, monkeypatch) -> Project:
    return Project(tmp_path / "project", monkeypatch)


@pytest.fixture
def deep_copy():
    return copy.deepcopy
