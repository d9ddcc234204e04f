"""Turns every declaration into its asset graph. Adding pipelines/<name>.yaml adds a graph; no code changes."""

from __future__ import annotations

from assets.benchmarking import build_benchmark_assets
from assets.common import AssetFactoryContext
from assets.compression import build_compression_assets
from assets.data import build_data_assets
from assets.governance import build_governance_assets
from assets.monitoring import build_monitoring_assets, build_monitoring_automation
from assets.training import build_training_assets
from edgeops.settings import Settings
from edgeops.spec import Declaration

STAGE_BUILDERS = [
    build_data_assets,
    build_training_assets,
    build_compression_assets,
    build_benchmark_assets,
    build_governance_assets,
    build_monitoring_assets,
]


def build_pipeline_assets(declaration: Declaration, settings: Settings) -> list:
    ctx = AssetFactoryContext(declaration, settings)
    built: list = []
    for builder in STAGE_BUILDERS:
        built += builder(ctx)
    return built


def build_pipeline_automation(declaration: Declaration, settings: Settings) -> tuple[list, list]:
    """Sensors and schedules of one pipeline."""
    return build_monitoring_automation(AssetFactoryContext(declaration, settings))
