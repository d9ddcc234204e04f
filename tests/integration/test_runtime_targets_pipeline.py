"""ExecuTorch and LiteRT targets through the whole pipeline: compression checks, the MLflow registry, the benchmark
on the local device, the card, and a signed release bundle built from the registered artifact."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from helpers import needs_runtime, table_declaration, table_frame


@pytest.mark.slow
def test_runtime_targets_are_registered_benchmarked_carded_and_bundled(project):
    from edgeops import bundle
    from edgeops.delivery import write_release_bundle
    from edgeops.lineage import Lineage
    from edgeops.signing import load_public, public_key_path
    from edgeops.spec import load_declaration
    from pipelines.launch import run_pipelines

    needs_runtime("executorch")
    needs_runtime("litert")
    project.write_csv(table_frame(300))
    spec = table_declaration("rtab")
    spec["targets"] = [
        {"name": "cpu_float", "device": "cpu"},
        {
            "name": "phone_pte",
            "device": "cpu",
            "runtime": "executorch",
            "batch_sizes": [1, 8],
            "budgets": {"max_accuracy_drop_points": 1.0},
        },
        {
            "name": "phone_tflite",
            "device": "cpu",
            "runtime": "litert",
            "batch_sizes": [1, 8],
            "budgets": {"max_accuracy_drop_points": 1.0},
        },
    ]
    path = project.declare(spec)
    (report,) = run_pipelines(project.settings(), "rtab")
    assert report.core_success, report.failures()

    settings = project.settings()
    client = Lineage(settings.mlflow_tracking_uri, settings.mlflow_artifact_root).client
    for target, suffix in (("phone_pte", ".pte"), ("phone_tflite", ".tflite")):
        (version,) = client.search_model_versions(f"name = 'rtab-{target}'")
        assert version.tags["edgeops.artifact_file"] == f"{target}{suffix}"
        assert (
            version.tags["edgeops.check.parity"] == "passed" and version.tags["edgeops.check.accuracy_drop"] == "passed"
        )
        assert version.tags["edgeops.check.latency"] == "passed", version.tags
        bench = client.search_runs(
            [client.get_experiment_by_name("rtab").experiment_id],
            f"attributes.run_name = 'hil_benchmark[{target}]'",
            max_results=1,
        )[0]
        assert bench.data.metrics["latency_b1_p50_ms"] > 0 and bench.data.metrics["accuracy_on_device"] > 0.5
        card = json.loads((Path(version.tags["edgeops.card_folder"]) / "card.json").read_text())
        row = next(t for t in card["targets"] if t["name"] == target)
        assert row["runtime"] == spec["targets"][1 if suffix == ".pte" else 2]["runtime"]

        declaration = load_declaration(path)
        blob = write_release_bundle(client, declaration, target, version.version, settings.home).read_bytes()
        verified = bundle.verify(blob, load_public(public_key_path(settings.home).read_bytes(), "project key"))
        assert verified.manifest["runtime"] == spec["targets"][1 if suffix == ".pte" else 2]["runtime"]
        assert verified.manifest["artifact"]["filename"] == f"model{suffix}"
        assert hashlib.sha256(verified.artifact).hexdigest() == version.tags["edgeops.sha256"]
