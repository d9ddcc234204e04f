"""The pipeline's DP training stage: plan, charge the ledger, train or resume, save and log the released model."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from edgeops.files import TRAINED_ONNX_FILE, TRAINED_WEIGHTS_FILE, write_owner_only
from edgeops.ledger import PrivacyLedger
from edgeops.models import export_onnx, weights_sha256
from edgeops.noise import NOISE_TAG
from edgeops.records import CentralPrivacy, DpMetrics, DpModel, FederatedPrivacy
from edgeops.spec import PipelineSpec
from edgeops.training.charged import charged_dp_sgd, noise_statement
from edgeops.training.data import Progress, TrainingData, new_model
from edgeops.training.dpsgd import plan_dp_training
from edgeops.training.evaluation import evaluate_logits, predict_logits
from edgeops.training.nonprivate import cached_pretraining

if TYPE_CHECKING:
    from torch import nn

    from edgeops.ledger import LedgerEntry
    from edgeops.lineage import LineageRun
    from edgeops.records import DatasetRef

PUBLIC_CURVES = (
    "val_accuracy",
    "epsilon",
)  # train_loss: un-noised, kept out of MLflow (README "what is not protected")


def run_dp_training(
    spec: PipelineSpec,
    ref: DatasetRef,
    ledger: PrivacyLedger,
    out_root: Path,
    run: LineageRun,
    *,
    dagster_run_id: str = "",
    progress: Progress = lambda _: None,
    home: Path | None = None,
) -> DpModel:
    """Stage: plan, charge the ledger (refusing overspend), train or resume, save safetensors + ONNX, log to MLflow."""

    spec = ref.bounded(spec)
    data = TrainingData.from_ref(ref, spec)
    plan = plan_dp_training(spec, data)
    from edgeops.doctor import utility_warnings

    parameters = sum(p.numel() for p in new_model(spec, data).parameters())
    noise = {
        "noise_to_signal": plan.noise_multiplier * math.sqrt(parameters) / (plan.sample_rate * plan.n_train),
        "parameters": parameters,
    }
    for warning in utility_warnings(spec, plan.n_train, noise, len(data.features)):
        progress(f"WARNING: {warning}")
    initial, pretrain = (
        cached_pretraining(spec, data, out_root / "pretrained", progress) if spec.training.pretrain else (None, None)
    )
    outcome = charged_dp_sgd(
        spec,
        data,
        plan,
        ledger,
        out_root,
        skeleton=initial,
        mechanism="dp-sgd (opacus)",
        note="DP-SGD training of the released model",
        run_id=dagster_run_id,
        progress=progress,
        home=home,
    )
    model, plan, entry, workdir = outcome.model, outcome.plan, outcome.entry, outcome.workdir
    record = {**outcome.record, "pretrain": outcome.record.get("pretrain", pretrain)}
    if not outcome.reused:
        write_owner_only(workdir / "training.json", json.dumps(record))
        # per-epoch curves: val accuracy and epsilon only. The training loss is an un-noised average over private
        # rows, so it is not published (the owner sees it in the progress log only).
        run.log_metric_series({f"train/{k}": v for k, v in record["curves"].items() if k in PUBLIC_CURVES})
    if not (workdir / TRAINED_ONNX_FILE).exists():
        export_onnx(model, len(data.features), workdir / TRAINED_ONNX_FILE)
    privacy = {
        **plan.ledger_parameters(),
        "epsilon": record["epsilon"],
        "claimed_epsilon": record["epsilon"],
        "target_epsilon": plan.target_epsilon,
        "ledger_entry": cast("LedgerEntry", entry).id,
        "unit": "sample (one row of the training split)",
        "sampling": "Poisson (secret)",
        "clipping": "flat per-sample",
        "noise": noise_statement(record.get("noise")),
    }
    run.log_params(
        {f"dp.{k}": v for k, v in privacy.items()}
        | {"model.family": spec.model.family, "parameters": sum(p.numel() for p in model.parameters())}
    )
    return release_dp_model(
        run,
        model,
        data,
        ref,
        workdir=workdir,
        privacy=CentralPrivacy.model_validate(privacy),
        training_seconds=record["seconds"],
        pretrain=record.get("pretrain"),
    )


def release_dp_model(
    run: LineageRun,
    model: nn.Module,
    data: TrainingData,
    ref: DatasetRef,
    *,
    workdir: Path,
    privacy: CentralPrivacy | FederatedPrivacy,
    training_seconds: float,
    tags: dict[str, Any] | None = None,
    **mode_fields: Any,
) -> DpModel:
    """What both training modes do with the released model: evaluate it on the validation and test splits, log those
    figures, its files (TRAINED_WEIGHTS_FILE and TRAINED_ONNX_FILE in `workdir`) and tags to the stage's MLflow run,
    and return its DpModel record."""
    weights_path, onnx_path = workdir / TRAINED_WEIGHTS_FILE, workdir / TRAINED_ONNX_FILE

    metrics = {
        split: evaluate_logits(predict_logits(model, x), y, len(data.classes))
        for split, x, y in (("validation", data.x_val, data.y_val), ("test", data.x_test, data.y_test))
    }
    run.log_metrics(
        {
            "test_accuracy": metrics["test"]["accuracy"],
            "test_ece": metrics["test"]["ece"],
            "validation_accuracy": metrics["validation"]["accuracy"],
            "epsilon": privacy.epsilon,
        }
    )
    weights_file_sha256 = run.log_artifact(weights_path, "model")
    onnx_sha256 = run.log_artifact(onnx_path, "model")
    run.set_tags({"weights_sha256": weights_sha256(model), NOISE_TAG: privacy.noise, **(tags or {})})
    return DpModel(
        weights_path=str(weights_path),
        onnx_path=str(onnx_path),
        weights_file_sha256=weights_file_sha256,
        onnx_sha256=onnx_sha256,
        weights_sha256=weights_sha256(model),
        dataset_digest=ref.digest,
        metrics=DpMetrics.model_validate(metrics),
        privacy=privacy,
        training_seconds=training_seconds,
        mlflow_run_id=run.run_id,
        parameters=sum(p.numel() for p in model.parameters()),
        features=data.features,
        classes=data.classes,
        ref=ref,
        **mode_fields,
    )
