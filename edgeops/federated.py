"""Federated training with Flower: FedAvg / FedProx rounds, client-level DP (DP-FedAvg), on the privacy ledger.

What comes from Flower (flwr 1.41, Message API): the ClientApp that trains on a client's partition, the server
strategies (FedAvg, FedProx), the DP wrapper that clips each client's update and adds Gaussian noise to the aggregate
(`DifferentialPrivacyServerSideFixedClipping`), its privacy accountant, and the round loop (`Strategy.start`).
What is ours: `LoopbackGrid`, the transport. It hands each message to the client's ClientApp in this process (the
simulated clients of the embedded default and the tests), checks every reply before the strategy sees it (shape,
dtype, finite values, size), and keeps a per-round report (who replied, update norms, who was clipped or rejected).
Flower's own Ray simulation engine and SuperLink deployment are not used: both need services or packages that the
embedded default must not require.

Privacy: with noise, each round is one Gaussian release of the average of the sampled clients' clipped updates
(noise std = z * C / sampled clients). The accountant composes the rounds without sampling amplification (Flower's
accounted mode), the ledger is charged before the first round, and dp-accounting's PLD accountant re-derives the
claim independently. With `secure_aggregation`, Flower's SecAgg+ workflow (legacy-strategy API, the one it runs in)
masks the updates: clipping moves to the clients (fixedclipping_mod) and the server adds noise to the unmasked sum.
"""

from __future__ import annotations

import copy
import hashlib
import json
import random
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from flwr.serverapp import Grid

from edgeops.errors import EdgeopsError, PrivacyBudgetError
from edgeops.progress import advance
from edgeops.spec import FederatedSpec, PipelineSpec


class FederatedError(EdgeopsError):
    pass


# ---------------------------------------------------------------- partitions
def dirichlet_partition(labels: np.ndarray, clients: int, alpha: float, seed: int, min_size: int = 2) -> list[np.ndarray]:
    """Non-IID label skew: each class is split among clients by Dirichlet(alpha) proportions. Redrawn (seeded) until
    every client holds at least `min_size` rows."""
    rng = np.random.default_rng(seed)
    for _ in range(100):
        parts: list[list[int]] = [[] for _ in range(clients)]
        for cls in np.unique(labels):
            rows = rng.permutation(np.flatnonzero(labels == cls))
            cuts = (np.cumsum(rng.dirichlet(np.full(clients, alpha))) * len(rows)).astype(int)[:-1]
            for client, chunk in enumerate(np.split(rows, cuts)):
                parts[client].extend(chunk.tolist())
        if min(len(p) for p in parts) >= min_size:
            return [np.sort(np.array(p, dtype=np.int64)) for p in parts]
    raise FederatedError(f"could not give each of {clients} clients {min_size} rows with alpha {alpha} ({len(labels)} rows)")


# ---------------------------------------------------------------- model <-> Flower records
def model_state(model) -> list[np.ndarray]:
    """The model's state_dict as numpy arrays, in state_dict order (what travels between server and clients)."""
    return [tensor.detach().cpu().numpy().copy() for tensor in model.state_dict().values()]


def set_model_state(model, arrays: list[np.ndarray]) -> None:
    import torch

    model.load_state_dict({name: torch.from_numpy(np.array(array)) for name, array in zip(model.state_dict(), arrays)})


def to_arrays(model):
    from flwr.app import Array, ArrayRecord

    return ArrayRecord({name: Array(array) for name, array in zip(model.state_dict(), model_state(model))})


# ---------------------------------------------------------------- clients
@dataclass
class ClientBehaviour:
    """Simulated misbehaviour, for tests and benchmarks: drop out in some rounds, scale the update, send garbage."""

    disconnect_rounds: set[int] = field(default_factory=set)
    scale_update: float = 1.0
    malformed: bool = False
    oversized_mb: float = 0.0


class LocalTrainer:
    """What every client does with the global model: local epochs of SGD on its own partition (FedProx term when
    configured). Shared by the Message-API ClientApp and the SecAgg+ client."""

    def __init__(self, spec: PipelineSpec, partitions: dict[int, tuple[np.ndarray, np.ndarray]], feature_names: list[str], classes: int):
        from edgeops.validation import feature_bounds

        self.spec, self.fed, self.partitions = spec, spec.training.federated, partitions
        self.feature_names, self.classes = feature_names, classes
        self.low, self.high = feature_bounds(spec, feature_names)

    def fresh_model(self):
        from edgeops.models import build_model

        return build_model(self.spec.model, len(self.feature_names), self.classes, self.spec.dataset.image_shape, self.low, self.high)

    def train(self, partition: int, state: list[np.ndarray], server_round: int, mu: float) -> tuple[list[np.ndarray], int, float]:
        import torch

        torch.set_num_threads(1)
        x, y = self.partitions[partition]
        model = self.fresh_model()
        set_model_state(model, state)
        global_params = [p.detach().clone() for p in model.parameters()]
        generator = torch.Generator().manual_seed(self.fed.seed * 100_003 + server_round * 1009 + partition)
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y)),
                                             batch_size=self.fed.local_batch_size, shuffle=True, generator=generator)
        optimizer = torch.optim.SGD(model.parameters(), lr=self.fed.learning_rate, momentum=self.fed.momentum)
        criterion = torch.nn.CrossEntropyLoss()
        model.train()
        losses = []
        for _ in range(self.fed.local_epochs):
            for batch_x, batch_y in loader:
                optimizer.zero_grad()
                loss = criterion(model(batch_x), batch_y)
                if mu > 0:
                    loss = loss + mu / 2 * sum(((p - g) ** 2).sum() for p, g in zip(model.parameters(), global_params))
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
        return model_state(model), len(x), float(np.mean(losses))


def make_client_app(trainer: LocalTrainer):
    """A Flower ClientApp (Message API) around the local trainer."""
    from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp

    app = ClientApp()

    @app.train()
    def train(msg: Message, context) -> Message:
        config, received = msg.content["config"], msg.content["arrays"]
        state, examples, loss = trainer.train(int(context.node_config["partition-id"]), received.to_numpy_ndarrays(),
                                              int(config["server-round"]), float(config.get("proximal-mu", 0.0)))
        arrays = ArrayRecord({name: Array(value) for name, value in zip(received.keys(), state)})
        metrics = MetricRecord({"num-examples": examples, "uniform-weight": 1, "train-loss": loss})
        return Message(RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=msg)

    return app


def make_secure_client_app(trainer: LocalTrainer, clip_on_client: bool, uniform_weights: bool):
    """A Flower ClientApp for the SecAgg+ workflow: the update is clipped on the client (fixedclipping_mod, when DP)
    and masked (secaggplus_mod) before it leaves; the server only ever sees the unmasked sum."""
    from flwr.client import NumPyClient
    from flwr.client.mod import fixedclipping_mod, secaggplus_mod
    from flwr.clientapp import ClientApp

    class SecureClient(NumPyClient):
        def __init__(self, partition: int):
            self.partition = partition

        def fit(self, parameters, config):
            state, examples, loss = trainer.train(self.partition, parameters, int(config.get("server-round", 0)), 0.0)
            return state, 1 if uniform_weights else examples, {"train-loss": loss}

    def client_fn(context):
        return SecureClient(int(context.node_config["partition-id"])).to_client()

    # fixedclipping_mod must be the last to touch the parameters (innermost), before secaggplus_mod masks them.
    return ClientApp(client_fn=client_fn, mods=[secaggplus_mod, *([fixedclipping_mod] if clip_on_client else [])])


# ---------------------------------------------------------------- transport
class LoopbackGrid(Grid):
    """A Flower Grid whose nodes are ClientApps in this process (see the module docstring)."""

    def __init__(self, client_app, partitions: int, behaviours: dict[int, ClientBehaviour], max_update_bytes: int, min_clients: int,
                 clipping_norm: float | None, inspect_updates: bool = True):
        """`inspect_updates` False: transport only (SecAgg+: the server must not and cannot look at one client's update)."""
        from flwr.app import Context, RecordDict
        from flwr.supercore.run import Run

        self.client_app, self.behaviours = client_app, behaviours
        self.max_update_bytes, self.min_clients, self.clipping_norm = max_update_bytes, min_clients, clipping_norm
        self.inspect_updates = inspect_updates
        self.contexts = {node: Context(run_id=1, node_id=node, node_config={"partition-id": node - 1}, state=RecordDict(), run_config={})
                         for node in range(1, partitions + 1)}
        self.rounds: list[dict] = []
        self.exchanges: list[dict] = []  # secure mode: one entry per protocol stage
        self._run = Run.create_empty(1)

    # Grid's abstract interface
    def set_run(self, run) -> None:
        self._run = run

    @property
    def run(self):
        return self._run

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):
        from flwr.app import Message

        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self):
        return list(self.contexts)

    def push_messages(self, messages):
        raise NotImplementedError("LoopbackGrid delivers in send_and_receive")

    def pull_messages(self, message_ids):
        raise NotImplementedError("LoopbackGrid delivers in send_and_receive")

    def send_and_receive(self, messages, *, timeout=None):
        from flwr.app import Error, Message

        messages = list(messages)
        if not messages:
            return []
        content = messages[0].content
        server_round = int(content["config"]["server-round"]) if "config" in content.config_records else int(messages[0].metadata.group_id or 0)
        is_train = messages[0].metadata.message_type.startswith("train") and self.inspect_updates
        stage = content.config_records["secaggplus_configs"].get("stage") if "secaggplus_configs" in content.config_records else None
        # Under SecAgg+ a client drops out after the key exchange (the dropout the protocol is built to survive; one that
        # never answers the setup stage makes Flower 1.41's unmask stage fail on its clients with a KeyError).
        dropout_stage = stage is None or stage in {"collect_masked_vectors", "unmask"}
        replies, report = [], {"round": server_round, "sampled": len(messages), "clients": {}}
        for message in messages:
            node = message.metadata.dst_node_id
            partition = node - 1
            behaviour = self.behaviours.get(partition, ClientBehaviour())
            message.metadata.__dict__["_message_id"] = str(uuid.uuid4())
            message.metadata.__dict__["_src_node_id"] = 0
            if server_round in behaviour.disconnect_rounds and dropout_stage:
                report["clients"][partition] = {"status": "disconnected"}
                continue
            started = time.perf_counter()
            try:
                # Each client gets its own copy, as over a network: messages of one stage may share content objects.
                reply = self.client_app(copy.deepcopy(message), self.contexts[node])
            except Exception as err:  # a crashing client is one failed reply, not a failed round
                reply = Message(Error(code=1, reason=f"client error: {type(err).__name__}: {err}"[:300]), reply_to=message)
            entry = {"status": "ok", "seconds": round(time.perf_counter() - started, 3)}
            if is_train and not reply.has_error():
                reply = self._misbehave(reply, message, behaviour)
                problem, norm = self._inspect(reply, message)
                if problem:
                    entry = {"status": "rejected", "reason": problem}
                    reply = Message(Error(code=2, reason=problem), reply_to=message)
                else:
                    entry.update(update_norm=round(norm, 4), clipped=bool(self.clipping_norm and norm > self.clipping_norm))
            elif reply.has_error():
                entry = {"status": "error", "reason": reply.error.reason}
            report["clients"][partition] = entry
            reply.metadata.__dict__["_src_node_id"] = node
            replies.append(reply)
        usable = sum(1 for r in replies if not r.has_error())
        report["usable"] = usable
        if not self.inspect_updates:
            self.exchanges.append({**report, "stage": stage or messages[0].metadata.message_type})
            return replies
        if is_train:
            norms = [c["update_norm"] for c in report["clients"].values() if "update_norm" in c]
            if norms:
                median = float(np.median(norms))
                for c in report["clients"].values():
                    if "update_norm" in c and c["update_norm"] > 3 * max(median, 1e-12):
                        c["outlier"] = f"update norm {c['update_norm']:.3g} > 3x the round median {median:.3g}"
            self.rounds.append(report)
            if usable < self.min_clients:
                raise FederatedError(f"round {server_round}: only {usable} usable client updates of {len(messages)} sampled; "
                                     f"the declaration needs at least {self.min_clients}: " + json.dumps(report["clients"], default=str)[:1500])
        return replies

    # -------------------------------------------------------------- reply checks
    @staticmethod
    def _misbehave(reply, message, behaviour: ClientBehaviour):
        from flwr.app import Array, ArrayRecord

        if behaviour.scale_update == 1.0 and not behaviour.malformed and not behaviour.oversized_mb:
            return reply
        sent = message.content["arrays"].to_numpy_ndarrays()
        record = reply.content["arrays"]
        names, arrays = list(record.keys()), record.to_numpy_ndarrays()
        if behaviour.scale_update != 1.0:
            arrays = [g + behaviour.scale_update * (a - g) for a, g in zip(arrays, sent)]
        if behaviour.malformed:
            arrays[0] = np.full((3, 3), np.nan, dtype=np.float32)
        if behaviour.oversized_mb:
            names.append("padding")
            arrays.append(np.zeros(int(behaviour.oversized_mb * 2**20 / 4), dtype=np.float32))
        reply.content["arrays"] = ArrayRecord({n: Array(np.asarray(a)) for n, a in zip(names, arrays)})
        return reply

    def _inspect(self, reply, message) -> tuple[str | None, float | None]:
        """(why the update is rejected, or None; its L2 distance from the global model when accepted)."""
        if "arrays" not in reply.content.array_records:
            return "no model update in the reply", None
        sent, got = message.content["arrays"], reply.content["arrays"]
        sent_arrays, got_arrays = sent.to_numpy_ndarrays(), got.to_numpy_ndarrays()
        size = sum(a.nbytes for a in got_arrays)
        if size > self.max_update_bytes:
            return f"update of {size} bytes exceeds the {self.max_update_bytes}-byte limit", None
        if list(got.keys()) != list(sent.keys()):
            return f"update names {sorted(set(got.keys()) ^ set(sent.keys()))[:5]} differ from the global model's", None
        for name, a, g in zip(got.keys(), got_arrays, sent_arrays):
            if a.shape != g.shape or a.dtype != g.dtype:
                return f"{name}: shape {a.shape} {a.dtype}, the global model has {g.shape} {g.dtype}", None
            if not np.isfinite(a).all():
                return f"{name}: non-finite values", None
        return None, float(np.sqrt(sum(float(((a.astype(np.float64) - g) ** 2).sum()) for a, g in zip(got_arrays, sent_arrays))))


# ---------------------------------------------------------------- privacy
def _accountant(fed: FederatedSpec, delta: float):
    from flwr.supercore.privacy_accounting import NeighboringRelation, PrivacyConfig, SamplingMethod
    from flwr.supercore.privacy_accounting.rdp_accountant import RdpAccountant

    return RdpAccountant(PrivacyConfig(target_delta=delta, population_size=fed.clients,
                                       neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
                                       sampling_method=SamplingMethod.NO_AMPLIFICATION))


def sampled_per_round(fed: FederatedSpec) -> int:
    return max(int(fed.clients * fed.fraction), fed.min_clients)  # what Flower's FedAvg samples


def epsilon_by_round(fed: FederatedSpec, delta: float) -> list[float]:
    """Client-level epsilon after each declared round, known before the first one starts (Flower's RDP accountant,
    one Gaussian release per round). Empty when the run is not private."""
    from flwr.supercore.privacy_accounting import GaussianPrivacyEvent

    if fed.noise_multiplier <= 0:
        return []
    accountant = _accountant(fed, delta)
    event = GaussianPrivacyEvent(noise_multiplier=fed.noise_multiplier, sample_size=sampled_per_round(fed), population_size=fed.clients)
    spent = []
    for _ in range(fed.rounds):
        accountant.compose(event)
        spent.append(float(accountant.get_epsilon(delta)))
    return spent


def planned_epsilon(fed: FederatedSpec, delta: float) -> float:
    """Client-level epsilon of the whole run (inf when not private)."""
    spent = epsilon_by_round(fed, delta)
    return spent[-1] if spent else float("inf")


def charge_key(spec: PipelineSpec, digest: str) -> str:
    canonical = json.dumps({"dataset": digest, "model": spec.model.model_dump(mode="json"),
                            "federated": spec.training.federated.model_dump(mode="json")}, sort_keys=True)
    return "dp-fedavg:" + hashlib.sha256(canonical.encode()).hexdigest()


# ---------------------------------------------------------------- the run
def train_federated(spec: PipelineSpec, data, behaviours: dict[int, ClientBehaviour] | None = None, progress=lambda _: None) -> dict:
    """Run the declared rounds on simulated clients (the training split partitioned by Dirichlet label skew). Returns
    the trained model, the per-round report and, when private, the accountant's epsilon."""
    import torch
    from flwr.app import ConfigRecord, MetricRecord
    from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping, FedAvg, FedProx

    from edgeops.training import evaluate_logits, new_model, predict_logits

    import logging

    logging.getLogger("flwr").setLevel(logging.ERROR)  # Flower logs every round at INFO; the round report replaces it
    fed = spec.training.federated
    random.seed(fed.seed)  # Flower samples clients with `random`
    np.random.seed(fed.seed)  # and draws the DP noise with numpy's global generator
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
        return {"model": model.eval(), "rounds": rounds, "history": history, "seconds": seconds,
                "epsilon": planned_epsilon(fed, spec.privacy.delta) if fed.noise_multiplier > 0 else None,
                "partition_sizes": [len(p) for p in parts], "secure_aggregation": True}
    private = fed.noise_multiplier > 0
    common = {"fraction_train": fed.fraction, "fraction_evaluate": 0.0, "min_train_nodes": fed.min_clients,
              "min_available_nodes": fed.min_clients, "weighted_by_key": "uniform-weight" if private or fed.clipping_norm else "num-examples"}
    strategy = FedProx(proximal_mu=fed.proximal_mu, **common) if fed.strategy == "fedprox" else FedAvg(**common)
    accountant = None
    if fed.clipping_norm:
        accountant = _accountant(fed, spec.privacy.delta) if private else None
        strategy = DifferentialPrivacyServerSideFixedClipping(strategy, noise_multiplier=fed.noise_multiplier, clipping_norm=fed.clipping_norm,
                                                              num_sampled_clients=sampled_per_round(fed), accountant=accountant)
    grid = LoopbackGrid(make_client_app(trainer), fed.clients, behaviours or {}, int(fed.max_update_mb * 2**20), fed.min_clients, fed.clipping_norm)
    model = new_model(spec, data)
    history: list[dict] = []

    def evaluate(server_round: int, arrays) -> MetricRecord:
        set_model_state(model, arrays.to_numpy_ndarrays())
        accuracy = evaluate_logits(predict_logits(model, data.x_val), data.y_val, len(data.classes))["accuracy"]
        history.append({"round": server_round, "validation_accuracy": accuracy})
        if server_round:
            progress(f"round {server_round}/{fed.rounds}: validation accuracy {accuracy:.3f}")
            advance("federated rounds", server_round, fed.rounds, f"val_acc {accuracy:.3f}")
        return MetricRecord({"validation-accuracy": accuracy})

    started = time.perf_counter()
    result = strategy.start(grid, to_arrays(model), num_rounds=fed.rounds, train_config=ConfigRecord({"seed": fed.seed, "proximal-mu": fed.proximal_mu}),
                            evaluate_fn=evaluate)
    set_model_state(model, result.arrays.to_numpy_ndarrays())
    for report, point in zip(grid.rounds, history[1:]):
        report["validation_accuracy"] = point["validation_accuracy"]
    epsilon = float(accountant.get_epsilon(spec.privacy.delta)) if accountant else None
    return {"model": model.eval(), "rounds": grid.rounds, "history": history, "seconds": time.perf_counter() - started, "epsilon": epsilon,
            "partition_sizes": [len(p) for p in parts], "secure_aggregation": False}


def _train_secure(spec: PipelineSpec, data, trainer: LocalTrainer, behaviours: dict[int, ClientBehaviour], progress):
    """FedAvg under Flower's SecAgg+ workflow (its legacy-strategy API: the only one SecAgg+ runs in). With DP, the
    clients clip their own updates (fixedclipping_mod) and the server adds the noise to the unmasked sum."""
    from flwr.app import Context, RecordDict
    from flwr.common import ndarrays_to_parameters
    from flwr.server import LegacyContext, ServerConfig
    from flwr.server.strategy import DifferentialPrivacyClientSideFixedClipping
    from flwr.server.strategy import FedAvg as LegacyFedAvg
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow

    from edgeops.training import evaluate_logits, new_model, predict_logits

    fed = spec.training.federated
    model = new_model(spec, data)
    history: list[dict] = []

    def evaluate(server_round: int, arrays: list[np.ndarray], config: dict):
        set_model_state(model, arrays)
        accuracy = evaluate_logits(predict_logits(model, data.x_val), data.y_val, len(data.classes))["accuracy"]
        history.append({"round": server_round, "validation_accuracy": accuracy})
        if server_round:
            progress(f"round {server_round}/{fed.rounds} (secure aggregation): validation accuracy {accuracy:.3f}")
            advance("federated rounds (SecAgg+)", server_round, fed.rounds, f"val_acc {accuracy:.3f}")
        return 0.0, {"validation-accuracy": accuracy}

    initial = model_state(model)
    strategy = LegacyFedAvg(fraction_fit=fed.fraction, fraction_evaluate=0.0, min_fit_clients=fed.min_clients, min_available_clients=fed.min_clients,
                            initial_parameters=ndarrays_to_parameters(initial), evaluate_fn=evaluate,
                            on_fit_config_fn=lambda server_round: {"server-round": server_round})
    if fed.clipping_norm:
        strategy = DifferentialPrivacyClientSideFixedClipping(strategy, fed.noise_multiplier, fed.clipping_norm, sampled_per_round(fed))
    client_app = make_secure_client_app(trainer, clip_on_client=bool(fed.clipping_norm), uniform_weights=bool(fed.clipping_norm))
    grid = LoopbackGrid(client_app, fed.clients, behaviours, int(fed.max_update_mb * 2**20), fed.min_clients, fed.clipping_norm,
                        inspect_updates=False)
    context = LegacyContext(context=Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={}),
                            config=ServerConfig(num_rounds=fed.rounds), strategy=strategy)
    started = time.perf_counter()
    workflow = SecAggPlusWorkflow(num_shares=max(3, min(fed.clients, fed.reconstruction_threshold + 1)),
                                  reconstruction_threshold=fed.reconstruction_threshold)
    DefaultWorkflow(fit_workflow=workflow)(grid, context)
    set_model_state(model, context.state.array_records["parameters"].to_numpy_ndarrays())
    rounds = []
    for number in range(1, fed.rounds + 1):
        stages = [e for e in grid.exchanges if e["round"] == number]
        masked = next((e for e in stages if e["stage"] == "collect_masked_vectors"), None)
        if masked is None:
            raise FederatedError(f"round {number}: the SecAgg+ protocol stopped before collecting masked updates "
                                 f"(stages reached: {[e['stage'] for e in stages]}); too few clients survived")
        rounds.append({"round": number, "sampled": masked["sampled"], "usable": masked["usable"], "secure_aggregation": True,
                       "clients": {p: c if c["status"] != "ok" else {"status": "masked update (not visible to the server)"}
                                   for p, c in masked["clients"].items()},
                       "stages": {e["stage"]: e["usable"] for e in stages},
                       "validation_accuracy": next((h["validation_accuracy"] for h in history if h["round"] == number), None)})
        if masked["usable"] < fed.min_clients:
            raise FederatedError(f"round {number}: only {masked['usable']} clients sent masked updates; the declaration needs {fed.min_clients}")
    return model, rounds, history, time.perf_counter() - started


def run_federated_training(spec: PipelineSpec, ref: dict, ledger, out_root: Path, run, dagster_run_id: str = "", progress=lambda _: None) -> dict:
    """Stage: charge the ledger for the planned client-level epsilon, run the rounds, save and log like central training."""
    from edgeops.models import export_onnx, save_weights, weights_sha256
    from edgeops.training import TrainingData, evaluate_logits, predict_logits

    from edgeops.validation import with_dp_bounds

    spec = with_dp_bounds(spec, ref)
    fed = spec.training.federated
    key = charge_key(spec, ref["digest"])
    by_round = epsilon_by_round(fed, spec.privacy.delta)
    if not by_round:
        raise PrivacyBudgetError("training.federated.noise_multiplier is 0: a non-private federated model cannot be released from private data "
                                 "(set clipping_norm and noise_multiplier; benchmarks/federated.py runs the non-private comparison)")
    parameters = {"noise_multiplier": fed.noise_multiplier, "sample_rate": 1.0, "steps": fed.rounds, "delta": spec.privacy.delta,
                  "accountant": "flower-rdp", "clipping_norm": fed.clipping_norm, "clients": fed.clients,
                  "sampled_per_round": sampled_per_round(fed), "unit": "client", "secure_aggregation": fed.secure_aggregation}
    planned = by_round[-1]
    entry, charged_now = ledger.charge(key, "dp-fedavg (flower)", planned, spec.privacy.delta, parameters, run_id=dagster_run_id,
                                       note="client-level DP federated training of the released model")
    progress(f"ledger: {'charged' if charged_now else 'already charged'} epsilon {planned:.3f} (client level) as entry {entry.id}")
    try:
        data = TrainingData.from_ref(ref, spec)
        result = train_federated(spec, data, progress=progress)
    except Exception as err:
        ledger.update(entry.id, "failed", {"error": str(err)[:500]})
        raise
    ledger.update(entry.id, "completed", {"epsilon_accountant": result["epsilon"]}, epsilon=result["epsilon"])
    workdir = out_root / key.split(":")[1][:16]
    workdir.mkdir(parents=True, exist_ok=True)
    model = result["model"]
    final, onnx_path = workdir / "model.safetensors", workdir / "model.onnx"
    save_weights(model, final, {"pipeline": spec.name, "charge_key": key})
    export_onnx(model, len(data.features), onnx_path)
    for report, spent in zip(result["rounds"], by_round):
        report["epsilon_spent"] = spent
    (workdir / "rounds.json").write_text(json.dumps({"rounds": result["rounds"], "history": result["history"],
                                                    "partition_sizes": result["partition_sizes"]}, default=str))
    metrics = {split: evaluate_logits(predict_logits(model, x), y, len(data.classes))
               for split, x, y in (("validation", data.x_val, data.y_val), ("test", data.x_test, data.y_test))}
    privacy = {**parameters, "epsilon": result["epsilon"], "claimed_epsilon": result["epsilon"], "target_epsilon": planned,
               "ledger_entry": entry.id, "unit": "client (all of one client's rows)", "sampling": "uniform without replacement, not amplified",
               "clipping": ("client-side fixed clipping of each update (SecAgg+: the server sees only the sum)" if fed.secure_aggregation
                            else "server-side fixed clipping of each client's update")}
    run.log_params({f"dp.{k}": v for k, v in privacy.items()} | {"training.mode": "federated", "federated.strategy": fed.strategy,
                                                                 "federated.alpha": fed.alpha})
    run.log_metric_series({"federated/validation_accuracy": [h["validation_accuracy"] for h in result["history"][1:]],
                           "federated/epsilon_spent": [r["epsilon_spent"] for r in result["rounds"]],
                           "federated/usable_clients": [r["usable"] for r in result["rounds"]],
                           "federated/clipped_clients": [sum(1 for c in r["clients"].values() if c.get("clipped")) for r in result["rounds"]]})
    run.log_metrics({"test_accuracy": metrics["test"]["accuracy"], "test_ece": metrics["test"]["ece"],
                     "validation_accuracy": metrics["validation"]["accuracy"], "epsilon": result["epsilon"]})
    weights_sha = run.log_artifact(final, "model")
    onnx_sha = run.log_artifact(onnx_path, "model")
    run.log_artifact(workdir / "rounds.json", "federated")
    run.set_tags({"weights_sha256": weights_sha256(model), "training.mode": "federated"})
    return {"weights_path": str(final), "onnx_path": str(onnx_path), "weights_file_sha256": weights_sha, "onnx_sha256": onnx_sha,
            "weights_sha256": weights_sha256(model), "dataset_digest": ref["digest"], "metrics": metrics, "privacy": privacy,
            "training_seconds": result["seconds"], "mlflow_run_id": run.run_id, "parameters": sum(p.numel() for p in model.parameters()),
            "features": data.features, "classes": data.classes, "ref": ref, "training_mode": "federated",
            "federated": {"rounds": len(result["rounds"]), "clients": fed.clients, "partition_sizes": result["partition_sizes"]}}
