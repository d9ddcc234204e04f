"""The embedded Dagster instance: sqlite storage under the state folder, telemetry off, one run at a time
per device pool. A deployment profile (postgres, celery) replaces dagster.yaml; the code stays the same."""

from __future__ import annotations

import os

import dagster as dg

from edgeops.settings import Settings

EMBEDDED_DAGSTER_YAML = """\
# Written by edgeops for the embedded default (sqlite under this folder). Replace it to use a profile.
telemetry:
  enabled: false
concurrency:
  pools:
    default_limit: 1
"""


def ensure_instance(settings: Settings) -> dg.DagsterInstance:
    home = settings.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(EMBEDDED_DAGSTER_YAML)
    os.environ["DAGSTER_HOME"] = str(home)
    return dg.DagsterInstance.get()
