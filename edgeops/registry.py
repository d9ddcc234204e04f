"""The MLflow model registry: one registered model per target (<pipeline>-<target>), ONNX flavour, no pickles.

A version is created in a single call that carries all its tags, so a run killed mid-registration leaves either
no version or a complete one. Aliases (candidate, production) are moved only by the release stage.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from edgeops.spec import Declaration, TargetSpec


MODEL_ID_VERSION_TAG = "edgeops.mlflow_model_id"   # on a registered version: its target's LoggedModel
MODEL_VERSIONS_TAG = "mlflow.modelVersions"         # on a LoggedModel: MLflow's own list of its registered versions
ON_DEVICE_TAG = "edgeops.on_device"                 # on a LoggedModel: where its on-device numbers were measured, or why not


def registered_name(pipeline: str, target: str) -> str:
    return f"{pipeline}-{target}"


def target_privacy(dp_model: dict, record: dict) -> dict:
    """(epsilon, delta) of a target's artifact by basic composition: the DP model's training, the DP statistics its
    input scaling used (if any), and every compression step that read private data (fine-tuning, distillation)."""
    privacy = dp_model["privacy"]
    parts = [("dp_model", float(privacy["epsilon"]), float(privacy["delta"]))]
    statistics = (dp_model.get("ref") or {}).get("dp_statistics")
    if statistics:
        parts.append(("dp_statistics", float(statistics["epsilon"]), float(statistics.get("delta", 0.0))))
    for note in record.get("steps", []):
        for kind in ("finetune", "distill"):
            if isinstance(note.get(kind), dict) and "epsilon" in note[kind]:
                parts.append((f"{note['step']}:{kind}", float(note[kind]["epsilon"]), float(note[kind].get("delta", 0.0))))
    return {"epsilon": sum(p[1] for p in parts), "delta": sum(p[2] for p in parts), "composition": "basic (sums)",
            "parts": {name: {"epsilon": e, "delta": d} for name, e, d in parts}}


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
    record["mlflow_model_id"] = log_target_model(declaration, target, dp_model, record, run,
                                                 workdir / "mlflow_model" if target.runtime == "onnxruntime" else None)
    source = f"{run.client.get_run(run.run_id).info.artifact_uri}/model"
    name = registered_name(declaration.spec.name, target.name)
    try:
        run.client.create_registered_model(name, tags={"edgeops.pipeline": declaration.spec.name, "edgeops.target": target.name})
    except Exception:  # already registered (or created by a concurrent run)
        pass
    from edgeops.compression import budget_outcomes

    outcomes = budget_outcomes(record, target)
    checks = {f"edgeops.check.{k}": ("not_measured" if ok is None else "passed" if ok else "failed") for k, (ok, _) in outcomes.items()}
    version = run.client.create_model_version(name, source, run_id=run.run_id, tags={**checks, MODEL_ID_VERSION_TAG: record["mlflow_model_id"],
        "edgeops.sha256": record["sha256"], "edgeops.recipe": json.dumps(record["recipe"]),
        "edgeops.parent_weights_sha256": dp_model["weights_sha256"], "edgeops.parent_mlflow_run": dp_model["mlflow_run_id"],
        "edgeops.dataset_digest": dp_model["dataset_digest"], "edgeops.precision": record["precision"],
        "edgeops.privacy": record["privacy"][:500], "edgeops.spec_sha256": declaration.sha256,
        "edgeops.runtime": target.runtime, "edgeops.artifact_file": artifact_file,
    })
    # The registered version links back to its LoggedModel the way MLflow's own log_model does (the Models view then
    # names the version); the version's source stays the run's model/ folder, which releases and card verify read.
    run.client.set_logged_model_tags(record["mlflow_model_id"], {MODEL_VERSIONS_TAG: json.dumps([{"name": name, "version": str(version.version)}])})
    record["artifact_file"] = artifact_file  # its name under the run's model/ folder (card evidence, release downloads)
    record["registered_model"] = name
    record["registered_version"] = version.version
    record["mlflow_run_id"] = run.run_id
    return record


def evaluation_dataset(dataset_ref: dict, pipeline: str) -> tuple[str, str, str]:
    """(name, digest, source) of the test split as validated_dataset logged it to MLflow: what the metrics of a
    target's LoggedModel were measured on."""
    test = dataset_ref["splits"]["test"]
    return f"{pipeline}-test", test["digest"][:36], test["path"]


def log_target_model(declaration: Declaration, target: TargetSpec, dp_model: dict, record: dict, run, mlflow_model_dir: Path | None) -> str:
    """The target's artifact as an MLflow LoggedModel with its size, accuracy and (epsilon, delta); the benchmark
    stage adds its on-device latency and memory to the same model id."""
    privacy = target_privacy(dp_model, record)
    on_test_split = {"accuracy": record.get("accuracy"), "accuracy_drop_points": record.get("accuracy_drop_points")}
    properties = {"size_bytes": record["size_bytes"], "epsilon": privacy["epsilon"], "delta": privacy["delta"]}
    params = {"target": target.name, "runtime": target.runtime, "device": target.device, "precision": record["precision"],
              "recipe": " + ".join(step["step"] for step in record["recipe"]) or "float", "epsilon": f"{privacy['epsilon']:.4g}",
              "delta": f"{privacy['delta']:g}", "privacy_composition": json.dumps(privacy["parts"])}
    tags = {"edgeops.pipeline": declaration.spec.name, "edgeops.target": target.name, "edgeops.sha256": record["sha256"],
            "edgeops.parent_weights_sha256": dp_model["weights_sha256"], "edgeops.spec_sha256": declaration.sha256}
    dataset = evaluation_dataset(dp_model["ref"], declaration.spec.name)
    if mlflow_model_dir is not None:  # ONNX: MLflow's onnx model folder (MLmodel + model.onnx)
        model_id = run.log_target_model(name=target.name, model_dir=mlflow_model_dir, params=params, tags=tags, metrics=on_test_split, dataset=dataset)
    else:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="edgeops-model-") as folder:  # the artifact file alone (.safetensors, .pte, .tflite)
            shutil.copy(record["artifact_path"], folder)
            model_id = run.log_target_model(name=target.name, model_dir=folder, params=params, tags=tags, metrics=on_test_split, dataset=dataset)
    run.log_metrics(properties, model_id=model_id)  # properties of the file and its training, measured on no dataset
    return model_id


def log_on_device_metrics(run, compressed: dict, bench: dict, dataset_ref: dict, pipeline: str) -> None:
    """The benchmark's measured numbers on the target's LoggedModel (accuracy on the test split, latency and memory at
    batch 1), or a tag saying why they were not measured. Targets compressed before LoggedModels existed are skipped."""
    model_id = compressed.get("mlflow_model_id")
    if not model_id:
        return
    if not bench.get("measured"):
        run.client.set_logged_model_tags(model_id, {ON_DEVICE_TAG: f"not measured: {bench.get('reason', 'see the benchmark run')}"[:500]})
        return
    batch1 = bench["latency"].get("1", {})
    name, digest, _ = evaluation_dataset(dataset_ref, pipeline)
    run.log_metrics({"accuracy_on_device": bench.get("accuracy_on_device")}, model_id=model_id, dataset=(name, digest))
    run.log_metrics({"latency_b1_p50_ms": batch1.get("p50_ms"), "latency_b1_p95_ms": batch1.get("p95_ms"),
                     "peak_rss_beyond_baseline_kb": bench.get("peak_rss_beyond_baseline_kb")}, model_id=model_id)
    run.client.set_logged_model_tags(model_id, {ON_DEVICE_TAG: f"measured on device {bench.get('device_name', '?')} ({bench.get('device_kind', '?')})"[:500]})


def tag_version(client, record: dict, tags: dict) -> None:
    """Add tags to a target's registered version (benchmark checks, card id), if it was registered."""
    if record.get("registered_model") and record.get("registered_version"):
        for key, value in tags.items():
            client.set_model_version_tag(record["registered_model"], str(record["registered_version"]), key, str(value))
