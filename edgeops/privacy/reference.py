"""The non-private reference: the same model trained without DP, for comparison only, never released."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from edgeops.ledger import Computation, code_version
from edgeops.records import REFERENCE_TEST_ACCURACY, HeldOutTestMetrics, ReferenceRecord, SplitMetrics

if TYPE_CHECKING:
    from edgeops.ledger import LedgerEntry, PrivacyLedger
    from edgeops.lineage import LineageRun
    from edgeops.records import DatasetRef
    from edgeops.spec import PipelineSpec


def run_reference_stage(
    spec: PipelineSpec,
    ref: DatasetRef,
    ledger: PrivacyLedger,
    out_dir: Path,
    run: LineageRun,
    *,
    dagster_run_id: str = "",
    progress: Callable[[str], None] = lambda _: None,
) -> ReferenceRecord:
    """The non-private reference: trained for comparison only, never exported, registered or released."""
    from edgeops.models import load_weights, save_weights, weights_sha256
    from edgeops.scaling import feature_bounds
    from edgeops.training.data import TrainingData, new_model
    from edgeops.training.evaluation import evaluate_logits, predict_logits
    from edgeops.training.nonprivate import train_nonprivate

    spec = ref.bounded(spec)
    data = TrainingData.from_ref(ref, spec)
    low, high = feature_bounds(spec, data.features)
    computation = Computation(
        kind="nonprivate-reference",
        dataset_digest=ref.digest,
        inputs={"feature_bounds": [low.tolist(), high.tolist()], "classes": list(data.classes)},
        hyperparameters={
            "model": spec.model.model_dump(mode="json"),
            "seed": spec.training.seed,
            "epochs": spec.training.epochs,
        },
        code=code_version("privacy", "training", "models", libraries=("torch",)),
        noise_secret_identity=None,
    )
    path = out_dir / "reference_only_never_released.safetensors"

    def stored(entry: LedgerEntry) -> bool:
        return bool(entry.output) and Path(entry.output["weights_path"]).exists()

    with ledger.spend(
        computation,
        "non-private reference (NOT differentially private)",
        0.0,
        0.0,
        parameters={"released": False, "published": "aggregate metrics only", "dataset_digest": ref.digest},
        run_id=dagster_run_id,
        note="reference model for comparison only; never released; its aggregate metrics are not DP",
        stored=stored,
    ) as spend:
        model = load_weights(new_model(spec, data), Path(spend.output["weights_path"])) if spend.reused else None
        if model is None or weights_sha256(model) != spend.output["weights_sha256"]:
            model = train_nonprivate(spec, data, progress=progress)
            save_weights(model, path, {"released": "false", "purpose": "comparison only"})
            if not spend.reused:
                spend.complete(output={"weights_path": str(path), "weights_sha256": weights_sha256(model)})
    test = SplitMetrics.model_validate(
        evaluate_logits(predict_logits(model, data.x_test), data.y_test, len(data.classes))
    )
    run.set_tags({"edgeops.released": "false", "edgeops.role": "non-private reference, never released"})
    run.log_metrics({REFERENCE_TEST_ACCURACY: test.accuracy})
    return ReferenceRecord(
        weights_path=str(path),
        weights_sha256=weights_sha256(model),
        metrics=HeldOutTestMetrics(test=test),
        released=False,
        role="non-private reference (comparison only, never released)",
        mlflow_run_id=run.run_id,
    )
