"""The pipeline's federated training stage: charge the ledger for the planned client-level epsilon, run the rounds,
save and log the model like central training."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from edgeops.errors import PrivacyBudgetError
from edgeops.federated.strategy import epsilon_by_round, sampled_per_round, train_federated
from edgeops.files import TRAINED_ONNX_FILE, TRAINED_WEIGHTS_FILE
from edgeops.noise import NoiseSecrets
from edgeops.records import DpModel, FederatedPrivacy, FederatedSummary
from edgeops.spec import PipelineSpec

if TYPE_CHECKING:
    from edgeops.ledger import Computation, LedgerEntry, PrivacyLedger
    from edgeops.lineage import LineageRun
    from edgeops.records import DatasetRef


def computation(
    spec: PipelineSpec, digest: str, features: list[str], classes: list[int], noise_identity: str | None = None
) -> Computation:
    """What determines a DP-FedAvg run's output (the ledger's charge key): data, resolved bounds, model, every
    federated setting, the delta it is accounted at, the code (this package, the models, Flower's version) and the
    public identity of its noise secret (edgeops.noise; a fresh secret is a new charge)."""
    from edgeops.ledger import Computation, code_version
    from edgeops.scaling import feature_bounds

    bounds = [array.tolist() for array in feature_bounds(spec, features)] if features else None
    return Computation(
        kind="dp-fedavg",
        dataset_digest=digest,
        inputs={"feature_bounds": bounds, "classes": list(classes)},
        hyperparameters={
            "model": spec.model.model_dump(mode="json"),
            "federated": spec.training.federated.model_dump(mode="json"),
            "delta": spec.mechanism_delta,
        },
        code=code_version("federated", "models", "training", libraries=("flwr", "torch")),
        noise_secret_identity=noise_identity,
    )


def charge_key(
    spec: PipelineSpec, digest: str, features: list[str], classes: list[int], noise_identity: str | None = None
) -> str:
    return computation(spec, digest, features, classes, noise_identity).key()


def public_rounds(rounds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The round report without what each client's data decided: per-client update norms, clipped flags and outlier
    notes (un-noised) are dropped; who was sampled, who replied and why a reply was refused stay."""
    private = {"update_norm", "clipped", "outlier"}
    return [
        {**r, "clients": {p: {k: v for k, v in c.items() if k not in private} for p, c in r.get("clients", {}).items()}}
        for r in rounds
    ]


def run_federated_training(
    spec: PipelineSpec,
    ref: DatasetRef,
    ledger: PrivacyLedger,
    out_root: Path,
    run: LineageRun,
    *,
    dagster_run_id: str = "",
    progress: Callable[[str], None] = lambda _: None,
    home: Path | None = None,
) -> DpModel:
    """Stage: charge the ledger for the planned client-level epsilon, run the rounds, save and log like central
    training."""
    from edgeops.files import write_owner_only
    from edgeops.ledger import DRAW_SEPARATOR
    from edgeops.models import export_onnx, load_weights, save_weights, weights_sha256
    from edgeops.training.charged import noise_statement
    from edgeops.training.data import TrainingData, new_model
    from edgeops.training.stage import release_dp_model

    spec = ref.bounded(spec)
    fed = spec.training.federated
    delta = spec.mechanism_delta
    by_round = epsilon_by_round(fed, delta)
    if not by_round:
        raise PrivacyBudgetError(
            "training.federated.noise_multiplier is 0: a non-private federated model cannot be released from private "
            "data "
            "(set clipping_norm and noise_multiplier; benchmarks/federated.py runs the non-private comparison)"
        )
    parameters = {
        "noise_multiplier": fed.noise_multiplier,
        "sample_rate": 1.0,
        "steps": fed.rounds,
        "delta": delta,
        "accountant": "flower-rdp",
        "clipping_norm": fed.clipping_norm,
        "clients": fed.clients,
        "sampled_per_round": sampled_per_round(fed),
        "unit": "client",
        "secure_aggregation": fed.secure_aggregation,
    }
    planned = by_round[-1]
    features, classes = ref.features, spec.dataset.classes
    secret_name = charge_key(spec, ref.digest, features, classes)  # the computation without its secret

    def workdir_of(key: str) -> Path:  # one folder per charge
        return out_root / key.split(":")[1].replace(DRAW_SEPARATOR, "-draw")[:24]

    def files_of(key: str) -> list[Path]:
        names = (TRAINED_WEIGHTS_FILE, TRAINED_ONNX_FILE, "rounds.json", "result.json")
        return [workdir_of(key) / name for name in names]

    store = NoiseSecrets(home)
    identity = store.finished_identity(secret_name)
    stored = None
    if (
        identity
    ):  # this computation completed before: its stored output, charged once, is reused (never redrawn uncharged)
        draws = ledger.draws(charge_key(spec, ref.digest, features, classes, identity))
        entry = draws[-1] if draws else None
        if entry is not None and entry.status == "completed" and all(f.exists() for f in files_of(entry.charge_key)):
            workdir = workdir_of(entry.charge_key)
            stored = json.loads((workdir / "result.json").read_text())
            progress(
                f"ledger: this computation completed before as entry {entry.id}: its model is reused (no data read, "
                "no new charge)"
            )
    if stored is None:
        noise = store.open(secret_name, progress)
        with ledger.spend(
            computation(spec, ref.digest, features, classes, noise.identity),
            "dp-fedavg (flower)",
            planned,
            delta,
            parameters={
                **parameters,
                "noise_identity": noise.identity,
                "noise": {k: v for k, v in noise.record().items() if k != "identity"},
            },
            run_id=dagster_run_id,
            note="client-level DP federated training of the released model",
            stored=lambda entry: all(f.exists() for f in files_of(entry.charge_key)),
        ) as spend:
            entry = spend.entry
            workdir = workdir_of(entry.charge_key)
            if spend.reused:  # only the test switch repeats a secret
                stored = json.loads((workdir / "result.json").read_text())
            else:
                progress(f"ledger: charged epsilon {planned:.3f} (client level), delta {delta:g} as entry {entry.id}")
                data = TrainingData.from_ref(ref, spec)  # read only once charged
                result = train_federated(spec, data, progress=progress, noise=noise)
                workdir.mkdir(parents=True, exist_ok=True)
                model = result["model"]
                save_weights(
                    model, workdir / TRAINED_WEIGHTS_FILE, {"pipeline": spec.name, "charge_key": entry.charge_key}
                )
                export_onnx(model, len(data.features), workdir / TRAINED_ONNX_FILE)
                for report, spent in zip(result["rounds"], by_round, strict=False):
                    report["epsilon_spent"] = spent
                # the full report (each client's update norm, clipped or not, outlier flags): owner-only, never in
                # MLflow
                write_owner_only(
                    workdir / "rounds.json",
                    json.dumps(
                        {
                            "rounds": result["rounds"],
                            "history": result["history"],
                            "partition_sizes": result["partition_sizes"],
                        },
                        default=str,
                    ),
                )
                stored = {
                    "epsilon": result["epsilon"],
                    "seconds": result["seconds"],
                    "noise": result["noise"],
                    "partition_sizes": result["partition_sizes"],
                    "history": result["history"],
                    "rounds": public_rounds(result["rounds"]),
                }
                (workdir / "result.json").write_text(json.dumps(stored, default=str))
                entry = spend.complete(
                    output={
                        "weights_sha256": weights_sha256(model),
                        "epsilon": result["epsilon"],
                        "seconds": result["seconds"],
                    },
                    parameters={"epsilon_accountant": result["epsilon"]},
                    epsilon=result["epsilon"],
                )
        if not spend.reused:
            store.finish(secret_name, noise)
    data = TrainingData.from_ref(ref, spec)
    model = load_weights(new_model(spec, data), workdir / TRAINED_WEIGHTS_FILE)
    result = {**stored, "model": model}
    privacy = {
        **parameters,
        "epsilon": result["epsilon"],
        "claimed_epsilon": result["epsilon"],
        "target_epsilon": planned,
        "ledger_entry": cast("LedgerEntry", entry).id,
        "unit": "client (all of one client's rows)",
        "sampling": "uniform without replacement, not amplified",
        "noise_identity": cast("LedgerEntry", entry).parameters.get("noise_identity", ""),
        "noise": noise_statement(result.get("noise")),
        "clipping": (
            "client-side fixed clipping of each update (SecAgg+: the server sees only the sum)"
            if fed.secure_aggregation
            else "server-side fixed clipping of each client's update"
        ),
    }
    run.log_params(
        {f"dp.{k}": v for k, v in privacy.items()}
        | {"training.mode": "federated", "federated.strategy": fed.strategy, "federated.alpha": fed.alpha}
    )
    run.log_metric_series(
        {
            "federated/validation_accuracy": [h["validation_accuracy"] for h in result["history"][1:]],
            "federated/epsilon_spent": [r["epsilon_spent"] for r in result["rounds"]],
            "federated/usable_clients": [r["usable"] for r in result["rounds"]],
        }
    )
    return release_dp_model(
        run,
        model,
        data,
        ref,
        workdir=workdir,
        privacy=FederatedPrivacy.model_validate(privacy),
        training_seconds=result["seconds"],
        tags={"training.mode": "federated"},
        training_mode="federated",
        federated=FederatedSummary(
            rounds=len(result["rounds"]), clients=fed.clients, partition_sizes=result["partition_sizes"]
        ),
    )
