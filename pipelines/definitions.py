"""The code location: every pipelines/*.yaml becomes an asset graph. Wiring only."""

from __future__ import annotations

from edgeops.settings import Settings, quiet_third_parties
from pipelines.wiring import build_definitions

quiet_third_parties()
defs = build_definitions(Settings.resolve())
