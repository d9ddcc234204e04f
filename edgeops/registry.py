"""The MLflow model registry: one registered model per target (<pipeline>-<target>), ONNX flavour, no pickles.

A version is created in a single call that carries all its tags, so a run killed mid-registration leaves either
no version or a complete one. Aliases (candidate, production) are moved only by the release stage.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from edgeops.spec import Declaration, TargetSpec


def registered_name(pipeline: str, target: str) -> str:
    return f"{pipeline}-{target}"


def build_and_register(declaration: Declaration, target: TargetSpec, dp_model: dict, out_root: Path, run, ledger=None,
                       dagster_run_id: str = "") -> dict:
    """Compression stage: build the target's artifact, log it as an MLflow ONNX model and register a version."""
    import mlflow.onnx
    import onnx

    from edgeops.compression import build_target

    import hashlib

    recipe_hash = hashlib.sha256(target.model_dump_json().encode()).hexdigest()[:8]
    workdir = out_root / target.name / f"{dp_model['weights_sha256'][:16]}-{recipe_hash}"
    record = build_target(declaration, target, dp_model, workdir, ledger, dagster_run_id)
    run.log_params({"target": target.name, "runtime": target.runtime, "precision": record["precision"],
                    "recipe": json.dumps(record["recipe"]), "parent_weights_sha256": dp_model["weights_sha256"]})
    run.log_metrics({k: record[k] for k in ("size_bytes", "parameters", "macs", "accuracy", "accuracy_drop_points",
                                             "parity_max_abs_diff", "top1_agreement") if k in record})
    run.log_json(record, "compression/record.json")
    if target.runtime == "onnxruntime":
        model_dir = workdir / "mlflow_model"
        shutil.rmtree(model_dir, ignore_errors=True)
        mlflow.onnx.save_model(onnx.load(record["artifact_path"]), str(model_dir), save_as_external_data=False)
        run.client.log_artifacts(run.run_id, str(model_dir), "model")
        run.set_tags({"sha256.model/model.onnx": record["sha256"], "edgeops.target": target.name})
        artifact_file = "model.onnx"
    else:  # MLflow has no ExecuTorch or LiteRT flavour: the artifact file itself is the registered version's source
        artifact = Path(record["artifact_path"])
        run.client.log_artifact(run.run_id, str(artifact), "model")
        run.set_tags({f"sha256.model/{artifact.name}": record["sha256"], "edgeops.target": target.name})
        artifact_file = artifact.name
    source = f"{run.client.get_run(run.run_id).info.artifact_uri}/model"
    name = registered_name(declaration.spec.name, target.name)
    try:
        run.client.create_registered_model(name, tags={"edgeops.pipeline": declaration.spec.name, "edgeops.target": target.name})
    except Exception:  # already registered (or created by a concurrent run)
        pass
    from edgeops.compression import budget_outcomes

    outcomes = budget_outcomes(record, target)
    checks = {f"edgeops.check.{k}": ("not_measured" if ok is None else "passed" if ok else "failed") for k, (ok, _) in outcomes.items()}
    version = run.client.create_model_version(name, source, run_id=run.run_id, tags={**checks,
        "edgeops.sha256": record["sha256"], "edgeops.recipe": json.dumps(record["recipe"]),
        "edgeops.parent_weights_sha256": dp_model["weights_sha256"], "edgeops.parent_mlflow_run": dp_model["mlflow_run_id"],
        "edgeops.dataset_digest": dp_model["dataset_digest"], "edgeops.precision": record["precision"],
        "edgeops.privacy": record["privacy"][:500], "edgeops.spec_sha256": declaration.sha256,
        "edgeops.runtime": target.runtime, "edgeops.artifact_file": artifact_file,
    })
    record["artifact_file"] = artifact_file  # its name under the run's model/ folder (card evidence, release downloads)
    record["registered_model"] = name
    record["registered_version"] = version.version
    record["mlflow_run_id"] = run.run_id
    return record


def tag_version(client, record: dict, tags: dict) -> None:
    """Add tags to a target's registered version (benchmark checks, card id), if it was registered."""
    if record.get("registered_model") and record.get("registered_version"):
        for key, value in tags.items():
            client.set_model_version_tag(record["registered_model"], str(record["registered_version"]), key, str(value))
