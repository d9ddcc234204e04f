"""pipelines/examples/digits32_mobilenet.yaml through the whole pipeline on a tiny profile: the MobileNet-class model
is pre-trained on public synthetic digits, trained with DP-SGD, quantized per runtime, benchmarked, registered,
carded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from helpers import REPO


@pytest.mark.slow
def test_the_mobilenet_example_runs_the_whole_pipeline(project):
    from edgeops.lineage import Lineage
    from pipelines.launch import run_pipelines

    spec = yaml.safe_load((REPO / "pipelines" / "examples" / "digits32_mobilenet.yaml").read_text())
    spec["model"]["width_multiplier"] = 0.25  # tiny profile: every stage runs, a fraction of the compute
    spec["model"]["resolution"] = 16
    spec["training"].update(epochs=1, min_accuracy=0.0)
    spec["training"]["pretrain"].update(samples=500, epochs=1)
    for target in spec["targets"]:
        target.pop("budgets", None)
    project.declare(spec)
    (report,) = run_pipelines(project.settings(), "digits32_mobilenet")
    assert report.core_success, report.failures()

    settings = project.settings()
    client = Lineage(settings.mlflow_tracking_uri, settings.mlflow_artifact_root).client
    (version,) = client.search_model_versions("name = 'digits32_mobilenet-mobile_int8'")
    assert version.tags["edgeops.check.parity"] in ("passed", "failed"), (
        version.tags
    )  # measured (an untrained tiny model may miss it)
    card = json.loads((Path(version.tags["edgeops.card_folder"]) / "card.json").read_text())
    row = next(t for t in card["targets"] if t["name"] == "mobile_int8")
    assert row["precision"] == "int8"
