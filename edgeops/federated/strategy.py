"""The round loop: FedAvg / FedProx under Flower's server-side DP wrapper (DP-FedAvg), or FedAvg under the SecAgg+
workflow with client-side clipping; the client-level privacy accounting and the secret noise Flower draws from."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeops.errors import FederatedError
from edgeops.federated.partitioning import dirichlet_partition
from edgeops.federated.transport import (
    ClientBehaviour,
    LocalTrainer,
    LoopbackGrid,
    make_client_app,
    make_secure_client_app,
    model_state,
    set_model_state,
    to_arrays,
)
from edgeops.noise import NoiseSource, NoiseStream
from edgeops.progress import advance
from edgeops.spec import FederatedSpec, PipelineSpec

if TYPE_CHECKING:
    import torch
    from flwr.app import ArrayRecord
    from flwr.common import NDArrays, Scalar
    from flwr.supercore.privacy_accounting.rdp_accountant import RdpAccountant

    from edgeops.training.data import TrainingData


# ---------------------------------------------------------------- privacy
def _accountant(fed: FederatedSpec, delta: float) -> RdpAccountant:
    from flwr.supercore.privacy_accounting import NeighboringRelation, PrivacyConfig, SamplingMethod
    from flwr.supercore.privacy_accounting.rdp_accountant import RdpAccountant

    return RdpAccountant(
        PrivacyConfig(
            target_delta=delta,
            population_size=fed.clients,
            neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
            sampling_method=SamplingMethod.NO_AMPLIFICATION,
        )
    )


def sampled_per_round(fed: FederatedSpec) -> int:
    return max(int(fed.clients * fed.fraction), fed.min_clients)  # what Flower's FedAvg samples


def epsilon_by_round(fed: FederatedSpec, delta: float) -> list[float]:
    """Client-level epsilon after each declared round, known before the first one starts (Flower's RDP accountant,
    one Gaussian release per round). Empty when the run is not private."""
    from flwr.supercore.privacy_accounting import GaussianPrivacyEvent

    if fed.noise_multiplier <= 0:
        return []
    accountant = _accountant(fed, delta)
    event = GaussianPrivacyEvent(
        noise_multiplier=fed.noise_multiplier, sample_size=sampled_per_round(fed), population_size=fed.clients
    )
    spent = []
    for _ in range(fed.rounds):
        accountant.compose(event)
        spent.append(float(accountant.get_epsilon(delta)))
    return spent


def planned_epsilon(fed: FederatedSpec, delta: float) -> float:
    """Client-level epsilon of the whole run (inf when not private)."""
    spent = epsilon_by_round(fed, delta)
    return spent[-1] if spent else float("inf")


@contextmanager
def secret_flower_noise(stream: NoiseStream) -> Iterator[None]:
    """Flower's DP wrappers add noise with `add_gaussian_noise_inplace` (np.random.normal, a seeded global generator):
    inside this block they draw from the secret stream instead (the hardened Gaussian of edgeops.noise)."""
    import flwr.serverapp.strategy.dp_fixed_clipping as message_api
    import flwr.supercore.differential_privacy as core

    def add_gaussian_noise_inplace(input_arrays: NDArrays, std_dev: float) -> None:
        for array in input_arrays:
            array += stream.gaussian(std_dev, array.shape, array.dtype)

    saved = core.add_gaussian_noise_inplace, message_api.add_gaussian_noise_inplace  # type: ignore[attr-defined]  # Flower imports it there, unexported
    core.add_gaussian_noise_inplace = message_api.add_gaussian_noise_inplace = (  # type: ignore[attr-defined]
        add_gaussian_noise_inplace  # (Flower imports it there, unexported)
    )
    try:
        yield
    finally:
        core.add_gaussian_noise_inplace, message_api.add_gaussian_noise_inplace = saved  # type: ignore[attr-defined]  # Flower imports it there, unexported


# ---------------------------------------------------------------- the run
def train_federated(
    spec: PipelineSpec,
    data: TrainingData,
    behaviours: dict[int, ClientBehaviour] | None = None,
    progress: Callable[[str], object] = lambda _: None,
    noise: NoiseSource | None = None,
) -> dict[str, Any]:
    """Run the declared rounds on simulated clients (the training split partitioned by Dirichlet label skew). Returns
    the trained model, the per-round report and, when private, the accountant's epsilon. `noise`: the secret (None:
    a fresh one); the DP noise comes only from it."""
    noise = noise if noise is not None else NoiseSource.fresh()
    with secret_flower_noise(noise.stream("dp-fedavg gaussian noise")):
        result = _train_federated(spec, data, behaviours, progress)
    return {**result, "noise": noise.record()}


def _train_federated(
    spec: PipelineSpec,
    data: TrainingData,
    behaviours: dict[int, ClientBehaviour] | None,
    progress: Callable[[str], object],
) -> dict[str, Any]:
    import logging

    import torch
    from flwr.app import ConfigRecord, MetricRecord
    from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping, FedAvg, FedProx, Strategy

    from edgeops.training.data import new_model
    from edgeops.training.evaluation import evaluate_logits, predict_logits

    logging.getLogger("flwr").setLevel(logging.ERROR)  # Flower logs every round at INFO; the round report replaces it
    fed = spec.training.federated
    random.seed(fed.seed)  # Flower samples clients with `random` (public: no amplification is claimed from it)
    np.random.seed(fed.seed)  # numpy's global generator: no longer the DP noise (secret_flower_noise replaces it)
    torch.manual_seed(fed.seed)
    parts = dirichlet_partition(data.y_train, fed.clients, fed.alpha, fed.seed)
    partitions = {i: (data.x_train[rows], data.y_train[rows]) for i, rows in enumerate(parts)}
    trainer = LocalTrainer(spec, partitions, data.features, len(data.classes))
    from flwr.supercore.task_identity import TaskIdentity

    # Flower stamps messages with the identity of the process's task, which its own runtime sets; this process is
    # the server of run 1 (node 0).
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    if fed.secure_aggregation:
        model, rounds, history, seconds = _train_secure(spec, data, trainer, behaviours or {}, progress)
        return {
            "model": model.eval(),
            "rounds": rounds,
            "history": history,
            "seconds": seconds,
            "epsilon": planned_epsilon(fed, spec.mechanism_delta) if fed.noise_multiplier > 0 else None,
            "partition_sizes": [len(p) for p in parts],
            "secure_aggregation": True,
        }
    private = fed.noise_multiplier > 0
    common: dict[str, Any] = {
        "fraction_train": fed.fraction,
        "fraction_evaluate": 0.0,
        "min_train_nodes": fed.min_clients,
        "min_available_nodes": fed.min_clients,
        "weighted_by_key": "uniform-weight" if private or fed.clipping_norm else "num-examples",
    }
    strategy: Strategy = (
        FedProx(proximal_mu=fed.proximal_mu, **common) if fed.strategy == "fedprox" else FedAvg(**common)
    )
    accountant = None
    if fed.clipping_norm:
        accountant = _accountant(fed, spec.mechanism_delta) if private else None
        strategy = DifferentialPrivacyServerSideFixedClipping(
            strategy,
            noise_multiplier=fed.noise_multiplier,
            clipping_norm=fed.clipping_norm,
            num_sampled_clients=sampled_per_round(fed),
            accountant=accountant,
        )
    grid = LoopbackGrid(
        make_client_app(trainer),
        partitions=fed.clients,
        behaviours=behaviours or {},
        max_update_bytes=int(fed.max_update_mb * 2**20),
        min_clients=fed.min_clients,
        clipping_norm=fed.clipping_norm,
    )
    model = new_model(spec, data)
    history = []

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        set_model_state(model, arrays.to_numpy_ndarrays())
        accuracy = evaluate_logits(predict_logits(model, data.x_val), data.y_val, len(data.classes))["accuracy"]
        history.append({"round": server_round, "validation_accuracy": accuracy})
        if server_round:
            progress(f"round {server_round}/{fed.rounds}: validation accuracy {accuracy:.3f}")
            advance("federated rounds", server_round, fed.rounds, f"val_acc {accuracy:.3f}")
        return MetricRecord({"validation-accuracy": accuracy})

    started = time.perf_counter()
    result = strategy.start(
        grid,
        to_arrays(model),
        num_rounds=fed.rounds,
        train_config=ConfigRecord({"seed": fed.seed, "proximal-mu": fed.proximal_mu}),
        evaluate_fn=evaluate,
    )
    set_model_state(model, result.arrays.to_numpy_ndarrays())
    for report, point in zip(grid.rounds, history[1:], strict=False):
        report["validation_accuracy"] = point["validation_accuracy"]
    epsilon = float(accountant.get_epsilon(spec.mechanism_delta)) if accountant else None
    return {
        "model": model.eval(),
        "rounds": grid.rounds,
        "history": history,
        "seconds": time.perf_counter() - started,
        "epsilon": epsilon,
        "partition_sizes": [len(p) for p in parts],
        "secure_aggregation": False,
    }


def _train_secure(
    spec: PipelineSpec,
    data: TrainingData,
    trainer: LocalTrainer,
    behaviours: dict[int, ClientBehaviour],
    progress: Callable[[str], object],
) -> tuple[torch.nn.Module, list[dict[str, Any]], list[dict[str, Any]], float]:
    """FedAvg under Flower's SecAgg+ workflow (its legacy-strategy API: the only one SecAgg+ runs in). With DP, the
    clients clip their own updates (fixedclipping_mod) and the server adds the noise to the unmasked sum."""
    from flwr.app import Context, RecordDict
    from flwr.common import ndarrays_to_parameters
    from flwr.server import LegacyContext, ServerConfig
    from flwr.server.strategy import DifferentialPrivacyClientSideFixedClipping
    from flwr.server.strategy import FedAvg as LegacyFedAvg
    from flwr.server.strategy import Strategy as LegacyStrategy
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow

    from edgeops.training.data import new_model
    from edgeops.training.evaluation import evaluate_logits, predict_logits

    fed = spec.training.federated
    model = new_model(spec, data)
    history: list[dict[str, Any]] = []

    def evaluate(
        server_round: int, arrays: list[np.ndarray], config: dict[str, Scalar]
    ) -> tuple[float, dict[str, Scalar]]:
        set_model_state(model, arrays)
        accuracy = evaluate_logits(predict_logits(model, data.x_val), data.y_val, len(data.classes))["accuracy"]
        history.append({"round": server_round, "validation_accuracy": accuracy})
        if server_round:
            progress(f"round {server_round}/{fed.rounds} (secure aggregation): validation accuracy {accuracy:.3f}")
            advance("federated rounds (SecAgg+)", server_round, fed.rounds, f"val_acc {accuracy:.3f}")
        return 0.0, {"validation-accuracy": accuracy}

    initial = model_state(model)
    strategy: LegacyStrategy = LegacyFedAvg(
        fraction_fit=fed.fraction,
        fraction_evaluate=0.0,
        min_fit_clients=fed.min_clients,
        min_available_clients=fed.min_clients,
        initial_parameters=ndarrays_to_parameters(initial),
        evaluate_fn=evaluate,
        on_fit_config_fn=lambda server_round: {"server-round": server_round},
    )
    if fed.clipping_norm:
        strategy = DifferentialPrivacyClientSideFixedClipping(
            strategy, fed.noise_multiplier, fed.clipping_norm, sampled_per_round(fed)
        )
    client_app = make_secure_client_app(
        trainer, clip_on_client=bool(fed.clipping_norm), uniform_weights=bool(fed.clipping_norm)
    )
    grid = LoopbackGrid(
        client_app,
        partitions=fed.clients,
        behaviours=behaviours,
        max_update_bytes=int(fed.max_update_mb * 2**20),
        min_clients=fed.min_clients,
        clipping_norm=fed.clipping_norm,
        inspect_updates=False,
    )
    context = LegacyContext(
        context=Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={}),
        config=ServerConfig(num_rounds=fed.rounds),
        strategy=strategy,
    )
    started = time.perf_counter()
    workflow = SecAggPlusWorkflow(
        num_shares=max(3, min(fed.clients, fed.reconstruction_threshold + 1)),
        reconstruction_threshold=fed.reconstruction_threshold,
    )
    DefaultWorkflow(fit_workflow=workflow)(grid, context)
    set_model_state(model, context.state.array_records["parameters"].to_numpy_ndarrays())
    rounds = []
    for number in range(1, fed.rounds + 1):
        stages = [e for e in grid.exchanges if e["round"] == number]
        masked = next((e for e in stages if e["stage"] == "collect_masked_vectors"), None)
        if masked is None:
            raise FederatedError(
                f"round {number}: the SecAgg+ protocol stopped before collecting masked updates "
                f"(stages reached: {[e['stage'] for e in stages]}); too few clients survived"
            )
        rounds.append(
            {
                "round": number,
                "sampled": masked["sampled"],
                "usable": masked["usable"],
                "secure_aggregation": True,
                "clients": {
                    p: c if c["status"] != "ok" else {"status": "masked update (not visible to the server)"}
                    for p, c in masked["clients"].items()
                },
                "stages": {e["stage"]: e["usable"] for e in stages},
                "validation_accuracy": next((h["validation_accuracy"] for h in history if h["round"] == number), None),
            }
        )
        if masked["usable"] < fed.min_clients:
            raise FederatedError(
                f"round {number}: only {masked['usable']} clients sent masked updates; the declaration needs "
                f"{fed.min_clients}"
            )
    return model, rounds, history, time.perf_counter() - started
