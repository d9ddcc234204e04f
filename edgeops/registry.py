"""The MLflow model registry: one registered model per target (<pipeline>-<target>), ONNX flavour, no pickles.

A version is created in a single call that carries all its tags, so a run killed mid-registration leaves either
no version or a complete one. Aliases (candidate, production) are moved only by the release stage.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from edgeops.errors import ReleaseError
from edgeops.lineage import (
    PIPELINE_TAG,
    RELEASE_ACTION_TAG,
    RELEASE_DECISION_TAG,
    RELEASE_MODEL_TAG,
    RELEASE_REASON_TAG,
    RELEASE_VERSION_TAG,
    STAGE_RELEASE,
    STAGE_TAG,
    TARGET_TAG,
    VERSION_DATASET_DIGEST_TAG,
    VERSION_PARENT_RUN_TAG,
    VERSION_PARENT_WEIGHTS_TAG,
    VERSION_SHA256_TAG,
)
from edgeops.noise import NOISE_TAG, combined_statement
from edgeops.records import (
    ACCURACY_ON_DEVICE,
    LATENCY_B1_P50_MS,
    LATENCY_B1_P95_MS,
    PEAK_RSS_BEYOND_BASELINE_KB,
    BenchmarkRecord,
    DpModel,
    TargetArtifact,
)
from edgeops.spec import Declaration, TargetSpec

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from edgeops.ledger import PrivacyLedger
    from edgeops.lineage import LineageRun
    from edgeops.records import DatasetRef

MODEL_ID_VERSION_TAG = "edgeops.mlflow_model_id"  # on a registered version: its target's LoggedModel
MODEL_VERSIONS_TAG = "mlflow.modelVersions"  # on a LoggedModel: MLflow's own list of its registered versions
ON_DEVICE_TAG = "edgeops.on_device"  # on a LoggedModel: where its on-device numbers were measured, or why not
HISTORY_TAG = "edgeops.production_history"  # on a registered model: its promotions and rollbacks, oldest first
PRODUCTION = "production"  # the alias a promotion moves and a rollout delivers


def registered_name(pipeline: str, target: str) -> str:
    return f"{pipeline}-{target}"


def target_privacy(dp_model: DpModel, steps: list[dict[str, Any]]) -> dict[str, Any]:
    """(epsilon, delta) of a target's artifact by basic composition: the DP model's training, the DP statistics its
    input scaling used (if any), and every compression step that read private data (fine-tuning, distillation): the
    `steps` notes of its TargetArtifact."""
    from edgeops.privacy.accounting import GAUSSIAN_KEYS

    def mechanism(source: dict[str, Any]) -> dict[str, Any]:
        return {k: source[k] for k in GAUSSIAN_KEYS if source.get(k) is not None}

    privacy = dp_model.privacy
    parts = [("dp_model", privacy.epsilon, privacy.delta, mechanism(privacy.model_dump()))]
    statistics = dp_model.ref.dp_statistics
    if statistics:
        parts.append(("dp_statistics", statistics.epsilon, statistics.delta, {}))
    for note in steps:
        for kind in ("finetune", "distill"):
            if isinstance(note.get(kind), dict) and "epsilon" in note[kind]:
                parts.append(
                    (
                        f"{note['step']}:{kind}",
                        float(note[kind]["epsilon"]),
                        float(note[kind].get("delta", 0.0)),
                        mechanism(note[kind]),
                    )
                )
    return {
        "epsilon": sum(p[1] for p in parts),
        "delta": sum(p[2] for p in parts),
        "composition": "basic (sums)",
        "parts": {name: {"epsilon": e, "delta": d, **m} for name, e, d, m in parts},
    }


def target_guarantee(dp_model: DpModel, steps: list[dict[str, Any]]) -> dict[str, Any]:
    """A target's own (epsilon, delta) for its card entry: the basic sum over what its artifact depends on (the DP
    model, its DP statistics, this target's fine-tuning or distillation), and beside it the tighter PLD composition of
    the same mechanisms at the same delta."""
    from edgeops.privacy.accounting import pld_composed_epsilon

    composed = target_privacy(dp_model, steps)
    parts = [{**part} for part in composed["parts"].values()]
    composed["pld_epsilon"] = pld_composed_epsilon(parts, composed["delta"]) if composed["delta"] > 0 else None
    composed["text"] = (
        f"({composed['epsilon']:.3f}, {composed['delta']:g})-differentially private by basic composition of "
        + " + ".join(f"{name} ({part['epsilon']:.3f}, {part['delta']:g})" for name, part in composed["parts"].items())
        + (
            f"; PLD composition of the same mechanisms: epsilon {composed['pld_epsilon']:.3f} at the same delta"
            if composed["pld_epsilon"] is not None
            else ""
        )
    )
    return composed


def build_and_register(
    declaration: Declaration,
    target: TargetSpec,
    dp_model: DpModel,
    out_root: Path,
    run: LineageRun,
    *,
    ledger: PrivacyLedger | None = None,
    dagster_run_id: str = "",
    home: Path | None = None,
) -> TargetArtifact:
    """Compression stage: build the target's artifact, log it as an MLflow ONNX model and register a version.
    With `home` (the state folder holding the OMS key) the artifact gets an OpenSSF model signature, written beside it
    as <artifact>.sig and logged beside it in MLflow (model/<artifact_file>.sig)."""
    import hashlib

    import mlflow.onnx
    import onnx

    from edgeops.compression.build import build_target

    recipe_hash = hashlib.sha256(target.model_dump_json().encode()).hexdigest()[:8]
    workdir = out_root / target.name / f"{dp_model.weights_sha256[:16]}-{recipe_hash}"
    record = build_target(declaration, target, dp_model, workdir, ledger, dagster_run_id)
    run.log_params(
        {
            "target": target.name,
            "runtime": target.runtime,
            "precision": record.precision,
            "recipe": json.dumps(record.recipe),
            "parent_weights_sha256": dp_model.weights_sha256,
        }
    )
    stored = record.to_json()
    run.log_metrics(
        {
            k: stored[k]
            for k in (
                "size_bytes",
                "parameters",
                "macs",
                "accuracy",
                "accuracy_drop_points",
                "parity_max_abs_diff",
                "top1_agreement",
            )
            if k in stored
        }
    )
    run.log_json(stored, "compression/record.json")
    if target.runtime == "onnxruntime":
        model_dir = workdir / "mlflow_model"
        shutil.rmtree(model_dir, ignore_errors=True)
        mlflow.onnx.save_model(onnx.load(record.artifact_path), str(model_dir), save_as_external_data=False)
        run.client.log_artifacts(run.run_id, str(model_dir), "model")
        run.set_tags({"sha256.model/model.onnx": record.sha256, TARGET_TAG: target.name})
        artifact_file = "model.onnx"
    else:  # MLflow has no ExecuTorch or LiteRT flavour: the artifact file itself is the registered version's source
        artifact = Path(record.artifact_path)
        run.client.log_artifact(run.run_id, str(artifact), "model")
        run.set_tags({f"sha256.model/{artifact.name}": record.sha256, TARGET_TAG: target.name})
        artifact_file = artifact.name
    if home is not None:
        import tempfile

        from edgeops import oms

        signature = oms.sign(Path(record.artifact_path), Path(record.artifact_path + oms.SIGNATURE_SUFFIX), home)
        with tempfile.TemporaryDirectory(
            prefix="edgeops-oms-"
        ) as folder:  # named after the artifact's MLflow file name
            staged = Path(folder) / f"{artifact_file}{oms.SIGNATURE_SUFFIX}"
            shutil.copy(signature, staged)
            run.client.log_artifact(run.run_id, str(staged), "model")
        stored["oms_signature"] = {
            "file": staged.name,
            "public_key_fingerprint": oms.fingerprint(oms.public_key_pem(home)),
        }
    model_id = log_target_model(
        declaration,
        target,
        dp_model,
        record,
        run,
        workdir / "mlflow_model" if target.runtime == "onnxruntime" else None,
    )
    source = f"{run.client.get_run(run.run_id).info.artifact_uri}/model"
    name = registered_name(declaration.spec.name, target.name)
    with contextlib.suppress(Exception):  # already registered (or created by a concurrent run)
        run.client.create_registered_model(name, tags={PIPELINE_TAG: declaration.spec.name, TARGET_TAG: target.name})
    from edgeops.compression.build import budget_outcomes

    outcomes = budget_outcomes(record, target)
    checks = {
        f"edgeops.check.{k}": ("not_measured" if ok is None else "passed" if ok else "failed")
        for k, (ok, _) in outcomes.items()
    }
    version = run.client.create_model_version(
        name,
        source,
        run_id=run.run_id,
        tags={
            **checks,
            MODEL_ID_VERSION_TAG: model_id,
            VERSION_SHA256_TAG: record.sha256,
            "edgeops.recipe": json.dumps(record.recipe),
            VERSION_PARENT_WEIGHTS_TAG: dp_model.weights_sha256,
            VERSION_PARENT_RUN_TAG: dp_model.mlflow_run_id,
            VERSION_DATASET_DIGEST_TAG: dp_model.dataset_digest,
            "edgeops.precision": record.precision,
            "edgeops.privacy": record.privacy[:500],
            "edgeops.spec_sha256": declaration.sha256,
            NOISE_TAG: record.noise or combined_statement(dp_model.privacy.noise),
            "edgeops.runtime": target.runtime,
            "edgeops.artifact_file": artifact_file,
            TARGET_TAG: target.name,
        },
    )
    # The registered version links back to its LoggedModel the way MLflow's own log_model does (the Models view then
    # names the version); the version's source stays the run's model/ folder, which releases and card verify read.
    run.client.set_logged_model_tags(
        model_id, {MODEL_VERSIONS_TAG: json.dumps([{"name": name, "version": str(version.version)}])}
    )
    # The registry fields join the built record in its JSON (their key order is the stored one) and are validated again.
    return TargetArtifact.model_validate(
        {
            **stored,
            "mlflow_model_id": model_id,
            "artifact_file": artifact_file,  # its name under the run's model/ folder (card evidence, release downloads)
            "registered_model": name,
            "registered_version": version.version,
            "mlflow_run_id": run.run_id,
        }
    )


def evaluation_dataset(dataset_ref: DatasetRef, pipeline: str) -> tuple[str, str, str]:
    """(name, digest, source) of the test split as validated_dataset logged it to MLflow: what the metrics of a
    target's LoggedModel were measured on."""
    test = dataset_ref.splits["test"]
    return f"{pipeline}-test", test.digest[:36], test.path


def log_target_model(
    declaration: Declaration,
    target: TargetSpec,
    dp_model: DpModel,
    record: TargetArtifact,
    run: LineageRun,
    mlflow_model_dir: Path | None,
) -> str:
    """The target's artifact as an MLflow LoggedModel with its size, accuracy and (epsilon, delta); the benchmark
    stage adds its on-device latency and memory to the same model id."""
    privacy = target_privacy(dp_model, record.steps)
    on_test_split = {"accuracy": record.accuracy, "accuracy_drop_points": record.accuracy_drop_points}
    properties = {"size_bytes": record.size_bytes, "epsilon": privacy["epsilon"], "delta": privacy["delta"]}
    params = {
        "target": target.name,
        "runtime": target.runtime,
        "device": target.device,
        "precision": record.precision,
        "recipe": " + ".join(step["step"] for step in record.recipe) or "float",
        "epsilon": f"{privacy['epsilon']:.4g}",
        "delta": f"{privacy['delta']:g}",
        "privacy_composition": json.dumps(privacy["parts"]),
    }
    tags = {
        PIPELINE_TAG: declaration.spec.name,
        TARGET_TAG: target.name,
        VERSION_SHA256_TAG: record.sha256,
        VERSION_PARENT_WEIGHTS_TAG: dp_model.weights_sha256,
        "edgeops.spec_sha256": declaration.sha256,
    }
    dataset = evaluation_dataset(dp_model.ref, declaration.spec.name)
    if mlflow_model_dir is not None:  # ONNX: MLflow's onnx model folder (MLmodel + model.onnx)
        model_id: str = run.log_target_model(
            name=target.name,
            model_dir=mlflow_model_dir,
            params=params,
            tags=tags,
            metrics=on_test_split,
            dataset=dataset,
        )
    else:
        import tempfile

        with tempfile.TemporaryDirectory(
            prefix="edgeops-model-"
        ) as folder:  # the artifact file alone (.safetensors, .pte, .tflite)
            shutil.copy(record.artifact_path, folder)
            model_id = run.log_target_model(
                name=target.name, model_dir=folder, params=params, tags=tags, metrics=on_test_split, dataset=dataset
            )
    run.log_metrics(properties, model_id=model_id)  # properties of the file and its training, measured on no dataset
    return model_id


def log_on_device_metrics(
    run: LineageRun, compressed: TargetArtifact, bench: BenchmarkRecord, dataset_ref: DatasetRef, pipeline: str
) -> None:
    """The benchmark's measured numbers on the target's LoggedModel (accuracy on the test split, latency and memory at
    batch 1), or a tag saying why they were not measured. Targets compressed before LoggedModels existed are skipped."""
    model_id = compressed.mlflow_model_id
    if not model_id:
        return
    if not bench.measured:
        run.client.set_logged_model_tags(
            model_id, {ON_DEVICE_TAG: f"not measured: {bench.reason or 'see the benchmark run'}"[:500]}
        )
        return
    batch1 = bench.batch1
    name, digest, _ = evaluation_dataset(dataset_ref, pipeline)
    run.log_metrics({ACCURACY_ON_DEVICE: bench.accuracy_on_device}, model_id=model_id, dataset=(name, digest))
    run.log_metrics(
        {
            LATENCY_B1_P50_MS: batch1.p50_ms if batch1 else None,
            LATENCY_B1_P95_MS: batch1.p95_ms if batch1 else None,
            PEAK_RSS_BEYOND_BASELINE_KB: bench.peak_rss_beyond_baseline_kb,
        },
        model_id=model_id,
    )
    run.client.set_logged_model_tags(
        model_id,
        {ON_DEVICE_TAG: f"measured on device {bench.device_name} ({bench.device_kind})"[:500]},
    )


def tag_version(client: MlflowClient, model: str | None, version: int | str | None, tags: dict[str, Any]) -> None:
    """Add tags to a target's registered version (benchmark checks, card id), if it was registered."""
    if model and version:
        for key, value in tags.items():
            client.set_model_version_tag(model, str(version), key, str(value))


def alias_version(client: MlflowClient, name: str, alias: str) -> str | None:
    """The version an alias points at, or None where it is unset (MLflow raises): promotion and rollout start here."""
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except Exception:
        return None


# A ModelVersion, typed Any: edgeops.evidence passes its run_id (str | None in MLflow's types) where a str is expected.
def model_version(client: MlflowClient, name: str, version: str) -> Any:
    """A registered version, or a user-facing ReleaseError (not MLflow's exception) when it does not exist."""
    try:
        return client.get_model_version(name, str(version))
    except Exception:
        raise ReleaseError(f"{name} has no version {version}") from None


@dataclass(frozen=True)
class DownloadedArtifact:
    """A registered version's artifact file, downloaded and checked: what a release benchmarks and ships. Not the
    compression record (TargetArtifact): only the file and its sha256; MACs are not re-derived from the file."""

    artifact_path: str
    sha256: str
    macs: int | None = None


def artifact_record(client: MlflowClient, mv: ModelVersion) -> DownloadedArtifact:
    """The version's artifact downloaded from MLflow and checked against its sha256 tag: nothing unregistered ships."""
    import hashlib
    import tempfile

    from mlflow.artifacts import download_artifacts

    folder = Path(tempfile.mkdtemp(prefix="edgeops-release-"))
    local = Path(
        download_artifacts(
            artifact_uri=f"{mv.source}/{mv.tags.get('edgeops.artifact_file', 'model.onnx')}",
            dst_path=str(folder),
            tracking_uri=client.tracking_uri,
        )
    )
    sha = hashlib.sha256(local.read_bytes()).hexdigest()
    if sha != mv.tags.get(VERSION_SHA256_TAG):
        raise ReleaseError(
            f"{mv.name} v{mv.version}: artifact in MLflow has sha256 {sha[:16]}, "
            f"the version records {mv.tags.get(VERSION_SHA256_TAG, '')[:16]}"
        )
    return DownloadedArtifact(artifact_path=str(local), sha256=sha)


def record_release_decision(
    client: MlflowClient,
    declaration: Declaration,
    name: str,
    action: str,
    version: str,
    *,
    previous: str | None,
    decision: str,
    reason: str,
    numbers: dict[str, Any],
    gate_states: dict[str, Any],
) -> str:
    """An MLflow run per promotion, rollback or rollout (what, who, why, the numbers): the audit trail of releases."""
    experiment = client.get_experiment_by_name(declaration.spec.name)
    if experiment is None:  # the versions being released were logged there: its absence means the wrong tracking server
        raise ReleaseError(f"MLflow at {client.tracking_uri} has no experiment {declaration.spec.name!r}")
    run = client.create_run(
        experiment.experiment_id,
        run_name=f"release:{action}",
        tags={
            STAGE_TAG: STAGE_RELEASE,
            RELEASE_ACTION_TAG: action,
            RELEASE_MODEL_TAG: name,
            RELEASE_VERSION_TAG: version,
            "edgeops.release.previous": previous or "",
            RELEASE_DECISION_TAG: decision,
            "edgeops.release.who": getpass.getuser(),
            RELEASE_REASON_TAG: reason[:5000],
        },
    )
    client.log_text(
        run.info.run_id,
        json.dumps({"gates": gate_states, "numbers": numbers}, indent=1, default=str),
        "release/decision.json",
    )
    client.set_terminated(run.info.run_id, "FINISHED")
    return cast(str, run.info.run_id)
